//! `highwater demo`: starts the simulated billing API and CRM in this process with
//! faults on, writes a temporary config, runs the sync as a child process, kills it
//! (SIGKILL) mid-run and resumes it. It checks the killed run's own result before
//! anything else runs — every record the run was responsible for that did not
//! change meanwhile — then runs the sync once more as the next scheduled run
//! would, and compares the destination with the source again. A kill is counted
//! only if the killed process had committed progress and the run was still open.
//! Everything printed comes from those real runs.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use highwater_core::state::{RunKind, Store};
use simsaas::{SimConfig, SimSaas, Verification};
use tokio::process::Command;
use tokio::time::Instant;

use super::{CliError, Exit};

const SYNC: &str = "invoices_to_crm";

pub async fn demo(records: usize, seed: u64, kills: u32) -> Result<Exit, CliError> {
    match run_demo(records, seed, kills).await {
        Ok(true) => Ok(Exit::Complete),
        Ok(false) => Ok(Exit::Failed),
        Err(e) => Err(CliError::Failed(format!("demo: {e}"))),
    }
}

async fn run_demo(records: usize, seed: u64, kills: u32) -> Result<bool, String> {
    let started = Instant::now();
    let sim = SimSaas::start(demo_sim_config(seed, records))
        .await
        .map_err(|e| format!("cannot start the simulated APIs: {e}"))?;
    let dir = std::env::temp_dir().join(format!("highwater-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("highwater.toml");
    std::fs::write(&config, demo_config(&sim.source_url(), &sim.dest_url()))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let state = dir.join(".highwater").join("state.db");
    let at_start: HashMap<String, i64> = sim
        .source_records()
        .into_iter()
        .map(|r| (r.id, r.version))
        .collect();

    println!("highwater demo");
    println!(
        "  source       {} (simulated billing API: {records} invoices, seed {seed})",
        sim.source_url()
    );
    println!(
        "  destination  {} (simulated CRM, contacts upserted by PUT)",
        sim.dest_url()
    );
    println!("  faults       429 + Retry-After, 5xx bursts, slow answers, commit-then-timeout,");
    println!("               commit-then-502, writes applied late, poisoned and invalid records,");
    println!("               rate limit, stale replicas, live and late updates");
    println!("  config       {}", config.display());
    println!();

    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the highwater binary: {e}"))?;
    let total = records as f64;
    let mut landed = 0;
    for kill in 1..=kills {
        // Kill once the destination holds a growing share of the records.
        let target = total * f64::from(kill) / f64::from(kills + 1);
        println!(
            "▶ run {SYNC} — will be killed (SIGKILL) once the CRM holds {:.0} contacts",
            target
        );
        let before = progress(&state).await?;
        let mut child = spawn(&exe, &config)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                println!("  the run ended before the kill (exit {status})");
                break;
            }
            let held = sim.dest_count();
            if held as f64 >= target || Instant::now() > deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let after = progress(&state).await?;
                if after.is_some_and(|a| before.is_none_or(|b| a > b)) {
                    landed += 1;
                    println!(
                        "  ✖ killed with SIGKILL mid-run, while the CRM held {held} of {records} contacts"
                    );
                } else {
                    println!(
                        "  ✖ killed with SIGKILL, but the run had committed no progress or had ended: not counted"
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!();
    }
    println!("▶ run {SYNC} — resumes the killed run from its checkpoint, to the end");
    let status = spawn(&exe, &config)?
        .wait()
        .await
        .map_err(|e| format!("waiting for the run: {e}"))?;
    println!();
    if !status.success() {
        println!("the resumed run failed (exit {status}); see the messages above");
        return Ok(false);
    }
    // Before anything else runs: what the killed run itself left, for every
    // record it was responsible for that did not change while it ran.
    let unchanged: HashSet<String> = sim
        .source_records()
        .into_iter()
        .filter(|r| at_start.get(&r.id) == Some(&r.version))
        .map(|r| r.id)
        .collect();
    let (own, watermark) = verification(&sim, &state, Some(&unchanged)).await?;
    println!(
        "the killed run's own result (the {} records it was responsible for that did not change while it ran, up to its watermark {watermark}):",
        own.source_records
    );
    println!("{own}");
    sim.stop_mutations();
    println!(
        "▶ run {SYNC} again — the next scheduled run: overlaps the last one (lookback) to pick up what changed meanwhile, skips what is unchanged"
    );
    let again = spawn(&exe, &config)?
        .wait()
        .await
        .map_err(|e| format!("waiting for the run: {e}"))?;
    println!();
    if !again.success() {
        println!("the next run failed (exit {again}); see the messages above");
        return Ok(false);
    }
    let (all, watermark) = verification(&sim, &state, None).await?;
    println!(
        "verification (destination compared with source, every record up to the watermark {watermark}):"
    );
    println!("{all}");
    let stats = sim.stats();
    println!(
        "faults served: {} rate-limited, {} server errors, {} slow, {} commit-then-timeout, {} commit-then-502, {} applied late, {} rejected, {} stale replicas",
        stats.source.rate_limited
            + stats.source.rate_limited_date
            + stats.dest.rate_limited
            + stats.dest.rate_limited_date,
        stats.source.server_errors + stats.dest.server_errors,
        stats.source.slow + stats.dest.slow,
        stats.dest.commit_then_timeout,
        stats.dest.commit_then_502,
        stats.dest.delayed_apply,
        stats.dest.rejected,
        stats.source.stale_served,
    );
    println!(
        "kills that landed mid-run: {landed} of {kills}; demo took {}",
        super::render::duration(started.elapsed())
    );
    let exact = own.is_exact() && all.is_exact();
    println!(
        "{}",
        if exact {
            "✔ zero missing, zero duplicates, zero stale; every invalid record dead-lettered with its reason"
        } else {
            "✘ the destination does not match the source"
        }
    );
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(exact)
}

/// How far the open run's commits have got (records resolved); `None` when no
/// run is open.
async fn progress(state: &Path) -> Result<Option<u64>, String> {
    if !state.exists() {
        return Ok(None);
    }
    let store = Store::open(state).await.map_err(|e| e.to_string())?;
    let open = store
        .open_run(SYNC, RunKind::Incremental)
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    Ok(open.map(|(_, checkpoint)| {
        let c = checkpoint.counters;
        c.written + c.unchanged + c.stale + c.dead_lettered
    }))
}

/// The destination compared with the source up to the last completed run's
/// watermark: for the records in `only`, or all of them.
async fn verification(
    sim: &SimSaas,
    state: &Path,
    only: Option<&HashSet<String>>,
) -> Result<(Verification, jiff::Timestamp), String> {
    let (dead, watermark) = read_state(state).await?;
    let (source, dest) = (sim.source_records(), sim.dest_dump());
    let verification = match only {
        Some(ids) => simsaas::verify_ids(&source, &dest, &dead, watermark, ids),
        None => simsaas::verify(&source, &dest, &dead, watermark),
    };
    Ok((verification, watermark))
}

fn spawn(exe: &Path, config: &Path) -> Result<tokio::process::Child, String> {
    Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("run")
        .arg(SYNC)
        .stdin(Stdio::null())
        // The child's progress bar tells the story; its info logs would drown it.
        .env("HIGHWATER_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

async fn read_state(path: &Path) -> Result<(HashMap<String, String>, jiff::Timestamp), String> {
    let store = Store::open(path).await.map_err(|e| e.to_string())?;
    let dead = store
        .dead_letters(SYNC)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| (d.source_id, d.error))
        .collect();
    let watermark = store
        .last_completed(SYNC, RunKind::Incremental)
        .await
        .map_err(|e| e.to_string())?
        .map(|(run, _)| run.watermark)
        .ok_or("no completed run in the state store")?;
    store.close().await;
    Ok((dead, watermark))
}

fn demo_sim_config(seed: u64, records: usize) -> SimConfig {
    let mut config = SimConfig::new(seed, records).with_all_faults();
    config.source.latency = Duration::from_millis(15);
    config.dest.latency = Duration::from_millis(2);
    // Every 429 stops all writers for a second or two; a few per run show it.
    config.dest.rate_limit_ratio = 0.0002;
    config.dest.rate_limit_date_ratio = 0.0001;
    config.mutations.max = records / 20;
    config.mutations.interval = Duration::from_millis(20);
    // Updates, late updates (two minutes late: within the five-minute lookback)
    // and inserts. A record inserted with an old timestamp is for a backfill; no
    // incremental run is meant to find it.
    config.mutations.weights = [4, 2, 2, 0];
    config.mutations.late_by = Duration::from_secs(120);
    config
}

fn demo_config(source: &str, dest: &str) -> String {
    format!(
        r#"# Written by `highwater demo`: the simulated billing API → the simulated CRM.
[[sync]]
name = "{SYNC}"

[sync.source]
base_url = "{source}"
path = "/v1/cursor/invoices"
auth = {{ type = "bearer", token = "sim-token" }}
version_field = "version"
page_size = 200
timeout = "1s"
lag = "0s"
lookback = "5m"
lower_bound_param = "updated_after"
upper_bound_param = "updated_before"
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}

[sync.mapping]
external_id = "{{id}}"
[sync.mapping.fields]
email = "customer.email"
name = "customer.name"
amount_cents = "amount_cents"
currency = "currency"
version = "version"
[sync.mapping.required]
email = "string"
amount_cents = "integer"

[sync.destination]
type = "http"
base_url = "{dest}"
mode = "put"
path = "/v1/contacts/by-external-id/{{external_id}}"
read_path = "/v1/contacts/by-external-id/{{external_id}}"
external_id_field = "external_id"
auth = {{ type = "bearer", token = "sim-token" }}
timeout = "1s"
concurrency = 8

[sync.retry]
base = "50ms"
cap = "2s"
max_attempts = 10
"#
    )
}
