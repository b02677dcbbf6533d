//! `highwater reset <sync> [--to T]`: rewinds the sync's high-water mark so the next
//! run re-reads from T (or from the start); the ledger stays, so unchanged records
//! cost a read, not a write, unless `--forget-ledger`. Refuses while the sync's
//! incremental run is open unless `--force` abandons it; holds the sync's lock; is
//! recorded in the audit log. Never creates a state store.

use highwater_core::state::{ResetError, ResetRequest};
use jiff::Timestamp;
use serde_json::json;

use super::{CliError, Context, Exit, print};

pub struct ResetArgs {
    pub sync: String,
    pub to: Option<Timestamp>,
    pub forget_ledger: bool,
    pub force: bool,
    pub reason: Option<String>,
}

pub async fn reset(ctx: &mut Context, args: ResetArgs) -> Result<Exit, CliError> {
    let sync = args.sync.as_str();
    ctx.sync_name(sync)?;
    let store = ctx.store().await?;
    let lock = store.lock_all(sync).await.map_err(|e| match e.held_by() {
        Some((kind, holder)) => CliError::Failed(format!(
            "sync {sync:?} is running its {kind} run ({holder}): nothing was reset; try again once the run has ended"
        )),
        None => CliError::failed(e),
    })?;
    let store = store.fenced(&lock);
    let request = ResetRequest {
        sync: sync.to_owned(),
        to: args.to,
        forget_ledger: args.forget_ledger,
        force: args.force,
        reason: args.reason,
    };
    let outcome = store.reset(&request).await;
    ctx.close_releasing(lock).await;
    let done = match outcome {
        Ok(done) => done,
        Err(e @ ResetError::RunOpen(_)) => {
            return Err(CliError::Usage(format!(
                "sync {sync:?}: {e}; nothing was reset"
            )));
        }
        Err(ResetError::State(e)) => return Err(CliError::failed(e)),
    };
    let from = request
        .to
        .map_or_else(|| "the sync's start".to_owned(), |t| t.to_string());
    if ctx.json {
        print(json!({
            "sync": sync,
            "to": request.to.map(|t| t.to_string()),
            "forget_ledger": request.forget_ledger,
            "abandoned_run": done.abandoned,
            "ledger_rows_forgotten": done.forgotten,
            "audit_id": done.audit_id,
        }))?;
    } else {
        let mut text = format!("sync {sync:?} reset: the next run reads from {from}");
        if let Some(run) = &done.abandoned {
            text.push_str(&format!(
                "\n  abandoned the open run {run} (its announced writes stay floors)"
            ));
        }
        if request.forget_ledger {
            text.push_str(&format!(
                "\n  forgot {} ledger row(s): every record read is written again",
                done.forgotten
            ));
        } else {
            text.push_str("\n  the ledger stays: unchanged records cost a read, not a write");
        }
        text.push_str(&format!("\n  audit log entry {}", done.audit_id));
        print(text)?;
    }
    Ok(Exit::Complete)
}
