//! Sources scripted on 127.0.0.1, for sequences the simulated SaaS does not
//! produce on demand: one record's versions out of order across pages (replicas
//! that lag), a version announced before a crash and then served older, and two
//! records sharing one external id. The destination is a JSON Lines file, read
//! back as the user would, or the simulated CRM.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::{Value, json};
use simsaas::{DestFaults, SimConfig, SimSaas};

use crate::util::{describe, fresh_dir, report, stderr};

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

/// A scripted source serving `pages`, and a config syncing it into `destination`.
struct Scripted {
    script: Script,
    config: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(name: &str, pages: Vec<Value>, external_id: &str, destination: &str) -> Self {
        let script: Script = Arc::new(Mutex::new(pages));
        let app = axum::Router::new()
            .route("/invoices", get(page))
            .with_state(Arc::clone(&script));
        let (addr, server) = crate::util::serve_local(app).await;
        let dir = fresh_dir(name);
        let config = dir.join("highwater.toml");
        let text = format!(
            r#"{state}

[[sync]]
name = "invoices"

[sync.source]
base_url = "http://{addr}"
path = "/invoices"
version_field = "version"
page_size = 1
start = "2024-01-01T00:00:00Z"
timeout = "1s"
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}

[sync.mapping]
external_id = "{external_id}"
fields = {{ amount = "amount", version = "version" }}

[sync.destination]
{destination}

[sync.retry]
base = "20ms"
cap = "200ms"
max_attempts = 4
"#,
            state = crate::util::state_table(&dir),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
        Scripted {
            script,
            config,
            server,
        }
    }

    fn serve(&self, pages: Vec<Value>) {
        *self.script.lock().unwrap_or_else(|e| e.into_inner()) = pages;
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(crate::util::bin());
        command
            .arg("--config")
            .arg(&self.config)
            .args(["run", "invoices", "--json"])
            .env_remove("HIGHWATER_LOG")
            .kill_on_drop(true);
        command
    }

    async fn run(&self) -> std::process::Output {
        crate::util::finish(&mut self.command()).await
    }

    async fn run_ok(&self) -> Value {
        let out = self.run().await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        report(&out)
    }

