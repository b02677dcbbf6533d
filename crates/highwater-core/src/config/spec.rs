//! The validated configuration the engine runs: every value checked, every default
//! applied, every `${VAR}` resolved. Nothing downstream re-checks these values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::HeaderName;
use serde_json::Value;
use url::Url;

use super::Problem;
use crate::policy::RetryPolicy;
use crate::record::FieldPath;
use crate::secret::Secret;
pub use crate::sink::DestinationSpec;
pub use crate::sink::http::config::{HttpDestinationSpec, ReadSpec, WriteMode};
pub use crate::sink::jsonl::config::JsonLinesSpec;

/// A whole config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub file: PathBuf,
    pub state: StateSpec,
    pub syncs: Vec<SyncSpec>,
    /// What is valid but likely to lose or re-read records, each with its line and
    /// key like an error.
    pub warnings: Vec<Problem>,
}

impl Config {
    pub fn sync(&self, name: &str) -> Option<&SyncSpec> {
        self.syncs.iter().find(|s| s.name == name)
    }
}

/// A config file as the commands that only read or tend the state store
/// read it ([`super::parse_state`]).
#[derive(Debug, Clone)]
pub struct StateFile {
    /// The file it was read from, for messages.
    pub file: PathBuf,
    pub state: StateSpec,
    /// The syncs' names, in the file's order.
    pub syncs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StateSpec {
    /// Where the store is.
    pub store: StoreLocation,
    /// How long a worker's lease of a sync's runs lasts from its last renewal
    /// (a PostgreSQL store's; a SQLite store's locks are the OS's).
    pub lease: Duration,
    /// Ledger rows a run stages between merges into the ledger.
    pub merge_rows: usize,
    /// How long what happened to each record is kept for `explain`.
    pub event_retention: Duration,
}

/// Where the state store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An embedded SQLite file, resolved against the config file's directory.
    File(PathBuf),
    /// A schema of a PostgreSQL database that workers share.
    Postgres { url: Secret, schema: String },
}

impl StoreLocation {
    /// The SQLite file, for a store that is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StoreLocation::File(path) => Some(path),
            StoreLocation::Postgres { .. } => None,
        }
    }
}

impl std::fmt::Display for StoreLocation {
    /// The file, or the database without its credentials and the schema.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::File(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres { url, schema } => {
                let shown = Url::parse(url.expose())
                    .map_or_else(|_| "postgres://…".to_owned(), |u| crate::http::redact(&u));
                write!(f, "{shown} (schema {schema})")
            }
        }
    }
}

/// One sync: one source stream → mapping → one destination.
#[derive(Debug, Clone)]
pub struct SyncSpec {
    pub name: String,
    pub source: SourceSpec,
    pub mapping: MappingSpec,
    pub destination: DestinationSpec,
    pub retry: RetryPolicy,
    pub budgets: BudgetSpec,
    /// Where deletions at the source are read, and how they are applied; `None`
    /// when the sync does not delete.
    pub deletes: Option<DeletesSpec>,
    /// Whom to tell when the sync needs a person; `None` when no one.
    pub alerts: Option<AlertSpec>,
    /// When `highwater serve` runs it; `None`: only when asked to.
    pub schedule: Option<ScheduleSpec>,
    /// Changes whenever mapping or destination change; a dead letter recorded under
    /// another fingerprint is tried again.
    pub fingerprint: String,
}

impl SyncSpec {
    /// The API origins the sync's runs send requests to: its source, its
    /// deletes endpoint and an HTTP destination — where a limit shared by
    /// workers applies.
    pub fn api_origins(&self) -> Vec<url::Origin> {
        let mut origins = vec![self.source.http.base_url.origin()];
        if let Some(DeletesSpec {
            feed: DeleteFeed::Endpoint(feed),
            ..
        }) = &self.deletes
        {
            origins.push(feed.http.base_url.origin());
        }
        if let Some(http) = self.destination.http() {
            origins.push(http.base_url.origin());
        }
        origins.dedup();
        origins
    }
}

