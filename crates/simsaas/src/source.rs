//! Source API routes (a billing API listing invoices): the five pagination
//! styles, the per-request fault gate, stale and looped serving, the
//! `/_sim/records` dump and the OAuth token endpoint.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, TsFormat};
use crate::faults::{Kind, Outcome, SIDE_SOURCE, chance, decide_source, mix};
use crate::http::{
    ParamError, Params, json_bytes, latency_until, limit_param, pause, rate_limited,
    rate_limited_date, server_error, time_param, uint_param, unauthorized,
};
use crate::stats::{add, bump};
use crate::{BadBody, Shared, SourceFaults, lock, read};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/cursor/invoices", get(cursor))
        .route("/v1/links/invoices", get(links))
        .route("/v1/keyset/invoices", get(keyset))
        .route("/v1/offset/invoices", get(offset))
        .route("/v1/pages/invoices", get(pages))
        .route("/v1/invoices/deleted", get(deleted))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), on_time))
        .route("/_sim/records", get(sim_records))
        .route("/oauth/token", post(oauth))
        .with_state(shared)
}

/// Answers a data request when its configured latency is up, counted from
/// its arrival: the latency is the API's time to answer, the page's
/// generation included, as a client sees it from a real API. A slow fault
/// adds its delay on top.
async fn on_time(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let due = Instant::now() + read(&s.source_faults).latency;
    let resp = next.run(req).await;
    latency_until(&s.shutdown, due).await;
    resp
}

/// A request that made it through auth and faults.
struct Ctx {
    seq: u64,
    faults: SourceFaults,
    params: Params,
    fmt: TsFormat,
}

