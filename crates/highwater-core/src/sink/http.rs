//! Owns the HTTP destination's three write modes: `put` to the record's URI, `lookup`
//! (find by external id, then update or create), and `post` with an
//! `Idempotency-Key` derived from sync, source id and version.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::{Encoded, SinkError, Write, Written};
use crate::config::{HttpDestinationSpec, UriTemplate, WriteMode};
use crate::http::{Api, HttpError, Request};
use crate::mapping::MappedRecord;
use crate::policy::RetryPolicy;
use crate::stop::Stop;

#[derive(Debug)]
pub struct HttpSink {
    sync: String,
    spec: HttpDestinationSpec,
    api: Api,
    retry: RetryPolicy,
}

impl HttpSink {
    pub fn new(
        sync: &str,
        spec: HttpDestinationSpec,
        retry: RetryPolicy,
    ) -> Result<Self, SinkError> {
        let api = Api::new("destination", spec.http.clone(), retry, spec.concurrency)?;
        Ok(HttpSink {
            sync: sync.to_owned(),
            spec,
            api,
            retry,
        })
    }

    pub fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    pub fn retries(&self) -> u64 {
        self.api.retries()
    }

    pub fn encode(&self, record: &MappedRecord) -> Result<Encoded, SinkError> {
        let url = match &self.spec.mode {
            WriteMode::Put { path, .. } | WriteMode::Post { path, .. } => {
                Some(self.url(path, &[("external_id", &record.external_id)])?)
            }
            WriteMode::Lookup { .. } => None,
        };
        Ok(Encoded {
            body: self.body(record)?,
            url,
        })
    }

    pub async fn write(&self, mut write: Write<'_>, stop: &Stop) -> Result<Written, SinkError> {
        let Encoded { body, url } = match write.encoded.take() {
            Some(encoded) => encoded,
            None => self.encode(write.record)?,
        };
        // `encode` gives every put and post its URL; a lookup builds its own.
        let url = || url.ok_or_else(|| SinkError::Unwritable("no URL for this write".into()));
        match &self.spec.mode {
            WriteMode::Put { method, .. } => {
                let request = self.request(method.clone(), url()?, Some(body), true);
                let reply = self.api.send(&request, stop).await?;
                Ok(Written {
                    dest_id: self.reply_dest_id(&reply),
                })
            }
            WriteMode::Post {
                idempotency_header, ..
            } => {
                let mut request = self.request(Method::POST, url()?, Some(body), true);
                let key = idempotency_key(&self.sync, write.source_id, &write.version_key);
                let value = HeaderValue::from_str(&key)
                    .map_err(|e| SinkError::Unwritable(e.to_string()))?;
                request.headers.push((idempotency_header.clone(), value));
                let reply = self.api.send(&request, stop).await?;
                Ok(Written {
                    dest_id: self.reply_dest_id(&reply),
                })
            }
            WriteMode::Lookup { .. } => self.lookup_write(&write, body, stop).await,
        }
    }

