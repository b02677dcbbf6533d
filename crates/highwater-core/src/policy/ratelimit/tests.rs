use super::*;
use futures_util::FutureExt;

/// A server allowing `rate` requests per second through a token bucket holding
/// one second of them, answering 429 with `Retry-After: 1` when it is empty,
/// with `X-RateLimit-*`-like headers (remaining, and the whole seconds until
/// the bucket is full) when `headers` is set.
struct Server {
    rate: f64,
    tokens: f64,
    at: Instant,
    headers: bool,
    limited: u32,
    accepted: u32,
}

impl Server {
    fn new(rate: f64, at: Instant, headers: bool) -> Self {
        Server {
            rate,
            tokens: rate,
            at,
            headers,
            limited: 0,
            accepted: 0,
        }
    }

    fn answer(&mut self, now: Instant) -> Answer {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        let status = if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.accepted += 1;
            200
        } else {
            self.limited += 1;
            429
        };
        let quota = self.headers.then(|| Quota {
            remaining: Some(self.tokens.floor() as u64),
            reset: Some(Duration::from_secs(
                ((self.rate - self.tokens) / self.rate).ceil() as u64,
            )),
            limit: Some(self.rate as u64),
            window: None,
            rolling: false,
        });
        Answer {
            status: Some(status),
            quota,
        }
    }
}

/// Drives a pace against `server` for `length`: one request at a time, each
/// answered `latency` after it leaves (a client that could go 1/latency per
/// second). Returns the server.
fn drive(pace: &mut Pace, mut server: Server, latency: Duration, length: Duration) -> Server {
    let start = server.at;
    let mut now = start;
    while now < start + length {
        match pace.try_send(now) {
            Ok(ticket) => {
                now += latency;
                let answer = server.answer(now);
                if answer.status == Some(429) {
                    pace.pause_until(now + Duration::from_secs(1));
                }
                pace.answered(ticket, &answer, now);
            }
            Err(until) => {
                assert!(until > now, "a wait that does not advance");
                now = until;
            }
        }
    }
    server
}

#[test]
fn with_rate_limit_headers_no_429_comes_and_the_pace_is_near_the_limit() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let length = Duration::from_secs(120);
    let server = drive(
        &mut pace,
        Server::new(100.0, start, true),
        Duration::from_millis(1),
        length,
    );
    assert_eq!(server.limited, 0);
    let rate = f64::from(server.accepted) / length.as_secs_f64();
    assert!(rate >= 90.0, "{rate} requests/s");
}

#[test]
fn with_only_retry_after_at_most_one_429_comes_per_probe_period() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let length = Duration::from_secs(600);
    let server = drive(
        &mut pace,
        Server::new(100.0, start, false),
        Duration::from_millis(1),
        length,
    );
    let periods = (length.as_secs_f64() / DEFAULT_PROBE_PERIOD.as_secs_f64()) as u32;
    assert!(
        server.limited <= periods + 1,
        "{} 429s in {periods} periods",
        server.limited
    );
    let rate = f64::from(server.accepted) / length.as_secs_f64();
    assert!(rate >= 90.0, "{rate} requests/s");
}

#[test]
fn a_configured_ceiling_is_never_exceeded_and_probing_stops_there() {
    let start = Instant::now();
    let mut pace = Pace::new(Some(50.0), DEFAULT_PROBE_PERIOD);
    let length = Duration::from_secs(100);
    let server = drive(
        &mut pace,
        Server::new(100.0, start, false),
        Duration::from_millis(1),
        length,
    );
    assert_eq!(server.limited, 0);
    let rate = f64::from(server.accepted) / length.as_secs_f64();
    assert!((49.0..=50.5).contains(&rate), "{rate} requests/s");
}

