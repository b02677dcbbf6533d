//! End-to-end tests: the real `highwater` binary against the simulated SaaS on
//! 127.0.0.1, one module per topic.

mod alerts;
mod backfill;
mod bad_input;
mod batch;
mod bounds;
mod cli;
mod concurrent;
mod crash;
mod deletes;
mod dlq;
mod dry_run;
mod explain;
mod faults;
mod first_run;
mod lagging;
mod listings;
mod metrics;
mod modes;
mod probe;
mod ratelimit;
mod reading;
mod reconcile;
mod reset;
mod runs;
mod scripted;
mod serve;
mod state_copy;
mod tables;
mod util;
mod workers;
mod writes;
