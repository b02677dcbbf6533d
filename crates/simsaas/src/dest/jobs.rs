//! Batches run as jobs (`batch_job_polls`), as Zendesk's bulk endpoints do:
//! the batch is answered at once with a job (`{"job_status": {"id", "url",
//! "status": "queued"}}`), and `GET /v1/jobs/{id}` answers its state —
//! `"working"` for the first polls, then `"completed"` with the batch's
//! answer (`results`, and `errors` when listed apart) inside `job_status`, or
//! `"failed"` for a job that applied nothing (`batch_job_fail_ratio`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::{carry_out, fault_key, gate, json_error, json_value};
use crate::stats::bump;
use crate::{Shared, lock};

/// Every job the destination was given, by id (its place).
#[derive(Debug, Default)]
pub(crate) struct Jobs(Vec<Job>);

#[derive(Debug)]
struct Job {
    /// Polls still answered `"working"`.
    polls_left: u32,
    /// The batch's answer, once applied; `None` for a job that failed.
    answer: Option<Value>,
}

/// Runs the batch as a job (`apply` applies it, unless the job fails) and
/// answers with the job's id, URL and first state.
pub(super) fn accept(
    s: &Shared,
    key: u64,
    polls: u32,
    fail_ratio: f64,
    apply: impl FnOnce() -> (StatusCode, Value),
) -> Response {
    let fails = fail_ratio > 0.0 && lock(&s.dest_fault_state).item_fails(s.seed, key, fail_ratio);
    let answer = if fails {
        bump(&s.dest_stats.jobs_failed);
        None
    } else {
        Some(apply().1)
    };
    let id = {
        let mut jobs = lock(&s.jobs);
        jobs.0.push(Job {
            polls_left: polls,
            answer,
        });
        jobs.0.len() - 1
    };
    json_value(StatusCode::OK, &job_status(s, id, "queued", None))
}

fn job_status(s: &Shared, id: usize, status: &str, answer: Option<&Value>) -> Value {
    let mut job = serde_json::json!({
        "id": id.to_string(),
        "url": format!("{}/v1/jobs/{id}", s.dest_url),
        "status": status,
    });
    if let Some(Value::Object(fields)) = answer {
        for (name, value) in fields {
            job[name] = value.clone();
        }
    }
    if status == "failed" {
        job["message"] = Value::from("the job failed; none of its records were applied");
    }
    serde_json::json!({ "job_status": job })
}

/// `GET /v1/jobs/{id}`: the job's state, and once completed its answer.
pub(super) async fn poll(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let plan = match gate(&s, &headers, raw, fault_key("job", &id, None)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    carry_out(&s, plan, move |s, _| {
        bump(&s.dest_stats.job_polls);
        let Ok(id) = id.parse::<usize>() else {
            return json_error(StatusCode::NOT_FOUND, "not_found", Some("no such job"));
        };
        let mut jobs = lock(&s.jobs);
        let Some(job) = jobs.0.get_mut(id) else {
            return json_error(StatusCode::NOT_FOUND, "not_found", Some("no such job"));
        };
        if job.polls_left > 0 {
            job.polls_left -= 1;
            return json_value(StatusCode::OK, &job_status(s, id, "working", None));
        }
        let answer = match &job.answer {
            Some(answer) => job_status(s, id, "completed", Some(answer)),
            None => job_status(s, id, "failed", None),
        };
        json_value(StatusCode::OK, &answer)
    })
    .await
}
