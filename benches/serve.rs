//! What one `highwater serve` does with many small syncs: 100 syncs of 2,000
//! records each (the simulator's invoices, no faults, page size 500), every one
//! into a JSON Lines file of its own, all due at start, `--concurrency` at a
//! time; beside the limit it is measured against, `highwater run` of one sync
//! of all 200,000 records into one file, in the same run. Prints records/s, the
//! ratio, and the daemon's peak RSS; asserts nothing, but says when a file is
//! short. Each daemon runs twice: on a SQLite state store, and on a PostgreSQL
//! one (a schema of its own at `HW_BENCH_PG`, else the machine's `test`
//! database), where its syncs run under leases, with the CPU time the database
//! server spent beside the daemon's, or the daemon's SQLite threads within it:
//! the state store's engine's share of the work.
//! `cargo bench --bench serve [-- CONCURRENCY...]` (default 4 and 8).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use simsaas::{SimConfig, SimSaas};

const SYNCS: usize = 100;
const RECORDS: usize = 2_000;

fn sim_config(records: usize) -> SimConfig {
    let mut config = SimConfig::new(1, records);
    config.invalid_ratio = 0.0;
    config.poisoned_ratio = 0.0;
    config
}

/// One `[[sync]]` named `name`, its records into `file`.
fn sync(name: &str, source_url: &str, file: &Path, schedule: bool) -> String {
    format!(
        r#"
[[sync]]
name = "{name}"
{schedule}

[sync.source]
base_url = "{source_url}"
path = "/v1/cursor/invoices"
auth = {{ type = "bearer", token = "sim-token" }}
version_field = "version"
page_size = 500
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}

[sync.mapping]
external_id = "{{id}}"
fields = {{ email = "customer.email", name = "customer.name", amount_cents = "amount_cents", version = "version" }}

[sync.destination]
type = "jsonl"
file = "{file}"
"#,
        schedule = if schedule {
            "schedule = { every = \"1d\" }"
        } else {
            ""
        },
        file = file.display(),
    )
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("highwater-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(dir.join("out"));
    dir
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// CPU time of a process so far, from the kernel (user and system, in ticks
/// of 10 ms).
fn cpu_of(stat: &str) -> Option<(String, Duration)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((
        stat.get(open + 1..close)?.to_owned(),
        Duration::from_millis(ticks * 10),
    ))
}

fn process_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| cpu_of(&s))
        .map_or(Duration::ZERO, |(_, cpu)| cpu)
}

/// CPU time so far of a process's SQLite threads (sqlx runs each SQLite
/// connection on a thread of its own, `sqlx-sqlite-worker-N`): with JSON
/// Lines destinations, the state store's engine.
fn sqlite_threads_cpu(pid: u32) -> Duration {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| cpu_of(&s))
        .filter(|(name, _)| name.starts_with("sqlx-sqlite"))
        .map(|(_, cpu)| cpu)
        .sum()
}

/// CPU time of every PostgreSQL server process on this machine so far.
fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| cpu_of(&s))
        .filter(|(name, _)| name == "postgres")
        .map(|(_, cpu)| cpu)
        .sum()
}

