//! The table destinations against real databases: SQLite files, and the
//! machine's PostgreSQL (`HW_TEST_PG`, else `postgres://postgres@127.0.0.1:5432/test`),
//! each test in a schema of its own, dropped at the end.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::sql::SqlColumn;
use super::{ColumnType, Layout, TableSpec};
use crate::mapping::MappedRecord;
use crate::policy::RetryPolicy;
use crate::sink::postgres::config::PostgresSpec;
use crate::sink::sqlite::config::SqliteSpec;
use crate::sink::{Delete, Held, Sink, SinkError, Write};
use crate::stop::Stop;

mod owned;
mod tls;

const RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(200),
    max_attempts: 8,
    outage: Duration::ZERO,
    rate_limited_for: Duration::from_secs(600),
};

fn pg_url() -> String {
    std::env::var("HW_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One test's database: a SQLite file in a fresh directory, or a fresh
/// PostgreSQL schema — written in a state store's shared transaction when
/// `store` is that store, in the same database.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres {
        schema: String,
        pool: sqlx::PgPool,
        store: Option<crate::state::Store>,
    },
}

impl Db {
    async fn sqlite(test: &str) -> Db {
        let dir = std::env::temp_dir().join(format!("hw-table-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Db::Sqlite(dir.join("dest.db"))
    }

    async fn postgres(test: &str) -> Db {
        let schema = format!("hw_{test}_{}", std::process::id());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&pg_url())
            .await
            .expect("PostgreSQL at HW_TEST_PG or 127.0.0.1:5432/test");
        let db = Db::Postgres {
            schema,
            pool,
            store: None,
        };
        db.exec(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            db.schema_name()
        ))
        .await;
        db.exec(&format!("CREATE SCHEMA {}", db.schema_name()))
            .await;
        db
    }

    /// A fresh schema written in the transaction of a PostgreSQL state store
    /// in the same database, as a run's page commits would commit it.
    async fn postgres_shared(test: &str) -> Db {
        let Db::Postgres { schema, pool, .. } = Db::postgres(test).await else {
            unreachable!()
        };
        let state = crate::config::StateSpec {
            store: crate::config::StoreLocation::Postgres {
                url: crate::secret::Secret::new(pg_url()),
                schema: format!("{schema}_state"),
            },
            lease: crate::config::DEFAULT_LEASE,
            merge_rows: crate::config::DEFAULT_MERGE_ROWS,
            event_retention: crate::config::DEFAULT_EVENT_RETENTION,
        };
        let store = crate::state::Store::connect(&state)
            .await
            .expect("state store");
        Db::Postgres {
            schema,
            pool,
            store: Some(store),
        }
    }

    fn schema_name(&self) -> String {
        match self {
            Db::Sqlite(_) => String::new(),
            Db::Postgres { schema, .. } => schema.clone(),
        }
    }

    /// The number the query `sql` answers.
    async fn number(&self, sql: &str) -> i64 {
        match self {
            Db::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new().filename(path),
                )
                .await
                .expect("sqlite");
                let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .expect(sql);
                pool.close().await;
                n
            }
            Db::Postgres { pool, .. } => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .expect(sql),
        }
    }

    /// `t` in this database's namespace.
    fn table(&self, name: &str) -> String {
        match self {
            Db::Sqlite(_) => name.to_owned(),
            Db::Postgres { schema, .. } => format!("{schema}.{name}"),
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options)
                    .await
                    .expect("sqlite");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect(sql);
                pool.close().await;
            }
            Db::Postgres { pool, .. } => {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .expect(sql);
            }
        }
    }

    fn sink(&self, spec: TableSpec, sync: &str) -> Arc<dyn Sink> {
        match self {
            Db::Sqlite(path) => Arc::new(
                crate::sink::sqlite::open(
                    &SqliteSpec {
                        path: path.clone(),
                        table: spec,
                        shares_state: false,
                    },
                    RETRY,
                    None,
                )
                .expect("open"),
            ),
            Db::Postgres { schema, store, .. } => Arc::new(
                crate::sink::postgres::open(
                    &PostgresSpec {
                        url: crate::secret::Secret::new(pg_url()),
                        table: TableSpec {
                            schema: Some(schema.clone()),
                            ..spec
                        },
                        shares_state: store.is_some(),
                    },
                    sync,
                    RETRY,
                    store.as_ref().map(|s| {
                        s.share_postgres_writes(&format!("highwater unit {sync}"))
                            .expect("a PostgreSQL store")
                            .expect("share")
                    }),
                )
                .expect("open"),
            ),
        }
    }

    async fn drop(self) {
        match self {
            Db::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            Db::Postgres {
                schema,
                pool,
                store,
            } => {
                if let Some(store) = store {
                    store.close().await;
                }
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema}, {schema}_state CASCADE"
                )))
                .execute(&pool)
                .await;
                pool.close().await;
            }
        }
    }
}

