//! Command-line interface: argument definitions, the [`Context`] every command
//! works in (the config file, loaded once; the state store, opened lazily; the
//! global `--json`), and dispatch. Each command parses, calls the library and
//! renders, and returns how it ended — an [`Exit`], or a [`CliError`] carrying
//! its own — to `main`, the one place that prints errors and sets the exit code.
//! None holds sync logic of its own.

mod demo;
mod dlq;
mod dry;
mod explain;
mod init;
mod logging;
mod metrics;
mod probe;
mod reconcile;
mod render;
mod reset;
mod run;
mod runs;
mod serve;
mod state;
mod status;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use highwater_core::config::{Config, StateFile, SyncSpec};
use highwater_core::engine::{self, Plan};
use highwater_core::state::Store;

/// How a command ended, as the process's exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done (a run completed).
    Complete,
    /// 1: something failed (resumable from the last checkpoint when the run had
    /// made progress).
    Failed,
    /// 2: bad input — the config, a name, an id — and nothing was changed.
    Usage,
    /// 3: a run stopped at a checkpoint (a budget or a signal); resumable.
    Stopped,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Complete => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Stopped => 3,
        }
    }
}

/// A command that could not do its work; `main` prints it and exits with its code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input (the config, an unknown sync or run, no state store yet): the
    /// message names what to fix, and nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// Something failed on the way (the state store, the sync's lock, the runtime).
    #[error("error: {0}")]
    Failed(String),
    /// Whoever read the output stopped reading: nothing is wrong, and there is
    /// nobody left to tell.
    #[error("")]
    ReaderGone,
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::Failed(_) => Exit::Failed,
            CliError::ReaderGone => Exit::Complete,
        }
    }

    fn failed(e: impl std::fmt::Display) -> CliError {
        CliError::Failed(e.to_string())
    }
}

/// Reliable, checkpointed API-to-API data syncs.
#[derive(Debug, Parser)]
#[command(name = "highwater", version, about, long_about = None)]
pub struct Cli {
    /// The config file.
    #[arg(long, short, global = true, env = "HIGHWATER_CONFIG", default_value = highwater_core::config::DEFAULT_FILE)]
    pub config: PathBuf,

    /// Print JSON for scripts instead of text for people (run, backfill, status,
    /// runs, explain, dlq, reset, validate).
    #[arg(long, global = true)]
    pub json: bool,

