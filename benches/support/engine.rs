//! The engine run in a bench's own process: on a thread of its own with a
//! single-threaded runtime, as the binary runs it, while the simulator keeps
//! the bench's runtime.

use std::path::PathBuf;

use highwater_core::engine::{self, Progress, RunOptions};
use highwater_core::state::Store;
use tokio_util::sync::CancellationToken;

/// Runs the `bench` sync of `config_text` (a config file in `dir`) to its
/// end with `options`; blocks until it is done. Returns the records written.
pub fn engine_run(config_text: String, dir: PathBuf, options: RunOptions) -> Result<u64, String> {
    let thread = std::thread::Builder::new()
        .name("engine".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let path = dir.join("highwater.toml");
                let config = highwater_core::config::parse(&config_text, &path, &|_| None)
                    .map_err(|e| e.to_string())?;
                let spec = config.sync("bench").ok_or("no sync")?.clone();
                let store = Store::connect(&config.state)
                    .await
                    .map_err(|e| e.to_string())?;
                let (progress, _) = tokio::sync::watch::channel(Progress::default());
                let report = engine::run(
                    &spec,
                    &store,
                    engine::Plan::Incremental,
                    options,
                    CancellationToken::new(),
                    &progress,
                )
                .await
                .map_err(|e| e.to_string())?;
                store.close().await;
                Ok(report.counters.written)
            })
        })
        .map_err(|e| e.to_string())?;
    thread
        .join()
        .map_err(|_| "the engine panicked".to_owned())?
}