fn spec(columns: &[(&str, ColumnType)]) -> TableSpec {
    TableSpec {
        table: "contacts".into(),
        schema: None,
        key_column: "external_id".into(),
        version_column: "version".into(),
        layout: Layout::Columns(
            columns
                .iter()
                .map(|(name, kind)| SqlColumn {
                    name: (*name).into(),
                    kind: *kind,
                })
                .collect(),
        ),
        create_table: true,
        evolve: true,
        batch_size: 500,
        concurrency: 2,
    }
}

fn columns() -> TableSpec {
    spec(&[
        ("name", ColumnType::Text),
        ("amount", ColumnType::BigInt),
        ("meta", ColumnType::Json),
    ])
}

fn record(id: &str, payload: Value) -> MappedRecord {
    MappedRecord {
        external_id: id.into(),
        payload,
        hash: String::new(),
    }
}

fn write(record: &MappedRecord, version: i64) -> Write<'_> {
    Write {
        source_id: &record.external_id,
        record,
        version: Some(version),
        updated_at: jiff::Timestamp::UNIX_EPOCH,
        known_dest_id: None,
        encoded: None,
        rewrite_over: None,
        unsettled_until: None,
    }
}

async fn held(sink: &dyn Sink, id: &str) -> Value {
    match sink.read_back(id, &Stop::never()).await.expect("read back") {
        Held::Nothing => Value::Null,
        Held::Object { object, .. } => object,
    }
}

