//! Sources shaped like real APIs' listings, served on 127.0.0.1: Stripe's
//! (paged after the last record's id), OData's (`@odata.nextLink`),
//! Zendesk's incremental export, Asana's expiring offsets, a GraphQL API,
//! QuickBooks' query (the position in the query's text), NetSuite's SuiteQL
//! (a POSTed query, its pages in the URL), and a search that
//! pages no further. The destination is a JSON Lines file.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::{Value, json};

use crate::scripted::jsonl_rows;
use crate::util::{describe, fresh_dir, report, stderr};

/// Stripe's lists: newest first, each page after the id of the last record of
/// the one before (`starting_after`), `has_more` saying whether one follows,
/// `created` in epoch seconds and bounded by `created[gte]`.
/// The customers a Stripe-shaped list serves, and the `starting_after` of
/// each request, in turn.
type Customers = (Arc<Vec<Value>>, Arc<Mutex<Vec<String>>>);

async fn stripe_customers(
    State((customers, asked)): State<Customers>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10);
    let since: i64 = query
        .get("created[gte]")
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let after = query.get("starting_after").cloned();
    asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(after.clone().unwrap_or_default());
    let mut listed: Vec<&Value> = customers
        .iter()
        .filter(|c| c["created"].as_i64().is_some_and(|at| at >= since))
        .collect();
    listed.sort_by_key(|c| std::cmp::Reverse(c["created"].as_i64()));
    let from = after
        .and_then(|id| listed.iter().position(|c| c["id"] == id.as_str()))
        .map_or(0, |at| at + 1);
    let page: Vec<&Value> = listed.iter().skip(from).take(limit).copied().collect();
    let has_more = from + page.len() < listed.len();
    Json(json!({ "object": "list", "data": page, "has_more": has_more }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_paged_after_its_last_record_s_id_is_read_whole() {
    let customers: Vec<Value> = (0..250)
        .map(|n| {
            json!({
                "id": format!("cus_{n:04}"),
                "object": "customer",
                "created": 1_767_225_600 + n,
                "email": format!("c{n}@example.com"),
            })
        })
        .collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/customers", get(stripe_customers))
        .with_state((Arc::new(customers), Arc::clone(&asked)));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("stripe-list");
    let (config, out_file) = crate::util::jsonl_sync(
        &dir,
        "customers",
        addr,
        r#"path = "/v1/customers"
updated_at_field = "created"
time_format = "epoch_seconds"
page_size = 100
lower_bound_param = "created[gte]"
start = "2025-01-01T00:00:00Z"
pagination = { style = "cursor", token_param = "starting_after", token_field = "id", more_path = "has_more" }"#,
        r#"external_id = "{id}"
fields = { email = "email" }"#,
    );
    let out = crate::util::highwater_at(&config, &["run", "customers", "--json"]).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ran = report(&out);
    assert_eq!(ran["counters"]["written"], 250, "{ran}");
    let rows = jsonl_rows(&out_file);
    let ids: std::collections::HashSet<&str> = rows
        .iter()
        .filter_map(|r| r["external_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 250);
    // Three pages, each after the last id of the one before; `has_more:
    // false` ends it without a fourth request.
    let asked = asked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(asked, ["", "cus_0150", "cus_0050"], "{asked:?}");
    assert!(
        !stderr(&out).contains("full_page_ends_list"),
        "{}",
        describe(&out)
    );
}

/// A cursor read from where the answer has none (Stripe's lists have no
/// next token: `token_path = "next_cursor"` is a mistake) reads one page and
/// ends there: the run says so, since its first page came full.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_first_page_that_names_no_next_one_is_warned_of() {
    let customers: Vec<Value> = (0..250)
        .map(|n| json!({ "id": format!("cus_{n:04}"), "created": 1_767_225_600 + n }))
        .collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/customers", get(stripe_customers))
        .with_state((Arc::new(customers), Arc::clone(&asked)));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("full-page-no-next");
    let (config, _) = crate::util::jsonl_sync(
        &dir,
        "customers",
        addr,
        r#"path = "/v1/customers"
updated_at_field = "created"
time_format = "epoch_seconds"
page_size = 100
lower_bound_param = "created[gte]"
start = "2025-01-01T00:00:00Z"
pagination = { style = "cursor", token_path = "next_cursor", token_param = "starting_after" }"#,
        r#"external_id = "{id}""#,
    );
    let out = crate::util::highwater_at(&config, &["run", "customers", "--json"]).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(&out)["counters"]["read"], 100);
    assert!(
        stderr(&out).contains(
            "the first page came full (100 records) and has no `next_cursor` (token_path)"
        ),
        "{}",
        describe(&out)
    );
}

/// A Dataverse-shaped list (OData): records under `value`, the next page's
/// whole URL at `@odata.nextLink` — a key holding a dot — until the last.
async fn odata_accounts(
    State(accounts): State<Arc<Vec<Value>>>,
    headers: axum::http::HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let top: usize = query.get("$top").and_then(|t| t.parse().ok()).unwrap_or(50);
    let from: usize = query
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<&Value> = accounts.iter().skip(from).take(top).collect();
    let mut answer = json!({ "@odata.context": "$metadata#accounts", "value": page });
    if from + top < accounts.len() {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        answer["@odata.nextLink"] = json!(format!(
            "http://{host}/api/data/v9.2/accounts?$top={top}&$skiptoken={}",
            from + top
        ));
    }
    Json(answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_odata_list_is_paged_by_its_next_link_and_its_dotted_keys_mapped() {
    let accounts: Vec<Value> = (0..250)
        .map(|n| {
            json!({
                "accountid": format!("acc-{n:04}"),
                "@odata.etag": format!("W/\"{n}\""),
                "modifiedon": format!("2026-01-01T00:{:02}:{:02}Z", n / 60, n % 60),
            })
        })
        .collect();
    let app = axum::Router::new()
        .route("/api/data/v9.2/accounts", get(odata_accounts))
        .with_state(Arc::new(accounts));
    let (addr, server) = crate::util::serve_local(app).await;
    let sync = |name: &str, next_url_path: &str| {
        crate::util::jsonl_sync(
            &fresh_dir(name),
            "accounts",
            addr,
            &format!(
                r#"path = "/api/data/v9.2/accounts"
records_path = "value"
id_field = "accountid"
updated_at_field = "modifiedon"
page_size = 100
page_size_param = "$top"
start = "2025-01-01T00:00:00Z"
pagination = {{ style = "next_url", next_url_path = "{next_url_path}" }}"#
            ),
            r#"external_id = "{accountid}"
fields = { etag = "@odata.etag" }"#,
        )
    };
    let (config, out_file) = sync("odata-list", "@odata.nextLink");
    let out = crate::util::highwater_at(&config, &["run", "accounts", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        report(&out)["counters"]["written"],
        250,
        "{}",
        describe(&out)
    );
    let rows = jsonl_rows(&out_file);
    assert_eq!(rows.len(), 250);
    assert!(
        rows.iter()
            .all(|r| r["etag"].as_str().is_some_and(|e| e.starts_with("W/"))),
        "{:?}",
        rows.first()
    );
    // Looked for elsewhere, the next link ends the list at a full first
    // page: the run says so.
    let (elsewhere, _) = sync("odata-list-elsewhere", "nextLink");
    let out = crate::util::highwater_at(&elsewhere, &["run", "accounts", "--json"]).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains(
            "the first page came full (100 records) and has no `nextLink` (next_url_path)"
        ),
        "{}",
        describe(&out)
    );
}

/// Zendesk's incremental export: `after_cursor` on every page, the last one
/// included, `end_of_stream: true` on the last; asked with that last cursor,
/// an empty page and the same cursor again.
async fn zendesk_export(
    State(asked): State<Arc<Mutex<Vec<String>>>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let cursor = query.get("cursor").cloned().unwrap_or_default();
    asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(cursor.clone());
    let page = |from: u64, to: u64| -> Vec<Value> {
        (from..to)
            .map(|n| json!({ "id": n, "generated_timestamp": 1_767_225_600 + n, "subject": format!("t{n}") }))
            .collect()
    };
    let (tickets, after, end) = match cursor.as_str() {
        "" => (page(0, 100), "c1", false),
        "c1" => (page(100, 150), "c2", true),
        _ => (Vec::new(), "c2", true),
    };
    Json(json!({ "tickets": tickets, "after_cursor": after, "end_of_stream": end }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_s_end_is_where_it_says_or_where_it_gives_its_cursor_back_empty() {
    for end_path in [true, false] {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/api/v2/incremental/tickets/cursor.json",
                get(zendesk_export),
            )
            .with_state(Arc::clone(&asked));
        let (addr, server) = crate::util::serve_local(app).await;
        let dir = fresh_dir(&format!("zendesk-export-{end_path}"));
        let end = if end_path {
            ", end_path = \"end_of_stream\""
        } else {
            ""
        };
        let (config, out_file) = crate::util::jsonl_sync(
            &dir,
            "tickets",
            addr,
            &format!(
                r#"path = "/api/v2/incremental/tickets/cursor.json"
records_path = "tickets"
updated_at_field = "generated_timestamp"
time_format = "epoch_seconds"
lower_bound_param = "start_time"
start = "2025-01-01T00:00:00Z"
page_size_param = ""
pagination = {{ style = "cursor", token_path = "after_cursor", token_param = "cursor"{end} }}"#
            ),
            r#"external_id = "zd-{id}"
fields = { subject = "subject" }"#,
        );
        let out = crate::util::highwater_at(&config, &["run", "tickets", "--json"]).await;
        server.abort();
        assert_eq!(out.status.code(), Some(0), "{end_path}: {}", describe(&out));
        assert_eq!(
            report(&out)["counters"]["written"],
            150,
            "{}",
            describe(&out)
        );
        assert_eq!(jsonl_rows(&out_file).len(), 150);
        let asked = asked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let expected: &[&str] = if end_path {
            &["", "c1"]
        } else {
            &["", "c1", "c2"]
        };
        assert_eq!(asked, expected, "{end_path}");
    }
}

/// Asana's tasks: `next_page.offset` tokens that expire. The generation of
/// tokens the API still takes; a token of another is refused with 400.
async fn asana_tasks(
    State(generation): State<Arc<Mutex<u32>>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let current = *generation.lock().unwrap_or_else(|e| e.into_inner());
    let page: u64 = match query.get("offset") {
        None => 0,
        Some(token) => match token.split_once('-') {
            Some((g, n)) if g == format!("g{current}") => n.parse().unwrap_or(0),
            _ => {
                let expired = json!({ "errors": [{ "message": "offset: Your pagination token has expired." }] });
                return (axum::http::StatusCode::BAD_REQUEST, Json(expired)).into_response();
            }
        },
    };
    let data: Vec<Value> = (page * 10..page * 10 + 10)
        .map(|n| json!({ "gid": n.to_string(), "modified_at": format!("2026-01-01T00:00:{n:02}Z"), "name": format!("task {n}") }))
        .collect();
    let next = (page < 2).then(|| json!({ "offset": format!("g{current}-{}", page + 1) }));
    Json(json!({ "data": data, "next_page": next })).into_response()
}

/// A run stopped after its first page keeps the page token in its
/// checkpoint; once the API no longer takes it, the run resumed reads its
/// range again from the start, says why, and completes exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_resumed_at_a_token_that_expired_reads_its_range_again() {
    let generation = Arc::new(Mutex::new(1u32));
    let app = axum::Router::new()
        .route("/api/1.0/tasks", get(asana_tasks))
        .with_state(Arc::clone(&generation));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("asana-expired-token");
    let (config, out_file) = crate::util::jsonl_sync(
        &dir,
        "tasks",
        addr,
        r#"path = "/api/1.0/tasks"
id_field = "gid"
updated_at_field = "modified_at"
start = "2025-01-01T00:00:00Z"
lower_bound_param = "modified_since"
page_size = 10
pagination = { style = "cursor", token_path = "next_page.offset", token_param = "offset" }"#,
        r#"external_id = "task-{gid}"
fields = { name = "name" }"#,
    );
    let run = ["run", "tasks", "--json"];
    let out = crate::util::highwater_at(&config, &[&run[..], &["--max-pages", "1"]].concat()).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    *generation.lock().unwrap_or_else(|e| e.into_inner()) = 2;
    let out = crate::util::highwater_at(&config, &run).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("refused the position this run resumes at (HTTP 400"),
        "{}",
        describe(&out)
    );
    let ids: std::collections::HashSet<String> = jsonl_rows(&out_file)
        .iter()
        .filter_map(|r| r["external_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 30, "{ids:?}");
}

/// A GraphQL API (Linear's shape): every page a POST of the query, its
/// variables holding the window's lower bound, the page size (an `Int`) and
/// the cursor (a `String`); the records and `pageInfo` in `data`.
struct Graphql {
    /// Each issue's id and when it was last updated.
    issues: Vec<(String, jiff::Timestamp)>,
    /// The variables of each request, in the order they came.
    asked: Vec<Value>,
}

type GraphqlState = Arc<Mutex<Graphql>>;

async fn graphql_issues(
    State(api): State<GraphqlState>,
    Json(request): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    let refuse = |message: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "errors": [{ "message": message }] })),
        )
    };
    let variables = request["variables"].clone();
    let mut api = api.lock().unwrap_or_else(|e| e.into_inner());
    api.asked.push(variables.clone());
    if !request["query"]
        .as_str()
        .is_some_and(|q| q.contains("issues"))
    {
        return refuse("no query");
    }
    let Some(first) = variables["first"].as_u64() else {
        return refuse("Variable \"$first\" got invalid value; Int cannot represent a non-integer");
    };
    let Some(since) = variables["since"]
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return refuse("Variable \"$since\" got invalid value; expected a DateTime");
    };
    let after = match &variables["after"] {
        Value::Null => 0,
        Value::String(cursor) => match cursor.strip_prefix("c").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return refuse("invalid cursor"),
        },
        _ => return refuse("Variable \"$after\" got invalid value; String cannot represent it"),
    };
    let mut listed: Vec<(jiff::Timestamp, String)> = api
        .issues
        .iter()
        .filter(|(_, at)| *at >= since)
        .map(|(id, at)| (*at, id.clone()))
        .collect();
    listed.sort();
    let nodes: Vec<Value> = listed
        .iter()
        .skip(after)
        .take(first as usize)
        .map(|(at, id)| json!({ "id": id, "updatedAt": at.to_string(), "title": format!("issue {id}") }))
        .collect();
    let end = after + nodes.len();
    let page = json!({
        "nodes": nodes,
        "pageInfo": { "endCursor": format!("c{end}"), "hasNextPage": end < listed.len() }
    });
    (
        axum::http::StatusCode::OK,
        Json(json!({ "data": { "issues": page } })),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graphql_api_is_read_with_its_window_and_cursor_in_the_variables() {
    let old = |n: i64| {
        let at = jiff::Timestamp::from_second(1_717_200_000 + n * 60)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        (format!("{n}"), at)
    };
    let api: GraphqlState = Arc::new(Mutex::new(Graphql {
        issues: (0..95).map(old).collect(),
        asked: Vec::new(),
    }));
    let app = axum::Router::new()
        .route("/graphql", axum::routing::post(graphql_issues))
        .with_state(Arc::clone(&api));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("graphql-variables");
    let (config, out_file) = crate::util::jsonl_sync(
        &dir,
        "issues",
        addr,
        r#"path = "/graphql"
body = { query = "query Issues($since: DateTime!, $first: Int!, $after: String) { issues(filter: { updatedAt: { gte: $since } }, first: $first, after: $after) { nodes { id updatedAt title } pageInfo { endCursor hasNextPage } } }", variables = { since = "{lower}" } }
body_params_path = "variables"
error_path = "errors"
records_path = "data.issues.nodes"
updated_at_field = "updatedAt"
start = "2024-01-01T00:00:00Z"
page_size = 20
page_size_param = "first"
pagination = { style = "cursor", token_path = "data.issues.pageInfo.endCursor", token_param = "after", more_path = "data.issues.pageInfo.hasNextPage" }"#,
        r#"external_id = "issue-{id}"
fields = { title = "title", updated = "updatedAt" }"#,
    );
    let run = || async {
        let out = crate::util::highwater_at(&config, &["run", "issues", "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        report(&out)
    };
    let taken = || std::mem::take(&mut api.lock().unwrap_or_else(|e| e.into_inner()).asked);

    // `probe` shows the body each page is asked for with.
    let probed = crate::util::highwater_at(&config, &["probe", "issues", "--json"]).await;
    assert_eq!(probed.status.code(), Some(0), "{}", describe(&probed));
    let sent = &report(&probed)["pages"][1]["requests"][0]["body"];
    assert_eq!(
        sent["variables"],
        json!({ "since": "2024-01-01T00:00:00Z", "first": 20, "after": "c20" }),
        "{sent}"
    );
    assert!(
        sent["query"]
            .as_str()
            .is_some_and(|q| q.starts_with("query Issues")),
        "{sent}"
    );
    let text = crate::util::highwater_at(&config, &["probe", "issues"]).await;
    assert!(
        crate::util::stdout(&text).contains(r#"body: {"query":"query Issues"#),
        "{}",
        describe(&text)
    );
    taken();

    let first = run().await;
    assert_eq!(first["counters"]["written"], 95, "{first}");
    let asked = taken();
    assert_eq!(asked.len(), 5, "{asked:?}");
    assert_eq!(
        asked[0],
        json!({ "since": "2024-01-01T00:00:00Z", "first": 20 })
    );
    assert_eq!(
        asked[1],
        json!({ "since": "2024-01-01T00:00:00Z", "first": 20, "after": "c20" })
    );

    {
        let mut api = api.lock().unwrap_or_else(|e| e.into_inner());
        let now = jiff::Timestamp::now();
        api.issues.push(("new".into(), now));
        if let Some(issue) = api.issues.get_mut(7) {
            issue.1 = now;
        }
    }
    let second = run().await;
    server.abort();
    assert_eq!(
        (&second["counters"]["read"], &second["counters"]["written"]),
        (&json!(2), &json!(2)),
        "the second run reads what changed since the first: {second}"
    );
    let since = taken()
        .first()
        .and_then(|v| v["since"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(since.as_str() > "2025", "{since}");
    assert_eq!(jsonl_rows(&out_file).len(), 96);
}

/// A list that pages no further than 30 records in (HubSpot's search stops at
/// 10,000): asked past that, 400.
async fn capped_search(
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, Json<Value>) {
    let after: usize = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    if after >= 30 {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "status": "error", "message": "cannot page beyond 30 results" })),
        );
    }
    let results: Vec<Value> = (after..(after + 10).min(50))
        .map(|n| json!({ "id": format!("{n}"), "updatedAt": format!("2025-01-01T00:00:{n:02}Z") }))
        .collect();
    let next = json!({ "next": { "after": format!("{}", after + 10) } });
    (
        axum::http::StatusCode::OK,
        Json(json!({ "total": 50, "results": results, "paging": next })),
    )
}

/// A run refused at a position the source gave it in the same run says that
/// reading again will not get past it, and how to read the window instead;
/// resumed, it reads its range again and says the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_that_pages_no_further_says_how_to_read_the_window_instead() {
    let app = axum::Router::new().route("/search", get(capped_search));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("capped-search");
    let (config, _) = crate::util::jsonl_sync(
        &dir,
        "contacts",
        addr,
        r#"path = "/search"
records_path = "results"
updated_at_field = "updatedAt"
page_size = 10
start = "2025-01-01T00:00:00Z"
pagination = { style = "cursor", token_path = "paging.next.after", token_param = "after" }"#,
        r#"external_id = "{id}""#,
    );
    for _ in 0..2 {
        let out = crate::util::highwater_at(&config, &["run", "contacts"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            stderr(&out).contains("the source refused a position it gave in this run")
                && stderr(&out).contains("highwater backfill --from --to"),
            "{}",
            describe(&out)
        );
    }
    server.abort();
}

/// QuickBooks' query endpoint: the window and the position are in the query's
/// text (`WHERE Metadata.LastUpdatedTime >= '…' … STARTPOSITION n MAXRESULTS
/// m`, counted from one), the records under `QueryResponse.Invoice`, and a
/// query that matches nothing answered `{"QueryResponse": {}}`.
type Invoices = (Arc<Vec<(jiff::Timestamp, String)>>, Arc<Mutex<Vec<String>>>);

async fn quickbooks_query(
    State((invoices, asked)): State<Invoices>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, Json<Value>) {
    let text = query.get("query").cloned().unwrap_or_default();
    asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(text.clone());
    let lower = text.to_lowercase();
    let number = |word: &str| -> Option<usize> {
        let at = lower.find(word)? + word.len();
        lower[at..].split_whitespace().next()?.parse().ok()
    };
    let since = lower
        .split_once(">= '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .and_then(|(at, _)| at.parse::<jiff::Timestamp>().ok());
    let (Some(start), Some(max), Some(since)) =
        (number("startposition"), number("maxresults"), since)
    else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({ "Fault": { "Error": [{ "Message": "Error parsing query" }] } })),
        );
    };
    let listed: Vec<Value> = invoices
        .iter()
        .filter(|(at, _)| *at >= since)
        .skip(start.saturating_sub(1))
        .take(max)
        .map(|(at, id)| json!({ "Id": id, "MetaData": { "LastUpdatedTime": at.to_string() } }))
        .collect();
    let answer = if listed.is_empty() {
        json!({ "QueryResponse": {}, "time": "2026-12-01T00:00:00Z" })
    } else {
        json!({ "QueryResponse": { "Invoice": listed, "startPosition": start, "maxResults": listed.len() } })
    };
    (axum::http::StatusCode::OK, Json(answer))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_whose_text_holds_the_position_is_walked_by_offsets_from_one() {
    let invoices: Vec<(jiff::Timestamp, String)> = (0..230)
        .map(|n: i64| {
            let at = jiff::Timestamp::from_second(1_717_200_000 + n * 60)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            (at, format!("{n}"))
        })
        .collect();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v3/company/1/query", get(quickbooks_query))
        .with_state((Arc::new(invoices), Arc::clone(&asked)));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("quickbooks-query");
    let (config, out_file) = crate::util::jsonl_sync(
        &dir,
        "invoices",
        addr,
        r#"path = "/v3/company/1/query"
params = { query = "SELECT * FROM Invoice WHERE Metadata.LastUpdatedTime >= '{lower}' ORDERBY Metadata.LastUpdatedTime STARTPOSITION {offset} MAXRESULTS 100" }
records_path = "QueryResponse.Invoice"
id_field = "Id"
updated_at_field = "MetaData.LastUpdatedTime"
start = "2024-01-01T00:00:00Z"
page_size = 100
pagination = { style = "offset", first_offset = 1 }"#,
        r#"external_id = "invoice-{Id}"
fields = { updated = "MetaData.LastUpdatedTime" }"#,
    );
    let out = crate::util::highwater_at(&config, &["run", "invoices", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        report(&out)["counters"]["written"],
        230,
        "{}",
        describe(&out)
    );
    assert_eq!(jsonl_rows(&out_file).len(), 230);
    let positions: Vec<usize> = asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|q| {
            let at = q.find("STARTPOSITION ")? + "STARTPOSITION ".len();
            q[at..].split_whitespace().next()?.parse().ok()
        })
        .collect();
    // From one, then each page after the ten records of the last read again.
    assert_eq!(&positions[..3], &[1, 91, 181], "{positions:?}");

    // Nothing changed since: the query matches nothing, and that is a page
    // without records, not a missing field.
    let again = crate::util::highwater_at(&config, &["run", "invoices", "--json"]).await;
    server.abort();
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert_eq!(
        report(&again)["counters"]["written"],
        0,
        "{}",
        describe(&again)
    );
    assert!(!stderr(&again).contains("error"), "{}", describe(&again));
}

/// NetSuite's SuiteQL: the query in a POSTed body (`{"q": …}`, nothing else
/// in it), the page's `limit` and `offset` in the URL, the offset a multiple
/// of the limit, `hasMore` saying whether a page follows, and an offset past
/// the results refused. The transactions, and the `deletedrecord` table of
/// those deleted (each with its `deleteddate`), which a query `FROM
/// deletedrecord` lists.
#[derive(Clone, Default)]
struct SuiteQl {
    transactions: Arc<Mutex<Vec<(jiff::Timestamp, String)>>>,
    deleted: Arc<Mutex<Vec<(jiff::Timestamp, String)>>>,
    asked: Arc<Mutex<Vec<usize>>>,
}

async fn suiteql(
    State(tables): State<SuiteQl>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    let refuse = |detail: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(
                json!({ "o:errorDetails": [{ "detail": detail, "o:errorCode": "INVALID_PARAMETER" }] }),
            ),
        )
    };
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<usize>().ok());
    let (Some(limit), Some(offset)) = (number("limit"), number("offset")) else {
        return refuse("limit and offset are query parameters");
    };
    if limit == 0 || offset % limit != 0 {
        return refuse("The offset must be a multiple of the limit.");
    }
    let text = match body.as_object() {
        Some(fields) if fields.len() == 1 => fields["q"].as_str().unwrap_or_default(),
        _ => return refuse("Invalid request body: only q is allowed."),
    };
    let since = text
        .split_once(">= '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .and_then(|(at, _)| at.parse::<jiff::Timestamp>().ok());
    let Some(since) = since else {
        return refuse("Invalid search query.");
    };
    let (table, stamp) = match text.contains("FROM deletedrecord") {
        true => (&tables.deleted, "deleteddate"),
        false => {
            tables
                .asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(offset);
            (&tables.transactions, "lastmodifieddate")
        }
    };
    let table = table.lock().unwrap_or_else(|e| e.into_inner());
    let matching: Vec<&(jiff::Timestamp, String)> =
        table.iter().filter(|(at, _)| *at >= since).collect();
    if offset > 0 && offset >= matching.len() {
        return refuse("The offset is greater than the total number of results.");
    }
    let items: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(at, id)| json!({ "id": id, stamp: at.to_string() }))
        .collect();
    let answer = json!({
        "count": items.len(),
        "hasMore": offset + items.len() < matching.len(),
        "items": items,
        "offset": offset,
        "totalResults": matching.len(),
    });
    (axum::http::StatusCode::OK, Json(answer))
}

