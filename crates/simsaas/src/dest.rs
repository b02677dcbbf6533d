//! Destination API routes (a CRM storing "contacts"): upsert by external id,
//! lookup, create, patch, idempotent upsert, poison rejection, the per-write
//! fault gate and the `/_sim/objects` dump.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::faults::{Outcome, mix, str_hash};
use crate::http::{
    Params, json_bytes, json_error, json_value, pause, rate_limited, rate_limited_date,
    server_error, unauthorized,
};
use crate::stats::bump;
use crate::{Shared, lock, read};

/// One destination object as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestObject {
    /// `ct_<n>`.
    pub id: String,
    pub external_id: String,
    /// The body fields (everything except `id` and `external_id`).
    pub body: Value,
    /// How many writes were applied to this object.
    pub writes: u64,
}

/// Everything the destination holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestDump {
    /// In creation order.
    pub objects: Vec<DestObject>,
    /// Upserts re-applied for an (external_id, version) already applied.
    pub duplicate_applications: u64,
}

#[derive(Debug)]
struct Obj {
    external_id: String,
    body: Map<String, Value>,
    writes: u64,
}

/// A stored answer replayed for a repeated `Idempotency-Key`.
#[derive(Debug, Clone)]
struct Stored {
    status: StatusCode,
    body: Vec<u8>,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Keyed by the number in `ct_<n>`; external ids are deliberately not
    /// unique, a careless client can create duplicates.
    objects: BTreeMap<u64, Obj>,
    /// external id -> object numbers, ascending.
    by_ext: HashMap<String, Vec<u64>>,
    next_num: u64,
    idempotency: HashMap<String, Stored>,
    applied_upserts: HashSet<(String, Option<i64>)>,
    duplicate_applications: u64,
}

