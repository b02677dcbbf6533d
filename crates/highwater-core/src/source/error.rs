//! Why a source cannot be read: every variant stops the run at its last
//! checkpoint, and says what the person running it can do.

use jiff::Timestamp;

use super::pagination::WalkError;
use crate::http::HttpError;

/// Why the source cannot be read; every variant stops the run at its last checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the source's answer to {url} is not usable: {detail}")]
    BadResponse { url: String, detail: String },
    /// Refused as asked (a 4xx other than for credentials or the rate).
    #[error("the source's answer to {url} is not usable: HTTP {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    /// Refused at a position the source gave in this very run: not an
    /// expired one, a list that pages no further.
    #[error(
        "the source refused a position it gave in this run ({url}: HTTP {status}: {body}): an API may cap how far a list pages (HubSpot's search stops at 10,000 results); if running again meets the same refusal, read the window in parts (`highwater backfill --from --to`, a range at a time) or move its start later (`highwater reset --to`)"
    )]
    RefusedPosition {
        url: String,
        status: u16,
        body: String,
    },
    /// Refused past the first position of an offset or page walk, after
    /// the positions before it were served.
    #[error(
        "the source refused a position past the first after serving the ones before it ({url}: HTTP {status}: {body}): where it refuses a page past its last one (WordPress's `rest_post_invalid_page_number`), name that error in `end_of_list_errors`, or give `more_path` where its answer says whether a page follows (NetSuite's `hasMore`); where it caps how far a list pages (NetSuite's SuiteQL at 100,000 results), read the window in parts (`highwater backfill --from --to`, a range at a time) or move its start later (`highwater reset --to`)"
    )]
    RefusedPastFirst {
        url: String,
        status: u16,
        body: String,
    },
    #[error("pagination: {0}")]
    Walk(#[from] WalkError),
    #[error(
        "pagination: the source returned a {what} it had already returned ({detail}); the API is looping"
    )]
    Loop { what: &'static str, detail: String },
    #[error(
        "pagination: the next URL points to {host}, not to the configured base_url; refusing to send credentials there"
    )]
    ForeignNextUrl { host: String },
    #[error(
        "the source's answer to {url} has records but none with a valid `updated_at` and id to continue the keyset from"
    )]
    KeysetStalled { url: String },
    #[error(
        "the source answered {url} {reads} times with record {id} stamped {stamp}, before {floor}, which its keyset rules out: a replica is serving an older copy of it, or the API does not list in ascending (updated_at, id) order as keyset pagination needs; the next run resumes from the last checkpoint"
    )]
    Lagging {
        url: String,
        id: String,
        stamp: Timestamp,
        floor: String,
        reads: u32,
    },
}
