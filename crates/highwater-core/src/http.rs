//! Owns one API connection as sources and sinks see it: a reqwest client with the
//! API's headers, auth, timeout and rate gate, and [`Api::send`], which applies the
//! failure [`policy`](crate::policy) to every request: transient failures are retried
//! with backoff, 401 triggers one token refresh, and an unknown outcome (timeout
//! after send) is retried only when the caller says the request is idempotent.
//! Invariant: no URL query string, header or body of a request appears in an error
//! or log — query strings may carry API keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::auth::{AuthError, Authenticator, sensitive};
use crate::config::HttpSpec;
use crate::obs::{RequestRetried, ResponseReceived, RetryClass, RetryCounts, RetryTally};
use crate::policy::{
    Answer, Class, Failed, GaveUp, Outcome, Quota, RateGate, RetryPolicy, classify,
    parse_retry_after, read_quota, retry,
};
use crate::stop::{Stop, StopReason};

/// A URL as it may be shown: scheme, host, port and path, never the query string or
/// credentials.
pub fn redact(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// Whether an answer of `status` other than 429 refuses the request for the
/// API's rate limit, as its headers say: GitHub answers a passed limit with
/// 403 and `Retry-After` (its secondary limits) or `X-RateLimit-Remaining: 0`
/// (its primary one) — a wait, not credentials refused.
fn throttled(status: StatusCode, retry_after: Option<Duration>, quota: Option<Quota>) -> bool {
    let spent = || {
        quota
            .and_then(|q| q.budget())
            .is_some_and(|(remaining, _)| remaining == 0)
    };
    match status {
        StatusCode::FORBIDDEN => retry_after.is_some() || spent(),
        // Linear answers its rate limit with 400 (`RATELIMITED`), its
        // headers saying no request remains.
        StatusCode::BAD_REQUEST => spent(),
        _ => false,
    }
}

/// The outcome of an answer that is not a success.
fn refusal(status: StatusCode, throttled: bool) -> Outcome {
    match throttled {
        true => Outcome::Throttled(status.as_u16()),
        false => Outcome::Status(status.as_u16()),
    }
}

/// The class a transient outcome is counted under when its request is retried.
fn retry_class(outcome: Outcome) -> RetryClass {
    match outcome {
        Outcome::Status(429) | Outcome::Throttled(_) => RetryClass::RateLimited,
        Outcome::Status(500..=599) => RetryClass::ServerError,
        Outcome::Status(408) | Outcome::TimedOutAfterSend => RetryClass::Timeout,
        Outcome::ConnectFailed | Outcome::Untrusted | Outcome::BrokenAfterSend => {
            RetryClass::Connection
        }
        Outcome::Status(_) | Outcome::ErrorInBody(_) | Outcome::Busy(_) => RetryClass::Other,
    }
}

/// Why a request did not succeed, with its consequence.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Fatal: 401/403, or the token endpoint refused us.
    #[error(
        "{api} refused the credentials: {method} {url} answered {status}{}; check the auth settings and the token's permissions",
        if detail.is_empty() { String::new() } else { format!(" ({detail})") }
    )]
    Unauthorized {
        api: &'static str,
        method: Method,
        url: String,
        status: u16,
        /// What the API said of it (`INVALID_LOGIN`, an expired token).
        detail: String,
    },
    #[error("{api} authentication failed: {0}", api = .1)]
    Auth(#[source] AuthError, &'static str),
    /// Transient failures outlasted the retry policy: stop the run, resumable.
    #[error("{api} kept failing: {method} {url} gave up after {attempts} attempts, last: {last}")]
    Exhausted {
        api: &'static str,
        method: Method,
        url: String,
        attempts: u32,
        last: String,
    },
    /// The API went on answering 429 for longer than `rate_limited_for`:
    /// stop the run, resumable.
    #[error(
        "{api} kept answering 429 (too many requests): {method} {url} was refused for {}s ({attempts} attempts), and waiting for the next would pass `[sync.retry] rate_limited_for`; last: {last}; set `rate_limit` for it below what it allows, or a longer `rate_limited_for`",
        waited.as_secs()
    )]
    RateLimited {
        api: &'static str,
        method: Method,
        url: String,
        attempts: u32,
        waited: Duration,
        last: String,
    },
    /// The request went out and no clear answer came back (a timeout, a broken
    /// connection, a 5xx that may follow a commit); the caller said repeating it
    /// is not safe, so it decides what to do.
    #[error("{api}: {method} {url} got no clear answer ({last}); it may have been applied")]
    Unknown {
        api: &'static str,
        method: Method,
        url: String,
        last: String,
        /// What the unclear answer was, for a caller that retries by other means.
        class: RetryClass,
        /// When the request went out: it may still be applied for a while after.
        sent: Instant,
    },
    /// Record-level: the API refused this request's content.
    #[error("{status} {body}")]
    Rejected { status: u16, body: String },
    /// Fatal: the TLS handshake refused the server ([`Outcome::Untrusted`]).
    #[error(
        "{api}: {method} {url} was not sent: the TLS handshake refused the server ({detail}); make its certificate trusted (its authority, the name in the URL, its dates) or correct the URL"
    )]
    Untrusted {
        api: &'static str,
        method: Method,
        url: String,
        detail: String,
    },
    /// Fatal: an answer no retry will change (e.g. 404 on a list, 501).
    #[error("{api}: {method} {url} answered {status}: {body}")]
    Fatal {
        api: &'static str,
        method: Method,
        url: String,
        status: u16,
        body: String,
    },
    #[error("stopped: {}", .0.as_str())]
    Stopped(StopReason),
}

