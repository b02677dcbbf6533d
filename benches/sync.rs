//! Throughput of a full sync, beside a deliberately naive loop.
//!
//! 100,000 records from the simulated SaaS (no faults, page size 500) into the
//! destination in `put` mode. In this process, each against a fresh simulator and
//! each client on its own single-threaded runtime and thread (as the binary runs;
//! highwater adds its reading thread and SQLite's worker, whose CPU the per-record
//! figures include):
//! a naive sequential loop (fetch a page, PUT each record, keep no state),
//! highwater's engine at concurrency 1, and the same without record events
//! (`[state] event_retention = "0s"`, for what `explain`'s log costs), in turn
//! for a few rounds (the medians are printed, since two cores shared with the
//! simulator make single runs noisy);
//! then the engine at concurrency 8; then naive and concurrency 1 again on a tenth
//! of the records with 1 ms of latency per request, as a LAN API would add; and
//! the real binary, for its own peak RSS.
//! Prints records/s, the process's CPU time per 1,000 records (simulator
//! included) and the client's share of it (the process less the simulator's
//! threads), peak RSS and the ratios; asserts nothing. `cargo bench --bench sync [-- RECORDS [ROUNDS]]`.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use highwater_core::engine::RunOptions;
use serde_json::{Value, json};
use simsaas::{SimConfig, SimSaas};

#[path = "../crates/highwater-core/benches/support/cpu.rs"]
mod cpu;
use cpu::{process_cpu, stat_cpu};

#[path = "support/engine.rs"]
mod engine_thread;
#[path = "support/config.rs"]
mod support;
use engine_thread::engine_run;

const PAGE_SIZE: usize = 500;

fn sim_config(records: usize, latency: Duration) -> SimConfig {
    let mut config = SimConfig::new(1, records);
    config.invalid_ratio = 0.0;
    config.poisoned_ratio = 0.0;
    config.source.latency = latency;
    config.dest.latency = latency;
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
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
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
    let destination = support::put_destination(&sim.dest_url(), concurrency, "");
    support::config(dir, &sim.source_url(), PAGE_SIZE, "", &destination)
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("highwater-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
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

/// Names the threads of the runtime that holds the simulators, so that their CPU
/// can be told from the client's.
const SIM_THREAD: &str = "simsaas";

/// CPU time so far of this process's live threads whose name starts with `prefix`
/// (Linux; zero elsewhere). The simulator's threads live through every pass.
fn threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (name, cpu) = stat_cpu(&stat)?;
            name.starts_with(prefix).then_some(cpu)
        })
        .sum()
}

/// One client's pass over a fresh simulator.
struct Pass {
    written: u64,
    wall: Duration,
    cpu: Duration,
    /// The process's CPU less the simulator's: the client's own threads.
    client_cpu: Duration,
    peak_rss_mib: Option<u64>,
}

impl Pass {
    fn rate(&self) -> f64 {
        rate(self.written, self.wall)
    }

    fn cpu_ms_per_1000(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.written.max(1) as f64
    }

    fn client_cpu_ms_per_1000(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.written.max(1) as f64
    }

    fn line(&self, label: &str, naive: Option<f64>) -> String {
        let mut line = format!(
            "  {label:<40} {:>7.0} rec/s  {:>6.2} s  {:>5.0} ms CPU/1k rec (client {:>3.0})  peak RSS {} MiB",
            self.rate(),
            self.wall.as_secs_f64(),
            self.cpu_ms_per_1000(),
            self.client_cpu_ms_per_1000(),
            self.peak_rss_mib.map_or("?".into(), |m| m.to_string()),
        );
        if let Some(naive) = naive {
            line.push_str(&format!("  ratio to naive {:.2}", self.rate() / naive));
        }
        line
    }
}

enum Client {
    Naive,
    Engine(usize),
    /// At this concurrency, recording no events for `explain`.
    EngineWithoutEvents(usize),
}

async fn pass(records: usize, latency: Duration, client: Client) -> Result<Pass, String> {
    let sim = SimSaas::start(sim_config(records, latency))
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    reset_peak_rss();
    let (started, cpu_before, sim_before) =
        (Instant::now(), process_cpu(), threads_cpu(SIM_THREAD));
    let written = match client {
        Client::Naive => {
            let (source, dest) = (sim.source_url(), sim.dest_url());
            let joined = on_own_thread("naive", move || naive_loop(source, dest)).join();
            match joined {
                Ok(Ok(n)) => n as u64,
                Ok(Err(e)) => return Err(format!("the naive loop failed: {e}")),
                Err(_) => return Err("the naive loop panicked".into()),
            }
        }
        Client::Engine(concurrency) | Client::EngineWithoutEvents(concurrency) => {
            let events = matches!(client, Client::Engine(_));
            let dir = fresh_dir(&format!("c{concurrency}"));
            let text = config(&sim, &dir, concurrency);
            let options = RunOptions {
                event_retention: (!events).then_some(Duration::ZERO),
                ..RunOptions::default()
            };
            let outcome = engine_run(text, dir.clone(), options);
            let _ = std::fs::remove_dir_all(&dir);
            outcome.map_err(|e| format!("highwater failed: {e}"))?
        }
    };
    let cpu = process_cpu().saturating_sub(cpu_before);
    let pass = Pass {
        written,
        wall: started.elapsed(),
        cpu,
        client_cpu: cpu.saturating_sub(threads_cpu(SIM_THREAD).saturating_sub(sim_before)),
        peak_rss_mib: peak_rss_mib(),
    };
    if sim.dest_count() != records {
        eprintln!("  the destination holds {} of {records}", sim.dest_count());
    }
    sim.shutdown().await;
    Ok(pass)
}

