//! Destination API routes (a CRM storing "contacts"): upsert and read by
//! external id, lookup, create, patch, idempotent upsert, an optional version
//! precondition, poison rejection, the per-write fault gate (including writes
//! applied after the client gave up) and the `/_sim/objects` dump. The batch
//! endpoint is `batch.rs`'s; what the destination holds is `store.rs`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};

use serde_json::{Map, Value};

use crate::faults::{Outcome, mix, str_hash};
use crate::http::{
    Params, json_bytes, json_error, json_value, latency, pause, rate_limited, rate_limited_date,
    refused_silently, server_error, unauthorized,
};
use crate::stats::bump;
use crate::{LimitHeaders, Shared, lock, read};

mod store;
pub(crate) use store::Store;
pub use store::{DestDump, DestObject, VERSION_HEADER};
use store::{Stored, WriteMeta, object_json, strip_identity};

mod batch;
mod jobs;
pub(crate) use jobs::Jobs;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v1/contacts/by-external-id/{ext}",
            get(read_by_ext).put(put_by_ext).delete(delete_by_ext),
        )
        .route("/v1/contacts", get(lookup).post(create))
        .route("/v1/contacts/search", post(search))
        .route("/v1/contacts/upsert", post(upsert))
        .route("/v1/contacts/batch", post(batch::batch))
        .route("/v1/jobs/{id}", get(jobs::poll))
        .route(
            "/v1/contacts/{id}",
            patch(patch_object).delete(delete_object),
        )
        .route("/_sim/objects", get(sim_objects))
        .route("/oauth/token", post(oauth))
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&shared),
            limit_headers,
        ))
        .with_state(shared)
}

/// Adds the token bucket's rate-limit headers to every answer, when the
/// destination is told to send them: what is left once this request was counted.
/// The requests a rolling window of `span` takes at `rps` a second.
fn window_quota(rps: f64, span: Duration) -> usize {
    (rps * span.as_secs_f64()).floor().max(1.0) as usize
}

async fn limit_headers(State(s): State<Arc<Shared>>, mut response: Response) -> Response {
    let (rps, form, window) = {
        let f = read(&s.dest_faults);
        (f.rate_limit_rps, f.rate_limit_headers, f.rate_limit_window)
    };
    let Some(rps) = rps else {
        return response;
    };
    if form == LimitHeaders::RetryAfterOnly {
        return response;
    }
    let now = Instant::now();
    let (limit, remaining, until_full, span) = match window {
        Some(span) => {
            let quota = window_quota(rps, span);
            let room = lock(&s.dest_fault_state).window_room(quota, span, now);
            // HubSpot's form says no reset; the others, the whole window.
            (quota as f64, room as u64, span.as_secs_f64(), span)
        }
        None => {
            let limit = rps.max(1.0);
            let tokens = lock(&s.dest_fault_state)
                .bucket_level(rps, now)
                .unwrap_or(limit);
            let until_full = (limit - tokens).max(0.0) / rps.max(f64::MIN_POSITIVE);
            (
                limit,
                tokens.floor() as u64,
                until_full,
                Duration::from_secs(1),
            )
        }
    };
    let reset = until_full.ceil() as u64;
    let limit = limit.floor() as u64;
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    match form {
        LimitHeaders::RetryAfterOnly => {}
        LimitHeaders::XRateLimit | LimitHeaders::XRateLimitEpoch => {
            put("x-ratelimit-limit", limit.to_string());
            put("x-ratelimit-remaining", remaining.to_string());
            let reset = if form == LimitHeaders::XRateLimitEpoch {
                let epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                (epoch + until_full).ceil() as u64
            } else {
                reset
            };
            put("x-ratelimit-reset", reset.to_string());
        }
        LimitHeaders::Ietf => {
            put("ratelimit-policy", format!("\"bucket\";q={limit};w=1"));
            put("ratelimit", format!("\"bucket\";r={remaining};t={reset}"));
        }
        LimitHeaders::HubSpot => {
            put("x-hubspot-ratelimit-max", limit.to_string());
            put("x-hubspot-ratelimit-remaining", remaining.to_string());
            put(
                "x-hubspot-ratelimit-interval-milliseconds",
                span.as_millis().to_string(),
            );
        }
    }
    response
}

/// The identity a fault decision is keyed on: the same record (external id
/// + version) meets the same faults however requests are scheduled.
fn fault_key(tag: &str, id: &str, version: Option<i64>) -> u64 {
    let v = version.map_or(u64::MAX, |v| v as u64);
    mix(&[str_hash(tag), str_hash(id), v])
}

