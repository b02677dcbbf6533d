//! Throughput against what the APIs allow: each pass syncs the simulated SaaS
//! into its destination with the engine in this process and prints records/s
//! beside the ideal computed from the same pass's settings:
//! `min(rate limit × batch size, concurrency × batch size / write latency,
//! page size / page latency)`.
//!
//! - latency-bound: 20 ms per source page and 10 ms per destination request,
//!   concurrency 16, one record per request (`put`), then batches of 50;
//! - rate-bound: a destination that takes N requests/s (answering 429 past it),
//!   highwater configured to N, one record per request and then batches of 50.
//!
//! Beside the latency-bound passes, bare clients measure what the simulator
//! really gives (HTTP and its own work add to each request's latency): 16 concurrent
//! PUT loops with no source and no state, and a loop that only fetches the
//! source's pages; each latency-bound pass also prints its ratio to its bare
//! client's rate.
//!
//! Asserts nothing. `cargo bench --bench throughput [-- RECORDS [N]]`
//! (16,000 records and N = 200 by default).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use simsaas::{SimConfig, SimSaas};

#[path = "support/engine.rs"]
mod engine_thread;
#[path = "support/config.rs"]
mod support;
use engine_thread::engine_run;
use highwater_core::engine::RunOptions;

const PAGE_SIZE: usize = 500;
const BATCH: usize = 50;

/// One pass's settings.
#[derive(Debug, Clone, Copy)]
struct Pass {
    name: &'static str,
    page_latency: Duration,
    write_latency: Duration,
    concurrency: usize,
    batch: usize,
    rate_limit: Option<f64>,
}

impl Pass {
    /// The best records/s these settings allow.
    fn ideal(&self) -> f64 {
        let per_request = self.batch as f64;
        let mut ideal = PAGE_SIZE as f64 / self.page_latency.as_secs_f64().max(1e-9);
        if !self.write_latency.is_zero() {
            ideal =
                ideal.min(self.concurrency as f64 * per_request / self.write_latency.as_secs_f64());
        }
        if let Some(rps) = self.rate_limit {
            ideal = ideal.min(rps * per_request);
        }
        ideal
    }

    fn destination(&self, dest: &str) -> String {
        let rate = self
            .rate_limit
            .map(|r| format!("rate_limit = {r}\n"))
            .unwrap_or_default();
        let mode = if self.batch > 1 {
            format!(
                "mode = \"batch\"\npath = \"/v1/contacts/batch\"\nbatch_size = {}\nbatch_field = \"records\"\nresults_path = \"results\"\nresult_id_field = \"external_id\"\nresult_status_field = \"status\"\nresult_error_field = \"error\"\nupsert = true",
                self.batch
            )
        } else {
            "mode = \"put\"\npath = \"/v1/contacts/by-external-id/{external_id}\"".to_owned()
        };
        format!(
            "[sync.destination]\ntype = \"http\"\nbase_url = \"{dest}\"\n{mode}\nexternal_id_field = \"external_id\"\nauth = {{ type = \"bearer\", token = \"sim-token\" }}\nconcurrency = {}\n{rate}",
            self.concurrency
        )
    }
}

