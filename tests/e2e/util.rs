//! Helpers for end-to-end tests: a fresh directory per test, the simulated SaaS on
//! 127.0.0.1, config files for every pagination style and write mode, the real
//! `highwater` binary run as a child process, and the comparison of both sides.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use highwater_core::state::{RunKind, Store};
use simsaas::{SimConfig, SimSaas, Verification};
use tokio::process::{Child, Command};

pub const SYNC: &str = "invoices";

/// The longest a single run may take before a test calls it stuck.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_highwater")
}

/// A fresh, empty directory for one test.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("highwater-e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    if postgres_state() {
        drop_schema(&state_schema(&dir));
    }
    dir
}

/// Whether the tests' state stores are PostgreSQL schemas
/// (`HIGHWATER_TEST_STATE=postgres`) rather than SQLite files.
pub fn postgres_state() -> bool {
    std::env::var("HIGHWATER_TEST_STATE").is_ok_and(|v| v == "postgres")
}

/// The machine's PostgreSQL, as the tests reach it.
pub fn postgres_url() -> String {
    std::env::var("HW_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh PostgreSQL schema for one test's tables (`hw_<test>_<pid>`), and
/// a pool on its database.
pub async fn tables_schema(test: &str) -> (String, sqlx::PgPool) {
    let schema = format!("hw_{test}_{}", std::process::id());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&postgres_url())
        .await
        .expect("PostgreSQL at HW_TEST_PG or 127.0.0.1:5432/test");
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect("schema");
    }
    (schema, pool)
}

/// The schema of a test's PostgreSQL state store: one per test, named from
/// its directory without the process id, so that a later run of the suite
/// starts it afresh.
pub fn state_schema(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let test = name
        .rsplit_once('-')
        .map_or(name.as_str(), |(test, _)| test);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    test.hash(&mut hasher);
    format!("hw_e2e_{:016x}", hasher.finish())
}

/// The test's PostgreSQL schema, dropped: a store in it starts empty.
pub fn fresh_schema(dir: &Path) -> String {
    let schema = state_schema(dir);
    drop_schema(&schema);
    schema
}

