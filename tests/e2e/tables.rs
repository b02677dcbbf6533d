//! The crash test with a database table as the destination, SQLite and
//! PostgreSQL: source faults on and the data changing underneath, records
//! deleted at the source throughout, the binary SIGKILLed at seeded random
//! instants (a kill counts only when it landed mid-run: the run had committed
//! more progress and the table held some but not all records), and — for
//! PostgreSQL — the sink's connections terminated (`pg_terminate_backend`)
//! at random moments all along. Between kills the key stays unique and no
//! row's version goes back; at the end the table matches the source: none
//! missing, duplicated or stale, every record deleted at the source gone, and
//! every record the table's CHECK constraints refuse (the simulator's
//! poisoned ones) dead-lettered alone, its reason naming the constraint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use highwater_core::state::RunKind;
use serde_json::Value;
use simsaas::{DestDump, DestObject, SimConfig};

use crate::deletes::deletes_endpoint;
use crate::util::{KillDelays, Mode, SYNC, Setup, Style, World, progress, wait_bounded};

const RECORDS: usize = 5_000;
const KILLS: usize = 6;
/// Connections a PostgreSQL test terminates, at least, while the runs are
/// being killed: more when they hold the shared transaction, whose loss is
/// what the test is about.
const CONNECTION_KILLS: u64 = 3;
const SHARED_CONNECTION_KILLS: u64 = 6;

/// The destination table of one test.
enum Table {
    /// A file in the test's directory, by name: `state.db` is the state
    /// store's, whose transactions the table then shares.
    Sqlite(std::path::PathBuf),
    Postgres {
        schema: String,
        pool: sqlx::PgPool,
        /// The state store is in the same database, whatever
        /// `HIGHWATER_TEST_STATE` says: the table shares its transactions.
        with_state: bool,
    },
}

impl Table {
    async fn postgres(test: &str) -> Table {
        let (schema, pool) = crate::util::tables_schema(test).await;
        Table::Postgres {
            schema,
            pool,
            with_state: false,
        }
    }

    /// Whether the sink writes in the state store's transactions: a table
    /// in its SQLite file, or in its PostgreSQL database.
    fn shares_state(&self, world: &World) -> bool {
        match self {
            Table::Sqlite(path) => path == &world.state_path() && !crate::util::postgres_state(),
            Table::Postgres { with_state, .. } => *with_state || crate::util::postgres_state(),
        }
    }

    /// The table, made before the first run with the key, version and email
    /// columns only (the sink adds the rest) and a CHECK constraint per
    /// poison the simulator's own destination refuses, named after its status.
    async fn create(&self) {
        let (name, bigint) = match self {
            Table::Sqlite(_) => ("contacts".to_owned(), "INTEGER"),
            Table::Postgres { schema, .. } => (format!("{schema}.contacts"), "BIGINT"),
        };
        let sql = format!(
            "CREATE TABLE {name} (external_id TEXT PRIMARY KEY, row_version {bigint} NOT NULL, email TEXT, \
             CONSTRAINT refused_as_http_400 CHECK (email NOT LIKE 'poison-400%'), \
             CONSTRAINT refused_as_http_422 CHECK (email NOT LIKE 'poison-422%'))"
        );
        self.execute(&sql).await;
    }

    async fn execute(&self, sql: &str) {
        match self {
            Table::Sqlite(path) => {
                let pool = sqlite(path, true).await;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .expect(sql);
                pool.close().await;
            }
            Table::Postgres { pool, .. } => {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .expect(sql);
            }
        }
    }

    fn destination(&self) -> String {
        let shared = "table = \"contacts\"\nversion_column = \"row_version\"\nbatch_size = 200\n";
        match self {
            Table::Sqlite(path) => format!(
                "[sync.destination]\ntype = \"sqlite\"\npath = \"{}\"\n{shared}\n",
                path.display()
            ),
            // Named after the test: its connections, and no other test's,
            // are the ones its killer terminates.
            Table::Postgres { schema, .. } => format!(
                "[sync.destination]\ntype = \"postgres\"\nurl = \"{}{}application_name={schema}\"\nschema = \"{schema}\"\n{shared}\n",
                crate::util::postgres_url(),
                if crate::util::postgres_url().contains('?') {
                    '&'
                } else {
                    '?'
                },
            ),
        }
    }

