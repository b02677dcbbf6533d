//! How throughput and memory hold as the dataset grows.
//!
//! For each size (100,000 and 1,000,000 records by default), against a fresh
//! simulator in this process (no faults, page size 1,000): a loop that only
//! fetches the source's pages and parses them (the read ceiling: no sync can
//! go faster than its source serves), then the real `highwater` binary syncing
//! the source into a JSON Lines file, then into the destination API in `put`
//! mode at concurrency 8. Prints records/s, the ratio to the read ceiling and
//! the binary's own peak RSS (the simulator lives in this process, not the
//! binary's); asserts nothing, but says when the destination is not exact.
//! Each line also gives the CPU time spent per record: the binary's, and
//! this process's (the simulator, and for the ceiling the loop as well).
//! The binary and the simulator share the machine's cores, so a sync's rate
//! is bounded by the two together: the binary's CPU per record against the
//! loop's says how far the ratio can move, and where.
//! `cargo bench --bench scale [-- RECORDS...]`; `SCALE_WRAPPER` (say
//! `heaptrack -o /tmp/hw`) runs the binary under a profiler, `SCALE_ONLY=jsonl`
//! or `SCALE_ONLY=put` runs one destination.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use simsaas::{SimConfig, SimSaas};

#[path = "support/config.rs"]
mod support;

const PAGE_SIZE: usize = 1_000;

fn sim_config(records: usize) -> SimConfig {
    let mut config = SimConfig::new(1, records);
    config.invalid_ratio = 0.0;
    config.poisoned_ratio = 0.0;
    config
}

/// Fetches every page of the source and parses it, on its own thread and
/// single-threaded runtime, as the binary's reading thread would.
fn read_ceiling(source: String) -> Result<(usize, Duration), String> {
    let thread = std::thread::Builder::new()
        .name("ceiling".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = highwater_core::http::client()
                    .build()
                    .expect("an HTTP client");
                let (started, mut read) = (Instant::now(), 0);
                let mut cursor: Option<String> = None;
                loop {
                    let mut request = client
                        .get(format!("{source}/v1/cursor/invoices"))
                        .bearer_auth("sim-token")
                        .query(&[("limit", PAGE_SIZE.to_string())]);
                    if let Some(token) = &cursor {
                        request = request.query(&[("cursor", token)]);
                    }
                    let response = request.send().await.map_err(|e| e.to_string())?;
                    let page: Value = response.json().await.map_err(|e| e.to_string())?;
                    read += page["data"].as_array().map_or(0, Vec::len);
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_owned()),
                        None => break,
                    }
                }
                Ok((read, started.elapsed()))
            })
        })
        .map_err(|e| e.to_string())?;
    thread
        .join()
        .map_err(|_| "the read loop panicked".to_owned())?
}

fn config(sim: &SimSaas, dir: &Path, destination: &str) -> String {
    support::config(dir, &sim.source_url(), PAGE_SIZE, "", destination)
}

fn api_destination(sim: &SimSaas) -> String {
    support::put_destination(&sim.dest_url(), 8, "")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("highwater-scale-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// What one run of the binary reported.
struct Run {
    written: u64,
    elapsed: Duration,
    peak_rss_mib: Option<u64>,
    cpu: Option<Cpu>,
}

/// CPU time in clock ticks from `/proc/self/stat`: this process's own
/// (`utime` + `stime`, the simulator's threads included) and its waited-for
/// children's (`cutime` + `cstime`: the binary, once `output()` reaped it).
#[derive(Clone, Copy)]
struct Cpu {
    own: u64,
    children: u64,
}

impl Cpu {
    fn now() -> Option<Cpu> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may hold spaces, in parentheses.
        let fields: Vec<u64> = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // utime, stime, cutime and cstime are fields 14 to 17 of the line,
        // 12 to 15 after the name.
        Some(Cpu {
            own: fields.get(11)? + fields.get(12)?,
            children: fields.get(13)? + fields.get(14)?,
        })
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            own: self.own.saturating_sub(start.own),
            children: self.children.saturating_sub(start.children),
        }
    }
}

/// Microseconds of CPU per record for `ticks` clock ticks (100 a second on
/// Linux, `USER_HZ`).
fn per_record(ticks: u64, records: u64) -> f64 {
    ticks as f64 * 10_000.0 / records.max(1) as f64
}

