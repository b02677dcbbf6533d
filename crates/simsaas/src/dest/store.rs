//! The contacts the simulated destination holds: objects by number with an
//! index by external id (not unique: a careless client can create
//! duplicates), stored answers for repeated idempotency keys, and the counts
//! the tests read (duplicate applications, late regressions, deletes).

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One destination object as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestObject {
    /// `ct_<n>`.
    pub id: String,
    pub external_id: String,
    /// The body fields (everything except `id` and `external_id`).
    pub body: Value,
    /// How many writes were applied to this object.
    pub writes: u64,
}

/// Everything the destination holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestDump {
    /// In creation order.
    pub objects: Vec<DestObject>,
    /// Keyless upserts that applied a body onto an object already holding it:
    /// what a non-idempotent retry does to a real system.
    pub duplicate_applications: u64,
    /// External ids whose `version` went down because a write held past the
    /// client's timeout landed over a newer one, in the order it happened.
    pub late_regressions: Vec<String>,
}

/// The request header a client may send to have a write refused (412) when the
/// object already holds a newer source version: the version precondition.
pub const VERSION_HEADER: &str = "x-source-version";

#[derive(Debug)]
pub(super) struct Obj {
    external_id: String,
    pub(super) body: Map<String, Value>,
    writes: u64,
    /// The source version of the last write that carried [`VERSION_HEADER`].
    source_version: Option<i64>,
}

impl Obj {
    pub(super) fn version(&self) -> Option<i64> {
        self.body.get("version").and_then(Value::as_i64)
    }
}

/// A stored answer replayed for a repeated `Idempotency-Key`.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Keyed by the number in `ct_<n>`; external ids are deliberately not
    /// unique, a careless client can create duplicates.
    pub(super) objects: BTreeMap<u64, Obj>,
    /// external id -> object numbers, ascending.
    by_ext: HashMap<String, Vec<u64>>,
    next_num: u64,
    pub(super) idempotency: HashMap<String, Stored>,
    pub(super) duplicate_applications: u64,
    late_regressions: Vec<String>,
    /// DELETE requests that removed an object, per external id.
    deletes_applied: HashMap<String, u64>,
}

