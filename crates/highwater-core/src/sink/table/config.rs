//! The keys every table destination shares (`table`, `key_column`,
//! `version_column`, `layout`, `payload_column`, `create_table`, `evolve`,
//! `batch_size`, `concurrency`), and the column plan: each top-level output
//! field of the mapping (and of the soft delete) becomes a column, typed from
//! the mapping's `required` types, a dotted path's first segment a JSON column.

use serde_spanned::Spanned;

use super::sql::SqlColumn;
use super::{ColumnType, Layout, TableSpec};
use crate::config::{JsonType, S, Validator};
use crate::sink::DestinationContext;

/// The shared keys of a `[sync.destination]` table, borrowed from the
/// destination's own raw struct.
#[derive(Debug)]
pub(crate) struct TableKeys<'a> {
    pub table: Option<&'a S<String>>,
    pub key_column: Option<&'a S<String>>,
    pub version_column: Option<&'a S<String>>,
    pub layout: Option<&'a S<String>>,
    pub payload_column: Option<&'a S<String>>,
    pub create_table: Option<bool>,
    pub evolve: Option<bool>,
    pub batch_size: Option<&'a S<i64>>,
    pub concurrency: Option<&'a S<i64>>,
}

/// Rows per batch when the file does not say. The engine queues a page at
/// a time, so a batch is at most a page in practice; in `benches/db.rs` the
/// database alone upserted 1,000-row batches at 84,700 rows/s (PostgreSQL)
/// and 73,300 (SQLite), and 500-row ones within noise of that.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Statements in flight at once when the file does not say.
pub const DEFAULT_CONCURRENCY: usize = 2;

pub(crate) fn validate<T>(
    v: &mut Validator<'_>,
    raw: &Spanned<T>,
    keys: TableKeys<'_>,
    schema: Option<String>,
    ctx: &DestinationContext<'_>,
    at: &str,
    max_concurrency: u32,
) -> Option<TableSpec> {
    let Some(table) = keys.table else {
        v.problem(raw, at, "a table destination needs `table`");
        return None;
    };
    let table_key = format!("{at}.table");
    let table = identifier(v, table, &table_key)?;
    let key_column = match keys.key_column {
        Some(c) => identifier(v, c, &format!("{at}.key_column"))?,
        None => "external_id".to_owned(),
    };
    let version_column = match keys.version_column {
        Some(c) => identifier(v, c, &format!("{at}.version_column"))?,
        None => "version".to_owned(),
    };
    if key_column == version_column
        && let Some(c) = keys.version_column.or(keys.key_column)
    {
        v.problem(
            c,
            format!("{at}.version_column"),
            "the key and version columns must differ",
        );
        return None;
    }
    let layout_name = keys.layout.map_or("columns", |l| l.get_ref().as_str());
    let layout = match layout_name {
        "columns" => {
            if let Some(p) = keys.payload_column {
                v.problem(
                    p,
                    format!("{at}.payload_column"),
                    "only with layout = \"json\"",
                );
                return None;
            }
            let columns = plan_columns(v, raw, ctx, &key_column, &version_column, at)?;
            Layout::Columns(columns)
        }
        "json" => {
            let payload_column = match keys.payload_column {
                Some(c) => identifier(v, c, &format!("{at}.payload_column"))?,
                None => "payload".to_owned(),
            };
            if payload_column == key_column || payload_column == version_column {
                let at_key = format!("{at}.payload_column");
                match keys.payload_column {
                    Some(c) => v.problem(c, at_key, "must differ from the key and version columns"),
                    None => v.problem(
                        raw,
                        at_key,
                        "the default \"payload\" is the key or version column: name another",
                    ),
                }
                return None;
            }
            Layout::Json { payload_column }
        }
        _ => {
            if let Some(l) = keys.layout {
                v.problem(
                    l,
                    format!("{at}.layout"),
                    "expected \"columns\" (a column per mapped field) or \"json\" (the whole payload in one column)",
                );
            }
            return None;
        }
    };
    let batch_size = match keys.batch_size {
        Some(n) => v.count(n, &format!("{at}.batch_size"), 1, 10_000)? as usize,
        None => DEFAULT_BATCH_SIZE,
    };
    let concurrency = match keys.concurrency {
        Some(n) => v.count(n, &format!("{at}.concurrency"), 1, max_concurrency)? as usize,
        None => DEFAULT_CONCURRENCY.min(max_concurrency as usize),
    };
    Some(TableSpec {
        table,
        schema,
        key_column,
        version_column,
        layout,
        create_table: keys.create_table.unwrap_or(true),
        evolve: keys.evolve.unwrap_or(true),
        batch_size,
        concurrency,
    })
}

