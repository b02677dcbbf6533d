//! Owns the HTTP destination's batch mode: many records in one request, each
//! answered on its own. An item refused is dead-lettered alone; an item that
//! failed for now is sent again in a smaller batch after a backoff; a whole
//! batch refused is halved until the record it cannot take stands alone; a
//! batch without a clear answer is sent again only to an endpoint that upserts
//! by external id, and otherwise stops the run, naming the batch.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use tokio::time::Instant;

use super::HttpSink;
use super::config::{BatchSpec, ErrorList};
use crate::http::{HttpError, Reply, Request};
use crate::obs::RetryClass;
use crate::policy::{Backoff, Class, Outcome, classify, parse_retry_after};
use crate::record::FieldPath;
use crate::sink::{SinkError, Write, Written};
use crate::stop::Stop;

/// A batch's answer: its item results, and the errors it lists apart from
/// them (`errors_path`), each found by the external ids it names (a batch may
/// hold thousands: no scan per record).
#[derive(Debug)]
struct Answer {
    items: Vec<Value>,
    /// Results by external id, when matched by `result_id_field`.
    by_id: HashMap<String, usize>,
    errors: Vec<Value>,
    errors_by_id: HashMap<String, usize>,
}

impl Answer {
    fn new(items: Vec<Value>, errors: Vec<Value>, spec: &BatchSpec) -> Self {
        let mut by_id = HashMap::new();
        if let Some(field) = &spec.id_field {
            for (n, item) in items.iter().enumerate() {
                if let Some(id) = field.get(item).and_then(id_text) {
                    // The first result for an id answers for it.
                    by_id.entry(id).or_insert(n);
                }
            }
        }
        let mut errors_by_id = HashMap::new();
        if let Some(list) = &spec.errors {
            for (n, error) in errors.iter().enumerate() {
                let ids = match list.id_field.get(error) {
                    Some(Value::Array(ids)) => ids.iter().filter_map(id_text).collect(),
                    Some(id) => id_text(id).into_iter().collect(),
                    None => Vec::new(),
                };
                for id in ids {
                    errors_by_id.entry(id).or_insert(n);
                }
            }
        }
        Answer {
            items,
            by_id,
            errors,
            errors_by_id,
        }
    }
}

/// What the answer says of one item.
#[derive(Debug)]
enum Item {
    Written(Option<String>),
    Refused {
        status: u16,
        reason: String,
    },
    /// Failed for now (or not answered by an upsert endpoint): send it again
    /// — after a wait that uses up no attempt when it was answered 429.
    Again {
        detail: String,
        rate_limited: bool,
        retry_after: Option<Duration>,
    },
    /// Not answered, by an endpoint that may not see it twice: why.
    Unanswered(String),
}

impl Item {
    fn again(detail: String) -> Item {
        Item::Again {
            detail,
            rate_limited: false,
            retry_after: None,
        }
    }

    /// An item whose own status says to send it again (408, 425, 429, 5xx),
    /// after the wait its `result` asks for, if any.
    fn failed_for_now(spec: &BatchSpec, status: u16, reason: &str, result: &Value) -> Item {
        let retry_after = spec
            .retry_after_field
            .as_ref()
            .and_then(|f| f.get(result))
            .and_then(|wait| match wait {
                Value::Number(n) => n.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()),
                Value::String(s) => parse_retry_after(s, SystemTime::now()),
                _ => None,
            });
        Item::Again {
            detail: format!("HTTP {status} {reason}"),
            rate_limited: Outcome::Status(status).rate_limited(),
            retry_after,
        }
    }

    /// An item refused, or failed for now where its reason holds one of
    /// the endpoint's `result_transient_errors`.
    fn refused(spec: &BatchSpec, status: u16, reason: String, result: &Value) -> Item {
        if spec
            .transient_errors
            .iter()
            .any(|word| reason.contains(word.as_str()))
        {
            Item::failed_for_now(spec, status, &reason, result)
        } else {
            Item::Refused { status, reason }
        }
    }
}