/// Why one attempt of a request gave no reply.
#[derive(Debug)]
enum Unanswered {
    /// Not to be retried as it is (a stop, the credentials).
    Ended(HttpError),
    /// An answer that is not a success, or none.
    Answered(Answered),
}

#[derive(Debug)]
struct Answered {
    outcome: Outcome,
    detail: String,
    /// When the request went out: an unclear answer may still be applied after.
    sent: Instant,
    attempt: u32,
}

impl Answered {
    fn status(&self) -> u16 {
        match self.outcome {
            Outcome::Status(s)
            | Outcome::Throttled(s)
            | Outcome::ErrorInBody(s)
            | Outcome::Busy(s) => s,
            _ => 0,
        }
    }

    /// What the last attempt met, for a message.
    fn last(&self) -> String {
        match self.status() {
            0 => self.detail.clone(),
            status => format!("HTTP {status} {}", self.detail),
        }
    }
}

/// One request, described independently of retries so it can be sent again.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A JSON body, serialized once: every attempt sends the same bytes.
    pub body: Option<bytes::Bytes>,
    /// Repeating the request has the same effect as sending it once, so an unknown
    /// outcome may be retried as it is.
    pub idempotent: bool,
}

impl Request {
    pub fn get(url: Url) -> Self {
        Request {
            method: Method::GET,
            url,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotent: true,
        }
    }
}

/// A 2xx answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// When the last attempt that got no clear answer went out, if one did:
    /// that attempt, and any before it, may still be applied after this
    /// answer, until the late-write window from then has passed.
    pub unsettled_since: Option<Instant>,
    /// Requests sent to get this answer, this one included.
    pub attempts: u32,
}

impl Reply {
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body)
    }
}

/// One API (source or destination) as used by one run.
#[derive(Debug)]
pub struct Api {
    /// The sync whose requests these are, for the metrics' labels.
    sync: String,
    name: &'static str,
    client: Client,
    spec: HttpSpec,
    auth: Authenticator,
    gate: std::sync::Arc<RateGate>,
    retry: RetryPolicy,
    retries: RetryTally,
    /// Whether any request got an answer, of any status: see `retry_policy`.
    answered: AtomicBool,
}

