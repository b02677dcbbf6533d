//! Owns pacing: how fast requests may go to one API origin (scheme, host and
//! port). [`Pace`] is the plain state — a configured ceiling, what the server's
//! rate-limit headers allow, what 429s without such headers taught, and pauses
//! — deciding from instants it is given; [`RateGate`] shares one `Pace` between
//! every request to the origin in the process ([`RateGate::shared`]) and waits
//! through [`Stop::sleep`], so pacing follows tokio's (pausable) clock.
//!
//! How the pace is set, tightest first:
//! - a `Retry-After` closes the gate for everyone until it passes;
//! - a budget from the headers (`remaining` until `reset`): never more requests
//!   than the server said remain, counting every request sent after the one it
//!   answered as already spent (in a window that rolls, a request of this
//!   process leaving the window frees a place for one more); once the reset
//!   passes, one request at a time until an answer says what the new window
//!   holds;
//! - a rate: the lowest of the configured ceiling, the budget spread over the
//!   time to its reset, the policy's quota over its window, and the rate
//!   learned from 429s that carried no such headers. A budget of a window
//!   that rolls (HubSpot's) counts, besides what remains, this process's
//!   requests that will leave the window meanwhile, less a margin: spread
//!   alone, what remains settles at half the quota, the other half taken up
//!   by the requests sent in the window.
//!
//! Learning without headers (multiplicative decrease, additive increase): two
//! 429s within a probe period set the rate to what the server let through
//! between them, a whole pause and the refill after it (a lone one may be
//! chance), never below half of its average so far; once learned, a 429 lowers the rate in force by a tenth; at most
//! one change down per probe period; 429s of requests sent before the last one
//! came back are the same event. After a probe period without a 429 the rate
//! rises by a twentieth of the rate first learned, until a 429 comes again or
//! the ceiling is reached.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::quota::Quota;
use crate::stop::{Stop, StopReason, instant_after};

/// How long a probe period lasts unless configured: a 429-free period after
/// which the learned rate rises, and the shortest time between two decreases.
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(30);

/// Once a budget's reset has passed, the one request let out waits this long
/// for its answer before another goes (an answer lost to a cancelled request
/// must not hold the gate shut).
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// The share of the rate a 429 met that the next rate may be at most.
const DECREASE: f64 = 0.9;
/// The share of a learned rate added after each probe period without a 429.
const INCREASE: f64 = 0.05;
/// The share of the average rate the server let through so far below which
/// what two 429s close together let through does not lower the pace.
const FLOOR: f64 = 0.5;
/// The slowest learned pace: one request every twenty seconds.
const SLOWEST: f64 = 0.05;
/// Requests may go early by up to this many intervals (and 50 ms at most),
/// so a timer that wakes late does not cost the pace its slot.
const BURST_INTERVALS: u32 = 4;
const BURST_LONGEST: Duration = Duration::from_millis(50);
/// At the configured ceiling of N a second, requests are spaced this share
/// wider and go early by `CEILING_EARLY` at most, so that any N + 1 of them
/// span more than a second: a server counting requests in a sliding second
/// (Airtable: five, then a 30 s penalty) refuses the one that makes N + 1,
/// which requests paced exactly N a second, or early by the burst
/// tolerance, send.
const CEILING_MARGIN: f64 = 0.01;
const CEILING_EARLY: Duration = Duration::from_millis(5);
/// The longest pause after refusals in a row that named no wait.
const REFUSED_LONGEST: Duration = Duration::from_secs(30);
/// Of a rolling window's quota, the share left unspent (and two requests at
/// least): requests in flight, and the window's edges as this process and
/// the server each see them, are not counted in what remains.
const ROLLING_MARGIN: f64 = 0.02;

/// What came back for one request, as far as the pace cares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Answer {
    /// The status, or `None` when no answer came (connection failed, timeout).
    pub status: Option<u16>,
    /// The answer's rate-limit headers, read by [`read_quota`](super::read_quota).
    pub quota: Option<Quota>,
}

