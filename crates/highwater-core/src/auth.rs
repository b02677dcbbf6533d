//! Owns authentication of requests to the source and destination: bearer, basic,
//! API key (header or query) and OAuth2 (client credentials, or a refresh
//! token). OAuth2 tokens are cached, refreshed before they expire, and refreshed
//! once more when the API says 401 — an expired token is a normal event, not a
//! failed run. A refresh token the endpoint replaces (Xero and QuickBooks spend
//! each one they answer) is kept with a [`TokenKeeper`], the state store, and
//! every refresh starts from the one kept last: a later process, or another
//! sync with the same credentials, would otherwise present a spent token.
//! Invariant: credentials leave this module only onto the wire, and a
//! rotated refresh token into its keeper.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{AuthSpec, KeyPlacement};
use crate::policy::{
    Answer, Class, Failed, GaveUp, Outcome, RateGate, RetryPolicy, classify, parse_retry_after,
    read_quota, retry,
};
use crate::secret::Secret;
use crate::stop::{Stop, StopReason, instant_after};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Fatal: the credentials are wrong; a person must fix them.
    #[error("OAuth2 token request to {url} was refused ({status}{}): check {check}",
        if answer.is_empty() { String::new() } else { format!(": {answer}") })]
    Refused {
        url: String,
        status: u16,
        /// What the endpoint said (`invalid_scope`, `invalid_grant`…).
        answer: String,
        check: &'static str,
    },
    /// Fatal after retries: the token endpoint is down or unreachable.
    #[error("OAuth2 token request to {url} failed after {attempts} attempts: {last}")]
    Unavailable {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("OAuth2 token endpoint {url} answered without an access_token: {detail}")]
    BadAnswer { url: String, detail: String },
    #[error("stopped: {}", .0.as_str())]
    Stopped(StopReason),
}

/// Where the refresh tokens an OAuth2 endpoint rotates are kept between
/// processes, by credential (`Authenticator`'s hash of the token endpoint,
/// the client id and the configured refresh token).
#[async_trait::async_trait]
pub trait TokenKeeper: Send + Sync + std::fmt::Debug {
    /// The token kept last for `credential`, if any.
    async fn kept(&self, credential: &str) -> Result<Option<String>, String>;
    /// `token` replaces what was kept for `credential`.
    async fn keep(&self, credential: &str, token: &str) -> Result<(), String>;
}

/// Applies one API's credentials to requests.
#[derive(Debug)]
pub struct Authenticator {
    spec: AuthSpec,
    /// The `Authorization` header of a static bearer token, built once.
    static_bearer: Option<HeaderValue>,
    token: Mutex<Option<Token>>,
    /// The refresh token a token endpoint that rotates them gave last: the
    /// configured one may be spent. With whether its keeper has it: if not,
    /// it is newer than what the keeper holds.
    rotated: Mutex<Option<(Secret, bool)>>,
    /// Where rotated refresh tokens are kept, and the credential they are
    /// kept under: a newly configured refresh token is another credential,
    /// and starts from itself.
    keeper: OnceLock<Arc<dyn TokenKeeper>>,
    credential: Option<String>,
    retry: RetryPolicy,
    /// The pace of the token endpoint's origin, shared like any API's: on the
    /// API's own origin it is the API's gate, so token requests take their
    /// slots of its pace, wait out its pauses, and a 429 they meet pauses it.
    token_gate: Option<std::sync::Arc<RateGate>>,
}

#[derive(Debug, Clone)]
struct Token {
    access: Secret,
    /// The refresh token the endpoint gave with it, if any.
    refresh: Option<Secret>,
    refresh_at: Instant,
    /// When it came: a request sent before holds an older one.
    fetched_at: Instant,
}

struct ClientCredentials<'a> {
    token_url: &'a url::Url,
    client_id: &'a str,
    client_secret: &'a Secret,
    scope: Option<&'a str>,
    refresh_token: Option<&'a Secret>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
}

impl Authenticator {
    pub fn new(spec: AuthSpec, retry: RetryPolicy) -> Self {
        let static_bearer = match &spec {
            AuthSpec::Bearer { token, scheme } => Some(authorization(scheme, token)),
            _ => None,
        };
        let token_gate = match &spec {
            AuthSpec::OAuth2 { token_url, .. } => {
                Some(RateGate::shared(&token_url.origin(), None, None))
            }
            _ => None,
        };
        let credential = match &spec {
            AuthSpec::OAuth2 {
                token_url,
                client_id,
                refresh_token: Some(refresh),
                ..
            } => {
                let mut hasher = blake3::Hasher::new();
                for part in [token_url.as_str(), client_id, refresh.expose()] {
                    hasher.update(part.as_bytes());
                    hasher.update(&[0]);
                }
                Some(hasher.finalize().to_hex().to_string())
            }
            _ => None,
        };
        Authenticator {
            spec,
            static_bearer,
            token: Mutex::new(None),
            rotated: Mutex::new(None),
            keeper: OnceLock::new(),
            credential,
            retry,
            token_gate,
        }
    }

