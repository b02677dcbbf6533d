//! What the store keeps for operating syncs beside their runs: alert
//! incidents — at most one open per sync and kind; opening one that is
//! already open returns it unchanged, so that its webhook is called once per
//! incident however many invocations see its condition; it is marked notified
//! only once a call was answered — and which syncs are paused.

use jiff::Timestamp;

use super::IncidentKind;

/// One incident of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub incident_id: String,
    pub sync: String,
    pub kind: IncidentKind,
    /// The run whose invocation opened it, if one did.
    pub run_id: Option<String>,
    /// Why it opened, as first seen.
    pub reason: String,
    pub opened_at: Timestamp,
    /// When its webhook call was answered; `None` until then.
    pub notified_at: Option<Timestamp>,
}
