//! A store used from a thread that runs a runtime of its own, as the reading
//! thread and the committer do: what that thread opened ends with its runtime
//! and leaves the store whole for everyone else.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::*;

/// A PostgreSQL connection is a socket of the runtime that opened it. Had the
/// thread's reads opened connections in the pool every task shares, the
/// queries running on them when its runtime ended would fail, in whatever
/// runtime they ran.
#[test]
fn postgres_a_thread_s_connections_end_with_its_runtime_not_in_the_shared_pool() {
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = main.block_on(fresh_postgres("thread-runtime"));
    let Backend::Postgres(pg) = &store.backend else {
        panic!("not a PostgreSQL store");
    };
    let shared = pg.pool().clone();
    let (read, has_read) = oneshot::channel();
    let (go, may_end) = oneshot::channel::<()>();
    let thread_store = store.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("thread's runtime");
        let reads = runtime.block_on(async move {
            let own = thread_store.for_thread();
            // Reads at once, more than one connection's worth.
            let mut reads = JoinSet::new();
            for _ in 0..6 {
                let own = own.clone();
                reads.spawn(async move { own.status("billing").await.map(|_| ()) });
            }
            let outcomes = tokio::time::timeout(Duration::from_secs(30), reads.join_all())
                .await
                .expect("the thread's reads ended");
            let _ = read.send(());
            // Its runtime runs on while the main runtime's queries start.
            let _ = may_end.await;
            own.close_thread().await;
            outcomes
        });
        drop(runtime);
        reads
    });
    let outcomes = main.block_on(async move {
        has_read.await.expect("the thread read");
        // Every connection of the shared pool in a query that outlasts the
        // thread's runtime.
        let mut queries = JoinSet::new();
        for _ in 0..8 {
            let shared = shared.clone();
            queries.spawn(async move {
                sqlx::query("SELECT pg_sleep(1)")
                    .execute(&shared)
                    .await
                    .map(|_| ())
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = go.send(());
        tokio::time::timeout(Duration::from_secs(30), queries.join_all())
            .await
            .expect("the queries ended")
    });
    for outcome in thread.join().expect("the thread ended") {
        outcome.expect("a read on the thread's own runtime");
    }
    for outcome in outcomes {
        outcome.expect("a query on the shared pool after the thread's runtime ended");
    }
    main.block_on(async {
        store
            .status("billing")
            .await
            .expect("the store after the thread's runtime ended");
        store.close().await;
    });
}
