//! The `highwater` binary: parses the command line, runs the command and turns how
//! it ended into the exit code (0 complete, 1 failed, 2 usage or config error, 3
//! stopped by a budget — resumable). This is the one place that prints a
//! command's error and picks the code, as ripgrep's `main` does.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{CliError, Exit};

fn main() -> ExitCode {
    one_malloc_arena();
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

/// glibc's malloc gives each thread that allocates an arena of its own and
/// keeps there what that thread freed: with the run loop, the reading thread
/// and a worker thread per SQLite connection, that kept memory was a quarter of
/// a run's peak. One arena holds it to what is live. glibc reads that setting
/// only from its environment as the process starts (or from `mallopt`, which
/// safe Rust cannot call), so the binary starts itself once more with it set —
/// the same process (exec keeps the pid, the open files and the arguments) —
/// unless the environment already says how many arenas to use. If that exec
/// fails, the binary runs as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    use std::os::unix::process::CommandExt;
    const TUNABLES: &str = "GLIBC_TUNABLES";
    const ONE_ARENA: &str = "glibc.malloc.arena_max=1";
    let current = std::env::var(TUNABLES).unwrap_or_default();
    if current.contains("glibc.malloc.arena_max") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let tunables = if current.is_empty() {
        ONE_ARENA.to_owned()
    } else {
        format!("{current}:{ONE_ARENA}")
    };
    let mut command = std::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(TUNABLES, tunables);
    if let Some(name) = std::env::args_os().next() {
        command.arg0(name);
    }
    // Returns only if the exec failed.
    let _ = command.exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