    /// Every row: its key, and the row as the simulator's dump has objects.
    async fn dump(&self) -> DestDump {
        let rows: Vec<(String, String)> = match self {
            Table::Sqlite(path) => {
                if !path.exists() {
                    return DestDump::default();
                }
                let pool = sqlite(path, false).await;
                let rows = sqlx::query_as(
                    "SELECT external_id, json_object('row_version', row_version, 'version', json(version)) FROM contacts",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                pool.close().await;
                rows
            }
            Table::Postgres { schema, pool, .. } => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT external_id, jsonb_build_object('row_version', row_version, 'version', version)::text FROM {schema}.contacts"
            )))
            .fetch_all(pool)
            .await
            .unwrap_or_default(),
        };
        DestDump {
            objects: rows
                .into_iter()
                .map(|(key, body)| DestObject {
                    id: key.clone(),
                    external_id: key,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    writes: 1,
                })
                .collect(),
            ..DestDump::default()
        }
    }

    async fn drop(self) {
        if let Table::Postgres { schema, pool, .. } = self {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&pool)
            .await;
            pool.close().await;
        }
    }
}

async fn sqlite(path: &std::path::Path, create: bool) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .busy_timeout(Duration::from_secs(10));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open the destination file")
}

/// Counts in a table `announced` of the SQLite state store (made now) the
/// intent batches its runs announce.
async fn count_announcements(world: &World) -> sqlx::SqlitePool {
    world.store().await.close().await;
    let pool = sqlite(&world.state_path(), false).await;
    for statement in [
        "CREATE TABLE announced (batch TEXT)",
        "CREATE TRIGGER announcing AFTER INSERT ON intents
           WHEN NEW.batch NOT LIKE 'unsettled-%'
           BEGIN INSERT INTO announced VALUES (NEW.batch); END",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    pool
}

/// Terminates the PostgreSQL connections named `name` (the test's
/// destination's) at random moments, `gaps` apart, until stopped — with
/// `holding`, only those holding a transaction open between statements, rows
/// written and not yet committed; counts the connections it ended.
fn connection_killer(
    name: String,
    seed: u64,
    gaps: std::ops::Range<u64>,
    holding: bool,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(pool) = sqlx::PgPool::connect(&crate::util::postgres_url()).await else {
            return;
        };
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        while !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(rng.u64(gaps.clone()))).await;
            // The moment a connection is in the wanted state is brief: it is
            // watched for, a bounded while, after each gap.
            for _ in 0..200 {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = $1 AND (NOT $2 OR state = 'idle in transaction')",
                )
                .bind(&name)
                .bind(holding)
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                killed.fetch_add(n as u64, Ordering::AcqRel);
                if n > 0 || stop.load(Ordering::Acquire) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        pool.close().await;
    })
}

