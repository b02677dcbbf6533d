//! Throughput of a full sync, beside a deliberately naive loop.
//!
//! Syncs 100,000 records from the simulated SaaS (no faults, page size 500) into the
//! destination in `put` mode with the real `highwater` binary, and runs, in this
//! process against an identical simulator, a naive sequential loop: fetch a page,
//! PUT each record, keep no state. Prints records/s, peak RSS and the ratio; asserts
//! nothing. `cargo bench --bench sync [-- RECORDS]`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use simsaas::{SimConfig, SimSaas};

const PAGE_SIZE: usize = 500;

fn sim_config(records: usize) -> SimConfig {
    let mut config = SimConfig::new(1, records);
    config.invalid_ratio = 0.0;
    config.poisoned_ratio = 0.0;
    config
}

/// Fetch a page, PUT each record, repeat. No retries, no state.
async fn naive_loop(sim: &SimSaas) -> Result<(usize, Duration), reqwest::Error> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut written = 0;
    loop {
        let mut request = client
            .get(format!("{}/v1/cursor/invoices", sim.source_url()))
            .bearer_auth("sim-token")
            .query(&[("limit", PAGE_SIZE.to_string())]);
        if let Some(token) = &cursor {
            request = request.query(&[("cursor", token)]);
        }
        let page: Value = request.send().await?.error_for_status()?.json().await?;
        for record in page["data"].as_array().into_iter().flatten() {
            let id = record["id"].as_str().unwrap_or_default();
            let body = json!({
                "email": record["customer"]["email"],
                "name": record["customer"]["name"],
                "amount_cents": record["amount_cents"],
                "currency": record["currency"],
                "version": record["version"],
                "external_id": id,
            });
            client
                .put(format!(
                    "{}/v1/contacts/by-external-id/{id}",
                    sim.dest_url()
                ))
                .bearer_auth("sim-token")
                .json(&body)
                .send()
                .await?
                .error_for_status()?;
            written += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok((written, started.elapsed()))
}

fn config(sim: &SimSaas, dir: &std::path::Path, concurrency: usize) -> String {
    format!(
        r#"[state]
path = "{state}"

[[sync]]
name = "bench"

[sync.source]
base_url = "{source}"
path = "/v1/cursor/invoices"
auth = {{ type = "bearer", token = "sim-token" }}
version_field = "version"
page_size = {PAGE_SIZE}
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}

[sync.mapping]
external_id = "{{id}}"
fields = {{ email = "customer.email", name = "customer.name", amount_cents = "amount_cents", currency = "currency", version = "version" }}

[sync.destination]
type = "http"
base_url = "{dest}"
mode = "put"
path = "/v1/contacts/by-external-id/{{external_id}}"
external_id_field = "external_id"
auth = {{ type = "bearer", token = "sim-token" }}
concurrency = {concurrency}
"#,
        state = dir.join("state.db").display(),
        source = sim.source_url(),
        dest = sim.dest_url(),
    )
}

struct Measured {
    written: u64,
    elapsed: Duration,
    peak_rss_kb: Option<u64>,
}

async fn highwater(records: usize, concurrency: usize) -> Result<Measured, String> {
    let sim = SimSaas::start(sim_config(records))
        .await
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!(
        "highwater-bench-{}-{concurrency}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config_path = dir.join("highwater.toml");
    std::fs::write(&config_path, config(&sim, &dir, concurrency)).map_err(|e| e.to_string())?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_highwater"))
        .arg("--config")
        .arg(&config_path)
        .args(["run", "bench", "--json"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "highwater failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let measured = Measured {
        written: report["counters"]["written"].as_u64().unwrap_or(0),
        elapsed: Duration::from_millis(report["elapsed_ms"].as_u64().unwrap_or(1)),
        peak_rss_kb: report["peak_rss_kb"].as_u64(),
    };
    if sim.dest_count() != records {
        return Err(format!(
            "destination holds {} of {records}",
            sim.dest_count()
        ));
    }
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(measured)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn own_peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    println!("sync of {records} records, page size {PAGE_SIZE}, put mode, no faults");

    let sim = match SimSaas::start(sim_config(records)).await {
        Ok(sim) => sim,
        Err(e) => return eprintln!("cannot start the simulator: {e}"),
    };
    let naive = match naive_loop(&sim).await {
        Ok(result) => result,
        Err(e) => return eprintln!("naive loop failed: {e}"),
    };
    sim.shutdown().await;
    let naive_rate = rate(naive.0 as u64, naive.1);
    println!(
        "  naive loop (sequential, no state)   {:>9.0} rec/s  {:>7.2} s  (bench process with simulator: peak RSS {} MiB)",
        naive_rate,
        naive.1.as_secs_f64(),
        own_peak_rss_kb().map_or("?".into(), |kb| (kb / 1024).to_string()),
    );
    for concurrency in [1, 8] {
        match highwater(records, concurrency).await {
            Ok(m) => {
                let hw_rate = rate(m.written, m.elapsed);
                println!(
                    "  highwater, concurrency {concurrency:<2}           {:>9.0} rec/s  {:>7.2} s  peak RSS {} MiB  ratio to naive {:.2}",
                    hw_rate,
                    m.elapsed.as_secs_f64(),
                    m.peak_rss_kb
                        .map_or("?".into(), |kb| (kb / 1024).to_string()),
                    hw_rate / naive_rate,
                );
            }
            Err(e) => eprintln!("  highwater, concurrency {concurrency}: {e}"),
        }
    }
}