async fn run_binary(config_path: &Path) -> Result<Run, String> {
    // `SCALE_WRAPPER="heaptrack -o /tmp/hw"` runs the binary under a profiler.
    let wrapper = std::env::var("SCALE_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = tokio::process::Command::new(program);
            command.args(words).arg(env!("CARGO_BIN_EXE_highwater"));
            command
        }
        None => tokio::process::Command::new(env!("CARGO_BIN_EXE_highwater")),
    };
    let start = Cpu::now();
    let out = command
        .arg("--config")
        .arg(config_path)
        .args(["run", "bench", "--json"])
        .output()
        .await
        .map_err(|e| format!("cannot run highwater: {e}"))?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "highwater failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok(Run {
        written: report["counters"]["written"].as_u64().unwrap_or(0),
        elapsed: Duration::from_millis(report["elapsed_ms"].as_u64().unwrap_or(1)),
        peak_rss_mib: report["peak_rss_kb"].as_u64().map(|kb| kb / 1024),
        cpu: Cpu::now().zip(start).map(|(end, start)| end.since(start)),
    })
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn print_run(label: &str, run: &Run, ceiling: f64) {
    println!(
        "  {label:<28} {:>8.0} rec/s  {:>7.2} s  ratio to the read ceiling {:.2}  peak RSS {} MiB (highwater alone)",
        rate(run.written, run.elapsed),
        run.elapsed.as_secs_f64(),
        rate(run.written, run.elapsed) / ceiling,
        run.peak_rss_mib.map_or("?".into(), |m| m.to_string()),
    );
    if let Some(cpu) = run.cpu {
        println!(
            "  {:<28} CPU a record: highwater {:.1} µs, the simulator {:.1} µs",
            "",
            per_record(cpu.children, run.written),
            per_record(cpu.own, run.written),
        );
    }
}

/// Lines of the JSON Lines file, and whether each record is there once.
fn check_file(path: &Path, records: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines = text.lines().count();
    (lines != records).then(|| format!("the file holds {lines} lines for {records} records"))
}

async fn size(records: usize) {
    println!("{records} records, page size {PAGE_SIZE}, no faults");
    let sim = match SimSaas::start(sim_config(records)).await {
        Ok(sim) => sim,
        Err(e) => return eprintln!("cannot start the simulator: {e}"),
    };
    let source = sim.source_url();
    let start = Cpu::now();
    let ceiling = match tokio::task::spawn_blocking(move || read_ceiling(source)).await {
        Ok(Ok((read, wall))) => {
            let ceiling = rate(read as u64, wall);
            println!(
                "  {:<28} {ceiling:>8.0} rec/s  {:>7.2} s  (fetch and parse pages only)",
                "read ceiling",
                wall.as_secs_f64()
            );
            if let Some(cpu) = Cpu::now().zip(start).map(|(end, start)| end.since(start)) {
                println!(
                    "  {:<28} CPU a record: the loop and the simulator {:.1} µs",
                    "",
                    per_record(cpu.own, read as u64),
                );
            }
            ceiling
        }
        Ok(Err(e)) => return eprintln!("  the read loop failed: {e}"),
        Err(e) => return eprintln!("  the read loop panicked: {e}"),
    };

    // `SCALE_ONLY=jsonl` or `SCALE_ONLY=put` runs one of the two.
    let only = std::env::var("SCALE_ONLY").unwrap_or_default();
    if only.is_empty() || only == "jsonl" {
        to_jsonl(&sim, records, ceiling).await;
    }
    if only.is_empty() || only == "put" {
        to_api(&sim, records, ceiling).await;
    }
    sim.shutdown().await;
}

async fn to_jsonl(sim: &SimSaas, records: usize, ceiling: f64) {
    let dir = fresh_dir("jsonl");
    let file = dir.join("out.jsonl");
    let config_path = dir.join("highwater.toml");
    let destination = format!(
        "[sync.destination]\ntype = \"jsonl\"\nfile = \"{}\"",
        file.display()
    );
    if std::fs::write(&config_path, config(sim, &dir, &destination)).is_err() {
        return eprintln!("cannot write {}", config_path.display());
    }
    match run_binary(&config_path).await {
        Ok(run) => {
            print_run("API → JSON Lines file", &run, ceiling);
            if let Some(problem) = check_file(&file, records) {
                println!("    not exact: {problem}");
            }
        }
        Err(e) => eprintln!("  {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn to_api(sim: &SimSaas, records: usize, ceiling: f64) {
    let dir = fresh_dir("api");
    let config_path = dir.join("highwater.toml");
    if std::fs::write(&config_path, config(sim, &dir, &api_destination(sim))).is_err() {
        return eprintln!("cannot write {}", config_path.display());
    }
    match run_binary(&config_path).await {
        Ok(run) => {
            print_run("API → API, put, c8", &run, ceiling);
            if sim.dest_count() != records {
                println!(
                    "    not exact: the destination holds {} of {records}",
                    sim.dest_count()
                );
            }
        }
        Err(e) => eprintln!("  {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("simsaas")
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(async {
            for records in sizes {
                size(records).await;
            }
        }),
        Err(e) => eprintln!("cannot start the simulator's runtime: {e}"),
    }
}