/// When the sync runs, each start delayed by up to `jitter` (random), so that
/// syncs sharing an API do not all start at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub when: crate::schedule::Schedule,
    pub jitter: Duration,
}

/// `[sync.alerts]`: the webhook, and the thresholds past which an incident opens.
#[derive(Debug, Clone)]
pub struct AlertSpec {
    /// The webhook's URL is its `base_url`; it is called with a POST.
    pub webhook: HttpSpec,
    /// Open dead letters above this many open an incident.
    pub dead_letters_above: Option<u64>,
    /// A high-water mark further behind now than this opens an incident.
    pub lag_above: Option<Duration>,
}

/// The share of the ledger a `full` run deletes without `--allow-mass-delete`.
pub const DEFAULT_FULL_DELETE_LIMIT: f64 = 0.10;

/// How a sync learns of deletions, and how it applies them.
#[derive(Debug, Clone)]
pub struct DeletesSpec {
    pub feed: DeleteFeed,
    /// The DELETE request's path (`{external_id}`, `{dest_id}`); `None` for a
    /// destination that removes records itself (a JSON Lines file), or one
    /// that soft-deletes.
    pub delete_path: Option<UriTemplate>,
    /// A soft delete instead: the marked record is written, through the write
    /// path, with these fields of its payload set.
    pub soft_delete: Option<Vec<(FieldPath, Value)>>,
    /// Above this share of the ledger, a `full` run refuses to delete.
    pub full_delete_limit: f64,
}

#[derive(Debug, Clone)]
pub enum DeleteFeed {
    /// No feed: only a `full` run finds what the source no longer has.
    Absent,
    /// An endpoint listing deleted ids, read as a source whose records are
    /// deletions: `updated_at_field` is where each says when it was deleted.
    Endpoint(Box<SourceSpec>),
    /// Records of the regular stream that carry a marker: `field` equal to
    /// `value`, or, with no value, `field` set and not null.
    Marker {
        field: FieldPath,
        value: Option<Value>,
    },
}

impl DeleteFeed {
    /// Whether `body` is a record deleted by the marker.
    pub fn marks(&self, body: &Value) -> bool {
        match self {
            DeleteFeed::Absent | DeleteFeed::Endpoint(_) => false,
            DeleteFeed::Marker { field, value } => match (field.get(body), value) {
                (None | Some(Value::Null), _) => false,
                (Some(found), Some(value)) => found == value,
                (Some(_), None) => true,
            },
        }
    }
}

