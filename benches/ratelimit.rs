//! Pace against a rate-limited destination: how close to its limit a sync runs,
//! and how many 429s it meets on the way.
//!
//! The simulated destination allows N requests per second (a token bucket
//! holding one second of them, answering 429 with `Retry-After: 1` when empty).
//! In this process, each pass against a fresh simulator (so a fresh origin, and
//! a fresh pace) and the engine on its own single-threaded runtime and thread,
//! a sync in `put` mode writes N × SECONDS records — one request each — with:
//! the bucket told only by its 429s (without a configured limit, and with
//! `rate_limit` = 2N, a guess too high), then told on every answer by
//! `X-RateLimit-*` (reset in seconds, then as an epoch timestamp), by the
//! IETF `RateLimit` / `RateLimit-Policy` fields and by HubSpot's headers —
//! last against a window of 10 s that rolls (10 × N requests within any
//! 10 s) instead of the bucket, which HubSpot's headers cannot tell apart
//! from a window that ends. Prints the destination's
//! requests per second over the run, their ratio to N, and the 429s the
//! simulator sent, also counted by incident as the rate-limit tests count them
//! (requests already on their way when an incident began meet one too);
//! asserts nothing.
//! `cargo bench --bench ratelimit [-- N [SECONDS]]` (defaults: 100 and 20).

use std::time::{Duration, Instant};

use simsaas::{LimitHeaders, SimConfig, SimSaas};

#[path = "support/engine.rs"]
mod engine_thread;
#[path = "support/config.rs"]
mod support;
use engine_thread::engine_run;
use highwater_core::engine::RunOptions;

fn config(sim: &SimSaas, dir: &std::path::Path, ceiling: Option<f64>) -> String {
    let rate_limit = ceiling.map_or(String::new(), |c| format!("rate_limit = {c}"));
    let destination = support::put_destination(&sim.dest_url(), 8, &rate_limit);
    support::config(dir, &sim.source_url(), 500, "", &destination)
}

struct Pass {
    requests: u64,
    wall: Duration,
    answered_429: u64,
    /// The simulator's incidents of 429s: those answering requests already
    /// on their way when an incident's first one left belong to it.
    incidents_429: u64,
}

async fn pass(
    limit: f64,
    records: usize,
    headers: LimitHeaders,
    ceiling: Option<f64>,
    window: Option<Duration>,
) -> Result<Pass, String> {
    let mut sim = SimConfig::new(1, records);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    sim.dest.rate_limit_rps = Some(limit);
    sim.dest.rate_limit_headers = headers;
    sim.dest.rate_limit_window = window;
    sim.dest.latency = Duration::from_millis(1);
    let sim = SimSaas::start(sim).await.map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!(
        "highwater-bench-ratelimit-{}-{headers:?}-{}-{}",
        std::process::id(),
        ceiling.is_some(),
        window.is_some()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let text = config(&sim, &dir, ceiling);
    let started = Instant::now();
    let run_dir = dir.clone();
    let written =
        tokio::task::spawn_blocking(move || engine_run(text, run_dir, RunOptions::default()))
            .await
            .map_err(|e| e.to_string())??;
    let wall = started.elapsed();
    let stats = sim.stats();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    if written < records as u64 {
        return Err(format!("wrote {written} of {records} records"));
    }
    Ok(Pass {
        requests: stats.dest.requests,
        wall,
        answered_429: stats.dest.rate_limited + stats.dest.rate_limited_date,
        incidents_429: stats.dest.rate_limit_incidents,
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("simsaas")
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
        .filter_map(|a| a.parse::<f64>().ok());
    let limit = numbers.next().unwrap_or(100.0).max(1.0);
    let seconds = numbers.next().unwrap_or(20.0).max(1.0);
    let records = (limit * seconds) as usize;
    println!(
        "destination limited to {limit} requests/s; {records} records, one request each, concurrency 8"
    );
    let rolling = Some(Duration::from_secs(10));
    let passes = [
        ("Retry-After only", LimitHeaders::RetryAfterOnly, None, None),
        (
            "Retry-After only, rate_limit = 2N",
            LimitHeaders::RetryAfterOnly,
            Some(limit * 2.0),
            None,
        ),
        (
            "X-RateLimit-*, reset in seconds",
            LimitHeaders::XRateLimit,
            None,
            None,
        ),
        (
            "X-RateLimit-*, reset as epoch",
            LimitHeaders::XRateLimitEpoch,
            None,
            None,
        ),
        (
            "RateLimit + RateLimit-Policy",
            LimitHeaders::Ietf,
            None,
            None,
        ),
        ("X-HubSpot-RateLimit-*", LimitHeaders::HubSpot, None, None),
        (
            "X-HubSpot-RateLimit-*, rolling 10 s",
            LimitHeaders::HubSpot,
            None,
            rolling,
        ),
    ];
    for (label, headers, ceiling, window) in passes {
        match pass(limit, records, headers, ceiling, window).await {
            Ok(p) => {
                let rate = p.requests as f64 / p.wall.as_secs_f64().max(1e-9);
                println!(
                    "{label:<36} {:>7} requests in {:>6.1} s: {rate:>7.1} requests/s, {:.3} of N, {} answered 429 in {} incidents",
                    p.requests,
                    p.wall.as_secs_f64(),
                    rate / limit,
                    p.answered_429,
                    p.incidents_429,
                );
            }
            Err(e) => println!("{label:<36} failed: {e}"),
        }
    }
}