/// The permission to send one request; hand it back with its [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The pace of one API origin: plain state, told the time by its caller.
#[derive(Debug, Clone)]
pub struct Pace {
    ceiling: Option<f64>,
    /// How many workers share the ceiling: each takes its part.
    workers: u32,
    probe_period: Duration,
    /// Tickets handed out so far; the next one's number.
    issued: u64,
    /// When the next request is due at the current rate (GCRA's theoretical
    /// arrival time).
    due: Option<Instant>,
    paused_until: Option<Instant>,
    /// What the headers last said about the budget.
    budget: Option<Budget>,
    /// The policy's quota over its window, when the headers named one.
    policy_rate: Option<f64>,
    /// After a budget's reset passed: the request let out to learn the new one.
    probe: Option<(u64, Instant)>,
    /// The rate learned from 429s without headers.
    learned: Option<Learned>,
    /// 429s of tickets below this belong to the last event already counted.
    event_from: u64,
    /// When the last 429 without headers came, and `accepted` then.
    last_429: Option<(Instant, u64)>,
    last_decrease: Option<Instant>,
    /// Refusals for the rate limit since the last answer let through, and
    /// the ticket from which a refusal is a new one (those of requests sent
    /// before the last refusal came back are the same).
    refusals: u32,
    refused_from: u64,
    /// Answers other than 429 so far, and when the first request went.
    accepted: u64,
    first_sent: Option<Instant>,
    /// When each request of the last rolling window went, once a budget
    /// said its window rolls: those leave the window as it rolls on.
    sent_in_window: VecDeque<Instant>,
    rolling_window: Option<Duration>,
    /// Requests that have left the rolling window so far.
    left_window: u64,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    remaining: u64,
    /// The ticket whose answer said it.
    ticket: u64,
    resets_at: Instant,
    /// The budget spread over the time to its reset.
    spread: Option<f64>,
    /// Requests that had left the rolling window when it was said.
    left_before: u64,
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    rate: f64,
    step: f64,
    /// When it last changed.
    since: Instant,
}

impl Pace {
    /// `ceiling`: the configured requests per second, if any.
    pub fn new(ceiling: Option<f64>, probe_period: Duration) -> Self {
        Pace {
            ceiling: ceiling.filter(|c| *c > 0.0 && c.is_finite()),
            workers: 1,
            probe_period: probe_period.max(Duration::from_millis(1)),
            issued: 0,
            due: None,
            paused_until: None,
            budget: None,
            policy_rate: None,
            probe: None,
            learned: None,
            event_from: 0,
            last_429: None,
            last_decrease: None,
            refusals: 0,
            refused_from: 0,
            accepted: 0,
            first_sent: None,
            sent_in_window: VecDeque::new(),
            rolling_window: None,
            left_window: 0,
        }
    }

    /// Another holder configured `ceiling` (the lower one wins) and
    /// `probe_period` (the longer one wins: the more careful); `None` says nothing.
    pub fn join(&mut self, ceiling: Option<f64>, probe_period: Option<Duration>) {
        if let Some(c) = ceiling.filter(|c| *c > 0.0 && c.is_finite()) {
            self.ceiling = Some(self.ceiling.map_or(c, |own| own.min(c)));
        }
        if let Some(period) = probe_period {
            self.probe_period = self.probe_period.max(period);
        }
    }

    /// `workers` workers (this one among them) share the configured ceiling:
    /// this one keeps to its part of it.
    pub fn share(&mut self, workers: u32) {
        self.workers = workers.max(1);
    }

    /// This worker's part of the configured ceiling.
    fn own_ceiling(&self) -> Option<f64> {
        self.ceiling.map(|c| c / f64::from(self.workers))
    }

    /// The requests per second in force now, `None` for no limit.
    pub fn rate(&mut self, now: Instant) -> Option<f64> {
        self.probe_up(now);
        let budget = self
            .budget
            .filter(|b| now < b.resets_at)
            .and_then(|b| b.spread);
        [
            self.own_ceiling(),
            self.policy_rate,
            budget,
            self.learned.map(|l| l.rate),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min)
    }