/// Connection settings shared by the source and HTTP destinations.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub base_url: Url,
    pub headers: Vec<(HeaderName, Secret)>,
    pub auth: AuthSpec,
    pub timeout: Duration,
    /// Client-side requests per second, before the API has to say 429.
    pub rate_limit: Option<f64>,
    /// How long without a 429 before a rate learned from 429s rises a step.
    pub rate_limit_probe: Duration,
    /// A body field that, when present and not null in a 2xx answer, means failure.
    pub error_path: Option<FieldPath>,
    /// Words that, in the body of a refusal that would be the record's
    /// (a 4xx), make it one for now (Notion's 409 `conflict_error`): the
    /// request was not applied, and is tried again.
    pub transient_errors: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum AuthSpec {
    None,
    Bearer {
        token: Secret,
        /// The `Authorization` header's scheme: `Bearer`, or an API's own
        /// (Zoho's `Zoho-oauthtoken`).
        scheme: String,
    },
    Basic {
        username: String,
        password: Secret,
    },
    ApiKey {
        placement: KeyPlacement,
        key: Secret,
    },
    OAuth2 {
        token_url: Url,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        /// Tokens are got with this refresh token (the `refresh_token`
        /// grant: Zoho's, Google's, Salesforce's), not client credentials.
        refresh_token: Option<Secret>,
        scheme: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlacement {
    Header(HeaderName),
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    /// A strftime pattern in a time zone (`time_format = "%Y/%m/%d %H:%M"`).
    Pattern(Box<crate::timepattern::TimePattern>),
}

impl TimeFormat {
    /// The zone a pattern writes in, and its name; UTC for the formats that
    /// carry their own offset or none.
    pub fn zone(&self) -> (jiff::tz::TimeZone, String) {
        match self {
            TimeFormat::Pattern(pattern) => pattern.zone(),
            _ => (jiff::tz::TimeZone::UTC, "UTC".to_owned()),
        }
    }
}

/// Where a source parameter's value takes the window's lower bound, written
/// in the source's `time_format` (a query language's filter: Jira's `jql`,
/// Salesforce's `q`).
pub const LOWER_IN_PARAMS: &str = "{lower}";
/// Where a source parameter's value takes the watermark.
pub const UPPER_IN_PARAMS: &str = "{upper}";
/// Where a source parameter's value takes an offset walk's position, in
/// place of `offset_param` (QuickBooks' `STARTPOSITION` in its query text).
pub const OFFSET_IN_PARAMS: &str = "{offset}";

/// A source whose pages are asked for with a POST and a JSON body (a search
/// endpoint, a GraphQL API): the body, whose strings may hold `{lower}` and
/// `{upper}`, and where in it each page's parameters go (page size, cursor,
/// offset, bounds); the configured `params` stay in the query.
#[derive(Debug, Clone)]
pub struct SourceBody {
    pub template: serde_json::Value,
    /// Where in the body each page's parameters go; `None` when they go in
    /// the URL's query instead (`page_params_in = "query"`: NetSuite's
    /// SuiteQL takes its query in the body, its `limit` and `offset` in the
    /// URL).
    pub params_at: Option<FieldPath>,
}

#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub http: HttpSpec,
    pub path: String,
    pub params: Vec<(String, Secret)>,
    /// The `params` whose values hold a `${VAR}`: `probe` shows the others.
    pub params_from_env: Vec<String>,
    pub body: Option<SourceBody>,
    /// Headers whose values take the window (`{lower}`, `{upper}`): Xero's
    /// `If-Modified-Since`. Not among `http.headers`, which every request
    /// sends as they are.
    pub window_headers: Vec<(reqwest::header::HeaderName, Secret)>,
    pub records_path: FieldPath,
    pub id_field: FieldPath,
    pub updated_at_field: FieldPath,
    pub version_field: Option<FieldPath>,
    pub time_format: TimeFormat,
    pub page_size: u32,
    pub page_size_param: Option<String>,
    pub start: Option<Timestamp>,
    pub lag: Duration,
    pub lookback: Duration,
    pub lower_bound_param: Option<String>,
    pub upper_bound_param: Option<String>,
    /// The API's lower bound is strict (`>`): the bound is sent one step earlier
    /// (see `source::bounds`).
    pub lower_bound_exclusive: bool,
    /// The API's upper bound is strict (`<`): the watermark is sent one step later.
    pub upper_bound_exclusive: bool,
    /// The API returns records in ascending `(updated_at, id)` order, so reading can
    /// stop at the first record past the watermark.
    pub sorted: bool,
    /// Words whose presence in a 4xx answer to an offset or page walk's
    /// request past its first page ends the list, as an empty page would:
    /// WordPress refuses a page past the last with
    /// `rest_post_invalid_page_number`.
    pub end_of_list_errors: Vec<String>,
    pub pagination: Pagination,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// An opaque next token from a body field, sent back as a parameter; or,
    /// with `token_field`, the last record's value of that field (Stripe's
    /// `starting_after`). With `more_path`, there is a next page only while
    /// the answer holds `true` there (`has_more`); with `end_path`, none once
    /// it holds `true` there (Zendesk's `end_of_stream`).
    Cursor {
        token_path: FieldPath,
        token_param: String,
        token_field: Option<FieldPath>,
        more_path: Option<FieldPath>,
        end_path: Option<FieldPath>,
    },
    /// A full next URL, from a body field or the `Link: rel="next"` header.
    NextUrl { from: NextUrlFrom },
    /// `(updated_at, id)` of the last record, passed as two parameters.
    Keyset {
        updated_param: String,
        id_param: String,
    },
    Offset {
        offset_param: String,
        /// What the API calls the first record's offset: 0, or 1 where it
        /// counts from one.
        first_offset: u64,
        overlap: u32,
        /// Where an answer says whether a page follows it (NetSuite's
        /// `hasMore`): a list that ends on a full page then ends there
        /// instead of being asked for the page past its last.
        more_path: Option<FieldPath>,
    },
    Page {
        page_param: String,
        first_page: u64,
        overlap: u32,
        /// The parameter takes the offset of the page's first record (its
        /// number from `first_page` times the page size) rather than the
        /// number: NetSuite's SuiteQL, whose offset must be a multiple of
        /// its limit, so that an offset walk's overlap cannot be asked for.
        by_offset: bool,
        /// As for `Offset`.
        more_path: Option<FieldPath>,
    },
}

impl SourceSpec {
    /// Whether requests carry the window's lower bound (in a parameter of its
    /// own, or inside one's value), so that an answer holds nothing before it.
    pub fn sends_lower_bound(&self) -> bool {
        self.lower_bound_param.is_some()
            || self
                .params
                .iter()
                .any(|(_, v)| v.expose().contains(LOWER_IN_PARAMS))
            || self
                .body
                .as_ref()
                .is_some_and(|b| b.template.to_string().contains(LOWER_IN_PARAMS))
            || self
                .window_headers
                .iter()
                .any(|(_, v)| v.expose().contains(LOWER_IN_PARAMS))
    }
}

impl Pagination {
    pub fn style(&self) -> &'static str {
        match self {
            Pagination::Cursor { .. } => "cursor",
            Pagination::NextUrl { .. } => "next_url",
            Pagination::Keyset { .. } => "keyset",
            Pagination::Offset { .. } => "offset",
            Pagination::Page { .. } => "page",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextUrlFrom {
    Body(FieldPath),
    LinkHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
}

impl JsonType {
    pub fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
        }
    }

    pub fn matches(self, value: &Value) -> bool {
        match self {
            JsonType::String => value.is_string(),
            JsonType::Integer => value.is_i64() || value.is_u64(),
            JsonType::Number => value.is_number(),
            JsonType::Boolean => value.is_boolean(),
            JsonType::Object => value.is_object(),
            JsonType::Array => value.is_array(),
        }
    }
}

/// A string with `{path}` placeholders filled from a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Field(FieldPath),
    /// `{field|lower}`: the field in lower case, for a destination that
    /// keys its objects case aside (an email at Mailchimp or HubSpot).
    LowerField(FieldPath),
}

#[derive(Debug, Clone)]
pub struct MappingSpec {
    pub external_id: Template,
    /// (output path, source path), in file order.
    pub fields: Vec<(FieldPath, FieldPath)>,
    pub constants: Vec<(FieldPath, Value)>,
    pub required: Vec<(FieldPath, JsonType)>,
    /// Payload fields the destination takes but never gives back (Mailchimp's
    /// `status_if_new`): left out wherever a copy read back is compared.
    pub write_only: Vec<FieldPath>,
}

/// A path on the destination with `{external_id}` or `{dest_id}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate(pub String);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSpec {
    pub max_runtime: Option<Duration>,
    pub max_pages: Option<u64>,
    /// Halt when more than this share of the last `dead_letter_window` records were
    /// dead-lettered: a broken mapping, not a few bad records.
    pub dead_letter_ratio: f64,
    pub dead_letter_window: usize,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        BudgetSpec {
            max_runtime: None,
            max_pages: None,
            dead_letter_ratio: 0.5,
            dead_letter_window: 200,
        }
    }
}
