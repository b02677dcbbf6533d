//! Owns the HTTP destination's batch mode: many records in one request, each
//! answered on its own. An item refused is dead-lettered alone; an item that
//! failed for now is sent again in a smaller batch after a backoff; a whole
//! batch refused is halved until the record it cannot take stands alone; a
//! batch without a clear answer is sent again only to an endpoint that upserts
//! by external id, and otherwise stops the run, naming the batch.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::HttpSink;
use super::config::BatchSpec;
use crate::http::{HttpError, Reply, Request};
use crate::obs::RetryClass;
use crate::policy::{Backoff, Class, Outcome, classify};
use crate::sink::{SinkError, Write, Written};
use crate::stop::Stop;

/// What the answer says of one item.
#[derive(Debug)]
enum Item {
    Written(Option<String>),
    Refused {
        status: u16,
        reason: String,
    },
    /// Failed for now (or not answered by an upsert endpoint): send it again.
    Again(String),
    /// Not answered, by an endpoint that may not see it twice.
    Unanswered,
}

impl HttpSink {
    /// Writes `writes` in batches of the endpoint, answering for each in order.
    pub(super) async fn write_batches(
        &self,
        spec: &BatchSpec,
        mut writes: Vec<Write<'_>>,
        stop: &Stop,
    ) -> Vec<Result<Written, SinkError>> {
        let mut results: Vec<Option<Result<Written, SinkError>>> =
            writes.iter().map(|_| None).collect();
        let mut bodies = Vec::with_capacity(writes.len());
        for (i, write) in writes.iter_mut().enumerate() {
            let body = match write.encoded.take() {
                Some(encoded) => Ok(encoded.body),
                None => self.body(write.record),
            };
            match body {
                Ok(body) => bodies.push(body),
                Err(e) => {
                    bodies.push(Bytes::new());
                    results[i] = Some(Err(e));
                }
            }
        }
        // Groups still to send, the next on top; each in the order of `writes`.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let ready: Vec<usize> = (0..writes.len())
            .filter(|&i| results[i].is_none())
            .collect();
        for chunk in ready.chunks(spec.size).rev() {
            groups.push(chunk.to_vec());
        }
        let mut backoff = Backoff::new(self.retry);
        while let Some(group) = groups.pop() {
            let answer = self.post_batch(spec, &group, &bodies, stop).await;
            let (reply, items) = match answer {
                Ok(answer) => answer,
                // A whole batch refused may hold one record the endpoint cannot
                // take: halve it until that record stands alone.
                Err(SinkError::Rejected { .. }) if group.len() > 1 => {
                    let (first, second) = group.split_at(group.len() / 2);
                    groups.push(second.to_vec());
                    groups.push(first.to_vec());
                    continue;
                }
                Err(e) => {
                    // The first of the group carries the error (every record
                    // before it is answered); the rest were not sent.
                    let e = self.named(e, &group, &writes);
                    results[group[0]] = Some(Err(e));
                    break;
                }
            };
            let mut again = Vec::new();
            let mut last_detail = String::new();
            for (position, &i) in group.iter().enumerate() {
                let item = self.item(spec, &items, position, &writes[i].record.external_id);
                results[i] = match item {
                    Item::Written(dest_id) => Some(Ok(Written {
                        dest_id,
                        unsettled_since: reply.unsettled_since,
                        attempts: reply.attempts,
                    })),
                    Item::Refused { status, reason } => {
                        Some(Err(SinkError::Rejected { status, reason }))
                    }
                    Item::Again(detail) => {
                        last_detail = detail;
                        again.push(i);
                        None
                    }
                    Item::Unanswered => {
                        let id = writes[i].record.external_id.clone();
                        Some(Err(SinkError::BatchUnknown {
                            count: 1,
                            first: id.clone(),
                            last: id,
                            detail: "the batch's answer has no result for it".into(),
                        }))
                    }
                };
            }
            if again.is_empty() {
                continue;
            }
            let Some(delay) = backoff.next_delay(None) else {
                let e = SinkError::Http(HttpError::Exhausted {
                    api: "destination",
                    method: spec.method.clone(),
                    url: spec.path.0.clone(),
                    attempts: backoff.attempts(),
                    last: last_detail,
                });
                results[again[0]] = Some(Err(self.named(e, &again, &writes)));
                break;
            };
            self.api
                .count_retry(RetryClass::Other, &spec.path.0, &last_detail);
            if let Err(reason) = stop.sleep(delay).await {
                results[again[0]] = Some(Err(SinkError::Http(HttpError::Stopped(reason))));
                break;
            }
            groups.push(again);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(SinkError::NotSent)))
            .collect()
    }

    /// Sends the records of `group` as one request, and finds the answer's
    /// item results.
    async fn post_batch(
        &self,
        spec: &BatchSpec,
        group: &[usize],
        bodies: &[Bytes],
        stop: &Stop,
    ) -> Result<(Reply, Vec<Value>), SinkError> {
        let mut body = BytesMut::new();
        if let Some(field) = &spec.field {
            body.put_slice(b"{");
            body.put_slice(&serde_json::to_vec(field).unwrap_or_default());
            body.put_slice(b":");
        }
        body.put_slice(b"[");
        for (n, &i) in group.iter().enumerate() {
            if n > 0 {
                body.put_slice(b",");
            }
            body.put_slice(&bodies[i]);
        }
        body.put_slice(b"]");
        if spec.field.is_some() {
            body.put_slice(b"}");
        }
        let request = Request {
            method: spec.method.clone(),
            url: self.url(&spec.path, &[])?,
            query: Vec::new(),
            headers: Vec::new(),
            body: Some(body.freeze()),
            idempotent: spec.upsert,
        };
        let reply = self.send_write(&request, stop).await?;
        let answer = reply.json().unwrap_or_default();
        let results = match &spec.results_path {
            Some(path) => path.get(&answer).cloned().unwrap_or_default(),
            None => answer,
        };
        let items = match results {
            Value::Array(items) => items,
            _ => Vec::new(),
        };
        Ok((reply, items))
    }

    /// The answer for the record at `position` of its batch, whose external id
    /// is `external_id`.
    fn item(&self, spec: &BatchSpec, items: &[Value], position: usize, external_id: &str) -> Item {
        let found = match &spec.id_field {
            Some(field) => items.iter().find(|item| {
                field.get(item).is_some_and(|id| match id {
                    Value::String(s) => s == external_id,
                    Value::Number(n) => n.to_string() == external_id,
                    _ => false,
                })
            }),
            None => items.get(position),
        };
        let Some(item) = found else {
            return if spec.upsert {
                Item::Again("the batch's answer has no result for it".into())
            } else {
                Item::Unanswered
            };
        };
        let status = spec.status_field.as_ref().and_then(|f| match f.get(item)? {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let error = spec
            .error_field
            .as_ref()
            .and_then(|f| f.get(item))
            .filter(|e| !e.is_null())
            .map(|e| match e {
                Value::String(s) => s.clone(),
                e => e.to_string(),
            });
        match (status, error) {
            (Some(status), error) if !(200..300).contains(&status) => {
                let reason = error.unwrap_or_else(|| item.to_string());
                match classify(Outcome::Status(status)) {
                    Class::Transient { .. } => Item::Again(format!("HTTP {status} {reason}")),
                    _ => Item::Refused { status, reason },
                }
            }
            (status, Some(reason)) => Item::Refused {
                status: status.unwrap_or(422),
                reason,
            },
            (_, None) => Item::Written(self.dest_id(item)),
        }
    }

    /// `e`, saying which batch it stopped: a batch without a clear answer is
    /// named, since only a person can tell whether it was applied.
    fn named(&self, e: SinkError, group: &[usize], writes: &[Write<'_>]) -> SinkError {
        let ids = |i: usize| writes[group[i]].record.external_id.clone();
        match e {
            SinkError::Http(HttpError::Unknown { last, .. }) => SinkError::BatchUnknown {
                count: group.len(),
                first: ids(0),
                last: ids(group.len() - 1),
                detail: last,
            },
            e => e,
        }
    }
}
