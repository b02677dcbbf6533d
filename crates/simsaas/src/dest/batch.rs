//! The batch endpoint: many records a request, answered item by item (or
//! whole, or with the failed items listed apart, or as a job to poll), each
//! item meeting the destination's refusals, and the batch the write faults.

use super::*;

/// `POST /v1/contacts/batch` with `{"records": [...]}`: each record upserted
/// by its `external_id` as a PUT of it would be, and answered item by item, in
/// order, in `{"results": [...]}` — `{"external_id", "status", "id"}`, or
/// `{"external_id", "status", "error"}` for an item refused (400/422, poison)
/// or failed alone (`item_fail_status`, `item_fail_ratio`, with a
/// `retry_after` of `item_retry_after`; not applied). The batch meets the
/// write faults as one request, keyed by its first record; with
/// `batch_refuses_whole`, a batch holding a poisoned record is refused whole;
/// with `batch_errors_apart`, the items not written are listed apart; with
/// `batch_answers_whole`, the answer says nothing of the items; with
/// `batch_answers_counts`, it counts those written and those not, and
/// lists the reasons without naming whose; with
/// `batch_job_polls`, the answer is a job whose own answer, once done, holds
/// the batch's (`jobs.rs`).
pub(super) async fn batch(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let items = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut m)) => match m.remove("records") {
            Some(Value::Array(items)) => items,
            _ => {
                // Each refusal carries an id of its own, as JSON:API errors
                // (Klaviyo's) do: the same reason never reads the same twice.
                let n = bump(&s.dest_stats.rejected);
                return json_value(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({
                        "error": "bad_request",
                        "message": "expected {\"records\": [...]}",
                        "id": format!("{:08x}-{:04x}-4e1f-9c2d-{:012x}", n.wrapping_mul(2_654_435_761), n % 65_536, n),
                    }),
                );
            }
        },
        _ => {
            bump(&s.dest_stats.rejected);
            return Refusal::InvalidJson.into_response();
        }
    };
    let first = items.first().cloned().map(|v| match v {
        Value::Object(m) => Ok(m),
        _ => Err(Refusal::NotAnObject),
    });
    let key = match &first {
        Some(first) => fault_key(
            "batch",
            &body_external_id(first).unwrap_or_default(),
            body_version(first),
        ),
        None => fault_key("batch", "", None),
    };
    let plan = match gate(&s, &headers, raw, key).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let refuses_whole = read(&s.dest_faults).batch_refuses_whole;
    if refuses_whole && let Some(refusal) = items.iter().find_map(poison) {
        bump(&s.dest_stats.rejected);
        let (status, message) = refusal.status_and_message();
        return json_error(
            status,
            "batch_refused",
            Some(&format!("{message}; nothing of the batch was applied")),
        );
    }
    let meta = WriteMeta::from(&headers);
    let errors_apart = match read(&s.dest_faults) {
        f if f.batch_errors_by_place => ErrorsApart::ByPlace,
        f if f.batch_errors_apart => ErrorsApart::ById,
        _ => ErrorsApart::No,
    };
    let answers_whole = read(&s.dest_faults).batch_answers_whole;
    let (job_polls, job_fail_ratio) = {
        let faults = read(&s.dest_faults);
        (faults.batch_job_polls, faults.batch_job_fail_ratio)
    };
    carry_out(&s, plan, move |s, late| {
        let meta = WriteMeta { late, ..meta };
        match job_polls {
            Some(polls) => jobs::accept(s, key, polls, job_fail_ratio, || {
                apply_batch(s, items, &meta, errors_apart, answers_whole)
            }),
            None => {
                let (status, answer) = apply_batch(s, items, &meta, errors_apart, answers_whole);
                json_value(status, &answer)
            }
        }
    })
    .await
}

/// Whether a batch's answer lists the items not written apart from its
/// results, and how it names them.
#[derive(Clone, Copy)]
enum ErrorsApart {
    No,
    /// By external id, beside the results (HubSpot's).
    ById,
    /// By place in the batch, with no results (Braze's).
    ByPlace,
}