/// Auth, latency, token bucket and the per-key fault decision. `Err` is the
/// complete answer; `Ok` says how to carry the request out (see [`carry_out`]).
async fn gate(
    s: &Shared,
    headers: &HeaderMap,
    raw: Option<String>,
    key: u64,
) -> Result<Outcome, Response> {
    bump(&s.dest_stats.requests);
    if s.dest_holdoff.arrival_violates() {
        bump(&s.dest_stats.retry_after_violations);
    }
    let params = Params::parse(raw.as_deref());
    if !s.dest_auth.check(headers, &params) {
        bump(&s.dest_stats.unauthorized);
        return Err(unauthorized());
    }
    let f = read(&s.dest_faults).clone();
    latency(&s.shutdown, f.latency).await;
    let limited = |secs| {
        bump(&s.dest_stats.rate_limited);
        rate_limited(secs, &s.dest_holdoff, f.rate_limit_body_delay, &s.shutdown)
    };
    if let Some(rps) = f.rate_limit_rps {
        let now = Instant::now();
        let mut state = lock(&s.dest_fault_state);
        if let Some(span) = f.rate_limit_window {
            if !state.take_in_window(window_quota(rps, span), span, now) {
                drop(state);
                return Err(limited(1));
            }
        } else {
            match f.rate_limit_penalty {
                Some(penalty) if !state.take_token_or_penalize(rps, penalty, now) => {
                    drop(state);
                    bump(&s.dest_stats.rate_limited);
                    return Err(refused_silently());
                }
                None if !state.take_token(rps, now) => {
                    drop(state);
                    return Err(limited(1));
                }
                _ => {}
            }
        }
    }
    if f.is_quiet() {
        return Ok(Outcome::Proceed);
    }
    let outcome = lock(&s.dest_fault_state).decide(s.seed, key, &f);
    match outcome {
        Outcome::RateLimited => Err(limited(f.retry_after_secs)),
        Outcome::RateLimitedDate => {
            bump(&s.dest_stats.rate_limited_date);
            Err(rate_limited_date(
                &s.dest_holdoff,
                f.rate_limit_body_delay,
                &s.shutdown,
            ))
        }
        Outcome::ServerError(code) => {
            bump(&s.dest_stats.server_errors);
            Err(server_error(code))
        }
        Outcome::Slow => {
            bump(&s.dest_stats.slow);
            pause(&s.shutdown, f.slow_delay).await;
            Err(json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                Some("the write was not applied"),
            ))
        }
        plan => Ok(plan),
    }
}

/// Carries a request out as its fault plan says: now; now and then stall or
/// answer 502; or, for a delayed apply, only after the client gave up — on a
/// task of its own, so that it lands even though the client hung up.
async fn carry_out<F>(s: &Arc<Shared>, plan: Outcome, apply: F) -> Response
where
    F: FnOnce(&Shared, bool) -> Response + Send + 'static,
{
    match plan {
        Outcome::CommitThenTimeout => {
            bump(&s.dest_stats.commit_then_timeout);
            let resp = apply(s, false);
            let delay = read(&s.dest_faults).slow_delay;
            pause(&s.shutdown, delay).await;
            resp
        }
        Outcome::CommitThen502 => {
            bump(&s.dest_stats.commit_then_502);
            let _ = apply(s, false);
            server_error(StatusCode::BAD_GATEWAY)
        }
        Outcome::DelayedApply => {
            bump(&s.dest_stats.delayed_apply);
            let arrived = Instant::now();
            let shared = Arc::clone(s);
            let delay = read(&s.dest_faults).delayed_apply_after;
            let late = tokio::spawn(async move {
                if !pause(&shared.shutdown, delay).await {
                    return None;
                }
                let resp = apply(&shared, true);
                let took = u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX);
                shared
                    .dest_stats
                    .delayed_apply_max_ms
                    .fetch_max(took, std::sync::atomic::Ordering::Relaxed);
                Some(resp)
            });
            match late.await {
                Ok(Some(resp)) => resp,
                _ => json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", None),
            }
        }
        _ => apply(s, false),
    }
}

/// Why a write is refused before anything is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    InvalidJson,
    NotAnObject,
    Poison400,
    Poison422,
}

impl Refusal {
    fn status_and_message(self) -> (StatusCode, &'static str) {
        let (status, _, message) = self.parts();
        (status, message)
    }

    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Refusal::InvalidJson => (StatusCode::BAD_REQUEST, "bad_request", "invalid JSON"),
            Refusal::NotAnObject => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "body must be a JSON object",
            ),
            Refusal::Poison400 => (StatusCode::BAD_REQUEST, "bad_request", "email rejected"),
            Refusal::Poison422 => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "email domain not allowed",
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, error, message) = self.parts();
        json_error(status, error, Some(message))
    }
}

type Parsed = Result<Map<String, Value>, Refusal>;

fn parse_body(body: &[u8]) -> Parsed {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Refusal::NotAnObject),
        Err(_) => Err(Refusal::InvalidJson),
    }
}

