//! Owns the HTTP destination's three write modes: `put` to the record's URI, `lookup`
//! (find by external id, then update or create), and `post` with an
//! `Idempotency-Key` derived from sync, source id, version and payload — and reading
//! one record back by external id, to see what the destination holds.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::Value;

mod batch;
pub(crate) use batch::REFUSED_IN_ANSWER;
pub mod config;

use std::time::Duration;

use super::{Delete, Encoded, Held, Sink, SinkError, WithField, Write, Written};
use crate::config::UriTemplate;
use crate::http::{Api, HttpError, Reply, Request};
use crate::mapping::MappedRecord;
use crate::obs::RetryCounts;
use crate::policy::RetryPolicy;
use crate::record::FieldPath;
use crate::stop::Stop;
use config::{HttpDestinationSpec, WriteMode};

#[derive(Debug)]
pub struct HttpSink {
    sync: String,
    spec: HttpDestinationSpec,
    api: Api,
    retry: RetryPolicy,
    /// Where a DELETE goes, for a sync that deletes.
    delete_path: Option<UriTemplate>,
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    fn batch_size(&self) -> usize {
        match &self.spec.mode {
            WriteMode::Batch(spec) => spec.size,
            _ => 1,
        }
    }

    fn encode(&self, record: &MappedRecord) -> Option<Encoded> {
        self.encode_record(record).ok()
    }

    async fn write_batch(
        &self,
        writes: Vec<Write<'_>>,
        stop: &Stop,
    ) -> Vec<Result<Written, SinkError>> {
        match &self.spec.mode {
            WriteMode::Batch(spec) => self.write_batches(spec, writes, stop).await,
            _ => {
                let mut results = Vec::with_capacity(writes.len());
                for write in writes {
                    results.push(self.write_record(write, stop).await);
                }
                results
            }
        }
    }

    async fn write(&self, write: Write<'_>, stop: &Stop) -> Result<Written, SinkError> {
        self.write_record(write, stop).await
    }

    async fn delete(&self, delete: &Delete<'_>, stop: &Stop) -> Result<Written, SinkError> {
        self.delete_record(delete, stop).await
    }

    /// Through the lookup, or a read path.
    fn can_read_back(&self) -> bool {
        matches!(self.spec.mode, WriteMode::Lookup { .. }) || self.spec.read.is_some()
    }

    fn resends_safely(&self) -> bool {
        match &self.spec.mode {
            WriteMode::Put { .. } => true,
            WriteMode::Batch(batch) => batch.upsert,
            WriteMode::Lookup { .. } | WriteMode::Post { .. } => false,
        }
    }

    async fn read_back(&self, external_id: &str, stop: &Stop) -> Result<Held, SinkError> {
        self.read_record(external_id, stop).await
    }

    fn late_write_window(&self) -> Duration {
        self.spec.late_write_window
    }

    fn refuses_older_writes(&self) -> bool {
        self.spec.version_header.is_some()
    }

    fn retries(&self) -> RetryCounts {
        self.api.retries()
    }

    fn unpaced(&self) -> Option<crate::http::Unpaced> {
        self.api.unpaced()
    }

    fn keep_tokens_with(&self, keeper: std::sync::Arc<dyn crate::auth::TokenKeeper>) {
        self.api.keep_tokens_with(keeper);
    }

    /// Half the request timeout (at least 50 ms: below, the timer would wake
    /// the loop too often to be worth it).
    fn timer_lead(&self) -> Duration {
        (self.spec.http.timeout / 2).max(Duration::from_millis(50))
    }
}

impl HttpSink {
    pub fn new(
        sync: &str,
        spec: HttpDestinationSpec,
        retry: RetryPolicy,
        delete_path: Option<UriTemplate>,
    ) -> Result<Self, SinkError> {
        let api = Api::new(
            sync,
            "destination",
            spec.http.clone(),
            retry,
            spec.concurrency,
        )?;
        Ok(HttpSink {
            sync: sync.to_owned(),
            spec,
            api,
            retry,
            delete_path,
        })
    }

