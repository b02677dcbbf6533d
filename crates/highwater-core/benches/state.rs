//! What the state store costs per record, without any HTTP: the bookkeeping alone.
//!
//! Replays the engine's pattern on a fresh store, page by page (500 records): the
//! page's ledger lookup, then one commit holding the page's ledger rows, the
//! retirement of its intent batch, the announcement of a page ahead and the
//! checkpoint; the commit that brings the staged rows to `DEFAULT_MERGE_ROWS`
//! merges them into the ledger, and so does the run's completion (timed with the
//! commits). Then a second run over the same ids, as an unchanged re-sync sees
//! them: every lookup finds its record, and each commit holds only the checkpoint.
//! Ids arrive scattered, as they do from an API that pages by `updated_at`: each
//! page's rows land all over the ledger, not at its end.
//! Prints wall time and this process's CPU time (SQLite's thread included) per
//! record; asserts nothing. Then the same with the PostgreSQL store (a schema
//! of its own at `HW_BENCH_PG`, else the machine's `test` database), with the
//! database server's CPU time beside this process's, and once more with the
//! store fenced by a lease, as a run under `highwater serve` writes: the
//! difference per commit is what checking the lease costs.
//! `cargo bench -p highwater-core --bench state [-- PAGES]`.

use std::error::Error;
use std::time::{Duration, Instant};

use highwater_core::config::{
    DEFAULT_EVENT_RETENTION, DEFAULT_LEASE, DEFAULT_MERGE_ROWS as MERGE_ROWS, StateSpec,
    StoreLocation,
};
use highwater_core::secret::Secret;
use highwater_core::state::{
    Counters, Intent, IntentBatch, LedgerEntry, PageCommit, RunKind, RunRow, RunStatus, Store,
};
use jiff::Timestamp;
use serde_json::json;

#[path = "support/cpu.rs"]
mod cpu;
use cpu::{process_cpu, stat_cpu};

/// CPU time of every PostgreSQL server process on this machine so far (the
/// bench runs alone: their growth is what the store cost the server).
fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            stat_cpu(&stat)
                .filter(|(name, _)| *name == "postgres")
                .map(|(_, cpu)| cpu)
        })
        .sum()
}

const PAGE: usize = 500;

/// The ids of one page of `pages`: a fixed permutation of all of them, so that
/// consecutive records are far apart in id order.
fn ids(page: usize, pages: usize) -> Vec<String> {
    // A prime larger than any record count here: n ↦ n·p mod total is a bijection.
    const SCATTER: u64 = 2_654_435_761;
    let total = (pages * PAGE) as u64;
    (0..PAGE)
        .map(|i| (page * PAGE + i) as u64 * SCATTER % total)
        .map(|n| format!("inv_{n:08}"))
        .collect()
}

fn run_row(now: Timestamp) -> RunRow {
    RunRow {
        run_id: uuid::Uuid::now_v7().to_string(),
        sync: "bench".into(),
        kind: RunKind::Incremental,
        status: RunStatus::Open,
        lower_bound: None,
        watermark: now,
        started_at: now,
        updated_at: now,
        completed_at: None,
    }
}

struct Figures {
    wall: Duration,
    cpu: Duration,
    server: Duration,
    lookups: Duration,
    commits: Duration,
}

impl Figures {
    fn print(&self, label: &str, records: usize) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
        println!(
            "  {label:<34} {:>5.1} us wall  {:>5.1} us CPU{}  (lookups {:.1} us, commits {:.1} us) per record",
            per(self.wall),
            per(self.cpu),
            if self.server.is_zero() {
                String::new()
            } else {
                format!(" + {:.1} us server", per(self.server))
            },
            per(self.lookups),
            per(self.commits),
        );
    }
}

