//! One invocation of a run, around the loop: opens or resumes the run of a plan
//! (the watermark stored before the first fetch), opens the span every line of
//! the run carries, drives the loop, and records how the invocation ended — in
//! the run history, the logs and the metrics — as the report or the failure the
//! caller gets.

use super::*;

/// Runs (or resumes) the run of `plan` for `spec`. The caller holds the sync's lock.
pub async fn run(
    spec: &SyncSpec,
    store: &Store,
    plan: Plan,
    options: RunOptions,
    shutdown: CancellationToken,
    progress: &watch::Sender<Progress>,
) -> Result<RunReport, RunFailure> {
    let started = Instant::now();
    let fail = |cause: FailureCause| RunFailure {
        cause,
        run_id: None,
        counters: Counters::default(),
        resumable: false,
    };
    same_destination(spec, store).await.map_err(fail)?;
    same_mapping(spec, store, &plan).await.map_err(fail)?;
    let (run, cursor, counters, resumed) =
        open_or_resume(spec, store, &plan).await.map_err(fail)?;
    // Every log line of the run, on every thread, carries its sync and run id.
    let span =
        tracing::info_span!("run", sync = %spec.name, run_id = %run.run_id, kind = %plan.kind());
    async move {
        let window = Window {
            lower: run.lower_bound,
            watermark: run.watermark,
        };
        crate::obs::RunStarted {
            sync: &spec.name,
            run_id: &run.run_id,
            resumed,
            lower_bound: run.lower_bound,
            watermark: run.watermark,
        }
        .emit();
        let merge_rows = options
            .merge_rows
            .unwrap_or(crate::config::DEFAULT_MERGE_ROWS);
        let mut runner = Runner::new(
            spec,
            store,
            run.run_id.clone(),
            counters,
            resumed,
            merge_rows,
            progress,
        );
        if let Some(retention) = options.event_retention {
            runner.event_retention = retention;
        }
        runner.plan = plan.clone();
        progress.send_replace(runner.snapshot());
        let fence = store.clone();
        let stop = Stop::new(options.max_runtime.or(spec.budgets.max_runtime), shutdown)
            .leased(move || fence.check_lease().is_ok());
        let max_pages = options.max_pages.or(spec.budgets.max_pages);
        // A completed run counts what its completion stored; a run that ended
        // otherwise has counted what its confirmed commits stored.
        let outcome = runner.drive(window, cursor, &stop, max_pages).await;
        let retries = runner.retries;
        let end_event = |end: RunEnd<'_>| {
            let completed = matches!(end, RunEnd::Completed);
            RunEnded {
                sync: &spec.name,
                run_id: &run.run_id,
                kind: plan.kind().as_str(),
                outcome: end,
                pages: runner.counters.pages,
                written: runner.counters.written,
                duration: started.elapsed(),
                high_water_mark: (completed && plan == Plan::Incremental).then_some(run.watermark),
            }
            .emit()
        };
        let report = |outcome| RunReport {
            sync: spec.name.clone(),
            run_id: run.run_id.clone(),
            resumed,
            window,
            outcome,
            counters: runner.counters,
            session: runner.counters.since(&counters),
            retries: retries.total(),
            elapsed: started.elapsed(),
            repaired: runner.repaired.clone(),
            resent: runner.resent.clone(),
            unverified: runner.unverified.clone(),
        };
        let ended = |outcome, stop_reason: Option<StopReason>, cause: Option<&FailureCause>| {
            InvocationEnd {
                outcome,
                stop_reason: stop_reason.map(|r| r.as_str().to_owned()),
                error_class: cause.map(failure_class),
                error: cause.map(ToString::to_string),
                counters: runner.counters,
                retries,
            }
        };
        match outcome {
            Ok(outcome) => {
                end_event(match outcome {
                    RunOutcome::Completed => RunEnd::Completed,
                    RunOutcome::Stopped(reason) => RunEnd::Stopped(reason.as_str()),
                });
                let end = match outcome {
                    RunOutcome::Completed => ended(InvocationOutcome::Completed, None, None),
                    RunOutcome::Stopped(reason) => {
                        ended(InvocationOutcome::Stopped, Some(reason), None)
                    }
                };
                record_end(store, &run.run_id, &end).await;
                Ok(report(outcome))
            }
            Err(cause) => {
                if let Some(reason) = cause.stopped() {
                    end_event(RunEnd::Stopped(reason.as_str()));
                    let end = ended(InvocationOutcome::Stopped, Some(reason), None);
                    record_end(store, &run.run_id, &end).await;
                    return Ok(report(RunOutcome::Stopped(reason)));
                }
                // A run that never got past its first page is not resumed, so that a
                // bad config or an unreachable API leaves nothing to resume; the
                // history keeps it, failed.
                let progressed = resumed || runner.counters.pages > 0 || runner.wrote;
                if !progressed {
                    store
                        .abandon_run(&run.run_id)
                        .await
                        .map_err(|e| fail(e.into()))?;
                }
                end_event(RunEnd::Failed(&cause.to_string()));
                record_end(
                    store,
                    &run.run_id,
                    &ended(InvocationOutcome::Failed, None, Some(&cause)),
                )
                .await;
                Err(RunFailure {
                    cause,
                    run_id: Some(run.run_id.clone()),
                    counters: runner.counters,
                    resumable: progressed,
                })
            }
        }
    }
    .instrument(span)
    .await
}

