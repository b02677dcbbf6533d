//! A sync's first run finds in the ledger the ids it has read before: a
//! record the source lists twice, read again after
//! its ledger row merged (and left the run's own view), is unchanged, not
//! written twice, an invalid one is not tried again, and one that takes an
//! external id an earlier record holds is refused. The source is an
//! API on 127.0.0.1 whose listing holds two records twice, in its middle and
//! at its end, as an unstable sort would, and a third record with the
//! external id of another; the destination is a JSON Lines
//! file, and ledger rows merge every 500. An invalid record read again two
//! pages on is not tried again either, although that page is looked up
//! before the first one commits.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::util::{describe, fresh_dir, report};

const RECORDS: usize = 3_000;
const PAGE_SIZE: usize = 100;

fn record(id: &str, at: Timestamp) -> Value {
    json!({ "id": id, "version": 1, "updated_at": at.to_string(), "email": format!("{id}@example.com") })
}

/// The listing: the first half of the valid records, `twice_bad` (no email),
/// the other half, then the middle record and `twice_bad` again, each copy
/// as it was, and `clone`, a record of its own with the email (the external
/// id) of the record after the middle one. `back_to_back` (no email) is near
/// the end of the first page and again near the start of the third (a copy
/// on the next page is dropped as an offset's shift): the third page is
/// read ahead and looked up, most often, before the first one commits, when
/// only the run's own view knows its dead letter.
fn listing(at: Timestamp) -> Vec<Value> {
    let bad = json!({ "id": "twice_bad", "version": 1, "updated_at": at.to_string() });
    let back_to_back = json!({ "id": "back_to_back", "version": 1, "updated_at": at.to_string() });
    let valid: Vec<Value> = (0..RECORDS)
        .map(|i| record(&format!("inv_{i:04}"), at))
        .collect();
    let middle = RECORDS / 2;
    let mut all = valid[..middle].to_vec();
    all.push(bad.clone());
    all.extend(valid[middle..].iter().cloned());
    all.push(valid[middle].clone());
    all.push(bad);
    let mut clone = record("clone", at);
    clone["email"] = valid[middle + 1]["email"].clone();
    all.push(clone);
    all.insert(PAGE_SIZE - 10, back_to_back.clone());
    all.insert(2 * PAGE_SIZE + 10, back_to_back);
    all
}

async fn page(
    State(all): State<Arc<Vec<Value>>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<usize>().ok());
    let (offset, limit) = (
        number("offset").unwrap_or(0),
        number("limit").unwrap_or(100),
    );
    let data: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    Json(json!({ "data": data }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_run_looks_up_the_ids_it_read_before() {
    first_run("first-run", "merge_rows = 500").await;
}

/// Runs the sync once over the listing and checks what the run did.
async fn first_run(name: &str, state: &str) {
    let at = Timestamp::now() - SignedDuration::from_hours(1);
    let app = axum::Router::new()
        .route("/invoices", get(page))
        .with_state(Arc::new(listing(at)));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir(name);
    let out_file = dir.join("invoices.jsonl");
    let config = dir.join("highwater.toml");
    let text = format!(
        r#"{state}

[[sync]]
name = "invoices"

[sync.source]
base_url = "http://{addr}"
path = "/invoices"
version_field = "version"
page_size = {PAGE_SIZE}
page_size_param = "limit"
lower_bound_param = "updated_after"
start = "{start}"
timeout = "5s"
pagination = {{ style = "offset", offset_param = "offset" }}

[sync.mapping]
external_id = "{{email}}"
fields = {{ email = "email" }}
required = {{ email = "string" }}

[sync.destination]
type = "jsonl"
file = "{file}"
"#,
        state = crate::util::state_table_with(&dir, Some(state)),
        start = at - SignedDuration::from_hours(1),
        file = out_file.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
    let out = crate::util::highwater_at(&config, &["run", "invoices", "--json"]).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let run = report(&out);
    let counters = &run["counters"];
    assert_eq!(counters["read"], RECORDS + 6, "{run}");
    assert_eq!(
        counters["written"], RECORDS,
        "a record was written twice, or over another's external id: {run}"
    );
    assert_eq!(counters["unchanged"], 1, "{run}");
    // `twice_bad` and `back_to_back` counted at each reading (and tried at
    // the first only), and `clone`, whose external id another record holds.
    assert_eq!(
        counters["dead_lettered"], 5,
        "a record took an external id another holds: {run}"
    );
    let lines = std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(lines, RECORDS);
    for id in ["twice_bad", "back_to_back"] {
        let out =
            crate::util::highwater_at(&config, &["dlq", "show", "invoices", id, "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let letter = report(&out);
        assert_eq!(
            letter["attempts"], 1,
            "an invalid record read again was tried again: {letter}"
        );
    }
}
