//! Window bounds against an API that reads them strictly: a small scripted API on
//! 127.0.0.1 whose `updated_after` (and keyset `since`) means `>`, with a record
//! stamped exactly on the first run's lower bound. The destination is a JSON Lines
//! file, read back as the user would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::util::{describe, fresh_dir, report};

/// The config's `start`, and the stamp of the record on it.
const START: &str = "2024-01-01T00:00:00Z";

/// The lower bound each listing started from, in the order the requests came.
type Sent = Arc<Mutex<Vec<String>>>;

fn invoices() -> Vec<(Timestamp, &'static str)> {
    [(START, "inv_1"), ("2024-01-02T00:00:00Z", "inv_2")]
        .into_iter()
        .filter_map(|(at, id)| Some((at.parse().ok()?, id)))
        .collect()
}

fn time(query: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>, StatusCode> {
    query
        .get(name)
        .map(|t| t.parse::<Timestamp>().map_err(|_| StatusCode::BAD_REQUEST))
        .transpose()
}

fn answer(records: impl Iterator<Item = (Timestamp, &'static str)>) -> Json<Value> {
    let data: Vec<Value> = records
        .map(|(at, id)| json!({ "id": id, "updated_at": at.to_string(), "amount": 100 }))
        .collect();
    Json(json!({ "data": data, "next_cursor": null }))
}

/// `updated_after` is strict, `updated_before` inclusive; one page holds everything.
async fn window_page(
    State(sent): State<Sent>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let after = time(&query, "updated_after")?;
    let before = time(&query, "updated_before")?;
    sent.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(query.get("updated_after").cloned().unwrap_or_default());
    Ok(answer(invoices().into_iter().filter(|(at, _)| {
        after.is_none_or(|after| *at > after) && before.is_none_or(|before| *at <= before)
    })))
}

/// Keyset: `(updated_at, id) > (since, after_id)`, and `updated_at > since` on the
/// first page, which has no id yet.
async fn keyset_page(
    State(sent): State<Sent>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let since = time(&query, "since")?;
    let after_id = query.get("after_id").cloned();
    if after_id.is_none() {
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(query.get("since").cloned().unwrap_or_default());
    }
    Ok(answer(invoices().into_iter().filter(|(at, id)| {
        match (since, &after_id) {
            (None, _) => true,
            (Some(since), None) => *at > since,
            (Some(since), Some(after)) => (*at, *id) > (since, after.as_str()),
        }
    })))
}

async fn serve(sent: &Sent) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/invoices", get(window_page))
        .route("/keyset/invoices", get(keyset_page))
        .with_state(Arc::clone(sent));
    crate::util::serve_local(app).await
}

/// Runs one sync to completion in a fresh directory; returns the ids that reached
/// the destination, in file order.
async fn sync_once(name: &str, addr: SocketAddr, source: &str) -> Vec<String> {
    let dir = fresh_dir(name);
    let out_file = dir.join("contacts.jsonl");
    let config = dir.join("highwater.toml");
    let text = format!(
        r#"{state}

[[sync]]
name = "invoices"

[sync.source]
base_url = "http://{addr}"
start = "{START}"
{source}

[sync.mapping]
external_id = "{{id}}"
fields = {{ amount = "amount" }}

[sync.destination]
type = "jsonl"
file = "{file}"
"#,
        state = crate::util::state_table(&dir),
        file = out_file.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
    let out = crate::util::highwater_at(&config, &["run", "invoices", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let written = report(&out)["counters"]["written"].clone();
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|row| row["external_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(written, ids.len(), "{text}");
    ids
}

fn taken(sent: &Sent) -> Vec<String> {
    std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_on_a_strict_lower_bound_arrives_once_the_bound_is_declared_exclusive() {
    let sent = Sent::default();
    let (addr, server) = serve(&sent).await;
    let source = r#"path = "/invoices"
lower_bound_param = "updated_after"
upper_bound_param = "updated_before"
pagination = { style = "cursor", token_path = "next_cursor", token_param = "cursor" }"#;

    // Sent as is, the API's `>` leaves out the record stamped on the bound.
    let ids = sync_once("bounds-inclusive", addr, source).await;
    assert_eq!(ids, ["inv_2"], "the scripted API is not strict");
    assert_eq!(taken(&sent), [START]);

    let strict = format!("{source}\nlower_bound_exclusive = true");
    let ids = sync_once("bounds-exclusive", addr, &strict).await;
    assert_eq!(
        ids,
        ["inv_1", "inv_2"],
        "the record on the lower bound was lost"
    );
    assert_eq!(taken(&sent), ["2023-12-31T23:59:59Z"]);
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn keyset_widens_its_first_lower_bound_when_the_api_reads_it_strictly() {
    let sent = Sent::default();
    let (addr, server) = serve(&sent).await;
    let source = r#"path = "/keyset/invoices"
pagination = { style = "keyset", updated_param = "since", id_param = "after_id" }"#;

    let ids = sync_once("bounds-keyset-inclusive", addr, source).await;
    assert_eq!(ids, ["inv_2"], "the scripted API is not strict");

    let strict = format!("{source}\nlower_bound_exclusive = true");
    let ids = sync_once("bounds-keyset-exclusive", addr, &strict).await;
    assert_eq!(
        ids,
        ["inv_1", "inv_2"],
        "the record on the lower bound was lost"
    );
    assert_eq!(taken(&sent), [START, "2023-12-31T23:59:59Z"]);
    server.abort();
}

/// Jira's search: the window goes inside the `jql` query, as wall times in the
/// user's time zone (Paris here) to the minute, compared as Jira does: a
/// record updated at 14:05:30 is after "14:05" and not before it.
struct Jira {
    /// Each issue's id and when it was last updated.
    issues: Vec<(String, Timestamp)>,
    /// The `jql` of each search, in the order they came.
    asked: Vec<String>,
}

type JiraState = Arc<Mutex<Jira>>;

fn jql_time(jql: &str, before: &str) -> Result<Option<Timestamp>, StatusCode> {
    let Some(at) = jql.find(before) else {
        return Ok(None);
    };
    let text = jql[at + before.len()..]
        .split('"')
        .next()
        .unwrap_or_default();
    let civil = jiff::civil::DateTime::strptime("%Y/%m/%d %H:%M", text)
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    civil
        .in_tz("Europe/Paris")
        .map(|z| Some(z.timestamp()))
        .map_err(|_| StatusCode::BAD_REQUEST)
}

async fn jira_search(
    State(jira): State<JiraState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let jql = query.get("jql").cloned().unwrap_or_default();
    let from = jql_time(&jql, "updated >= \"")?;
    let to = jql_time(&jql, "updated <= \"")?;
    let start: usize = query
        .get("startAt")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let max: usize = query
        .get("maxResults")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut jira = jira.lock().unwrap_or_else(|e| e.into_inner());
    jira.asked.push(jql);
    let mut listed: Vec<(Timestamp, String)> = jira
        .issues
        .iter()
        .filter(|(_, at)| from.is_none_or(|f| *at >= f) && to.is_none_or(|t| *at <= t))
        .map(|(id, at)| (*at, id.clone()))
        .collect();
    listed.sort();
    let issues: Vec<Value> = listed
        .iter()
        .skip(start)
        .take(max)
        .map(|(at, id)| {
            // Jira writes its times with a numeric offset and no colon.
            let updated = at
                .in_tz("Europe/Paris")
                .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%.3f%z").to_string())
                .unwrap_or_default();
            json!({ "id": id, "key": format!("HW-{id}"), "fields": { "updated": updated, "summary": id } })
        })
        .collect();
    Ok(Json(json!({
        "startAt": start, "maxResults": max, "total": listed.len(), "issues": issues
    })))
}

/// The time of the lower bound in each search's `jql`, as written.
fn lower_bounds(jira: &JiraState) -> Vec<String> {
    let mut jira = jira.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut jira.asked)
        .iter()
        .filter_map(|jql| {
            let at = jql.find("updated >= \"")? + "updated >= \"".len();
            jql[at..].split('"').next().map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_inside_a_query_language_reads_only_what_changed_and_loses_nothing() {
    let old = |n: i64| {
        let at = Timestamp::from_second(1_717_200_000 + n * 3_600).unwrap_or(Timestamp::UNIX_EPOCH);
        (format!("{n}"), at)
    };
    let jira: JiraState = Arc::new(Mutex::new(Jira {
        issues: (0..50).map(old).collect(),
        asked: Vec::new(),
    }));
    let app = axum::Router::new()
        .route("/rest/api/2/search", get(jira_search))
        .with_state(Arc::clone(&jira));
    let (addr, server) = crate::util::serve_local(app).await;
    let (config, file) = crate::util::jsonl_sync(
        &fresh_dir("bounds-jql"),
        "issues",
        addr,
        &format!(
            r#"path = "/rest/api/2/search"
params = {{ jql = 'updated >= "{{lower}}" AND updated <= "{{upper}}" ORDER BY updated ASC' }}
time_format = "%Y/%m/%d %H:%M"
timezone = "Europe/Paris"
records_path = "issues"
updated_at_field = "fields.updated"
start = "{START}"
page_size = 20
page_size_param = "maxResults"
pagination = {{ style = "offset", offset_param = "startAt" }}"#
        ),
        r#"external_id = "{id}"
fields = { summary = "fields.summary", updated = "fields.updated" }"#,
    );
    let run = || async {
        let out = crate::util::highwater_at(&config, &["run", "issues", "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        report(&out)
    };

    // Probe shows the parameter that carries the window, with it written in.
    let probed = crate::util::highwater_at(&config, &["probe", "issues", "--json"]).await;
    let shown = crate::util::stdout(&probed);
    assert!(
        shown.contains(r#"updated >= \"2024/01/01 01:00\""#),
        "{}",
        describe(&probed)
    );
    lower_bounds(&jira);

    let first = run().await;
    assert_eq!(first["counters"]["written"], 50, "{first}");
    let bounds = lower_bounds(&jira);
    assert_eq!(
        bounds.first().map(String::as_str),
        Some("2024/01/01 01:00"),
        "the start, in Paris's time"
    );

    // Five issues created and two updated in the last seconds, within the
    // minute the next run's watermark falls in.
    {
        let mut jira = jira.lock().unwrap_or_else(|e| e.into_inner());
        let now = Timestamp::now();
        for n in 0..5 {
            jira.issues.push((format!("new{n}"), now));
        }
        for (_, at) in jira.issues.iter_mut().take(2) {
            *at = now;
        }
    }
    let second = run().await;
    assert_eq!(
        (&second["counters"]["read"], &second["counters"]["written"]),
        (&json!(7), &json!(7)),
        "the second run reads what changed, all of it: {second}"
    );
    let bounds = lower_bounds(&jira);
    assert!(
        bounds.iter().all(|b| b.as_str() > "2024/12"),
        "the second run's lower bound is the first's watermark less the lookback: {bounds:?}"
    );
    let rows = std::fs::read_to_string(&file).unwrap_or_default();
    let rows: Vec<Value> = rows
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(rows.len(), 55);
    let updated_now = rows
        .iter()
        .filter(|r| ["0", "1"].contains(&r["external_id"].as_str().unwrap_or_default()))
        .filter(|r| {
            !r["updated"]
                .as_str()
                .unwrap_or_default()
                .starts_with("2024")
        })
        .count();
    assert_eq!(updated_now, 2, "the updated issues hold their new version");
    server.abort();
}

/// Xero's lists: the window's lower bound in the `If-Modified-Since` header
/// (an HTTP date), numbered pages of 100, and times in .NET's JSON form.
struct Xero {
    contacts: Vec<(String, Timestamp)>,
    /// The `If-Modified-Since` of each request, in the order they came.
    since: Vec<String>,
}

type XeroState = Arc<Mutex<Xero>>;

async fn xero_contacts(
    State(xero): State<XeroState>,
    headers: axum::http::HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let since_text = headers
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let since = match since_text.as_str() {
        "" => None,
        text => Some(
            jiff::fmt::strtime::parse("%a, %d %b %Y %H:%M:%S GMT", text)
                .and_then(|t| t.to_datetime())
                .and_then(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
                .map_err(|_| StatusCode::BAD_REQUEST)?,
        ),
    };
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let mut xero = xero.lock().unwrap_or_else(|e| e.into_inner());
    xero.since.push(since_text);
    let mut listed: Vec<(Timestamp, String)> = xero
        .contacts
        .iter()
        .filter(|(_, at)| since.is_none_or(|s| *at >= s))
        .map(|(id, at)| (*at, id.clone()))
        .collect();
    listed.sort();
    let contacts: Vec<Value> = listed
        .iter()
        .skip((page.max(1) - 1) * 100)
        .take(100)
        .map(|(at, id)| {
            json!({
                "ContactID": id,
                "Name": format!("contact {id}"),
                "UpdatedDateUTC": format!("/Date({}+0000)/", at.as_millisecond()),
            })
        })
        .collect();
    Ok(Json(json!({ "Contacts": contacts })))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_in_a_header_reads_only_what_changed() {
    let old = |n: i64| {
        let at = Timestamp::from_second(1_717_200_000 + n * 600).unwrap_or(Timestamp::UNIX_EPOCH);
        (format!("c-{n:04}"), at)
    };
    let xero: XeroState = Arc::new(Mutex::new(Xero {
        contacts: (0..250).map(old).collect(),
        since: Vec::new(),
    }));
    let app = axum::Router::new()
        .route("/api.xro/2.0/Contacts", get(xero_contacts))
        .with_state(Arc::clone(&xero));
    let (addr, server) = crate::util::serve_local(app).await;
    let (config, file) = crate::util::jsonl_sync(
        &fresh_dir("bounds-header"),
        "contacts",
        addr,
        &format!(
            r#"path = "/api.xro/2.0/Contacts"
headers = {{ "If-Modified-Since" = "{{lower}}", "Xero-Tenant-Id" = "t-1" }}
time_format = "%a, %d %b %Y %H:%M:%S GMT"
params = {{ order = "UpdatedDateUTC ASC" }}
records_path = "Contacts"
id_field = "ContactID"
updated_at_field = "UpdatedDateUTC"
start = "{START}"
page_size = 100
page_size_param = ""
pagination = {{ style = "page", page_param = "page" }}"#
        ),
        r#"external_id = "{ContactID}"
fields = { name = "Name" }"#,
    );
    let run = || async {
        let out = crate::util::highwater_at(&config, &["run", "contacts", "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        report(&out)
    };
    let since = || std::mem::take(&mut xero.lock().unwrap_or_else(|e| e.into_inner()).since);

    let first = run().await;
    assert_eq!(first["counters"]["written"], 250, "{first}");
    let sent = since();
    assert!(
        sent.iter().all(|s| s == "Mon, 01 Jan 2024 00:00:00 GMT"),
        "{sent:?}"
    );

    {
        let mut xero = xero.lock().unwrap_or_else(|e| e.into_inner());
        let now = Timestamp::now();
        xero.contacts.push(("c-new".into(), now));
        if let Some(contact) = xero.contacts.get_mut(3) {
            contact.1 = now;
        }
    }
    let second = run().await;
    server.abort();
    // The contact touched keeps its name: read, and unchanged.
    assert_eq!(
        (
            &second["counters"]["read"],
            &second["counters"]["written"],
            &second["counters"]["unchanged"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "{second}"
    );
    let sent = since();
    assert!(
        sent.iter().all(|s| !s.contains("2024")),
        "the second run asks since the first's watermark less the lookback: {sent:?}"
    );
    let rows = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(rows.lines().count(), 251);
}