    /// Lets one request go now, or says until when to wait before asking again.
    pub fn try_send(&mut self, now: Instant) -> Result<Ticket, Instant> {
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Err(until);
        }
        let mut probing = false;
        if let Some(budget) = self.budget {
            if now < budget.resets_at {
                let spent = self.issued - budget.ticket - 1;
                // In a window that rolls, a request of this process that left
                // it since the answer freed a place: one more may go, whose
                // answer says whether another client took it first.
                let freed = match self.rolling_window {
                    Some(window) => {
                        self.forget_sent_before(now, window);
                        (self.left_window - budget.left_before).min(1)
                    }
                    None => 0,
                };
                if spent >= budget.remaining + freed {
                    let until = match (self.rolling_window, self.sent_in_window.front()) {
                        (Some(window), Some(oldest)) => {
                            instant_after(*oldest, window).min(budget.resets_at)
                        }
                        _ => budget.resets_at,
                    };
                    return Err(until);
                }
            } else {
                if let Some((_, sent)) = self.probe {
                    let wait_until = sent + PROBE_WAIT;
                    if now < wait_until {
                        return Err(wait_until);
                    }
                }
                probing = true;
            }
        }
        if let Some(rate) = self.rate(now) {
            let rate = rate.max(SLOWEST);
            let mut interval = Duration::from_secs_f64(1.0 / rate);
            let mut tolerance = (interval * BURST_INTERVALS).min(BURST_LONGEST);
            if self.own_ceiling().is_some_and(|ceiling| rate >= ceiling) {
                interval = interval.mul_f64(1.0 + CEILING_MARGIN);
                tolerance = tolerance.min(CEILING_EARLY);
            }
            // A rate that just rose does not keep the long wait of the old one.
            let due = self
                .due
                .unwrap_or(now)
                .max(now)
                .min(now + tolerance + interval);
            if due > now + tolerance {
                return Err(due - tolerance);
            }
            self.due = Some(due + interval);
        }
        let ticket = self.issued;
        self.issued += 1;
        self.first_sent.get_or_insert(now);
        if let Some(window) = self.rolling_window {
            self.sent_in_window.push_back(now);
            self.forget_sent_before(now, window);
        }
        if probing {
            self.probe = Some((ticket, now));
        }
        Ok(Ticket(ticket))
    }

    /// Closes the gate for everyone until `until` (the server said so).
    pub fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }

    /// The server refused `ticket` for its rate limit (a 429, or a 503 naming
    /// a wait): every request holds back until its `retry_after` has passed —
    /// or, without one, for `base`, doubled with each refusal in a row since
    /// the last answer let through (up to 30 s): an API that refuses everything
    /// for a while once its limit is passed (Airtable: 30 s, saying nothing of
    /// it) is not asked again every few hundred milliseconds meanwhile.
    pub fn refused(
        &mut self,
        ticket: Ticket,
        retry_after: Option<Duration>,
        base: Duration,
        now: Instant,
    ) {
        let Ticket(ticket) = ticket;
        // After an answer let through, even a request sent before the last
        // refusal came back is a refusal again.
        if ticket >= self.refused_from || self.refusals == 0 {
            self.refusals = self.refusals.saturating_add(1);
            self.refused_from = self.issued;
        }
        let wait = retry_after.unwrap_or_else(|| {
            base.saturating_mul(1 << (self.refusals - 1).min(20))
                .min(REFUSED_LONGEST.max(base))
        });
        self.pause_until(instant_after(now, wait));
    }

    /// Until when requests are held back by a pause, if one holds them now.
    pub fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    /// What came back for `ticket`.
    pub fn answered(&mut self, ticket: Ticket, answer: &Answer, now: Instant) {
        let Ticket(ticket) = ticket;
        if self.probe.is_some_and(|(probe, _)| ticket >= probe) {
            self.probe = None;
        }
        let rate_limited = answer.status == Some(429);
        if !rate_limited && answer.status.is_some() {
            self.accepted += 1;
            if answer.status != Some(503) {
                self.refusals = 0;
            }
        }
        match answer.quota {
            Some(quota) => self.told(ticket, &quota, now),
            None => {
                if self.budget.is_some_and(|b| now >= b.resets_at) {
                    // The server no longer says: pace without a budget.
                    self.budget = None;
                }
                if rate_limited {
                    self.limited(ticket, now);
                }
            }
        }
    }

    /// The headers said what the server allows: they set the pace, and what
    /// 429s alone taught is no longer needed.
    fn told(&mut self, ticket: u64, quota: &Quota, now: Instant) {
        self.learned = None;
        if let Some(rate) = quota.policy_rate() {
            self.policy_rate = Some(rate);
        }
        let Some((remaining, reset)) = quota.budget() else {
            return;
        };
        let current = self
            .budget
            .is_some_and(|b| b.ticket > ticket && now < b.resets_at);
        if current {
            // An answer to an earlier request, overtaken by a later one.
            return;
        }
        let spent = self.issued - ticket - 1;
        let left = remaining.saturating_sub(spent);
        let mut available = left as f64;
        if quota.rolling {
            // What the server counted of this process's requests (those of
            // the window but the ones sent after `ticket`) leaves the window
            // within it: this process may send as many again, and what
            // remains, over the window — the ones sent since included.
            self.rolling_window = Some(reset);
            self.forget_sent_before(now, reset);
            let counted = (self.sent_in_window.len() as u64).saturating_sub(spent);
            let quota = quota.limit.unwrap_or(remaining + counted) as f64;
            available = (remaining + counted) as f64 - (quota * ROLLING_MARGIN).max(2.0);
        }
        let spread = (!reset.is_zero()).then(|| available.max(0.0) / reset.as_secs_f64());
        self.budget = Some(Budget {
            remaining,
            ticket,
            resets_at: instant_after(now, reset),
            spread,
            left_before: self.left_window,
        });
    }

    /// Forgets the requests sent before the rolling window ending `now`.
    fn forget_sent_before(&mut self, now: Instant, window: Duration) {
        while self
            .sent_in_window
            .front()
            .is_some_and(|sent| now.saturating_duration_since(*sent) >= window)
        {
            self.sent_in_window.pop_front();
            self.left_window += 1;
        }
    }

    /// A 429 without rate-limit headers. A lone one may be chance: the rate is
    /// first learned from two within a probe period, as what the server let
    /// through between them (a whole pause and what followed it), and at most
    /// 90% of the rate in force. Once learned, a 429 lowers the rate to 90% of
    /// the one in force (or to what the server let through since the last one,
    /// if that is less). Lowered at most once per probe period: the server may
    /// answer 429 at any rate, and slowing down again and again for that would
    /// only stall the sync.
    fn limited(&mut self, ticket: u64, now: Instant) {
        if ticket < self.event_from {
            // Sent before the last 429 came back: the same event.
            return;
        }
        self.event_from = self.issued;
        let previous = self.last_429.replace((now, self.accepted));
        if self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < self.probe_period)
        {
            return;
        }
        // Nothing let through between two 429s says the pause was short, not
        // what the rate is: learning 0 from it would stall the sync at the
        // slowest pace for good.
        let let_through = previous
            .filter(|(at, accepted_then)| {
                now.saturating_duration_since(*at) < self.probe_period
                    && self.accepted > *accepted_then
            })
            .and_then(|(at, accepted_then)| {
                let span = now.saturating_duration_since(at).as_secs_f64();
                (span > 0.0).then(|| (self.accepted - accepted_then) as f64 / span)
            });
        if self.learned.is_none() && let_through.is_none() {
            return;
        }
        // Two 429s close together (a pause too short for the server, or
        // chance) let little through between them: never below half of what
        // the server let through on average so far.
        let floor = self.first_sent.and_then(|first| {
            let span = now.saturating_duration_since(first).as_secs_f64();
            (span > 0.0).then(|| self.accepted as f64 / span * FLOOR)
        });
        let let_through = match (let_through, floor) {
            (Some(through), Some(floor)) => Some(through.max(floor)),
            (through, _) => through,
        };
        let lowered = self.rate(now).map(|rate| rate * DECREASE);
        let Some(rate) = [lowered, let_through]
            .into_iter()
            .flatten()
            .reduce(f64::min)
        else {
            return;
        };
        let rate = rate.max(SLOWEST);
        let step = self
            .learned
            .map_or(rate * INCREASE, |l| l.step.min(rate * INCREASE));
        self.learned = Some(Learned {
            rate,
            step,
            since: now,
        });
        self.last_decrease = Some(now);
    }

    /// After a probe period without a 429, the learned rate rises a step.
    fn probe_up(&mut self, now: Instant) {
        let ceiling = self.own_ceiling();
        let Some(learned) = &mut self.learned else {
            return;
        };
        let quiet_since = self
            .last_429
            .map_or(learned.since, |(at, _)| at.max(learned.since));
        if now.saturating_duration_since(quiet_since) < self.probe_period {
            return;
        }
        learned.rate += learned.step;
        learned.since = now;
        if ceiling.is_some_and(|c| learned.rate >= c) {
            self.learned = None;
        }
    }
}