fn postgres_url() -> String {
    std::env::var("HW_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn drop_schema(schema: &str) {
    let _ = std::process::Command::new("psql")
        .args([
            &postgres_url(),
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
}

/// Peak RSS of a live process, from the kernel.
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The daemon with `concurrency`: until every sync has completed a run.
async fn daemon(concurrency: usize, limit: f64, postgres: bool) -> Result<(), String> {
    let sim = SimSaas::start(sim_config(RECORDS))
        .await
        .map_err(|e| e.to_string())?;
    let dir = fresh_dir(&format!("daemon-{concurrency}"));
    let schema = format!("hw_bench_serve_{}", std::process::id());
    let mut text = if postgres {
        drop_schema(&schema);
        format!(
            "[state]\nurl = \"{}\"\nschema = \"{schema}\"\n",
            postgres_url()
        )
    } else {
        format!("[state]\npath = \"{}\"\n", dir.join("state.db").display())
    };
    for n in 0..SYNCS {
        let file = dir.join("out").join(format!("s{n}.jsonl"));
        text.push_str(&sync(&format!("s{n}"), &sim.source_url(), &file, true));
    }
    let config = dir.join("highwater.toml");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let (started, server) = (Instant::now(), postgres_cpu());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_highwater"))
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--concurrency", &concurrency.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id().ok_or("no pid")?;
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
    // Bounded: a daemon that has not finished in ten minutes is stuck.
    let deadline = started + Duration::from_secs(600);
    loop {
        let status: Option<Value> = match client
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
        {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        let done = status
            .as_ref()
            .and_then(|s| s["syncs"].as_array())
            .is_some_and(|syncs| {
                syncs.len() == SYNCS
                    && syncs
                        .iter()
                        .all(|s| s["last_run"]["outcome"] == "completed")
            });
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err("the daemon did not finish in ten minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let rss = peak_rss_mib(pid);
    let (cpu, server) = (process_cpu(pid), postgres_cpu().saturating_sub(server));
    let sqlite = sqlite_threads_cpu(pid);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let short = (0..SYNCS)
        .filter(|n| lines(&dir.join("out").join(format!("s{n}.jsonl"))) != RECORDS)
        .count();
    let total = SYNCS * RECORDS;
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "  serve, {SYNCS} syncs × {RECORDS}, concurrency {concurrency:<2} {:<10} {rate:>8.0} rec/s  {:>6.2} s  ratio to one sync {:.2}  peak RSS {} MiB  CPU {:.2} s{}{}",
        if postgres { "PostgreSQL" } else { "SQLite" },
        elapsed.as_secs_f64(),
        rate / limit,
        rss.map_or("?".into(), |m| m.to_string()),
        cpu.as_secs_f64(),
        if postgres {
            format!(
                " + server {:.2} s (the store's share {:.0}%)",
                server.as_secs_f64(),
                100.0 * server.as_secs_f64() / (server + cpu).as_secs_f64().max(1e-9)
            )
        } else {
            format!(
                ", of which SQLite's threads {:.2} s (the store's share {:.0}%)",
                sqlite.as_secs_f64(),
                100.0 * sqlite.as_secs_f64() / cpu.as_secs_f64().max(1e-9)
            )
        },
        if short > 0 {
            format!("  ({short} files short)")
        } else {
            String::new()
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
    if postgres {
        drop_schema(&schema);
    }
    Ok(())
}

/// The limit: one sync of every record, one `highwater run`.
async fn one_sync() -> Result<f64, String> {
    let records = SYNCS * RECORDS;
    let sim = SimSaas::start(sim_config(records))
        .await
        .map_err(|e| e.to_string())?;
    let dir = fresh_dir("one");
    let file = dir.join("out").join("all.jsonl");
    let text = format!(
        "[state]\npath = \"{}\"\n{}",
        dir.join("state.db").display(),
        sync("all", &sim.source_url(), &file, false)
    );
    let config = dir.join("highwater.toml");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_highwater"))
        .arg("--config")
        .arg(&config)
        .args(["run", "all"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let rate = records as f64 / elapsed.as_secs_f64();
    println!(
        "  run, 1 sync × {records}                   {rate:>8.0} rec/s  {:>6.2} s{}",
        elapsed.as_secs_f64(),
        if lines(&file) == records {
            ""
        } else {
            "  (the file is short)"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let concurrencies: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let concurrencies = if concurrencies.is_empty() {
        vec![4, 8]
    } else {
        concurrencies
    };
    println!(
        "many small syncs on one daemon, against one sync of them all (JSON Lines, no faults)"
    );
    let limit = one_sync().await?;
    for concurrency in concurrencies {
        daemon(concurrency, limit, false).await?;
        daemon(concurrency, limit, true).await?;
    }
    Ok(())
}