/// An API that refused requests for its rate limit while none was configured.
#[derive(Debug)]
pub struct Unpaced {
    pub api: &'static str,
    pub origin: String,
    /// Requests it refused that were tried again.
    pub refused: u64,
    /// The requests per second its pace is held to now, if any.
    pub learned: Option<f64>,
}

/// A reqwest client builder with the process's TLS cryptography (ring, see
/// the workspace's `Cargo.toml`) installed first: reqwest built without a
/// provider of its own panics on building a client otherwise.
pub fn client() -> reqwest::ClientBuilder {
    // Installed once per process; a provider installed already stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
}

impl Api {
    /// `name` is "source" or "destination", used in messages.
    pub fn new(
        sync: &str,
        name: &'static str,
        spec: HttpSpec,
        retry: RetryPolicy,
        pool: usize,
    ) -> Result<Self, reqwest::Error> {
        let client = client()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(pool.max(1))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("highwater/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            sync: sync.to_owned(),
            name,
            // A token endpoint that fails gives up after its attempts: a
            // wrong one would otherwise hold every request for an outage.
            auth: Authenticator::new(
                spec.auth.clone(),
                RetryPolicy {
                    outage: Duration::ZERO,
                    ..retry
                },
            ),
            gate: RateGate::shared(
                &spec.base_url.origin(),
                spec.rate_limit,
                Some(spec.rate_limit_probe),
            ),
            client,
            spec,
            retry,
            retries: RetryTally::default(),
            answered: AtomicBool::new(false),
        })
    }

    /// The retry policy of a request now: an API that has answered nothing
    /// in this process is wrong in the config or down from the start, so its
    /// requests give up after their attempts instead of waiting out an outage.
    pub fn retry_policy(&self) -> RetryPolicy {
        if self.answered.load(Ordering::Relaxed) {
            self.retry
        } else {
            RetryPolicy {
                outage: Duration::ZERO,
                ..self.retry
            }
        }
    }

    /// Keeps the refresh tokens the API's OAuth2 endpoint rotates with
    /// `keeper` (the state store), starting each refresh from the one kept
    /// last.
    pub fn keep_tokens_with(&self, keeper: std::sync::Arc<dyn crate::auth::TokenKeeper>) {
        self.auth.keep_tokens_with(keeper);
    }

    /// The sync whose requests these are.
    pub fn sync(&self) -> &str {
        &self.sync
    }

    pub fn base_url(&self) -> &Url {
        &self.spec.base_url
    }

    /// Retries made so far (all requests), by class.
    pub fn retries(&self) -> RetryCounts {
        self.retries.snapshot()
    }

    /// What to tell the person running the sync when this API refused
    /// requests for its rate limit and no `rate_limit` is configured for it:
    /// spaced at a limit, its requests would not have been refused.
    pub fn unpaced(&self) -> Option<Unpaced> {
        let refused = self.retries().rate_limited;
        (self.spec.rate_limit.is_none() && refused > 0).then(|| Unpaced {
            api: self.name,
            origin: self.spec.base_url.origin().ascii_serialization(),
            refused,
            learned: self.gate.rate(),
        })
    }

    /// Every request to this API's origin holds back for `wait`: an answer
    /// asked for it in its body (a batch's item answered 429 with a wait).
    pub fn hold(&self, wait: Duration) {
        self.gate.pause_until(tokio::time::Instant::now() + wait);
    }

    /// A retry its caller makes by other means (a lookup again after a create
    /// without a clear answer): counted, and logged as one.
    pub fn count_retry(&self, class: RetryClass, url: &str, detail: &str) {
        self.retries.count(class);
        RequestRetried {
            sync: &self.sync,
            api: self.name,
            class,
            url,
            status: 0,
            detail,
            attempt: 0,
            delay: Duration::ZERO,
        }
        .emit();
    }

    /// Resolves a path (or absolute URL) against the base URL, keeping the base's
    /// own path prefix. Only the path is parsed on this hot path, not the host.
    pub fn url(&self, path: &str) -> Result<Url, url::ParseError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Url::parse(path);
        }
        let base = &self.spec.base_url;
        let prefix = base.path().trim_end_matches('/');
        let path = path.trim_start_matches('/');
        if path.contains(['?', '#']) {
            let base = base.as_str().trim_end_matches('/');
            return Url::parse(&format!("{base}/{path}"));
        }
        let mut url = base.clone();
        url.set_query(None);
        url.set_path(&format!("{prefix}/{path}"));
        Ok(url)
    }

    /// Sends a request, applying the failure policy. `Ok` is a 2xx answer without an
    /// error in its body.
    pub async fn send(&self, request: &Request, stop: &Stop) -> Result<Reply, HttpError> {
        let refreshed = AtomicBool::new(false);
        let mut unsettled_since = None;
        let sent = retry(
            self.retry_policy(),
            stop,
            request.idempotent,
            |attempt| self.attempt(request, stop, attempt, &refreshed),
            |failed, delay| {
                let Failed {
                    error: Unanswered::Answered(answer),
                    class,
                    ..
                } = failed
                else {
                    return;
                };
                if matches!(
                    class,
                    Class::Transient {
                        outcome_known: false
                    }
                ) {
                    // Attempts go out one after the other: the last unclear
                    // one is the last that may still land.
                    unsettled_since = Some(answer.sent);
                }
                let class = retry_class(answer.outcome);
                self.retries.count(class);
                RequestRetried {
                    sync: &self.sync,
                    api: self.name,
                    class,
                    url: &redact(&request.url),
                    status: answer.status(),
                    detail: &answer.detail,
                    // The attempt about to be made.
                    attempt: answer.attempt + 1,
                    delay,
                }
                .emit();
            },
        )
        .await;
        let failure = match sent {
            Ok((mut reply, _)) => {
                reply.unsettled_since = unsettled_since;
                return Ok(reply);
            }
            Err(failure) => failure,
        };
        let method = request.method.clone();
        let url = redact(&request.url);
        Err(match failure {
            GaveUp::Stopped(reason) => HttpError::Stopped(reason),
            GaveUp::Final {
                error: Unanswered::Ended(e),
                ..
            } => e,
            GaveUp::Final {
                error: Unanswered::Answered(answer),
                class,
            } => match (class, answer.status()) {
                (Class::RecordLevel, status) => HttpError::Rejected {
                    status,
                    body: answer.detail,
                },
                _ if answer.outcome == Outcome::Untrusted => HttpError::Untrusted {
                    api: self.name,
                    method,
                    url,
                    detail: answer.detail,
                },
                (_, status @ (401 | 403)) => HttpError::Unauthorized {
                    api: self.name,
                    method,
                    url,
                    status,
                    detail: answer.detail,
                },
                (_, status) => HttpError::Fatal {
                    api: self.name,
                    method,
                    url,
                    status,
                    body: answer.detail,
                },
            },
            GaveUp::Unknown {
                error: Unanswered::Answered(answer),
                ..
            } => HttpError::Unknown {
                api: self.name,
                method,
                url,
                class: retry_class(answer.outcome),
                sent: answer.sent,
                last: answer.last(),
            },
            GaveUp::Exhausted {
                last: Unanswered::Answered(answer),
                attempts,
                rate_limited: Some(waited),
            } => HttpError::RateLimited {
                api: self.name,
                method,
                url,
                attempts,
                waited,
                last: answer.last(),
            },
            GaveUp::Exhausted {
                last: Unanswered::Answered(answer),
                attempts,
                rate_limited: None,
            } => HttpError::Exhausted {
                api: self.name,
                method,
                url,
                attempts,
                last: answer.last(),
            },
            GaveUp::Unknown {
                error: Unanswered::Ended(e),
                ..
            }
            | GaveUp::Exhausted {
                last: Unanswered::Ended(e),
                ..
            } => e,
        })
    }

    /// One attempt of a request: paced, with credentials, sent, its answer
    /// read. A 401 is met with one token refresh and the request again, within
    /// the same attempt.
    async fn attempt(
        &self,
        request: &Request,
        stop: &Stop,
        attempt: u32,
        refreshed: &AtomicBool,
    ) -> Result<Reply, Failed<Unanswered>> {
        loop {
            let started = Instant::now();
            let answered = self.send_once(request, stop, attempt).await;
            if let Err(Failed {
                error: Unanswered::Answered(answer),
                ..
            }) = &answered
                && answer.status() == 401
                && self.auth.can_refresh()
                && !refreshed.swap(true, Ordering::Relaxed)
            {
                self.auth.invalidate(started).await;
                continue;
            }
            return answered;
        }
    }

    async fn send_once(
        &self,
        request: &Request,
        stop: &Stop,
        attempt: u32,
    ) -> Result<Reply, Failed<Unanswered>> {
        let ended = |e| Failed::new(Unanswered::Ended(e), Class::Fatal);
        let ticket = self
            .gate
            .ready(stop)
            .await
            .map_err(|r| ended(HttpError::Stopped(r)))?;
        let builder = self.build(request);
        let builder = self
            .auth
            .apply(builder, &self.client, stop)
            .await
            .map_err(|e| {
                ended(match e {
                    AuthError::Stopped(reason) => HttpError::Stopped(reason),
                    e => HttpError::Auth(e, self.name),
                })
            })?;
        // The pause may have begun while the credentials were applied (a
        // token fetch takes a while): nothing goes out before it ends.
        self.gate
            .unpaused(stop)
            .await
            .map_err(|r| ended(HttpError::Stopped(r)))?;
        // Checked once more as the request leaves: a worker paused anywhere
        // since the attempt began may have lost its lease meanwhile.
        if let Some(reason) = stop.reason() {
            return Err(ended(HttpError::Stopped(reason)));
        }
        let sent = Instant::now();
        let response = builder.send().await;
        ResponseReceived {
            sync: &self.sync,
            api: self.name,
            status: response.as_ref().map_or(0, |r| r.status().as_u16()),
        }
        .emit();
        let (outcome, retry_after, detail) = match response {
            Ok(mut response) => {
                self.answered.store(true, Ordering::Relaxed);
                let status = response.status();
                let headers = std::mem::take(response.headers_mut());
                let retry_after = (!status.is_success())
                    .then(|| headers.get(RETRY_AFTER))
                    .flatten()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                // The pace follows what the head says the server allows.
                let quota = read_quota(
                    |name| headers.get(name).and_then(|v| v.to_str().ok()),
                    SystemTime::now(),
                );
                let throttled = throttled(status, retry_after, quota);
                // Every request to this API holds back from the moment the
                // head arrives: waiting for the body first would let other
                // requests through while it trickles in.
                if status == StatusCode::TOO_MANY_REQUESTS
                    || throttled
                    || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
                {
                    self.gate.refused(ticket, retry_after, self.retry.base);
                }
                let answer = Answer {
                    // To the pace, a refusal for the rate limit is one.
                    status: Some(if throttled { 429 } else { status.as_u16() }),
                    quota,
                };
                self.gate.answered(ticket, &answer);
                match response.bytes().await {
                    Ok(body) if status.is_success() => {
                        let reply = Reply {
                            status,
                            headers,
                            body,
                            unsettled_since: None,
                            attempts: attempt,
                        };
                        match self.error_in_body(&reply) {
                            None => return Ok(reply),
                            Some(error) => (Outcome::ErrorInBody(status.as_u16()), None, error),
                        }
                    }
                    Ok(body) => {
                        let outcome = match refusal(status, throttled) {
                            Outcome::Status(s) if self.busy(s, &body) => Outcome::Busy(s),
                            outcome => outcome,
                        };
                        (outcome, retry_after, snippet(&body))
                    }
                    // A status is an answer even when its body cannot be read.
                    Err(e) if !status.is_success() => (
                        refusal(status, throttled),
                        retry_after,
                        format!("(the answer's body could not be read: {})", e.without_url()),
                    ),
                    Err(e) if e.is_timeout() => (
                        Outcome::TimedOutAfterSend,
                        None,
                        "timed out reading the answer".into(),
                    ),
                    Err(e) => (Outcome::BrokenAfterSend, None, e.without_url().to_string()),
                }
            }
            Err(e) => {
                self.gate.answered(ticket, &Answer::default());
                match e {
                    e if tls_refused(&e) => (Outcome::Untrusted, None, innermost(&e)),
                    e if e.is_connect() => (Outcome::ConnectFailed, None, connect_detail(&e)),
                    e if e.is_timeout() => (
                        Outcome::TimedOutAfterSend,
                        None,
                        format!("no answer within {:?}", self.spec.timeout),
                    ),
                    e => (Outcome::BrokenAfterSend, None, e.without_url().to_string()),
                }
            }
        };
        Err(Failed {
            error: Unanswered::Answered(Answered {
                outcome,
                detail,
                sent,
                attempt,
            }),
            class: classify(outcome),
            retry_after,
            rate_limited: outcome.rate_limited(),
        })
    }

    /// Whether a refusal that would be the record's, or a 403, names in its
    /// body an error the API asks to be tried again after: Salesforce
    /// answers its request limit with 403 `REQUEST_LIMIT_EXCEEDED`.
    fn busy(&self, status: u16, body: &[u8]) -> bool {
        (status == 403 || classify(Outcome::Status(status)) == Class::RecordLevel)
            && !self.spec.transient_errors.is_empty()
            && std::str::from_utf8(body).is_ok_and(|text| {
                self.spec
                    .transient_errors
                    .iter()
                    .any(|word| text.contains(word.as_str()))
            })
    }

    fn build(&self, request: &Request) -> reqwest::RequestBuilder {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone());
        for (name, value) in &self.spec.headers {
            builder = builder.header(name, sensitive(value.expose()));
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        // Without it, Xero and QuickBooks answer in XML.
        let says_accept = |name: &HeaderName| *name == ACCEPT;
        if !self.spec.headers.iter().any(|(n, _)| says_accept(n))
            && !request.headers.iter().any(|(n, _)| says_accept(n))
        {
            builder = builder.header(ACCEPT, HeaderValue::from_static("application/json"));
        }
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        builder
    }

    fn error_in_body(&self, reply: &Reply) -> Option<String> {
        let path = self.spec.error_path.as_ref()?;
        let body = reply.json().ok()?;
        match path.get(&body) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(error) => Some(format!("{path} = {}", truncate(&error.to_string(), 200))),
        }
    }
}

fn connect_detail(e: &reqwest::Error) -> String {
    format!("could not connect ({})", innermost(e))
}

/// The innermost cause of a failed request, which names what went wrong.
fn innermost(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    innermost.unwrap_or_else(|| "connection failed".into())
}

/// Whether a request failed in the TLS handshake on the server's certificate
/// or on the protocol: a setting to fix, not a fault to wait out. rustls's
/// error arrives inside `io::Error`s (one in another), whose `source` skips
/// what they wrap.
pub(crate) fn tls_refused(e: &reqwest::Error) -> bool {
    std::error::Error::source(e).is_some_and(tls_refused_in)
}

/// Whether `e`, or an error it holds, is rustls refusing the server's
/// certificate or protocol (a database connection's TLS, as a request's).
pub(crate) fn tls_refused_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        let mut wrapped = Some(s);
        while let Some(w) = wrapped {
            if let Some(tls) = w.downcast_ref::<rustls::Error>() {
                return matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented
                        | rustls::Error::PeerIncompatible(_)
                );
            }
            wrapped = w
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .map(|inner| inner as &(dyn std::error::Error + 'static));
        }
        source = s.source();
    }
    false
}

/// The start of an answer's body, for messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    truncate(text.trim(), 300)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests;