/// The items of a batch, each upserted or refused as `batch` describes: the
/// answer's status and body.
fn apply_batch(
    s: &Shared,
    items: Vec<Value>,
    meta: &WriteMeta,
    errors_apart: ErrorsApart,
    answers_whole: bool,
) -> (StatusCode, Value) {
    let (item_fail_ratio, item_fail_status, item_retry_after, answers_counts, unnamed) = {
        let faults = read(&s.dest_faults);
        (
            faults.item_fail_ratio,
            faults.item_fail_status,
            faults.item_retry_after,
            faults.batch_answers_counts,
            faults.batch_errors_unnamed,
        )
    };
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let parsed = match item {
            Value::Object(m) => Ok(m),
            _ => Err(Refusal::NotAnObject),
        };
        let Some(ext) = body_external_id(&parsed) else {
            bump(&s.dest_stats.rejected);
            results.push(serde_json::json!({"status": 400, "error": "missing external_id"}));
            continue;
        };
        let item_key = fault_key("item", &ext, body_version(&parsed));
        if lock(&s.dest_fault_state).item_early(item_key) {
            bump(&s.dest_stats.retry_after_violations);
        }
        if item_fail_ratio > 0.0
            && lock(&s.dest_fault_state).item_fails(s.seed, item_key, item_fail_ratio)
        {
            bump(&s.dest_stats.item_failures);
            let error = match item_fail_status {
                429 => "rate limit exceeded",
                _ => "temporarily unavailable",
            };
            let mut result = serde_json::json!({
                "external_id": ext, "status": item_fail_status, "error": error
            });
            if let Some(wait) = item_retry_after {
                lock(&s.dest_fault_state).item_told_to_wait(item_key, wait);
                s.dest_holdoff.announced(wait);
                result["retry_after"] = serde_json::json!(wait.as_secs_f64());
            }
            results.push(result);
            continue;
        }
        let body = match validate(s, parsed) {
            Ok(body) => body,
            Err(refusal) => {
                let (status, message) = refusal.status_and_message();
                results.push(serde_json::json!({
                    "external_id": ext, "status": status.as_u16(), "error": message
                }));
                continue;
            }
        };
        let upserted = lock(&s.store).upsert(&ext, body, meta);
        match upserted {
            Some((status, json)) => {
                bump(&s.dest_stats.writes_applied);
                results.push(serde_json::json!({
                    "external_id": ext, "status": status.as_u16(), "id": json.get("id")
                }));
            }
            None => {
                bump(&s.dest_stats.preconditions_failed);
                results.push(serde_json::json!({
                    "external_id": ext, "status": 412, "error": "newer version held"
                }));
            }
        }
    }
    if answers_counts {
        // The reasons, but not whose they are.
        let errors: Vec<String> = results
            .iter()
            .filter_map(|r| Some(format!("{} ({})", r.get("error")?, r["status"])))
            .collect();
        return (
            StatusCode::OK,
            serde_json::json!({
                "total_count": results.len(),
                "completed_count": results.len() - errors.len(),
                "failed_count": errors.len(),
                "errors": errors,
            }),
        );
    }
    if answers_whole {
        return (
            StatusCode::OK,
            serde_json::json!({ "accepted": results.len() }),
        );
    }
    match errors_apart {
        ErrorsApart::No => {
            return (StatusCode::OK, serde_json::json!({ "results": results }));
        }
        ErrorsApart::ByPlace => {
            let errors: Vec<Value> = results
                .iter()
                .enumerate()
                .filter(|(_, r)| r.get("error").is_some())
                .map(|(n, r)| {
                    // Braze's errors carry no status: the reason names the
                    // one this API gives elsewhere, so a dead letter's
                    // cause can still be checked.
                    let error = r["error"].as_str().unwrap_or_default();
                    let reason = format!("{error} (code {})", r["status"]);
                    serde_json::json!({"type": reason, "input_array": "records", "index": n})
                })
                .collect();
            return (
                StatusCode::CREATED,
                serde_json::json!({ "message": "success", "errors": errors }),
            );
        }
        ErrorsApart::ById => {}
    }
    let (errors, mut written): (Vec<Value>, Vec<Value>) =
        results.into_iter().partition(|r| r.get("error").is_some());
    written.reverse();
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|e| match unnamed {
            true => serde_json::json!({"status": e["status"], "message": e["error"]}),
            false => serde_json::json!({
                "status": e["status"], "message": e["error"],
                "context": {"ids": [e["external_id"]]}
            }),
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    (
        status,
        serde_json::json!({ "results": written, "errors": errors }),
    )
}
