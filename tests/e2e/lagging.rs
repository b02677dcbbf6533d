//! A source served by a lagging replica: a scripted API on 127.0.0.1 that answers
//! with a record's previous version at the place its current version holds in the
//! listing, as many times as the test says. The ledger already holds the previous
//! version, so taking the lagging copy would resolve it as unchanged and let the
//! watermark pass the current one. The destination is a JSON Lines file, read back
//! as the user would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::util::{describe, fresh_dir, report, stderr};

#[derive(Debug, Clone)]
struct Copy {
    at: Timestamp,
    version: u64,
}

#[derive(Debug, Default)]
struct Source {
    /// The current version of each record.
    current: Vec<(String, Copy)>,
    /// The version each record had before, served while its count in `lagging`
    /// lasts.
    previous: HashMap<String, Copy>,
    lagging: HashMap<String, u32>,
    /// Whether `updated_after` filters; an API that ignores it answers with the
    /// whole listing.
    honors_bound: bool,
    requests: u32,
}

type Shared = Arc<Mutex<Source>>;

fn time(query: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>, StatusCode> {
    query
        .get(name)
        .map(|t| t.parse::<Timestamp>().map_err(|_| StatusCode::BAD_REQUEST))
        .transpose()
}

/// Sorted by `(updated_at, id)`. `updated_after` and the keyset's `since` are
/// inclusive on the first page; `(since, after_id)` is strict; `offset` skips.
async fn listing(
    State(source): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let after = time(&query, "updated_after")?;
    let since = time(&query, "since")?;
    let after_id = query.get("after_id").cloned();
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<usize>().ok());
    let (offset, limit) = (number("offset").unwrap_or(0), number("limit").unwrap_or(2));
    let mut source = source.lock().unwrap_or_else(|e| e.into_inner());
    source.requests += 1;
    let mut listed: Vec<(String, Copy)> = source
        .current
        .iter()
        .filter(|(_, c)| !source.honors_bound || after.is_none_or(|a| c.at >= a))
        .filter(|(id, c)| match (since, &after_id) {
            (None, _) => true,
            (Some(since), None) => c.at >= since,
            (Some(since), Some(after)) => (c.at, id) > (since, after),
        })
        .cloned()
        .collect();
    listed.sort_by(|a, b| (a.1.at, &a.0).cmp(&(b.1.at, &b.0)));
    let mut data = Vec::new();
    for (id, copy) in listed.into_iter().skip(offset).take(limit) {
        let served = match source.lagging.get_mut(&id) {
            Some(left) if *left > 0 => {
                *left -= 1;
                source.previous.get(&id).cloned().unwrap_or(copy)
            }
            _ => copy,
        };
        data.push(json!({
            "id": id,
            "version": served.version,
            "updated_at": served.at.to_string(),
        }));
    }
    Ok(Json(json!({ "data": data })))
}

