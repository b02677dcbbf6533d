//! `highwater serve`: two scheduled syncs (the simulated CRM and a JSON Lines
//! file) run at start, since neither ever ran, and again each period; each
//! ends exact. A paused sync is not run on its schedule, but is when asked;
//! `/status`, `/health` and `/metrics` answer; SIGHUP takes a new config (a
//! renamed sync runs at once) and refuses one that does not validate; SIGTERM
//! stops the daemon cleanly; a pause outlives it. The run history shows no sync ever ran twice at once.

use std::time::Duration;

use highwater_core::state::RunKind;
use serde_json::Value;
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, bin};

const FILE_SYNC: &str = "invoices_file";

/// Adds a schedule to the sync, and a second scheduled sync of the same
/// source into a JSON Lines file.
fn two_scheduled_syncs(world: &World) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&world.config).expect("config");
    let schedule = "schedule = { every = \"2s\" }\n";
    let start = text.find("[[sync]]").expect("a sync");
    let block = text[start..].replacen(
        &format!("name = \"{SYNC}\"\n"),
        &format!("name = \"{FILE_SYNC}\"\n{schedule}"),
        1,
    );
    let file = world.dir.join("out").join("invoices.jsonl");
    let (from, to) = (
        block.find("[sync.destination]").expect("destination"),
        block.find("[sync.retry]").expect("retry"),
    );
    let block = format!(
        "{}[sync.destination]\ntype = \"jsonl\"\nfile = \"{}\"\n\n{}",
        &block[..from],
        file.display(),
        &block[to..]
    );
    let text = text.replacen(
        &format!("name = \"{SYNC}\"\n"),
        &format!("name = \"{SYNC}\"\n{schedule}"),
        1,
    );
    std::fs::write(&world.config, format!("{text}\n{block}")).expect("config");
    file
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn status(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let (_, body) = get(client, &format!("{base}/status"))
        .await
        .unwrap_or_else(|| panic!("no /status"));
    let status: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    status["syncs"].as_array().cloned().unwrap_or_default()
}

fn of<'a>(syncs: &'a [Value], name: &str) -> &'a Value {
    syncs
        .iter()
        .find(|s| s["sync"] == name)
        .unwrap_or_else(|| panic!("{name} not in {syncs:?}"))
}

/// Completed incremental runs of `sync`, as (started, completed) in microseconds.
async fn completed_runs(world: &World, sync: &str) -> Vec<(i64, i64)> {
    let store = world.store().await;
    let runs = store.runs(sync, 1_000).await.expect("history");
    store.close().await;
    runs.into_iter()
        .filter(|r| r.run.kind == RunKind::Incremental)
        .filter_map(|r| {
            Some((
                r.run.started_at.as_microsecond(),
                r.run.completed_at?.as_microsecond(),
            ))
        })
        .collect()
}