#[tokio::test]
async fn a_posted_query_takes_its_pages_in_the_url_at_multiples_of_the_limit() {
    // Five full pages: `hasMore` ends the list, which refuses a sixth.
    let transactions: Vec<(jiff::Timestamp, String)> = (0..1_000)
        .map(|n: i64| {
            let at = jiff::Timestamp::from_second(1_717_200_000 + n * 60)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            (at, format!("{n}"))
        })
        .collect();
    let tables = SuiteQl::default();
    *tables
        .transactions
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = transactions;
    let app = axum::Router::new()
        .route(
            "/services/rest/query/v1/suiteql",
            axum::routing::post(suiteql),
        )
        .with_state(tables.clone());
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("suiteql-pages");
    let (config, out_file) = crate::util::jsonl_sync(
        &dir,
        "transactions",
        addr,
        r#"path = "/services/rest/query/v1/suiteql"
body = { q = "SELECT id, lastmodifieddate FROM transaction WHERE lastmodifieddate >= '{lower}' ORDER BY lastmodifieddate, id" }
page_params_in = "query"
records_path = "items"
updated_at_field = "lastmodifieddate"
start = "2024-01-01T00:00:00Z"
page_size = 200
pagination = { style = "page", offset_param = "offset", more_path = "hasMore" }

[sync.deletes]
path = "/services/rest/query/v1/suiteql"
body = { q = "SELECT id, deleteddate FROM deletedrecord WHERE recordtypeid = 'transaction' AND deleteddate >= '{lower}' ORDER BY deleteddate, id" }
page_params_in = "query"
deleted_at_field = "deleteddate"
lookback = "0s"
pagination = { style = "page", offset_param = "offset", more_path = "hasMore" }"#,
        r#"external_id = "transaction-{id}"
fields = { updated = "lastmodifieddate" }"#,
    );
    let out = crate::util::highwater_at(&config, &["run", "transactions", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        report(&out)["counters"]["written"],
        1_000,
        "{}",
        describe(&out)
    );
    assert_eq!(jsonl_rows(&out_file).len(), 1_000);
    let offsets = std::mem::take(&mut *tables.asked.lock().unwrap_or_else(|e| e.into_inner()));
    // Each page after the first reads the one before it again, whole.
    assert_eq!(&offsets[..5], &[0, 200, 0, 400, 200], "{offsets:?}");
    assert!(
        offsets.iter().all(|o| o % 200 == 0 && *o < 1_000),
        "{offsets:?}"
    );

    let again = crate::util::highwater_at(&config, &["run", "transactions", "--json"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert_eq!(
        report(&again)["counters"]["written"],
        0,
        "{}",
        describe(&again)
    );

    // Five transactions deleted: the feed's own query, POSTed as the
    // source's, lists them, and their lines go.
    let now = jiff::Timestamp::now();
    {
        let mut kept = tables
            .transactions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut deleted = tables.deleted.lock().unwrap_or_else(|e| e.into_inner());
        for id in ["3", "250", "501", "777", "999"] {
            kept.retain(|(_, kept)| kept != id);
            deleted.push((now, id.to_owned()));
        }
    }
    let pruned =
        crate::util::highwater_at(&config, &["run", "transactions", "--deletes", "--json"]).await;
    server.abort();
    assert_eq!(pruned.status.code(), Some(0), "{}", describe(&pruned));
    assert_eq!(
        report(&pruned)["counters"]["deleted"],
        5,
        "{}",
        describe(&pruned)
    );
    let rows = jsonl_rows(&out_file);
    assert_eq!(rows.len(), 995);
    assert!(
        !rows
            .iter()
            .any(|row| row["external_id"] == "transaction-250"),
        "{rows:?}"
    );
}

/// WordPress's REST API: the posts a bare array, numbered pages of
/// `per_page`, `modified_after` in the site's wall time without a zone, and
/// a page past the last refused with 400 `rest_post_invalid_page_number`.
type Posts = (
    Arc<Mutex<Vec<(jiff::Timestamp, String)>>>,
    Arc<Mutex<Vec<u64>>>,
);

async fn wordpress_posts(
    State((posts, asked)): State<Posts>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (axum::http::StatusCode, Json<Value>) {
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok());
    let (per_page, page) = (
        number("per_page").unwrap_or(10),
        number("page").unwrap_or(1),
    );
    asked.lock().unwrap_or_else(|e| e.into_inner()).push(page);
    let since = query
        .get("modified_after")
        .and_then(|at| format!("{at}Z").parse::<jiff::Timestamp>().ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let posts = posts.lock().unwrap_or_else(|e| e.into_inner());
    let matching: Vec<&(jiff::Timestamp, String)> =
        posts.iter().filter(|(at, _)| *at > since).collect();
    let pages = matching.len().div_ceil(per_page as usize).max(1) as u64;
    if page > pages {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({
                "code": "rest_post_invalid_page_number",
                "message": "The page number requested is larger than the number of pages available.",
                "data": { "status": 400 }
            })),
        );
    }
    let listed: Vec<Value> = matching
        .iter()
        .skip(((page - 1) * per_page) as usize)
        .take(per_page as usize)
        .map(|(at, id)| {
            let wall = at.strftime("%Y-%m-%dT%H:%M:%S");
            json!({ "id": id.parse::<u64>().unwrap_or(0), "modified_gmt": wall.to_string() })
        })
        .collect();
    (axum::http::StatusCode::OK, Json(Value::Array(listed)))
}

#[tokio::test]
async fn a_page_past_the_last_that_the_api_refuses_ends_the_list_where_configured() {
    let at = |n: i64| {
        jiff::Timestamp::from_second(1_717_200_000 + n * 60).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    };
    // Ten full pages of twenty: the walk asks for an eleventh.
    let posts = Arc::new(Mutex::new(
        (0..200)
            .map(|n| (at(n), format!("{}", n + 1)))
            .collect::<Vec<_>>(),
    ));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/wp-json/wp/v2/posts", get(wordpress_posts))
        .with_state((Arc::clone(&posts), Arc::clone(&asked)));
    let (addr, server) = crate::util::serve_local(app).await;
    let dir = fresh_dir("wordpress-past-the-last-page");
    let source = r#"path = "/wp-json/wp/v2/posts"
params = { orderby = "modified", order = "asc" }
records_path = ""
updated_at_field = "modified_gmt"
time_format = "%Y-%m-%dT%H:%M:%S"
lower_bound_param = "modified_after"
lower_bound_exclusive = true
start = "2024-01-01T00:00:00Z"
page_size = 20
page_size_param = "per_page"
pagination = { style = "page" }"#;
    let mapping = r#"external_id = "post-{id}"
fields = { modified = "modified_gmt" }"#;
    let (config, out_file) = crate::util::jsonl_sync(&dir, "posts", addr, source, mapping);

    // Unsaid, the refusal is the API's answer: the run fails and says it,
    // and the file holds every record its commits did (a commit still on
    // its way into the store when the run failed too).
    let refused = crate::util::highwater_at(&config, &["run", "posts"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let runs = crate::util::highwater_at(&config, &["runs", "posts", "--json"]).await;
    let last: Value = serde_json::from_slice(
        runs.stdout
            .split(|b| *b == b'\n')
            .next()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", describe(&runs)));
    assert_eq!(
        Some(jsonl_rows(&out_file).len() as u64),
        last["counters"]["written"].as_u64(),
        "{}",
        describe(&refused)
    );
    assert!(
        stderr(&refused).contains("rest_post_invalid_page_number")
            && stderr(&refused).contains("name that error in `end_of_list_errors`"),
        "{}",
        describe(&refused)
    );

    let said = source.replace(
        "pagination =",
        "end_of_list_errors = [\"rest_post_invalid_page_number\"]\npagination =",
    );
    let (config, out_file_said) = crate::util::jsonl_sync(&dir, "posts", addr, &said, mapping);
    assert_eq!(out_file, out_file_said);
    asked.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let out = crate::util::highwater_at(&config, &["run", "posts", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rows = jsonl_rows(&out_file);
    assert_eq!(rows.len(), 200, "{}", describe(&out));
    let pages = std::mem::take(&mut *asked.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(pages.contains(&11), "{pages:?}");

    // A post changed since: the run after reads it.
    posts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((jiff::Timestamp::now(), "9999".to_owned()));
    let out = crate::util::highwater_at(&config, &["run", "posts", "--json"]).await;
    server.abort();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(&out)["counters"]["written"], 1, "{}", describe(&out));
    assert_eq!(jsonl_rows(&out_file).len(), 201);
}
