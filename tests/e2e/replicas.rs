//! A source served by replicas that lag: one record's versions arrive out of order
//! across pages, in a sequence the simulated SaaS does not produce on demand. A
//! small scripted API on 127.0.0.1 serves exactly that sequence; the destination is
//! a JSON Lines file, read back as the user would.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::{Value, json};

use crate::util::{describe, fresh_dir, report};

/// The pages the API serves, one record each, walked with a numeric cursor.
type Script = Arc<Mutex<Vec<Value>>>;

async fn page(
    State(script): State<Script>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let at: usize = query
        .get("cursor")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let pages = script.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let data: Vec<Value> = pages.get(at).cloned().into_iter().collect();
    let next = (at + 1 < pages.len()).then(|| (at + 1).to_string());
    Json(json!({ "data": data, "next_cursor": next }))
}

fn invoice(version: u64, updated_at: &str, amount: u64) -> Value {
    json!({ "id": "inv_1", "version": version, "updated_at": updated_at, "amount": amount })
}

/// The ledger holds version 1. A run then reads version 3, whose mapped payload is
/// version 1's again (the change between was undone), and after it, from a lagging
/// replica, version 2. Version 3 writes nothing but moves the ledger on, so version
/// 2 is older than what the destination stands for: it must be skipped as stale,
/// not written because it is newer than the ledger row as the store last had it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_copy_after_an_unchanged_newer_version_is_stale() {
    let script: Script = Arc::new(Mutex::new(vec![invoice(1, "2024-03-01T10:00:00Z", 100)]));
    let app = axum::Router::new()
        .route("/invoices", get(page))
        .with_state(Arc::clone(&script));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("address: {e}"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = fresh_dir("replicas");
    let out_file = dir.join("contacts.jsonl");
    let config = dir.join("highwater.toml");
    let text = format!(
        r#"[state]
path = "{state}"

[[sync]]
name = "invoices"

[sync.source]
base_url = "http://{addr}"
path = "/invoices"
version_field = "version"
page_size = 1
start = "2024-01-01T00:00:00Z"
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}

[sync.mapping]
external_id = "{{id}}"
fields = {{ amount = "amount" }}

[sync.destination]
type = "jsonl"
file = "{file}"
"#,
        state = dir.join("state.db").display(),
        file = out_file.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
    let run = || async {
        let out = tokio::process::Command::new(crate::util::bin())
            .arg("--config")
            .arg(&config)
            .args(["run", "invoices", "--json"])
            .env_remove("HIGHWATER_LOG")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run highwater: {e}"));
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        report(&out)
    };
    let amount = || {
        let text = std::fs::read_to_string(&out_file).unwrap_or_default();
        let rows: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(rows.len(), 1, "{text}");
        rows[0]["amount"].clone()
    };

    let first = run().await;
    assert_eq!(first["counters"]["written"], 1, "{first}");
    assert_eq!(amount(), 100);

    *script.lock().unwrap_or_else(|e| e.into_inner()) = vec![
        invoice(3, "2024-03-03T10:00:00Z", 100),
        invoice(2, "2024-03-02T10:00:00Z", 250),
    ];
    let second = run().await;
    let counters = &second["counters"];
    assert_eq!(counters["read"], 2, "{second}");
    assert_eq!(counters["unchanged"], 1, "{second}");
    assert_eq!(counters["stale"], 1, "{second}");
    assert_eq!(counters["written"], 0, "{second}");
    assert_eq!(amount(), 100, "version 2 went over version 3");

    // The next run, in a new process, reads the ledger as the last one left it.
    *script.lock().unwrap_or_else(|e| e.into_inner()) =
        vec![invoice(2, "2024-03-02T10:00:00Z", 250)];
    let third = run().await;
    assert_eq!(third["counters"]["stale"], 1, "{third}");
    assert_eq!(
        amount(),
        100,
        "version 2 went over version 3 in a later run"
    );
    server.abort();
}
