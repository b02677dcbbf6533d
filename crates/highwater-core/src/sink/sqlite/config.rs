//! The SQLite destination's `[sync.destination]` table: a database file
//! (relative to the config file) and the table keys every table destination
//! shares (`sink/table/config.rs`). The file may be the state store's: the
//! rows are then written in the store's own transactions.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

use crate::config::{S, Validator};
use crate::sink::DestinationContext;
use crate::sink::table::TableSpec;
use crate::sink::table::config::TableKeys;

/// `[sync.destination]` with `type = "sqlite"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSqlite {
    /// Read by the first pass, which chose this table's struct.
    #[serde(rename = "type")]
    _type: serde::de::IgnoredAny,
    pub path: Option<S<String>>,
    pub table: Option<S<String>>,
    pub key_column: Option<S<String>>,
    pub version_column: Option<S<String>>,
    pub layout: Option<S<String>>,
    pub payload_column: Option<S<String>>,
    pub create_table: Option<bool>,
    pub evolve: Option<bool>,
    pub batch_size: Option<S<i64>>,
}

#[derive(Debug, Clone)]
pub struct SqliteSpec {
    pub path: PathBuf,
    pub table: TableSpec,
    /// The file is the state store's: rows commit with the checkpoint, in
    /// one transaction.
    pub shares_state: bool,
}

pub(crate) fn validate(
    v: &mut Validator<'_>,
    raw: Spanned<RawSqlite>,
    ctx: &DestinationContext<'_>,
    at: &str,
) -> Option<SqliteSpec> {
    let at = format!("{at}.destination");
    let r = raw.get_ref();
    let path = match r.path.as_ref() {
        None => {
            v.problem(
                &raw,
                &at,
                "type = \"sqlite\" needs `path`, the database file",
            );
            None
        }
        Some(path) => {
            let text = v.string(path, &format!("{at}.path"))?;
            Some(ctx.base_dir.join(text))
        }
    };
    let keys = TableKeys {
        table: r.table.as_ref(),
        key_column: r.key_column.as_ref(),
        version_column: r.version_column.as_ref(),
        layout: r.layout.as_ref(),
        payload_column: r.payload_column.as_ref(),
        create_table: r.create_table,
        evolve: r.evolve,
        batch_size: r.batch_size.as_ref(),
        concurrency: None,
    };
    // One writer at a time: SQLite serializes writes anyway.
    let table = crate::sink::table::config::validate(v, &raw, keys, None, ctx, &at, 1);
    let path = path?;
    Some(SqliteSpec {
        shares_state: ctx
            .state
            .file()
            .is_some_and(|state| same_file(&path, state)),
        path,
        table: table?,
    })
}

/// Whether two paths name one file: the same path once `.` segments are
/// dropped, or the same file on disk when both exist.
fn same_file(a: &Path, b: &Path) -> bool {
    let normal = |p: &Path| -> PathBuf { p.components().collect() };
    if normal(a) == normal(b) {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