fn object_json(num: u64, o: &Obj) -> Value {
    let mut m = Map::with_capacity(o.body.len() + 2);
    m.insert("id".into(), Value::String(format!("ct_{num}")));
    m.insert("external_id".into(), Value::String(o.external_id.clone()));
    for (k, v) in &o.body {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

/// The identity fields live outside the body; a client echoing them back
/// must not be able to forge `id`.
fn strip_identity(mut body: Map<String, Value>) -> Map<String, Value> {
    body.remove("id");
    body.remove("external_id");
    body
}

impl Store {
    fn create(&mut self, external_id: String, body: Map<String, Value>) -> Value {
        self.next_num += 1;
        let num = self.next_num;
        self.by_ext
            .entry(external_id.clone())
            .or_default()
            .push(num);
        let obj = Obj {
            external_id,
            body: strip_identity(body),
            writes: 1,
        };
        let json = object_json(num, &obj);
        self.objects.insert(num, obj);
        json
    }

    fn replace(
        &mut self,
        num: u64,
        body: Map<String, Value>,
        new_ext: Option<String>,
    ) -> Option<Value> {
        let obj = self.objects.get_mut(&num)?;
        if let Some(ext) = new_ext.filter(|e| *e != obj.external_id) {
            if let Some(nums) = self.by_ext.get_mut(&obj.external_id) {
                nums.retain(|n| *n != num);
                if nums.is_empty() {
                    self.by_ext.remove(&obj.external_id);
                }
            }
            let nums = self.by_ext.entry(ext.clone()).or_default();
            let at = nums.partition_point(|n| *n < num);
            nums.insert(at, num);
            obj.external_id = ext;
        }
        obj.body = strip_identity(body);
        obj.writes += 1;
        Some(object_json(num, obj))
    }

    /// Upsert onto the oldest object with this external id.
    fn upsert(&mut self, ext: &str, body: Map<String, Value>) -> (StatusCode, Value) {
        let existing = self.by_ext.get(ext).and_then(|n| n.first().copied());
        match existing.and_then(|num| self.replace(num, body.clone(), None)) {
            Some(json) => (StatusCode::OK, json),
            None => (StatusCode::CREATED, self.create(ext.to_owned(), body)),
        }
    }

    fn find(&self, ext: &str) -> Vec<Value> {
        self.by_ext
            .get(ext)
            .into_iter()
            .flatten()
            .filter_map(|num| self.objects.get(num).map(|o| object_json(*num, o)))
            .collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.objects.len()
    }

    pub(crate) fn dump(&self) -> DestDump {
        DestDump {
            objects: self
                .objects
                .iter()
                .map(|(num, o)| DestObject {
                    id: format!("ct_{num}"),
                    external_id: o.external_id.clone(),
                    body: Value::Object(o.body.clone()),
                    writes: o.writes,
                })
                .collect(),
            duplicate_applications: self.duplicate_applications,
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/contacts/by-external-id/{ext}", put(put_by_ext))
        .route("/v1/contacts", get(lookup).post(create))
        .route("/v1/contacts/upsert", post(upsert))
        .route("/v1/contacts/{id}", patch(patch_object))
        .route("/_sim/objects", get(sim_objects))
        .route("/oauth/token", post(oauth))
        .with_state(shared)
}

/// The identity a fault decision is keyed on: the same record (external id
/// + version) meets the same faults however requests are scheduled.
fn fault_key(tag: &str, id: &str, version: Option<i64>) -> u64 {
    let v = version.map_or(u64::MAX, |v| v as u64);
    mix(&[str_hash(tag), str_hash(id), v])
}

/// Auth, latency, token bucket and the per-key fault decision. `Err` is the
/// complete answer; `Ok(CommitThenTimeout)` asks to apply, then stall.
async fn gate(
    s: &Shared,
    headers: &HeaderMap,
    raw: Option<String>,
    key: u64,
) -> Result<Outcome, Response> {
    bump(&s.dest_stats.requests);
    let params = Params::parse(raw.as_deref());
    if !s.dest_auth.check(headers, &params) {
        bump(&s.dest_stats.unauthorized);
        return Err(unauthorized());
    }
    let f = read(&s.dest_faults).clone();
    pause(&s.shutdown, f.latency).await;
    if let Some(rps) = f.rate_limit_rps
        && !lock(&s.dest_fault_state).take_token(rps, Instant::now())
    {
        bump(&s.dest_stats.rate_limited);
        return Err(rate_limited(1));
    }
    if f.is_quiet() {
        return Ok(Outcome::Proceed);
    }
    let outcome = lock(&s.dest_fault_state).decide(s.seed, key, &f);
    match outcome {
        Outcome::Proceed => Ok(Outcome::Proceed),
        Outcome::RateLimited => {
            bump(&s.dest_stats.rate_limited);
            Err(rate_limited(f.retry_after_secs))
        }
        Outcome::RateLimitedDate => {
            bump(&s.dest_stats.rate_limited_date);
            Err(rate_limited_date())
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
        Outcome::CommitThenTimeout => {
            bump(&s.dest_stats.commit_then_timeout);
            Ok(Outcome::CommitThenTimeout)
        }
    }
}

/// Applies the commit-then-timeout stall after the write went through.
async fn finish(s: &Shared, plan: Outcome, resp: Response) -> Response {
    if plan == Outcome::CommitThenTimeout {
        let delay = read(&s.dest_faults).slow_delay;
        pause(&s.shutdown, delay).await;
    }
    resp
}

/// Why a write is refused before anything is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    InvalidJson,
    NotAnObject,
    Poison400,
    Poison422,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, error, message) = match self {
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
        };
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
    let resp = match validate(&s, parsed) {
        Err(r) => r.into_response(),
        Ok(body) => {
            let (status, json) = lock(&s.store).upsert(&ext, body);
            bump(&s.dest_stats.writes_applied);
            json_value(status, &json)
        }
    };
    finish(&s, plan, resp).await
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
    let data = lock(&s.store).find(&ext);
    let resp = json_value(StatusCode::OK, &serde_json::json!({ "data": data }));
    finish(&s, plan, resp).await
}

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
    let resp = match (validate(&s, parsed), ext) {
        (Err(r), _) => r.into_response(),
        (Ok(_), None) => {
            bump(&s.dest_stats.rejected);
            missing_external_id()
        }
        (Ok(body), Some(ext)) => {
            let json = lock(&s.store).create(ext, body);
            bump(&s.dest_stats.writes_applied);
            json_value(StatusCode::CREATED, &json)
        }
    };
    finish(&s, plan, resp).await
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
    let num = id.strip_prefix("ct_").and_then(|n| n.parse::<u64>().ok());
    let resp = match validate(&s, parsed) {
        Err(r) => r.into_response(),
        Ok(body) => {
            let new_ext = match body.get("external_id") {
                Some(Value::String(e)) => Some(e.clone()),
                _ => None,
            };
            let updated = num.and_then(|n| lock(&s.store).replace(n, body, new_ext));
            match updated {
                Some(json) => {
                    bump(&s.dest_stats.writes_applied);
                    json_value(StatusCode::OK, &json)
                }
                None => json_error(StatusCode::NOT_FOUND, "not_found", None),
            }
        }
    };
    finish(&s, plan, resp).await
}

async fn upsert(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let parsed = parse_body(&body);
    let ext = body_external_id(&parsed);
    let version = body_version(&parsed);
    let key = fault_key("write", ext.as_deref().unwrap_or(""), version);
    let plan = match gate(&s, &headers, raw, key).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let idem_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty());
    let resp = apply_upsert(&s, idem_key, parsed, ext, version);
    finish(&s, plan, resp).await
}

/// One lock hold from the replay check to storing the answer, so two
/// concurrent requests with the same key cannot both apply.
fn apply_upsert(
    s: &Shared,
    idem_key: Option<&str>,
    parsed: Parsed,
    ext: Option<String>,
    version: Option<i64>,
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
            // change lands twice.
            if !store.applied_upserts.insert((ext.clone(), version)) {
                store.duplicate_applications += 1;
            }
            let (status, json) = store.upsert(&ext, body);
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
    s.dest_auth.token_endpoint(&headers, &body, &s.dest_stats)
}
