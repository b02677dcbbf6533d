//! Deterministic fault decisions: seeded hashing, 5xx bursts, the per-key
//! retry cap for destination writes, and the destination token bucket.
//!
//! Nothing here uses a global RNG: every decision is a pure function of the
//! seed, the side, the fault kind and a request identity (a per-side sequence
//! number on the source, an (external id, version, attempt) key on the
//! destination), so a run can be replayed exactly.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;

use crate::{DestFaults, SourceFaults};

/// Distinguishes the two sides in hashes so they never share a fault pattern.
pub(crate) const SIDE_SOURCE: u64 = 0x5352_4300;
pub(crate) const SIDE_DEST: u64 = 0x4453_5400;

/// One hash domain per fault kind, so e.g. "rate limited" and "slow" are
/// independent coin flips for the same request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    RateLimit = 1,
    RateLimitDate = 2,
    BurstStart = 3,
    Slow = 4,
    Stale = 5,
    CommitThenTimeout = 6,
    Token = 7,
    CommitThen502 = 8,
    DelayedApply = 9,
    ItemFails = 10,
    Ties = 11,
    NotJson = 12,
}

pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folds several words into one well-mixed hash; order matters.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, p| splitmix64(h ^ p))
}

/// FNV-1a: stable across platforms and releases, unlike `DefaultHasher`.
pub(crate) fn str_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Maps a hash to [0, 1) using the top 53 bits (exactly representable).
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn chance(ratio: f64, h: u64) -> bool {
    ratio > 0.0 && unit(h) < ratio
}

/// Small seeded generator for building and mutating the dataset.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        Rng(mix(&[seed, stream]))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Uniform in [0, n); n == 0 yields 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Modulo bias is irrelevant for test data of this size.
        self.next_u64() % n
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

const BURST_CODES: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// A run of consecutive 5xx answers. Bursts span requests, so this is the
/// one piece of fault state that depends on arrival order.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    remaining: u32,
    next_code: usize,
}

impl Burst {
    fn in_progress(&mut self) -> Option<StatusCode> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let code = BURST_CODES[self.next_code % BURST_CODES.len()];
        self.next_code += 1;
        Some(code)
    }

    fn start(&mut self, len: u32) -> Option<StatusCode> {
        if len == 0 {
            return None;
        }
        self.remaining = len - 1;
        self.next_code = 1;
        Some(BURST_CODES[0])
    }
}

/// What a fault decision asks the handler to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Proceed,
    RateLimited,
    RateLimitedDate,
    ServerError(StatusCode),
    /// Source: delay then answer normally. Destination: delay, do not apply.
    Slow,
    /// Source only: 200 with a proxy's HTML page in place of the page.
    NotJson,
    /// Destination only: apply, then delay the answer.
    CommitThenTimeout,
    /// Destination only: apply, then answer 502 as a proxy would.
    CommitThen502,
    /// Destination only: hold the write past the client's timeout, then apply it.
    DelayedApply,
}

impl SourceFaults {
    pub(crate) fn is_quiet(&self) -> bool {
        self.rate_limit_ratio <= 0.0
            && self.rate_limit_date_ratio <= 0.0
            && self.burst_start_ratio <= 0.0
            && self.slow_ratio <= 0.0
            && self.not_json_ratio <= 0.0
    }
}

impl DestFaults {
    pub(crate) fn is_quiet(&self) -> bool {
        self.rate_limit_ratio <= 0.0
            && self.rate_limit_date_ratio <= 0.0
            && self.burst_start_ratio <= 0.0
            && self.slow_ratio <= 0.0
            && self.commit_then_timeout_ratio <= 0.0
            && self.commit_then_502_ratio <= 0.0
            && self.delayed_apply_ratio <= 0.0
    }
}

