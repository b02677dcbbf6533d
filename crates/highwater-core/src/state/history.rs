//! Owns the run history: every run's audit record — its row in `runs` (kind,
//! status, window, examples of the ids it wrote and dead-lettered), its checkpoint,
//! and one row per invocation in `invocations` (start and end, outcome, stop reason
//! or error, cursor and counters at both ends, retried requests by class).
//! Invariants: an invocation is recorded in the transaction that opens or resumes
//! its run, so every run has at least one; a completed run's last invocation ends
//! in the transaction that completes it; only a later invocation of the same run
//! (which holds the sync's lock, so the earlier one is gone) marks an unended
//! invocation crashed.

use jiff::Timestamp;
use serde_json::Value;

use super::{
    Checkpoint, Columns, Counters, InvocationOutcome, RunRow, StateError, micros,
    run_with_checkpoint,
};
use crate::obs::RetryCounts;

/// One invocation of a run: one `highwater run` that opened or resumed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// 1 for the invocation that opened the run, then 2, 3, … for each resume.
    pub number: u32,
    pub started_at: Timestamp,
    /// `None` while it runs, and when it ended without a word.
    pub ended_at: Option<Timestamp>,
    /// `None` while it runs (or until the next invocation finds it crashed).
    pub outcome: Option<InvocationOutcome>,
    /// Why a stopped invocation stopped (a budget, a signal).
    pub stop_reason: Option<String>,
    /// What kind of failure ended a failed invocation (e.g.
    /// `destination:retries_exhausted`), for grouping; `error` says it in full.
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub cursor_start: Value,
    pub cursor_end: Option<Value>,
    /// The run's counters when the invocation started: the checkpoint's.
    pub counters_start: Counters,
    /// The run's counters when it ended, as its run report gave them.
    pub counters_end: Option<Counters>,
    pub retries: Option<RetryCounts>,
}

impl Invocation {
    /// What this invocation did itself, when it recorded its end.
    pub fn counters(&self) -> Option<Counters> {
        self.counters_end.map(|end| end.since(&self.counters_start))
    }
}

/// How an invocation ended, as `engine::run` records it.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationEnd {
    pub outcome: InvocationOutcome,
    pub stop_reason: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    /// The run's totals at the end, as the run report gives them.
    pub counters: Counters,
    pub retries: RetryCounts,
}

/// Examples of source ids a run handled, to look up (`explain`, the destination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples {
    /// The first source ids of the ledger rows the run committed: written, or
    /// (rarely) a newer version whose payload was unchanged.
    pub written: Vec<String>,
    pub dead_lettered: Vec<String>,
}

/// A run's audit record: what `highwater runs` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run: RunRow,
    /// Its cursor now (at the end, for a run that ended) and its committed counters.
    pub checkpoint: Checkpoint,
    pub samples: Samples,
    /// Oldest first; empty for a run older than the run history.
    pub invocations: Vec<Invocation>,
}

impl RunRecord {
    /// When the run ended: completed, or failed. An open run has not ended,
    /// whatever its last invocation did.
    pub fn ended_at(&self) -> Option<Timestamp> {
        match self.run.status {
            super::RunStatus::Open => None,
            super::RunStatus::Completed => self.run.completed_at,
            super::RunStatus::Failed => self
                .last_invocation()
                .and_then(|i| i.ended_at)
                .or(Some(self.run.updated_at)),
        }
    }

    pub fn last_invocation(&self) -> Option<&Invocation> {
        self.invocations.last()
    }

    /// Where the run started reading.
    pub fn cursor_start(&self) -> Option<&Value> {
        self.invocations.first().map(|i| &i.cursor_start)
    }

    /// The run's totals as its last run report gave them; the checkpoint's when
    /// the last invocation recorded no end (it was killed, or is running).
    pub fn counters(&self) -> Counters {
        self.last_invocation()
            .and_then(|i| i.counters_end)
            .unwrap_or(self.checkpoint.counters)
    }

    /// Requests retried over every invocation that recorded its end, by class.
    pub fn retries(&self) -> RetryCounts {
        self.invocations
            .iter()
            .filter_map(|i| i.retries)
            .fold(RetryCounts::default(), |sum, r| sum.plus(&r))
    }

    /// Failed invocations by error class, in the order they first failed.
    pub fn failures(&self) -> Vec<(&str, u32)> {
        let mut classes: Vec<(&str, u32)> = Vec::new();
        for invocation in &self.invocations {
            if invocation.outcome != Some(InvocationOutcome::Failed) {
                continue;
            }
            let class = invocation.error_class.as_deref().unwrap_or("unknown");
            match classes.iter_mut().find(|(c, _)| *c == class) {
                Some((_, n)) => *n += 1,
                None => classes.push((class, 1)),
            }
        }
        classes
    }
}

/// A run's record, without its invocations: the run, its checkpoint and
/// its samples.
pub(super) fn record(row: &impl Columns) -> Result<RunRecord, StateError> {
    let (run, checkpoint) = run_with_checkpoint(row)?;
    let ids = |column: &str| -> Result<Vec<String>, StateError> {
        serde_json::from_str(&row.text(column)?)
            .map_err(|e| StateError::Corrupt(format!("run {}: {column}: {e}", run.run_id)))
    };
    let samples = Samples {
        written: ids("sample_written")?,
        dead_lettered: ids("sample_dead_lettered")?,
    };
    Ok(RunRecord {
        run,
        checkpoint,
        samples,
        invocations: Vec::new(),
    })
}

pub(super) fn invocation(row: &impl Columns) -> Result<Invocation, StateError> {
    let json = |column: &str| -> Result<Option<Value>, StateError> {
        row.opt_text(column)?
            .map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StateError::Corrupt(format!("invocation {column}: {e}")))
            })
            .transpose()
    };
    let counters = |column: &str| -> Result<Option<Counters>, StateError> {
        json(column)?
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| StateError::Corrupt(format!("invocation {column}: {e}")))
            })
            .transpose()
    };
    let number = row.int("number")?;
    Ok(Invocation {
        number: u32::try_from(number)
            .map_err(|_| StateError::Corrupt(format!("invocation number {number}")))?,
        started_at: micros(row.int("started_at")?)?,
        ended_at: row.opt_int("ended_at")?.map(micros).transpose()?,
        outcome: row.opt_text("outcome")?.map(|o| o.parse()).transpose()?,
        stop_reason: row.opt_text("stop_reason")?,
        error_class: row.opt_text("error_class")?,
        error: row.opt_text("error")?,
        cursor_start: json("cursor_start")?.unwrap_or(Value::Null),
        cursor_end: json("cursor_end")?,
        counters_start: counters("counters_start")?.unwrap_or_default(),
        counters_end: counters("counters_end")?,
        retries: json("retries")?
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| StateError::Corrupt(format!("invocation retries: {e}")))
            })
            .transpose()?,
    })
}