fn body_version(body: &Parsed) -> Option<i64> {
    body.as_ref().ok()?.get("version")?.as_i64()
}

fn body_external_id(body: &Parsed) -> Option<String> {
    match body.as_ref().ok()?.get("external_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Which poison marker, if any, appears in a string anywhere in the value.
fn poison(v: &Value) -> Option<Refusal> {
    match v {
        Value::String(s) if s.starts_with("poison-400") => Some(Refusal::Poison400),
        Value::String(s) if s.starts_with("poison-422") => Some(Refusal::Poison422),
        Value::Array(items) => items.iter().find_map(poison),
        Value::Object(m) => m.values().find_map(poison),
        _ => None,
    }
}

/// Validation shared by all writes; `Err` is the rejection to send.
fn validate(s: &Shared, body: Parsed) -> Parsed {
    let body = body.inspect_err(|_| {
        bump(&s.dest_stats.rejected);
    })?;
    let poisoned = body.values().find_map(poison);
    if let Some(refusal) = poisoned {
        bump(&s.dest_stats.rejected);
        return Err(refusal);
    }
    Ok(body)
}

fn precondition_failed(s: &Shared) -> Response {
    bump(&s.dest_stats.preconditions_failed);
    json_error(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        Some("the object holds a newer source version"),
    )
}

async fn put_by_ext(
    State(s): State<Arc<Shared>>,
    Path(ext): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body);
    let key = fault_key("write", &ext, body_version(&parsed));
    let plan = match gate(&s, &headers, raw, key).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let meta = WriteMeta::from(&headers);
    carry_out(&s, plan, move |s, late| match validate(s, parsed) {
        Err(r) => r.into_response(),
        Ok(body) => {
            let upserted = lock(&s.store).upsert(&ext, body, &WriteMeta { late, ..meta });
            match upserted {
                Some((status, json)) => {
                    bump(&s.dest_stats.writes_applied);
                    json_value(status, &json)
                }
                None => precondition_failed(s),
            }
        }
    })
    .await
}

/// `DELETE` by external id: 204 when objects were removed, 404 when there was
/// none (a client repeating a delete meets this), behind the write faults.
async fn delete_by_ext(
    State(s): State<Arc<Shared>>,
    Path(ext): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let plan = match gate(&s, &headers, raw, fault_key("delete", &ext, None)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    carry_out(&s, plan, move |s, _| {
        deleted(lock(&s.store).delete_by_ext(&ext))
    })
    .await
}

/// `DELETE` by object id (`ct_<n>`), as `delete_by_ext` answers.
async fn delete_object(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let plan = match gate(&s, &headers, raw, fault_key("delete", &id, None)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let num = id.strip_prefix("ct_").and_then(|n| n.parse::<u64>().ok());
    carry_out(&s, plan, move |s, _| {
        deleted(num.is_some_and(|n| lock(&s.store).delete_by_num(n)))
    })
    .await
}

fn deleted(removed: bool) -> Response {
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        json_error(StatusCode::NOT_FOUND, "not_found", None)
    }
}

/// `GET` of one object by external id: what a client reads back to check
/// what the destination holds.
async fn read_by_ext(
    State(s): State<Arc<Shared>>,
    Path(ext): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let plan = match gate(&s, &headers, raw, fault_key("read", &ext, None)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    carry_out(&s, plan, move |s, _| {
        let store = lock(&s.store);
        let found = store
            .first(&ext)
            .and_then(|num| store.objects.get(&num).map(|o| object_json(num, o)));
        match found {
            Some(json) => json_value(StatusCode::OK, &json),
            None => json_error(StatusCode::NOT_FOUND, "not_found", None),
        }
    })
    .await
}

async fn lookup(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = Params::parse(raw.as_deref());
    let Some(ext) = params.get("external_id").map(str::to_owned) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some("external_id is required"),
        );
    };
    let plan = match gate(&s, &headers, raw, fault_key("lookup", &ext, None)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    carry_out(&s, plan, move |s, _| {
        let ignore_filter = read(&s.dest_faults).lookup_ignores_filter;
        let store = lock(&s.store);
        let data = if ignore_filter {
            store.all(LOOKUP_PAGE)
        } else {
            store.find(&ext)
        };
        json_value(StatusCode::OK, &serde_json::json!({ "data": data }))
    })
    .await
}

/// A lookup as a search sent as a POST, HubSpot's shape: the external id
/// in `filterGroups[0].filters[0].value`, the objects in `results`.
async fn search(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(ext) = parsed
        .pointer("/filterGroups/0/filters/0/value")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some("filterGroups[0].filters[0].value is required"),
        );
    };
    let plan = match gate(&s, &headers, raw, fault_key("lookup", &ext, None)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    carry_out(&s, plan, move |s, _| {
        let results = lock(&s.store).find(&ext);
        json_value(
            StatusCode::OK,
            &serde_json::json!({ "total": results.len(), "results": results }),
        )
    })
    .await
}

/// How many objects a lookup that ignores its filter answers with.
const LOOKUP_PAGE: usize = 50;

async fn create(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body);
    let ext = body_external_id(&parsed);
    let key = fault_key("write", ext.as_deref().unwrap_or(""), body_version(&parsed));
    let plan = match gate(&s, &headers, raw, key).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let meta = WriteMeta::from(&headers);
    carry_out(&s, plan, move |s, _| match (validate(s, parsed), ext) {
        (Err(r), _) => r.into_response(),
        (Ok(_), None) => {
            bump(&s.dest_stats.rejected);
            missing_external_id()
        }
        (Ok(body), Some(ext)) => {
            let json = lock(&s.store).create(ext, body, &meta);
            bump(&s.dest_stats.writes_applied);
            json_value(StatusCode::CREATED, &json)
        }
    })
    .await
}

