//! Owns the HTTP destination's batch mode: many records in one request, each
//! answered on its own. An item refused is dead-lettered alone; an item that
//! failed for now is sent again in a smaller batch after a backoff; a whole
//! batch refused is halved until the record it cannot take stands alone; a
//! batch without a clear answer is sent again only to an endpoint that upserts
//! by external id, and otherwise stops the run, naming the batch. An endpoint
//! that answers with a job is asked for the job's results (`job.rs`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use tokio::time::Instant;

use super::HttpSink;
use super::config::{BatchSpec, ErrorList, ErrorNames};
use crate::http::{HttpError, Reply, Request};
use crate::obs::RetryClass;
use crate::policy::{Backoff, Class, Outcome, classify, parse_retry_after};
use crate::record::FieldPath;
use crate::sink::{SinkError, Write, Written};
use crate::stop::Stop;

mod job;
use job::Job;

/// Records refused alone, one after another, for one same reason, with no
/// request of theirs taken, after which a batch endpoint is taken to refuse
/// every request.
const REFUSED_ALONE: usize = 10;

/// The status of an item refused in a batch's answer that gives it none of
/// its own (an error field, `"status": "error"`, `false`): no HTTP status
/// is made up for it.
pub(crate) const REFUSED_IN_ANSWER: u16 = 0;