/// Refuses a run into a destination other than the one the sync's ledger
/// describes, while the ledger holds anything: it would skip every record the
/// ledger says is written, leaving the new destination without them. A sync
/// without such a record (new, or whose ledger was forgotten) takes this one.
async fn same_destination(spec: &SyncSpec, store: &Store) -> Result<(), FailureCause> {
    if !ledger_describes(spec, store).await? {
        store
            .record_destination(&spec.name, &spec.destination.identity())
            .await?;
    }
    Ok(())
}

/// Says when the sync's records were written with another mapping: those
/// already written keep its fields until they change at the source or a full
/// run rewrites them. Said by the first run with the new one (a run of
/// deletes writes no record, and says nothing).
async fn same_mapping(spec: &SyncSpec, store: &Store, plan: &Plan) -> Result<(), FailureCause> {
    if matches!(plan, Plan::Deletes) {
        return Ok(());
    }
    let now = crate::mapping::fingerprint(&spec.mapping);
    let was = store.mapping_of(&spec.name).await?;
    if was.as_deref() == Some(now.as_str()) {
        return Ok(());
    }
    if was.is_some() && !matches!(plan, Plan::Full { .. }) {
        let written = store.status(&spec.name).await?.ledger_records;
        if written > 0 {
            tracing::warn!(
                sync = %spec.name,
                records = written,
                "the mapping changed since this sync last wrote: the {written} records already written keep the old one's fields until they change at the source; read again, they are written with this one (`highwater backfill {} --from T1 --to T2` over their range, or `run --full` where the sync has deletes)",
                spec.name,
            );
        }
    }
    store.record_mapping(&spec.name, &now).await?;
    Ok(())
}

/// Whether the sync's ledger already describes the config's destination:
/// `false` where it describes none yet (or another, holding no records), and
/// the refusal where it describes another while holding records. Writes
/// nothing, so that a dry run asks it too.
pub(super) async fn ledger_describes(spec: &SyncSpec, store: &Store) -> Result<bool, FailureCause> {
    let now = spec.destination.identity();
    match store.destination_of(&spec.name).await? {
        Some(was) if was == now => Ok(true),
        Some(was) if store.status(&spec.name).await?.ledger_records > 0 => {
            Err(FailureCause::DestinationChanged {
                sync: spec.name.clone(),
                was,
                now,
            })
        }
        _ => Ok(false),
    }
}

/// Records how the invocation ended. The run's own state is already where it
/// must be; a history that could not be written is logged, and does not turn
/// the run's outcome into a failure.
async fn record_end(store: &Store, run_id: &str, end: &InvocationEnd) {
    if let Err(e) = store.end_invocation(run_id, end).await {
        tracing::error!(run_id = %run_id, error = %e, "the run history could not record how this invocation ended");
    }
}