/// Source decision for the request with per-side sequence number `seq`.
/// Precedence: an ongoing burst, 429 (seconds), 429 (date), burst start, slow.
pub(crate) fn decide_source(seed: u64, seq: u64, f: &SourceFaults, burst: &mut Burst) -> Outcome {
    if let Some(code) = burst.in_progress() {
        return Outcome::ServerError(code);
    }
    let h = |k: Kind| mix(&[seed, SIDE_SOURCE, k as u64, seq]);
    if chance(f.rate_limit_ratio, h(Kind::RateLimit)) {
        return Outcome::RateLimited;
    }
    if chance(f.rate_limit_date_ratio, h(Kind::RateLimitDate)) {
        return Outcome::RateLimitedDate;
    }
    if chance(f.burst_start_ratio, h(Kind::BurstStart))
        && let Some(code) = burst.start(f.burst_len)
    {
        return Outcome::ServerError(code);
    }
    if chance(f.slow_ratio, h(Kind::Slow)) {
        return Outcome::Slow;
    }
    if chance(f.not_json_ratio, h(Kind::NotJson)) {
        return Outcome::NotJson;
    }
    Outcome::Proceed
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyState {
    attempts: u32,
    consecutive_faults: u32,
    /// An item of a batch answered with a wait: not to be sent again before.
    not_before: Option<std::time::Instant>,
}

/// Longest run of faults a single destination key can meet; the next
/// attempt always goes through so a retrying client always converges.
pub(crate) const MAX_FAULTS_IN_A_ROW: u32 = 2;

/// Mutable destination fault state: per-key attempts, the burst, the bucket.
#[derive(Debug, Default)]
pub(crate) struct DestFaultState {
    keys: HashMap<u64, KeyState>,
    burst: Burst,
    bucket: Option<TokenBucket>,
    /// When each request of the rolling window went (`rate_limit_window`).
    window: std::collections::VecDeque<Instant>,
    /// Every request is refused until then (`DestFaults::rate_limit_penalty`).
    penalized_until: Option<Instant>,
}

impl DestFaultState {
    /// Token bucket check; true means "let it through".
    pub(crate) fn take_token(&mut self, rps: f64, now: Instant) -> bool {
        let bucket = self
            .bucket
            .get_or_insert_with(|| TokenBucket::full(rps, now));
        bucket.try_take(rps, now)
    }

    /// As [`take_token`](Self::take_token), but an empty bucket refuses
    /// everything for `penalty` from then on.
    pub(crate) fn take_token_or_penalize(
        &mut self,
        rps: f64,
        penalty: Duration,
        now: Instant,
    ) -> bool {
        if self.penalized_until.is_some_and(|until| now < until) {
            return false;
        }
        let taken = self.take_token(rps, now);
        if !taken {
            self.penalized_until = Some(now + penalty);
        }
        taken
    }

    /// A window that rolls: true (and counted) when fewer than `quota`
    /// requests went within the last `span`.
    pub(crate) fn take_in_window(&mut self, quota: usize, span: Duration, now: Instant) -> bool {
        let room = self.window_room(quota, span, now) > 0;
        if room {
            self.window.push_back(now);
        }
        room
    }

    /// Requests the rolling window takes now.
    pub(crate) fn window_room(&mut self, quota: usize, span: Duration, now: Instant) -> usize {
        while self
            .window
            .front()
            .is_some_and(|sent| now.saturating_duration_since(*sent) >= span)
        {
            self.window.pop_front();
        }
        quota.saturating_sub(self.window.len())
    }

    /// The requests the bucket holds now, without taking one; `None` before
    /// the first request filled it.
    pub(crate) fn bucket_level(&mut self, rps: f64, now: Instant) -> Option<f64> {
        let bucket = self.bucket.as_mut()?;
        bucket.refill(rps, now);
        Some(bucket.tokens)
    }

    /// Decision for one attempt of a write or lookup identified by `key`
    /// (a hash of external id + body version). The attempt number is part of
    /// the hash so each retry gets a fresh, but reproducible, coin flip.
    pub(crate) fn decide(&mut self, seed: u64, key: u64, f: &DestFaults) -> Outcome {
        let st = self.keys.entry(key).or_default();
        let attempt = u64::from(st.attempts);
        st.attempts = st.attempts.saturating_add(1);
        if st.consecutive_faults >= MAX_FAULTS_IN_A_ROW {
            st.consecutive_faults = 0;
            return Outcome::Proceed;
        }
        let h = |k: Kind| mix(&[seed, SIDE_DEST, k as u64, key, attempt]);
        let outcome = if let Some(code) = self.burst.in_progress() {
            Outcome::ServerError(code)
        } else if chance(f.rate_limit_ratio, h(Kind::RateLimit)) {
            Outcome::RateLimited
        } else if chance(f.rate_limit_date_ratio, h(Kind::RateLimitDate)) {
            Outcome::RateLimitedDate
        } else if chance(f.burst_start_ratio, h(Kind::BurstStart))
            && let Some(code) = self.burst.start(f.burst_len)
        {
            Outcome::ServerError(code)
        } else if chance(f.slow_ratio, h(Kind::Slow)) {
            Outcome::Slow
        } else if chance(f.commit_then_timeout_ratio, h(Kind::CommitThenTimeout)) {
            Outcome::CommitThenTimeout
        } else if chance(f.commit_then_502_ratio, h(Kind::CommitThen502)) {
            Outcome::CommitThen502
        } else if chance(f.delayed_apply_ratio, h(Kind::DelayedApply)) {
            Outcome::DelayedApply
        } else {
            Outcome::Proceed
        };
        if outcome == Outcome::Proceed {
            st.consecutive_faults = 0;
        } else {
            st.consecutive_faults += 1;
        }
        outcome
    }

    /// Whether one item of a batch, identified by `key`, fails alone this
    /// time. Counted with the key's attempts, so that a client retrying the
    /// item meets at most [`MAX_FAULTS_IN_A_ROW`] failures in a row.
    pub(crate) fn item_fails(&mut self, seed: u64, key: u64, ratio: f64) -> bool {
        let st = self.keys.entry(key).or_default();
        let attempt = u64::from(st.attempts);
        st.attempts = st.attempts.saturating_add(1);
        if st.consecutive_faults >= MAX_FAULTS_IN_A_ROW {
            st.consecutive_faults = 0;
            return false;
        }
        let fails = chance(
            ratio,
            mix(&[seed, SIDE_DEST, Kind::ItemFails as u64, key, attempt]),
        );
        st.consecutive_faults = if fails { st.consecutive_faults + 1 } else { 0 };
        fails
    }

    /// The item `key` was told to wait `wait` before it is sent again.
    pub(crate) fn item_told_to_wait(&mut self, key: u64, wait: std::time::Duration) {
        self.keys.entry(key).or_default().not_before = Some(std::time::Instant::now() + wait);
    }

    /// The item `key` arrives now: whether before the wait it was told (it
    /// was in the answer that told it, so no request of it was on its way).
    pub(crate) fn item_early(&mut self, key: u64) -> bool {
        self.keys
            .get(&key)
            .and_then(|st| st.not_before)
            .is_some_and(|not_before| std::time::Instant::now() < not_before)
    }

    /// Faults were replaced at runtime: an in-flight burst must not outlive them.
    pub(crate) fn reset_burst(&mut self) {
        self.burst = Burst::default();
        self.bucket = None;
    }
}

/// Classic token bucket; capacity equals one second of refill (at least 1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn full(rps: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: rps.max(1.0),
            last: now,
        }
    }

    fn refill(&mut self, rps: f64, now: Instant) {
        let cap = rps.max(1.0);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rps.max(0.0)).min(cap);
        self.last = now;
    }

    fn try_take(&mut self, rps: f64, now: Instant) -> bool {
        self.refill(rps, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `Retry-After` as an HTTP-date. HTTP-dates have whole-second precision,
/// so "now + 2 s" lands 1-2 s ahead once truncated.
pub(crate) fn retry_after_date() -> String {
    httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_cycles_codes_and_ends() {
        let mut b = Burst::default();
        let mut codes = vec![b.start(6).map(|c| c.as_u16())];
        while let Some(c) = b.in_progress() {
            codes.push(Some(c.as_u16()));
        }
        assert_eq!(
            codes,
            [500, 502, 503, 504, 500, 502].map(Some).to_vec(),
            "a burst of 6 cycles through the four 5xx codes"
        );
    }

    #[test]
    fn dest_key_never_faults_more_than_twice_in_a_row() {
        let f = DestFaults {
            rate_limit_ratio: 1.0,
            ..DestFaults::default()
        };
        let mut st = DestFaultState::default();
        let seq: Vec<Outcome> = (0..6).map(|_| st.decide(7, 42, &f)).collect();
        assert_eq!(
            seq,
            [
                Outcome::RateLimited,
                Outcome::RateLimited,
                Outcome::Proceed,
                Outcome::RateLimited,
                Outcome::RateLimited,
                Outcome::Proceed
            ]
        );
    }

    #[test]
    fn bucket_refills_over_time() {
        let t0 = Instant::now();
        let mut st = DestFaultState::default();
        assert!(st.take_token(2.0, t0));
        assert!(st.take_token(2.0, t0));
        assert!(!st.take_token(2.0, t0));
        assert!(st.take_token(2.0, t0 + Duration::from_millis(600)));
    }
}