/// The gates in use in the process, by origin.
type Gates = HashMap<String, Weak<RateGate>>;

static GATES: LazyLock<Mutex<Gates>> = LazyLock::new(Mutex::default);

/// How many workers share each origin's configured limit, as last told
/// ([`RateGate::share`]); one when never told.
static WORKERS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Mutex::default);

/// Shared by every request to one API origin within a process.
#[derive(Debug)]
pub struct RateGate {
    pace: Mutex<Pace>,
}

impl RateGate {
    /// `requests_per_second`: `None` for no configured limit; `probe_period`:
    /// `None` for [`DEFAULT_PROBE_PERIOD`].
    pub fn new(requests_per_second: Option<f64>, probe_period: Option<Duration>) -> Self {
        let probe_period = probe_period.unwrap_or(DEFAULT_PROBE_PERIOD);
        RateGate {
            pace: Mutex::new(Pace::new(requests_per_second, probe_period)),
        }
    }

    /// The gate of `origin`, shared with every other holder in the process
    /// while any holds it: source and destination APIs of every sync, and
    /// token endpoints, on that origin. Where holders configure different
    /// limits the lower wins, and stays while the gate lives.
    pub fn shared(
        origin: &url::Origin,
        requests_per_second: Option<f64>,
        probe_period: Option<Duration>,
    ) -> Arc<RateGate> {
        let key = origin.ascii_serialization();
        let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            gate.lock().join(requests_per_second, probe_period);
            return gate;
        }
        gates.retain(|_, gate| gate.strong_count() > 0);
        let gate = Arc::new(RateGate::new(None, None));
        gate.lock().join(requests_per_second, probe_period);
        if let Some(workers) = WORKERS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            gate.lock().share(*workers);
        }
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }

    /// `workers` live workers (this process among them) run syncs on
    /// `origin` now: from here on, this process keeps to its part of the
    /// origin's configured limit, in the gate in use and any made later.
    pub fn share(origin: &url::Origin, workers: u32) {
        let key = origin.ascii_serialization();
        WORKERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), workers.max(1));
        let gate = GATES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .and_then(Weak::upgrade);
        if let Some(gate) = gate {
            gate.lock().share(workers);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may go out; the ticket goes back with its answer.
    pub async fn ready(&self, stop: &Stop) -> Result<Ticket, StopReason> {
        loop {
            let decision = self.lock().try_send(Instant::now());
            match decision {
                Ok(ticket) => return Ok(ticket),
                Err(until) => stop.sleep(until - Instant::now()).await?,
            }
        }
    }

    /// Waits until no pause holds requests back; takes no slot of the pace.
    pub async fn unpaused(&self, stop: &Stop) -> Result<(), StopReason> {
        loop {
            let paused = self.lock().paused(Instant::now());
            match paused {
                Some(until) => stop.sleep(until - Instant::now()).await?,
                None => return Ok(()),
            }
        }
    }

    /// Every request holds back until `until`: the server asked for a wait
    /// without refusing a request of its own (an item of a batch).
    pub fn pause_until(&self, until: Instant) {
        self.lock().pause_until(until);
    }

    /// The server refused `ticket`'s request for its rate limit: see
    /// [`Pace::refused`]. Hand the ticket back with its answer still.
    pub fn refused(&self, ticket: Ticket, retry_after: Option<Duration>, base: Duration) {
        self.lock()
            .refused(ticket, retry_after, base, Instant::now());
    }

    /// What came back for a request.
    pub fn answered(&self, ticket: Ticket, answer: &Answer) {
        self.lock().answered(ticket, answer, Instant::now());
    }

    /// The requests per second in force now, `None` for no limit.
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate(Instant::now())
    }
}

#[cfg(test)]
mod tests;
