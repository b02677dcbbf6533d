//! Owns the names of highwater's structured events: every `tracing` event the engine
//! emits carries `event = <one of these>`, so logs can be filtered and counted by a
//! stable name; the typed events whose `emit()` logs the event and bumps its
//! metrics (as vector's internal events do), so a log line and a metric cannot
//! disagree; and the tally of retried requests by class that each API keeps and
//! the run history records. Imports nothing of the crate: every module may use it.
//!
//! Metrics go through the `metrics` facade: nothing is recorded until the binary
//! installs a recorder (`--metrics-addr`, `--metrics-file`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const RUN_STARTED: &str = "run_started";
pub const RUN_RESUMED: &str = "run_resumed";
pub const PAGE_COMMITTED: &str = "page_committed";
pub const RECORD_DEAD_LETTERED: &str = "record_dead_lettered";
pub const REQUEST_RETRIED: &str = "request_retried";
pub const RUN_COMPLETED: &str = "run_completed";
pub const RUN_STOPPED: &str = "run_stopped";
pub const RUN_FAILED: &str = "run_failed";
pub const PAGINATION_RESCAN: &str = "pagination_rescan";
pub const NUMBERED_NEXT_URLS: &str = "numbered_next_urls";
pub const UNSTABLE_TIES: &str = "unstable_ties";
pub const OFFSET_NEXT_URLS: &str = "offset_next_urls";
pub const FULL_PAGE_ENDS_LIST: &str = "full_page_ends_list";
pub const LATE_WRITES_AWAITED: &str = "late_writes_awaited";
pub const LAGGING_COPIES: &str = "lagging_copies";
pub const BOUND_NOT_HONORED: &str = "bound_not_honored";
pub const RECORD_REPAIRED: &str = "record_repaired";
pub const RECORDS_UNVERIFIED: &str = "records_unverified";
pub const EXTERNAL_ID_CHANGED: &str = "external_id_changed";
pub const FLOOR_CONFIRMED: &str = "floor_confirmed";
pub const FIRST_RUN_FULL: &str = "first_run_full";
pub const CONFIG_WARNING: &str = "config_warning";
pub const DESTINATION_MOVED: &str = "destination_moved";
pub const ALERT_SENT: &str = "alert_sent";
pub const ALERT_UNDELIVERED: &str = "alert_undelivered";

pub const RECORDS_TOTAL: &str = "highwater_records_total";
pub const REQUESTS_RETRIED_TOTAL: &str = "highwater_requests_retried_total";
pub const HTTP_RESPONSES_TOTAL: &str = "highwater_http_responses_total";
pub const LAG_SECONDS: &str = "highwater_lag_seconds";
pub const HIGH_WATER_MARK_AGE_SECONDS: &str = "highwater_high_water_mark_age_seconds";
pub const DEAD_LETTERS_TOTAL: &str = "highwater_dead_letters_total";
pub const RECORDS_REPAIRED_TOTAL: &str = "highwater_records_repaired_total";
pub const RECORDS_UNVERIFIED_TOTAL: &str = "highwater_records_unverified_total";
pub const EXTERNAL_IDS_CHANGED_TOTAL: &str = "highwater_external_ids_changed_total";
pub const PAGINATION_RESCANS_TOTAL: &str = "highwater_pagination_rescans_total";
pub const LAGGING_COPIES_TOTAL: &str = "highwater_lagging_copies_total";
pub const RUN_DURATION_SECONDS: &str = "highwater_run_duration_seconds";
pub const LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "highwater_last_success_timestamp_seconds";

/// Seconds from `then` to now, never negative.
fn age(then: Timestamp) -> f64 {
    (Timestamp::now().as_microsecond() - then.as_microsecond()).max(0) as f64 / 1e6
}

/// A request about to be sent again.
pub struct RequestRetried<'a> {
    pub sync: &'a str,
    pub api: &'static str,
    pub class: RetryClass,
    pub url: &'a str,
    /// 0 when no answer came.
    pub status: u16,
    pub detail: &'a str,
    pub attempt: u32,
    pub delay: Duration,
}

impl RequestRetried<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            event = REQUEST_RETRIED,
            api = self.api,
            url = %self.url,
            status = self.status,
            detail = %self.detail,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            "retrying"
        );
        metrics::counter!(
            REQUESTS_RETRIED_TOTAL,
            "sync" => self.sync.to_owned(),
            "api" => self.api,
            "class" => self.class.as_str(),
        )
        .increment(1);
    }
}