fn drop_schema(schema: &str) {
    let out = std::process::Command::new("psql")
        .args([
            &postgres_url(),
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    assert!(
        out.status.success(),
        "drop schema {schema}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config's `[state]` table for a test in `dir`: a SQLite file there, or a
/// PostgreSQL schema of its own.
pub fn state_table(dir: &Path) -> String {
    state_table_with(dir, None)
}

/// [`state_table`], with more keys of the table (`merge_rows = 500`, one per
/// line), in as many lines as a file's table.
pub fn state_table_with(dir: &Path, keys: Option<&str>) -> String {
    if postgres_state() {
        let keys = keys.unwrap_or_default();
        // As many lines as a file's table: tests name config lines by number.
        format!(
            "state = {{ url = \"{}\", schema = \"{}\", lease = \"5s\"{} }}\n# a PostgreSQL state store\n{}",
            postgres_url(),
            state_schema(dir),
            keys.lines().map(|k| format!(", {k}")).collect::<String>(),
            "#\n".repeat(keys.lines().count().saturating_sub(1)),
        )
    } else {
        format!(
            "[state]\npath = \"{}\"\n{}",
            dir.join("state.db").display(),
            keys.unwrap_or_default()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Cursor,
    NextUrlBody,
    NextUrlLink,
    Keyset,
    Offset,
    Page,
    /// The page-number listing followed by its `Link` header, as GitHub's
    /// (not in [`Style::ALL`]).
    PageLink,
    /// The offset listing followed by its `Link` header, as ServiceNow's
    /// (not in [`Style::ALL`]).
    OffsetLink,
}

impl Style {
    pub const ALL: [Style; 6] = [
        Style::Cursor,
        Style::NextUrlBody,
        Style::NextUrlLink,
        Style::Keyset,
        Style::Offset,
        Style::Page,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Put,
    Lookup,
    Post,
    /// Batches of 50 to the simulator's upserting batch endpoint.
    Batch,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Put, Mode::Lookup, Mode::Post, Mode::Batch];
}

/// What a test's config says; `toml()` writes it.
#[derive(Debug, Clone)]
pub struct Setup {
    pub style: Style,
    pub mode: Mode,
    pub page_size: u32,
    pub timeout: &'static str,
    pub lag: &'static str,
    pub lookback: &'static str,
    pub concurrency: u32,
    pub max_attempts: u32,
    pub source_auth: String,
    pub dest_auth: String,
    /// Extra lines appended to `[sync.source]`.
    pub source_extra: String,
    /// Extra lines appended to `[sync.mapping.fields]`.
    pub fields_extra: String,
    /// Extra lines appended to `[sync.destination]`.
    pub dest_extra: String,
    pub budgets: String,
    /// `[state] merge_rows`, when not the default.
    pub merge_rows: Option<usize>,
    /// The lines of `[sync.deletes]`; no such table when empty.
    pub deletes: String,
}

impl Setup {
    pub fn new(style: Style, mode: Mode) -> Self {
        Setup {
            style,
            mode,
            page_size: 100,
            timeout: "1s",
            lag: "0s",
            lookback: "3h",
            concurrency: 8,
            max_attempts: 10,
            source_auth: r#"{ type = "bearer", token = "sim-token" }"#.into(),
            dest_auth: r#"{ type = "bearer", token = "sim-token" }"#.into(),
            source_extra: String::new(),
            fields_extra: String::new(),
            dest_extra: String::new(),
            budgets: String::new(),
            merge_rows: None,
            deletes: String::new(),
        }
    }

    pub fn toml(&self, sim: &SimSaas, dir: &Path) -> String {
        let (path, pagination, records_path, size_param, bounds) = match self.style {
            Style::Cursor => (
                "/v1/cursor/invoices",
                r#"{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }"#,
                "data",
                "limit",
                true,
            ),
            Style::NextUrlBody => (
                "/v1/links/invoices",
                r#"{ style = "next_url", next_url_path = "links.next" }"#,
                "data",
                "limit",
                true,
            ),
            Style::NextUrlLink => (
                "/v1/links/invoices",
                r#"{ style = "next_url", link_header = true }"#,
                "data",
                "limit",
                true,
            ),
            Style::Keyset => (
                "/v1/keyset/invoices",
                r#"{ style = "keyset", updated_param = "since", id_param = "after_id" }"#,
                "data",
                "limit",
                false,
            ),
            Style::Offset => (
                "/v1/offset/invoices",
                r#"{ style = "offset", offset_param = "offset", overlap = 10 }"#,
                "data",
                "limit",
                true,
            ),
            Style::Page => (
                "/v1/pages/invoices",
                r#"{ style = "page", page_param = "page", overlap = 10 }"#,
                "items",
                "per_page",
                true,
            ),
            Style::PageLink => (
                "/v1/pages/invoices",
                r#"{ style = "next_url", link_header = true }"#,
                "items",
                "per_page",
                true,
            ),
            Style::OffsetLink => (
                "/v1/offset/invoices",
                r#"{ style = "next_url", link_header = true }"#,
                "data",
                "limit",
                true,
            ),
        };
        let bounds = if bounds {
            "lower_bound_param = \"updated_after\"\nupper_bound_param = \"updated_before\""
        } else {
            "upper_bound_param = \"until\""
        };
        let destination = match self.mode {
            Mode::Put => r#"mode = "put"
path = "/v1/contacts/by-external-id/{external_id}""#
                .to_owned(),
            Mode::Lookup => r#"mode = "lookup"
lookup_path = "/v1/contacts"
lookup_param = "external_id"
create_path = "/v1/contacts"
update_path = "/v1/contacts/{dest_id}""#
                .to_owned(),
            Mode::Post => r#"mode = "post"
path = "/v1/contacts/upsert""#
                .to_owned(),
            Mode::Batch => r#"mode = "batch"
path = "/v1/contacts/batch"
batch_size = 50
batch_field = "records"
results_path = "results"
result_id_field = "external_id"
result_status_field = "status"
result_error_field = "error"
upsert = true"#
                .to_owned(),
        };
        format!(
            r#"{state}

[[sync]]
name = "{SYNC}"

[sync.source]
base_url = "{source}"
path = "{path}"
auth = {source_auth}
records_path = "{records_path}"
version_field = "version"
page_size = {page_size}
page_size_param = "{size_param}"
timeout = "{timeout}"
lag = "{lag}"
lookback = "{lookback}"
{bounds}
pagination = {pagination}
{source_extra}

[sync.mapping]
external_id = "{{id}}"
[sync.mapping.fields]
email = "customer.email"
name = "customer.name"
amount_cents = "amount_cents"
currency = "currency"
version = "version"
{fields_extra}
[sync.mapping.required]
email = "string"
amount_cents = "integer"

[sync.destination]
type = "http"
base_url = "{dest}"
{destination}
external_id_field = "external_id"
auth = {dest_auth}
timeout = "{timeout}"
concurrency = {concurrency}
{dest_extra}

[sync.retry]
base = "20ms"
cap = "1s"
max_attempts = {max_attempts}

[sync.budgets]
{budgets}
{deletes}
"#,
            state = state_table_with(
                dir,
                self.merge_rows
                    .map(|n| format!("merge_rows = {n}"))
                    .as_deref()
            ),
            source = sim.source_url(),
            dest = sim.dest_url(),
            source_auth = self.source_auth,
            dest_auth = self.dest_auth,
            page_size = self.page_size,
            timeout = self.timeout,
            lag = self.lag,
            lookback = self.lookback,
            source_extra = self.source_extra,
            fields_extra = self.fields_extra,
            dest_extra = self.dest_extra,
            concurrency = self.concurrency,
            max_attempts = self.max_attempts,
            budgets = self.budgets,
            deletes = if self.deletes.is_empty() {
                String::new()
            } else {
                format!("[sync.deletes]\n{}\n", self.deletes)
            },
        )
    }
}

/// One test's world: its directory, the simulated SaaS and a config file.
pub struct World {
    pub dir: PathBuf,
    pub sim: SimSaas,
    pub config: PathBuf,
}

impl World {
    pub async fn start(name: &str, sim: SimConfig, setup: &Setup) -> World {
        let dir = fresh_dir(name);
        let sim = SimSaas::start(sim)
            .await
            .unwrap_or_else(|e| panic!("start sim: {e}"));
        let config = dir.join("highwater.toml");
        std::fs::write(&config, setup.toml(&sim, &dir))
            .unwrap_or_else(|e| panic!("write config: {e}"));
        World { dir, sim, config }
    }

    pub fn rewrite(&self, setup: &Setup) {
        std::fs::write(&self.config, setup.toml(&self.sim, &self.dir))
            .unwrap_or_else(|e| panic!("write config: {e}"));
    }

    /// Replaces the HTTP destination with a JSON Lines file at `file`.
    /// Writes to a JSON Lines file; `compact_lines` as given, else the default.
    pub fn use_jsonl_destination(&self, file: &Path, compact_lines: Option<usize>) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let start = text.find("[sync.destination]").expect("destination table");
        let end = text.find("[sync.retry]").expect("retry table");
        let compact = compact_lines.map_or(String::new(), |n| format!("compact_lines = {n}\n"));
        let jsonl = format!(
            "[sync.destination]\ntype = \"jsonl\"\nfile = \"{}\"\n{compact}\n",
            file.display()
        );
        std::fs::write(
            &self.config,
            format!("{}{jsonl}{}", &text[..start], &text[end..]),
        )
        .expect("write config");
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// Puts the world's state store in a SQLite file, whatever
    /// `HIGHWATER_TEST_STATE` says.
    pub fn use_file_state(&self) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let start = text.find("[[sync]]").expect("a sync");
        let state = format!("[state]\npath = \"{}\"\n\n", self.state_path().display());
        std::fs::write(&self.config, format!("{state}{}", &text[start..])).expect("config");
    }

    /// Points the world's config at the PostgreSQL store in `schema`, as it is.
    pub fn use_postgres_schema(&self, schema: &str) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let start = text.find("[[sync]]").expect("a sync");
        let state = format!(
            "state = {{ url = \"{}\", schema = \"{schema}\" }}\n\n",
            postgres_url()
        );
        std::fs::write(&self.config, format!("{state}{}", &text[start..])).expect("config");
    }

    /// Moves the world's state store to a PostgreSQL schema of its own, with
    /// leases of `lease`, whatever `HIGHWATER_TEST_STATE` says.
    pub fn use_postgres_state(&self, lease: &str) {
        let schema = fresh_schema(&self.dir);
        let text = std::fs::read_to_string(&self.config).expect("config");
        let start = text.find("[[sync]]").expect("a sync");
        let state = format!(
            "state = {{ url = \"{}\", schema = \"{schema}\", lease = \"{lease}\" }}\n\n",
            postgres_url()
        );
        std::fs::write(&self.config, format!("{state}{}", &text[start..])).expect("config");
    }

    /// The config's `[state]`; the secrets the binary is given in its
    /// environment, which the store does not use, read as placeholders.
    fn state_spec(&self) -> highwater_core::config::StateSpec {
        let text = std::fs::read_to_string(&self.config).expect("config");
        highwater_core::config::parse(&text, &self.config, &|_| Some("unused".to_owned()))
            .unwrap_or_else(|e| panic!("load config: {e}"))
            .state
    }

    /// The world's state store, opened as its config says (created if need be).
    pub async fn store(&self) -> Store {
        Store::connect(&self.state_spec())
            .await
            .unwrap_or_else(|e| panic!("open state: {e}"))
    }

    /// Whether the world's state store holds anything yet.
    pub async fn has_store(&self) -> bool {
        Store::exists(&self.state_spec())
            .await
            .unwrap_or_else(|e| panic!("state: {e}"))
    }

    /// Runs `highwater --config <config> <args>` to the end; one that takes
    /// longer than [`RUN_LIMIT`] is stuck, and is killed.
    pub async fn highwater(&self, args: &[&str]) -> Output {
        finish(&mut self.command(args)).await
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn highwater: {e}"))
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_with(&self.config, args)
    }

    /// As [`World::command`], with the config file at `config`.
    pub fn command_with(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin());
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("HIGHWATER_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// `highwater run` until it completes (exit 0), allowing a few resumable
    /// failures. An invocation still running at [`RUN_LIMIT`] is killed once and
    /// resumed, as after any crash: on two loaded cores, a run under every fault
    /// has been seen to need longer while it progressed all along. A second one
    /// fails the test.
    pub async fn run_to_completion(&self) -> Output {
        let mut last = None;
        let mut cut_short = false;
        for _ in 0..5 {
            let mut command = self.command(&["run", SYNC]);
            let out = match tokio::time::timeout(RUN_LIMIT, command.output()).await {
                Ok(out) => out.unwrap_or_else(|e| panic!("run highwater: {e}")),
                Err(_) if !cut_short => {
                    // Dropping the output's future killed the process.
                    cut_short = true;
                    eprintln!("{command:?} ran past {RUN_LIMIT:?}: killed, resumed");
                    continue;
                }
                Err(_) => panic!("{command:?} did not end within {RUN_LIMIT:?}, twice"),
            };
            if out.status.code() == Some(0) {
                return out;
            }
            last = Some(out);
        }
        let out = last.unwrap_or_else(|| unreachable!());
        panic!("the sync did not complete:\n{}", describe(&out));
    }

    /// `highwater run <sync> --deletes` until it completes (exit 0), allowing
    /// a few resumable failures.
    pub async fn deletes_to_completion(&self) -> Output {
        let mut last = None;
        for _ in 0..5 {
            let out = self.highwater(&["run", SYNC, "--deletes"]).await;
            if out.status.code() == Some(0) {
                return out;
            }
            last = Some(out);
        }
        let out = last.unwrap_or_else(|| unreachable!());
        panic!("the deletes run did not complete:\n{}", describe(&out));
    }

    /// Compares the destination with the source for everything up to the last
    /// completed run's watermark.
    pub async fn verify(&self) -> Verification {
        self.verify_against(None).await
    }

    /// As [`World::verify`], for the source records in `ids` only (duplicates and
    /// unexplained objects are still looked for everywhere).
    pub async fn verify_only(&self, ids: &HashSet<String>) -> Verification {
        self.verify_against(Some(ids)).await
    }

    async fn verify_against(&self, ids: Option<&HashSet<String>>) -> Verification {
        let store = self.store().await;
        let dead: HashMap<String, String> = store
            .dead_letters(SYNC)
            .await
            .unwrap_or_else(|e| panic!("dead letters: {e}"))
            .into_iter()
            .map(|d| (d.source_id, d.error))
            .collect();
        let watermark = store
            .last_completed(SYNC, RunKind::Incremental)
            .await
            .unwrap_or_else(|e| panic!("runs: {e}"))
            .map(|(run, _)| run.watermark)
            .unwrap_or_else(|| panic!("no completed run"));
        store.close().await;
        let (source, dest) = (self.sim.source_records(), self.sim.dest_dump());
        let deleted = self.sim.deleted_ids();
        match ids {
            Some(ids) => simsaas::verify_ids(&source, &dest, &dead, watermark, ids),
            None => simsaas::verify(&source, &dest, &dead, watermark),
        }
        .with_deleted(&deleted, &dest)
    }

    /// The destination's own id of each object, by external id.
    pub fn dest_ids(&self) -> HashMap<String, String> {
        self.sim
            .dest_dump()
            .objects
            .into_iter()
            .map(|o| (o.external_id, o.id))
            .collect()
    }

    pub async fn assert_exact(&self) -> Verification {
        let v = self.verify().await;
        assert!(v.is_exact(), "destination does not match source:\n{v}");
        assert!(
            v.expected_written > 0,
            "nothing was expected to be written:\n{v}"
        );
        v
    }

    /// No request reached either API after a 429 and before its `Retry-After`
    /// deadline (beyond the grace for requests already in flight).
    pub fn assert_retry_after_respected(&self) {
        let stats = self.sim.stats();
        assert_eq!(
            (
                stats.source.retry_after_violations,
                stats.dest.retry_after_violations
            ),
            (0, 0),
            "requests sent before a Retry-After deadline (source, destination): {stats:?}"
        );
    }

    /// Every table of the state store as text, to prove a failure changed nothing.
    pub async fn state_dump(&self) -> String {
        if !self.has_store().await {
            return "no state store".into();
        }
        let store = self.store().await;
        let status = store
            .status(SYNC)
            .await
            .unwrap_or_else(|e| panic!("status: {e}"));
        let ledger = store
            .ledger(SYNC)
            .await
            .unwrap_or_else(|e| panic!("ledger: {e}"));
        let dead = store
            .dead_letters(SYNC)
            .await
            .unwrap_or_else(|e| panic!("dlq: {e}"));
        store.close().await;
        format!(
            "{:?}\n{:?}\n{:?}\n{ledger:?}\n{dead:?}",
            status.open_run, status.last_completed, status.dead_letters
        )
    }
}

/// Runs a command to the end; one that takes longer than [`RUN_LIMIT`] is stuck,
/// and is killed (the commands here are made with `kill_on_drop`).
/// `highwater --config <config> <args>` run to its end, outside a [`World`]
/// (a source scripted by the test).
pub async fn highwater_at(config: &Path, args: &[&str]) -> Output {
    finish(
        Command::new(bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("HIGHWATER_LOG")
            .stdin(Stdio::null()),
    )
    .await
}

pub async fn finish(command: &mut Command) -> Output {
    tokio::time::timeout(RUN_LIMIT, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not end within {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("run highwater: {e}"))
}

/// Waits for a spawned child's output, as [`finish`] does for a command.
pub async fn finish_child(child: Child) -> Output {
    tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("highwater did not end within {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("run highwater: {e}"))
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run's JSON report (`run --json`).
pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run report is not JSON ({e}):\n{}", describe(out)))
}

/// Serves `app` on a free port of 127.0.0.1, for an API scripted by a test: its
/// address, and the task to abort when the test is done with it.
pub async fn serve_local(app: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("address: {e}"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

/// Waits for a child, but no longer than `limit`.
pub async fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    tokio::time::timeout(limit, child.wait())
        .await
        .ok()
        .and_then(Result::ok)
}

/// Seeded kill instants that stretch while kills land too early. On two
/// loaded cores a fresh process may not commit its first page within the
/// planned window, and a kill before any progress proves nothing: each such
/// miss pushes the next instants later, each landed kill pulls them back.
pub struct KillDelays {
    rng: fastrand::Rng,
    range: std::ops::Range<u64>,
    stretch: u64,
}

impl KillDelays {
    /// Delays drawn from `range` (milliseconds) with `seed`.
    pub fn new(seed: u64, range: std::ops::Range<u64>) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            range,
            stretch: 0,
        }
    }

    /// How long the next process runs before it is killed.
    pub fn next(&mut self) -> Duration {
        Duration::from_millis(self.rng.u64(self.range.clone()) + self.stretch)
    }

    /// Whether the last kill landed mid-run.
    pub fn landed(&mut self, landed: bool) {
        let step = self.range.end / 2;
        self.stretch = if landed {
            self.stretch / 2
        } else {
            (self.stretch + step).min(step * 16)
        };
    }
}

/// The highest version each destination object has shown: between kills none
/// may go back, but what a late write set back (which the run must repair).
#[derive(Default)]
pub struct Versions(HashMap<String, i64>);

impl Versions {
    pub fn check(&mut self, dump: &simsaas::DestDump, seed: u64) {
        let late: HashSet<&str> = dump.late_regressions.iter().map(String::as_str).collect();
        for object in &dump.objects {
            let Some(version) = object.body.get("version").and_then(|v| v.as_i64()) else {
                continue;
            };
            let seen = self.0.entry(object.external_id.clone()).or_insert(version);
            assert!(
                version >= *seen || late.contains(object.external_id.as_str()),
                "seed {seed}: {} went back from version {seen} to {version}",
                object.external_id
            );
            *seen = (*seen).max(version);
        }
    }
}

/// How far the open run of `kind` has got (records resolved, deletions
/// included): none when none is open.
pub async fn progress(world: &World, kind: RunKind) -> Option<u64> {
    if !world.has_store().await {
        return None;
    }
    let store = world.store().await;
    let open = store.open_run(SYNC, kind).await.expect("open run");
    store.close().await;
    open.map(|(_, checkpoint)| {
        let c = checkpoint.counters;
        c.written + c.unchanged + c.stale + c.dead_lettered + c.deleted
    })
}

/// A config syncing the source at `addr` into a JSON Lines file in `dir`:
/// sync `name`, the `[sync.source]` lines after its `base_url`, the
/// `[sync.mapping]` lines. Where the config is, and the file.
pub fn jsonl_sync(
    dir: &Path,
    name: &str,
    addr: std::net::SocketAddr,
    source: &str,
    mapping: &str,
) -> (PathBuf, PathBuf) {
    let (config, file) = (dir.join("highwater.toml"), dir.join("out.jsonl"));
    let text = format!(
        "{state}\n\n[[sync]]\nname = \"{name}\"\n\n[sync.source]\nbase_url = \"http://{addr}\"\n{source}\n\n[sync.mapping]\n{mapping}\n\n[sync.destination]\ntype = \"jsonl\"\nfile = \"{file}\"\n",
        state = state_table(dir),
        file = file.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
    (config, file)
}