/// Waits, up to `limit`, until `done` says the daemon's status is as wanted;
/// returns that status.
async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let syncs = status(client, base).await;
        if done(&syncs) {
            return syncs;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not within {limit:?}: {syncs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_each_sync_on_its_schedule() {
    let mut sim = SimConfig::new(51, 1_000);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let world = World::start("serve", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    let file = two_scheduled_syncs(&world);
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
    let (mut daemon, base) = start_daemon(&world, &client).await;

    // Never run: both at start, each exact.
    let completed = |name: &'static str| {
        move |syncs: &[Value]| of(syncs, name)["last_run"]["outcome"] == "completed"
    };
    let first = wait_for(&client, &base, Duration::from_secs(60), "first runs", |s| {
        completed(SYNC)(s) && completed(FILE_SYNC)(s)
    })
    .await;
    // The completed run, as the status showed it: by the next call, the
    // schedule may have come round again and found the sync not due.
    let run = &of(&first, SYNC)["last_run"];
    assert!(run["run_id"].is_string(), "{run}");
    world.assert_exact().await;
    let lines = std::fs::read_to_string(&file)
        .expect("the file")
        .lines()
        .count();
    assert_eq!(lines, 1_000);
    let syncs = status(&client, &base).await;
    let sync = of(&syncs, SYNC);
    assert_eq!(sync["schedule"]["every_seconds"], 2, "{sync}");
    assert!(
        sync["next_run_at"].is_string() && sync["lag_seconds"].is_i64(),
        "{sync}"
    );

    // Paused: not run on its schedule while the other runs twice more.
    let (code, _) = post(&client, &format!("{base}/syncs/{SYNC}/pause")).await;
    assert_eq!(code, 200);
    // `status` shows it, from the state store.
    let out = world.highwater(&["status", "--json"]).await;
    let shown: Value = serde_json::from_slice(&out.stdout).expect("status");
    let paused: Vec<(Value, Value)> = shown["syncs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["sync"].clone(), s["paused"].clone()))
        .collect();
    assert!(
        paused.contains(&(SYNC.into(), true.into()))
            && paused.contains(&(FILE_SYNC.into(), false.into())),
        "{shown}"
    );
    let text = crate::util::stdout(&world.highwater(&["status"]).await);
    assert!(text.contains(&format!("{SYNC} (paused)")), "{text}");
    let before = completed_runs(&world, SYNC).await.len();
    let file_before = completed_runs(&world, FILE_SYNC).await.len();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while completed_runs(&world, FILE_SYNC).await.len() < file_before + 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "the other sync stopped running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        completed_runs(&world, SYNC).await.len(),
        before,
        "a paused sync ran on its schedule"
    );
    // Asked for, it runs, and stays paused.
    let (code, _) = post(&client, &format!("{base}/syncs/{SYNC}/run")).await;
    assert_eq!(code, 202);
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while completed_runs(&world, SYNC).await.len() < before + 1 {
        assert!(
            tokio::time::Instant::now() < until,
            "the run asked for never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(of(&status(&client, &base).await, SYNC)["paused"], true);
    let (code, _) = post(&client, &format!("{base}/syncs/nope/run")).await;
    assert_eq!(code, 404);

    // The paused sync is idle: what /metrics counted of it is what its runs
    // committed. A run counts its records just after its completion commits, so
    // a scrape may come between the two: it is asked again, a few times.
    let store = world.store().await;
    let runs = store.runs(SYNC, 1_000).await.expect("history");
    store.close().await;
    let committed = |outcome: &str| -> u64 {
        runs.iter()
            .map(|r| match outcome {
                "read" => r.checkpoint.counters.read,
                "written" => r.checkpoint.counters.written,
                _ => r.checkpoint.counters.unchanged,
            })
            .sum()
    };
    assert!(committed("read") >= 1_000 && committed("written") >= 1_000);
    let outcomes = ["read", "written", "unchanged"];
    let mut metrics = String::new();
    for _ in 0..10 {
        let (code, text) = get(&client, &format!("{base}/metrics"))
            .await
            .unwrap_or_default();
        assert_eq!(code, 200, "{text}");
        metrics = text;
        if outcomes
            .iter()
            .all(|o| counted(&metrics, SYNC, o) == committed(o))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for outcome in outcomes {
        assert_eq!(
            counted(&metrics, SYNC, outcome),
            committed(outcome),
            "{outcome}: /metrics and the runs table disagree\n{metrics}"
        );
    }

    // SIGHUP: a config that does not validate is refused, and the daemon
    // serves on; a valid one is taken, its new sync run at once.
    let pid = daemon.id().expect("pid").to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.clone()])
            .status()
            .expect("kill");
        assert!(sent.success());
    };
    let good = std::fs::read_to_string(&world.config).expect("config");
    std::fs::write(
        &world.config,
        good.replace("every = \"2s\"", "every = \"soon\""),
    )
    .expect("config");
    signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&client, &base).await.len(), 2, "serves on");
    let renamed = world.dir.join("out").join("renamed.jsonl");
    std::fs::write(
        &world.config,
        good.replace(&format!("name = \"{FILE_SYNC}\""), "name = \"renamed\"")
            .replace(&file.display().to_string(), &renamed.display().to_string()),
    )
    .expect("config");
    signal("HUP");
    wait_for(
        &client,
        &base,
        Duration::from_secs(30),
        "the new sync's run",
        |s| {
            s.len() == 2
                && s.iter()
                    .any(|x| x["sync"] == "renamed" && x["last_run"]["outcome"] == "completed")
        },
    )
    .await;
    let lines = std::fs::read_to_string(&renamed)
        .expect("the new file")
        .lines()
        .count();
    assert_eq!(lines, 1_000);

    // SIGTERM: stops at the next checkpoint and exits 0.
    signal("TERM");
    let exit = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap_or_else(|_| panic!("the daemon did not stop on SIGTERM"))
        .expect("exit status");
    assert_eq!(exit.code(), Some(0));

    // A pause outlives the daemon; resumed, the sync runs on its schedule.
    let before = completed_runs(&world, SYNC).await.len();
    let (mut daemon, base) = start_daemon(&world, &client).await;
    assert_eq!(of(&status(&client, &base).await, SYNC)["paused"], true);
    let (code, _) = post(&client, &format!("{base}/syncs/{SYNC}/resume")).await;
    assert_eq!(code, 200);
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while completed_runs(&world, SYNC).await.len() < before + 1 {
        assert!(
            tokio::time::Instant::now() < until,
            "the resumed sync never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = daemon.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap_or_else(|_| panic!("the daemon did not stop on SIGTERM"))
        .expect("exit status");
    assert_eq!(exit.code(), Some(0));

    // Never two runs of one sync at once.
    for (name, least) in [(SYNC, 3), (FILE_SYNC, 3), ("renamed", 1)] {
        let mut runs = completed_runs(&world, name).await;
        runs.sort_unstable();
        assert!(runs.len() >= least, "{name}: {runs:?}");
        for pair in runs.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{name}: runs overlap: {pair:?}");
        }
    }
}

/// `highwater serve` on a free port, once it answers `/health`; its address.
async fn start_daemon(world: &World, client: &reqwest::Client) -> (tokio::process::Child, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let daemon = tokio::process::Command::new(bin())
        .arg("--config")
        .arg(&world.config)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--concurrency",
            "2",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn serve: {e}"));
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(client, &format!("{base}/health")).await.map(|(s, _)| s) != Some(200) {
        assert!(
            tokio::time::Instant::now() < until,
            "the daemon never answered /health"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (daemon, base)
}

async fn post(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client
        .post(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The sum of `highwater_records_total` for `sync` and `outcome`, over kinds.
fn counted(metrics: &str, sync: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("highwater_records_total{"))
        .filter(|l| l.contains(&format!("sync=\"{sync}\"")))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
