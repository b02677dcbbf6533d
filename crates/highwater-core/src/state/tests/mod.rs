use std::str::FromStr;

use serde_json::json;
use sqlx::SqlitePool;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::sqlite::MIGRATIONS;
use super::*;

/// A fresh store of each backend, for a test that must hold on both: SQLite in
/// a temporary file, and PostgreSQL in a schema of its own in the machine's
/// database (`HW_TEST_PG`, else `postgres://postgres@127.0.0.1:5432/test`).
pub(super) async fn each_store(name: &str) -> Vec<Store> {
    let sqlite = Store::open(&temp_db(name)).await.expect("open SQLite");
    vec![sqlite, fresh_postgres(name).await]
}

/// A PostgreSQL store in the schema `hw_unit_<name>`, emptied first.
pub(super) async fn fresh_postgres(name: &str) -> Store {
    Store {
        backend: Backend::Postgres(fresh_pg(name, std::time::Duration::from_secs(30)).await),
    }
}

/// The machine's PostgreSQL, as [`each_store`] says.
pub(super) fn pg_url() -> String {
    std::env::var("HW_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The schema a test's PostgreSQL store named `name` lives in.
pub(super) fn pg_schema(name: &str) -> String {
    format!("hw_unit_{}", name.replace('-', "_"))
}

/// The store of `fresh_postgres(name)`, with leases of `lease`, emptied first.
pub(super) async fn fresh_pg(name: &str, lease: std::time::Duration) -> postgres::PgStore {
    let url = pg_url();
    let schema = pg_schema(name);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("the machine's PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await
    .expect("drop schema");
    let location = postgres::PgLocation { url, schema, lease };
    postgres::PgStore::open(&location)
        .await
        .expect("open PostgreSQL")
}

pub(super) fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hw-state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("nested").join("state.db")
}

/// A store as a release that knew only the first `migrations` migrations left it:
/// the file at `temp_db(name)`, and a pool on it to put old rows in.
pub(super) async fn store_before(
    name: &str,
    migrations: usize,
) -> (std::path::PathBuf, SqlitePool) {
    let path = temp_db(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("dir");
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .expect("options")
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect");
    let before: Vec<Migration> = MIGRATIONS[..migrations]
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                (*name).into(),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(before)
        .run(&pool)
        .await
        .expect("old migrations");
    (path, pool)
}

pub(super) fn run(id: &str, watermark_s: i64) -> RunRow {
    let at = |s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
    RunRow {
        run_id: id.into(),
        sync: "billing".into(),
        kind: RunKind::Incremental,
        status: RunStatus::Open,
        lower_bound: None,
        watermark: at(watermark_s),
        started_at: at(watermark_s + 5),
        updated_at: at(watermark_s + 5),
        completed_at: None,
    }
}

/// A record's letter from the mapping stage, failed once.
fn dead_letter(id: &str, run_id: &str) -> DeadLetter {
    DeadLetter {
        source_id: id.into(),
        run_id: run_id.into(),
        stage: DeadLetterStage::Mapping,
        error: "required field `email` is missing".into(),
        payload: json!({"id": id}),
        fingerprint: "f".into(),
        attempts: 1,
        last_failed_at: Timestamp::UNIX_EPOCH,
    }
}

/// A write of `id` at `version`, announced.
pub(super) fn intent(id: &str, version: i64) -> Intent {
    Intent {
        source_id: id.into(),
        version: Some(version),
        updated_at: Timestamp::UNIX_EPOCH,
        settles_at: None,
    }
}

/// A commit announcing `intents` as the batch `batch`.
pub(super) fn announce(batch: &str, intents: Vec<Intent>) -> PageCommit {
    PageCommit {
        announce: Some(IntentBatch {
            id: batch.into(),
            intents,
        }),
        ..PageCommit::default()
    }
}

pub(super) fn entry(id: &str, version: i64) -> LedgerEntry {
    LedgerEntry {
        source_id: id.into(),
        external_id: format!("ext-{id}"),
        dest_id: Some(format!("d-{id}")),
        version: Some(version),
        updated_at: Timestamp::UNIX_EPOCH,
        payload_hash: format!("h{version}"),
        run_id: "r1".into(),
        deleted_at: None,
    }
}

/// Commits `ledger` in a page of run r1 of `billing` that asks for a merge.
pub(super) async fn commit_merged(store: &Store, ledger: Vec<LedgerEntry>) {
    let page = PageCommit {
        ledger,
        merge: true,
        ..PageCommit::default()
    };
    store
        .commit_page("billing", "r1", &page, None, &Counters::default())
        .await
        .expect("commit");
}

#[tokio::test]
async fn a_run_moves_from_open_to_completed_and_sets_the_high_water_mark() {
    for store in each_store("lifecycle").await {
        assert!(
            store
                .open_run("billing", RunKind::Incremental)
                .await
                .expect("query")
                .is_none()
        );
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let (open, checkpoint) = store
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("query")
            .expect("open run");
        assert_eq!(open.run_id, "r1");
        assert_eq!(checkpoint.cursor, json!({"kind": "start"}));

        let page = PageCommit {
            ledger: vec![entry("a", 1), entry("b", 2)],
            dead_letters: vec![dead_letter("c", "r1")],
            ..PageCommit::default()
        };
        let counters = Counters {
            pages: 1,
            read: 3,
            written: 2,
            dead_lettered: 1,
            ..Counters::default()
        };
        let committed = store
            .commit_page(
                "billing",
                "r1",
                &page,
                Some(&json!({"kind": "token", "token": "t2"})),
                &counters,
            )
            .await
            .expect("commit");
        // SQLite stages the ledger rows: counted and listed, not yet read by
        // lookups, as the acknowledgement says; PostgreSQL's are read at once.
        let status = store.status("billing").await.expect("status");
        assert_eq!(status.ledger_records, 2);
        assert_eq!(store.ledger("billing").await.expect("ledger").len(), 2);
        let known = store
            .known("billing", &["a", "c"], &[])
            .await
            .expect("known");
        assert_eq!(known.ledger.is_empty(), !committed.visible);
        assert_eq!(known.dead.get("c").map(String::as_str), Some("f"));
        store.merge_staged("billing").await.expect("merge");
        let known = store
            .known("billing", &["a", "c", "zz"], &[])
            .await
            .expect("known");
        assert_eq!(known.ledger["a"].dest_id.as_deref(), Some("d-a"));
        assert!(!known.ledger.contains_key("zz"));

        store
            .complete_run("r1", &json!({"kind": "end"}), &counters, &[])
            .await
            .expect("complete");
        let status = store.status("billing").await.expect("status");
        assert!(status.open_run.is_none());
        assert_eq!(status.high_water_mark(), Some(open.watermark));
        assert_eq!((status.dead_letters, status.ledger_records), (1, 2));
        assert_eq!(
            status.last_completed.map(|(_, c)| c.counters),
            Some(counters)
        );

        // Writing the dead-lettered record later resolves its dead letter.
        store
            .begin_run(&run("r2", 2000), &json!({"kind": "start"}))
            .await
            .expect("begin 2");
        let fixed = PageCommit {
            ledger: vec![entry("c", 1)],
            resolved: vec!["c".into()],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r2", &fixed, None, &counters)
            .await
            .expect("commit 2");
        let (_, checkpoint) = store
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("q")
            .expect("open");
        assert_eq!(
            checkpoint.cursor,
            json!({"kind": "start"}),
            "no cursor given, none moved"
        );
        assert!(store.dead_letters("billing").await.expect("dlq").is_empty());
        store.close().await;
    }
}

#[tokio::test]
async fn only_one_run_per_sync_can_be_open() {
    for store in each_store("one-open").await {
        store
            .begin_run(&run("r1", 1000), &json!({}))
            .await
            .expect("first");
        assert!(store.begin_run(&run("r2", 1000), &json!({})).await.is_err());
    }
}

#[tokio::test]
async fn an_abandoned_run_leaves_nothing_to_resume_and_stays_in_the_history_as_failed() {
    let path = temp_db("abandon");
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({}))
        .await
        .expect("begin");
    store.abandon_run("r1").await.expect("abandon");
    assert!(
        store
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("q")
            .is_none()
    );
    assert!(
        store
            .last_completed("billing", RunKind::Incremental)
            .await
            .expect("q")
            .is_none(),
        "an abandoned run sets no high-water mark"
    );
    let record = store
        .run_record("r1")
        .await
        .expect("q")
        .expect("kept in the history");
    assert_eq!(record.run.status, RunStatus::Failed);
    assert!(record.ended_at().is_some());
    store
        .begin_run(&run("r2", 1000), &json!({}))
        .await
        .expect("begin again");
    store.close().await;
    let again = Store::open(&path)
        .await
        .expect("reopen runs no migration twice");
    assert!(
        again
            .open_run("billing", RunKind::Incremental)
            .await
            .expect("q")
            .is_some()
    );
}

/// Dead letters hold record payloads: the store, its WAL and shared-memory files,
/// the lock files and the directories highwater creates are its owner's alone,
/// while a directory the user already had keeps its mode.
#[cfg(unix)]
#[tokio::test]
async fn the_store_and_its_locks_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;

    let users = std::env::temp_dir().join(format!("hw-state-{}-private", std::process::id()));
    let _ = std::fs::remove_dir_all(&users);
    std::fs::create_dir_all(&users).expect("create the user's directory");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state_dir = users.join(".highwater");
    let path = state_dir.join("state.db");

    let lock = acquire(&path, "billing", RunKind::Incremental).expect("lock");
    let store = Store::open(&path).await.expect("open");
    store
        .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
        .await
        .expect("begin");
    let files = [
        users.clone(),
        state_dir.clone(),
        state_dir.join("locks"),
        lock.path.clone(),
        path.clone(),
        state_dir.join("state.db-wal"),
        state_dir.join("state.db-shm"),
    ];
    let modes: Vec<String> = files
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let shown = p.strip_prefix(&users).unwrap_or(p).display().to_string();
            format!("{shown} {:o}", meta.permissions().mode() & 0o777)
        })
        .collect();
    store.close().await;
    drop(lock);
    let _ = std::fs::remove_dir_all(&users);
    assert_eq!(
        modes,
        [
            " 755",
            ".highwater 700",
            ".highwater/locks 700",
            ".highwater/locks/billing.incremental.lock 600",
            ".highwater/state.db 600",
            ".highwater/state.db-wal 600",
            ".highwater/state.db-shm 600",
        ]
    );
}