/// The class of a failure, for the run history: which side, and what kind.
fn failure_class(cause: &FailureCause) -> String {
    let http = |e: &HttpError| match e {
        HttpError::Unauthorized { .. } | HttpError::Auth(..) => "unauthorized",
        HttpError::Exhausted { .. } => "retries_exhausted",
        HttpError::RateLimited { .. } => "rate_limited",
        HttpError::Unknown { .. } => "unknown_outcome",
        HttpError::Rejected { .. } => "rejected",
        HttpError::Fatal { .. } => "fatal_answer",
        HttpError::Untrusted { .. } => "tls_refused",
        HttpError::Stopped(_) => "stopped",
    };
    let (side, kind) = match cause {
        FailureCause::Source(SourceError::Http(e)) => ("source", http(e)),
        FailureCause::Source(SourceError::Lagging { .. }) => ("source", "lagging_replica"),
        FailureCause::Source(_) => ("source", "unusable_answer"),
        FailureCause::Destination(SinkError::Http(e)) => ("destination", http(e)),
        FailureCause::Destination(SinkError::File { .. }) => ("destination", "file"),
        FailureCause::Destination(SinkError::Database(_) | SinkError::DatabaseGaveUp(_)) => {
            ("destination", "database")
        }
        FailureCause::Destination(_) => ("destination", "client"),
        FailureCause::Surge { .. } => ("records", "dead_letter_surge"),
        FailureCause::Unconfirmed(_) => ("destination", "unconfirmed"),
        FailureCause::State(_) => ("state", "store"),
        FailureCause::OtherRunOpen { .. } => ("runs", "other_run_open"),
        FailureCause::NotForDryRun(_) => ("runs", "not_for_dry_run"),
        FailureCause::DestinationChanged { .. } => ("config", "destination_changed"),
        FailureCause::NoDeletesFeed(_) => ("config", "no_deletes_feed"),
        FailureCause::MassDelete { .. } => ("records", "mass_delete"),
        FailureCause::Client(_) | FailureCause::Thread(_) | FailureCause::ReaderGone => {
            ("highwater", "internal")
        }
    };
    format!("{side}:{kind}")
}

async fn open_or_resume(
    spec: &SyncSpec,
    store: &Store,
    plan: &Plan,
) -> Result<(RunRow, Cursor, Counters, bool), FailureCause> {
    if let Some((run, checkpoint)) = store.open_run(&spec.name, plan.kind()).await? {
        if !plan.matches(&run) {
            return Err(FailureCause::OtherRunOpen {
                kind: run.kind,
                lower: run.lower_bound,
                watermark: run.watermark,
            });
        }
        let cursor: Cursor = match plan {
            // What a full run saw before is not kept: it reads everything again.
            Plan::Full { .. } => Cursor::Start,
            _ => serde_json::from_value(checkpoint.cursor)
                .map_err(|e| StateError::Corrupt(format!("run {}: cursor: {e}", run.run_id)))?,
        };
        store.resume_run(&run.run_id).await?;
        return Ok((run, cursor, checkpoint.counters, true));
    }
    let high_water_mark = match plan {
        // The deletes feed has a mark of its own: its last completed run's.
        Plan::Deletes => match store.last_completed(&spec.name, RunKind::Deletes).await? {
            Some((run, _)) => crate::state::HighWaterMark::Run(run.watermark),
            None => crate::state::HighWaterMark::None,
        },
        _ => store.high_water_mark(&spec.name).await?,
    };
    // Microseconds are what the store keeps; the report shows the same instant.
    let now = Timestamp::now()
        .round(jiff::Unit::Microsecond)
        .unwrap_or_else(|_| Timestamp::now());
    let window = plan.window(spec, now, high_water_mark);
    let run = RunRow {
        run_id: uuid::Uuid::now_v7().to_string(),
        sync: spec.name.clone(),
        kind: plan.kind(),
        status: RunStatus::Open,
        lower_bound: window.lower,
        watermark: window.watermark,
        started_at: now,
        updated_at: now,
        completed_at: None,
    };
    store.begin_run(&run, &cursor_json(&Cursor::Start)).await?;
    Ok((run, Cursor::Start, Counters::default(), false))
}