    /// Keeps the refresh tokens the endpoint rotates with `keeper`, and
    /// starts each refresh from the one it kept last.
    pub fn keep_tokens_with(&self, keeper: Arc<dyn TokenKeeper>) {
        // Set once, when the API is made: a second keeper changes nothing.
        let _ = self.keeper.set(keeper);
    }

    /// The refresh token to present: one rotated here that its keeper could
    /// not take, else the keeper's, else one rotated here, else the
    /// configured one; and whether it came from the keeper.
    async fn refresh_token(&self, configured: Option<&Secret>) -> (Option<Secret>, bool) {
        let configured = configured.cloned();
        let rotated = self.rotated.lock().await.clone();
        if let Some((token, false)) = rotated {
            return (Some(token), false);
        }
        let (Some(keeper), Some(credential)) = (self.keeper.get(), &self.credential) else {
            return (rotated.map(|(t, _)| t).or(configured), false);
        };
        match keeper.kept(credential).await {
            Ok(Some(kept)) => (Some(Secret::new(kept)), true),
            Ok(None) => (rotated.map(|(t, _)| t).or(configured), false),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the refresh token kept in the state store; presenting the last one known here");
                (rotated.map(|(t, _)| t).or(configured), false)
            }
        }
    }

    /// Keeps the refresh token the endpoint gave in place of the one presented.
    async fn rotated_to(&self, new: &Secret, url: &str) {
        let kept = match (self.keeper.get(), &self.credential) {
            (Some(keeper), Some(credential)) => match keeper.keep(credential, new.expose()).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(
                        url = %url,
                        error = %e,
                        "the OAuth2 token endpoint gave a new refresh token, and the state store could not keep it: it is used for the rest of this process, but the next one starts from a token the endpoint may have spent"
                    );
                    false
                }
            },
            _ => {
                tracing::warn!(
                    url = %url,
                    "the OAuth2 token endpoint gave a new refresh token: it is used for the rest of this process, but kept nowhere without a state store, and the next process starts from the configured one, which an endpoint that rotates them may have spent"
                );
                false
            }
        };
        *self.rotated.lock().await = Some((new.clone(), kept));
    }

    /// Whether a 401 may be cured by fetching a fresh token.
    pub fn can_refresh(&self) -> bool {
        matches!(self.spec, AuthSpec::OAuth2 { .. })
    }

    /// Forgets the cached token after an answer of 401 to a request whose
    /// credentials were put on after `sent_after`; the next request fetches a
    /// new one. A token that came since is kept: the requests in flight with
    /// the old one are answered 401 too, and each would otherwise throw away
    /// the token the one before fetched.
    pub async fn invalidate(&self, sent_after: Instant) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.fetched_at <= sent_after) {
            *cached = None;
        }
    }

    /// Adds the credentials to a request.
    pub async fn apply(
        &self,
        request: RequestBuilder,
        client: &Client,
        stop: &Stop,
    ) -> Result<RequestBuilder, AuthError> {
        Ok(match &self.spec {
            AuthSpec::None => request,
            AuthSpec::Bearer { token, scheme } => {
                let header = self
                    .static_bearer
                    .clone()
                    .unwrap_or_else(|| authorization(scheme, token));
                request.header(AUTHORIZATION, header)
            }
            AuthSpec::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
            AuthSpec::ApiKey { placement, key } => match placement {
                KeyPlacement::Header(name) => request.header(name, sensitive(key.expose())),
                KeyPlacement::Query(param) => request.query(&[(param, key.expose())]),
            },
            AuthSpec::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
                refresh_token,
                scheme,
            } => {
                let mut cached = self.token.lock().await;
                let fresh = cached.as_ref().filter(|t| Instant::now() < t.refresh_at);
                let access = match fresh {
                    Some(token) => token.access.clone(),
                    None => {
                        let client_credentials = ClientCredentials {
                            token_url,
                            client_id,
                            client_secret,
                            scope: scope.as_deref(),
                            refresh_token: refresh_token.as_ref(),
                        };
                        let token = self.fetch_token(client, &client_credentials, stop).await?;
                        let access = token.access.clone();
                        *cached = Some(token);
                        access
                    }
                };
                request.header(AUTHORIZATION, authorization(scheme, &access))
            }
        })
    }

    async fn fetch_token(
        &self,
        client: &Client,
        credentials: &ClientCredentials<'_>,
        stop: &Stop,
    ) -> Result<Token, AuthError> {
        let ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            refresh_token,
        } = credentials;
        let url = crate::http::redact(token_url);
        let (presented, from_keeper) = self.refresh_token(*refresh_token).await;
        let refresh = presented.as_ref();
        let mut form = vec![
            (
                "grant_type",
                match refresh {
                    Some(_) => "refresh_token",
                    None => "client_credentials",
                },
            ),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(refresh) = refresh {
            form.push(("refresh_token", refresh.expose()));
        }
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        // Asking for a token twice is harmless: an unclear answer is repeated too.
        let fetched = retry(
            self.retry,
            stop,
            true,
            |_| self.token_attempt(client, token_url, &form, &url, stop),
            |_, _| {},
        )
        .await;
        match fetched {
            Ok((token, _)) => {
                if let Some(new) = &token.refresh
                    && refresh.is_some_and(|old| old.expose() != new.expose())
                {
                    self.rotated_to(new, &url).await;
                }
                Ok(token)
            }
            Err(GaveUp::Final {
                error: TokenFailure::Ended(e),
                ..
            }) => Err(e),
            Err(GaveUp::Final {
                error: TokenFailure::Answered(outcome, answer),
                ..
            }) => Err(AuthError::Refused {
                url,
                answer,
                status: match outcome {
                    Outcome::Status(s) => s,
                    _ => 0,
                },
                check: match refresh {
                    Some(_) if from_keeper => {
                        "client_id and client_secret, and the refresh token the endpoint gave last (kept in the state store; a new `refresh_token` in the config replaces it)"
                    }
                    Some(_) => "client_id, client_secret and refresh_token",
                    None => "client_id and client_secret",
                },
            }),
            Err(
                GaveUp::Exhausted { last, attempts, .. }
                | GaveUp::Unknown {
                    error: last,
                    attempts,
                },
            ) => Err(AuthError::Unavailable {
                url,
                attempts,
                last: match last {
                    TokenFailure::Answered(outcome, _) => describe(outcome),
                    TokenFailure::Ended(e) => e.to_string(),
                },
            }),
            Err(GaveUp::Stopped(reason)) => Err(AuthError::Stopped(reason)),
        }
    }

    /// One request for a token, paced by the token endpoint's origin.
    async fn token_attempt(
        &self,
        client: &Client,
        token_url: &url::Url,
        form: &[(&str, &str)],
        url: &str,
        stop: &Stop,
    ) -> Result<Token, Failed<TokenFailure>> {
        let ended = |e| Failed::new(TokenFailure::Ended(e), Class::Fatal);
        let ticket = match &self.token_gate {
            Some(gate) => Some(
                gate.ready(stop)
                    .await
                    .map_err(|r| ended(AuthError::Stopped(r)))?,
            ),
            None => None,
        };
        let started = Instant::now();
        let response = client.post(token_url.clone()).form(form).send().await;
        let retry_after = response
            .as_ref()
            .ok()
            .filter(|r| !r.status().is_success())
            .and_then(|r| r.headers().get(reqwest::header::RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        if let (Some(gate), Some(ticket)) = (&self.token_gate, ticket) {
            let answer = match &response {
                Ok(r) => Answer {
                    status: Some(r.status().as_u16()),
                    quota: read_quota(
                        |name| r.headers().get(name).and_then(|v| v.to_str().ok()),
                        std::time::SystemTime::now(),
                    ),
                },
                Err(_) => Answer::default(),
            };
            if answer.status == Some(429) {
                gate.refused(ticket, retry_after, self.retry.base);
            }
            gate.answered(ticket, &answer);
        }
        let outcome = match response {
            Ok(response) if response.status().is_success() => {
                let body = response.bytes().await.map_err(|e| {
                    ended(AuthError::BadAnswer {
                        url: url.to_owned(),
                        detail: e.without_url().to_string(),
                    })
                })?;
                let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
                    ended(AuthError::BadAnswer {
                        url: url.to_owned(),
                        detail: e.to_string(),
                    })
                })?;
                return Ok(Token {
                    access: Secret::new(answer.access_token),
                    refresh: answer.refresh_token.map(Secret::new),
                    refresh_at: refresh_at(started, answer.expires_in),
                    fetched_at: Instant::now(),
                });
            }
            Ok(response) => {
                let status = response.status().as_u16();
                // An OAuth2 endpoint names what it refused in its body
                // (RFC 6749 5.2: `error`, `error_description`).
                let body = response.bytes().await.unwrap_or_default();
                return Err(Failed {
                    error: TokenFailure::Answered(
                        Outcome::Status(status),
                        crate::http::snippet(&body),
                    ),
                    class: classify(Outcome::Status(status)),
                    retry_after,
                    rate_limited: Outcome::Status(status).rate_limited(),
                });
            }
            Err(e) if crate::http::tls_refused(&e) => Outcome::Untrusted,
            Err(e) if e.is_connect() => Outcome::ConnectFailed,
            Err(e) if e.is_timeout() => Outcome::TimedOutAfterSend,
            Err(_) => Outcome::BrokenAfterSend,
        };
        Err(Failed {
            error: TokenFailure::Answered(outcome, String::new()),
            class: classify(outcome),
            retry_after,
            rate_limited: outcome.rate_limited(),
        })
    }
}