mod claim;
mod events;
mod floors;
mod history;
mod lease;
mod ledger;
mod levels;
mod shared;
mod threads;

/// Several processes may open a new store at once (a `run` creating it while
/// `status` looks, or workers starting together): each finds it migrated,
/// none fails on a migration another applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opened_at_once_migrate_it_once() {
    for round in 0..20 {
        let dir =
            std::env::temp_dir().join(format!("hw-migrate-race-{}-{round}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state.db");
        let opens = (0..4).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { Store::open(&path).await })
        });
        for open in futures_util::future::join_all(opens).await {
            let store = open
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            store.close().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A PostgreSQL store whose URL says `sslmode=require` (as a managed
/// database asks) holds its connections over TLS, where the server offers it.
#[tokio::test]
async fn a_postgres_store_connects_over_tls_when_its_url_asks() {
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_url())
        .await
        .expect("the machine's PostgreSQL");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .expect("SHOW ssl");
    let name = format!("hw-tls-{}", std::process::id());
    let joint = if pg_url().contains('?') { '&' } else { '?' };
    let location = postgres::PgLocation {
        url: format!("{}{joint}sslmode=require&application_name={name}", pg_url()),
        schema: pg_schema("tls"),
        lease: std::time::Duration::from_secs(30),
    };
    let opened = postgres::PgStore::open(&location).await;
    if ssl != "on" {
        let Err(e) = opened else {
            panic!("a server without TLS refuses sslmode=require")
        };
        assert!(e.to_string().contains("TLS"), "{e}");
        return;
    }
    let store = Store {
        backend: Backend::Postgres(opened.expect("open over TLS")),
    };
    store.paused_syncs().await.expect("a statement over TLS");
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
    )
    .bind(&name)
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    assert!(connections > 0, "the store's connections are open");
    assert_eq!(encrypted, connections, "every connection is encrypted");
    store.close().await;
}

