use super::*;

/// A listener on a free port of 127.0.0.1, and its address.
async fn local_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    (listener, addr)
}

/// An API at `base`, without auth or a rate limit, retrying up to
/// `attempts` times with short delays.
fn api_at(base: &str, timeout: Duration, attempts: u32) -> Api {
    let retry = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        max_attempts: attempts,
        outage: Duration::ZERO,
        rate_limited_for: Duration::from_secs(1),
    };
    api_with(base, timeout, retry)
}

fn api_with(base: &str, timeout: Duration, retry: RetryPolicy) -> Api {
    let spec = HttpSpec {
        base_url: Url::parse(base).unwrap_or_else(|_| unreachable!()),
        headers: Vec::new(),
        auth: crate::config::AuthSpec::None,
        timeout,
        rate_limit: None,
        rate_limit_probe: crate::policy::DEFAULT_PROBE_PERIOD,
        error_path: None,
        transient_errors: Vec::new(),
    };
    Api::new("test", "api", spec, retry, 1).unwrap_or_else(|_| unreachable!())
}

/// A server on 127.0.0.1 answering its requests, in turn, with `answers`
/// (the last one again once they run out), each held for its time first;
/// and when each request arrived.
async fn answering(
    answers: Vec<(Duration, &'static str)>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, addr) = local_listener().await;
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&arrivals);
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = std::sync::Arc::clone(&seen);
            let answers = answers.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let n = {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen.push(Instant::now());
                        seen.len()
                    };
                    let (hold, answer) = answers[(n - 1).min(answers.len() - 1)];
                    tokio::time::sleep(hold).await;
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, arrivals, server)
}

const GITHUB_PRIMARY: &str = "HTTP/1.1 403 Forbidden\r\nx-ratelimit-limit: 60\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 1\r\ncontent-length: 2\r\n\r\n{}";
const GITHUB_SECONDARY: &str =
    "HTTP/1.1 403 Forbidden\r\nretry-after: 1\r\ncontent-length: 2\r\n\r\n{}";
const FORBIDDEN: &str = "HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}";
const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";

/// GitHub answers a passed rate limit with 403, saying so in its headers
/// (`X-RateLimit-Remaining: 0` with its reset, or `Retry-After`): a
/// wait, using up no attempt, not credentials refused. A 403 that says
/// nothing of a limit still is.
#[tokio::test]
async fn a_403_that_says_the_rate_limit_was_passed_is_waited_out() {
    let now = Duration::ZERO;
    let (addr, arrivals, server) = answering(vec![
        (now, GITHUB_PRIMARY),
        (now, GITHUB_SECONDARY),
        (now, OK),
    ])
    .await;
    let retry = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        max_attempts: 1,
        outage: Duration::ZERO,
        rate_limited_for: Duration::from_secs(30),
    };
    let api = api_with(&format!("http://{addr}/"), Duration::from_secs(5), retry);
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    let reply = api
        .send(&Request::get(url), &Stop::never())
        .await
        .unwrap_or_else(|e| panic!("the third attempt is answered: {e}"));
    server.abort();
    assert_eq!(reply.status, StatusCode::OK);
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(arrivals.len(), 3, "three attempts");
    // No request went before the budget's reset, nor before the Retry-After.
    for (before, after) in arrivals.iter().zip(&arrivals[1..]) {
        let waited = *after - *before;
        assert!(waited >= Duration::from_millis(900), "{waited:?}");
    }
    assert_eq!(api.retries().rate_limited, 2);

    let (addr, arrivals, server) = answering(vec![(now, FORBIDDEN)]).await;
    let api = api_at(&format!("http://{addr}/"), Duration::from_secs(5), 3);
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    let refused = api.send(&Request::get(url), &Stop::never()).await;
    server.abort();
    assert!(
        matches!(refused, Err(HttpError::Unauthorized { status: 403, .. })),
        "{refused:?}"
    );
    assert_eq!(arrivals.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
}

