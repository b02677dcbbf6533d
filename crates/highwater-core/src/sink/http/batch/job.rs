//! A batch endpoint that answers with a job (`job = { ... }`: Zendesk's bulk
//! endpoints answer `{"job_status": {"url", "status": "queued"}}`): the job's
//! URL is asked for its state, after waits that double, until the job is
//! done — its answer then holds the item results, read as a batch's — ended
//! without results, or out of time. A job that gives no results leaves what
//! it applied unknown, as a batch without a clear answer does.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::super::HttpSink;
use super::super::config::JobSpec;
use crate::http::{HttpError, Request};
use crate::sink::SinkError;
use crate::stop::Stop;

/// The longest wait between two asks of a job's state.
const MOST_BETWEEN_POLLS: Duration = Duration::from_secs(30);

/// What became of a batch's job.
#[derive(Debug)]
pub(super) enum Job {
    /// The job's answer once done: it holds the item results.
    Done(Value),
    /// The job will give no results, or not in time: what it applied is
    /// unknown, for this reason.
    Unknown(String),
}

impl HttpSink {
    /// Waits for the job the batch's answer `accepted` names. An error
    /// stops the run: the job's URL is not on the destination's origin (it
    /// would be sent the destination's credentials), its state could not be
    /// asked (exhausted retries, authentication), or the run was stopped.
    pub(super) async fn await_job(
        &self,
        job: &JobSpec,
        request: &Request,
        accepted: Value,
        stop: &Stop,
    ) -> Result<Job, SinkError> {
        // An endpoint may answer a job already done, results and all.
        if let Some(state) = state(job, &accepted)
            && job.done.iter().any(|d| d.eq_ignore_ascii_case(&state))
        {
            return Ok(Job::Done(accepted));
        }
        let Some(named) = job.url_field.get(&accepted).and_then(Value::as_str) else {
            return Ok(Job::Unknown(format!(
                "the batch's answer names no job at `{}` (job.url_field): {}",
                job.url_field,
                excerpt(&accepted)
            )));
        };
        let url = match request.url.join(named) {
            Ok(url) => url,
            Err(e) => {
                return Ok(Job::Unknown(format!(
                    "the batch's answer names its job at {named:?}, not a URL: {e}"
                )));
            }
        };
        let origin = self.api.base_url().origin();
        if url.origin() != origin {
            return Err(SinkError::Http(HttpError::Fatal {
                api: "destination",
                method: request.method.clone(),
                url: request.url.to_string(),
                status: 200,
                body: format!(
                    "its job is at {url}, not on the destination's origin {}: highwater sends \
                     the destination's credentials there alone",
                    origin.ascii_serialization()
                ),
            }));
        }
        let started = Instant::now();
        let mut wait = job.poll;
        loop {
            if started.elapsed() + wait > job.timeout {
                return Ok(Job::Unknown(format!(
                    "the job at {url} was not done after {:?} (job.timeout)",
                    job.timeout
                )));
            }
            if let Err(reason) = stop.sleep(wait).await {
                return Err(SinkError::Http(HttpError::Stopped(reason)));
            }
            wait = (wait * 2).min(MOST_BETWEEN_POLLS.max(job.poll));
            let answer = match self.api.send(&Request::get(url.clone()), stop).await {
                Ok(reply) => reply.json().unwrap_or_default(),
                // A job the endpoint no longer knows (expired, or never
                // kept) cannot say what it applied.
                Err(HttpError::Rejected { status, body }) => {
                    return Ok(Job::Unknown(format!(
                        "asked for its state, the job at {url} answered {status}: {body}"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let Some(state) = state(job, &answer) else {
                return Ok(Job::Unknown(format!(
                    "the job's answer at {url} has no state at `{}` (job.status_field): {}",
                    job.status_field,
                    excerpt(&answer)
                )));
            };
            if job.done.iter().any(|d| d.eq_ignore_ascii_case(&state)) {
                return Ok(Job::Done(answer));
            }
            if job.failed.iter().any(|f| f.eq_ignore_ascii_case(&state)) {
                return Ok(Job::Unknown(format!(
                    "the job at {url} ended {state:?} without results: {}",
                    excerpt(&answer)
                )));
            }
        }
    }
}

/// A job's state in its answer, as text.
fn state(job: &JobSpec, answer: &Value) -> Option<String> {
    match job.status_field.get(answer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An answer as text short enough for a message.
pub(super) fn excerpt(answer: &Value) -> String {
    let text = answer.to_string();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}