fn config(sim: &SimSaas, dir: &Path, pass: &Pass) -> String {
    let destination = pass.destination(&sim.dest_url());
    support::config(dir, &sim.source_url(), PAGE_SIZE, "", &destination)
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "highwater-throughput-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

async fn run(pass: Pass, records: usize) -> Result<(u64, Duration, u64), String> {
    let mut sim_config = SimConfig::new(7, records);
    sim_config.invalid_ratio = 0.0;
    sim_config.poisoned_ratio = 0.0;
    sim_config.source.latency = pass.page_latency;
    sim_config.dest.latency = pass.write_latency;
    sim_config.dest.rate_limit_rps = pass.rate_limit;
    let sim = SimSaas::start(sim_config)
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let dir = fresh_dir(pass.name);
    let text = config(&sim, &dir, &pass);
    let run_dir = dir.clone();
    let started = Instant::now();
    let written =
        tokio::task::spawn_blocking(move || engine_run(text, run_dir, RunOptions::default()))
            .await
            .map_err(|e| e.to_string())??;
    let elapsed = started.elapsed();
    let limited = sim.stats().dest.rate_limited;
    let _ = std::fs::remove_dir_all(dir);
    Ok((written, elapsed, limited))
}

/// `writers` tasks PUT `records` records between them, back to back, to a
/// destination answering after `latency`: the rate a client without a source
/// or state reaches.
async fn bare_writers(records: usize, writers: usize, latency: Duration) -> Result<f64, String> {
    let mut sim_config = SimConfig::new(7, 1);
    sim_config.dest.latency = latency;
    let sim = SimSaas::start(sim_config)
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
    let dest = sim.dest_url();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (client, dest) = (client.clone(), dest.clone());
        tasks.spawn(async move {
            for n in (writer..records).step_by(writers) {
                let body = serde_json::json!({"external_id": format!("r{n}"), "version": 1});
                client
                    .put(format!("{dest}/v1/contacts/by-external-id/r{n}"))
                    .bearer_auth("sim-token")
                    .json(&body)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(records as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Fetches every page of the source, nothing else: the read ceiling.
async fn bare_reader(records: usize, latency: Duration) -> Result<f64, String> {
    let mut sim_config = SimConfig::new(7, records);
    sim_config.source.latency = latency;
    let sim = SimSaas::start(sim_config)
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut read = 0;
    loop {
        let mut request = client
            .get(format!("{}/v1/cursor/invoices", sim.source_url()))
            .bearer_auth("sim-token")
            .query(&[("limit", PAGE_SIZE.to_string())]);
        if let Some(token) = &cursor {
            request = request.query(&[("cursor", token)]);
        }
        let page: serde_json::Value = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        read += page["data"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(read as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("simsaas")
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(bench()),
        Err(e) => eprintln!("cannot start the simulator's runtime: {e}"),
    }
}

async fn bench() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let records = numbers.next().unwrap_or(16_000);
    let limit = numbers.next().unwrap_or(200) as f64;
    let latency = |name, batch| Pass {
        name,
        page_latency: Duration::from_millis(20),
        write_latency: Duration::from_millis(10),
        concurrency: 16,
        batch,
        rate_limit: None,
    };
    let limited = |name, batch| Pass {
        name,
        page_latency: Duration::ZERO,
        write_latency: Duration::ZERO,
        concurrency: 8,
        batch,
        rate_limit: Some(limit),
    };
    println!("{records} records, page size {PAGE_SIZE}, no faults");
    let put = latency("latency-put", 1);
    let bare_put = match bare_writers(records / 4, put.concurrency, put.write_latency).await {
        Ok(rate) => {
            println!(
                "bare writers: {} PUTs from {} tasks at {}ms: {rate:.0} requests/s; the ideal's {:.0}: ratio {:.2}",
                records / 4,
                put.concurrency,
                put.write_latency.as_millis(),
                put.ideal(),
                rate / put.ideal()
            );
            Some(rate)
        }
        Err(e) => {
            eprintln!("bare writers: {e}");
            None
        }
    };
    let batch = latency("latency-batch", BATCH);
    let bare_batch = match bare_reader(records * 5, batch.page_latency).await {
        Ok(rate) => {
            println!(
                "bare reader: {} records in pages of {PAGE_SIZE} at {}ms: {rate:.0} records/s; the ideal's {:.0}: ratio {:.2}",
                records * 5,
                batch.page_latency.as_millis(),
                batch.ideal(),
                rate / batch.ideal()
            );
            Some(rate)
        }
        Err(e) => {
            eprintln!("bare reader: {e}");
            None
        }
    };
    // Each latency-bound pass beside the bare client that bounds it: what the
    // simulator really allows, where the ideal counts the latencies alone.
    let passes = [
        (put, records, bare_put),
        // Fifty records a request: five times the records for a pass as long.
        (batch, records * 5, bare_batch),
        // A rate-bound pass of one record per request takes records / N
        // seconds: a fifth of the records keeps it short.
        (limited("limited-put", 1), records / 5, None),
        (limited("limited-batch", BATCH), records, None),
    ];
    for (pass, records, bare) in passes {
        match run(pass, records).await {
            Ok((written, elapsed, limited)) => {
                let rate = written as f64 / elapsed.as_secs_f64().max(1e-9);
                let ideal = pass.ideal();
                println!(
                    "{:<14} {:>7} written in {:>6.2}s: {:>8.0} records/s; ideal {:>8.0} (page {}ms, write {}ms, concurrency {}, batch {}, limit {}): ratio {:.2}; 429s {}",
                    pass.name,
                    written,
                    elapsed.as_secs_f64(),
                    rate,
                    ideal,
                    pass.page_latency.as_millis(),
                    pass.write_latency.as_millis(),
                    pass.concurrency,
                    pass.batch,
                    pass.rate_limit
                        .map_or("none".to_owned(), |r| format!("{r}/s")),
                    rate / ideal,
                    limited,
                );
                if let Some(bare) = bare {
                    println!(
                        "{:<14} against the bare client's {bare:.0}: ratio {:.2}",
                        "",
                        rate / bare
                    );
                }
            }
            Err(e) => eprintln!("{}: {e}", pass.name),
        }
    }
}
