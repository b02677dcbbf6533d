//! The `highwater` binary: parses the command line, calls the library, renders the
//! result and maps it to an exit code (0 complete, 1 failed, 2 usage or config
//! error, 3 stopped by a budget — resumable).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // One thread: a sync waits on the network, and SQLite has its own worker
    // thread; cross-thread wake-ups cost more than a second core gives.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILED);
        }
    };
    let code = runtime.block_on(cli::dispatch(args));
    ExitCode::from(code)
}