async fn crash_into_table(table: Table, name: &str, seed: u64) {
    // Runs that end at each terminated connection need more records to
    // still be going when the kills are counted.
    let records = match &table {
        Table::Postgres { with_state, .. } if *with_state || crate::util::postgres_state() => {
            3 * RECORDS
        }
        _ => RECORDS,
    };
    let mut sim = SimConfig::new(seed, records).with_all_faults();
    // Pages of 50 with 25 ms of latency: a run takes seconds, so kills land
    // in it. (The source sets the pace: with sixteen small pages in flight,
    // the writes keep up with it.)
    sim.source.latency = Duration::from_millis(25);
    sim.source.rate_limit_ratio = 0.02;
    sim.source.rate_limit_date_ratio = 0.01;
    sim.source.burst_start_ratio = 0.05;
    sim.source.slow_ratio = 0.01;
    sim.source.slow_delay = Duration::from_millis(500);
    sim.mutations.max = 200;
    sim.mutations.interval = Duration::from_millis(10);
    sim.mutations.weights = [2, 1, 1, 0];
    sim.mutations.delete_weights = [1, 0, 0];
    sim.mutations.late_by = Duration::from_secs(60);
    let mut setup = Setup::new(Style::Keyset, Mode::Put);
    setup.timeout = "1s";
    setup.page_size = 50;
    setup.lookback = "5m";
    setup.merge_rows = Some(1_000);
    // The deletes feed; a table deletes its rows itself: no delete_path.
    setup.deletes = deletes_endpoint(Mode::Put)
        .lines()
        .filter(|l| !l.starts_with("delete_path"))
        .collect::<Vec<_>>()
        .join("\n");
    let world = World::start(name, sim, &setup).await;
    let postgres_state = match &table {
        Table::Postgres { with_state, .. } => *with_state || crate::util::postgres_state(),
        Table::Sqlite(_) => crate::util::postgres_state(),
    };
    if let Table::Postgres {
        with_state: true, ..
    } = &table
    {
        world.use_postgres_state("30s");
    }
    let table = match table {
        Table::Sqlite(file) => Table::Sqlite(world.dir.join(file)),
        other => other,
    };
    let shares_state = table.shares_state(&world);
    let text = std::fs::read_to_string(&world.config).expect("read config");
    let start = text.find("[sync.destination]").expect("destination table");
    let end = text.find("[sync.retry]").expect("retry table");
    let text = format!("{}{}{}", &text[..start], table.destination(), &text[end..]);
    std::fs::write(&world.config, text).expect("write config");
    table.create().await;
    let announcements = match postgres_state {
        false => Some(count_announcements(&world).await),
        true => None,
    };

    let stop_killer = Arc::new(AtomicBool::new(false));
    let connections_killed = Arc::new(AtomicU64::new(0));
    // A connection killed under the shared transaction ends its run (it
    // resumes from its last commit): kills further apart let runs progress,
    // and each lands where the transaction holds rows no commit covers yet.
    let gaps = if shares_state { 300..1500 } else { 50..400 };
    let killer = match &table {
        Table::Postgres { schema, .. } => Some(connection_killer(
            schema.clone(),
            seed,
            gaps,
            shares_state,
            Arc::clone(&stop_killer),
            Arc::clone(&connections_killed),
        )),
        Table::Sqlite(_) => None,
    };

    let mut delays = KillDelays::new(seed, 150..700);
    let mut highest: HashMap<String, (i64, i64)> = HashMap::new();
    let mut gone: HashSet<String> = HashSet::new();
    let (mut landed, mut attempts) = (0, 0);
    let postgres = matches!(table, Table::Postgres { .. });
    let enough = if shares_state {
        SHARED_CONNECTION_KILLS
    } else {
        CONNECTION_KILLS
    };
    let connections_short = || postgres && connections_killed.load(Ordering::Acquire) < enough;
    while (landed < KILLS || connections_short()) && attempts < 60 {
        attempts += 1;
        let before = progress(&world, RunKind::Incremental).await;
        let mut child = world.spawn(&["run", SYNC]);
        if let Some(status) = wait_bounded(&mut child, delays.next()).await {
            assert!(
                status.code() != Some(2),
                "seed {seed}: the run refused its config"
            );
            if status.success() {
                break;
            }
            continue;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let after = progress(&world, RunKind::Incremental).await;
        let dump = table.dump().await;
        let live = world.sim.source_records().len();
        let mid_run = after.is_some_and(|a| before.is_none_or(|b| a > b))
            && !dump.objects.is_empty()
            && dump.objects.len() < live;
        delays.landed(mid_run);
        if mid_run {
            landed += 1;
            // Rows in the store's transaction land only with their commit:
            // a kill leaves no write that may have landed.
            if shares_state {
                let store = world.store().await;
                let floors = store.floors(SYNC, None).await.expect("floors").newest;
                store.close().await;
                assert!(floors.is_empty(), "seed {seed}: floors left: {floors:?}");
            }
            if landed % 3 == 0 {
                apply_deletes(&world, &table, &mut gone, seed).await;
            }
        }
        // Between kills: one row per key, no version going back, nothing
        // deleted coming back.
        let dump = table.dump().await;
        let keys: HashSet<&str> = dump
            .objects
            .iter()
            .map(|o| o.external_id.as_str())
            .collect();
        assert_eq!(keys.len(), dump.objects.len(), "seed {seed}: a key twice");
        for object in &dump.objects {
            let row = object.body["row_version"].as_i64().unwrap_or(0);
            let version = object.body["version"].as_i64().unwrap_or(0);
            let seen = highest
                .entry(object.external_id.clone())
                .or_insert((row, version));
            assert!(
                row >= seen.0 && version >= seen.1,
                "seed {seed}: {} went back from version {:?} to {:?}",
                object.external_id,
                seen,
                (row, version)
            );
            *seen = (row.max(seen.0), version.max(seen.1));
        }
        let back: Vec<&&str> = keys.iter().filter(|k| gone.contains(**k)).collect();
        assert!(
            back.is_empty(),
            "seed {seed}: deleted records came back: {back:?}"
        );
    }
    assert!(
        landed >= KILLS,
        "seed {seed}: only {landed} of {attempts} kills landed mid-run"
    );
    assert!(
        !connections_short(),
        "seed {seed}: {} database connections terminated in {attempts} runs",
        connections_killed.load(Ordering::Acquire)
    );
    world.sim.stop_mutations();
    // Killed from here on, the shared transaction would end the runs that
    // must complete: the kills so far landed in runs that resumed.
    let stop_killing = || async {
        stop_killer.store(true, Ordering::Release);
        if let Some(killer) = killer {
            let _ = killer.await;
        }
    };
    let killing = if shares_state {
        stop_killing().await;
        None
    } else {
        Some(stop_killing)
    };
    let out = world.run_to_completion().await;
    let said = String::from_utf8_lossy(&out.stderr).contains("in the state store's transactions");
    assert_eq!(
        said, shares_state,
        "seed {seed}: shares the store's transactions: {said}"
    );
    apply_deletes(&world, &table, &mut gone, seed).await;
    world.run_to_completion().await;
    apply_deletes(&world, &table, &mut gone, seed).await;
    if let Some(stop_killing) = killing {
        stop_killing().await;
    }
    assert!(
        !gone.is_empty(),
        "seed {seed}: no record was deleted at the source"
    );

    let store = world.store().await;
    let dead: HashMap<String, String> = store
        .dead_letters(SYNC)
        .await
        .expect("dead letters")
        .into_iter()
        .map(|d| (d.source_id, d.error))
        .collect();
    let (run, _) = store
        .last_completed(SYNC, RunKind::Incremental)
        .await
        .expect("runs")
        .expect("a completed run");
    let ledger: HashMap<String, Option<i64>> = store
        .ledger(SYNC)
        .await
        .expect("ledger")
        .into_iter()
        .filter(|e| e.deleted_at.is_none())
        .map(|e| (e.external_id, e.version))
        .collect();
    store.close().await;
    if let Some(pool) = announcements {
        let announced: i64 = sqlx::query_scalar("SELECT count(*) FROM announced")
            .fetch_one(&pool)
            .await
            .expect("announcements");
        pool.close().await;
        // A write into the store's transaction lands with its commit, or not
        // at all: it is never announced first. Every other is.
        assert_eq!(
            announced == 0,
            shares_state,
            "seed {seed}: {announced} intent batches announced"
        );
    }
    let dump = table.dump().await;
    let v = simsaas::verify(&world.sim.source_records(), &dump, &dead, run.watermark)
        .with_deleted(&world.sim.deleted_ids(), &dump);
    assert!(
        v.is_exact(),
        "seed {seed}: the table does not match the source:\n{v}"
    );
    assert!(v.expected_written > 0 && v.dead_lettered > 0, "{v}");
    // The ledger says what the table holds: each of its rows, at its version.
    for row in &dump.objects {
        let version = row.body["row_version"].as_i64();
        assert_eq!(
            ledger.get(&row.external_id),
            Some(&version),
            "seed {seed}: the ledger on {}",
            row.external_id
        );
    }
    assert!(
        dead.values()
            .any(|reason| reason.contains("refused_as_http_4")),
        "seed {seed}: no row was refused by the table's CHECK constraint: {dead:?}"
    );
    table.drop().await;
}

/// Runs the deletes feed to completion: every record deleted at the source
/// before it started is then gone from the table.
async fn apply_deletes(world: &World, table: &Table, gone: &mut HashSet<String>, seed: u64) {
    let deleted = world.sim.deleted_ids();
    world.deletes_to_completion().await;
    let held: HashSet<String> = table
        .dump()
        .await
        .objects
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    let left: Vec<&String> = deleted.iter().filter(|id| held.contains(*id)).collect();
    assert!(
        left.is_empty(),
        "seed {seed}: deleted at the source, still in the table: {left:?}"
    );
    gone.extend(deleted);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_into_a_sqlite_table() {
    crash_into_table(Table::Sqlite("dest.db".into()), "table-sqlite", 301).await;
}

/// The table in the state store's own file: its rows commit with the
/// checkpoint, in the store's transactions.
#[tokio::test(flavor = "multi_thread")]
async fn crash_into_a_sqlite_table_in_the_state_store_s_file() {
    crash_into_table(Table::Sqlite("state.db".into()), "table-shared", 303).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_into_a_postgres_table_whose_connections_are_killed() {
    let table = Table::postgres("e2e_crash").await;
    crash_into_table(table, "table-postgres", 302).await;
}

/// The table in the state store's PostgreSQL database: its rows commit with
/// the checkpoint, in the run's transaction, whose connection is killed.
#[tokio::test(flavor = "multi_thread")]
async fn crash_into_a_postgres_table_in_the_state_store_s_database() {
    let Table::Postgres { schema, pool, .. } = Table::postgres("e2e_shared").await else {
        unreachable!()
    };
    let table = Table::Postgres {
        schema,
        pool,
        with_state: true,
    };
    crash_into_table(table, "table-postgres-shared", 304).await;
}
