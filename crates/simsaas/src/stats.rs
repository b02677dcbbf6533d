//! Counters of everything the simulator served, kept as atomics so the hot
//! path never takes a lock just to count.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters for both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub source: SideStats,
    pub dest: SideStats,
}

/// Counters for one side. Fields that do not apply to a side stay 0
/// (e.g. `stale_served` on the destination).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideStats {
    /// Data requests on the source; writes and lookups on the destination.
    pub requests: u64,
    /// 429 with `Retry-After: <secs>` (including the token bucket), or
    /// without it during a penalty (`DestFaults::rate_limit_penalty`).
    pub rate_limited: u64,
    /// 429 with `Retry-After: <HTTP-date>`.
    pub rate_limited_date: u64,
    /// 429s of both forms, counted once per incident: those sent within
    /// [`IN_FLIGHT_GRACE`](crate::IN_FLIGHT_GRACE) of an incident's first one
    /// answered requests already on their way.
    pub rate_limit_incidents: u64,
    /// 5xx answers from bursts and destination slow writes.
    pub server_errors: u64,
    pub slow: u64,
    /// Source pages answered with a proxy's HTML page (`not_json_ratio`).
    pub not_json: u64,
    pub commit_then_timeout: u64,
    /// Writes applied, then answered 502.
    pub commit_then_502: u64,
    /// Writes held past the client's timeout, then applied.
    pub delayed_apply: u64,
    /// The longest any held write took from its arrival to being applied, in
    /// milliseconds: `delayed_apply_after` plus however long the simulator's
    /// task waited for a core. A client's late-write window must cover it.
    pub delayed_apply_max_ms: u64,
    /// Writes refused (412) by the version precondition.
    pub preconditions_failed: u64,
    /// Requests that arrived after a 429 had been sent (and its in-flight
    /// grace had passed) but before its `Retry-After` deadline.
    pub retry_after_violations: u64,
    /// Destination writes refused with 400/422 (poison or malformed).
    pub rejected: u64,
    pub stale_served: u64,
    pub unauthorized: u64,
    pub tokens_issued: u64,
    pub writes_applied: u64,
    pub idempotent_replays: u64,
    /// Items of a batch that failed alone (`item_fail_status` for that item).
    pub item_failures: u64,
    /// Asks for a batch job's state (`batch_job_polls`).
    pub job_polls: u64,
    /// Batch jobs that failed, applying nothing (`batch_job_fail_ratio`).
    pub jobs_failed: u64,
    /// Responses whose pagination was deliberately looped.
    pub looped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub rate_limited: AtomicU64,
    pub rate_limited_date: AtomicU64,
    pub server_errors: AtomicU64,
    pub slow: AtomicU64,
    pub not_json: AtomicU64,
    pub commit_then_timeout: AtomicU64,
    pub commit_then_502: AtomicU64,
    pub delayed_apply: AtomicU64,
    pub delayed_apply_max_ms: AtomicU64,
    pub preconditions_failed: AtomicU64,
    pub retry_after_violations: AtomicU64,
    pub rejected: AtomicU64,
    pub stale_served: AtomicU64,
    pub unauthorized: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub writes_applied: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub item_failures: AtomicU64,
    pub job_polls: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub looped: AtomicU64,
}

/// Relaxed is enough: counters are independent and only read as a snapshot.
pub(crate) fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SideStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SideStats {
            requests: g(&self.requests),
            rate_limited: g(&self.rate_limited),
            rate_limited_date: g(&self.rate_limited_date),
            // The side's holdoff groups 429s into incidents: `SimSaas::stats` fills it in.
            rate_limit_incidents: 0,
            server_errors: g(&self.server_errors),
            slow: g(&self.slow),
            not_json: g(&self.not_json),
            commit_then_timeout: g(&self.commit_then_timeout),
            commit_then_502: g(&self.commit_then_502),
            delayed_apply: g(&self.delayed_apply),
            delayed_apply_max_ms: g(&self.delayed_apply_max_ms),
            preconditions_failed: g(&self.preconditions_failed),
            retry_after_violations: g(&self.retry_after_violations),
            rejected: g(&self.rejected),
            stale_served: g(&self.stale_served),
            unauthorized: g(&self.unauthorized),
            tokens_issued: g(&self.tokens_issued),
            writes_applied: g(&self.writes_applied),
            idempotent_replays: g(&self.idempotent_replays),
            item_failures: g(&self.item_failures),
            job_polls: g(&self.job_polls),
            jobs_failed: g(&self.jobs_failed),
            looped: g(&self.looped),
        }
    }
}
