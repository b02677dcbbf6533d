//! HTTP plumbing shared by both sides: query parsing, time parameters,
//! JSON error bodies, 429/5xx responses and shutdown-aware sleeping.

use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use tokio::sync::watch;

use crate::faults::retry_after_date;
use crate::holdoff::Holdoff;

/// Query pairs in request order (the links endpoint re-emits them verbatim).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Params(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Empty values count as absent: `?cursor=` is how many clients say "none".
    pub(crate) fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ParamError {
    #[error("invalid `{0}`: expected RFC 3339 or epoch seconds/milliseconds")]
    Time(&'static str),
    #[error("invalid `{0}`: expected a non-negative integer")]
    Integer(&'static str),
    #[error("invalid `{0}`: not a token issued by this API")]
    Token(&'static str),
}

impl IntoResponse for ParamError {
    fn into_response(self) -> Response {
        json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some(&self.to_string()),
        )
    }
}

/// Integers below 10^11 are epoch seconds (that is year 5138), larger ones
/// epoch milliseconds. Returns microseconds since the epoch.
pub(crate) fn time_param(p: &Params, name: &'static str) -> Result<Option<i64>, ParamError> {
    let Some(raw) = p.non_empty(name) else {
        return Ok(None);
    };
    if let Ok(n) = raw.parse::<i64>() {
        let us = if n.abs() < 100_000_000_000 {
            n.checked_mul(1_000_000)
        } else {
            n.checked_mul(1_000)
        };
        return us.map(Some).ok_or(ParamError::Time(name));
    }
    // A literal `+` in an unencoded offset arrives as a space after form decoding.
    let fixed = raw.replace(' ', "+");
    fixed
        .parse::<Timestamp>()
        .map(|t| Some(t.as_microsecond()))
        .map_err(|_| ParamError::Time(name))
}

pub(crate) fn uint_param(p: &Params, name: &'static str, default: u64) -> Result<u64, ParamError> {
    match p.non_empty(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| ParamError::Integer(name)),
    }
}

pub(crate) const DEFAULT_LIMIT: u64 = 100;
pub(crate) const MAX_LIMIT: u64 = 1000;

/// Page size: default 100, clamped to 1..=1000 like most real APIs do
/// (rather than rejecting out-of-range values).
pub(crate) fn limit_param(p: &Params, name: &'static str) -> Result<usize, ParamError> {
    let n = uint_param(p, name, DEFAULT_LIMIT)?;
    Ok(n.clamp(1, MAX_LIMIT) as usize)
}

pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn json_value(status: StatusCode, v: &serde_json::Value) -> Response {
    json_bytes(status, serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn json_error(status: StatusCode, error: &str, message: Option<&str>) -> Response {
    let v = match message {
        Some(m) => serde_json::json!({ "error": error, "message": m }),
        None => serde_json::json!({ "error": error }),
    };
    json_value(status, &v)
}

pub(crate) fn unauthorized() -> Response {
    json_error(StatusCode::UNAUTHORIZED, "unauthorized", None)
}

/// A 429 with `Retry-After: <secs>`, noted in `holdoff`. Its body follows its
/// head after `body_delay`.
pub(crate) fn rate_limited(
    secs: u64,
    holdoff: &Holdoff,
    body_delay: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Response {
    holdoff.announced(Duration::from_secs(secs));
    too_many_requests(HeaderValue::from(secs), body_delay, shutdown)
}

/// A 429 with `Retry-After: <HTTP-date>`, noted in `holdoff`.
pub(crate) fn rate_limited_date(
    holdoff: &Holdoff,
    body_delay: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Response {
    let date = retry_after_date();
    holdoff.announced_until(httpdate::parse_http_date(&date).unwrap_or_else(|_| SystemTime::now()));
    let value = HeaderValue::from_str(&date).unwrap_or(HeaderValue::from_static("1"));
    too_many_requests(value, body_delay, shutdown)
}

/// A 429 that says nothing of how long to wait.
pub(crate) fn refused_silently() -> Response {
    json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        Some("rate limit exceeded, try again later"),
    )
}

fn too_many_requests(
    retry_after: HeaderValue,
    body_delay: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Response {
    let mut resp = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        Some("too many requests"),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, retry_after);
    if body_delay.is_zero() {
        return resp;
    }
    // The head goes out now; the body waits: a client must not need the body
    // to know it has to hold back.
    let (parts, body) = resp.into_parts();
    let shutdown = shutdown.clone();
    let late = futures_util::stream::once(async move {
        pause(&shutdown, body_delay).await;
        axum::body::to_bytes(body, usize::MAX).await
    });
    Response::from_parts(parts, Body::from_stream(late))
}

pub(crate) fn server_error(code: StatusCode) -> Response {
    json_error(code, "server_error", Some("upstream trouble, try again"))
}

/// Waits out a request's configured latency, to within a fraction of a
/// millisecond, unless the simulator is shutting down (false then).
pub(crate) async fn latency(shutdown: &watch::Receiver<bool>, d: Duration) -> bool {
    latency_until(shutdown, Instant::now() + d).await
}

/// Waits until `due`, a few tens of microseconds late at most, unless the
/// simulator is shutting down (false then). Tokio's timers fire on the first
/// millisecond tick past their deadline, and the runtime may see that later
/// still: a latency of 10 ms took 11.6–12 ms a request for 16 concurrent
/// writers, so no client could reach the rate the configured latency
/// allows. A thread of the blocking pool sleeps instead.
pub(crate) async fn latency_until(shutdown: &watch::Receiver<bool>, due: Instant) -> bool {
    let left = due.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return true;
    }
    let mut rx = shutdown.clone();
    tokio::select! {
        _ = tokio::task::spawn_blocking(move || std::thread::sleep(left)) => true,
        _ = rx.wait_for(|stop| *stop) => false,
    }
}

/// Sleeps unless the simulator is shutting down, so slow faults never hold
/// up a graceful shutdown. Returns false if interrupted.
pub(crate) async fn pause(shutdown: &watch::Receiver<bool>, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    let mut rx = shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = rx.wait_for(|stop| *stop) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_params_accept_all_forms() {
        let p = Params::parse(Some(
            "a=2026-01-01T00:00:00.5Z&b=1767225600&c=1767225600500&d=2026-01-01T01:00:00+01:00&e=nope",
        ));
        let base = 1_767_225_600_000_000i64;
        assert_eq!(time_param(&p, "a").ok().flatten(), Some(base + 500_000));
        assert_eq!(time_param(&p, "b").ok().flatten(), Some(base));
        assert_eq!(time_param(&p, "c").ok().flatten(), Some(base + 500_000));
        assert_eq!(time_param(&p, "d").ok().flatten(), Some(base));
        assert!(time_param(&p, "e").is_err());
        assert_eq!(time_param(&p, "zz").ok().flatten(), None);
    }
}