    fn encode_record(&self, record: &MappedRecord) -> Result<Encoded, SinkError> {
        let url = match &self.spec.mode {
            WriteMode::Put { path, .. } | WriteMode::Post { path, .. } => {
                Some(self.url(path, &[("external_id", &record.external_id)])?)
            }
            WriteMode::Lookup { .. } | WriteMode::Batch(_) => None,
        };
        Ok(Encoded {
            body: self.body(record)?,
            url,
        })
    }

    async fn write_record(&self, mut write: Write<'_>, stop: &Stop) -> Result<Written, SinkError> {
        let Encoded { body, url } = match write.encoded.take() {
            Some(encoded) => encoded,
            None => self.encode_record(write.record)?,
        };
        // `encode` gives every put and post its URL; a lookup builds its own.
        let url = || url.ok_or_else(|| SinkError::Unwritable("no URL for this write".into()));
        match &self.spec.mode {
            WriteMode::Put { method, .. } => {
                let request = self.request(method.clone(), url()?, Some(body), true, &write);
                let reply = self.send_write(&request, stop).await?;
                Ok(self.written(&reply))
            }
            WriteMode::Post {
                idempotency_header, ..
            } => {
                let mut request = self.request(Method::POST, url()?, Some(body), true, &write);
                let key = idempotency_key(&self.sync, write.source_id, &write);
                let value = HeaderValue::from_str(&key)
                    .map_err(|e| SinkError::Unwritable(e.to_string()))?;
                request.headers.push((idempotency_header.clone(), value));
                let reply = self.send_write(&request, stop).await?;
                Ok(self.written(&reply))
            }
            WriteMode::Lookup { .. } => self.lookup_write(&write, body, stop).await,
            WriteMode::Batch(spec) => {
                let write = Write {
                    encoded: Some(Encoded { body, url: None }),
                    ..write
                };
                let mut results = self.write_batches(spec, vec![write], stop).await;
                results.pop().unwrap_or(Err(SinkError::NotSent))
            }
        }
    }

