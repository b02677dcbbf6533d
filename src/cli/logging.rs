//! Where logs go: structured JSON lines on stderr when stderr is not a terminal (or
//! with `--log-format json`); on a terminal, warnings and errors in plain text,
//! printed around the progress bar, in colour unless `NO_COLOR` is set (text
//! written elsewhere has none). A run's lines carry its span: sync, run id and
//! kind. `HIGHWATER_LOG` (e.g. `debug`, `highwater_core=debug`) overrides the level.

use std::io::{IsTerminal, Write};

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain text on a terminal, JSON lines otherwise.
    Auto,
    Json,
    Text,
}

/// Installs the subscriber; `bar` is suspended while a log line is written.
pub fn init(bar: Option<ProgressBar>, format: LogFormat) {
    let terminal = std::io::stderr().is_terminal();
    let default = if terminal { "warn" } else { "info" };
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let filter =
        EnvFilter::try_from_env("HIGHWATER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let writer = BarWriter { bar };
    let result = if !json {
        // Colours only for a person at a terminal: a file or a pipe gets
        // the text alone.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(false)
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init()
    };
    // A second init (demo runs several syncs) keeps the first subscriber.
    let _ = result;
}

#[derive(Clone)]
struct BarWriter {
    bar: Option<ProgressBar>,
}

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