/// The destination a sync's ledger describes, and the mapping its records
/// were written with: none at first, the last one recorded, copied with the
/// store, and forgotten with the ledger.
#[tokio::test]
async fn the_destination_a_ledger_describes_is_kept_copied_and_forgotten() {
    for store in each_store("destination").await {
        assert_eq!(store.destination_of("billing").await.expect("read"), None);
        store
            .record_destination("billing", "jsonl out/a.jsonl")
            .await
            .expect("record");
        store
            .record_destination("billing", "jsonl out/b.jsonl")
            .await
            .expect("record");
        assert_eq!(store.mapping_of("billing").await.expect("read"), None);
        store.record_mapping("billing", "m1").await.expect("record");
        assert_eq!(
            store.mapping_of("billing").await.expect("read").as_deref(),
            Some("m1")
        );
        assert_eq!(
            store
                .destination_of("billing")
                .await
                .expect("read")
                .as_deref(),
            Some("jsonl out/b.jsonl")
        );
        if matches!(store.backend, Backend::Sqlite(_)) {
            let copy = fresh_postgres("destination-copy").await;
            store.copy_to(&copy).await.expect("copy");
            assert_eq!(
                copy.destination_of("billing")
                    .await
                    .expect("read")
                    .as_deref(),
                Some("jsonl out/b.jsonl")
            );
            assert_eq!(
                copy.mapping_of("billing").await.expect("read").as_deref(),
                Some("m1")
            );
            copy.close().await;
        }
        store
            .reset(&ResetRequest {
                sync: "billing".into(),
                to: None,
                forget_ledger: true,
                force: true,
                reason: None,
            })
            .await
            .expect("reset");
        assert_eq!(store.destination_of("billing").await.expect("read"), None);
        assert_eq!(store.mapping_of("billing").await.expect("read"), None);
        store.close().await;
    }
}

