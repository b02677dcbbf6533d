//! Throughput of a full sync, beside a deliberately naive loop.
//!
//! 100,000 records from the simulated SaaS (no faults, page size 500) into the
//! destination in `put` mode. In this process, against identical simulators, each
//! client on its own single-threaded runtime and thread (as the binary runs):
//! a naive sequential loop (fetch a page, PUT each record, keep no state) and
//! highwater's engine at concurrency 1 and 8. Then the real binary, for its own
//! peak RSS. Prints records/s, peak RSS and the ratios; asserts nothing.
//! `cargo bench --bench sync [-- RECORDS]`.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use highwater_core::engine::{self, Progress, RunOptions};
use highwater_core::state::Store;
use serde_json::{Value, json};
use simsaas::{SimConfig, SimSaas};
use tokio_util::sync::CancellationToken;

const PAGE_SIZE: usize = 500;

fn sim_config(records: usize) -> SimConfig {
    let mut config = SimConfig::new(1, records);
    config.invalid_ratio = 0.0;
    config.poisoned_ratio = 0.0;
    config
}

/// Runs a client on its own thread and single-threaded runtime.
fn on_own_thread<F, T>(
    name: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    let builder = std::thread::Builder::new().name(name.to_owned());
    let spawned = builder.spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(make())
    });
    spawned.unwrap_or_else(|e| panic!("thread: {e}"))
}

/// Fetch a page, PUT each record, repeat. No retries, no state.
async fn naive_loop(source: String, dest: String) -> Result<usize, reqwest::Error> {
    let client = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut written = 0;
    loop {
        let mut request = client
            .get(format!("{source}/v1/cursor/invoices"))
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
                .put(format!("{dest}/v1/contacts/by-external-id/{id}"))
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
    Ok(written)
}

fn config(sim: &SimSaas, dir: &Path, concurrency: usize) -> String {
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

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("highwater-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// highwater's engine, in this process, on its own thread.
async fn engine_run(config_text: String, dir: std::path::PathBuf) -> Result<u64, String> {
    let path = dir.join("highwater.toml");
    let config =
        highwater_core::config::parse(&config_text, &path, &|_| None).map_err(|e| e.to_string())?;
    let spec = config.sync("bench").ok_or("no sync")?.clone();
    let store = Store::open(&config.state.path)
        .await
        .map_err(|e| e.to_string())?;
    let (progress, _) = tokio::sync::watch::channel(Progress::default());
    let report = engine::run(
        &spec,
        &store,
        RunOptions::default(),
        CancellationToken::new(),
        &progress,
    )
    .await
    .map_err(|e| e.to_string())?;
    store.close().await;
    Ok(report.counters.written)
}

/// Peak RSS of this process since the last reset (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    println!("sync of {records} records, page size {PAGE_SIZE}, put mode, no faults");
    println!("(peak RSS is this whole process: the simulator holding both sides, plus the client)");

    let sim = match SimSaas::start(sim_config(records)).await {
        Ok(sim) => sim,
        Err(e) => return eprintln!("cannot start the simulator: {e}"),
    };
    reset_peak_rss();
    let started = Instant::now();
    let (source, dest) = (sim.source_url(), sim.dest_url());
    let naive = on_own_thread("naive", move || naive_loop(source, dest)).join();
    let naive_time = started.elapsed();
    let Ok(Ok(naive_written)) = naive else {
        return eprintln!("the naive loop failed");
    };
    let naive_rate = rate(naive_written as u64, naive_time);
    println!(
        "  naive loop, sequential, no state      {naive_rate:>7.0} rec/s  {:>6.2} s  peak RSS {} MiB",
        naive_time.as_secs_f64(),
        peak_rss_mib().map_or("?".into(), |m| m.to_string()),
    );
    sim.shutdown().await;

    for concurrency in [1, 8] {
        let sim = match SimSaas::start(sim_config(records)).await {
            Ok(sim) => sim,
            Err(e) => return eprintln!("cannot start the simulator: {e}"),
        };
        let dir = fresh_dir(&format!("c{concurrency}"));
        let text = config(&sim, &dir, concurrency);
        reset_peak_rss();
        let started = Instant::now();
        let result = on_own_thread("engine", move || engine_run(text, dir)).join();
        let elapsed = started.elapsed();
        match result {
            Ok(Ok(written)) => {
                let hw_rate = rate(written, elapsed);
                println!(
                    "  highwater engine, concurrency {concurrency:<2}       {hw_rate:>7.0} rec/s  {:>6.2} s  peak RSS {} MiB  ratio to naive {:.2}",
                    elapsed.as_secs_f64(),
                    peak_rss_mib().map_or("?".into(), |m| m.to_string()),
                    hw_rate / naive_rate,
                );
            }
            Ok(Err(e)) => eprintln!("  highwater, concurrency {concurrency}: {e}"),
            Err(_) => eprintln!("  highwater, concurrency {concurrency}: the thread panicked"),
        }
        if sim.dest_count() != records {
            eprintln!("  the destination holds {} of {records}", sim.dest_count());
        }
        sim.shutdown().await;
    }

    // The real binary, for the peak memory of highwater alone.
    let sim = match SimSaas::start(sim_config(records)).await {
        Ok(sim) => sim,
        Err(e) => return eprintln!("cannot start the simulator: {e}"),
    };
    let dir = fresh_dir("binary");
    let config_path = dir.join("highwater.toml");
    if std::fs::write(&config_path, config(&sim, &dir, 8)).is_err() {
        return eprintln!("cannot write {}", config_path.display());
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_highwater"))
        .arg("--config")
        .arg(&config_path)
        .args(["run", "bench", "--json"])
        .output()
        .await;
    match out.map(|o| serde_json::from_slice::<Value>(&o.stdout)) {
        Ok(Ok(report)) => {
            let written = report["counters"]["written"].as_u64().unwrap_or(0);
            let elapsed = Duration::from_millis(report["elapsed_ms"].as_u64().unwrap_or(1));
            println!(
                "  highwater binary, concurrency 8        {:>7.0} rec/s  {:>6.2} s  peak RSS {} MiB (highwater alone)",
                rate(written, elapsed),
                elapsed.as_secs_f64(),
                report["peak_rss_kb"]
                    .as_u64()
                    .map_or("?".into(), |kb| (kb / 1024).to_string()),
            );
        }
        _ => eprintln!("  the highwater binary failed"),
    }
    sim.shutdown().await;
}