/// Auth, latency, and the per-request fault decision. `Err` is the complete
/// answer (401, 429, 5xx, broken body).
async fn gate(s: &Arc<Shared>, headers: &HeaderMap, raw: Option<String>) -> Result<Ctx, Response> {
    bump(&s.source_stats.requests);
    if s.source_holdoff.arrival_violates() {
        bump(&s.source_stats.retry_after_violations);
    }
    let seq = s
        .source_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    s.maybe_start_mutations();
    let params = Params::parse(raw.as_deref());
    if !s.source_auth.check(headers, &params) {
        bump(&s.source_stats.unauthorized);
        return Err(unauthorized());
    }
    let faults = read(&s.source_faults).clone();
    let mut bad_body = faults.bad_body;
    if !faults.is_quiet() {
        let outcome = decide_source(s.seed, seq, &faults, &mut lock(&s.source_burst));
        match outcome {
            Outcome::RateLimited => {
                bump(&s.source_stats.rate_limited);
                return Err(rate_limited(
                    faults.retry_after_secs,
                    &s.source_holdoff,
                    faults.rate_limit_body_delay,
                    &s.shutdown,
                ));
            }
            Outcome::RateLimitedDate => {
                bump(&s.source_stats.rate_limited_date);
                return Err(rate_limited_date(
                    &s.source_holdoff,
                    faults.rate_limit_body_delay,
                    &s.shutdown,
                ));
            }
            Outcome::ServerError(code) => {
                bump(&s.source_stats.server_errors);
                return Err(server_error(code));
            }
            Outcome::Slow => {
                bump(&s.source_stats.slow);
                pause(&s.shutdown, faults.latency + faults.slow_delay).await;
            }
            Outcome::NotJson => {
                let n = bump(&s.source_stats.not_json);
                bad_body = Some(match n % 2 {
                    0 => BadBody::NotJson,
                    _ => BadBody::Empty,
                });
            }
            _ => {}
        }
    }
    match bad_body {
        Some(BadBody::NotJson) => {
            let mut resp = Response::new(Body::from("<html>maintenance</html>"));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return Err(resp);
        }
        Some(BadBody::MissingRecords) => {
            return Err(json_bytes(StatusCode::OK, br#"{"result":"ok"}"#.to_vec()));
        }
        Some(BadBody::Empty) => return Err(json_bytes(StatusCode::OK, Vec::new())),
        None => {}
    }
    let fmt = if params.get("ts") == Some("epoch_ms") {
        TsFormat::EpochMs
    } else {
        TsFormat::Rfc3339
    };
    Ok(Ctx {
        seq,
        faults,
        params,
        fmt,
    })
}

/// The opaque position carried by `cursor` / `after`: the last served key
/// plus the bounds, so later pages need no other parameters.
#[derive(Serialize, Deserialize)]
struct Token {
    t: i64,
    i: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<i64>,
}

impl Token {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: &str, name: &'static str) -> Result<Token, ParamError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim_end_matches('='))
            .map_err(|_| ParamError::Token(name))?;
        serde_json::from_slice(&bytes).map_err(|_| ParamError::Token(name))
    }
}

/// Shared by cursor and links: the page after an optional token. Returns the
/// page body and the next token (None on the last page).
fn token_page(
    s: &Shared,
    ctx: &Ctx,
    token_param: &'static str,
    out: &mut Vec<u8>,
) -> Result<Option<String>, ParamError> {
    let limit = limit_param(&ctx.params, "limit")?;
    let raw_token = ctx.params.non_empty(token_param);
    let incoming = raw_token
        .map(|t| Token::decode(t, token_param))
        .transpose()?;
    let (after, before) = match &incoming {
        Some(t) => (t.a, t.b),
        None => (
            time_param(&ctx.params, "updated_after")?,
            time_param(&ctx.params, "updated_before")?,
        ),
    };
    let next = {
        let mut ds = lock(&s.dataset);
        let range = listing(&ds, ctx, after, before);
        let lo = match &incoming {
            Some(t) => ds.pos_after_key(t.t, &t.i).max(range.start),
            None => range.start,
        }
        .min(range.end);
        let hi = (lo + limit).min(range.end);
        page_into(s, &mut ds, ctx, lo..hi, out);
        if hi < range.end {
            ds.key_at(hi - 1).map(|(t, i)| Token {
                t,
                i,
                a: after,
                b: before,
            })
        } else {
            None
        }
    };
    if ctx.faults.loop_pagination
        && let Some(raw) = raw_token
    {
        bump(&s.source_stats.looped);
        return Ok(Some(raw.to_owned()));
    }
    Ok(next.map(|t| t.encode()))
}

/// The positions a listing bounded so holds: without a lower bound, only the
/// newest records where the source lists no more than those unasked.
fn listing(ds: &Dataset, ctx: &Ctx, after: Option<i64>, before: Option<i64>) -> Range<usize> {
    let range = ds.bounds(after, before);
    match (after, ctx.faults.unbounded_newest) {
        (None, Some(newest)) => range.end.saturating_sub(newest).max(range.start)..range.end,
        _ => range,
    }
}

/// Writes a page of records, letting the stale-replica fault pick old
/// versions. Hashing the record number in keeps each record's coin flip
/// independent within one request.
fn page_into(s: &Shared, ds: &mut Dataset, ctx: &Ctx, range: Range<usize>, out: &mut Vec<u8>) {
    page_with_ties(s, ds, ctx, range, None, out);
}

/// `page_into`, with the records sharing an `updated_at` in the order `ties`
/// picks when given.
fn page_with_ties(
    s: &Shared,
    ds: &mut Dataset,
    ctx: &Ctx,
    range: Range<usize>,
    ties: Option<u64>,
    out: &mut Vec<u8>,
) {
    let ratio = ctx.faults.stale_version_ratio;
    let (seed, seq) = (s.seed, ctx.seq);
    let stale = ds.write_page(
        range,
        ctx.fmt,
        ties,
        |num| {
            chance(
                ratio,
                mix(&[seed, SIDE_SOURCE, Kind::Stale as u64, seq, num]),
            )
        },
        out,
    );
    add(&s.source_stats.stale_served, stale);
}

fn finish(r: Result<Response, ParamError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn cursor(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match gate(&s, &headers, raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    finish((|| {
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(br#"{"data":"#);
        let next = token_page(&s, &ctx, "cursor", &mut out)?;
        out.extend_from_slice(br#","next_cursor":"#);
        let _ = serde_json::to_writer(&mut out, &next);
        out.push(b'}');
        Ok(json_bytes(StatusCode::OK, out))
    })())
}

async fn links(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match gate(&s, &headers, raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    finish((|| {
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(br#"{"data":"#);
        let next = token_page(&s, &ctx, "after", &mut out)?;
        // Every original parameter (auth key, ts, limit, bounds) rides along.
        let next_url = next.map(|tok| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in ctx.params.0.iter().filter(|(k, _)| k != "after") {
                q.append_pair(k, v);
            }
            q.append_pair("after", &tok);
            format!("{}/v1/links/invoices?{}", s.source_url, q.finish())
        });
        out.extend_from_slice(br#","links":{"next":"#);
        let _ = serde_json::to_writer(&mut out, &next_url);
        out.extend_from_slice(b"}}");
        let mut resp = json_bytes(StatusCode::OK, out);
        if let Some(u) = next_url
            && let Ok(v) = HeaderValue::from_str(&format!("<{u}>; rel=\"next\""))
        {
            resp.headers_mut().insert(header::LINK, v);
        }
        Ok(resp)
    })())
}

async fn keyset(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match gate(&s, &headers, raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    finish((|| {
        let limit = limit_param(&ctx.params, "limit")?;
        let mut since = time_param(&ctx.params, "since")?;
        let mut after_id = ctx.params.non_empty("after_id");
        let until = time_param(&ctx.params, "until")?;
        if ctx.faults.loop_pagination && (since.is_some() || after_id.is_some()) {
            bump(&s.source_stats.looped);
            since = None;
            after_id = None;
        }
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(br#"{"data":"#);
        {
            let mut ds = lock(&s.dataset);
            let end = until.map_or(ds.len(), |t| ds.pos_gt(t));
            let lo = match (since, after_id) {
                (Some(t), Some(id)) => ds.pos_after_key(t, id),
                (Some(t), None) => ds.pos_ge(t),
                (None, _) => 0,
            }
            .min(end);
            let hi = (lo + limit).min(end);
            page_into(&s, &mut ds, &ctx, lo..hi, &mut out);
        }
        out.push(b'}');
        Ok(json_bytes(StatusCode::OK, out))
    })())
}

/// Shared by offset and page-number listings: `skip` records into the bounds.
fn skip_page(
    s: &Shared,
    ctx: &Ctx,
    skip: u64,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<usize, ParamError> {
    let after = time_param(&ctx.params, "updated_after")?;
    let before = time_param(&ctx.params, "updated_before")?;
    let mut ds = lock(&s.dataset);
    let range = listing(&ds, ctx, after, before);
    let total = range.len();
    let lo = range.start + usize::try_from(skip).unwrap_or(usize::MAX).min(total);
    let hi = lo.saturating_add(limit).min(range.end);
    let ties = ctx
        .faults
        .unstable_ties
        .then(|| mix(&[s.seed, SIDE_SOURCE, Kind::Ties as u64, ctx.seq]));
    page_with_ties(s, &mut ds, ctx, lo..hi, ties, out);
    Ok(total)
}

async fn offset(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match gate(&s, &headers, raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    finish((|| {
        let limit = limit_param(&ctx.params, "limit")?;
        let mut skip = uint_param(&ctx.params, "offset", 0)?;
        if ctx.faults.loop_pagination && skip > 0 {
            bump(&s.source_stats.looped);
            skip = 0;
        }
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(br#"{"data":"#);
        let total = skip_page(&s, &ctx, skip, limit, &mut out)?;
        out.extend_from_slice(format!(r#","total":{total}}}"#).as_bytes());
        let mut resp = json_bytes(StatusCode::OK, out);
        // As ServiceNow's: the next offset's URL, every other parameter kept.
        let next = skip.saturating_add(limit as u64);
        if next < total as u64 {
            link_next(&mut resp, &s, "/v1/offset/invoices", &ctx, "offset", next);
        }
        Ok(resp)
    })())
}

/// A `Link: <…>; rel="next"` header to `path` with every parameter of the
/// request kept but `param`, which is `value`.
fn link_next(resp: &mut Response, s: &Shared, path: &str, ctx: &Ctx, param: &str, value: u64) {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in ctx.params.0.iter().filter(|(k, _)| k != param) {
        q.append_pair(k, v);
    }
    q.append_pair(param, &value.to_string());
    let next = format!("<{}{path}?{}>; rel=\"next\"", s.source_url, q.finish());
    if let Ok(v) = HeaderValue::from_str(&next) {
        resp.headers_mut().insert(header::LINK, v);
    }
}

async fn pages(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match gate(&s, &headers, raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    finish((|| {
        let per_page = limit_param(&ctx.params, "per_page")?;
        let page = uint_param(&ctx.params, "page", 1)?.max(1);
        let mut effective = page;
        if ctx.faults.loop_pagination && page > 1 {
            bump(&s.source_stats.looped);
            effective = 1;
        }
        let skip = (effective - 1).saturating_mul(per_page as u64);
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(br#"{"items":"#);
        let total = skip_page(&s, &ctx, skip, per_page, &mut out)?;
        out.extend_from_slice(format!(r#","page":{page}}}"#).as_bytes());
        let mut resp = json_bytes(StatusCode::OK, out);
        // As GitHub's: the next page's URL, every other parameter kept.
        if skip.saturating_add(per_page as u64) < total as u64 {
            link_next(&mut resp, &s, "/v1/pages/invoices", &ctx, "page", page + 1);
        }
        Ok(resp)
    })())
}

/// The deletes feed: `{id, deleted_at}` entries in `(deleted_at, id)` order,
/// bounded by `updated_after` / `updated_before` like the listings, paged with
/// an opaque `cursor` (`next_cursor` in the body), behind the same faults.
async fn deleted(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let ctx = match gate(&s, &headers, raw).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    finish((|| {
        let limit = limit_param(&ctx.params, "limit")?;
        let incoming = ctx
            .params
            .non_empty("cursor")
            .map(|t| Token::decode(t, "cursor"))
            .transpose()?;
        let (after, before) = match &incoming {
            Some(t) => (t.a, t.b),
            None => (
                time_param(&ctx.params, "updated_after")?,
                time_param(&ctx.params, "updated_before")?,
            ),
        };
        let mut out = Vec::with_capacity(4 * 1024);
        out.extend_from_slice(br#"{"data":"#);
        let next = lock(&s.dataset).deletions_page(
            after,
            before,
            incoming.as_ref().map(|t| (t.t, t.i.as_str())),
            limit,
            ctx.fmt,
            &mut out,
        );
        let next = next.map(|(t, i)| {
            Token {
                t,
                i,
                a: after,
                b: before,
            }
            .encode()
        });
        out.extend_from_slice(br#","next_cursor":"#);
        let _ = serde_json::to_writer(&mut out, &next);
        out.push(b'}');
        Ok(json_bytes(StatusCode::OK, out))
    })())
}

async fn sim_records(State(s): State<Arc<Shared>>) -> Response {
    let records = lock(&s.dataset).snapshot();
    json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&records).unwrap_or_default(),
    )
}

async fn oauth(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if s.source_holdoff.arrival_violates() {
        bump(&s.source_stats.retry_after_violations);
    }
    s.source_auth
        .token_endpoint(&headers, &body, &s.source_stats)
}