/// A reason without what makes each telling of it unique (an error's or a
/// request's id, a time: Klaviyo gives every error an id of its own): each
/// run of hex digits, dashes, colons and dots four or more long and holding
/// a digit reads as `#`.
fn gist(reason: &str) -> String {
    fn flush(run: &mut String, out: &mut String) {
        if run.len() >= 4 && run.bytes().any(|b| b.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    }
    let mut out = String::with_capacity(reason.len());
    let mut run = String::new();
    for c in reason.chars() {
        if c.is_ascii_hexdigit() || matches!(c, '-' | ':' | '.') {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A batch's answer: its item results, and the errors it lists apart from
/// them (`errors_path`), each found by the external ids it names (a batch may
/// hold thousands: no scan per record).
#[derive(Debug)]
struct Answer {
    items: Vec<Value>,
    /// Results by external id, when matched by `result_id_field`.
    by_id: IdIndex,
    errors: Vec<Value>,
    errors_by_id: IdIndex,
    /// Errors by the place in the batch of the item each names.
    errors_by_place: HashMap<usize, usize>,
    /// Errors that name no item (HubSpot's without `context.ids`).
    errors_unnamed: Vec<usize>,
    /// The answer says nothing sure of any item (a job that gave no
    /// results), for this reason.
    unknown: Option<String>,
    /// How many items the answer counts not written (`failed_count_field`),
    /// when any, with the answer as text to quote.
    failed: Option<(u64, String)>,
}

impl Answer {
    fn new(items: Vec<Value>, errors: Vec<Value>, spec: &BatchSpec) -> Self {
        let mut by_id = IdIndex::default();
        if let Some(field) = &spec.id_field {
            for (n, item) in items.iter().enumerate() {
                if let Some(id) = field.get(item).and_then(id_text) {
                    by_id.insert(id, n);
                }
            }
        }
        let mut errors_by_id = IdIndex::default();
        let mut errors_by_place = HashMap::new();
        let mut errors_unnamed = Vec::new();
        if let Some(list) = &spec.errors {
            for (n, error) in errors.iter().enumerate() {
                match &list.names {
                    ErrorNames::Ids(field) => {
                        let ids: Vec<String> = match field.get(error) {
                            Some(Value::Array(ids)) => ids.iter().filter_map(id_text).collect(),
                            Some(id) => id_text(id).into_iter().collect(),
                            None => Vec::new(),
                        };
                        if ids.is_empty() {
                            errors_unnamed.push(n);
                        }
                        for id in ids {
                            errors_by_id.insert(id, n);
                        }
                    }
                    ErrorNames::Index(field) => {
                        let place = field.get(error).and_then(id_text);
                        match place.and_then(|p| p.parse::<usize>().ok()) {
                            Some(place) => {
                                errors_by_place.entry(place).or_insert(n);
                            }
                            None => errors_unnamed.push(n),
                        }
                    }
                }
            }
        }
        Answer {
            items,
            by_id,
            errors,
            errors_by_id,
            errors_by_place,
            errors_unnamed,
            unknown: None,
            failed: None,
        }
    }

    fn unknown(detail: String) -> Self {
        Answer {
            items: Vec::new(),
            by_id: IdIndex::default(),
            errors: Vec::new(),
            errors_by_id: IdIndex::default(),
            errors_by_place: HashMap::new(),
            errors_unnamed: Vec::new(),
            unknown: Some(detail),
            failed: None,
        }
    }
}

/// The places of an answer's results or errors by the external id each
/// names: the first for an id answers for it. An id is found as it is
/// named, or else case aside: an API may give an email back in lower case
/// (HubSpot's contacts, by `email`).
#[derive(Debug, Default)]
struct IdIndex {
    exact: HashMap<String, usize>,
    folded: HashMap<String, usize>,
}

impl IdIndex {
    fn insert(&mut self, id: String, n: usize) {
        self.folded.entry(id.to_lowercase()).or_insert(n);
        self.exact.entry(id).or_insert(n);
    }

    fn get(&self, id: &str) -> Option<usize> {
        self.exact
            .get(id)
            .or_else(|| self.folded.get(&id.to_lowercase()))
            .copied()
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
        let mut backoff = Backoff::new(self.api.retry_policy());
        // Since when items have been answered 429 and nothing else that
        // failed for now, as the retry loop counts a request's 429s.
        let mut limited_since: Option<Instant> = None;
        // Records refused alone, answered once a request of these writes is
        // taken: until then the endpoint may be refusing every request.
        let mut refused_alone: Vec<(usize, SinkError)> = Vec::new();
        let mut taken = false;
        while let Some(group) = batches.next() {
            let (reply, answer) = match self.post_batch(spec, &group, &bodies, stop).await {
                Ok(answer) => answer,
                // A whole batch refused may hold one record the endpoint cannot
                // take: halve it until that record stands alone.
                Err(SinkError::Rejected { .. }) if group.len() > 1 => {
                    batches.halve(group);
                    continue;
                }
                // A record refused alone is dead-lettered alone — unless
                // record after record is, for one same reason, and no
                // request was taken: then the endpoint refuses the requests
                // themselves (a wrong `batch_field`), and the run stops
                // before it dead-letters healthy records by the thousand.
                // Records refused for reasons of their own are theirs.
                Err(e) if e.is_record_level() => {
                    let same = refused_alone
                        .first()
                        .is_none_or(|(_, first)| gist(&first.to_string()) == gist(&e.to_string()));
                    if taken || !same {
                        taken = true;
                        for (i, e) in refused_alone.drain(..) {
                            batches.answer(i, Err(e));
                        }
                        batches.answer(group[0], Err(e));
                        continue;
                    }
                    refused_alone.push((group[0], e));
                    if refused_alone.len() < REFUSED_ALONE {
                        continue;
                    }
                    let (first, last) = (refused_alone[0].0, &refused_alone[REFUSED_ALONE - 1].1);
                    let e = SinkError::RefusesEveryRequest {
                        records: REFUSED_ALONE,
                        last: last.to_string(),
                    };
                    batches.answer(first, Err(e));
                    refused_alone.clear();
                    break;
                }
                Err(e) => {
                    // The first of the group carries the error (every record
                    // before it is answered); the rest are not sent.
                    batches.answer(group[0], Err(self.named(e, &group, &writes)));
                    break;
                }
            };
            if !taken {
                taken = true;
                for (i, e) in refused_alone.drain(..) {
                    batches.answer(i, Err(e));
                }
            }
            if let Some(since) = reply.unsettled_since {
                batches.unclear(&group, since);
            }
            let mut again = Vec::new();
            let mut last_detail = String::new();
            let mut all_rate_limited = true;
            // The longest wait an item's answer asked for.
            let mut floor: Option<Duration> = None;
            let mut items: Vec<Item> = group
                .iter()
                .enumerate()
                .map(|(position, &i)| {
                    self.item(spec, &answer, position, &writes[i].record.external_id)
                })
                .collect();
            // Failures the answer counts or lists but does not name: halves
            // of the batch are sent again to an upsert until each stands
            // alone. Another endpoint's batch stops the run, named.
            if let Some(alone) = unnamed_failure(spec, &answer, &items) {
                if !spec.upsert {
                    let detail = "the answer lists an error naming no record";
                    for item in &mut items {
                        if matches!(item, Item::Written(_)) && !spec.item_results {
                            *item = Item::Unanswered(detail.to_owned());
                        }
                    }
                } else if group.len() > 1 {
                    batches.halve(group);
                    continue;
                } else {
                    items[0] = alone;
                }
            }
            for (item, &i) in items.into_iter().zip(&group) {
                let external_id = &writes[i].record.external_id;
                match item {
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
        for (i, e) in refused_alone {
            batches.answer(i, Err(e));
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
        if let Some(envelope) = &spec.envelope {
            body.put_slice(&envelope.before);
        }
        body.put_slice(b"[");
        for (n, &i) in group.iter().enumerate() {
            if n > 0 {
                body.put_slice(b",");
            }
            body.put_slice(&bodies[i]);
        }
        body.put_slice(b"]");
        if let Some(envelope) = &spec.envelope {
            body.put_slice(&envelope.after);
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
        let mut answer = reply.json().unwrap_or_default();
        if let Some(job) = &spec.job {
            match self.await_job(job, &request, answer, stop).await? {
                Job::Done(done) => answer = done,
                // Sent again, as a batch without a clear answer is; the job
                // may still run after it, so its records are unsettled from
                // now, as a write that may still land.
                Job::Unknown(detail) if spec.upsert => {
                    let mut reply = reply;
                    reply.unsettled_since = reply.unsettled_since.or(Some(Instant::now()));
                    return Ok((reply, Answer::unknown(detail)));
                }
                Job::Unknown(detail) => {
                    return Err(SinkError::Http(HttpError::Unknown {
                        api: "destination",
                        method: request.method,
                        url: request.url.to_string(),
                        last: detail,
                        class: RetryClass::Other,
                        sent: Instant::now(),
                    }));
                }
            }
        }
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
        let mut read = Answer::new(items, errors, spec);
        read.failed = spec
            .failed_count_field
            .as_ref()
            .and_then(|field| field.get(&answer))
            .and_then(|count| match count {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .filter(|&failed| failed > 0)
            .map(|failed| (failed, job::excerpt(&answer)));
        Ok((reply, read))
    }

    /// The answer for the record at `position` of its batch, whose external id
    /// is `external_id`.
    fn item(&self, spec: &BatchSpec, answer: &Answer, position: usize, external_id: &str) -> Item {
        if let Some(detail) = &answer.unknown {
            return Item::again(detail.clone());
        }
        if let Some(list) = &spec.errors {
            let listed = match list.names {
                ErrorNames::Ids(_) => answer.errors_by_id.get(external_id),
                ErrorNames::Index(_) => answer.errors_by_place.get(&position).copied(),
            };
            if let Some(n) = listed {
                return listed_error(spec, list, &answer.errors[n]);
            }
        }
        if !spec.item_results {
            // A 2xx for the whole batch, which lists no error naming this
            // record: it is written.
            return Item::Written(None);
        }
        let found = match &spec.id_field {
            Some(_) => answer.by_id.get(external_id).map(|n| &answer.items[n]),
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
            // An error beside a 2xx or no status: refused.
            (_, Some(reason)) => Item::refused(spec, REFUSED_IN_ANSWER, reason, item),
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

/// What a failure the answer counts (`failed_count_field`) or lists apart
/// without naming its record says of a record sent alone, if there is one.
fn unnamed_failure(spec: &BatchSpec, answer: &Answer, items: &[Item]) -> Option<Item> {
    if let (Some(list), Some(&n)) = (&spec.errors, answer.errors_unnamed.first()) {
        return Some(listed_error(spec, list, &answer.errors[n]));
    }
    let named = items
        .iter()
        .filter(|item| !matches!(item, Item::Written(_)))
        .count() as u64;
    let (failed, text) = answer.failed.as_ref().filter(|(n, _)| *n > named)?;
    let field = spec.failed_count_field.as_ref().map(ToString::to_string);
    Some(Item::Refused {
        status: REFUSED_IN_ANSWER,
        reason: format!(
            "sent alone, the destination's answer counts {failed} failed at `{}` \
             (failed_count_field): {text}",
            field.unwrap_or_default()
        ),
    })
}

/// What an error listed apart says of its records: failed for now when its
/// status says so (408, 425, 429, 5xx), refused otherwise — with no status
/// of its own when it carries none, as HubSpot's (`"status": "error"`) do.
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
            status
                .filter(|s| !(200..300).contains(s))
                .unwrap_or(REFUSED_IN_ANSWER),
            reason,
            error,
        ),
    }
}

/// A status as an answer may give it: a number, a number in a string, a
/// boolean (`"success": true`: 200, false: refused), or a word (Zoho's
/// `"status": "success"` or `"error"`). Any other value there says the item
/// was not written, and nothing says why: refused, with the whole
/// result as the reason, never taken for written.
fn status(value: &Value) -> Option<u16> {
    match value {
        Value::Null => None,
        Value::Number(n) => Some(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(REFUSED_IN_ANSWER),
        ),
        Value::String(s) => {
            // A code with its reason phrase (`"201 Created"`) is its code.
            let code = s.split_whitespace().next().and_then(|c| c.parse().ok());
            Some(
                code.unwrap_or_else(|| match s.trim().to_ascii_lowercase().as_str() {
                    "success" | "succeeded" | "ok" | "created" | "updated" | "true" => 200,
                    _ => REFUSED_IN_ANSWER,
                }),
            )
        }
        Value::Bool(true) => Some(200),
        Value::Bool(false) | Value::Array(_) | Value::Object(_) => Some(REFUSED_IN_ANSWER),
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
mod tests;
