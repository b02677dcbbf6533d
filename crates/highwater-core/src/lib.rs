//! highwater's engine: reliable, checkpointed syncs from a source HTTP API into a
//! destination, that never lose, duplicate or regress a record.
//!
//! Data flows one way: [`source`] (pages) → [`engine`] (mapping, ledger checks,
//! checkpoint frontier) → [`sink`] (idempotent writes) → [`state`] (commit).
//! [`policy`] holds plain values (classification, backoff, rate limits) that sources
//! and sinks use; it knows nothing of the engine. This crate never depends on the
//! simulated SaaS used by tests.

pub mod alert;
pub mod auth;
pub mod config;
pub mod engine;
pub mod http;
pub mod mapping;
pub mod obs;
pub mod policy;
pub mod rawjson;
pub mod record;
pub mod schedule;
pub mod secret;
pub mod sink;
pub mod source;
pub mod state;
pub mod stop;
pub mod timepattern;
pub mod wal;