/// An answer from an API, or none (`status` 0: timeout, broken connection).
pub struct ResponseReceived<'a> {
    pub sync: &'a str,
    pub api: &'static str,
    pub status: u16,
}

impl ResponseReceived<'_> {
    pub fn emit(&self) {
        let class = match self.status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        metrics::counter!(
            HTTP_RESPONSES_TOTAL,
            "sync" => self.sync.to_owned(),
            "api" => self.api,
            "class" => class,
        )
        .increment(1);
    }
}

/// What a run resolved since the last time it said so: at each confirmed commit,
/// and once more when the invocation ends.
pub struct RecordsResolved<'a> {
    pub sync: &'a str,
    pub run_id: &'a str,
    pub kind: &'static str,
    /// The run's committed pages so far.
    pub pages: u64,
    pub read: u64,
    pub written: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub dead_lettered: u64,
    pub deleted: u64,
    /// The newest `updated_at` written so far: how far behind the source the
    /// destination is.
    pub newest_written: Option<Timestamp>,
}

impl RecordsResolved<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            event = PAGE_COMMITTED,
            sync = %self.sync,
            run_id = %self.run_id,
            pages = self.pages,
            "pages committed"
        );
        for (outcome, n) in [
            ("read", self.read),
            ("written", self.written),
            ("unchanged", self.unchanged),
            ("stale", self.stale),
            ("dead_lettered", self.dead_lettered),
            ("deleted", self.deleted),
        ] {
            metrics::counter!(
                RECORDS_TOTAL,
                "sync" => self.sync.to_owned(),
                "kind" => self.kind,
                "outcome" => outcome,
            )
            .increment(n);
        }
        if let Some(newest) = self.newest_written {
            metrics::gauge!(LAG_SECONDS, "sync" => self.sync.to_owned()).set(age(newest));
        }
    }
}

/// A run opened, or an open one resumed.
pub struct RunStarted<'a> {
    pub sync: &'a str,
    pub run_id: &'a str,
    pub resumed: bool,
    pub lower_bound: Option<Timestamp>,
    pub watermark: Timestamp,
}

impl RunStarted<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = if self.resumed { RUN_RESUMED } else { RUN_STARTED },
            sync = %self.sync,
            run_id = %self.run_id,
            watermark = %self.watermark,
            lower_bound = %self.lower_bound.map_or("none".to_owned(), |t| t.to_string()),
            "run {}",
            if self.resumed { "resumed" } else { "started" }
        );
    }
}

/// A record that could not be written, and why.
pub struct RecordDeadLettered<'a> {
    pub sync: &'a str,
    pub source_id: &'a str,
    pub stage: &'static str,
    pub reason: &'a str,
}

impl RecordDeadLettered<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = RECORD_DEAD_LETTERED,
            sync = %self.sync,
            source_id = %self.source_id,
            stage = self.stage,
            reason = %self.reason,
            "record dead-lettered"
        );
        metrics::counter!(DEAD_LETTERS_TOTAL, "sync" => self.sync.to_owned(), "stage" => self.stage)
            .increment(1);
    }
}

/// A record a late write had set back, written again.
pub struct RecordRepaired<'a> {
    pub sync: &'a str,
    pub source_id: &'a str,
    /// What the destination held.
    pub held: &'a str,
}

impl RecordRepaired<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = RECORD_REPAIRED,
            sync = %self.sync,
            source_id = %self.source_id,
            held = %self.held,
            "a late write had set this record back; written again"
        );
        metrics::counter!(RECORDS_REPAIRED_TOTAL, "sync" => self.sync.to_owned()).increment(1);
    }
}

/// Records written again while an older write of theirs could still land, that
/// could not be checked: named in the run report.
pub struct RecordsUnverified<'a> {
    pub sync: &'a str,
    pub source_ids: &'a [String],
    /// Why: the destination cannot be read back, or reading it failed.
    pub why: &'a str,
}

impl RecordsUnverified<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event = RECORDS_UNVERIFIED,
            sync = %self.sync,
            records = %self.source_ids.join(", "),
            why = %self.why,
            "records written again while an older write of theirs could still land could not be checked"
        );
        metrics::counter!(RECORDS_UNVERIFIED_TOTAL, "sync" => self.sync.to_owned())
            .increment(self.source_ids.len() as u64);
    }
}

