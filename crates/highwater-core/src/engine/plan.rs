//! What one run is for, and the window it reads: a [`Plan`] names the run's kind
//! (runs are keyed by sync and kind, each kind with its own open run and
//! checkpoint) and where its records come from. Each new kind of run is a
//! variant here and the window or record source it brings, not a branch in the
//! run loop.

use jiff::Timestamp;

use super::decide::plan_window;
use crate::config::SyncSpec;
use crate::source::Window;
use crate::state::{HighWaterMark, RunKind, RunRow};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// From the high-water mark, less the lookback, to now less the lag; its
    /// completion moves the high-water mark.
    Incremental,
    /// A fixed range of the source's history, `from <= updated_at <= to`, with
    /// a checkpoint of its own. It never moves the incremental high-water mark;
    /// the ledger keeps it from writing anything older than what is written.
    Backfill { from: Timestamp, to: Timestamp },
    /// The unresolved dead letters (those of `ids`, or all), in source-id
    /// order: each record as it was read, mapped and written again with the
    /// current config, whatever failed before. Success resolves the letter; a
    /// new failure keeps it, with the new reason.
    Replay { ids: Option<Vec<String>> },
    /// The records `ids` re-read from the source over `from..=to` and written
    /// again even where the ledger says the destination holds them: what a
    /// reconciliation found missing, stale or drifted at the destination —
    /// and, for a sync that deletes, the records of `delete` (in the ledger,
    /// no longer at the source) deleted, unless the re-read finds them.
    Repair {
        from: Timestamp,
        to: Timestamp,
        ids: Vec<String>,
        delete: Vec<String>,
    },
    /// The deletes endpoint, from the last completed deletes run's watermark
    /// less the feed's lookback, to now less the lag: each deletion is applied
    /// at the destination and kept in the ledger as a tombstone.
    Deletes,
    /// The whole source — from the sync's `start`, the oldest it covers, when
    /// it has one (an API may list only recent records unless asked for a
    /// time) — with nothing dropped past the watermark; then what the ledger
    /// holds (not deleted, and since `start`) and the source no longer listed
    /// is deleted — refused above the sync's
    /// `full_delete_limit` share of the ledger unless `allow_mass_delete`. An
    /// open full run is resumed from the start: what it saw is not kept.
    Full { allow_mass_delete: bool },
}

impl Plan {
    pub fn kind(&self) -> RunKind {
        match self {
            Plan::Incremental => RunKind::Incremental,
            Plan::Backfill { .. } => RunKind::Backfill,
            Plan::Replay { .. } => RunKind::Replay,
            Plan::Repair { .. } => RunKind::Repair,
            Plan::Deletes => RunKind::Deletes,
            Plan::Full { .. } => RunKind::Full,
        }
    }

    /// The window of a new run of this plan, fixed now and kept on resume.
    /// `high_water_mark` is the plan's own kind's: for deletes, the last
    /// completed deletes run's watermark.
    pub(super) fn window(
        &self,
        spec: &SyncSpec,
        now: Timestamp,
        high_water_mark: HighWaterMark,
    ) -> Window {
        let last_run = match high_water_mark {
            HighWaterMark::Run(mark) => Some(mark),
            HighWaterMark::None | HighWaterMark::Reset(_) => None,
        };
        let mut incremental = plan_window(
            now,
            spec.source.lag,
            spec.source.lookback,
            spec.source.start,
            last_run,
        );
        // Rewound by an operator: from exactly there (never before `start`).
        if let HighWaterMark::Reset(Some(to)) = high_water_mark {
            incremental.lower = Some(spec.source.start.map_or(to, |start| to.max(start)));
        }
        match self {
            Plan::Incremental => incremental,
            Plan::Full { .. } => Window {
                lower: spec.source.start,
                watermark: incremental.watermark,
            },
            Plan::Deletes => {
                let lookback = match spec.deletes.as_ref().map(|d| &d.feed) {
                    Some(crate::config::DeleteFeed::Endpoint(feed)) => feed.lookback,
                    _ => spec.source.lookback,
                };
                plan_window(now, spec.source.lag, lookback, spec.source.start, last_run)
            }
            // Nothing past now less the lag is settled at the source yet.
            Plan::Backfill { from, to } | Plan::Repair { from, to, .. } => Window {
                lower: Some(*from),
                watermark: (*to).min(incremental.watermark),
            },
            // Read from the dead letters, not the source: no window applies.
            Plan::Replay { .. } => Window {
                lower: None,
                watermark: now,
            },
        }
    }

    /// Whether the open run `run` of this plan's kind is this plan's, so that
    /// resuming it finishes what was asked; a backfill over another range is
    /// not resumed under a new one.
    pub(super) fn matches(&self, run: &RunRow) -> bool {
        match self {
            // A replay resumes after the last source id it finished.
            // A repair open from before is finished under its own window.
            Plan::Incremental
            | Plan::Replay { .. }
            | Plan::Repair { .. }
            | Plan::Deletes
            | Plan::Full { .. } => true,
            // The window's end is `to`, or earlier when `to` was not settled yet.
            Plan::Backfill { from, to } => run.lower_bound == Some(*from) && run.watermark <= *to,
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::state::RunStatus;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn spec() -> SyncSpec {
        let text = r#"
[[sync]]
name = "s"

[sync.source]
base_url = "http://127.0.0.1:1"
path = "/items"
lag = "30s"
pagination = { style = "cursor", token_path = "next", token_param = "cursor" }

[sync.mapping]
external_id = "{id}"
fields = { name = "name" }

[sync.destination]
type = "http"
base_url = "http://127.0.0.1:2"
mode = "put"
path = "/items/{external_id}"
"#;
        crate::config::parse(text, std::path::Path::new("hw.toml"), &|_| None)
            .map(|c| c.syncs[0].clone())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(lower: Option<Timestamp>, watermark: Timestamp) -> RunRow {
        RunRow {
            run_id: "r".into(),
            sync: "s".into(),
            kind: RunKind::Backfill,
            status: RunStatus::Open,
            lower_bound: lower,
            watermark,
            started_at: at(0),
            updated_at: at(0),
            completed_at: None,
        }
    }

    #[test]
    fn a_backfill_reads_its_range_and_nothing_not_yet_settled() {
        let spec = spec();
        let now = at(10_000);
        let plan = Plan::Backfill {
            from: at(100),
            to: at(200),
        };
        let window = plan.window(&spec, now, HighWaterMark::Run(at(9_000)));
        assert_eq!((window.lower, window.watermark), (Some(at(100)), at(200)));
        // A range reaching past now stops at now less the lag.
        let future = Plan::Backfill {
            from: at(100),
            to: at(20_000),
        };
        let window = future.window(&spec, now, HighWaterMark::None);
        let settled = now
            .checked_sub(SignedDuration::try_from(spec.source.lag).unwrap_or_default())
            .unwrap_or(now);
        assert_eq!(window.watermark, settled);
        assert!(future.matches(&run(Some(at(100)), settled)));
    }

    #[test]
    fn only_the_same_range_resumes_an_open_backfill() {
        let plan = Plan::Backfill {
            from: at(100),
            to: at(200),
        };
        assert!(plan.matches(&run(Some(at(100)), at(200))));
        assert!(!plan.matches(&run(Some(at(50)), at(200))));
        assert!(!plan.matches(&run(Some(at(100)), at(300))));
        assert!(!plan.matches(&run(None, at(200))));
        assert!(Plan::Incremental.matches(&run(None, at(1))));
    }
}