    /// How log lines are written on stderr: JSON lines (with the run's sync and
    /// run id), plain text, or auto (text on a terminal, JSON otherwise).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Auto)]
    pub log_format: logging::LogFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics while a run runs (run, backfill).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Write Prometheus metrics to this file when a run ends, in the textfile
    /// collector's format (run, backfill).
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a sync, or resume its open run, until done or a budget stops it.
    Run {
        /// The sync's name, as in `[[sync]] name = ...`.
        sync: String,
        /// Stop at a checkpoint after this long (e.g. 30s, 10m); exit 3; resumable.
        #[arg(long, value_parser = parse_duration)]
        max_runtime: Option<Duration>,
        /// Stop at a checkpoint after this many pages; exit 3; resumable.
        #[arg(long)]
        max_pages: Option<u64>,
        /// Read and map as the run would, and print what it would create, update,
        /// skip and dead-letter; write nothing, not even state.
        #[arg(long)]
        dry_run: bool,
        /// Apply the deletions the sync's deletes endpoint lists (`[sync.deletes]
        /// path`), from where the last such run ended, with a checkpoint of its own.
        #[arg(long, conflicts_with = "dry_run")]
        deletes: bool,
        /// Read the whole source, then delete what the ledger holds and the source
        /// no longer has (`[sync.deletes]`), refusing above `full_delete_limit`.
        #[arg(long, conflicts_with_all = ["dry_run", "deletes"])]
        full: bool,
        /// With --full: delete however large a share of the ledger has gone.
        #[arg(long, requires = "full")]
        allow_mass_delete: bool,
        /// The config's destination is the one the sync's ledger describes, at
        /// a new address (a new host name, a restored database): keep the
        /// ledger, its records taken as written there (in the audit log).
        #[arg(long, conflicts_with = "dry_run")]
        destination_moved: bool,
    },
    /// Read a range of the source's history again, with a checkpoint of its own
    /// (resumable: run the same command again), without moving the sync's
    /// high-water mark and without writing anything older than what is written.
    Backfill {
        /// The sync's name.
        sync: String,
        /// Records updated at or after this time (RFC 3339, or a date: midnight UTC).
        #[arg(long, value_parser = parse_time)]
        from: jiff::Timestamp,
        /// Records updated at or before this time (RFC 3339, or a date: midnight UTC).
        #[arg(long, value_parser = parse_time)]
        to: jiff::Timestamp,
        /// Stop at a checkpoint after this long (e.g. 30s, 10m); exit 3; resumable.
        #[arg(long, value_parser = parse_duration)]
        max_runtime: Option<Duration>,
        /// Stop at a checkpoint after this many pages; exit 3; resumable.
        #[arg(long)]
        max_pages: Option<u64>,
    },
    /// Show each sync's open run, last completed run, high-water mark, lag and
    /// dead letters.
    Status,
    /// Run every sync that has a `schedule` on it, a few at a time, until
    /// SIGTERM or Ctrl-C (each run stops at its next checkpoint); serves
    /// /health, /status, /metrics and POST /syncs/{name}/run, /pause, /resume.
    Serve {
        /// Where the daemon's HTTP endpoints listen.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// How many syncs run at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// List a sync's runs, newest first, or show one run's audit record with
    /// `runs show <run-id>`.
    Runs(RunsArgs),
    /// Tell one record's story: each run and page that read it, what was done
    /// (written, skipped as unchanged or stale, dead-lettered and why), and where
    /// it stands now.
    Explain {
        /// The sync's name.
        sync: String,
        /// The record's id in the source.
        source_id: String,
    },
    /// List, show, discard or replay a sync's dead letters.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Rewind the sync's high-water mark: the next run re-reads from --to (or from
    /// the start). The ledger stays unless --forget-ledger. Refused while the
    /// sync's run is open unless --force abandons it. Recorded in the audit log.
    Reset {
        /// The sync's name.
        sync: String,
        /// Re-read from this time (RFC 3339, or a date: midnight UTC); without it,
        /// from the sync's start.
        #[arg(long, value_parser = parse_time)]
        to: Option<jiff::Timestamp>,
        /// Also forget what was written: every record read is written again.
        #[arg(long)]
        forget_ledger: bool,
        /// Abandon the open run instead of refusing.
        #[arg(long)]
        force: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move the state store: `state copy --to postgres://…` copies a SQLite
    /// store (runs, ledger, dead letters, events, audit log) into an empty
    /// PostgreSQL schema, refusing while a run is open.
    State {
        #[command(subcommand)]
        command: state::StateCommand,
    },
    /// Read the first page or two of a sync's source, write nothing, and show what
    /// the config finds there — the request and its bounds, the records, one
    /// record and the id, updated_at and version taken from it, the next page —
    /// and which key to change for what looks wrong (exit 1 then).
    Probe {
        /// The sync's name.
        sync: String,
        /// Pages to read.
        #[arg(long, default_value_t = 2)]
        pages: u32,
    },
    /// Write a commented config file (--config, highwater.toml by default) for
    /// one sync: asks for the source and destination URLs and the write mode on a
    /// terminal, takes them as flags elsewhere.
    Init(init::InitArgs),
    /// Compare the source over a window ending at the high-water mark with the
    /// ledger and, for a sample, the destination: report what is missing, stale,
    /// drifted or extra (exit 1 when anything is); --repair writes the missing,
    /// stale and drifted records again.
    Reconcile {
        /// The sync's name.
        sync: String,
        /// How far back from the high-water mark (e.g. 7d, 12h).
        #[arg(long, default_value = "7d", value_parser = parse_long_duration)]
        window: Duration,
        /// Records to read back from the destination: a number, or `all`.
        #[arg(long, default_value = "100", value_parser = parse_sample)]
        sample: engine::Sample,
        /// Write the missing, stale and drifted records again, as a repair run.
        #[arg(long)]
        repair: bool,
        /// Let --repair delete more extras than the sync's full_delete_limit
        /// share of the ledger.
        #[arg(long, requires = "repair")]
        allow_mass_delete: bool,
    },
    /// Check the config file and report every problem with its line and key.
    Validate,
    /// Start a simulated billing API and CRM with faults on, sync between them,
    /// kill and resume the sync, and verify the destination against the source.
    Demo {
        /// Records in the simulated source.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Seed for the simulated data and faults.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Times to kill the sync mid-run before letting it finish.
        #[arg(long, default_value_t = 2)]
        kills: u32,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub show: Option<RunsCommand>,
    /// The sync whose runs to list.
    #[arg(required = true)]
    pub sync: Option<String>,
    /// How many runs to list, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show one run's audit record: window, cursors, counts, retries and errors
    /// by class, example ids, and each invocation.
    Show {
        /// The run's id, or enough of its start to tell it apart.
        run_id: String,
    },
}

/// Prints to stdout. A reader that stopped reading (`runs … --json | head -1`)
/// ends the output quietly, as ripgrep's does; any other failure to write is one.
pub fn print(text: impl std::fmt::Display) -> Result<(), CliError> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::ReaderGone),
        Err(e) => Err(CliError::Failed(format!("cannot write the output: {e}"))),
    }
}

