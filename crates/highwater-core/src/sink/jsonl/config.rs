//! The JSON Lines destination's `[sync.destination]` table: a file, the field
//! each line keeps its external id in, and how many lines its log takes
//! before they are compacted into the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::{S, Validator};

/// `[sync.destination]` with `type = "jsonl"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJsonLines {
    /// Read by the first pass, which chose this table's struct.
    #[serde(rename = "type")]
    _type: serde::de::IgnoredAny,
    pub file: Option<S<String>>,
    pub external_id_field: Option<S<String>>,
    pub compact_lines: Option<S<i64>>,
}

#[derive(Debug, Clone)]
pub struct JsonLinesSpec {
    pub path: PathBuf,
    pub external_id_field: String,
    /// Lines the log takes before a flush sets it aside to be compacted.
    pub compact_lines: usize,
}

pub(crate) fn validate(
    v: &mut Validator<'_>,
    raw: Spanned<RawJsonLines>,
    base_dir: &Path,
    at: &str,
) -> Option<JsonLinesSpec> {
    let at = format!("{at}.destination");
    let r = raw.get_ref();
    let Some(file) = r.file.as_ref() else {
        v.problem(&raw, at, "type = \"jsonl\" needs `file`");
        return None;
    };
    let file = v.string(file, &format!("{at}.file"))?;
    let compact_lines = match &r.compact_lines {
        Some(n) => v.count(n, &format!("{at}.compact_lines"), 100, 10_000_000)? as usize,
        None => super::COMPACT_LINES,
    };
    Some(JsonLinesSpec {
        path: base_dir.join(file),
        external_id_field: r
            .external_id_field
            .as_ref()
            .map_or_else(|| "external_id".to_owned(), |f| f.get_ref().clone()),
        compact_lines,
    })
}
