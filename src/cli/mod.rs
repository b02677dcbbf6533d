//! Command-line interface: argument definitions and dispatch. Each command parses,
//! calls the library and renders; none holds sync logic of its own.

mod demo;
mod logging;
mod render;
mod run;
mod status;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_STOPPED: u8 = 3;

/// Reliable, checkpointed API-to-API data syncs.
#[derive(Debug, Parser)]
#[command(name = "highwater", version, about, long_about = None)]
pub struct Cli {
    /// The config file.
    #[arg(long, short, global = true, env = "HIGHWATER_CONFIG", default_value = highwater_core::config::DEFAULT_FILE)]
    pub config: PathBuf,

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
        /// Print the run report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show each sync's open run, last completed run, high-water mark, lag and
    /// dead letters.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| format!("expected a duration like 30s, 10m or 1h, got {text:?}"))
}

pub async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Command::Run {
            sync,
            max_runtime,
            max_pages,
            json,
        } => run::run(&cli.config, &sync, max_runtime, max_pages, json).await,
        Command::Status { json } => status::status(&cli.config, json).await,
        Command::Validate => validate::validate(&cli.config),
        Command::Demo {
            records,
            seed,
            kills,
        } => demo::demo(records, seed, kills).await,
    }
}