    /// A DELETE on `delete_path`. By `{dest_id}`, an id the ledger does not
    /// have is looked up first (nothing found: already gone). 404 and 410 mean
    /// the record is gone, which is what was asked.
    async fn delete_record(&self, delete: &Delete<'_>, stop: &Stop) -> Result<Written, SinkError> {
        let Some(path) = &self.delete_path else {
            return Err(SinkError::Unwritable(
                "no delete_path: this sync does not delete at the destination".into(),
            ));
        };
        let mut dest_id = delete.known_dest_id.map(str::to_owned);
        if dest_id.is_none() && path.0.contains("{dest_id}") {
            if !matches!(self.spec.mode, WriteMode::Lookup { .. }) {
                return Err(SinkError::Unwritable(format!(
                    "no destination id is known for external id {:?}, and delete_path needs {{dest_id}}",
                    delete.external_id
                )));
            }
            let Some(object) = self.lookup(delete.external_id, stop).await? else {
                return Ok(Written {
                    dest_id: None,
                    unsettled_since: None,
                    attempts: 0,
                });
            };
            dest_id = self.dest_id(&object);
            if dest_id.is_none() {
                return Err(SinkError::Unwritable(format!(
                    "the lookup found the record but no `{}` (dest_id_field) in it",
                    self.dest_id_field()
                )));
            }
        }
        let url = self.url(
            path,
            &[
                ("dest_id", dest_id.as_deref().unwrap_or_default()),
                ("external_id", delete.external_id),
            ],
        )?;
        let request = Request {
            method: Method::DELETE,
            url,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            idempotent: true,
        };
        match self.api.send(&request, stop).await {
            Ok(reply) => Ok(Written {
                dest_id,
                unsettled_since: reply.unsettled_since,
                attempts: reply.attempts,
            }),
            Err(HttpError::Rejected {
                status: 404 | 410, ..
            }) => Ok(Written {
                dest_id,
                unsettled_since: None,
                attempts: 1,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// What the destination holds for `external_id`, read through the lookup
    /// (lookup mode) or the read path (put and post).
    async fn read_record(&self, external_id: &str, stop: &Stop) -> Result<Held, SinkError> {
        let found = match (&self.spec.mode, &self.spec.read) {
            (WriteMode::Lookup { .. }, _) => self.lookup(external_id, stop).await?,
            (_, Some(read)) => {
                let url = self.url(&read.path, &[("external_id", external_id)])?;
                match self.api.send(&Request::get(url), stop).await {
                    Ok(reply) => self.find(
                        &reply.json().unwrap_or_default(),
                        read.results_path.as_ref(),
                        external_id,
                    )?,
                    Err(HttpError::Rejected {
                        status: 404 | 410, ..
                    }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            (_, None) => {
                return Err(SinkError::Unwritable(
                    "no read_path: the destination cannot be read back".into(),
                ));
            }
        };
        Ok(match found {
            Some(object) => Held::Object {
                dest_id: self.dest_id(&object),
                object,
                version: None,
            },
            None => Held::Nothing,
        })
    }

    /// Sends a write; with a version precondition, a 412 means the destination
    /// holds a newer version of the record.
    async fn send_write(&self, request: &Request, stop: &Stop) -> Result<Reply, SinkError> {
        match self.api.send(request, stop).await {
            Err(HttpError::Rejected { status: 412, .. }) if self.spec.version_header.is_some() => {
                Err(SinkError::Superseded)
            }
            result => result.map_err(SinkError::from),
        }
    }

    fn written(&self, reply: &Reply) -> Written {
        Written {
            dest_id: self.reply_dest_id(reply),
            unsettled_since: reply.unsettled_since,
            attempts: reply.attempts,
        }
    }

    /// Update when the record exists (by cached id or by lookup), create when it
    /// does not. A create with an unknown outcome is never repeated blindly: once
    /// the time in which it may still land has passed, the record is looked up
    /// again, and only a lookup that still finds nothing leads to a new create.
    async fn lookup_write(
        &self,
        write: &Write<'_>,
        body: Bytes,
        stop: &Stop,
    ) -> Result<Written, SinkError> {
        let WriteMode::Lookup {
            create_path,
            update_path,
            update_method,
            ..
        } = &self.spec.mode
        else {
            return Err(SinkError::Unwritable("not a lookup destination".into()));
        };
        let mut dest_id = write.known_dest_id.map(str::to_owned);
        let mut last_unknown = None;
        let mut unsettled_until = write.unsettled_until;
        for _ in 0..self.retry.max_attempts.max(1) {
            if dest_id.is_none() {
                dest_id = match self.lookup(&write.record.external_id, stop).await? {
                    Some(object) => Some(self.dest_id(&object).ok_or_else(|| {
                        SinkError::Unwritable(format!(
                            "the lookup found the record but no `{}` (dest_id_field) in it",
                            self.dest_id_field()
                        ))
                    })?),
                    None => None,
                };
            }
            match &dest_id {
                Some(id) => {
                    let url = self.url(
                        update_path,
                        &[("dest_id", id), ("external_id", &write.record.external_id)],
                    )?;
                    let request =
                        self.request(update_method.clone(), url, Some(body.clone()), true, write);
                    match self.send_write(&request, stop).await {
                        Ok(reply) => {
                            let found = self.dest_id(&reply.json().unwrap_or_default());
                            return Ok(Written {
                                dest_id: found.or(dest_id),
                                unsettled_since: reply.unsettled_since,
                                attempts: reply.attempts,
                            });
                        }
                        // The remembered object is gone: find or create it afresh.
                        Err(SinkError::Rejected {
                            status: 404 | 410, ..
                        }) => dest_id = None,
                        Err(e) => return Err(e),
                    }
                }
                // An earlier write may be a create still on its way: look again
                // once it has landed or never will.
                None if unsettled_until.is_some_and(|at| at > jiff::Timestamp::now()) => {
                    let wait = jiff::Timestamp::now()
                        .duration_until(unsettled_until.take().unwrap_or_default())
                        .try_into()
                        .unwrap_or_default();
                    stop.sleep(wait)
                        .await
                        .map_err(|r| SinkError::Http(HttpError::Stopped(r)))?;
                }
                None => {
                    let url =
                        self.url(create_path, &[("external_id", &write.record.external_id)])?;
                    let request = self.request(Method::POST, url, Some(body.clone()), false, write);
                    match self.send_write(&request, stop).await {
                        Ok(reply) => return Ok(self.written(&reply)),
                        Err(SinkError::Http(HttpError::Unknown {
                            api,
                            method,
                            url,
                            last,
                            class,
                            sent,
                        })) => {
                            tracing::debug!(
                                url = %url,
                                last = %last,
                                "create outcome unknown; looking the record up again once it can no longer land"
                            );
                            stop.sleep(
                                (sent + self.spec.late_write_window)
                                    .saturating_duration_since(tokio::time::Instant::now()),
                            )
                            .await
                            .map_err(|r| SinkError::Http(HttpError::Stopped(r)))?;
                            self.api.count_retry(class, &url, &last);
                            last_unknown = Some((api, method, url, last));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(SinkError::Http(match last_unknown {
            Some((api, method, url, last)) => HttpError::Exhausted {
                api,
                method,
                url,
                attempts: self.retry.max_attempts,
                last,
            },
            None => HttpError::Exhausted {
                api: "destination",
                method: Method::POST,
                url: create_path.0.clone(),
                attempts: self.retry.max_attempts,
                last: "the record kept disappearing between lookup and update".into(),
            },
        }))
    }

    /// The destination object with this external id, if there is one.
    async fn lookup(&self, external_id: &str, stop: &Stop) -> Result<Option<Value>, SinkError> {
        let WriteMode::Lookup {
            lookup_path,
            lookup_param,
            lookup_body,
            results_path,
            ..
        } = &self.spec.mode
        else {
            return Ok(None);
        };
        let url = self.url(lookup_path, &[("external_id", external_id)])?;
        let mut request = Request::get(url);
        if let Some(param) = lookup_param {
            request.query.push((param.clone(), external_id.to_owned()));
        }
        if let Some(body) = lookup_body {
            // A search: a POST that changes nothing, so sent again as it is.
            request.method = reqwest::Method::POST;
            let body = with_external_id(body, external_id);
            request.body = Some(serde_json::to_vec(&body).unwrap_or_default().into());
        }
        let reply = match self.api.send(&request, stop).await {
            Ok(reply) => reply,
            Err(HttpError::Rejected { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body = reply.json().unwrap_or_default();
        self.find(&body, Some(results_path), external_id)
    }

    /// The object for `external_id` in an answer: at `results_path` (the whole
    /// body when `None`), either that object or the one item of that array whose
    /// external id field (`read_id_field`, else `external_id_field`) matches —
    /// as named, or else case aside (an API may keep an email in lower case).
    /// An API that ignores the filter must not make
    /// highwater write over another record, and several matches are for a person
    /// to merge: both are refused with the reason, never settled by a guess.
    fn find(
        &self,
        body: &Value,
        results_path: Option<&FieldPath>,
        external_id: &str,
    ) -> Result<Option<Value>, SinkError> {
        let field = self
            .spec
            .read_id_field
            .as_ref()
            .or(self.spec.external_id_field.as_ref());
        let found = match results_path {
            Some(path) => path.get(body),
            None => Some(body),
        };
        let id_of = |item: &Value| match field.and_then(|f| f.get(item)) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match found {
            Some(Value::Array(items)) => {
                let named = |exact: bool| -> Vec<&Value> {
                    items
                        .iter()
                        .filter(|item| {
                            id_of(item).is_some_and(|id| match exact {
                                true => id == external_id,
                                false => id.to_lowercase() == external_id.to_lowercase(),
                            })
                        })
                        .collect()
                };
                let mut matching = named(true);
                if matching.is_empty() {
                    matching = named(false);
                }
                match matching.as_slice() {
                    [] if items.iter().any(|item| id_of(item).is_none()) => {
                        Err(SinkError::Unwritable(format!(
                            "the destination answered objects without `{}` (read_id_field, or external_id_field): cannot tell which one holds external id {external_id:?}",
                            field.map_or_else(|| "?".to_owned(), ToString::to_string)
                        )))
                    }
                    [] => Ok(None),
                    [one] => Ok(Some((*one).clone())),
                    several => Err(SinkError::Unwritable(format!(
                        "{} destination objects hold external id {external_id:?} ({}); merge them into one, then replay this record",
                        several.len(),
                        several
                            .iter()
                            .map(|o| self.dest_id(o).unwrap_or_else(|| "?".into()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                }
            }
            Some(object @ Value::Object(_)) => match id_of(object) {
                Some(other) if other.to_lowercase() != external_id.to_lowercase() => {
                    Err(SinkError::Unwritable(format!(
                        "asked for external id {external_id:?}, the destination answered with the object of {other:?} (at `{}`; set `read_id_field` where its objects name their external id)",
                        field.map_or_else(|| "?".to_owned(), ToString::to_string)
                    )))
                }
                _ => Ok(Some(object.clone())),
            },
            _ => Ok(None),
        }
    }

    fn dest_id_field(&self) -> String {
        self.spec
            .dest_id_field
            .as_ref()
            .map_or_else(|| "id".to_owned(), ToString::to_string)
    }

    /// The mapped payload, with the external id in its configured field, as JSON
    /// bytes: serialized straight from the mapping's output, without a copy of it.
    fn body(&self, record: &MappedRecord) -> Result<Bytes, SinkError> {
        let payload = &record.payload;
        let bytes = match (&self.spec.external_id_field, payload.as_object()) {
            (Some(path), Some(object)) => match path.segments() {
                [field] => serde_json::to_vec(&WithField {
                    object,
                    field,
                    value: &record.external_id,
                }),
                // Nested: a copy with the id set inside, which only such
                // bodies pay for.
                _ => {
                    let mut body = payload.clone();
                    if !path.set(&mut body, Value::String(record.external_id.clone())) {
                        return Err(SinkError::Unwritable(format!(
                            "the payload holds a value that is not an object on the way to \
                             `{path}` (external_id_field)"
                        )));
                    }
                    serde_json::to_vec(&body)
                }
            },
            _ => serde_json::to_vec(payload),
        };
        bytes
            .map(Bytes::from)
            .map_err(|e| SinkError::Unwritable(format!("cannot serialize the record: {e}")))
    }

    /// The destination id in a write's answer; the body is parsed only when a field
    /// is configured to hold it.
    fn reply_dest_id(&self, reply: &Reply) -> Option<String> {
        self.spec.dest_id_field.as_ref()?;
        self.dest_id(&reply.json().ok()?)
    }

    fn dest_id(&self, value: &Value) -> Option<String> {
        match self.spec.dest_id_field.as_ref()?.get(value)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn url(&self, template: &UriTemplate, values: &[(&str, &str)]) -> Result<url::Url, SinkError> {
        let mut path = template.0.clone();
        for (name, value) in values {
            let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            path = path.replace(&format!("{{{name}}}"), &encoded.replace('+', "%20"));
        }
        self.api
            .url(&path)
            .map_err(|e| SinkError::Unwritable(format!("no valid URL from {path:?}: {e}")))
    }

    fn request(
        &self,
        method: Method,
        url: url::Url,
        body: Option<Bytes>,
        idempotent: bool,
        write: &Write<'_>,
    ) -> Request {
        let mut headers = Vec::new();
        if let Some(header) = &self.spec.version_header {
            headers.push((header.clone(), HeaderValue::from(write.version_number())));
        }
        Request {
            method,
            url,
            query: Vec::new(),
            headers,
            body,
            idempotent,
        }
    }
}

/// The same for every attempt at one body of one version of one record — after
/// a crash too — and different for another version or another body (a mapping
/// changed under the same version): a destination that replays the answer of a
/// known key would otherwise never apply the new body. A rewrite after a read
/// back found the destination behind gets a key of its own, derived from what
/// the destination held, so that it is applied rather than replayed.
pub fn idempotency_key(sync: &str, source_id: &str, write: &Write<'_>) -> String {
    let mut hasher = blake3::Hasher::new();
    let version = write.version_key();
    let parts = [
        sync,
        source_id,
        &version,
        &write.record.hash,
        write.rewrite_over.as_deref().unwrap_or(""),
    ];
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    format!("hw-{}", &hasher.finalize().to_hex()[..32])
}

/// `template` with `{external_id}` in each of its strings replaced.
fn with_external_id(template: &Value, external_id: &str) -> Value {
    match template {
        Value::String(s) => Value::String(s.replace("{external_id}", external_id)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| with_external_id(item, external_id))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), with_external_id(value, external_id)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_payload_with_its_external_id_field_set() {
        let payloads = [
            serde_json::json!({}),
            serde_json::json!({"amount": 1, "zeta": [1, {"b": 2, "a": 1}]}),
            serde_json::json!({"email": "a@b.c", "external_id": "old", "name": "A"}),
            serde_json::json!({"a": null, "external_id_x": 1, "external": true}),
        ];
        for payload in payloads {
            let Some(object) = payload.as_object() else {
                unreachable!()
            };
            let streamed = serde_json::to_vec(&WithField {
                object,
                field: "external_id",
                value: "inv-1",
            })
            .unwrap_or_default();
            let mut copied = payload.clone();
            if let Some(map) = copied.as_object_mut() {
                map.insert("external_id".into(), Value::String("inv-1".into()));
            }
            assert_eq!(
                String::from_utf8_lossy(&streamed),
                copied.to_string(),
                "for {payload}"
            );
        }
    }

    /// The sink of a sync whose `[sync.destination]` holds `lines` after
    /// `type = "http"` and its base URL (nothing listens there).
    pub(super) fn sink_for(lines: &str) -> HttpSink {
        let text = format!(
            "[[sync]]\nname = \"crm\"\n[sync.source]\nbase_url = \"http://127.0.0.1:1\"\n\
             path = \"/v1/customers\"\npagination = {{ style = \"cursor\" }}\n\
             [sync.mapping]\nexternal_id = \"{{id}}\"\n[sync.destination]\ntype = \"http\"\n\
             base_url = \"http://127.0.0.1:1\"\n{lines}"
        );
        let config = crate::config::parse(&text, std::path::Path::new("hw.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let crate::config::DestinationSpec::Http(spec) = config.syncs[0].destination.clone() else {
            unreachable!("an HTTP destination")
        };
        HttpSink::new("crm", spec, config.syncs[0].retry, None).expect("sink")
    }

    /// A dotted `external_id_field` nests, as the mapping's fields do
    /// (Airtable's records are `{"fields": {...}}`): the body carries the id
    /// inside, and answers are matched by it there.
    #[test]
    fn a_dotted_external_id_field_is_a_path_in_the_body_and_in_answers() {
        let sink = sink_for(
            "mode = \"batch\"\npath = \"/v0/base/table\"\n\
             external_id_field = \"fields.external_id\"\ndest_id_field = \"id\"\n",
        );
        let record = |payload: Value| MappedRecord {
            external_id: "c-1".into(),
            payload,
            hash: String::new(),
        };
        let body = sink
            .body(&record(
                serde_json::json!({"fields": {"email": "a@b.c"}, "typecast": true}),
            ))
            .expect("body");
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"fields":{"email":"a@b.c","external_id":"c-1"},"typecast":true}"#
        );
        let refused = sink.body(&record(serde_json::json!({"fields": "flat"})));
        assert!(
            matches!(&refused, Err(SinkError::Unwritable(m)) if m.contains("fields.external_id")),
            "{refused:?}"
        );
        let answer = serde_json::json!({"records": [
            {"id": "rec1", "fields": {"external_id": "c-0"}},
            {"id": "rec2", "fields": {"external_id": "c-1"}},
        ]});
        let found = sink
            .find(&answer, Some(&FieldPath::parse("records")), "c-1")
            .expect("found");
        assert_eq!(found.and_then(|o| sink.dest_id(&o)), Some("rec2".into()));
    }

    /// HubSpot writes a contact by its email as `id`, and reads it back
    /// with its own id there and the email in `properties.email`, kept in
    /// lower case: `read_id_field` says where, and case aside it is the
    /// record asked for; another email is another record.
    #[test]
    fn an_object_read_back_names_its_external_id_at_read_id_field() {
        let sink = sink_for(
            "mode = \"batch\"\npath = \"/crm/v3/objects/contacts/batch/upsert\"\n\
             read_path = \"/crm/v3/objects/contacts/{external_id}?idProperty=email\"\n\
             external_id_field = \"id\"\nread_id_field = \"properties.email\"\n",
        );
        let contact = serde_json::json!({"id": "1", "properties": {"email": "ann@example.com"}});
        let found = sink.find(&contact, None, "Ann@Example.com").expect("found");
        assert_eq!(found, Some(contact.clone()));
        let other = sink.find(&contact, None, "bob@example.com");
        assert!(
            matches!(&other, Err(SinkError::Unwritable(m)) if m.contains("properties.email")),
            "{other:?}"
        );
        // Without it, `external_id_field` names the object's own id.
        let plain = sink_for("mode = \"batch\"\npath = \"/batch\"\nexternal_id_field = \"id\"\n");
        let refused = plain.find(&contact, None, "ann@example.com");
        assert!(
            matches!(&refused, Err(SinkError::Unwritable(m)) if m.contains("set `read_id_field`")),
            "{refused:?}"
        );
        // A list answered by a lookup: the one naming it, case aside.
        let list = serde_json::json!({"results": [contact, {"id": "2", "properties": {"email": "cy@example.com"}}]});
        let found = sink
            .find(&list, Some(&FieldPath::parse("results")), "CY@example.com")
            .expect("found");
        assert_eq!(found.map(|o| o["id"].clone()), Some(serde_json::json!("2")));
    }

    #[test]
    fn idempotency_keys_change_with_version_and_body_only() {
        let record = |hash: &str| MappedRecord {
            external_id: "inv-1".into(),
            payload: Value::Null,
            hash: hash.into(),
        };
        fn write(record: &MappedRecord, version: i64) -> Write<'_> {
            Write {
                source_id: "inv_1",
                record,
                version: Some(version),
                updated_at: jiff::Timestamp::UNIX_EPOCH,
                known_dest_id: None,
                encoded: None,
                rewrite_over: None,
                unsettled_until: None,
            }
        }
        let (h1, h2) = (record("h1"), record("h2"));
        let key = |w: &Write<'_>| idempotency_key("billing", "inv_1", w);
        let a = key(&write(&h1, 3));
        assert_eq!(a, key(&write(&h1, 3)), "the same body of the same version");
        assert_ne!(a, key(&write(&h1, 4)), "another version");
        assert_ne!(
            a,
            key(&write(&h2, 3)),
            "another body under the same version"
        );
        let rewrite = Write {
            rewrite_over: Some("v2".into()),
            ..write(&h1, 3)
        };
        assert_ne!(a, key(&rewrite), "a rewrite is applied, not replayed");
        assert_ne!(
            idempotency_key("a", "bc", &write(&h1, 3)),
            idempotency_key("ab", "c", &write(&h1, 3))
        );
    }
}
