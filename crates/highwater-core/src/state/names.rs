//! Owns the closed sets the state store keeps by name — run kinds, run statuses,
//! invocation outcomes, dead-letter stages and resolutions, and operator actions in
//! the audit log — and their spelling in SQLite: the
//! lowercase names below, which the tables' CHECK constraints admit and nothing
//! else. Operator commands filter on them, so a typo is a compile error here and a
//! refused row there, never a run nobody can find.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name read from the store, or given to it, that is not in its set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (expected one of: {expected})")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: String,
}

/// Declares a closed set stored by name: `as_str` is what SQLite holds, `FromStr`
/// reads it back, and serde uses the same names.
macro_rules! stored_names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name stored in SQLite and shown to people.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<Self, UnknownName> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        name: text.to_owned(),
                        expected: $name::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
}

stored_names! {
    /// What an alert incident is about: each opens when its condition starts
    /// to hold and closes when it no longer does.
    pub enum IncidentKind ("incident kind") {
        /// An invocation of one of the sync's runs failed.
        RunFailed = "run_failed",
        /// More open dead letters than `dead_letters_above`.
        DeadLetters = "dead_letters",
        /// The high-water mark further behind now than `lag_above`.
        Lag = "lag",
    }
}

stored_names! {
    /// What a run is for. Runs of different kinds of one sync may run at once; two
    /// of one kind never (one open run per sync and kind).
    pub enum RunKind ("run kind") {
        /// From the high-water mark (less the lookback) to a new watermark.
        Incremental = "incremental",
        /// An explicit range, with its own checkpoint.
        Backfill = "backfill",
        /// The deletes stream.
        Deletes = "deletes",
        /// The whole source; deletes what the source no longer has.
        Full = "full",
        /// Dead letters, written again.
        Replay = "replay",
        /// What reconcile found.
        Repair = "repair",
    }
}

stored_names! {
    /// Where a run stands. A run that stops or fails after it made progress stays
    /// `open`, to be resumed with its watermark; its invocations say why it stopped.
    pub enum RunStatus ("run status") {
        Open = "open",
        /// Its watermark is the high-water mark (for an incremental run).
        Completed = "completed",
        /// Failed before any progress: nothing of it is resumed, the next run
        /// plans its window afresh. Kept for the history.
        Failed = "failed",
    }
}

stored_names! {
    /// How one invocation of a run (one `highwater run`) ended.
    pub enum InvocationOutcome ("invocation outcome") {
        /// The run completed.
        Completed = "completed",
        /// Stopped at a checkpoint by a budget or a signal; the run stays open.
        Stopped = "stopped",
        /// Failed; the run stays open when it had made progress.
        Failed = "failed",
        /// Ended without a word (killed, or the machine went down): found so by
        /// the next invocation of the run.
        Crashed = "crashed",
    }
}

stored_names! {
    /// Where a record failed on its way to the destination.
    pub enum DeadLetterStage ("dead-letter stage") {
        /// The source record itself: no id, no `updated_at`.
        Source = "source",
        /// The mapping refused it, or its external id is another record's.
        Mapping = "mapping",
        /// The destination refused it, or it cannot be addressed there.
        Destination = "destination",
    }
}

stored_names! {
    /// How a dead letter stopped being unresolved.
    pub enum DeadLetterResolution ("dead-letter resolution") {
        /// A later copy of the record was written.
        Written = "written",
        /// An operator discarded it (`dlq discard`, with a reason in the audit
        /// log): the same payload is not tried again, a changed one is.
        Discarded = "discarded",
    }
}

stored_names! {
    /// An operator action the audit log records.
    pub enum AuditAction ("audit action") {
        /// `dlq discard`: dead letters marked resolved without being written.
        DeadLetterDiscard = "dead_letter_discard",
        /// `dlq replay`: dead letters written again.
        DeadLetterReplay = "dead_letter_replay",
        /// `reset`: the high-water mark rewound.
        Reset = "reset",
        /// `run --destination-moved`: the ledger describes the config's
        /// destination from now on, its records kept as written there.
        DestinationMoved = "destination_moved",
    }
}