/// Why one token request did not give a token.
#[derive(Debug)]
enum TokenFailure {
    /// Not to be retried as it is.
    Ended(AuthError),
    /// What came back, classified by the retry loop's caller, with the
    /// body of an answer that was one.
    Answered(Outcome, String),
}

/// When a token fetched at `started` is replaced, given the lifetime in seconds
/// the token endpoint gave it (an hour when it gave none). Any `u64` is a valid
/// answer, so the instant is bounded by [`instant_after`], not by the clock.
fn refresh_at(started: Instant, expires_in: Option<u64>) -> Instant {
    let ttl = Duration::from_secs(expires_in.unwrap_or(3600));
    // Refresh early enough that a request never carries a token that
    // expires in flight, without refreshing constantly on short TTLs.
    let margin = (ttl / 5).min(Duration::from_secs(60));
    instant_after(started, ttl - margin)
}

fn describe(outcome: Outcome) -> String {
    match outcome {
        Outcome::Status(s) | Outcome::Throttled(s) | Outcome::Busy(s) => format!("HTTP {s}"),
        Outcome::ConnectFailed => "connection refused or unreachable".into(),
        Outcome::Untrusted => {
            "the TLS handshake refused the server (its certificate is not trusted, or no protocol in common)".into()
        }
        Outcome::TimedOutAfterSend => "timed out".into(),
        Outcome::BrokenAfterSend => "connection broken".into(),
        Outcome::ErrorInBody(status) => format!("HTTP {status} with an error in its body"),
    }
}

