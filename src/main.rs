//! The `highwater` binary: parses the command line, runs the command and turns how
//! it ended into the exit code (0 complete, 1 failed, 2 usage or config error, 3
//! stopped by a budget — resumable). This is the one place that prints a
//! command's error and picks the code, as ripgrep's `main` does.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{CliError, Exit};

// jemalloc, for all of the process's memory: SQLite's too, since it replaces
// `malloc` itself. glibc's malloc gives each thread that allocates an arena of
// its own and keeps there what the thread frees; with the run loop, the reading
// thread and a thread per SQLite connection, that retained memory was a quarter
// of the peak. `.cargo/config.toml` sets one arena and a short decay.
#[cfg(target_os = "linux")]
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