/// A ceiling of N a second never sends N + 1 requests within a second, even
/// with every request sent as early as the pace lets it and timers waking
/// late now and then: a server counting a sliding second would refuse it.
#[test]
fn a_configured_ceiling_keeps_any_n_plus_one_requests_over_a_second_apart() {
    for ceiling in [5.0, 50.0, 1000.0] {
        let start = Instant::now();
        let mut pace = Pace::new(Some(ceiling), DEFAULT_PROBE_PERIOD);
        let length = Duration::from_secs(30);
        let mut sent = Vec::new();
        let mut now = start;
        let mut wake = 0u64;
        while now < start + length {
            match pace.try_send(now) {
                Ok(ticket) => {
                    sent.push(now);
                    pace.answered(
                        ticket,
                        &Answer {
                            status: Some(200),
                            quota: None,
                        },
                        now,
                    );
                }
                Err(until) => {
                    // One wake in seven comes up to 4 ms late.
                    wake += 1;
                    let late =
                        Duration::from_millis(wake * 13 % 5) * u32::from(wake.is_multiple_of(7));
                    now = until + late;
                }
            }
        }
        let n = ceiling as usize;
        let closest = sent
            .windows(n + 1)
            .map(|w| w[n] - w[0])
            .min()
            .unwrap_or_default();
        assert!(
            closest > Duration::from_secs(1),
            "{ceiling}/s: {n} + 1 in {closest:?}"
        );
        let rate = sent.len() as f64 / length.as_secs_f64();
        assert!(
            rate >= ceiling * 0.97,
            "{ceiling}/s configured, {rate}/s sent"
        );
    }
}

#[test]
fn never_more_requests_than_remain_until_the_reset() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let first = pace.try_send(start).unwrap_or_else(|_| unreachable!());
    // Three more leave before the first answer comes back.
    for _ in 0..3 {
        assert!(pace.try_send(start).is_ok());
    }
    let quota = Quota {
        remaining: Some(5),
        reset: Some(Duration::from_secs(10)),
        limit: Some(100),
        window: None,
        rolling: false,
    };
    let answer = Answer {
        status: Some(200),
        quota: Some(quota),
    };
    pace.answered(first, &answer, start);
    // Five remained after the first; three of them are spent by the requests in flight.
    let mut now = start;
    let mut sent = 0;
    let reset = start + Duration::from_secs(10);
    while now < reset {
        match pace.try_send(now) {
            Ok(_) => sent += 1,
            Err(until) => now = until,
        }
    }
    assert_eq!(sent, 2);
    // After the reset, one request goes to learn the new budget; the next waits for it.
    let probe = pace.try_send(now).unwrap_or_else(|_| unreachable!());
    assert_eq!(pace.try_send(now), Err(now + PROBE_WAIT));
    let fresh = Answer {
        status: Some(200),
        quota: Some(Quota {
            remaining: Some(99),
            reset: Some(Duration::from_secs(10)),
            ..quota
        }),
    };
    pace.answered(probe, &fresh, now);
    assert!(pace.try_send(now).is_ok());
}

#[test]
fn an_answer_overtaken_by_a_later_one_does_not_reopen_the_budget() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let early = pace.try_send(start).unwrap_or_else(|_| unreachable!());
    let late = pace.try_send(start).unwrap_or_else(|_| unreachable!());
    let said = |remaining| Answer {
        status: Some(200),
        quota: Some(Quota {
            remaining: Some(remaining),
            reset: Some(Duration::from_secs(60)),
            limit: None,
            window: None,
            rolling: false,
        }),
    };
    pace.answered(late, &said(0), start);
    pace.answered(early, &said(50), start);
    assert_eq!(pace.try_send(start), Err(start + Duration::from_secs(60)));
}