/// One run over `pages` pages; `first` writes every record, otherwise nothing changed.
async fn run(store: &Store, pages: usize, first: bool) -> Result<Figures, Box<dyn Error>> {
    let now = Timestamp::now();
    let run = run_row(now);
    store.begin_run(&run, &json!({"kind": "start"})).await?;
    let announce = |page: usize| IntentBatch {
        id: format!("{}-{page}", run.run_id),
        intents: ids(page, pages)
            .into_iter()
            .map(|source_id| Intent {
                source_id,
                version: Some(1),
                updated_at: now,
                settles_at: None,
            })
            .collect(),
    };
    if first {
        for page in [0, 1] {
            let commit = PageCommit {
                announce: Some(announce(page)),
                ..PageCommit::default()
            };
            store
                .commit_page("bench", &run.run_id, &commit, None, &Counters::default())
                .await?;
        }
    }
    let (started, cpu, server) = (Instant::now(), process_cpu(), postgres_cpu());
    let (mut lookups, mut commits) = (Duration::ZERO, Duration::ZERO);
    for page in 0..pages {
        let ids = ids(page, pages);
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let at = Instant::now();
        // External ids are the source ids here, as with `external_id = "{id}"`.
        let known = store.known("bench", &refs, &refs).await?;
        lookups += at.elapsed();
        if !first && known.ledger.len() != PAGE {
            return Err(format!("page {page}: {} of {PAGE} known", known.ledger.len()).into());
        }
        let commit = if first {
            PageCommit {
                announce: Some(announce(page + 2)),
                retire: vec![announce(page).id],
                ledger: ids
                    .iter()
                    .map(|id| LedgerEntry {
                        source_id: id.clone(),
                        external_id: id.clone(),
                        dest_id: None,
                        version: Some(1),
                        updated_at: now,
                        payload_hash: "0123456789abcdef0123456789abcdef".into(),
                        run_id: run.run_id.clone(),
                        deleted_at: None,
                    })
                    .collect(),
                merge: (page + 1) * PAGE % MERGE_ROWS < PAGE,
                ..PageCommit::default()
            }
        } else {
            PageCommit::default()
        };
        let cursor = json!({"kind": "token", "token": format!("page-{page}")});
        let at = Instant::now();
        store
            .commit_page(
                "bench",
                &run.run_id,
                &commit,
                Some(&cursor),
                &Counters::default(),
            )
            .await?;
        commits += at.elapsed();
    }
    let at = Instant::now();
    store
        .complete_run(
            &run.run_id,
            &json!({"kind": "end"}),
            &Counters::default(),
            &[],
        )
        .await?;
    commits += at.elapsed();
    Ok(Figures {
        wall: started.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
        server: postgres_cpu().saturating_sub(server),
        lookups,
        commits,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let pages = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200);
    let dir = std::env::temp_dir().join(format!("highwater-state-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir.join("state.db")).await?;
    let records = pages * PAGE;
    println!("state store, {records} records in pages of {PAGE}, synchronous = FULL");
    let result = async {
        run(&store, pages, true)
            .await?
            .print("first run (every record written)", records);
        run(&store, pages, false)
            .await?
            .print("re-run (every record unchanged)", records);
        Ok::<(), Box<dyn Error>>(())
    }
    .await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    postgres(pages).await
}

/// The same runs on the PostgreSQL store, plain and fenced by a lease.
async fn postgres(pages: usize) -> Result<(), Box<dyn Error>> {
    let url = std::env::var("HW_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let records = pages * PAGE;
    println!("PostgreSQL state store, {records} records in pages of {PAGE}");
    let mut first_commits = [Duration::ZERO; 2];
    for (fenced, label) in [(false, "plain"), (true, "fenced by a lease")] {
        let schema = format!("hw_bench_state_{}", std::process::id());
        let spec = StateSpec {
            store: StoreLocation::Postgres {
                url: Secret::new(url.clone()),
                schema: schema.clone(),
            },
            lease: DEFAULT_LEASE,
            merge_rows: MERGE_ROWS,
            event_retention: DEFAULT_EVENT_RETENTION,
        };
        let store = Store::connect(&spec).await?;
        let lock = store.lock_run("bench", RunKind::Incremental, false).await?;
        let writer = if fenced {
            store.fenced(&lock)
        } else {
            store.clone()
        };
        let result = async {
            let first = run(&writer, pages, true).await?;
            first.print(&format!("first run, {label}"), records);
            first_commits[usize::from(fenced)] = first.commits;
            run(&writer, pages, false)
                .await?
                .print(&format!("re-run, {label}"), records);
            Ok::<(), Box<dyn Error>>(())
        }
        .await;
        drop(writer);
        store.close_releasing(lock).await;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut conn)
            .await?;
        result?;
    }
    // Commits per first run: one per page, and the completion.
    let per_commit = |d: Duration| d.as_secs_f64() * 1e6 / (pages + 1) as f64;
    println!(
        "  lease check per commit: {:.0} us ({:.0} us fenced, {:.0} us plain)",
        per_commit(first_commits[1]) - per_commit(first_commits[0]),
        per_commit(first_commits[1]),
        per_commit(first_commits[0]),
    );
    Ok(())
}