/// Upserts, an older version superseded, the same version rewritten with
/// another payload, a nested object kept as JSON, and a delete done twice.
/// Rows land with the store's commit only in its shared transaction.
async fn upserts_compare_versions(db: Db) {
    let sink = db.sink(columns(), "upserts");
    let shared = matches!(db, Db::Postgres { store: Some(_), .. });
    assert_eq!(sink.lands_with_the_commit(), shared);
    let stop = Stop::never();
    let a1 = record(
        "a",
        json!({"name": "Ann", "amount": 5, "meta": {"tags": ["x"]}}),
    );
    let b3 = record("b", json!({"name": "Bob", "amount": 7}));
    let results = sink
        .write_batch(vec![write(&a1, 1), write(&b3, 3)], &stop)
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Older: superseded; same version, new payload: lands; newer: lands.
    let b2 = record("b", json!({"name": "Old Bob", "amount": 1}));
    let a1_again = record(
        "a",
        json!({"name": "Annie", "amount": 5, "meta": {"tags": ["x"]}}),
    );
    let results = sink
        .write_batch(vec![write(&b2, 2), write(&a1_again, 1)], &stop)
        .await;
    assert!(
        matches!(results[0], Err(SinkError::Superseded)),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!(
        held(sink.as_ref(), "a").await,
        json!({"external_id": "a", "version": 1, "name": "Annie", "amount": 5, "meta": {"tags": ["x"]}})
    );
    assert_eq!(held(sink.as_ref(), "b").await["name"], json!("Bob"));
    for _ in 0..2 {
        let delete = Delete {
            external_id: "a",
            known_dest_id: None,
            unsettled_until: None,
        };
        sink.delete(&delete, &stop).await.expect("delete");
    }
    assert_eq!(held(sink.as_ref(), "a").await, Value::Null);
    db.drop().await;
}

/// A JSON null in a JSON column is SQL's NULL, in both databases; the
/// string "null" is not.
async fn a_json_null_is_sql_null(db: Db) {
    let sink = db.sink(columns(), "nulls");
    let stop = Stop::never();
    let none = record("none", json!({"name": "A", "meta": null}));
    let text = record("text", json!({"name": "B", "meta": "null"}));
    let some = record("some", json!({"name": "C", "meta": {"k": null}}));
    let results = sink
        .write_batch(
            vec![write(&none, 1), write(&text, 1), write(&some, 1)],
            &stop,
        )
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let table = db.table("contacts");
    assert_eq!(
        db.number(&format!(
            "SELECT count(*) FROM {table} WHERE meta IS NULL AND external_id = 'none'"
        ))
        .await,
        1
    );
    assert_eq!(
        db.number(&format!("SELECT count(*) FROM {table} WHERE meta IS NULL"))
            .await,
        1
    );
    assert_eq!(held(sink.as_ref(), "none").await["meta"], Value::Null);
    assert_eq!(held(sink.as_ref(), "text").await["meta"], json!("null"));
    assert_eq!(
        held(sink.as_ref(), "some").await["meta"],
        json!({"k": null})
    );
    db.drop().await;
}

/// The JSON layout: the payload in one column, read back as it was written;
/// versions compared as in the columns layout.
async fn the_json_layout_keeps_the_payload_whole(db: Db) {
    let mut spec = columns();
    spec.layout = Layout::Json {
        payload_column: "doc".into(),
    };
    let sink = db.sink(spec, "json");
    let stop = Stop::never();
    let v2 = record(
        "a",
        json!({"name": "Ann", "n": 2.5, "tags": ["x"], "no": null}),
    );
    let v1 = record("a", json!({"name": "Old"}));
    let results = sink.write_batch(vec![write(&v2, 2)], &stop).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let results = sink.write_batch(vec![write(&v1, 1)], &stop).await;
    assert!(
        matches!(results[0], Err(SinkError::Superseded)),
        "{results:?}"
    );
    match sink.read_back("a", &stop).await.expect("read back") {
        Held::Object {
            object, version, ..
        } => {
            assert_eq!(object, v2.payload);
            assert_eq!(version, Some(2));
        }
        Held::Nothing => panic!("nothing held"),
    }
    db.drop().await;
}

/// A CHECK constraint refuses one row of a batch: that row alone is
/// refused, with the database's reason; the others are written.
async fn a_refused_row_is_refused_alone(db: Db) {
    db.exec(&format!(
        "CREATE TABLE {} (external_id TEXT PRIMARY KEY, version BIGINT NOT NULL, name TEXT, amount BIGINT CHECK (amount >= 0), meta TEXT)",
        db.table("contacts")
    ))
    .await;
    let sink = db.sink(
        spec(&[("name", ColumnType::Text), ("amount", ColumnType::BigInt)]),
        "refused",
    );
    let records: Vec<MappedRecord> = (0..40)
        .map(|i| {
            record(
                &format!("r{i}"),
                json!({"name": format!("n{i}"), "amount": if i == 17 || i == 30 { -1 } else { i }}),
            )
        })
        .collect();
    let writes = records.iter().map(|r| write(r, 1)).collect();
    let results = sink.write_batch(writes, &Stop::never()).await;
    for (i, result) in results.iter().enumerate() {
        match result {
            Err(SinkError::Refused(reason)) if i == 17 || i == 30 => {
                assert!(reason.to_lowercase().contains("check"), "{reason}");
            }
            Ok(_) if i != 17 && i != 30 => {}
            other => panic!("row {i}: {other:?}"),
        }
    }
    assert_eq!(held(sink.as_ref(), "r17").await, Value::Null);
    assert_eq!(held(sink.as_ref(), "r18").await["amount"], json!(18));
    db.drop().await;
}

/// A table its owner made without a unique key on the key column: the run
/// stops saying which index it needs, and with that index made, writes.
async fn a_key_column_without_a_unique_index_is_named(db: Db) {
    db.exec(&format!(
        "CREATE TABLE {} (external_id TEXT, version BIGINT NOT NULL, name TEXT)",
        db.table("contacts")
    ))
    .await;
    let mut table = spec(&[("name", ColumnType::Text)]);
    table.create_table = false;
    let a = record("a", json!({"name": "Ann"}));
    let sink = db.sink(table.clone(), "no-key");
    let refused = sink.write(write(&a, 1), &Stop::never()).await;
    let Err(SinkError::Database(message)) = refused else {
        panic!("{refused:?}")
    };
    let fix = message
        .split_once("needs a primary key or a unique index: ")
        .map(|(_, fix)| fix.to_owned())
        .unwrap_or_else(|| panic!("{message}"));
    db.exec(&fix).await;
    let sink = db.sink(table, "no-key");
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    assert_eq!(held(sink.as_ref(), "a").await["name"], json!("Ann"));
    db.drop().await;
}

#[tokio::test]
async fn sqlite_a_key_column_without_a_unique_index_is_named() {
    a_key_column_without_a_unique_index_is_named(Db::sqlite("no-key").await).await;
}

#[tokio::test]
async fn postgres_a_key_column_without_a_unique_index_is_named() {
    a_key_column_without_a_unique_index_is_named(Db::postgres("nokey").await).await;
}

/// A newly mapped field adds a column; with `evolve = false` the sink
/// refuses to write, naming the column and the table.
async fn a_new_field_adds_a_column_unless_evolve_is_off(db: Db) {
    let stop = Stop::never();
    let first = db.sink(spec(&[("name", ColumnType::Text)]), "evolve");
    let a = record("a", json!({"name": "Ann"}));
    first.write(write(&a, 1), &stop).await.expect("write");
    let mut frozen = spec(&[("name", ColumnType::Text), ("score", ColumnType::Double)]);
    frozen.evolve = false;
    let b = record("b", json!({"name": "Bob", "score": 1.5}));
    let refused = db
        .sink(frozen.clone(), "evolve")
        .write(write(&b, 1), &stop)
        .await;
    match refused {
        Err(e @ SinkError::Database(_)) => {
            let message = e.to_string();
            assert!(
                message.contains("`score`")
                    && message.contains("contacts")
                    && message.contains("evolve = false"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    frozen.evolve = true;
    let evolved = db.sink(frozen.clone(), "evolve");
    evolved
        .write(write(&b, 1), &stop)
        .await
        .expect("write with the new column");
    assert_eq!(held(evolved.as_ref(), "b").await["score"], json!(1.5));
    // Two sinks opening the same evolution at once do not fail.
    let more = spec(&[
        ("name", ColumnType::Text),
        ("score", ColumnType::Double),
        ("rank", ColumnType::BigInt),
    ]);
    let (x, y) = (db.sink(more.clone(), "evolve"), db.sink(more, "evolve"));
    let (c, d) = (
        record("c", json!({"rank": 1})),
        record("d", json!({"rank": 2})),
    );
    let (r1, r2) = tokio::join!(x.write(write(&c, 1), &stop), y.write(write(&d, 1), &stop));
    r1.expect("first");
    r2.expect("second");
    db.drop().await;
}

#[tokio::test]
async fn sqlite_upserts_compare_versions() {
    upserts_compare_versions(Db::sqlite("upserts").await).await;
}

#[tokio::test]
async fn sqlite_a_refused_row_is_refused_alone() {
    a_refused_row_is_refused_alone(Db::sqlite("refused").await).await;
}

#[tokio::test]
async fn sqlite_the_json_layout_keeps_the_payload_whole() {
    the_json_layout_keeps_the_payload_whole(Db::sqlite("json").await).await;
}

#[tokio::test]
async fn sqlite_a_json_null_is_sql_null() {
    a_json_null_is_sql_null(Db::sqlite("nulls").await).await;
}

#[tokio::test]
async fn sqlite_a_new_field_adds_a_column_unless_evolve_is_off() {
    a_new_field_adds_a_column_unless_evolve_is_off(Db::sqlite("evolve").await).await;
}

#[tokio::test]
async fn sqlite_a_missing_table_is_fatal_when_not_created() {
    let db = Db::sqlite("missing").await;
    let mut spec = columns();
    spec.create_table = false;
    let a = record("a", json!({"name": "Ann"}));
    let result = db
        .sink(spec, "missing")
        .write(write(&a, 1), &Stop::never())
        .await;
    match result {
        Err(e @ SinkError::Database(_)) => {
            assert!(e.to_string().contains("create_table = false"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    db.drop().await;
}

/// A file in a directory that is not there yet: the directory is created
/// with it; one that cannot be is named in the error.
#[tokio::test]
async fn sqlite_a_file_s_missing_directory_is_created() {
    let db = Db::sqlite("dir").await;
    let Db::Sqlite(path) = &db else {
        unreachable!()
    };
    let dir = path.with_file_name("out");
    let nested = Db::Sqlite(dir.join("more").join("dest.db"));
    let sink = nested.sink(columns(), "dir");
    let a = record("a", json!({"name": "Ann", "amount": 1}));
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    assert_eq!(held(sink.as_ref(), "a").await["name"], json!("Ann"));
    drop(sink);
    std::fs::write(path.with_file_name("plain"), b"").expect("a file");
    let spec = SqliteSpec {
        path: path.with_file_name("plain").join("dest.db"),
        table: columns(),
        shares_state: false,
    };
    match crate::sink::sqlite::open(&spec, RETRY, None) {
        Err(e @ SinkError::Database(_)) => {
            assert!(e.to_string().contains("cannot create the directory"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    db.drop().await;
}

/// In a file of its own, `flush` (before a page's checkpoint commits) syncs
/// the WAL the upserts committed in; a WAL it cannot sync stops the run (its
/// rows may not be durable), naming the file.
#[tokio::test]
async fn sqlite_a_wal_that_cannot_be_synced_stops_the_run() {
    let db = Db::sqlite("flush").await;
    let Db::Sqlite(path) = &db else {
        unreachable!()
    };
    let sink = db.sink(columns(), "flush");
    let a = record("a", json!({"name": "Ann", "amount": 1}));
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    sink.flush().await.expect("the WAL synced");
    // SQLite keeps the WAL open; its name now leads nowhere.
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    std::fs::remove_file(&wal).expect("the WAL");
    std::os::unix::fs::symlink(&wal, &wal).expect("a link to itself");
    let e = sink.flush().await.expect_err("nothing to sync");
    assert_eq!(e.consequence(), crate::sink::Consequence::Fatal, "{e}");
    let message = e.to_string();
    assert!(
        message.contains("dest.db table contacts: cannot make the rows durable"),
        "{message}"
    );
    std::fs::remove_file(&wal).expect("the link");
    db.drop().await;
}

/// In the state store's transaction: each statement in a savepoint.
#[tokio::test]
async fn postgres_shared_upserts_compare_versions() {
    upserts_compare_versions(Db::postgres_shared("upserts_shared").await).await;
}

#[tokio::test]
async fn postgres_shared_a_refused_row_is_refused_alone() {
    a_refused_row_is_refused_alone(Db::postgres_shared("refused_shared").await).await;
}

#[tokio::test]
async fn postgres_shared_a_new_field_adds_a_column_unless_evolve_is_off() {
    a_new_field_adds_a_column_unless_evolve_is_off(Db::postgres_shared("evolve_shared").await)
        .await;
}

#[tokio::test]
async fn postgres_upserts_compare_versions() {
    upserts_compare_versions(Db::postgres("upserts").await).await;
}

#[tokio::test]
async fn postgres_the_json_layout_keeps_the_payload_whole() {
    the_json_layout_keeps_the_payload_whole(Db::postgres("json").await).await;
}

#[tokio::test]
async fn postgres_a_json_null_is_sql_null() {
    a_json_null_is_sql_null(Db::postgres("nulls").await).await;
}

/// A schema named in the config and not there yet is made with the table.
#[tokio::test]
async fn postgres_a_missing_schema_is_made_with_the_table() {
    let db = Db::postgres("schema").await;
    let Db::Postgres { schema, pool, .. } = &db else {
        unreachable!()
    };
    let fresh = format!("{schema}_new");
    let sink = crate::sink::postgres::open(
        &PostgresSpec {
            url: crate::secret::Secret::new(pg_url()),
            table: TableSpec {
                schema: Some(fresh.clone()),
                ..columns()
            },
            shares_state: false,
        },
        "schema",
        RETRY,
        None,
    )
    .expect("open");
    let a = record("a", json!({"name": "Ann", "amount": 1}));
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    assert_eq!(held(&sink, "a").await["name"], json!("Ann"));
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {fresh} CASCADE"
    )))
    .execute(pool)
    .await;
    db.drop().await;
}

#[tokio::test]
async fn postgres_a_refused_row_is_refused_alone() {
    a_refused_row_is_refused_alone(Db::postgres("refused").await).await;
}

#[tokio::test]
async fn postgres_a_new_field_adds_a_column_unless_evolve_is_off() {
    a_new_field_adds_a_column_unless_evolve_is_off(Db::postgres("evolve").await).await;
}

#[test]
fn postgres_connections_are_named_after_the_sync_unless_the_url_names_them() {
    let name = |url: &str| {
        let spec = PostgresSpec {
            url: crate::secret::Secret::new(url.to_owned()),
            table: columns(),
            shares_state: false,
        };
        crate::sink::postgres::application_name(&spec, "invoices")
    };
    assert_eq!(name("postgres://u@h/db"), "highwater invoices");
    assert_eq!(
        name("postgres://u@h/db?sslmode=disable&application_name=crm%20loader"),
        "crm loader"
    );
}

/// The sink's connections are killed (`pg_terminate_backend`) while batches
/// are written: every statement is retried on a fresh connection, and every
/// row lands once, at its newest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_mid_batch_lose_nothing() {
    let db = Db::postgres("killed").await;
    let sync = format!("killed-{}", std::process::id());
    let sink = db.sink(columns(), &sync);
    let Db::Postgres { pool, .. } = &db else {
        unreachable!()
    };
    let killer_pool = pool.clone();
    let name = format!("highwater {sync}");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&name)
                .fetch_one(&killer_pool)
                .await
                .unwrap_or(0);
                killed += n as u64;
                // Random gaps longer than a statement on average: a
                // statement is killed now and then, not at every attempt
                // (on a loaded machine one can take tens of milliseconds).
                tokio::time::sleep(Duration::from_millis(fastrand::u64(30..150))).await;
            }
            killed
        })
    };
    let stop = Stop::never();
    // Four rounds at least, more (up to 60) until a kill lands inside a
    // statement: a kill between statements takes an idle connection, which the
    // pool replaces before use, and nothing is retried.
    let mut version = 0;
    while version < 4 || (sink.retries().total() == 0 && version < 60) {
        version += 1;
        let records: Vec<MappedRecord> = (0..2000)
            .map(|i| {
                record(
                    &format!("k{i}"),
                    json!({"name": format!("n{i}"), "amount": version}),
                )
            })
            .collect();
        for chunk in records.chunks(500) {
            let results = sink
                .write_batch(chunk.iter().map(|r| write(r, version)).collect(), &stop)
                .await;
            for r in results {
                r.expect("written despite killed connections");
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let killed = killer.await.expect("killer");
    assert!(killed > 0, "no connection was killed");
    assert!(sink.retries().total() > 0, "nothing retried");
    let (count, wrong): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(*) FILTER (WHERE version <> {version} OR amount <> {version}) FROM {}",
        db.table("contacts")
    )))
    .fetch_one(pool)
    .await
    .expect("count");
    assert_eq!((count, wrong), (2000, 0));
    db.drop().await;
}
