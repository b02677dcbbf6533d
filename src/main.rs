//! The `highwater` binary: parses the command line, runs the command and turns how
//! it ended into the exit code (0 complete, 1 failed, 2 usage or config error, 3
//! stopped by a budget — resumable). This is the one place that prints a
//! command's error and picks the code, as ripgrep's `main` does.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{CliError, Exit};

/// jemalloc instead of glibc's malloc, for Rust and for the bundled SQLite
/// alike (its `malloc` is the process's). A run allocates on one thread and
/// frees on another (the reading thread, the run loop, SQLite's worker): glibc
/// held to one arena made every thread wait on that arena's lock, about a
/// tenth of the process's time, and with an arena per thread each kept what
/// it had freed, a quarter of the peak. jemalloc's per-thread caches need no
/// lock for most of that; `.cargo/config.toml` builds it with one arena, small
/// thread caches and unused pages returned within 300 ms, which keeps the peak
/// below where glibc's one arena held it. `MALLOC_CONF` overrides those at run
/// time.
#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let exit = match run(cli::Cli::parse()) {
        Ok(exit) => exit,
        Err(CliError::ReaderGone) => Exit::Complete,
        Err(err) => {
            eprintln!("{err}");
            err.exit()
        }
    };
    ExitCode::from(exit.code())
}

fn run(args: cli::Cli) -> Result<Exit, CliError> {
    // One thread: a sync waits on the network, and SQLite has its own worker
    // thread; cross-thread wake-ups cost more than a second core gives.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(cli::dispatch(args))
}
