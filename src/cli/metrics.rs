//! Prometheus metrics of a run: served at `--metrics-addr` (`GET /metrics`) while
//! it runs, and written at its end to `--metrics-file` in the text format that
//! node_exporter's textfile collector reads, for runs started by cron. The library
//! emits through the `metrics` facade; this installs the recorder that keeps them.

use std::net::SocketAddr;
use std::path::PathBuf;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

use super::CliError;

pub struct Metrics {
    handle: PrometheusHandle,
    server: Option<JoinHandle<()>>,
    file: Option<PathBuf>,
}

/// Installs the recorder and starts serving, when either is asked for.
pub async fn start(
    addr: Option<SocketAddr>,
    file: Option<PathBuf>,
) -> Result<Option<Metrics>, CliError> {
    if addr.is_none() && file.is_none() {
        return Ok(None);
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| CliError::Failed(format!("cannot record metrics: {e}")))?;
    let server = match addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                CliError::Usage(format!("--metrics-addr {addr}: cannot listen there: {e}"))
            })?;
            let served = handle.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let handle = served.clone();
                    async move { handle.render() }
                }),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(error = %e, "the metrics endpoint stopped");
                }
            }))
        }
        None => None,
    };
    Ok(Some(Metrics {
        handle,
        server,
        file,
    }))
}

impl Metrics {
    /// Stops serving and writes the file: whole, or not at all, since the
    /// collector may read it at any moment.
    pub fn finish(self) -> Result<(), CliError> {
        if let Some(server) = self.server {
            server.abort();
        }
        let Some(file) = self.file else {
            return Ok(());
        };
        let mut partial = file.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, self.handle.render())
            .and_then(|()| std::fs::rename(&partial, &file))
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", file.display())))
    }
}
