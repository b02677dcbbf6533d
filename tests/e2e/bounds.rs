//! Window bounds against an API that reads them strictly: a small scripted API on
//! 127.0.0.1 whose `updated_after` (and keyset `since`) means `>`, with a record
//! stamped exactly on the first run's lower bound. The destination is a JSON Lines
//! file, read back as the user would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::util::{describe, fresh_dir, report};

/// The config's `start`, and the stamp of the record on it.
const START: &str = "2024-01-01T00:00:00Z";

/// The lower bound each listing started from, in the order the requests came.
type Sent = Arc<Mutex<Vec<String>>>;

fn invoices() -> Vec<(Timestamp, &'static str)> {
    [(START, "inv_1"), ("2024-01-02T00:00:00Z", "inv_2")]
        .into_iter()
        .filter_map(|(at, id)| Some((at.parse().ok()?, id)))
        .collect()
}

fn time(query: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>, StatusCode> {
    query
        .get(name)
        .map(|t| t.parse::<Timestamp>().map_err(|_| StatusCode::BAD_REQUEST))
        .transpose()
}

fn answer(records: impl Iterator<Item = (Timestamp, &'static str)>) -> Json<Value> {
    let data: Vec<Value> = records
        .map(|(at, id)| json!({ "id": id, "updated_at": at.to_string(), "amount": 100 }))
        .collect();
    Json(json!({ "data": data, "next_cursor": null }))
}

/// `updated_after` is strict, `updated_before` inclusive; one page holds everything.
async fn window_page(
    State(sent): State<Sent>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let after = time(&query, "updated_after")?;
    let before = time(&query, "updated_before")?;
    sent.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(query.get("updated_after").cloned().unwrap_or_default());
    Ok(answer(invoices().into_iter().filter(|(at, _)| {
        after.is_none_or(|after| *at > after) && before.is_none_or(|before| *at <= before)
    })))
}

/// Keyset: `(updated_at, id) > (since, after_id)`, and `updated_at > since` on the
/// first page, which has no id yet.
async fn keyset_page(
    State(sent): State<Sent>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let since = time(&query, "since")?;
    let after_id = query.get("after_id").cloned();
    if after_id.is_none() {
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(query.get("since").cloned().unwrap_or_default());
    }
    Ok(answer(invoices().into_iter().filter(|(at, id)| {
        match (since, &after_id) {
            (None, _) => true,
            (Some(since), None) => *at > since,
            (Some(since), Some(after)) => (*at, *id) > (since, after.as_str()),
        }
    })))
}

async fn serve(sent: &Sent) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/invoices", get(window_page))
        .route("/keyset/invoices", get(keyset_page))
        .with_state(Arc::clone(sent));
    crate::util::serve_local(app).await
}

/// Runs one sync to completion in a fresh directory; returns the ids that reached
/// the destination, in file order.
async fn sync_once(name: &str, addr: SocketAddr, source: &str) -> Vec<String> {
    let dir = fresh_dir(name);
    let out_file = dir.join("contacts.jsonl");
    let config = dir.join("highwater.toml");
    let text = format!(
        r#"{state}

[[sync]]
name = "invoices"

[sync.source]
base_url = "http://{addr}"
start = "{START}"
{source}

[sync.mapping]
external_id = "{{id}}"
fields = {{ amount = "amount" }}

[sync.destination]
type = "jsonl"
file = "{file}"
"#,
        state = crate::util::state_table(&dir),
        file = out_file.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
    let out = crate::util::highwater_at(&config, &["run", "invoices", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let written = report(&out)["counters"]["written"].clone();
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|row| row["external_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(written, ids.len(), "{text}");
    ids
}

fn taken(sent: &Sent) -> Vec<String> {
    std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_on_a_strict_lower_bound_arrives_once_the_bound_is_declared_exclusive() {
    let sent = Sent::default();
    let (addr, server) = serve(&sent).await;
    let source = r#"path = "/invoices"
lower_bound_param = "updated_after"
upper_bound_param = "updated_before"
pagination = { style = "cursor", token_path = "next_cursor", token_param = "cursor" }"#;

    // Sent as is, the API's `>` leaves out the record stamped on the bound.
    let ids = sync_once("bounds-inclusive", addr, source).await;
    assert_eq!(ids, ["inv_2"], "the scripted API is not strict");
    assert_eq!(taken(&sent), [START]);

    let strict = format!("{source}\nlower_bound_exclusive = true");
    let ids = sync_once("bounds-exclusive", addr, &strict).await;
    assert_eq!(
        ids,
        ["inv_1", "inv_2"],
        "the record on the lower bound was lost"
    );
    assert_eq!(taken(&sent), ["2023-12-31T23:59:59Z"]);
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn keyset_widens_its_first_lower_bound_when_the_api_reads_it_strictly() {
    let sent = Sent::default();
    let (addr, server) = serve(&sent).await;
    let source = r#"path = "/keyset/invoices"
pagination = { style = "keyset", updated_param = "since", id_param = "after_id" }"#;

    let ids = sync_once("bounds-keyset-inclusive", addr, source).await;
    assert_eq!(ids, ["inv_2"], "the scripted API is not strict");

    let strict = format!("{source}\nlower_bound_exclusive = true");
    let ids = sync_once("bounds-keyset-exclusive", addr, &strict).await;
    assert_eq!(
        ids,
        ["inv_1", "inv_2"],
        "the record on the lower bound was lost"
    );
    assert_eq!(taken(&sent), [START, "2023-12-31T23:59:59Z"]);
    server.abort();
}