/// Which records of a call are still to send, in which groups, and what became
/// of each: every record is answered exactly once, whatever the answers.
#[derive(Debug)]
struct Batches<R> {
    results: Vec<Option<R>>,
    /// Groups still to send, the next on top; each in the order of the call.
    groups: Vec<Vec<usize>>,
    /// When each record last went out in a request without a clear answer:
    /// that request (and any earlier one) may still land, whichever later
    /// batch answered for it.
    unclear: Vec<Option<Instant>>,
}

impl<R> Batches<R> {
    /// `answered` holds what is known before anything is sent (a record that
    /// cannot be encoded); the rest go in groups of `size`, in order.
    fn new(answered: Vec<Option<R>>, size: usize) -> Self {
        let ready: Vec<usize> = (0..answered.len())
            .filter(|&i| answered[i].is_none())
            .collect();
        let groups = ready
            .chunks(size.max(1))
            .rev()
            .map(<[usize]>::to_vec)
            .collect();
        Batches {
            unclear: vec![None; answered.len()],
            results: answered,
            groups,
        }
    }

    /// The records of `group` went out in a request that got no clear answer
    /// at an attempt sent at `since`.
    fn unclear(&mut self, group: &[usize], since: Instant) {
        for &i in group {
            self.unclear[i] = self.unclear[i].max(Some(since));
        }
    }

    fn next(&mut self) -> Option<Vec<usize>> {
        self.groups.pop()
    }

    fn answer(&mut self, i: usize, result: R) {
        debug_assert!(self.results[i].is_none(), "record {i} answered twice");
        self.results[i] = Some(result);
    }

    /// The group is sent again as two, the first half next.
    fn halve(&mut self, group: Vec<usize>) {
        let (first, second) = group.split_at(group.len() / 2);
        self.groups.push(second.to_vec());
        self.groups.push(first.to_vec());
    }

    /// These are sent again, next.
    fn again(&mut self, group: Vec<usize>) {
        self.groups.push(group);
    }

    /// Every record's answer; `unsent` for those no batch answered (after an
    /// error that stopped the call).
    fn finish(self, unsent: impl Fn() -> R) -> Vec<R> {
        self.results
            .into_iter()
            .map(|r| r.unwrap_or_else(&unsent))
            .collect()
    }
}