/// A point in time to the microsecond, as the state store keeps them: RFC 3339,
/// or a date for its midnight UTC.
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let parsed =
        text.parse::<jiff::Timestamp>()
            .or_else(|e| match text.parse::<jiff::civil::Date>() {
                Ok(date) => format!("{date}T00:00:00Z").parse::<jiff::Timestamp>(),
                Err(_) => Err(e),
            });
    let at = parsed.map_err(|_| {
        format!("expected a time like 2026-01-31T00:00:00Z or a date like 2026-01-31, got {text:?}")
    })?;
    jiff::Timestamp::from_microsecond(at.as_microsecond()).map_err(|e| e.to_string())
}

/// A duration that may be given in days or weeks (a day is 24 hours).
fn parse_long_duration(text: &str) -> Result<Duration, String> {
    highwater_core::config::parse_long_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration like 7d, 12h or 2w, got {text:?}"))
}

fn parse_sample(text: &str) -> Result<engine::Sample, String> {
    match text {
        "all" => Ok(engine::Sample::All),
        n => n
            .parse::<usize>()
            .map(engine::Sample::Records)
            .map_err(|_| format!("expected a number of records or `all`, got {text:?}")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| format!("expected a duration like 30s, 10m or 1h, got {text:?}"))
}

/// An unknown sync is bad input, named with the syncs the file defines.
fn no_sync<'a>(
    file: &std::path::Path,
    name: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> CliError {
    let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
    CliError::Usage(format!(
        "{}: no sync named {name:?} (defined: {})",
        file.display(),
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

/// What every command works in: the config file, read on first use; the state
/// store, opened on first use (and created only by the commands that write it);
/// and whether to print JSON.
#[derive(Debug)]
pub struct Context {
    config_path: PathBuf,
    pub json: bool,
    pub log_format: logging::LogFormat,
    /// Where a run's metrics go: served, and written at its end.
    pub metrics: (Option<std::net::SocketAddr>, Option<PathBuf>),
    config: Option<Arc<Config>>,
    state_file: Option<Arc<StateFile>>,
    store: Option<Store>,
}

impl Context {
    pub fn new(config_path: PathBuf, json: bool, log_format: logging::LogFormat) -> Self {
        Context {
            config_path,
            json,
            log_format,
            metrics: (None, None),
            config: None,
            state_file: None,
            store: None,
        }
    }

    /// The config file, validated; every problem is bad input.
    pub fn config(&mut self) -> Result<Arc<Config>, CliError> {
        if let Some(config) = &self.config {
            return Ok(Arc::clone(config));
        }
        let config = Arc::new(
            highwater_core::config::load(&self.config_path)
                .map_err(|e| CliError::Usage(e.to_string()))?,
        );
        self.config = Some(Arc::clone(&config));
        Ok(config)
    }

    /// The config file's `[state]` and syncs' names, all that the commands
    /// that only read or tend the state store need: validated without the
    /// syncs' values, so that they run without the syncs' `${VAR}` secrets.
    /// The whole file's, once it has been read.
    pub fn state_file(&mut self) -> Result<Arc<StateFile>, CliError> {
        if let Some(state_file) = &self.state_file {
            return Ok(Arc::clone(state_file));
        }
        let state_file = Arc::new(match &self.config {
            Some(config) => StateFile {
                file: config.file.clone(),
                state: config.state.clone(),
                syncs: config.syncs.iter().map(|s| s.name.clone()).collect(),
            },
            None => highwater_core::config::load_state(&self.config_path)
                .map_err(|e| CliError::Usage(e.to_string()))?,
        });
        self.state_file = Some(Arc::clone(&state_file));
        Ok(state_file)
    }

    /// The sync of that name; an unknown one is bad input, named with the
    /// syncs the file defines.
    pub fn sync(&mut self, name: &str) -> Result<SyncSpec, CliError> {
        let config = self.config()?;
        match config.sync(name) {
            Some(spec) => Ok(spec.clone()),
            None => Err(no_sync(
                &config.file,
                name,
                config.syncs.iter().map(|s| &s.name),
            )),
        }
    }

    /// That the file defines a sync of that name, for the commands that only
    /// read or tend its state ([`Context::state_file`]).
    pub fn sync_name(&mut self, name: &str) -> Result<(), CliError> {
        let state_file = self.state_file()?;
        match state_file.syncs.iter().any(|s| s == name) {
            true => Ok(()),
            false => Err(no_sync(&state_file.file, name, &state_file.syncs)),
        }
    }

    /// The state store, which must exist already: reading it never creates one.
    pub async fn store(&mut self) -> Result<Store, CliError> {
        match self.existing_store().await? {
            Some(store) => Ok(store),
            None => {
                let state_file = self.state_file()?;
                Err(CliError::Usage(format!(
                    "{}: no state store yet (nothing has run; `highwater run <sync>` creates it)",
                    state_file.state.store
                )))
            }
        }
    }

    /// The state store if it exists, without creating it.
    pub async fn existing_store(&mut self) -> Result<Option<Store>, CliError> {
        if self.store.is_none()
            && !Store::exists(&self.state_file()?.state)
                .await
                .map_err(CliError::failed)?
        {
            return Ok(None);
        }
        self.open_store().await.map(Some)
    }

    /// The state store, created if need be: for the commands that write it.
    pub async fn open_store(&mut self) -> Result<Store, CliError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let store = Store::connect(&self.state_file()?.state)
            .await
            .map_err(CliError::failed)?;
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Closes the state store, if it was opened (before the sync's lock is let go).
    pub async fn close(&mut self) {
        if let Some(store) = self.store.take() {
            store.close().await;
        }
    }

    /// Closes the state store and lets the sync's lock go, in the order the
    /// store needs.
    pub async fn close_releasing(&mut self, lock: highwater_core::state::RunLock) {
        match self.store.take() {
            Some(store) => store.close_releasing(lock).await,
            None => lock.release().await,
        }
    }
}

/// Runs the command; what it returns is the process's exit.
pub async fn dispatch(cli: Cli) -> Result<Exit, CliError> {
    let mut ctx = Context::new(cli.config, cli.json, cli.log_format);
    ctx.metrics = (cli.metrics_addr, cli.metrics_file);
    let result = match cli.command {
        Command::Run {
            sync,
            max_runtime,
            max_pages,
            dry_run: false,
            deletes,
            full,
            allow_mass_delete,
            destination_moved,
        } => {
            let plan = if deletes {
                Plan::Deletes
            } else if full {
                Plan::Full { allow_mass_delete }
            } else {
                Plan::Incremental
            };
            let flags = run::Flags {
                max_runtime,
                max_pages,
                destination_moved,
            };
            run::run(&mut ctx, &sync, plan, flags).await
        }
        Command::Run {
            sync,
            max_pages,
            dry_run: true,
            ..
        } => dry::dry_run(&mut ctx, &sync, Plan::Incremental, max_pages).await,
        Command::Backfill {
            sync,
            from,
            to,
            max_runtime,
            max_pages,
        } => {
            if from >= to {
                Err(CliError::Usage(format!(
                    "backfill: --from {from} is not before --to {to}"
                )))
            } else {
                let plan = Plan::Backfill { from, to };
                let flags = run::Flags {
                    max_runtime,
                    max_pages,
                    ..run::Flags::default()
                };
                run::run(&mut ctx, &sync, plan, flags).await
            }
        }
        Command::Status => status::status(&mut ctx).await,
        Command::Serve {
            listen,
            concurrency,
        } => serve::serve(&mut ctx, listen, concurrency).await,
        Command::Runs(RunsArgs {
            show: Some(RunsCommand::Show { run_id }),
            ..
        }) => runs::show(&mut ctx, &run_id).await,
        Command::Runs(RunsArgs {
            sync: Some(sync),
            limit,
            ..
        }) => runs::list(&mut ctx, &sync, limit).await,
        Command::Runs(RunsArgs { .. }) => Err(CliError::Usage(
            "runs: name a sync, or `runs show <run-id>`".into(),
        )),
        Command::Explain { sync, source_id } => explain::explain(&mut ctx, &sync, &source_id).await,
        Command::Dlq { command } => dlq::dlq(&mut ctx, command).await,
        Command::Reset {
            sync,
            to,
            forget_ledger,
            force,
            reason,
        } => {
            let args = reset::ResetArgs {
                sync,
                to,
                forget_ledger,
                force,
                reason,
            };
            reset::reset(&mut ctx, args).await
        }
        Command::State { command } => state::state(&mut ctx, command).await,
        Command::Probe { sync, pages } => probe::probe(&mut ctx, &sync, pages).await,
        Command::Init(args) => init::init(&ctx.config_path, args),
        Command::Reconcile {
            sync,
            window,
            sample,
            repair,
            allow_mass_delete,
        } => {
            let repair = repair.then_some(reconcile::Repair { allow_mass_delete });
            reconcile::reconcile(&mut ctx, &sync, window, sample, repair).await
        }
        Command::Validate => validate::validate(&mut ctx),
        Command::Demo {
            records,
            seed,
            kills,
        } => demo::demo(records, seed, kills).await,
    };
    ctx.close().await;
    result
}