fn median(mut passes: Vec<Pass>) -> Option<Pass> {
    passes.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let middle = passes.len() / 2;
    passes.into_iter().nth(middle)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SIM_THREAD)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(bench()),
        Err(e) => eprintln!("cannot start the simulators' runtime: {e}"),
    }
}

async fn bench() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let records = numbers.next().unwrap_or(100_000);
    let rounds = numbers.next().unwrap_or(3).max(1);
    println!("sync of {records} records, page size {PAGE_SIZE}, put mode, no faults");
    println!(
        "(CPU and peak RSS are this whole process: the simulator holding both sides, plus the client; \"client\" is the process less the simulator's threads)"
    );

    let (mut naive, mut sequential, mut quiet) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        for client in [
            Client::Naive,
            Client::Engine(1),
            Client::EngineWithoutEvents(1),
        ] {
            let passes = match client {
                Client::Naive => &mut naive,
                Client::Engine(_) => &mut sequential,
                Client::EngineWithoutEvents(_) => &mut quiet,
            };
            match pass(records, Duration::ZERO, client).await {
                Ok(p) => passes.push(p),
                Err(e) => return eprintln!("round {round}: {e}"),
            }
        }
    }
    // What recording events for `explain` costs, by the same pairing.
    let mut events_cost: Vec<f64> = sequential
        .iter()
        .zip(&quiet)
        .map(|(with, without)| without.rate() / with.rate())
        .collect();
    events_cost.sort_by(f64::total_cmp);
    // The machine's speed drifts over minutes; a round's two passes, run back to
    // back, see the same machine, so their ratio is the steadier figure.
    let mut paired: Vec<f64> = naive
        .iter()
        .zip(&sequential)
        .map(|(n, s)| s.rate() / n.rate())
        .collect();
    paired.sort_by(f64::total_cmp);
    let (Some(naive), Some(sequential), Some(quiet)) =
        (median(naive), median(sequential), median(quiet))
    else {
        return;
    };
    let naive_rate = naive.rate();
    println!(
        "{}",
        naive.line(
            &format!("naive loop, sequential (median of {rounds})"),
            None
        )
    );
    println!(
        "{}",
        sequential.line(
            &format!("highwater, concurrency 1 (median of {rounds})"),
            Some(naive_rate)
        )
    );
    println!(
        "  highwater against the naive loop at concurrency 1: {:+.0}% time, {:+.0}% CPU per record, {:+.0}% client CPU per record",
        (naive_rate / sequential.rate() - 1.0) * 100.0,
        (sequential.cpu_ms_per_1000() / naive.cpu_ms_per_1000() - 1.0) * 100.0,
        (sequential.client_cpu_ms_per_1000() / naive.client_cpu_ms_per_1000() - 1.0) * 100.0,
    );
    println!(
        "  ratio to naive within each round, lowest to highest: {} (median {:.2})",
        paired
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        paired[paired.len() / 2],
    );
    println!(
        "{}",
        quiet.line(
            &format!("c1 without record events (median of {rounds})"),
            Some(naive_rate)
        )
    );
    println!(
        "  time with record events against without, within each round: {} (median {:.2}, {:+.1}% time)",
        events_cost
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        events_cost[events_cost.len() / 2],
        (events_cost[events_cost.len() / 2] - 1.0) * 100.0,
    );
    match pass(records, Duration::ZERO, Client::Engine(8)).await {
        Ok(p) => println!("{}", p.line("highwater, concurrency 8", Some(naive_rate))),
        Err(e) => eprintln!("  concurrency 8: {e}"),
    }

    // On localhost with no latency the client's CPU is the whole cost of a request;
    // real APIs answer in milliseconds. The same comparison with 1 ms per request:
    let slow = (records / 10).max(1);
    let latency = Duration::from_millis(1);
    println!("with {latency:?} of latency per request, {slow} records:");
    match (
        pass(slow, latency, Client::Naive).await,
        pass(slow, latency, Client::Engine(1)).await,
    ) {
        (Ok(naive), Ok(sequential)) => {
            println!("{}", naive.line("naive loop, sequential", None));
            println!(
                "{}",
                sequential.line("highwater, concurrency 1", Some(naive.rate()))
            );
        }
        (Err(e), _) | (_, Err(e)) => eprintln!("  {e}"),
    }

    // The real binary, for the peak memory of highwater alone.
    let sim = match SimSaas::start(sim_config(records, Duration::ZERO)).await {
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
                "  {:<40} {:>7.0} rec/s  {:>6.2} s  peak RSS {} MiB (highwater alone)",
                "highwater binary, concurrency 8",
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
    let _ = std::fs::remove_dir_all(&dir);
}