/// The refresh token an OAuth2 endpoint gave last: none at first, the last
/// one kept, copied with the store, and kept through a reset (a credential
/// is not the sync's progress).
#[tokio::test]
async fn a_rotated_refresh_token_is_kept_copied_and_outlives_a_reset() {
    for store in each_store("refresh-tokens").await {
        assert_eq!(store.kept_refresh_token("c1").await.expect("read"), None);
        for token in ["r1", "r2"] {
            store.keep_refresh_token("c1", token).await.expect("keep");
        }
        store.keep_refresh_token("c2", "x1").await.expect("keep");
        let kept = async |store: &Store, credential| {
            store
                .kept_refresh_token(credential)
                .await
                .expect("read")
                .unwrap_or_default()
        };
        assert_eq!(kept(&store, "c1").await, "r2");
        assert_eq!(kept(&store, "c2").await, "x1");
        if matches!(store.backend, Backend::Sqlite(_)) {
            let copy = fresh_postgres("refresh-tokens-copy").await;
            store.copy_to(&copy).await.expect("copy");
            assert_eq!(kept(&copy, "c1").await, "r2");
            copy.close().await;
        }
        store
            .reset(&ResetRequest {
                sync: "billing".into(),
                to: None,
                forget_ledger: true,
                force: true,
                reason: None,
            })
            .await
            .expect("reset");
        assert_eq!(kept(&store, "c1").await, "r2");
        store.close().await;
    }
}