pub(super) fn object_json(num: u64, o: &Obj) -> Value {
    let mut m = Map::with_capacity(o.body.len() + 2);
    m.insert("id".into(), Value::String(format!("ct_{num}")));
    m.insert("external_id".into(), Value::String(o.external_id.clone()));
    for (k, v) in &o.body {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

/// The identity fields live outside the body; a client echoing them back
/// must not be able to forge `id`.
pub(super) fn strip_identity(mut body: Map<String, Value>) -> Map<String, Value> {
    body.remove("id");
    body.remove("external_id");
    body
}

impl Store {
    pub(super) fn create(
        &mut self,
        external_id: String,
        body: Map<String, Value>,
        w: &WriteMeta,
    ) -> Value {
        self.next_num += 1;
        let num = self.next_num;
        self.by_ext
            .entry(external_id.clone())
            .or_default()
            .push(num);
        let obj = Obj {
            external_id,
            body: strip_identity(body),
            writes: 1,
            source_version: w.version,
        };
        let json = object_json(num, &obj);
        self.objects.insert(num, obj);
        json
    }

    /// Whether a write carrying this precondition must be refused by object `num`.
    pub(super) fn refuses(&self, num: u64, w: &WriteMeta) -> bool {
        let stored = self.objects.get(&num).and_then(|o| o.source_version);
        matches!((w.version, stored), (Some(incoming), Some(stored)) if incoming < stored)
    }

    pub(super) fn replace(
        &mut self,
        num: u64,
        body: Map<String, Value>,
        new_ext: Option<String>,
        w: &WriteMeta,
    ) -> Option<Value> {
        let obj = self.objects.get_mut(&num)?;
        let before = obj.version();
        if let Some(ext) = new_ext.filter(|e| *e != obj.external_id) {
            if let Some(nums) = self.by_ext.get_mut(&obj.external_id) {
                nums.retain(|n| *n != num);
                if nums.is_empty() {
                    self.by_ext.remove(&obj.external_id);
                }
            }
            let nums = self.by_ext.entry(ext.clone()).or_default();
            let at = nums.partition_point(|n| *n < num);
            nums.insert(at, num);
            obj.external_id = ext;
        }
        obj.body = strip_identity(body);
        obj.writes += 1;
        if w.version.is_some() {
            obj.source_version = w.version;
        }
        let json = object_json(num, obj);
        if w.late && obj.version() < before {
            let ext = obj.external_id.clone();
            self.late_regressions.push(ext);
        }
        Some(json)
    }

    /// The oldest object with this external id.
    pub(super) fn first(&self, ext: &str) -> Option<u64> {
        self.by_ext.get(ext).and_then(|n| n.first().copied())
    }

    /// Upsert onto the oldest object with this external id; `None` when the
    /// version precondition refuses it.
    pub(super) fn upsert(
        &mut self,
        ext: &str,
        body: Map<String, Value>,
        w: &WriteMeta,
    ) -> Option<(StatusCode, Value)> {
        let existing = self.first(ext);
        if existing.is_some_and(|num| self.refuses(num, w)) {
            return None;
        }
        Some(
            match existing.and_then(|num| self.replace(num, body.clone(), None, w)) {
                Some(json) => (StatusCode::OK, json),
                None => (StatusCode::CREATED, self.create(ext.to_owned(), body, w)),
            },
        )
    }

    pub(super) fn find(&self, ext: &str) -> Vec<Value> {
        self.by_ext
            .get(ext)
            .into_iter()
            .flatten()
            .filter_map(|num| self.objects.get(num).map(|o| object_json(*num, o)))
            .collect()
    }

    /// The first `limit` objects, whatever their external id.
    pub(super) fn all(&self, limit: usize) -> Vec<Value> {
        self.objects
            .iter()
            .take(limit)
            .map(|(num, o)| object_json(*num, o))
            .collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.objects.len()
    }

    /// Removes every object holding `external_id`, as someone deleting it by
    /// hand would; returns how many there were.
    pub(crate) fn remove(&mut self, external_id: &str) -> usize {
        let nums = self.by_ext.remove(external_id).unwrap_or_default();
        for num in &nums {
            self.objects.remove(num);
        }
        nums.len()
    }

    /// A DELETE by external id: removes every object holding it; `false`
    /// when there was none.
    pub(super) fn delete_by_ext(&mut self, external_id: &str) -> bool {
        let removed = self.remove(external_id) > 0;
        if removed {
            *self
                .deletes_applied
                .entry(external_id.to_owned())
                .or_default() += 1;
        }
        removed
    }

    /// A DELETE by object id; `false` when there is no such object.
    pub(super) fn delete_by_num(&mut self, num: u64) -> bool {
        let Some(object) = self.objects.remove(&num) else {
            return false;
        };
        if let Some(nums) = self.by_ext.get_mut(&object.external_id) {
            nums.retain(|n| *n != num);
            if nums.is_empty() {
                self.by_ext.remove(&object.external_id);
            }
        }
        *self.deletes_applied.entry(object.external_id).or_default() += 1;
        true
    }

    pub(crate) fn deletes_applied(&self) -> HashMap<String, u64> {
        self.deletes_applied.clone()
    }

    /// Sets `field` of the objects holding `external_id`, as an edit by hand
    /// would, without counting as a write; returns how many there were.
    pub(crate) fn alter(&mut self, external_id: &str, field: &str, value: Value) -> usize {
        let nums = self.by_ext.get(external_id).cloned().unwrap_or_default();
        for num in &nums {
            if let Some(object) = self.objects.get_mut(num) {
                object.body.insert(field.to_owned(), value.clone());
            }
        }
        nums.len()
    }

    pub(crate) fn dump(&self) -> DestDump {
        DestDump {
            objects: self
                .objects
                .iter()
                .map(|(num, o)| DestObject {
                    id: format!("ct_{num}"),
                    external_id: o.external_id.clone(),
                    body: Value::Object(o.body.clone()),
                    writes: o.writes,
                })
                .collect(),
            duplicate_applications: self.duplicate_applications,
            late_regressions: self.late_regressions.clone(),
        }
    }
}

/// What a write request says beyond its body.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WriteMeta {
    /// The version precondition, when the request carries one.
    pub(super) version: Option<i64>,
    /// Applied after the client gave up (a delayed apply).
    pub(super) late: bool,
}

impl WriteMeta {
    pub(super) fn from(headers: &HeaderMap) -> Self {
        WriteMeta {
            version: headers
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
            late: false,
        }
    }
}
