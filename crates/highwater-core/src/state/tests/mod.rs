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

#[tokio::test]
async fn announced_writes_are_floors_until_retired_completed_or_abandoned() {
    for store in each_store("intents").await {
        store
            .begin_run(&run("r1", 1000), &json!({}))
            .await
            .expect("begin");
        let intent = |id: &str, v| Intent {
            source_id: id.into(),
            version: Some(v),
            updated_at: Timestamp::UNIX_EPOCH,
            settles_at: None,
        };
        let announce = |batch: &str, intents| PageCommit {
            announce: Some(IntentBatch {
                id: batch.into(),
                intents,
            }),
            ..PageCommit::default()
        };
        let counters = Counters::default();
        for commit in [
            announce("i-1", vec![intent("a", 5), intent("b", 2)]),
            announce("i-2", vec![intent("a", 7)]),
        ] {
            store
                .commit_page("billing", "r1", &commit, None, &counters)
                .await
                .expect("announce");
        }
        let floors = store.floors("billing", None).await.expect("floors");
        assert_eq!(
            floors.get("a"),
            Some(&intent("a", 7)),
            "the newest announcement"
        );
        assert_eq!(floors.get("b"), Some(&intent("b", 2)));
        assert!(
            store
                .floors("other", None)
                .await
                .expect("floors")
                .is_empty()
        );

        let retire = PageCommit {
            retire: vec!["i-1".into()],
            ledger: vec![entry("b", 2)],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &retire, None, &counters)
            .await
            .expect("retire");
        let floors = store.floors("billing", None).await.expect("floors");
        assert_eq!(floors.len(), 1);
        assert_eq!(floors.get("a"), Some(&intent("a", 7)));

        store.abandon_run("r1").await.expect("abandon");
        assert!(
            store
                .floors("billing", None)
                .await
                .expect("floors")
                .is_empty(),
            "an abandoned run leaves no announcement"
        );

        store
            .begin_run(&run("r2", 2000), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page(
                "billing",
                "r2",
                &announce("i-3", vec![intent("c", 1)]),
                None,
                &counters,
            )
            .await
            .expect("announce");
        store
            .complete_run("r2", &json!({}), &counters, &[])
            .await
            .expect("complete");
        assert!(
            store
                .floors("billing", None)
                .await
                .expect("floors")
                .is_empty(),
            "a completed run has settled every announcement"
        );
    }
}

/// A destination's position is the one the sync's last commit that stored
/// one stored; and a run is told whether another open run of its sync has
/// announced writes (those its own writes must meet in the compare-and-set).
#[tokio::test]
async fn a_sink_position_is_the_last_one_stored_and_announcements_elsewhere_are_seen() {
    for store in each_store("positions").await {
        store
            .begin_run(&run("r1", 1000), &json!({}))
            .await
            .expect("begin");
        assert_eq!(store.sink_position("billing").await.expect("read"), None);
        let counters = Counters::default();
        for (stored, expected) in [(Some("1:10"), "1:10"), (None, "1:10"), (Some("2:0"), "2:0")] {
            let commit = PageCommit {
                sink_position: stored.map(str::to_owned),
                ..PageCommit::default()
            };
            store
                .commit_page("billing", "r1", &commit, None, &counters)
                .await
                .expect("commit");
            assert_eq!(
                store
                    .sink_position("billing")
                    .await
                    .expect("read")
                    .as_deref(),
                Some(expected)
            );
        }
        assert_eq!(store.sink_position("other").await.expect("read"), None);

        assert!(
            !store
                .announced_elsewhere("billing", "r1")
                .await
                .expect("ask")
        );
        let announce = PageCommit {
            announce: Some(IntentBatch {
                id: "i-1".into(),
                intents: vec![Intent {
                    source_id: "a".into(),
                    version: Some(1),
                    updated_at: Timestamp::UNIX_EPOCH,
                    settles_at: None,
                }],
            }),
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &announce, None, &counters)
            .await
            .expect("announce");
        assert!(
            !store
                .announced_elsewhere("billing", "r1")
                .await
                .expect("ask"),
            "a run's own announcements are not elsewhere"
        );
        assert!(
            store
                .announced_elsewhere("billing", "r2")
                .await
                .expect("ask")
        );
        assert!(!store.announced_elsewhere("other", "r2").await.expect("ask"));
        store.abandon_run("r1").await.expect("abandon");
        assert!(
            !store
                .announced_elsewhere("billing", "r2")
                .await
                .expect("ask"),
            "a run no longer open announces nothing"
        );
    }
}

#[tokio::test]
async fn unsettled_writes_of_a_version_1_store_survive_the_migration() {
    let (path, pool) = store_before("migrate-intents", 1).await;
    {
        sqlx::query(
            "INSERT INTO pending (sync, source_id, version, updated_at, run_id)
             VALUES ('billing', 'a', 5, 0, 'r1'), ('billing', 'b', NULL, 7000000, 'r1')",
        )
        .execute(&pool)
        .await
        .expect("pending rows");
        pool.close().await;
    }
    let store = Store::open(&path).await.expect("migrate");
    let floors = store.floors("billing", None).await.expect("floors");
    assert_eq!(floors.len(), 2);
    assert_eq!(floors.get("a").and_then(|f| f.version), Some(5));
    assert_eq!(
        floors.get("b").map(|f| f.updated_at.as_second()),
        Some(7),
        "a floor without a version keeps its time"
    );
}

#[tokio::test]
async fn within_one_commit_the_later_row_of_an_id_wins_whatever_the_id_order() {
    for store in each_store("row-order").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        // Two pages in one commit: the later copy of `m` comes after ids that sort
        // both before and after it.
        let page = PageCommit {
            ledger: vec![
                entry("z", 1),
                entry("m", 1),
                entry("a", 1),
                entry("m", 3),
                entry("b", 1),
            ],
            ..PageCommit::default()
        };
        store
            .commit_page("billing", "r1", &page, None, &Counters::default())
            .await
            .expect("commit");
        // Staged, and read through `ledger`; then merged by SQL: the same answer.
        for merged in [false, true] {
            let ledger = store.ledger("billing").await.expect("ledger");
            let ids: Vec<_> = ledger.iter().map(|e| e.source_id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "m", "z"], "merged: {merged}");
            let m = ledger.iter().find(|e| e.source_id == "m").expect("m");
            assert_eq!((m.version, m.payload_hash.as_str()), (Some(3), "h3"));
            store.merge_staged("billing").await.expect("merge");
        }
        let known = store.known("billing", &["m"], &[]).await.expect("known");
        assert_eq!(known.ledger["m"].version, Some(3));
        store.close().await;
    }
}

