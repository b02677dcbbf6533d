//! Owns the policies sources and sinks apply to every request: what a failure means
//! ([`classify`]), when to try again ([`backoff`], applied by the one loop in
//! [`retry`]), and how fast to go ([`ratelimit`], from what the server's headers
//! say: [`quota`]).
//! Invariant: plain values and pure functions; imports nothing of engine, source or
//! sink, and never touches the network itself.

pub mod backoff;
pub mod classify;
pub mod quota;
pub mod ratelimit;
pub mod retry;

pub use backoff::{Backoff, RetryPolicy};
pub use classify::{Class, Outcome, classify, parse_retry_after};
pub use quota::{Quota, read_quota};
pub use ratelimit::{Answer, DEFAULT_PROBE_PERIOD, Pace, RateGate, Ticket};
pub use retry::{Attempts, Failed, GaveUp, retry};