/// Linear answers a passed rate limit with 400, its
/// `X-RateLimit-Requests-*` headers saying none remain until a reset in
/// epoch milliseconds: a wait, not a request refused. A 400 that says
/// nothing of a limit is refused at once.
#[tokio::test]
async fn a_400_whose_headers_say_no_request_remains_is_waited_out() {
    let reset_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 1_000)
        .unwrap_or_default();
    let limited: &'static str = Box::leak(
        format!(
            "HTTP/1.1 400 Bad Request\r\nx-ratelimit-requests-limit: 1500\r\n\
             x-ratelimit-requests-remaining: 0\r\nx-ratelimit-requests-reset: {reset_ms}\r\n\
             content-length: 60\r\n\r\n{{\"errors\":[{{\"extensions\":{{\"code\":\"RATELIMITED\"}}}}]}}         "
        )
        .into_boxed_str(),
    );
    let now = Duration::ZERO;
    let (addr, arrivals, server) = answering(vec![(now, limited), (now, OK)]).await;
    let api = api_at(&format!("http://{addr}/"), Duration::from_secs(5), 1);
    let url = api.url("/graphql").unwrap_or_else(|_| unreachable!());
    let reply = api
        .send(&Request::get(url), &Stop::never())
        .await
        .unwrap_or_else(|e| panic!("the second attempt is answered: {e}"));
    server.abort();
    assert_eq!(reply.status, StatusCode::OK);
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(500),
        "{arrivals:?}"
    );
    assert_eq!(api.retries().rate_limited, 1);

    const BAD: &str = "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
    let (addr, arrivals, server) = answering(vec![(now, BAD)]).await;
    let api = api_at(&format!("http://{addr}/"), Duration::from_secs(5), 3);
    let url = api.url("/graphql").unwrap_or_else(|_| unreachable!());
    let refused = api.send(&Request::get(url), &Stop::never()).await;
    server.abort();
    assert!(
        matches!(refused, Err(HttpError::Rejected { status: 400, .. })),
        "{refused:?}"
    );
    assert_eq!(arrivals.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
}

/// A refusal whose body names an error the API asks to be tried again after
/// (Notion's 409 `conflict_error`, Salesforce's 403 `REQUEST_LIMIT_EXCEEDED`)
/// is retried where the config names it; otherwise the 409 is the record's
/// and the 403 a refusal of the credentials, with what the API said.
#[tokio::test]
async fn a_refusal_naming_a_transient_error_is_tried_again() {
    const CONFLICT: &str =
        "HTTP/1.1 409 Conflict\r\ncontent-length: 25\r\n\r\n{\"code\":\"conflict_error\"}";
    const LIMIT: &str = "HTTP/1.1 403 Forbidden\r\ncontent-length: 40\r\n\r\n[{\"errorCode\":\"REQUEST_LIMIT_EXCEEDED\"}]";
    let now = Duration::ZERO;
    for (refusal, word) in [
        (CONFLICT, "conflict_error"),
        (LIMIT, "REQUEST_LIMIT_EXCEEDED"),
    ] {
        for (words, answered) in [(vec![word.to_owned()], true), (Vec::new(), false)] {
            let (addr, arrivals, server) = answering(vec![(now, refusal), (now, OK)]).await;
            let mut api = api_at(&format!("http://{addr}/"), Duration::from_secs(5), 3);
            let mut spec = api.spec.clone();
            spec.transient_errors = words;
            api = Api::new("test", "api", spec, api.retry, 1).unwrap_or_else(|_| unreachable!());
            let url = api.url("/v1/pages").unwrap_or_else(|_| unreachable!());
            let sent = api.send(&Request::get(url), &Stop::never()).await;
            server.abort();
            let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).len();
            if answered {
                assert!(sent.is_ok(), "{sent:?}");
                assert_eq!(arrivals, 2);
                assert_eq!(api.retries().other, 1);
            } else {
                assert!(
                    match &sent {
                        Err(HttpError::Rejected { status: 409, .. }) => refusal == CONFLICT,
                        Err(HttpError::Unauthorized {
                            status: 403,
                            detail,
                            ..
                        }) => {
                            refusal == LIMIT && detail.contains(word)
                        }
                        _ => false,
                    },
                    "{sent:?}"
                );
                assert_eq!(arrivals, 1);
            }
        }
    }
}

