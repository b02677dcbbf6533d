//! A PostgreSQL store's leases against a worker frozen (SIGSTOP, a stall)
//! inside one of its run's transactions: while its lease lasts another worker
//! is refused at once, and once it has run out the other takes it over — the
//! frozen session ended by the server — never waiting on it for longer.

use std::time::{Duration, Instant};

use super::*;

const LEASE: Duration = Duration::from_secs(2);

/// A second worker's store on the schema `fresh_pg(name, …)` made.
async fn another_worker(name: &str) -> Store {
    let location = postgres::PgLocation {
        url: pg_url(),
        schema: pg_schema(name),
        lease: LEASE,
    };
    Store {
        backend: Backend::Postgres(postgres::PgStore::open(&location).await.expect("open")),
    }
}

#[tokio::test]
async fn postgres_a_worker_frozen_in_a_transaction_holds_up_no_other() {
    let name = "lease-frozen";
    let frozen = Store {
        backend: Backend::Postgres(fresh_pg(name, LEASE).await),
    };
    let lock = frozen
        .lock_run("billing", RunKind::Incremental, false)
        .await
        .expect("lease");
    let fenced = frozen.fenced(&lock);
    let Backend::Postgres(pg) = &fenced.backend else {
        unreachable!("a PostgreSQL store")
    };
    // Frozen in a page commit: the sync's advisory lock and a share lock on
    // its lease row held, nothing sent, the lease renewed no more.
    let tx = pg.writer(Some("billing")).await.expect("writer");
    drop(lock);

    let other = another_worker(name).await;
    let asked = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        other.lock_run("billing", RunKind::Incremental, false),
    )
    .await
    .expect("the second worker waited on the frozen one's transaction");
    assert!(
        matches!(refused, Err(LockError::Leased { .. })),
        "{refused:?}"
    );
    assert!(
        asked.elapsed() < LEASE,
        "refused after {:?}",
        asked.elapsed()
    );

    // Once the lease has run out, it is taken over, within a bound.
    let taking = Instant::now();
    let taken = loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            other.lock_run("billing", RunKind::Incremental, false),
        )
        .await
        .expect("taking the lease over waited on the frozen transaction");
        match attempt {
            Ok(lock) => break lock,
            Err(LockError::Leased { .. }) if taking.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the lease was never taken over: {e}"),
        }
    };
    // And what the frozen worker held open is gone: it commits nothing.
    let committed = tx.commit().await;
    assert!(committed.is_err(), "{committed:?}");
    // The new holder writes under the sync's advisory lock.
    let next = other.fenced(&taken);
    let Backend::Postgres(pg) = &next.backend else {
        unreachable!("a PostgreSQL store")
    };
    let tx = tokio::time::timeout(Duration::from_secs(10), pg.writer(Some("billing")))
        .await
        .expect("the sync's advisory lock is still held by the frozen session")
        .expect("writer");
    tx.commit().await.expect("commit");
    drop(next);
    other.close_releasing(taken).await;
    drop(fenced);
    frozen.close().await;
}