#[test]
fn the_lower_limit_and_the_longer_probe_period_win() {
    let mut pace = Pace::new(Some(80.0), Duration::from_secs(10));
    pace.join(Some(20.0), Some(Duration::from_secs(30)));
    pace.join(Some(50.0), Some(Duration::from_secs(5)));
    pace.join(None, None);
    let now = Instant::now();
    assert_eq!(pace.rate(now), Some(20.0));
    assert_eq!(pace.probe_period, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_caller_back() {
    let gate = RateGate::new(None, None);
    let stop = Stop::never();
    let start = Instant::now();
    gate.refused(Ticket(0), Some(Duration::from_secs(2)), Duration::ZERO);
    gate.refused(Ticket(0), Some(Duration::from_secs(1)), Duration::ZERO);
    gate.ready(&stop).await.ok();
    assert!(Instant::now() - start >= Duration::from_secs(2));
}

/// `Retry-After: 18446744073709551615` is a valid header: the gate closes for
/// that long (in effect for good) instead of overflowing the clock.
#[tokio::test(start_paused = true)]
async fn a_pause_past_the_end_of_the_clock_closes_the_gate() {
    let gate = RateGate::new(None, None);
    let stop = Stop::never();
    gate.refused(
        Ticket(0),
        Some(Duration::from_secs(u64::MAX)),
        Duration::ZERO,
    );
    gate.refused(Ticket(0), Some(Duration::MAX), Duration::ZERO);
    assert!(gate.ready(&stop).now_or_never().is_none());
    // A shorter pause does not reopen it.
    gate.refused(Ticket(0), Some(Duration::from_secs(1)), Duration::ZERO);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(gate.ready(&stop).now_or_never().is_none());
}

#[tokio::test(start_paused = true)]
async fn waiting_out_a_pause_takes_no_slot_of_the_pace() {
    let gate = RateGate::new(Some(1.0), None);
    let stop = Stop::never();
    let start = Instant::now();
    gate.refused(Ticket(0), Some(Duration::from_millis(300)), Duration::ZERO);
    gate.unpaused(&stop).await.ok();
    assert!(Instant::now() - start >= Duration::from_millis(300));
    // The one request a second is still there for the request itself.
    gate.ready(&stop).await.ok();
    assert!(Instant::now() - start < Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn every_api_of_one_origin_shares_its_pace_and_pauses() {
    let origin = |url: &str| {
        url::Url::parse(url)
            .unwrap_or_else(|_| unreachable!())
            .origin()
    };
    let period = Some(DEFAULT_PROBE_PERIOD);
    let source = RateGate::shared(
        &origin("https://shared.example:8443/v1/items"),
        Some(80.0),
        period,
    );
    // Another sync's destination on the same origin, with a lower limit: it wins.
    let other = RateGate::shared(
        &origin("https://shared.example:8443/crm"),
        Some(50.0),
        period,
    );
    assert!(Arc::ptr_eq(&source, &other));
    let token = RateGate::shared(
        &origin("https://shared.example:8443/oauth/token"),
        None,
        period,
    );
    assert!(Arc::ptr_eq(&source, &token));
    assert!(!Arc::ptr_eq(
        &source,
        &RateGate::shared(
            &origin("https://shared.example:9443/v1"),
            Some(50.0),
            period
        )
    ));
    assert_eq!(source.rate(), Some(50.0));
    let stop = Stop::never();
    let start = Instant::now();
    // 100 requests split between two holders take as long as 100 through one at 50/s.
    for _ in 0..50 {
        source.ready(&stop).await.ok();
        other.ready(&stop).await.ok();
    }
    let elapsed = Instant::now() - start;
    assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
    // A 429 one of them met holds the others back too.
    source.refused(Ticket(0), Some(Duration::from_secs(2)), Duration::ZERO);
    let paused = Instant::now();
    token.unpaused(&stop).await.ok();
    assert!(Instant::now() - paused >= Duration::from_secs(2));
    // Once nobody holds it, the next holder starts afresh.
    let weak = Arc::downgrade(&source);
    drop((source, other, token));
    assert!(weak.upgrade().is_none());
}

#[test]
fn a_lone_429_is_waited_out_without_slowing_down() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let ticket = pace.try_send(start).unwrap_or_else(|_| unreachable!());
    let limited = Answer {
        status: Some(429),
        quota: None,
    };
    pace.answered(ticket, &limited, start);
    assert_eq!(pace.rate(start), None);
    // The next one, more than a probe period later, is alone too.
    let later = start + DEFAULT_PROBE_PERIOD + Duration::from_secs(1);
    let ticket = pace.try_send(later).unwrap_or_else(|_| unreachable!());
    pace.answered(ticket, &limited, later);
    assert_eq!(pace.rate(later), None);
}

/// An API that answers 429 now and then, whatever the rate: two in a row,
/// with nothing accepted between them, teach no rate (a rate of nothing would
/// stall the sync at the slowest pace).
#[test]
fn two_429s_with_nothing_accepted_between_them_teach_no_rate() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let limited = Answer {
        status: Some(429),
        quota: None,
    };
    let ticket = pace.try_send(start).unwrap_or_else(|_| unreachable!());
    pace.answered(ticket, &limited, start);
    let after_pause = start + Duration::from_secs(1);
    let ticket = pace
        .try_send(after_pause)
        .unwrap_or_else(|_| unreachable!());
    pace.answered(ticket, &limited, after_pause);
    assert_eq!(pace.rate(after_pause), None);
}

/// A server that answers 429 to one request in fifty whatever the rate: the
/// pace goes down at most once per probe period, not at every 429.
#[test]
fn rate_limited_answers_at_any_rate_lower_the_pace_at_most_once_per_probe_period() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let mut now = start;
    let mut sent = 0u64;
    let mut rates = Vec::new();
    while now < start + Duration::from_secs(95) {
        match pace.try_send(now) {
            Ok(ticket) => {
                sent += 1;
                now += Duration::from_millis(1);
                let status = if sent.is_multiple_of(50) { 429 } else { 200 };
                if status == 429 {
                    pace.pause_until(now + Duration::from_secs(1));
                }
                let answer = Answer {
                    status: Some(status),
                    quota: None,
                };
                pace.answered(ticket, &answer, now);
                if let Some(rate) = pace.rate(now)
                    && rates.last().is_none_or(|last| *last != rate)
                {
                    rates.push(rate);
                }
            }
            Err(until) => now = until,
        }
    }
    // Learned from the second 429, then lowered after 30, 60 and 90 seconds.
    let lowered = rates.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(lowered <= 3, "{rates:?}");
    assert!(rates.len() <= 4, "{rates:?}");
}

/// Two 429s close together (a pause too short for the server) let one
/// request through between them: the pace does not fall to a crawl for that.
#[test]
fn two_429s_close_together_do_not_stall_the_pace() {
    let start = Instant::now();
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let mut now = start;
    let ok = Answer {
        status: Some(200),
        quota: None,
    };
    let limited = Answer {
        status: Some(429),
        quota: None,
    };
    // Twenty requests a second for ten seconds, then two 429s a second apart.
    for _ in 0..200 {
        let ticket = pace.try_send(now).unwrap_or_else(|_| unreachable!());
        pace.answered(ticket, &ok, now);
        now += Duration::from_millis(50);
    }
    for answer in [&limited, &ok, &limited] {
        let ticket = pace.try_send(now).unwrap_or_else(|_| unreachable!());
        pace.answered(ticket, answer, now);
        now += Duration::from_millis(500);
    }
    let rate = pace.rate(now).unwrap_or(f64::INFINITY);
    assert!(rate >= 8.0, "{rate} requests/s");
}

#[test]
fn workers_sharing_a_ceiling_each_keep_to_their_part() {
    let start = Instant::now();
    // Three workers on one API limited to 30 requests a second: each takes
    // ten, and the server, which lets 30 through, refuses none of them.
    let mut paces: Vec<Pace> = (0..3)
        .map(|_| {
            let mut pace = Pace::new(Some(30.0), DEFAULT_PROBE_PERIOD);
            pace.share(3);
            pace
        })
        .collect();
    assert_eq!(paces[0].rate(start), Some(10.0));
    let mut server = Server::new(30.0, start, false);
    let mut now = start;
    while now < start + Duration::from_secs(20) {
        for pace in &mut paces {
            if let Ok(ticket) = pace.try_send(now) {
                let answer = server.answer(now);
                pace.answered(ticket, &answer, now);
            }
        }
        now += Duration::from_millis(5);
    }
    assert_eq!(server.limited, 0);
    let rate = f64::from(server.accepted) / 20.0;
    assert!((27.0..=31.0).contains(&rate), "{rate} requests a second");
    // Alone again, one takes the whole ceiling.
    paces[0].share(1);
    assert_eq!(paces[0].rate(now), Some(30.0));
}

/// An API that refuses everything for a while once its limit is passed, and
/// says nothing of how long (Airtable: 30 s): each refusal in a row holds
/// every request back twice as long as the one before, up to 30 s; requests
/// already out when one came back are the same refusal; an answer let
/// through starts again from the base.
#[test]
fn refusals_in_a_row_without_a_wait_hold_back_longer_each_time() {
    let base = Duration::from_millis(200);
    let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
    let mut now = Instant::now();
    let mut pauses = Vec::new();
    for _ in 0..10 {
        let first = pace.try_send(now).expect("the pause is over");
        let second = pace.try_send(now).expect("no rate limits it");
        now += Duration::from_millis(5);
        pace.refused(first, None, base, now);
        pace.answered(
            first,
            &Answer {
                status: Some(429),
                quota: None,
            },
            now,
        );
        let until = pace.paused(now).expect("held back");
        // The request sent beside it is the same refusal.
        pace.refused(second, None, base, now);
        assert_eq!(pace.paused(now), Some(until));
        pauses.push((until - now).as_millis());
        now = until;
    }
    assert_eq!(
        pauses,
        [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
    );
    let ticket = pace.try_send(now).expect("the pause is over");
    pace.answered(
        ticket,
        &Answer {
            status: Some(200),
            quota: None,
        },
        now,
    );
    // A request sent long before, refused only now, starts again too.
    pace.refused(Ticket(0), None, base, now);
    assert_eq!(pace.paused(now), Some(now + base));
    // A wait the server names is kept as it is.
    let ticket = pace.try_send(now + base).expect("the pause is over");
    pace.refused(ticket, Some(Duration::from_secs(7)), base, now + base);
    assert_eq!(
        pace.paused(now + base),
        Some(now + base + Duration::from_secs(7))
    );
}

/// A server allowing `max` requests within any `window` that ends at a
/// request (a window that rolls), answering with HubSpot's headers, read as
/// the binary reads them; another client sends a request every `others`,
/// refused when the window is full.
struct Rolling {
    max: usize,
    window: Duration,
    sent: std::collections::VecDeque<Instant>,
    others: Option<(Duration, Instant)>,
    limited: u32,
    accepted: u32,
}

impl Rolling {
    fn new(max: usize, window: Duration, others: Option<Duration>, at: Instant) -> Self {
        Rolling {
            max,
            window,
            sent: std::collections::VecDeque::new(),
            others: others.map(|every| (every, at)),
            limited: 0,
            accepted: 0,
        }
    }

    fn admit(&mut self, at: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|sent| at.saturating_duration_since(*sent) >= self.window)
        {
            self.sent.pop_front();
        }
        let room = self.sent.len() < self.max;
        if room {
            self.sent.push_back(at);
        }
        room
    }

    fn answer(&mut self, now: Instant) -> Answer {
        while let Some((every, next)) = self.others.filter(|(_, next)| *next <= now) {
            self.admit(next);
            self.others = Some((every, next + every));
        }
        let status = if self.admit(now) {
            self.accepted += 1;
            200
        } else {
            self.limited += 1;
            429
        };
        let headers = [
            ("x-hubspot-ratelimit-max", self.max.to_string()),
            (
                "x-hubspot-ratelimit-remaining",
                (self.max - self.sent.len()).to_string(),
            ),
            (
                "x-hubspot-ratelimit-interval-milliseconds",
                self.window.as_millis().to_string(),
            ),
        ];
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        Answer {
            status: Some(status),
            quota: crate::policy::read_quota(header, std::time::SystemTime::now()),
        }
    }
}

/// HubSpot's headers name no reset, and its window may roll. Spread over
/// the window, what remains settled at half the quota (the rest taken by
/// the requests sent in the window): counting those, the pace comes near
/// the quota — or near what another client leaves of it — and meets no 429
/// of its own making.
#[test]
fn a_window_that_rolls_is_used_near_its_quota_without_a_429() {
    let length = Duration::from_secs(120);
    let ten = Duration::from_secs(10);
    // Without another client, 0.9 of the quota; beside one taking half, 0.8
    // of what it leaves: the window fills before its requests show. A short
    // window answered at once: once none remain, a place frees as each
    // request leaves the window, and the window never drains meanwhile.
    for (max, window, latency, others, allowed, share) in [
        (100, ten, 20, None, 10.0, 0.9),
        (100, ten, 20, Some(Duration::from_millis(200)), 5.0, 0.8),
        (200, Duration::from_secs(2), 1, None, 100.0, 0.9),
    ] {
        let start = Instant::now();
        let mut pace = Pace::new(None, DEFAULT_PROBE_PERIOD);
        let mut server = Rolling::new(max, window, others, start);
        let mut now = start;
        while now < start + length {
            match pace.try_send(now) {
                Ok(ticket) => {
                    now += Duration::from_millis(latency);
                    let answer = server.answer(now);
                    pace.answered(ticket, &answer, now);
                }
                Err(until) => now = until,
            }
        }
        let rate = f64::from(server.accepted) / length.as_secs_f64();
        // Another client's requests may take a place of the window between
        // an answer and the next request: once in a few windows.
        let most = if others.is_some() { 6 } else { 0 };
        assert!(
            server.limited <= most,
            "{others:?}: {} answers of 429",
            server.limited
        );
        assert!(
            rate >= share * allowed,
            "{others:?}: {rate} requests/s of {allowed} allowed"
        );
    }
}