impl HttpSink {
    /// Writes `writes` in batches of the endpoint, answering for each in order.
    pub(super) async fn write_batches(
        &self,
        spec: &BatchSpec,
        mut writes: Vec<Write<'_>>,
        stop: &Stop,
    ) -> Vec<Result<Written, SinkError>> {
        let mut answered = Vec::with_capacity(writes.len());
        let mut bodies = Vec::with_capacity(writes.len());
        for write in &mut writes {
            let body = match write.encoded.take() {
                Some(encoded) => Ok(encoded.body),
                None => self.body(write.record),
            };
            match body {
                Ok(body) => {
                    bodies.push(body);
                    answered.push(None);
                }
                Err(e) => {
                    bodies.push(Bytes::new());
                    answered.push(Some(Err(e)));
                }
            }
        }
        let mut batches = Batches::new(answered, spec.size);
        let mut backoff = Backoff::new(self.retry);
        // Since when items have been answered 429 and nothing else that
        // failed for now, as the retry loop counts a request's 429s.
        let mut limited_since: Option<Instant> = None;
        while let Some(group) = batches.next() {
            let (reply, answer) = match self.post_batch(spec, &group, &bodies, stop).await {
                Ok(answer) => answer,
                // A whole batch refused may hold one record the endpoint cannot
                // take: halve it until that record stands alone.
                Err(SinkError::Rejected { .. }) if group.len() > 1 => {
                    batches.halve(group);
                    continue;
                }
                // A record refused alone is dead-lettered alone.
                Err(e) if e.is_record_level() => {
                    batches.answer(group[0], Err(e));
                    continue;
                }
                Err(e) => {
                    // The first of the group carries the error (every record
                    // before it is answered); the rest are not sent.
                    batches.answer(group[0], Err(self.named(e, &group, &writes)));
                    break;
                }
            };
            if let Some(since) = reply.unsettled_since {
                batches.unclear(&group, since);
            }
            let mut again = Vec::new();
            let mut last_detail = String::new();
            let mut all_rate_limited = true;
            // The longest wait an item's answer asked for.
            let mut floor: Option<Duration> = None;
            for (position, &i) in group.iter().enumerate() {
                let external_id = &writes[i].record.external_id;
                match self.item(spec, &answer, position, external_id) {
                    Item::Written(dest_id) => batches.answer(
                        i,
                        Ok(Written {
                            dest_id,
                            unsettled_since: batches.unclear[i],
                            attempts: reply.attempts,
                        }),
                    ),
                    Item::Refused { status, reason } => {
                        batches.answer(i, Err(SinkError::Rejected { status, reason }));
                    }
                    Item::Again {
                        detail,
                        rate_limited,
                        retry_after,
                    } => {
                        last_detail = detail;
                        all_rate_limited &= rate_limited;
                        floor = floor.max(retry_after);
                        again.push(i);
                    }
                    Item::Unanswered(detail) => batches.answer(
                        i,
                        Err(SinkError::BatchUnknown {
                            count: 1,
                            first: external_id.clone(),
                            last: external_id.clone(),
                            detail,
                        }),
                    ),
                }
            }
            if again.is_empty() {
                continue;
            }
            // Items answered 429 use up no attempt: the endpoint asks to
            // wait, for up to `rate_limited_for`.
            if !all_rate_limited {
                limited_since = None;
            }
            let waited =
                all_rate_limited.then(|| limited_since.get_or_insert_with(Instant::now).elapsed());
            let delay = match waited {
                Some(waited) => Some(backoff.next_wait(floor))
                    .filter(|delay| waited + *delay <= self.retry.rate_limited_for),
                None => backoff.next_delay(floor),
            };
            let Some(delay) = delay else {
                let (api, method, url) = ("destination", spec.method.clone(), spec.path.0.clone());
                let e = match waited {
                    Some(waited) => HttpError::RateLimited {
                        api,
                        method,
                        url,
                        attempts: backoff.attempts(),
                        waited,
                        last: last_detail,
                    },
                    None => HttpError::Exhausted {
                        api,
                        method,
                        url,
                        attempts: backoff.attempts(),
                        last: last_detail,
                    },
                };
                batches.answer(again[0], Err(SinkError::Http(e)));
                break;
            };
            let class = match waited {
                Some(_) => RetryClass::RateLimited,
                None => RetryClass::Other,
            };
            self.api.count_retry(class, &spec.path.0, &last_detail);
            // A wait the endpoint asked for holds every request to it back,
            // as a `Retry-After` on a whole answer does.
            if let Some(wait) = floor {
                self.api.hold(wait);
            }
            if let Err(reason) = stop.sleep(delay).await {
                batches.answer(again[0], Err(SinkError::Http(HttpError::Stopped(reason))));
                break;
            }
            batches.again(again);
        }
        batches.finish(|| Err(SinkError::NotSent))
    }