fn missing_external_id() -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        Some("external_id is required"),
    )
}

async fn patch_object(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body);
    let key = fault_key("patch", &id, body_version(&parsed));
    let plan = match gate(&s, &headers, raw, key).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let meta = WriteMeta::from(&headers);
    let num = id.strip_prefix("ct_").and_then(|n| n.parse::<u64>().ok());
    carry_out(&s, plan, move |s, late| match validate(s, parsed) {
        Err(r) => r.into_response(),
        Ok(body) => {
            let new_ext = match body.get("external_id") {
                Some(Value::String(e)) => Some(e.clone()),
                _ => None,
            };
            let meta = WriteMeta { late, ..meta };
            let mut store = lock(&s.store);
            if num.is_some_and(|n| store.refuses(n, &meta)) {
                return precondition_failed(s);
            }
            match num.and_then(|n| store.replace(n, body, new_ext, &meta)) {
                Some(json) => {
                    bump(&s.dest_stats.writes_applied);
                    json_value(StatusCode::OK, &json)
                }
                None => json_error(StatusCode::NOT_FOUND, "not_found", None),
            }
        }
    })
    .await
}

async fn upsert(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body);
    let ext = body_external_id(&parsed);
    let key = fault_key("write", ext.as_deref().unwrap_or(""), body_version(&parsed));
    let plan = match gate(&s, &headers, raw, key).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let idem_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let meta = WriteMeta::from(&headers);
    carry_out(&s, plan, move |s, late| {
        apply_upsert(
            s,
            idem_key.as_deref(),
            parsed,
            ext,
            WriteMeta { late, ..meta },
        )
    })
    .await
}

/// One lock hold from the replay check to storing the answer, so two
/// concurrent requests with the same key cannot both apply.
fn apply_upsert(
    s: &Shared,
    idem_key: Option<&str>,
    parsed: Parsed,
    ext: Option<String>,
    meta: WriteMeta,
) -> Response {
    let mut store = lock(&s.store);
    if let Some(stored) = idem_key.and_then(|k| store.idempotency.get(k)) {
        bump(&s.dest_stats.idempotent_replays);
        let mut r = json_bytes(stored.status, stored.body.clone());
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return r;
    }
    let (status, bytes) = match (validate(s, parsed), ext) {
        (Err(r), _) => return r.into_response(),
        (Ok(_), None) => {
            bump(&s.dest_stats.rejected);
            return missing_external_id();
        }
        (Ok(body), Some(ext)) => {
            // What a non-idempotent retry does to a real system: the same
            // change lands twice, onto an object that already holds it.
            let holds_it = store
                .first(&ext)
                .and_then(|num| store.objects.get(&num))
                .is_some_and(|o| o.body == strip_identity(body.clone()));
            let Some((status, json)) = store.upsert(&ext, body, &meta) else {
                return precondition_failed(s);
            };
            if holds_it {
                store.duplicate_applications += 1;
            }
            bump(&s.dest_stats.writes_applied);
            (status, serde_json::to_vec(&json).unwrap_or_default())
        }
    };
    if let Some(k) = idem_key {
        store.idempotency.insert(
            k.to_owned(),
            Stored {
                status,
                body: bytes.clone(),
            },
        );
    }
    json_bytes(status, bytes)
}

async fn sim_objects(State(s): State<Arc<Shared>>) -> Response {
    let dump = lock(&s.store).dump();
    json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&dump).unwrap_or_default(),
    )
}

async fn oauth(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if s.dest_holdoff.arrival_violates() {
        bump(&s.dest_stats.retry_after_violations);
    }
    s.dest_auth.token_endpoint(&headers, &body, &s.dest_stats)
}