    async fn dead_letters(&self) -> Vec<highwater_core::state::DeadLetter> {
        let config = highwater_core::config::load(&self.config)
            .unwrap_or_else(|e| panic!("load config: {e}"));
        let store = highwater_core::state::Store::connect(&config.state)
            .await
            .unwrap_or_else(|e| panic!("state: {e}"));
        let dead = store
            .dead_letters("invoices")
            .await
            .unwrap_or_else(|e| panic!("dead letters: {e}"));
        store.close().await;
        dead
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) fn jsonl_rows(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The ledger holds version 1. A run then reads version 3, whose mapped payload is
/// version 1's again (the change between was undone), and after it, from a lagging
/// replica, version 2. Version 3 writes nothing but moves the ledger on, so version
/// 2 is older than what the destination stands for: it must be skipped as stale,
/// not written because it is newer than the ledger row as the store last had it.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_copy_after_an_unchanged_newer_version_is_stale() {
    let dir = fresh_dir("replicas-out");
    let out_file = dir.join("contacts.jsonl");
    let api = Scripted::start(
        "replicas",
        vec![invoice(1, "2024-03-01T10:00:00Z", 100)],
        "{id}",
        &format!("type = \"jsonl\"\nfile = \"{}\"", out_file.display()),
    )
    .await;
    // The version travels in the payload; 3 and 1 must map to the same one.
    let text = std::fs::read_to_string(&api.config).unwrap_or_default();
    std::fs::write(
        &api.config,
        text.replace(
            "fields = { amount = \"amount\", version = \"version\" }",
            "fields = { amount = \"amount\" }",
        ),
    )
    .unwrap_or_else(|e| panic!("write config: {e}"));
    let amount = || {
        let rows = jsonl_rows(&out_file);
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows[0]["amount"].clone()
    };

    let first = api.run_ok().await;
    assert_eq!(first["counters"]["written"], 1, "{first}");
    assert_eq!(amount(), 100);

    api.serve(vec![
        invoice(3, "2024-03-03T10:00:00Z", 100),
        invoice(2, "2024-03-02T10:00:00Z", 250),
    ]);
    let second = api.run_ok().await;
    let counters = &second["counters"];
    assert_eq!(counters["read"], 2, "{second}");
    assert_eq!(counters["unchanged"], 1, "{second}");
    assert_eq!(counters["stale"], 1, "{second}");
    assert_eq!(counters["written"], 0, "{second}");
    assert_eq!(amount(), 100, "version 2 went over version 3");

    // The next run, in a new process, reads the ledger as the last one left it.
    api.serve(vec![invoice(2, "2024-03-02T10:00:00Z", 250)]);
    let third = api.run_ok().await;
    assert_eq!(third["counters"]["stale"], 1, "{third}");
    assert_eq!(
        amount(),
        100,
        "version 2 went over version 3 in a later run"
    );
}

/// Version 5 was sent to the CRM by a run killed before the answer; the run that
/// resumes it reads version 4 from a lagging replica. Version 4 may not go over
/// version 5 — but was 5 ever applied? Only the CRM can say: when it holds 5, the
/// copy is stale; when it does not (or cannot be read back), the run does not
/// complete: it stops, resumable, naming the record, and completes once the source
/// serves version 5 again.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_announced_before_a_crash_is_confirmed_before_an_older_copy_is_skipped() {
    let cases = [
        ("floor-unreadable", false, false),
        ("floor-lost", true, false),
        ("floor-landed", true, true),
    ];
    for (name, readable, lands) in cases {
        let sim = SimSaas::start(SimConfig::new(71, 1))
            .await
            .unwrap_or_else(|e| panic!("sim: {e}"));
        let read_path = if readable {
            "read_path = \"/v1/contacts/by-external-id/{external_id}\""
        } else {
            ""
        };
        let destination = format!(
            "type = \"http\"\nbase_url = \"{}\"\nmode = \"put\"\npath = \"/v1/contacts/by-external-id/{{external_id}}\"\nauth = {{ type = \"bearer\", token = \"sim-token\" }}\ntimeout = \"300ms\"\n{read_path}",
            sim.dest_url()
        );
        let api = Scripted::start(
            name,
            vec![invoice(1, "2024-03-01T10:00:00Z", 100)],
            "{id}",
            &destination,
        )
        .await;
        api.run_ok().await;

        // Version 5 reaches the CRM, which either applies it and never answers,
        // or holds it and never applies it; the process dies meanwhile.
        api.serve(vec![invoice(5, "2024-03-05T10:00:00Z", 500)]);
        sim.set_dest_faults(if lands {
            DestFaults {
                commit_then_timeout_ratio: 1.0,
                slow_delay: Duration::from_secs(5),
                ..DestFaults::default()
            }
        } else {
            DestFaults {
                slow_ratio: 1.0,
                slow_delay: Duration::from_secs(5),
                ..DestFaults::default()
            }
        });
        let mut child = api
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        for _ in 0..300 {
            let stats = sim.stats().dest;
            if stats.slow + stats.commit_then_timeout > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        sim.set_dest_faults(DestFaults::default());
        let held = || {
            sim.dest_dump()
                .objects
                .first()
                .map(|o| o.body["version"].clone())
        };
        assert_eq!(held(), Some(json!(if lands { 5 } else { 1 })), "{name}");

        api.serve(vec![invoice(4, "2024-03-04T10:00:00Z", 400)]);
        let out = api.run().await;
        if lands {
            assert_eq!(out.status.code(), Some(0), "{name}: {}", describe(&out));
            assert_eq!(report(&out)["counters"]["stale"], 1, "{name}");
            assert_eq!(held(), Some(json!(5)), "{name}: version 4 went over 5");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{name}: {}", describe(&out));
        let message = stderr(&out);
        let why = if readable {
            "never arrived"
        } else {
            "cannot be read back"
        };
        assert!(
            message.contains("inv_1") && message.contains("version 5") && message.contains(why),
            "{name}: {message}"
        );
        assert_eq!(held(), Some(json!(1)), "{name}: version 4 was written");

        // The replica catches up: version 5 is read again and written.
        api.serve(vec![invoice(5, "2024-03-05T10:00:00Z", 500)]);
        api.run_ok().await;
        assert_eq!(held(), Some(json!(5)), "{name}");
    }
}

/// Two source records whose external id template gives the same value would
/// overwrite one destination record in turn. The first keeps it; the second is
/// dead-lettered with both ids, in the same run and in a later one.
#[tokio::test(flavor = "multi_thread")]
async fn records_sharing_an_external_id_are_refused_after_the_first() {
    let dir = fresh_dir("shared-external-id-out");
    let out_file = dir.join("contacts.jsonl");
    let record = |id: &str, customer: &str, amount: u64| json!({ "id": id, "customer": customer, "version": 1, "updated_at": "2024-03-01T10:00:00Z", "amount": amount });
    let api = Scripted::start(
        "shared-external-id",
        vec![
            record("a", "acme", 1),
            record("b", "acme", 2),
            record("c", "zeta", 3),
        ],
        "cust-{customer}",
        &format!("type = \"jsonl\"\nfile = \"{}\"", out_file.display()),
    )
    .await;
    let first = api.run_ok().await;
    assert_eq!(first["counters"]["written"], 2, "{first}");
    let rows = jsonl_rows(&out_file);
    let acme = rows
        .iter()
        .find(|r| r["external_id"] == "cust-acme")
        .cloned();
    assert_eq!(
        acme.map(|r| r["amount"].clone()),
        Some(json!(1)),
        "{rows:?}"
    );
    let dead = api.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_id, "b");
    assert!(
        dead[0].error.contains("\"cust-acme\"") && dead[0].error.contains("\"a\""),
        "{}",
        dead[0].error
    );

    // A later run, a new record, the same external id: still refused.
    api.serve(vec![record("d", "acme", 4)]);
    api.run_ok().await;
    let dead = api.dead_letters().await;
    assert!(dead.iter().any(|d| d.source_id == "d"), "{dead:?}");
    assert_eq!(jsonl_rows(&out_file).len(), 2);
}
