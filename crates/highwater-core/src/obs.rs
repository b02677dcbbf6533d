//! Owns the names of highwater's structured events: every `tracing` event the engine
//! emits carries `event = <one of these>`, so logs can be filtered and counted by a
//! stable name.

pub const RUN_STARTED: &str = "run_started";
pub const RUN_RESUMED: &str = "run_resumed";
pub const PAGE_COMMITTED: &str = "page_committed";
pub const RECORD_DEAD_LETTERED: &str = "record_dead_lettered";
pub const REQUEST_RETRIED: &str = "request_retried";
pub const RUN_COMPLETED: &str = "run_completed";
pub const RUN_STOPPED: &str = "run_stopped";
pub const RUN_FAILED: &str = "run_failed";
pub const PAGINATION_RESCAN: &str = "pagination_rescan";
pub const RECORD_REPAIRED: &str = "record_repaired";
pub const RECORDS_UNVERIFIED: &str = "records_unverified";
pub const FLOOR_CONFIRMED: &str = "floor_confirmed";
pub const CONFIG_WARNING: &str = "config_warning";