/// A record written before under another external id, written under its new
/// one: a destination that keys its objects by external id (a PUT by it, an
/// upsert on it, a table's key) keeps the object of the old one. The first
/// few of a run are named; `records` counts those of the run so far.
pub struct ExternalIdChanged<'a> {
    pub sync: &'a str,
    pub source_id: &'a str,
    pub was: &'a str,
    pub now: &'a str,
    pub records: u64,
}

impl ExternalIdChanged<'_> {
    /// Records of a run named one by one; past them, one line at the run's end.
    pub const NAMED: u64 = 10;

    pub fn emit(&self) {
        metrics::counter!(EXTERNAL_IDS_CHANGED_TOTAL, "sync" => self.sync.to_owned()).increment(1);
        if self.records > Self::NAMED {
            return;
        }
        tracing::warn!(
            event = EXTERNAL_ID_CHANGED,
            sync = %self.sync,
            source_id = %self.source_id,
            was = %self.was,
            now = %self.now,
            "the record's external id changed since it was written: a destination that keys \
             its objects by external id keeps the object of the old one (delete it there, or \
             map an external id that does not change)"
        );
    }

    /// After a run that changed more than were named: how many in all.
    pub fn summary(sync: &str, records: u64) {
        if records > Self::NAMED {
            tracing::warn!(
                event = EXTERNAL_ID_CHANGED,
                sync = %sync,
                records,
                "{records} records were written under another external id than before, the \
                 first {} named above",
                Self::NAMED
            );
        }
    }
}

/// A write an earlier attempt announced is at the destination: the older copy
/// read since is stale.
pub struct FloorConfirmed<'a> {
    pub sync: &'a str,
    pub source_id: &'a str,
}

impl FloorConfirmed<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = FLOOR_CONFIRMED,
            sync = %self.sync,
            source_id = %self.source_id,
            "an earlier attempt's write is at the destination; the older copy read since is stale"
        );
    }
}

/// An answer held copies of records older than their place in it, and reading it
/// again brought their later versions.
pub struct LaggingCopies<'a> {
    pub sync: &'a str,
    pub copies: usize,
    /// Reads of the request, the first included.
    pub reads: u32,
}

impl LaggingCopies<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            event = LAGGING_COPIES,
            copies = self.copies,
            reads = self.reads,
            "the source answered with older copies of records than their place shows (a lagging replica); read again and took the later versions"
        );
        metrics::counter!(LAGGING_COPIES_TOTAL, "sync" => self.sync.to_owned())
            .increment(self.copies as u64);
    }
}

/// The source kept answering with a record stamped before the bound the request
/// carried (or before the record ahead of it in a sorted listing).
pub struct BoundNotHonored<'a> {
    pub sync: &'a str,
    pub source_id: &'a str,
    pub stamp: jiff::Timestamp,
    pub floor: Option<jiff::Timestamp>,
    pub reads: u32,
}

impl BoundNotHonored<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event = BOUND_NOT_HONORED,
            source_id = %self.source_id,
            updated_at = %self.stamp,
            bound = self.floor.map(|f| f.to_string()),
            reads = self.reads,
            "the source answered every read with this record stamped before the lower bound it was sent (or, with `sorted = true`, before the record ahead of it): taken as the API's answer, which compares the bound coarsely or not at all; records older than their place are not looked for again in this run"
        );
    }
}

/// The source's pages moved while they were read.
pub struct PaginationRescan<'a> {
    pub sync: &'a str,
    pub style: &'static str,
    pub position: u64,
    /// The whole range is read again (not only the page).
    pub from_start: bool,
}

impl PaginationRescan<'_> {
    pub fn emit(&self) {
        if self.from_start {
            tracing::warn!(
                event = PAGINATION_RESCAN,
                style = self.style,
                position = self.position,
                "the records read last are no longer where they were; reading this run's range again from the start (already-written records are skipped)"
            );
        } else {
            tracing::debug!(
                event = PAGINATION_RESCAN,
                style = self.style,
                position = self.position,
                "the pages moved between two requests; reading them again"
            );
        }
        metrics::counter!(PAGINATION_RESCANS_TOTAL, "sync" => self.sync.to_owned()).increment(1);
    }
}

/// The source served records sharing an `updated_at` in another order than
/// before: a walk by offsets or page numbers can skip such records.
pub struct UnstableTies {
    pub style: &'static str,
    pub position: u64,
}