/// Every transient outcome is counted under the class an operator would name it by.
#[test]
fn retried_outcomes_are_counted_by_class() {
    let cases = [
        (Outcome::Status(429), RetryClass::RateLimited),
        (Outcome::Throttled(403), RetryClass::RateLimited),
        (Outcome::Status(500), RetryClass::ServerError),
        (Outcome::Status(502), RetryClass::ServerError),
        (Outcome::Status(503), RetryClass::ServerError),
        (Outcome::Status(504), RetryClass::ServerError),
        (Outcome::Status(408), RetryClass::Timeout),
        (Outcome::TimedOutAfterSend, RetryClass::Timeout),
        (Outcome::ConnectFailed, RetryClass::Connection),
        (Outcome::BrokenAfterSend, RetryClass::Connection),
        (Outcome::Status(425), RetryClass::Other),
    ];
    for (outcome, class) in cases {
        assert!(
            matches!(classify(outcome), Class::Transient { .. }),
            "{outcome:?} is not retried at all"
        );
        assert_eq!(retry_class(outcome), class, "{outcome:?}");
    }
}

/// A request answered only at its third attempt, the first two left
/// unanswered past the client's timeout: either may still be applied, so
/// the answer is unsettled from the second, the later of the two.
#[tokio::test]
async fn an_answer_is_unsettled_from_its_last_unclear_attempt() {
    // The first two held past the client's timeout.
    let held = Duration::from_secs(5);
    let (addr, arrivals, server) =
        answering(vec![(held, OK), (held, OK), (Duration::ZERO, OK)]).await;
    let api = api_at(&format!("http://{addr}/"), Duration::from_millis(200), 4);
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    let reply = api
        .send(&Request::get(url), &Stop::never())
        .await
        .unwrap_or_else(|e| panic!("the third attempt is answered: {e}"));
    server.abort();
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(arrivals.len(), 3, "three attempts");
    let since = reply
        .unsettled_since
        .unwrap_or_else(|| panic!("the answer follows unclear attempts"));
    // The second attempt went out after the first arrived.
    assert!(
        since > arrivals[0],
        "unsettled from the first attempt, not the second: {:?} before {:?}",
        since,
        arrivals[0]
    );
    assert!(since < arrivals[2], "unsettled from the answered attempt");
}

