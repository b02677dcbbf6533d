//! The config the benches sync with: the simulator's cursor-paginated
//! invoices, mapped to contacts, into the destination each bench gives.
//! Each bench includes this file (`#[path]`) and uses part of it.
#![allow(dead_code)]

use std::path::Path;

/// A config of one sync named `bench`, its state store in `dir`;
/// `destination` is the whole `[sync.destination]` table, header included,
/// and `mapping` extra lines of `[sync.mapping]`. `HW_BENCH_STATE` adds lines
/// to `[state]` (say `merge_rows = 40000`), to try the store's settings.
pub fn config(
    dir: &Path,
    source_url: &str,
    page_size: usize,
    mapping: &str,
    destination: &str,
) -> String {
    format!(
        r#"[state]
path = "{state}"
{extra_state}

[[sync]]
name = "bench"

[sync.source]
base_url = "{source_url}"
path = "/v1/cursor/invoices"
auth = {{ type = "bearer", token = "sim-token" }}
version_field = "version"
page_size = {page_size}
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}

[sync.mapping]
external_id = "{{id}}"
fields = {{ email = "customer.email", name = "customer.name", amount_cents = "amount_cents", currency = "currency", version = "version" }}
{mapping}

{destination}
"#,
        state = dir.join("state.db").display(),
        extra_state = std::env::var("HW_BENCH_STATE").unwrap_or_default(),
    )
}

/// `[sync.destination]`: the simulator's contacts, one PUT per record by
/// external id, `concurrency` at once; `extra` more lines of the table.
pub fn put_destination(dest_url: &str, concurrency: usize, extra: &str) -> String {
    format!(
        r#"[sync.destination]
type = "http"
base_url = "{dest_url}"
mode = "put"
path = "/v1/contacts/by-external-id/{{external_id}}"
external_id_field = "external_id"
auth = {{ type = "bearer", token = "sim-token" }}
concurrency = {concurrency}
{extra}"#
    )
}