/// A table, schema or column name: any text the database takes quoted (each
/// is always quoted in SQL), since an owner's table may be named `"Contacts"`
/// or hold a column `"Full Name"` — up to 63 bytes (PostgreSQL cuts longer
/// names short, to another name), without `"` or control characters.
pub(crate) fn identifier(v: &mut Validator<'_>, raw: &S<String>, key: &str) -> Option<String> {
    let name = raw.get_ref();
    if is_identifier(name) {
        return Some(name.clone());
    }
    v.problem(raw, key, format!("expected a name {NAME_RULE}"));
    None
}

const NAME_RULE: &str = "of 1 to 63 bytes, without `\"` or control characters";

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && !name.chars().any(|c| c == '"' || c.is_control())
}

/// The columns the mapping gives, in file order, one per top-level output
/// field.
fn plan_columns<T>(
    v: &mut Validator<'_>,
    raw: &Spanned<T>,
    ctx: &DestinationContext<'_>,
    key_column: &str,
    version_column: &str,
    at: &str,
) -> Option<Vec<SqlColumn>> {
    // The mapping's own problems are reported by the mapping.
    let mapping = ctx.mapping?;
    if mapping.fields.is_empty() {
        v.problem(
            raw,
            format!("{at}.layout"),
            "layout = \"columns\" needs `[sync.mapping.fields]`: the whole record has no fixed columns (use layout = \"json\")",
        );
        return None;
    }
    let outputs = mapping
        .fields
        .iter()
        .map(|(target, _)| target)
        .chain(mapping.constants.iter().map(|(target, _)| target));
    let mut fields: Vec<(String, Option<JsonType>, bool)> = Vec::new();
    for target in outputs {
        let Some(first) = target.segments().first() else {
            continue;
        };
        let nested = target.segments().len() > 1;
        let kind = mapping
            .required
            .iter()
            .find(|(path, _)| path == target)
            .map(|(_, t)| *t);
        fields.push((first.clone(), kind, nested));
    }
    for (name, kind) in &ctx.soft_delete {
        fields.push((name.clone(), *kind, false));
    }
    let mut columns: Vec<SqlColumn> = Vec::new();
    let mut ok = true;
    for (name, kind, nested) in fields {
        if name == key_column || name == version_column {
            let which = if name == key_column {
                "key_column"
            } else {
                "version_column"
            };
            v.problem(
                raw,
                format!("{at}.{which}"),
                format!(
                    "the mapping writes a field `{name}`, which is the column holding the record's {}: rename the field, or set `{which}`",
                    if name == key_column { "external id" } else { "version" }
                ),
            );
            ok = false;
            continue;
        }
        if !is_identifier(&name) {
            v.problem(
                raw,
                format!("{at}.layout"),
                format!("the mapped field `{name}` cannot be a column name (a name {NAME_RULE}); rename it, or use layout = \"json\""),
            );
            ok = false;
            continue;
        }
        let kind = match (nested, kind) {
            (true, _) | (false, None) => ColumnType::Json,
            (false, Some(t)) => ColumnType::of(t),
        };
        match columns.iter_mut().find(|c| c.name == name) {
            // A field both whole and nested, or typed twice apart, is JSON.
            Some(column) if column.kind != kind => column.kind = ColumnType::Json,
            Some(_) => {}
            None => columns.push(SqlColumn { name, kind }),
        }
    }
    ok.then_some(columns)
}

/// The type of a soft delete's value, for its column.
pub(crate) fn toml_type(value: &toml::Value) -> Option<JsonType> {
    match value {
        toml::Value::String(_) => Some(JsonType::String),
        toml::Value::Integer(_) => Some(JsonType::Integer),
        toml::Value::Float(_) => Some(JsonType::Number),
        toml::Value::Boolean(_) => Some(JsonType::Boolean),
        _ => None,
    }
}