#[tokio::test]
async fn staged_rows_of_later_commits_win_and_keep_a_known_destination_id() {
    for store in each_store("staged-commits").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let commit = |ledger| PageCommit {
            ledger,
            ..PageCommit::default()
        };
        let no_dest = |id, version| LedgerEntry {
            dest_id: None,
            ..entry(id, version)
        };
        for page in [
            commit(vec![entry("m", 1), entry("a", 1)]),
            commit(vec![no_dest("m", 4), entry("b", 1)]),
            commit(vec![no_dest("a", 2)]),
        ] {
            store
                .commit_page("billing", "r1", &page, None, &Counters::default())
                .await
                .expect("commit");
        }
        let staged = store.ledger("billing").await.expect("ledger");
        let summary = |ledger: &[LedgerEntry]| -> Vec<(String, Option<i64>, Option<String>)> {
            ledger
                .iter()
                .map(|e| (e.source_id.clone(), e.version, e.dest_id.clone()))
                .collect()
        };
        let expected = vec![
            ("a".to_owned(), Some(2), Some("d-a".to_owned())),
            ("b".to_owned(), Some(1), Some("d-b".to_owned())),
            ("m".to_owned(), Some(4), Some("d-m".to_owned())),
        ];
        assert_eq!(summary(&staged), expected);
        // A commit that asks for a merge moves every staged row, its own included.
        commit_merged(&store, vec![entry("c", 1)]).await;
        let known = store
            .known("billing", &["a", "b", "c", "m"], &[])
            .await
            .expect("known");
        assert_eq!(known.ledger.len(), 4);
        assert_eq!(known.ledger["m"].version, Some(4));
        assert_eq!(known.ledger["m"].dest_id.as_deref(), Some("d-m"));
        // Completing the run merges what is still staged.
        store
            .commit_page(
                "billing",
                "r1",
                &commit(vec![no_dest("b", 5)]),
                None,
                &Counters::default(),
            )
            .await
            .expect("commit");
        store
            .complete_run("r1", &json!({"kind": "end"}), &Counters::default(), &[])
            .await
            .expect("complete");
        let known = store.known("billing", &["b"], &[]).await.expect("known");
        assert_eq!(known.ledger["b"].version, Some(5));
        assert_eq!(known.ledger["b"].dest_id.as_deref(), Some("d-b"));
        assert_eq!(
            store
                .status("billing")
                .await
                .expect("status")
                .ledger_records,
            4
        );
        store.close().await;
    }
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