/// A server whose certificate is not trusted (self-signed here) stops the
/// request at its first attempt, saying what to fix: no retry changes it.
#[tokio::test]
async fn an_untrusted_certificate_stops_at_the_first_attempt() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let cert = rustls::pki_types::CertificateDer::from(
        include_bytes!("../testdata/self-signed.der").to_vec(),
    );
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
        include_bytes!("../testdata/self-signed.key.der")
            .to_vec()
            .into(),
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
    .unwrap_or_else(|e| panic!("server config: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (listener, addr) = local_listener().await;
    let handshakes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&handshakes);
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(socket).await;
            });
        }
    });
    let api = api_at(&format!("https://{addr}/"), Duration::from_secs(2), 8);
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    let error = api
        .send(&Request::get(url), &Stop::never())
        .await
        .err()
        .unwrap_or_else(|| panic!("a self-signed certificate is trusted"));
    server.abort();
    assert!(matches!(error, HttpError::Untrusted { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("invalid peer certificate")
            && message.contains("make its certificate trusted"),
        "{message}"
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "retried: {message}");
}

#[test]
fn paths_join_the_base_url_prefix() {
    let api = api_at("https://api.example.com/crm/", Duration::from_secs(1), 4);
    let url = |p: &str| api.url(p).map(|u| u.to_string()).unwrap_or_default();
    assert_eq!(
        url("/v1/contacts/a%20b"),
        "https://api.example.com/crm/v1/contacts/a%20b"
    );
    assert_eq!(
        url("v1/contacts?x=1"),
        "https://api.example.com/crm/v1/contacts?x=1"
    );
    assert_eq!(
        url("https://other.example.com/x"),
        "https://other.example.com/x"
    );
}

#[test]
fn redaction_drops_query_and_credentials() {
    let url = Url::parse("https://user:pw@api.example.com:8443/v1/x?api_key=s3cret")
        .unwrap_or_else(|_| unreachable!());
    assert_eq!(redact(&url), "https://api.example.com:8443/v1/x");
}

/// An API that refuses a record with 200 and `{"success": false, "error":
/// …}` (`error_path = "error"`): refused once, not retried, with the status
/// it was answered with and the error, not an answer without a status.
#[tokio::test]
async fn a_2xx_whose_body_holds_an_error_is_refused_with_its_status() {
    const REFUSED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 49\r\ncontent-type: application/json\r\n\r\n{\"success\":false,\"error\":\"price must be above 0\"}";
    let (addr, arrivals, server) = answering(vec![(Duration::ZERO, REFUSED)]).await;
    let mut api = api_at(&format!("http://{addr}/"), Duration::from_secs(5), 3);
    api.spec.error_path = Some(crate::record::FieldPath::parse("error"));
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    let refused = api.send(&Request::get(url), &Stop::never()).await;
    server.abort();
    match refused {
        Err(HttpError::Rejected { status, body }) => {
            assert_eq!(status, 200);
            assert_eq!(body, "error = \"price must be above 0\"");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(arrivals.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
}

/// JSON is asked for unless the config says what to accept: Xero and
/// QuickBooks answer in XML to a request that accepts anything.
#[test]
fn json_is_asked_for_unless_the_config_says_otherwise() {
    let accepted = |api: &Api| {
        let url = api.url("/x").unwrap_or_else(|_| unreachable!());
        let built = api
            .build(&Request::get(url))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        built
            .headers()
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let mut api = api_at("http://127.0.0.1:1/", Duration::from_secs(1), 1);
    assert_eq!(accepted(&api), ["application/json"]);
    api.spec.headers = vec![(
        ACCEPT,
        crate::secret::Secret::new("application/vnd.api+json"),
    )];
    assert_eq!(accepted(&api), ["application/vnd.api+json"]);
}

const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}";

/// An API that has answered is waited out through an outage longer than
/// its attempts (twelve answers of 503 against two attempts); one that has
/// answered nothing in the process gives up after its attempts.
#[tokio::test]
async fn an_outage_is_waited_out_once_the_api_has_answered() {
    let retry = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        max_attempts: 2,
        outage: Duration::from_secs(30),
        rate_limited_for: Duration::from_secs(1),
    };
    let mut answers = vec![(Duration::ZERO, OK)];
    answers.extend([(Duration::ZERO, UNAVAILABLE); 12]);
    answers.push((Duration::ZERO, OK));
    let (addr, arrivals, server) = answering(answers).await;
    let api = api_with(&format!("http://{addr}/"), Duration::from_secs(5), retry);
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    api.send(&Request::get(url.clone()), &Stop::never())
        .await
        .unwrap_or_else(|e| panic!("first request: {e}"));
    let reply = api
        .send(&Request::get(url), &Stop::never())
        .await
        .unwrap_or_else(|e| panic!("waited out: {e}"));
    assert_eq!(reply.attempts, 13);
    assert_eq!(arrivals.lock().unwrap_or_else(|e| e.into_inner()).len(), 14);
    server.abort();

    // Port 9 (discard) on loopback: nothing listens there.
    let api = api_with("http://127.0.0.1:9/", Duration::from_secs(5), retry);
    let url = api.url("/v1/x").unwrap_or_else(|_| unreachable!());
    let started = Instant::now();
    let error = api
        .send(&Request::get(url), &Stop::never())
        .await
        .err()
        .unwrap_or_else(|| panic!("nothing listens there"));
    assert!(
        error.to_string().contains("gave up after 2 attempts"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
