//! The config file exactly as written: serde structs that mirror the TOML, with the
//! span of every value so that validation can name the line. Unknown keys are
//! rejected here.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub state: Option<S<RawState>>,
    #[serde(default)]
    pub sync: Vec<S<RawSync>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub schema: Option<S<String>>,
    pub lease: Option<S<String>>,
    pub merge_rows: Option<S<i64>>,
    /// Accepted and warned about: it no longer has an effect.
    pub first_run_ids: Option<S<toml::Value>>,
    pub event_retention: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub name: S<String>,
    pub source: S<RawSource>,
    #[serde(default)]
    pub mapping: Option<S<RawMapping>>,
    pub destination: S<RawDestinationType>,
    pub retry: Option<S<RawRetry>>,
    pub budgets: Option<S<RawBudgets>>,
    pub deletes: Option<S<RawDeletes>>,
    pub alerts: Option<S<RawAlerts>>,
    pub schedule: Option<S<RawSchedule>>,
}

/// `schedule = { every = "15m", jitter = "1m" }` or `{ cron = "0 2 * * *",
/// timezone = "Europe/Paris" }`: when `highwater serve` runs the sync.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub every: Option<S<String>>,
    pub cron: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub jitter: Option<S<String>>,
}

/// `[sync.alerts]`: a webhook called once per incident (a failed run, too
/// many open dead letters, a high-water mark too far behind).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub webhook: S<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, S<String>>,
    pub timeout: Option<S<String>>,
    pub dead_letters_above: Option<S<i64>>,
    pub lag_above: Option<S<String>>,
}

/// `[sync.deletes]`: where deletions are read (an endpoint, or a marker in the
/// records) and how the destination applies them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeletes {
    // an endpoint listing deleted ids
    pub path: Option<S<String>>,
    #[serde(default)]
    pub params: BTreeMap<String, S<String>>,
    pub body: Option<S<toml::Value>>,
    pub body_params_path: Option<S<String>>,
    pub page_params_in: Option<S<String>>,
    pub records_path: Option<S<String>>,
    pub id_field: Option<S<String>>,
    pub deleted_at_field: Option<S<String>>,
    pub time_format: Option<S<String>>,
    pub lower_bound_param: Option<S<String>>,
    pub upper_bound_param: Option<S<String>>,
    pub lookback: Option<S<String>>,
    pub pagination: Option<S<RawPagination>>,
    // a soft-delete marker in the records
    pub marker_field: Option<S<String>>,
    pub marker_value: Option<S<toml::Value>>,
    // the destination
    pub delete_path: Option<S<String>>,
    pub soft_delete: Option<S<BTreeMap<String, S<toml::Value>>>>,
    pub full_delete_limit: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub base_url: S<String>,
    pub path: Option<S<String>>,
    #[serde(default)]
    pub params: BTreeMap<String, S<String>>,
    pub body: Option<S<toml::Value>>,
    pub body_params_path: Option<S<String>>,
    pub page_params_in: Option<S<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, S<String>>,
    pub auth: Option<S<RawAuth>>,
    pub timeout: Option<S<String>>,
    pub rate_limit: Option<S<f64>>,
    pub rate_limit_probe: Option<S<String>>,
    pub error_path: Option<S<String>>,
    pub transient_errors: Option<S<Vec<S<String>>>>,
    pub records_path: Option<S<String>>,
    pub id_field: Option<S<String>>,
    pub updated_at_field: Option<S<String>>,
    pub version_field: Option<S<String>>,
    pub time_format: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub page_size: Option<S<i64>>,
    pub page_size_param: Option<S<String>>,
    pub start: Option<S<String>>,
    pub lag: Option<S<String>>,
    pub lookback: Option<S<String>>,
    pub lower_bound_param: Option<S<String>>,
    pub upper_bound_param: Option<S<String>>,
    pub lower_bound_exclusive: Option<S<bool>>,
    pub upper_bound_exclusive: Option<S<bool>>,
    pub sorted: Option<S<bool>>,
    pub end_of_list_errors: Option<S<Vec<S<String>>>>,
    pub pagination: S<RawPagination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagination {
    pub style: S<String>,
    pub token_path: Option<S<String>>,
    pub token_param: Option<S<String>>,
    pub token_field: Option<S<String>>,
    pub more_path: Option<S<String>>,
    pub end_path: Option<S<String>>,
    pub next_url_path: Option<S<String>>,
    pub link_header: Option<S<bool>>,
    pub updated_param: Option<S<String>>,
    pub id_param: Option<S<String>>,
    pub offset_param: Option<S<String>>,
    pub first_offset: Option<S<i64>>,
    pub page_param: Option<S<String>>,
    pub first_page: Option<S<i64>>,
    pub overlap: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub token: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password: Option<S<String>>,
    pub key: Option<S<String>>,
    pub header: Option<S<String>>,
    pub query_param: Option<S<String>>,
    pub token_url: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub client_secret: Option<S<String>>,
    pub scope: Option<S<String>>,
    pub refresh_token: Option<S<String>>,
    pub scheme: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub external_id: Option<S<String>>,
    #[serde(default)]
    pub fields: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub constants: BTreeMap<String, S<toml::Value>>,
    #[serde(default)]
    pub required: BTreeMap<String, S<String>>,
    #[serde(default)]
    pub write_only: Vec<S<String>>,
}

/// `[sync.destination]` as far as this pass reads it: its `type`. The rest of
/// the table is the destination's own (`sink/<name>/config.rs`), read once the
/// type is known.
#[derive(Debug, Deserialize)]
pub struct RawDestinationType {
    #[serde(rename = "type")]
    pub kind: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub base: Option<S<String>>,
    pub cap: Option<S<String>>,
    pub max_attempts: Option<S<i64>>,
    pub outage: Option<S<String>>,
    pub rate_limited_for: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    pub max_runtime: Option<S<String>>,
    pub max_pages: Option<S<i64>>,
    pub dead_letter_ratio: Option<S<f64>>,
    pub dead_letter_window: Option<S<i64>>,
}