#[tokio::test]
async fn a_run_of_another_kind_leaves_the_open_runs_floors_alone() {
    for store in each_store("floors-kinds").await {
        let intent = |id: &str| Intent {
            source_id: id.into(),
            version: Some(1),
            updated_at: Timestamp::UNIX_EPOCH,
            settles_at: None,
        };
        let announce = |run_id: &str, id: &str| PageCommit {
            announce: Some(IntentBatch {
                id: format!("{run_id}-1"),
                intents: vec![intent(id)],
            }),
            ..PageCommit::default()
        };
        let counters = Counters::default();
        let backfill = |id: &str| RunRow {
            kind: RunKind::Backfill,
            ..run(id, 500)
        };
        // An incremental run stopped with a write announced; a backfill runs and
        // completes meanwhile.
        store
            .begin_run(&run("inc", 1000), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page("billing", "inc", &announce("inc", "a"), None, &counters)
            .await
            .expect("announce");
        store
            .begin_run(&backfill("bf"), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page("billing", "bf", &announce("bf", "b"), None, &counters)
            .await
            .expect("announce");
        store
            .complete_run("bf", &json!({}), &counters, &[])
            .await
            .expect("complete");
        let floors = store.floors("billing", None).await.expect("floors");
        assert!(
            floors.contains_key("a"),
            "the open run's floor went: {floors:?}"
        );
        assert!(!floors.contains_key("b"), "{floors:?}");
        // A later backfill ends with a floor of a run that ended; the incremental
        // run settles every floor it found, but not an open backfill's.
        store
            .begin_run(&backfill("bf2"), &json!({}))
            .await
            .expect("begin");
        store
            .commit_page("billing", "bf2", &announce("bf2", "c"), None, &counters)
            .await
            .expect("announce");
        store
            .complete_run("inc", &json!({}), &counters, &[])
            .await
            .expect("complete");
        let floors = store.floors("billing", None).await.expect("floors");
        assert_eq!(floors.keys().collect::<Vec<_>>(), ["c"], "{floors:?}");
    }
}

mod claim;
mod events;
mod history;
mod lease;
mod levels;

mod shared;
mod threads;

#[tokio::test]
async fn a_tombstone_is_staged_merged_and_known_and_holds_no_external_id() {
    for store in each_store("tombstones").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let gone_at = Timestamp::from_second(900).unwrap_or(Timestamp::UNIX_EPOCH);
        let tombstone = |id| LedgerEntry {
            dest_id: None,
            payload_hash: String::new(),
            deleted_at: Some(gone_at),
            ..entry(id, 2)
        };
        let pages = [
            vec![entry("a", 1), entry("b", 1)],
            // Deleted: the staged row keeps the deletion, and the merge the
            // destination id known before.
            vec![tombstone("a")],
        ];
        for ledger in pages {
            let page = PageCommit {
                ledger,
                ..PageCommit::default()
            };
            store
                .commit_page("billing", "r1", &page, None, &Counters::default())
                .await
                .expect("commit");
        }
        let staged = store.ledger("billing").await.expect("ledger");
        assert_eq!(staged[0].deleted_at, Some(gone_at));
        assert_eq!(staged[0].dest_id.as_deref(), Some("d-a"));
        assert_eq!(staged[1].deleted_at, None);
        store.merge_staged("billing").await.expect("merge");
        let known = store
            .known("billing", &["a", "b"], &["ext-a", "ext-b"])
            .await
            .expect("known");
        assert_eq!(known.ledger["a"].deleted_at, Some(gone_at));
        assert_eq!(known.ledger["a"].dest_id.as_deref(), Some("d-a"));
        assert_eq!(known.ledger["b"].deleted_at, None);
        // A deleted record's external id is free for another source record.
        assert_eq!(known.holders.get("ext-a"), None);
        assert_eq!(known.holders.get("ext-b").map(String::as_str), Some("b"));
        // Written again (re-created), the record is no longer deleted.
        commit_merged(&store, vec![entry("a", 3)]).await;
        let known = store.known("billing", &["a"], &[]).await.expect("known");
        assert_eq!(known.ledger["a"].deleted_at, None);
        assert_eq!(known.ledger["a"].version, Some(3));
        let story = store.record_state("billing", "a").await.expect("state");
        assert_eq!(story.ledger.map(|l| l.deleted_at), Some(None));
    }
}

/// A record keyed by its own source id holds that external id without an entry
/// in the external-id index: found whether or not its source id is one of the
/// page's, and not once it is deleted.
#[tokio::test]
async fn a_record_keyed_by_its_own_id_holds_it() {
    for store in each_store("own-key-holders").await {
        store
            .begin_run(&run("r1", 1000), &json!({"kind": "start"}))
            .await
            .expect("begin");
        let own = |id: &str| LedgerEntry {
            external_id: id.into(),
            ..entry(id, 1)
        };
        let gone = LedgerEntry {
            deleted_at: Some(Timestamp::UNIX_EPOCH),
            ..own("c")
        };
        commit_merged(&store, vec![own("a"), own("b"), gone, entry("d", 1)]).await;
        let holders = |ids: &'static [&'static str], external: &'static [&'static str]| {
            let store = store.clone();
            async move {
                let known = store.known("billing", ids, external).await.expect("known");
                let mut holders: Vec<_> = known.holders.into_iter().collect();
                holders.sort();
                holders
            }
        };
        let pair = |e: &str, s: &str| (e.to_owned(), s.to_owned());
        // On the page, and not on it; another record's key; a deleted record's.
        assert_eq!(
            holders(&["a", "x"], &["a", "b", "ext-d", "c"]).await,
            [pair("a", "a"), pair("b", "b"), pair("ext-d", "d")]
        );
        // On the page but not asked for: no holder.
        assert_eq!(holders(&["a", "b"], &["b"]).await, [pair("b", "b")]);
    }
}

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

/// The destination a sync's ledger describes: none at first, the last one
/// recorded, copied with the store, and forgotten with the ledger.
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
        store.close().await;
    }
}