    /// Update when the record exists (by cached id or by lookup), create when it
    /// does not. A create with an unknown outcome is never repeated blindly: the next
    /// round looks the record up again first.
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
        for _ in 0..self.retry.max_attempts.max(1) {
            if dest_id.is_none() {
                dest_id = self.lookup(&write.record.external_id, stop).await?;
            }
            match &dest_id {
                Some(id) => {
                    let url = self.url(
                        update_path,
                        &[("dest_id", id), ("external_id", &write.record.external_id)],
                    )?;
                    let request =
                        self.request(update_method.clone(), url, Some(body.clone()), true);
                    match self.api.send(&request, stop).await {
                        Ok(reply) => {
                            return Ok(Written {
                                dest_id: self
                                    .dest_id(&reply.json().unwrap_or_default())
                                    .or(dest_id),
                            });
                        }
                        // The remembered object is gone: find or create it afresh.
                        Err(HttpError::Rejected {
                            status: 404 | 410, ..
                        }) => dest_id = None,
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    let url =
                        self.url(create_path, &[("external_id", &write.record.external_id)])?;
                    let request = self.request(Method::POST, url, Some(body.clone()), false);
                    match self.api.send(&request, stop).await {
                        Ok(reply) => {
                            return Ok(Written {
                                dest_id: self.reply_dest_id(&reply),
                            });
                        }
                        Err(unknown @ HttpError::Unknown { .. }) => {
                            tracing::debug!(error = %unknown, "create outcome unknown; looking the record up before trying again");
                            last_unknown = Some(unknown);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(SinkError::Http(match last_unknown {
            Some(HttpError::Unknown {
                api,
                method,
                url,
                last,
            }) => HttpError::Exhausted {
                api,
                method,
                url,
                attempts: self.retry.max_attempts,
                last,
            },
            Some(other) => other,
            None => HttpError::Exhausted {
                api: "destination",
                method: Method::POST,
                url: create_path.0.clone(),
                attempts: self.retry.max_attempts,
                last: "the record kept disappearing between lookup and update".into(),
            },
        }))
    }

    async fn lookup(&self, external_id: &str, stop: &Stop) -> Result<Option<String>, SinkError> {
        let WriteMode::Lookup {
            lookup_path,
            lookup_param,
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
        let reply = match self.api.send(&request, stop).await {
            Ok(reply) => reply,
            Err(HttpError::Rejected { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body = reply.json().unwrap_or_default();
        let found = match results_path.get(&body) {
            Some(Value::Array(items)) => items.first().cloned(),
            Some(Value::Object(_)) => results_path.get(&body).cloned(),
            _ => None,
        };
        Ok(found.and_then(|item| self.dest_id(&item)))
    }

    /// The mapped payload, with the external id in its configured field, as JSON
    /// bytes: serialized straight from the mapping's output, without a copy of it.
    fn body(&self, record: &MappedRecord) -> Result<Bytes, SinkError> {
        let payload = &record.payload;
        let bytes = match (&self.spec.external_id_field, payload.as_object()) {
            (Some(field), Some(object)) => serde_json::to_vec(&WithField {
                object,
                field,
                value: &record.external_id,
            }),
            _ => serde_json::to_vec(payload),
        };
        bytes
            .map(Bytes::from)
            .map_err(|e| SinkError::Unwritable(format!("cannot serialize the record: {e}")))
    }

    /// The destination id in a write's answer; the body is parsed only when a field
    /// is configured to hold it.
    fn reply_dest_id(&self, reply: &crate::http::Reply) -> Option<String> {
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
    ) -> Request {
        Request {
            method,
            url,
            query: Vec::new(),
            headers: Vec::new(),
            body,
            idempotent,
        }
    }
}

/// An object with one field set (added, or replacing the object's own), written
/// in key order as `serde_json`'s own map would be.
struct WithField<'a> {
    object: &'a serde_json::Map<String, Value>,
    field: &'a str,
    value: &'a str,
}

impl Serialize for WithField<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.object.len() + usize::from(!self.object.contains_key(self.field));
        let mut map = serializer.serialize_map(Some(len))?;
        let mut placed = false;
        for (key, value) in self.object {
            if !placed && key.as_str() >= self.field {
                map.serialize_entry(self.field, self.value)?;
                placed = true;
                if key == self.field {
                    continue;
                }
            }
            map.serialize_entry(key, value)?;
        }
        if !placed {
            map.serialize_entry(self.field, self.value)?;
        }
        map.end()
    }
}

/// The same for every attempt at one version of one record, different for the next
/// version.
pub fn idempotency_key(sync: &str, source_id: &str, version_key: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [sync, source_id, version_key] {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    format!("hw-{}", &hasher.finalize().to_hex()[..32])
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

    #[test]
    fn idempotency_keys_are_stable_per_version() {
        let a = idempotency_key("billing", "inv_1", "3");
        assert_eq!(a, idempotency_key("billing", "inv_1", "3"));
        assert_ne!(a, idempotency_key("billing", "inv_1", "4"));
        assert_ne!(a, idempotency_key("billing", "inv_11", ""));
        assert_ne!(
            idempotency_key("a", "bc", ""),
            idempotency_key("ab", "c", "")
        );
    }
}