struct Api {
    source: Shared,
    config: PathBuf,
    out_file: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start(name: &str, pagination: &str, source: Source) -> Self {
        let source: Shared = Arc::new(Mutex::new(source));
        let app = axum::Router::new()
            .route("/invoices", get(listing))
            .with_state(Arc::clone(&source));
        let (addr, server) = crate::util::serve_local(app).await;
        let dir = fresh_dir(name);
        let out_file = dir.join("invoices.jsonl");
        let config = dir.join("highwater.toml");
        let start = Timestamp::now() - SignedDuration::from_hours(2);
        let text = format!(
            r#"{state}

[[sync]]
name = "invoices"

[sync.source]
base_url = "http://{addr}"
path = "/invoices"
version_field = "version"
page_size = 2
page_size_param = "limit"
lower_bound_param = "updated_after"
lookback = "1m"
start = "{start}"
timeout = "1s"
{pagination}

[sync.mapping]
external_id = "{{id}}"
fields = {{ version = "version" }}

[sync.destination]
type = "jsonl"
file = "{file}"
"#,
            state = crate::util::state_table(&dir),
            file = out_file.display(),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
        Api {
            source,
            config,
            out_file,
            server,
        }
    }

    async fn run(&self) -> std::process::Output {
        crate::util::highwater_at(&self.config, &["run", "invoices", "--json"]).await
    }

    async fn run_ok(&self) -> Value {
        let out = self.run().await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        report(&out)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Source) -> T) -> T {
        f(&mut self.source.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Each record's version at the destination.
    fn versions(&self) -> HashMap<String, u64> {
        std::fs::read_to_string(&self.out_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|row| {
                Some((
                    row["external_id"].as_str()?.to_owned(),
                    row["version"].as_u64()?,
                ))
            })
            .collect()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const KEYSET: &str =
    r#"pagination = { style = "keyset", updated_param = "since", id_param = "after_id" }"#;
const OFFSET: &str = r#"pagination = { style = "offset", offset_param = "offset", overlap = 1 }"#;

/// Five records at version 1, an hour old; the first run writes them all. Then
/// inv_3 changes (version 2, stamped now) and its previous copy is served
/// `lagging` times at the new place.
async fn changed_under_a_lagging_replica(name: &str, pagination: &str, honors_bound: bool) -> Api {
    let hour_ago = Timestamp::now() - SignedDuration::from_hours(1);
    let current = (1..=5)
        .map(|i| {
            let at = hour_ago + SignedDuration::from_secs(i);
            (format!("inv_{i}"), Copy { at, version: 1 })
        })
        .collect();
    let api = Api::start(
        name,
        pagination,
        Source {
            current,
            honors_bound,
            ..Source::default()
        },
    )
    .await;
    let first = api.run_ok().await;
    assert_eq!(first["counters"]["written"], 5, "{first}");
    api.with(|s| {
        let (_, copy) = &mut s.current[2];
        s.previous.insert("inv_3".into(), copy.clone());
        *copy = Copy {
            at: Timestamp::now() - SignedDuration::from_millis(500),
            version: 2,
        };
        s.requests = 0;
    });
    api
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_copy_before_the_lower_bound_is_read_again_until_the_current_one_comes() {
    for (name, pagination) in [("lagging-keyset", KEYSET), ("lagging-offset", OFFSET)] {
        let api = changed_under_a_lagging_replica(name, pagination, true).await;
        api.with(|s| s.lagging.insert("inv_3".into(), 2));
        let second = api.run_ok().await;
        assert_eq!(second["counters"]["written"], 1, "{name}: {second}");
        assert_eq!(
            api.versions().get("inv_3"),
            Some(&2),
            "{name}: the lagging copy was taken as unchanged"
        );
        let left = api.with(|s| s.lagging.get("inv_3").copied());
        assert_eq!(left, Some(0), "{name}: both lagging answers were read");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyset_source_that_keeps_lagging_stops_the_run_at_its_checkpoint() {
    let api = changed_under_a_lagging_replica("lagging-stuck", KEYSET, true).await;
    api.with(|s| s.lagging.insert("inv_3".into(), u32::MAX));
    let out = api.run().await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        text.contains("inv_3") && text.contains("replica") && text.contains("5 times"),
        "the error does not name the record and the lagging replica: {text}"
    );
    assert_eq!(api.versions().get("inv_3"), Some(&1));

    // The replica catches up: the run resumes from where it stopped, before inv_3.
    api.with(|s| s.lagging.clear());
    let resumed = api.run_ok().await;
    assert_eq!(resumed["counters"]["written"], 1, "{resumed}");
    assert_eq!(api.versions().get("inv_3"), Some(&2));
}

/// An API that ignores `updated_after` answers every run with its whole listing,
/// every old record stamped before the bound. That is its answer, not a lag: the
/// run completes, says so once, and reads the rest of its pages once each.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_that_ignores_the_lower_bound_is_read_through_after_one_warning() {
    let api = changed_under_a_lagging_replica("lagging-ignored", OFFSET, false).await;
    let out = api.run().await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let second = report(&out);
    assert_eq!(second["counters"]["written"], 1, "{second}");
    assert_eq!(second["counters"]["unchanged"], 4, "{second}");
    let err = stderr(&out);
    assert_eq!(
        err.matches("bound_not_honored").count(),
        1,
        "one warning expected: {err}"
    );
    // The first page five times, then the four others once each (each step is
    // the page size less the overlap of one).
    let requests = api.with(|s| s.requests);
    assert_eq!(requests, 9, "{err}");
}