impl UnstableTies {
    pub fn emit(&self) {
        const HINT: &str = "sort the listing by a unique field too (an id after `updated_at`), or by the id alone, if the API allows it";
        if self.style == "offset" {
            tracing::warn!(
                event = UNSTABLE_TIES,
                style = self.style,
                position = self.position,
                "the source serves records that share an `updated_at` in another order from one request to the next \
                 (or, without a `version_field`, records changed within one `updated_at` move among them); the group \
                 of them at each page's end is read again whole, which holds while no group is longer than half a \
                 page (the run stops if one is); {HINT}"
            );
        } else {
            tracing::warn!(
                event = UNSTABLE_TIES,
                style = self.style,
                position = self.position,
                "the source serves records that share an `updated_at` in another order from one request to the next \
                 (or, without a `version_field`, records changed within one `updated_at` move among them): a walk by \
                 page numbers reads a page and the one before it in two requests, and stops where a group of them \
                 spans two pages; {HINT}"
            );
        }
    }
}

/// The source's next URLs number their pages: read from here on as a
/// page-number walk, each page with the one before it again.
pub struct NumberedNextUrls<'a> {
    pub sync: &'a str,
    pub param: &'a str,
}

impl NumberedNextUrls<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = NUMBERED_NEXT_URLS,
            sync = %self.sync,
            param = %self.param,
            "the next URLs number their pages (`{}`): each page is read with the one before it \
             again, so that a record that moves while the run pages cannot hide another",
            self.param
        );
    }
}

/// A run's next URLs count an offset by the records of each page: read as an
/// offset walk, which re-reads the end of the page before.
pub struct OffsetNextUrls<'a> {
    pub sync: &'a str,
    pub param: &'a str,
}

impl OffsetNextUrls<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = OFFSET_NEXT_URLS,
            sync = %self.sync,
            param = %self.param,
            "the next URLs count an offset (`{}`): each page is read from a little before where \
             the one before ended, so that a record that moves while the run pages cannot hide \
             another",
            self.param
        );
    }
}

/// The run waits, before it reads records back or checks them, until the
/// writes whose answers never came can no longer land (`late_write_window`):
/// otherwise a long silence.
pub struct LateWritesAwaited;

impl LateWritesAwaited {
    pub fn emit(sync: &str, records: usize, until: jiff::Timestamp, then: &str) {
        let wait = until.duration_since(jiff::Timestamp::now());
        if wait <= jiff::SignedDuration::ZERO {
            return;
        }
        tracing::info!(
            event = LATE_WRITES_AWAITED,
            sync = %sync,
            records,
            "waiting {:.0}s, until writes whose answers never came can no longer land \
             (`late_write_window`), before {records} record(s) are {then} at the destination",
            wait.as_secs_f64().ceil()
        );
    }
}

/// The cursor token or next URL a run resumed at was refused: it reads its
/// range again from the start.
pub struct ResumedPositionRefused<'a> {
    pub sync: &'a str,
    pub status: u16,
    pub body: &'a str,
}

impl ResumedPositionRefused<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event = PAGINATION_RESCAN,
            sync = %self.sync,
            status = self.status,
            "the source refused the position this run resumes at (HTTP {}: {}): a cursor or \
             next URL kept in the checkpoint may have expired; reading this run's range again \
             from the start (already-written records are skipped)",
            self.status,
            self.body
        );
        metrics::counter!(PAGINATION_RESCANS_TOTAL, "sync" => self.sync.to_owned()).increment(1);
    }
}

/// A run's first page came full and named no next page: a `token_path`
/// (or `next_url_path`) that names nothing reads one page and ends there,
/// without an error.
pub struct FullPageEndsList<'a> {
    pub sync: &'a str,
    pub records: usize,
    pub path: &'a str,
    /// The key that gave `path`.
    pub key: &'static str,
}

impl FullPageEndsList<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event = FULL_PAGE_ENDS_LIST,
            sync = %self.sync,
            records = self.records,
            "the first page came full ({} records) and has no `{}` ({}): the list ends \
             there; if the source has more, the next page is named elsewhere (`highwater probe` \
             shows the answer)",
            self.records,
            self.path,
            self.key
        );
    }
}

/// How an invocation of a run ended.
pub struct RunEnded<'a> {
    pub sync: &'a str,
    pub run_id: &'a str,
    pub kind: &'static str,
    pub outcome: RunEnd<'a>,
    pub pages: u64,
    pub written: u64,
    pub duration: Duration,
    /// The sync's high-water mark once the invocation ended.
    pub high_water_mark: Option<Timestamp>,
}

