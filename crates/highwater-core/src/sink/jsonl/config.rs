//! The JSON Lines destination's `[sync.destination]` table: a file, and the
//! field each line keeps its external id in.

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
}

#[derive(Debug, Clone)]
pub struct JsonLinesSpec {
    pub path: PathBuf,
    pub external_id_field: String,
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
    Some(JsonLinesSpec {
        path: base_dir.join(file),
        external_id_field: r
            .external_id_field
            .as_ref()
            .map_or_else(|| "external_id".to_owned(), |f| f.get_ref().clone()),
    })
}