fn authorization(scheme: &str, token: &Secret) -> HeaderValue {
    sensitive(&format!("{scheme} {}", token.expose()))
}

/// A header value marked sensitive so that HTTP-layer debug output hides it.
pub(crate) fn sensitive(value: &str) -> HeaderValue {
    let mut header =
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Forms = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

    /// A token endpoint on 127.0.0.1 answering every request with a new
    /// token, and a new refresh token; how many it gave, and the forms it
    /// was sent.
    async fn token_endpoint() -> (
        url::Url,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
        Forms,
    ) {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("address");
        let given = std::sync::Arc::new(AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&given);
        let forms = Forms::default();
        let sent = std::sync::Arc::clone(&forms);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = std::sync::Arc::clone(&counter);
                let sent = std::sync::Arc::clone(&sent);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    // The form is short: it comes with the head.
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let form = text.split("\r\n\r\n").nth(1).unwrap_or_default();
                    sent.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(form.to_owned());
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!(
                        r#"{{"access_token":"t{n}","expires_in":3600,"refresh_token":"r{n}"}}"#
                    );
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/oauth/token")).expect("url");
        (url, given, forms)
    }

    /// OAuth2 as the client `hw` with the secret `s`.
    fn oauth2(token_url: url::Url, refresh_token: Option<&str>, scheme: &str) -> Authenticator {
        Authenticator::new(
            AuthSpec::OAuth2 {
                token_url,
                client_id: "hw".into(),
                client_secret: Secret::new("s"),
                scope: None,
                refresh_token: refresh_token.map(Secret::new),
                scheme: scheme.into(),
            },
            RetryPolicy::default(),
        )
    }

    /// The `Authorization` header `auth` puts on a request.
    async fn header(auth: &Authenticator, client: &Client) -> String {
        let request = auth
            .apply(client.get("http://127.0.0.1:9/"), client, &Stop::never())
            .await
            .expect("credentials")
            .build()
            .expect("request");
        request.headers()[AUTHORIZATION]
            .to_str()
            .expect("header")
            .to_owned()
    }

    /// A refresh token gets the tokens (Zoho's grant), under the API's own
    /// scheme; one the endpoint gives in its place is used from then on.
    #[tokio::test]
    async fn a_refresh_token_gets_the_tokens_and_a_new_one_replaces_it() {
        let (token_url, _, forms) = token_endpoint().await;
        let auth = oauth2(token_url, Some("r0"), "Zoho-oauthtoken");
        let client = crate::http::client().build().expect("client");
        assert_eq!(header(&auth, &client).await, "Zoho-oauthtoken t1");
        auth.invalidate(Instant::now()).await;
        assert_eq!(header(&auth, &client).await, "Zoho-oauthtoken t2");
        let forms = forms.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            forms,
            [
                "grant_type=refresh_token&client_id=hw&client_secret=s&refresh_token=r0",
                "grant_type=refresh_token&client_id=hw&client_secret=s&refresh_token=r1",
            ]
        );
    }

    /// A refresh token the endpoint replaces is kept in the state store: a
    /// later process starts from it, not from the spent configured one,
    /// and one that refreshes with the same credentials takes the newest
    /// another rotated; a newly configured token starts from itself.
    #[tokio::test]
    async fn a_rotated_refresh_token_is_kept_in_the_state_store() {
        let (token_url, _, forms) = token_endpoint().await;
        let dir = std::env::temp_dir().join(format!("hw-auth-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::state::Store::open(&dir.join("state.db"))
            .await
            .expect("store");
        let keeper: Arc<dyn TokenKeeper> = Arc::new(store.clone());
        let client = crate::http::client().build().expect("client");
        let first = oauth2(token_url.clone(), Some("r0"), "Bearer");
        first.keep_tokens_with(Arc::clone(&keeper));
        assert_eq!(header(&first, &client).await, "Bearer t1");
        // A later process with the same config.
        let later = oauth2(token_url.clone(), Some("r0"), "Bearer");
        later.keep_tokens_with(Arc::clone(&keeper));
        assert_eq!(header(&later, &client).await, "Bearer t2");
        // The first one's next refresh presents what the later one was given.
        first.invalidate(Instant::now()).await;
        assert_eq!(header(&first, &client).await, "Bearer t3");
        let renewed = oauth2(token_url, Some("n0"), "Bearer");
        renewed.keep_tokens_with(keeper);
        assert_eq!(header(&renewed, &client).await, "Bearer t4");
        let presented: Vec<String> = forms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|f| f.rsplit('=').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(presented, ["r0", "r1", "r2", "n0"]);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Requests in flight with a token the API stopped taking are each
    /// answered 401: the first one's refresh fetches a new token, and the
    /// others' keep it rather than fetch one each.
    #[tokio::test]
    async fn a_401_to_a_request_sent_before_the_token_came_keeps_it() {
        let (token_url, given, forms) = token_endpoint().await;
        let auth = oauth2(token_url, None, "Bearer");
        let client = crate::http::client().build().expect("client");
        let token = async || header(&auth, &client).await;
        assert_eq!(token().await, "Bearer t1");
        let sent = Instant::now();
        // The first 401: a new token.
        auth.invalidate(sent).await;
        assert_eq!(token().await, "Bearer t2");
        // Three more requests sent with the first one: the second is kept.
        for _ in 0..3 {
            auth.invalidate(sent).await;
            assert_eq!(token().await, "Bearer t2");
        }
        assert_eq!(given.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A 401 to a request sent with the second one fetches a third.
        auth.invalidate(Instant::now()).await;
        assert_eq!(token().await, "Bearer t3");
        let forms = forms.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(
            forms
                .iter()
                .all(|f| f == "grant_type=client_credentials&client_id=hw&client_secret=s"),
            "{forms:?}"
        );
    }

    #[test]
    fn a_token_that_never_expires_does_not_overflow_the_clock() {
        let started = Instant::now();
        assert!(refresh_at(started, Some(u64::MAX)) > started + Duration::from_secs(3600));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever lifetime the token endpoint gives, the token is replaced before
        /// it expires, and not before four fifths of its life (or a decade) passed.
        #[test]
        fn a_token_of_any_lifetime_is_replaced_before_it_expires(
            expires_in in prop_oneof![any::<u64>(), 0u64..100_000],
        ) {
            let started = Instant::now();
            let lived = refresh_at(started, Some(expires_in)).duration_since(started);
            let ttl = Duration::from_secs(expires_in);
            prop_assert!(lived <= ttl, "{lived:?} > {ttl:?}");
            let decade = Duration::from_secs(10 * 365 * 86_400);
            prop_assert!(lived >= (ttl - ttl / 5).min(decade), "{lived:?} of {ttl:?}");
        }
    }
}