    /// Sends the records of `group` as one request, and finds the answer's
    /// item results and the errors it lists apart.
    async fn post_batch(
        &self,
        spec: &BatchSpec,
        group: &[usize],
        bodies: &[Bytes],
        stop: &Stop,
    ) -> Result<(Reply, Answer), SinkError> {
        let mut body = BytesMut::new();
        if let Some(field) = &spec.field {
            body.put_slice(b"{");
            for (name, value) in &spec.body {
                body.put_slice(&serde_json::to_vec(name).unwrap_or_default());
                body.put_slice(b":");
                body.put_slice(&serde_json::to_vec(value).unwrap_or_default());
                body.put_slice(b",");
            }
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
        let array =
            |path: Option<&FieldPath>| match path.map_or(Some(&answer), |path| path.get(&answer)) {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            };
        let items = array(spec.results_path.as_ref());
        let errors = spec
            .errors
            .as_ref()
            .map_or_else(Vec::new, |list| array(Some(&list.path)));
        Ok((reply, Answer::new(items, errors, spec)))
    }

    /// The answer for the record at `position` of its batch, whose external id
    /// is `external_id`.
    fn item(&self, spec: &BatchSpec, answer: &Answer, position: usize, external_id: &str) -> Item {
        if !spec.item_results {
            // A 2xx for the whole batch: every record of it is written.
            return Item::Written(None);
        }
        if let Some(list) = &spec.errors
            && let Some(&n) = answer.errors_by_id.get(external_id)
        {
            return listed_error(spec, list, &answer.errors[n]);
        }
        let found = match &spec.id_field {
            Some(_) => answer.by_id.get(external_id).map(|&n| &answer.items[n]),
            None => answer.items.get(position),
        };
        // An upsert endpoint may see the record again; another may not.
        let unanswered = |detail: String| match spec.upsert {
            true => Item::again(detail),
            false => Item::Unanswered(detail),
        };
        // Results matched by position must be in the records' order: one
        // that names another record's external id would lend this record
        // its answer and its destination id (HubSpot answers in any order).
        // Case aside: an API may give an email back in lower case.
        if spec.id_field.is_none()
            && let Some(item) = found
            && let Some(named) = self
                .spec
                .external_id_field
                .as_ref()
                .and_then(|f| f.get(item))
            && id_text(named).is_some_and(|named| !named.eq_ignore_ascii_case(external_id))
        {
            return unanswered(format!(
                "the batch's result at {external_id}'s place names {named}: results are not in \
                 the order of the records; set `result_id_field` to match them by external id"
            ));
        }
        let Some(item) = found else {
            return unanswered(match spec.errors {
                Some(_) => format!(
                    "the batch's answer has no result for {external_id}, nor an error naming it"
                ),
                None => format!(
                    "the batch's answer has no result for {external_id} \
                     (an answer listing failed items apart needs `errors_path`, \
                     one for the whole batch only `item_results = false`)"
                ),
            });
        };
        match status_and_error(spec, item) {
            (Some(status), error) if !(200..300).contains(&status) => {
                let reason = error.unwrap_or_else(|| item.to_string());
                match classify(Outcome::Status(status)) {
                    Class::Transient { .. } => Item::failed_for_now(spec, status, &reason, item),
                    _ => Item::refused(spec, status, reason, item),
                }
            }
            // An error beside a 2xx or no status: refused, as 422.
            (_, Some(reason)) => Item::refused(spec, 422, reason, item),
            // A result without the status the endpoint was said to give
            // says nothing of the item: never taken for written.
            (None, None) if let Some(field) = &spec.status_field => unanswered(format!(
                "the batch's result for {external_id} has no status at `{field}` \
                 (result_status_field), nor an error: leave the key out if the \
                 endpoint's results carry none"
            )),
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

/// An id in an answer, as the external id it may be.
fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What an error listed apart says of its records: failed for now when its
/// status says so (408, 425, 429, 5xx), refused otherwise — 422 when it
/// carries no status, as HubSpot's (`"status": "error"`) do.
fn listed_error(spec: &BatchSpec, list: &ErrorList, error: &Value) -> Item {
    let reason = match list.message_field.as_ref().and_then(|f| f.get(error)) {
        Some(Value::String(s)) => s.clone(),
        Some(message) => message.to_string(),
        None => error.to_string(),
    };
    let status = spec
        .status_field
        .as_ref()
        .and_then(|f| status(f.get(error)?));
    match status {
        Some(status) if matches!(classify(Outcome::Status(status)), Class::Transient { .. }) => {
            Item::failed_for_now(spec, status, &reason, error)
        }
        status => Item::refused(
            spec,
            status.filter(|s| !(200..300).contains(s)).unwrap_or(422),
            reason,
            error,
        ),
    }
}

/// A status as an answer may give it: a number, a number in a string, a
/// boolean (`"success": true`: 200, false: 422), or a word (Zoho's
/// `"status": "success"` or `"error"`). Any other value there says the item
/// was not written, and nothing says why: refused (422), with the whole
/// result as the reason, never taken for written.
fn status(value: &Value) -> Option<u16> {
    match value {
        Value::Null => None,
        Value::Number(n) => Some(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(422),
        ),
        Value::String(s) => {
            // A code with its reason phrase (`"201 Created"`) is its code.
            let code = s.split_whitespace().next().and_then(|c| c.parse().ok());
            Some(
                code.unwrap_or_else(|| match s.trim().to_ascii_lowercase().as_str() {
                    "success" | "succeeded" | "ok" | "created" | "updated" | "true" => 200,
                    _ => 422,
                }),
            )
        }
        Value::Bool(true) => Some(200),
        Value::Bool(false) | Value::Array(_) | Value::Object(_) => Some(422),
    }
}

/// An item result's status and error, where `spec` says they are. A status
/// is read by `status`; an error that is null or empty (`""`, `[]`, `{}`, from an
/// API that sends the field with every result) is none.
fn status_and_error(spec: &BatchSpec, item: &Value) -> (Option<u16>, Option<String>) {
    let status = spec
        .status_field
        .as_ref()
        .and_then(|f| status(f.get(item)?));
    let error = spec
        .error_field
        .as_ref()
        .and_then(|f| f.get(item))
        .filter(|e| match e {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Bool(_) | Value::Number(_) => true,
        })
        .map(|e| match e {
            Value::String(s) => s.clone(),
            e => e.to_string(),
        });
    (status, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_item_s_status_may_be_a_boolean_and_an_empty_error_is_none() {
        let spec = |status: &str, error: &str| BatchSpec {
            path: crate::config::UriTemplate("/batch".into()),
            method: reqwest::Method::POST,
            size: 10,
            field: None,
            body: Vec::new(),
            results_path: None,
            id_field: None,
            status_field: Some(crate::record::FieldPath::parse(status)),
            error_field: Some(crate::record::FieldPath::parse(error)),
            transient_errors: Vec::new(),
            retry_after_field: None,
            errors: None,
            item_results: true,
            upsert: true,
        };
        let salesforce = spec("success", "errors");
        let written = serde_json::json!({"id": "003x", "success": true, "errors": []});
        assert_eq!(status_and_error(&salesforce, &written), (Some(200), None));
        let refused = serde_json::json!({"success": false, "errors": [{"message": "bad email"}]});
        assert_eq!(
            status_and_error(&salesforce, &refused),
            (Some(422), Some(r#"[{"message":"bad email"}]"#.into()))
        );
        // A lock another writer held: refused by its status, failed for now by its reason.
        let locking = BatchSpec {
            transient_errors: vec!["UNABLE_TO_LOCK_ROW".into()],
            ..salesforce.clone()
        };
        let locked = r#"[{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access"}]"#;
        assert!(matches!(
            Item::refused(&locking, 422, locked.into(), &Value::Null),
            Item::Again {
                rate_limited: false,
                ..
            }
        ));
        assert!(matches!(
            Item::refused(&locking, 422, "bad email".into(), &Value::Null),
            Item::Refused { status: 422, .. }
        ));
        assert!(matches!(
            Item::refused(&salesforce, 422, locked.into(), &Value::Null),
            Item::Refused { status: 422, .. }
        ));
        // Microsoft Graph's: each item's own Retry-After, in its headers.
        let graph = BatchSpec {
            retry_after_field: Some(crate::record::FieldPath::parse("headers.Retry-After")),
            ..spec("status", "body.error")
        };
        for (wait, wanted) in [
            (serde_json::json!("10"), Some(Duration::from_secs(10))),
            (serde_json::json!(1.5), Some(Duration::from_millis(1500))),
            (serde_json::json!("soon"), None),
        ] {
            let result = serde_json::json!({"status": 429, "headers": {"Retry-After": wait}});
            assert!(
                matches!(
                    Item::failed_for_now(&graph, 429, "throttled", &result),
                    Item::Again { rate_limited: true, retry_after, .. } if retry_after == wanted
                ),
                "{result}"
            );
        }
        let coded = spec("status", "error");
        for (item, wanted) in [
            (
                serde_json::json!({"status": "201", "error": ""}),
                (Some(201), None),
            ),
            (
                serde_json::json!({"status": 200, "error": {}}),
                (Some(200), None),
            ),
            (
                serde_json::json!({"status": 429, "error": null}),
                (Some(429), None),
            ),
            (
                serde_json::json!({"status": 400, "error": "no"}),
                (Some(400), Some("no".into())),
            ),
            (
                serde_json::json!({"error": "gone"}),
                (None, Some("gone".into())),
            ),
            // Zoho's words; any other a status cannot be is not written.
            (
                serde_json::json!({"status": "success", "message": "record added"}),
                (Some(200), None),
            ),
            (serde_json::json!({"status": " OK "}), (Some(200), None)),
            (
                serde_json::json!({"status": "201 Created"}),
                (Some(201), None),
            ),
            (
                serde_json::json!({"status": "503 Service Unavailable"}),
                (Some(503), None),
            ),
            (
                serde_json::json!({"status": "error", "code": "INVALID_DATA"}),
                (Some(422), None),
            ),
            (serde_json::json!({"status": "pending"}), (Some(422), None)),
            (serde_json::json!({"status": 70000}), (Some(422), None)),
            (
                serde_json::json!({"status": {"code": 1}}),
                (Some(422), None),
            ),
            (serde_json::json!({"status": null}), (None, None)),
        ] {
            assert_eq!(status_and_error(&coded, &item), wanted, "{item}");
        }
    }

    /// Results matched by position name their own records, case aside (an
    /// email given back in lower case); one that names another record is
    /// not that record's answer.
    #[test]
    fn a_result_by_position_names_its_own_record() {
        let text = r#"
[[sync]]
name = "crm"
[sync.source]
base_url = "http://127.0.0.1:1"
path = "/v1/customers"
pagination = { style = "cursor" }
[sync.mapping]
external_id = "{email}"
[sync.destination]
type = "http"
base_url = "http://127.0.0.1:1"
mode = "batch"
path = "/batch"
result_status_field = "status"
external_id_field = "email"
"#;
        let config = crate::config::parse(text, std::path::Path::new("hw.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let crate::config::DestinationSpec::Http(spec) = config.syncs[0].destination.clone() else {
            unreachable!("an HTTP destination")
        };
        let crate::config::WriteMode::Batch(batch) = spec.mode.clone() else {
            unreachable!("batch mode")
        };
        let sink = HttpSink::new("crm", spec, config.syncs[0].retry, None).expect("sink");
        let answer = Answer::new(
            vec![
                serde_json::json!({"email": "ann@example.com", "status": 200}),
                serde_json::json!({"email": "bob@example.com", "status": 200}),
            ],
            Vec::new(),
            &batch,
        );
        assert!(matches!(
            sink.item(&batch, &answer, 0, "Ann@Example.com"),
            Item::Written(_)
        ));
        assert!(matches!(
            sink.item(&batch, &answer, 1, "cy@example.com"),
            Item::Unanswered(detail) if detail.contains("not in the order of the records")
        ));
    }

    #[test]
    fn an_error_listed_apart_names_its_records_and_says_whether_to_send_again() {
        let list = ErrorList {
            path: FieldPath::parse("errors"),
            id_field: FieldPath::parse("context.ids"),
            message_field: Some(FieldPath::parse("message")),
        };
        let spec = BatchSpec {
            path: crate::config::UriTemplate("/batch".into()),
            method: reqwest::Method::POST,
            size: 10,
            field: Some("inputs".into()),
            body: Vec::new(),
            results_path: Some(FieldPath::parse("results")),
            id_field: Some(FieldPath::parse("properties.external_id")),
            status_field: Some(FieldPath::parse("status")),
            error_field: None,
            transient_errors: Vec::new(),
            retry_after_field: None,
            errors: Some(list.clone()),
            item_results: true,
            upsert: true,
        };
        // HubSpot's: a status that is no code, the ids in an array.
        let hubspot = serde_json::json!({
            "status": "error", "category": "VALIDATION_ERROR",
            "message": "Property email is required", "context": {"ids": ["p-1", 7]}
        });
        let again =
            serde_json::json!({"status": 429, "message": "slow down", "context": {"ids": "p-2"}});
        let answer = Answer::new(
            vec![serde_json::json!({"properties": {"external_id": 8}})],
            vec![hubspot.clone(), again.clone()],
            &spec,
        );
        let found = |id: &str| answer.errors_by_id.get(id).copied();
        assert_eq!(
            (found("p-1"), found("7"), found("p-2")),
            (Some(0), Some(0), Some(1))
        );
        assert_eq!((found("p-3"), answer.by_id.get("8")), (None, Some(&0)));
        assert!(matches!(
            listed_error(&spec, &list, &hubspot),
            Item::Refused { status: 422, reason } if reason == "Property email is required"
        ));
        assert!(matches!(
            listed_error(&spec, &list, &again),
            Item::Again { detail, rate_limited: true, .. } if detail == "HTTP 429 slow down"
        ));
        let bare = ErrorList {
            message_field: None,
            ..list
        };
        let coded = serde_json::json!({"status": "409", "context": {"ids": ["p-3"]}});
        assert!(matches!(
            listed_error(&spec, &bare, &coded),
            Item::Refused { status: 409, reason } if reason == r#"{"context":{"ids":["p-3"]},"status":"409"}"#
        ));
    }

    /// What the endpoint does with one batch, as the test scripts it.
    #[derive(Debug, Clone)]
    enum Script {
        /// Answers each item: 0 written, 1 refused, 2 failed for now.
        Items(Vec<u8>),
        RefusedWhole,
        Fatal,
    }

    proptest! {
        /// Any split of a page into batches, any per-item answers, whole
        /// batches refused and errors that stop the call: every record is
        /// answered exactly once, a record is sent only until answered, and
        /// each is unsettled from the last request without a clear answer
        /// that carried it.
        #[test]
        fn every_record_is_answered_exactly_once(
            len in 0usize..60,
            size in 1usize..20,
            pre_answered in proptest::collection::vec(any::<bool>(), 60),
            scripts in proptest::collection::vec(
                prop_oneof![
                    6 => proptest::collection::vec(0u8..3, 60).prop_map(Script::Items),
                    1 => Just(Script::RefusedWhole),
                    1 => Just(Script::Fatal),
                ],
                1..200,
            ),
            unclear_rounds in proptest::collection::vec(any::<bool>(), 200),
        ) {
            let answered: Vec<Option<&str>> = (0..len)
                .map(|i| pre_answered[i].then_some("unencodable"))
                .collect();
            let mut batches = Batches::new(answered, size);
            let mut sent = vec![0u32; len];
            let mut last_unclear = vec![None; len];
            let start = Instant::now();
            let mut scripts = scripts.into_iter().cycle();
            let mut rounds = 0;
            while let Some(group) = batches.next() {
                rounds += 1;
                prop_assert!(rounds < 10_000, "the call never ends");
                prop_assert!(!group.is_empty() && group.len() <= size);
                for &i in &group {
                    prop_assert!(batches.results[i].is_none(), "record {} sent after its answer", i);
                    sent[i] += 1;
                }
                if unclear_rounds[rounds % unclear_rounds.len()] {
                    let since = start + std::time::Duration::from_millis(rounds as u64);
                    batches.unclear(&group, since);
                    for &i in &group {
                        last_unclear[i] = Some(since);
                    }
                }
                match scripts.next() {
                    Some(Script::RefusedWhole) if group.len() > 1 => batches.halve(group),
                    Some(Script::RefusedWhole) => batches.answer(group[0], "refused alone"),
                    Some(Script::Fatal) | None => {
                        batches.answer(group[0], "stopped");
                        break;
                    }
                    Some(Script::Items(items)) => {
                        let mut again = Vec::new();
                        for (k, &i) in group.iter().enumerate() {
                            match items[k % items.len()] {
                                0 => batches.answer(i, "written"),
                                1 => batches.answer(i, "refused"),
                                // Failed for now, a bounded number of times.
                                _ if sent[i] < 3 => again.push(i),
                                _ => batches.answer(i, "written"),
                            }
                        }
                        if !again.is_empty() {
                            batches.again(again);
                        }
                    }
                }
            }
            prop_assert_eq!(&batches.unclear, &last_unclear);
            let stopped = batches.results.contains(&Some("stopped"));
            let results = batches.finish(|| "not sent");
            prop_assert_eq!(results.len(), len);
            for (i, result) in results.iter().enumerate() {
                if pre_answered[i] {
                    prop_assert_eq!(*result, "unencodable");
                    prop_assert_eq!(sent[i], 0);
                } else if *result == "not sent" {
                    prop_assert!(stopped, "record {} left unanswered without a stop", i);
                } else {
                    prop_assert!(sent[i] >= 1);
                }
            }
        }
    }
}