pub enum RunEnd<'a> {
    Completed,
    Stopped(&'a str),
    Failed(&'a str),
}

impl RunEnded<'_> {
    pub fn emit(&self) {
        match self.outcome {
            RunEnd::Completed => tracing::info!(
                event = RUN_COMPLETED,
                sync = %self.sync,
                run_id = %self.run_id,
                pages = self.pages,
                written = self.written,
                "run completed"
            ),
            RunEnd::Stopped(reason) => tracing::info!(
                event = RUN_STOPPED,
                sync = %self.sync,
                run_id = %self.run_id,
                pages = self.pages,
                written = self.written,
                "run stopped: {reason}"
            ),
            RunEnd::Failed(error) => tracing::error!(
                event = RUN_FAILED,
                sync = %self.sync,
                run_id = %self.run_id,
                error = %error,
                "run failed"
            ),
        }
        let sync = self.sync.to_owned();
        metrics::gauge!(RUN_DURATION_SECONDS, "sync" => sync.clone(), "kind" => self.kind)
            .set(self.duration.as_secs_f64());
        if matches!(self.outcome, RunEnd::Completed) {
            metrics::gauge!(
                LAST_SUCCESS_TIMESTAMP_SECONDS,
                "sync" => sync.clone(),
                "kind" => self.kind,
            )
            .set(Timestamp::now().as_microsecond() as f64 / 1e6);
        }
        if let Some(mark) = self.high_water_mark {
            metrics::gauge!(HIGH_WATER_MARK_AGE_SECONDS, "sync" => sync).set(age(mark));
        }
    }
}

/// Why a request was sent again. An operator asks "was it rate limits, a sick
/// server or the network?" before "which request?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// 429.
    RateLimited,
    /// 500, 502, 503, 504.
    ServerError,
    /// 408, or no answer within the timeout.
    Timeout,
    /// The connection could not be made, or broke before the answer came.
    Connection,
    /// Anything else retried (425 Too Early).
    Other,
}

impl RetryClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryClass::RateLimited => "rate_limited",
            RetryClass::ServerError => "server_error",
            RetryClass::Timeout => "timeout",
            RetryClass::Connection => "connection",
            RetryClass::Other => "other",
        }
    }
}

/// Retried requests by class, as the run history stores them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryCounts {
    pub rate_limited: u64,
    pub server_error: u64,
    pub timeout: u64,
    pub connection: u64,
    pub other: u64,
}

impl RetryCounts {
    pub fn total(&self) -> u64 {
        self.rate_limited + self.server_error + self.timeout + self.connection + self.other
    }

    /// The sum of both, class by class (a run's invocations added up).
    pub fn plus(&self, other: &RetryCounts) -> RetryCounts {
        RetryCounts {
            rate_limited: self.rate_limited + other.rate_limited,
            server_error: self.server_error + other.server_error,
            timeout: self.timeout + other.timeout,
            connection: self.connection + other.connection,
            other: self.other + other.other,
        }
    }
}

/// Retried requests of one API, counted as they happen, on whichever thread;
/// cheap enough for the request path.
#[derive(Debug, Default)]
pub struct RetryTally {
    rate_limited: AtomicU64,
    server_error: AtomicU64,
    timeout: AtomicU64,
    connection: AtomicU64,
    other: AtomicU64,
}

impl RetryTally {
    pub fn count(&self, class: RetryClass) {
        let counter = match class {
            RetryClass::RateLimited => &self.rate_limited,
            RetryClass::ServerError => &self.server_error,
            RetryClass::Timeout => &self.timeout,
            RetryClass::Connection => &self.connection,
            RetryClass::Other => &self.other,
        };
        // Relaxed: the counters are independent and read once the requests are done.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RetryCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RetryCounts {
            rate_limited: load(&self.rate_limited),
            server_error: load(&self.server_error),
            timeout: load(&self.timeout),
            connection: load(&self.connection),
            other: load(&self.other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_each_class_apart_and_adds_up() {
        let tally = RetryTally::default();
        for class in [
            RetryClass::RateLimited,
            RetryClass::RateLimited,
            RetryClass::ServerError,
            RetryClass::Timeout,
            RetryClass::Connection,
            RetryClass::Connection,
            RetryClass::Connection,
            RetryClass::Other,
        ] {
            tally.count(class);
        }
        let counts = tally.snapshot();
        let expected = RetryCounts {
            rate_limited: 2,
            server_error: 1,
            timeout: 1,
            connection: 3,
            other: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.total(), 8);
        assert_eq!(counts.plus(&counts).total(), 16);
    }
}
