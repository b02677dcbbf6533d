//! Owns the JSON Lines file destination for local use: one object per line, keyed by
//! external id (upsert), the whole file rewritten atomically (temp file, fsync,
//! rename) at each flush so a crash leaves either the old or the new file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

pub mod config;

use super::{Delete, Held, Sink, SinkError, Write, Written};
use crate::stop::Stop;
use config::JsonLinesSpec;

#[derive(Debug)]
pub struct JsonLinesSink {
    spec: JsonLinesSpec,
    rows: Mutex<BTreeMap<String, Value>>,
    dirty: AtomicBool,
}

impl JsonLinesSink {
    pub fn open(spec: JsonLinesSpec) -> Result<Self, SinkError> {
        let err = |source| SinkError::File {
            path: spec.path.display().to_string(),
            source,
        };
        let mut rows = BTreeMap::new();
        match std::fs::File::open(&spec.path) {
            Ok(file) => {
                for (number, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(err)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: Value = serde_json::from_str(&line).map_err(|e| {
                        err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("line {}: {e}", number + 1),
                        ))
                    })?;
                    let key = value
                        .get(&spec.external_id_field)
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            err(std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!(
                                    "line {}: no `{}` string",
                                    number + 1,
                                    spec.external_id_field
                                ),
                            ))
                        })?
                        .to_owned();
                    rows.insert(key, value);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        Ok(JsonLinesSink {
            spec,
            rows: Mutex::new(rows),
            dirty: AtomicBool::new(false),
        })
    }

    pub fn write(&self, write: Write<'_>) -> Result<Written, SinkError> {
        let mut row = write.record.payload.clone();
        if let Some(object) = row.as_object_mut() {
            object.insert(
                self.spec.external_id_field.clone(),
                Value::String(write.record.external_id.clone()),
            );
        }
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(write.record.external_id.clone(), row);
        self.dirty.store(true, Ordering::Release);
        Ok(Written {
            dest_id: Some(write.record.external_id.clone()),
            unsettled_since: None,
            attempts: 1,
        })
    }

    /// Removes the record's line (at the next flush); a line not there is
    /// deleted already.
    pub fn delete(&self, external_id: &str) -> Written {
        let removed = self
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(external_id)
            .is_some();
        if removed {
            self.dirty.store(true, Ordering::Release);
        }
        Written {
            dest_id: Some(external_id.to_owned()),
            unsettled_since: None,
            attempts: 1,
        }
    }

    pub fn read_back(&self, external_id: &str) -> Held {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        match rows.get(external_id) {
            Some(row) => Held::Object {
                dest_id: Some(external_id.to_owned()),
                object: row.clone(),
            },
            None => Held::Nothing,
        }
    }

    pub fn flush(&self) -> Result<(), SinkError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let path = &self.spec.path;
        let err = |source| SinkError::File {
            path: path.display().to_string(),
            source,
        };
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::File::create(&tmp).map_err(err)?;
        let mut out = BufWriter::new(file);
        {
            let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            for row in rows.values() {
                serde_json::to_writer(&mut out, row).map_err(|e| err(e.into()))?;
                out.write_all(b"\n").map_err(err)?;
            }
        }
        let file = out.into_inner().map_err(|e| err(e.into_error()))?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for JsonLinesSink {
    async fn write(&self, write: Write<'_>, _stop: &Stop) -> Result<Written, SinkError> {
        JsonLinesSink::write(self, write)
    }

    async fn delete(&self, delete: &Delete<'_>, _stop: &Stop) -> Result<Written, SinkError> {
        Ok(JsonLinesSink::delete(self, delete.external_id))
    }

    fn can_read_back(&self) -> bool {
        true
    }

    async fn read_back(&self, external_id: &str, _stop: &Stop) -> Result<Held, SinkError> {
        Ok(JsonLinesSink::read_back(self, external_id))
    }

    /// Its one writer applies every write in order, whole.
    fn refuses_older_writes(&self) -> bool {
        true
    }

    async fn flush(&self) -> Result<(), SinkError> {
        JsonLinesSink::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::MappedRecord;
    use serde_json::json;

    #[test]
    fn upserts_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("hw-jsonl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = JsonLinesSpec {
            path: dir.join("out.jsonl"),
            external_id_field: "external_id".into(),
        };
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        for (id, v) in [("a", 1), ("b", 1), ("a", 2)] {
            let record = MappedRecord {
                external_id: id.into(),
                payload: json!({"v": v}),
                hash: String::new(),
            };
            let write = Write {
                source_id: id,
                record: &record,
                version: Some(v),
                updated_at: jiff::Timestamp::UNIX_EPOCH,
                known_dest_id: None,
                encoded: None,
                rewrite_over: None,
                unsettled_until: None,
            };
            sink.write(write).expect("write");
        }
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&spec.path).expect("read");
        assert_eq!(
            text,
            "{\"external_id\":\"a\",\"v\":2}\n{\"external_id\":\"b\",\"v\":1}\n"
        );
        let reopened = JsonLinesSink::open(spec).expect("reopen");
        assert_eq!(reopened.rows.lock().map(|r| r.len()).unwrap_or(0), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_deleted_record_leaves_the_file_and_deleting_it_again_is_fine() {
        let dir = std::env::temp_dir().join(format!("hw-jsonl-del-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = JsonLinesSpec {
            path: dir.join("out.jsonl"),
            external_id_field: "external_id".into(),
        };
        let sink = JsonLinesSink::open(spec.clone()).expect("open");
        for id in ["a", "b"] {
            let record = MappedRecord {
                external_id: id.into(),
                payload: json!({"v": 1}),
                hash: String::new(),
            };
            let write = Write {
                source_id: id,
                record: &record,
                version: Some(1),
                updated_at: jiff::Timestamp::UNIX_EPOCH,
                known_dest_id: None,
                encoded: None,
                rewrite_over: None,
                unsettled_until: None,
            };
            sink.write(write).expect("write");
        }
        sink.flush().expect("flush");
        sink.delete("a");
        sink.delete("a");
        sink.delete("never-there");
        sink.flush().expect("flush");
        let text = std::fs::read_to_string(&spec.path).expect("read");
        assert_eq!(text, "{\"external_id\":\"b\",\"v\":1}\n");
        assert_eq!(
            JsonLinesSink::open(spec).expect("reopen").read_back("a"),
            Held::Nothing
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
