//! Three `highwater serve` workers sharing one PostgreSQL state store, with a
//! sync into the simulated CRM and two into JSON Lines files: each sync runs
//! on one worker at a time. The worker holding the CRM sync is SIGKILLed
//! mid-run, and the next one to hold it is SIGSTOPped past its lease; another
//! takes the run over and finishes it, exact. The stopped worker, resumed,
//! sends nothing to the CRM and commits nothing, and says why. Two workers
//! whose syncs call one API keep to their share of its limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use highwater_core::state::{InvocationOutcome, RunKind};
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, bin};

const LEASE: &str = "3s";
const RECORDS: usize = 2_000;

/// A worker process and the file its log goes to.
struct Worker {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

fn signal(pid: u32, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -{name} {pid}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

fn start_worker(world: &World, n: usize) -> Worker {
    start_worker_with(world, n, 2)
}

fn start_worker_with(world: &World, n: usize, concurrency: usize) -> Worker {
    let log = world.dir.join(format!("worker-{n}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = tokio::process::Command::new(bin())
        .arg("--config")
        .arg(&world.config)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn serve: {e}"));
    let pid = child.id().expect("pid");
    Worker { child, pid, log }
}

/// Every sync on an hourly schedule (so each runs once, at start), and two
/// more of the same source into JSON Lines files.
fn three_syncs(world: &World) -> [(String, PathBuf); 2] {
    let text = std::fs::read_to_string(&world.config).expect("config");
    let schedule = "schedule = { every = \"1h\" }\n";
    let start = text.find("[[sync]]").expect("a sync");
    let (from, to) = (
        text.find("[sync.destination]").expect("destination"),
        text.find("[sync.retry]").expect("retry"),
    );
    let mut out = text.replacen(
        &format!("name = \"{SYNC}\"\n"),
        &format!("name = \"{SYNC}\"\n{schedule}"),
        1,
    );
    let files = ["a", "b"].map(|n| {
        let name = format!("invoices_{n}");
        let file = world.dir.join(format!("{name}.jsonl"));
        let block = format!(
            "{}[sync.destination]\ntype = \"jsonl\"\nfile = \"{}\"\n\n{}",
            &text[start..from],
            file.display(),
            &text[to..]
        )
        .replacen(
            &format!("name = \"{SYNC}\"\n"),
            &format!("name = \"{name}\"\n{schedule}"),
            1,
        );
        out.push('\n');
        out.push_str(&block);
        (name, file)
    });
    std::fs::write(&world.config, out).expect("config");
    files
}

/// The pid of the worker holding the CRM sync's lease once the CRM holds at
/// least `written` records, other than `not`.
async fn holder_past(world: &World, written: usize, not: Option<u32>) -> u32 {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let store = world.store().await;
        let holder = store.lock_holder(SYNC, RunKind::Incremental).await;
        store.close().await;
        let pid = holder
            .as_deref()
            .and_then(|h| h.split(' ').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && Some(pid) != not
            && world.sim.dest_count() >= written
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no worker other than {not:?} held the sync past {written} records (holder {holder:?}, {} written)",
            world.sim.dest_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_completed(world: &World, sync: &str, limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let store = world.store().await;
        let done = store
            .last_completed(sync, RunKind::Incremental)
            .await
            .expect("runs");
        store.close().await;
        if done.is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{sync} did not complete within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_take_over_from_a_killed_and_a_paused_worker_and_never_run_a_sync_twice() {
    let mut sim = SimConfig::new(71, RECORDS);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    // About 100 writes a second at concurrency 2: the CRM sync takes long
    // enough for a kill, a takeover and a pause to land mid-run.
    sim.dest.latency = Duration::from_millis(20);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.concurrency = 2;
    let world = World::start("workers", sim, &setup).await;
    world.use_postgres_state(LEASE);
    let files = three_syncs(&world);
    let mut workers: Vec<Worker> = (0..3).map(|n| start_worker(&world, n)).collect();

    // The first holder dies mid-run.
    let first = holder_past(&world, 200, None).await;
    signal(first, "KILL");
    let at_kill = world.sim.dest_count();
    assert!(
        at_kill > 0 && at_kill < RECORDS,
        "the kill did not land mid-run: {at_kill} of {RECORDS} written"
    );

    // Another resumes the run; paused past its lease, it loses it.
    let second = holder_past(&world, at_kill + 200, Some(first)).await;
    signal(second, "STOP");
    let at_stop = world.sim.dest_count();
    assert!(
        at_stop < RECORDS,
        "the pause did not land mid-run: {at_stop} of {RECORDS} written"
    );

    // The third takes over once the lease has expired, and finishes.
    wait_completed(&world, SYNC, Duration::from_secs(90)).await;
    world.assert_exact().await;

    // Woken, the paused worker starts no request and commits nothing. A
    // write that had passed its last lease check when the pause began (at
    // most one per write slot) still leaves as it wakes: no check in this
    // process can stop bytes already on their way to the socket. It carries
    // a version the run read, and changes nothing.
    let store = world.store().await;
    let history = store.runs(SYNC, 100).await.expect("history");
    let requests = world.sim.stats().dest.requests;
    signal(second, "CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight = world.sim.stats().dest.requests - requests;
    assert!(
        in_flight <= u64::from(setup.concurrency),
        "the worker woken past its lease sent {in_flight} requests, more than its {} write slots held",
        setup.concurrency
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.sim.stats().dest.requests,
        requests + in_flight,
        "the worker woken past its lease started requests"
    );
    world.assert_exact().await;
    assert_eq!(
        store.runs(SYNC, 100).await.expect("history"),
        history,
        "the worker woken past its lease changed the run history"
    );
    let woken = workers
        .iter()
        .find(|w| w.pid == second)
        .map(|w| log_of(&w.log))
        .unwrap_or_default();
    assert!(
        woken.contains("lease"),
        "the woken worker did not say it lost its lease:\n{woken}"
    );

    // One run of the CRM sync, resumed by each new holder in turn: every
    // invocation before the last was cut short (killed, or paused and taken
    // over) before the next began, and the last completed it.
    let incremental: Vec<_> = history
        .iter()
        .filter(|r| r.run.kind == RunKind::Incremental)
        .collect();
    assert_eq!(incremental.len(), 1, "{incremental:#?}");
    let invocations = &incremental[0].invocations;
    assert!(invocations.len() >= 3, "{invocations:#?}");
    let (last, earlier) = invocations.split_last().expect("invocations");
    assert_eq!(last.outcome, Some(InvocationOutcome::Completed));
    for (i, invocation) in earlier.iter().enumerate() {
        assert_eq!(
            invocation.outcome,
            Some(InvocationOutcome::Crashed),
            "{invocations:#?}"
        );
        assert!(invocation.started_at <= invocations[i + 1].started_at);
    }

    // The file syncs ran once each, on whichever worker took them, exact.
    for (name, file) in &files {
        wait_completed(&world, name, Duration::from_secs(30)).await;
        let runs = store.runs(name, 100).await.expect("history");
        assert_eq!(runs.len(), 1, "{name} ran more than once: {runs:#?}");
        let lines = std::fs::read_to_string(file)
            .expect("the file")
            .lines()
            .count();
        assert_eq!(lines, RECORDS, "{name}");
    }
    store.close().await;

    for worker in &mut workers {
        if worker.pid != first {
            signal(worker.pid, "TERM");
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), worker.child.wait()).await;
    }
}

/// Two workers, each running one of two syncs into one CRM that lets 40
/// requests a second through, both syncs configured with that limit: each
/// worker keeps to half of it while both hold a sync on the CRM, so the CRM
/// turns away at most the requests of one incident, where two workers each
/// at the whole limit would meet one after another.
#[tokio::test(flavor = "multi_thread")]
async fn workers_on_one_api_share_its_limit() {
    const LIMIT: f64 = 40.0;
    let mut sim = SimConfig::new(73, 200);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    sim.dest.rate_limit_rps = Some(LIMIT);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.concurrency = 4;
    setup.dest_extra = format!("rate_limit = {LIMIT}");
    let world = World::start("workers-share", sim, &setup).await;
    world.use_postgres_state(LEASE);
    // A second sync of the same source into the same CRM, under other
    // external ids; both hourly, so each runs once, at start.
    let text = std::fs::read_to_string(&world.config).expect("config");
    let schedule = "schedule = { every = \"1h\" }\n";
    let start = text.find("[[sync]]").expect("a sync");
    let copy = text[start..]
        .replacen(
            &format!("name = \"{SYNC}\"\n"),
            &format!("name = \"copy\"\n{schedule}"),
            1,
        )
        .replacen("external_id = \"{id}\"", "external_id = \"copy-{id}\"", 1);
    let text = text.replacen(
        &format!("name = \"{SYNC}\"\n"),
        &format!("name = \"{SYNC}\"\n{schedule}"),
        1,
    );
    std::fs::write(&world.config, format!("{text}\n{copy}")).expect("config");
    let mut workers: Vec<Worker> = (0..2).map(|n| start_worker_with(&world, n, 1)).collect();
    wait_completed(&world, SYNC, Duration::from_secs(90)).await;
    wait_completed(&world, "copy", Duration::from_secs(90)).await;

    // Each daemon runs one sync at a time: runs that overlap ran on two workers.
    let store = world.store().await;
    let span = |runs: Vec<highwater_core::state::RunRecord>| {
        let run = &runs.first().expect("a run").run;
        (run.started_at, run.completed_at.expect("completed"))
    };
    let a = span(store.runs(SYNC, 10).await.expect("history"));
    let b = span(store.runs("copy", 10).await.expect("history"));
    store.close().await;
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the two syncs did not run at once: {a:?} {b:?}"
    );
    let stats = world.sim.stats().dest;
    assert!(
        stats.rate_limit_incidents <= 1,
        "the CRM turned requests away in {} incidents ({} answers of 429)",
        stats.rate_limit_incidents,
        stats.rate_limited
    );
    for worker in &mut workers {
        signal(worker.pid, "TERM");
        let _ = tokio::time::timeout(Duration::from_secs(20), worker.child.wait()).await;
    }
}
