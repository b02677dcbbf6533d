//! The SQL text of a table destination, per dialect: the table's DDL, the
//! batched upsert (rows passed as one JSON array, unpacked by the database,
//! so each statement is prepared once whatever the batch's size), the delete
//! and the read-back by key.

use std::collections::HashMap;

use super::{ColumnType, Layout, TableSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A column of the table as the statements see it: the key and version
/// columns, then the mapped ones (or the payload column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlColumn {
    pub name: String,
    pub kind: ColumnType,
}

/// Every statement a table destination runs, built once when it opens.
#[derive(Debug, Clone)]
pub struct Statements {
    pub create: String,
    /// The schema the table is named in, made when the table is created
    /// and the schema is not there (PostgreSQL).
    pub create_schema: Option<String>,
    pub upsert: String,
    pub delete: String,
    pub read: String,
}

/// `"name"`, doubled quotes inside.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, doubled quotes inside.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Dialect {
    pub fn type_name(self, kind: ColumnType) -> &'static str {
        match (self, kind) {
            (_, ColumnType::Text) => "TEXT",
            (Dialect::Sqlite, ColumnType::BigInt) => "INTEGER",
            (Dialect::Postgres, ColumnType::BigInt) => "BIGINT",
            (Dialect::Sqlite, ColumnType::Double) => "REAL",
            (Dialect::Postgres, ColumnType::Double) => "DOUBLE PRECISION",
            (_, ColumnType::Boolean) => "BOOLEAN",
            // Not JSON alone: SQLite would give the column numeric affinity
            // and turn 5 into an integer, and a number past 64 bits into a
            // REAL, losing digits. "TEXT" in the name gives it text affinity;
            // "JSON" in it says the column holds JSON text (`json_text`).
            (Dialect::Sqlite, ColumnType::Json) => "JSON TEXT",
            (Dialect::Postgres, ColumnType::Json) => "JSONB",
        }
    }

    /// `"schema"."table"` or `"table"`.
    pub fn table_name(self, spec: &TableSpec) -> String {
        match &spec.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&spec.table)),
            None => quote(&spec.table),
        }
    }

    pub fn add_column(self, spec: &TableSpec, column: &SqlColumn) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            self.table_name(spec),
            quote(&column.name),
            self.type_name(column.kind)
        )
    }

    /// The statements for `spec`'s table. `declared` holds the types an
    /// existing table declares its columns with, by name: PostgreSQL reads
    /// each value as its column's type (a `timestamptz`, `numeric(10,2)`,
    /// `uuid` or `text[]` column takes the JSON value's text or array), and
    /// compares the key as the key column's type; without them, as the
    /// types the table would be created with.
    pub fn statements(self, spec: &TableSpec, declared: &HashMap<String, String>) -> Statements {
        let table = self.table_name(spec);
        let columns = columns(spec);
        let type_of = |c: &SqlColumn| {
            declared
                .get(&c.name)
                .cloned()
                .unwrap_or_else(|| self.type_name(c.kind).to_owned())
        };
        // SQLite: JSON text for a column whose type names JSON (as the ones
        // it creates for untyped fields do), else the SQL value JSON holds —
        // an owner's TEXT column takes a string's text, not the string quoted.
        let json_text = |c: &SqlColumn| match declared.get(&c.name) {
            Some(declared) => declared.to_ascii_uppercase().contains("JSON"),
            None => c.kind == ColumnType::Json,
        };
        let key = quote(&spec.key_column);
        let version = quote(&spec.version_column);
        let mut definitions = vec![
            format!("{key} TEXT PRIMARY KEY NOT NULL"),
            format!("{version} {} NOT NULL", self.type_name(ColumnType::BigInt)),
        ];
        definitions.extend(
            columns[2..]
                .iter()
                .map(|c| format!("{} {}", quote(&c.name), self.type_name(c.kind))),
        );
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} ({})",
            definitions.join(", ")
        );
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let updates: Vec<String> = names[1..]
            .iter()
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        let source = match self {
            // jsonb_to_recordset types each value as its column's: a value of
            // the wrong type fails the statement with SQLSTATE class 22.
            // A payload column the owner typed as a time takes a JSON number
            // as the instant it counts from the epoch (see `epoch_time`):
            // read as text, `1700000101` was the year 170000.
            Dialect::Postgres => {
                let mut typed = Vec::with_capacity(columns.len());
                let mut values = Vec::with_capacity(columns.len());
                for (i, c) in columns.iter().enumerate() {
                    let declared = type_of(c);
                    let time = (i >= 2).then(|| time_kind(&declared)).flatten();
                    match time {
                        Some(kind) => {
                            typed.push(format!("{} jsonb", quote(&c.name)));
                            values.push(epoch_time(
                                &format!("r.{}", quote(&c.name)),
                                &declared,
                                kind,
                            ));
                        }
                        None => {
                            typed.push(format!("{} {declared}", quote(&c.name)));
                            values.push(quote(&c.name));
                        }
                    }
                }
                format!(
                    "SELECT {} FROM jsonb_to_recordset($1::jsonb) AS r({})",
                    values.join(", "),
                    typed.join(", ")
                )
            }
            // `->>` gives SQL values (text, integer, real, 1 or 0 for a
            // boolean; objects and arrays as JSON text), `->` JSON text for a
            // JSON column. `jsonb_each` hands each row over as SQLite's parsed
            // JSONB, which the operators read directly; `json_each` wrote it
            // back out as text for each of them to parse again, a sixth of the
            // table's thread. `WHERE true` keeps SQLite from reading ON
            // CONFLICT as a join's. A JSON null is SQL's NULL, as in
            // PostgreSQL's JSONB columns: `->` gives it as the text `null` (a
            // string "null" is `"null"`).
            Dialect::Sqlite => {
                let values: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let path = literal(&format!("$.\"{}\"", c.name));
                        if json_text(c) {
                            format!("NULLIF(r.value -> {path}, 'null')")
                        } else {
                            format!("r.value ->> {path}")
                        }
                    })
                    .collect();
                format!(
                    "SELECT {} FROM jsonb_each(?1) AS r WHERE true",
                    values.join(", ")
                )
            }
        };
        // The key as text, whatever the key column's type: the external id
        // it is compared with is text.
        let (returned, param) = match self {
            Dialect::Postgres => (
                format!("{key}::text"),
                format!("$1::{}", type_of(&columns[0])),
            ),
            Dialect::Sqlite => (format!("CAST({key} AS TEXT)"), "?1".to_owned()),
        };
        let upsert = format!(
            "INSERT INTO {table} AS t ({}) {source} ON CONFLICT ({key}) DO UPDATE SET {} WHERE t.{version} <= excluded.{version} RETURNING {returned}",
            names.join(", "),
            updates.join(", "),
        );
        let delete = format!("DELETE FROM {table} WHERE {key} = {param}");
        let read = match self {
            Dialect::Postgres => {
                format!("SELECT to_jsonb(t)::text FROM {table} AS t WHERE {key} = {param}")
            }
            Dialect::Sqlite => {
                let pairs: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let value = if json_text(c) {
                            format!("json({})", quote(&c.name))
                        } else {
                            quote(&c.name)
                        };
                        format!("{}, {value}", literal(&c.name))
                    })
                    .collect();
                format!(
                    "SELECT json_object({}) FROM {table} WHERE {key} = {param}",
                    pairs.join(", ")
                )
            }
        };
        let create_schema = match (self, &spec.schema) {
            (Dialect::Postgres, Some(schema)) => Some(format!("CREATE SCHEMA {}", quote(schema))),
            _ => None,
        };
        Statements {
            create,
            create_schema,
            upsert,
            delete,
            read,
        }
    }
}

/// A PostgreSQL column type that holds a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeKind {
    /// `timestamptz`: an instant.
    Instant,
    /// `timestamp` or `date`: a wall time, taken in UTC.
    Wall,
}

/// What time `declared` (as `format_type` names it) holds, if it is one; an
/// array of times is not one (it is read from a JSON array as it is).
fn time_kind(declared: &str) -> Option<TimeKind> {
    let declared = declared.to_ascii_lowercase();
    if declared.ends_with("[]") {
        None
    } else if declared.starts_with("timestamp") {
        Some(match declared.contains("with time zone") {
            true => TimeKind::Instant,
            false => TimeKind::Wall,
        })
    } else if declared == "date" {
        Some(TimeKind::Wall)
    } else {
        None
    }
}

/// From this number on an epoch time written into a column typed as a time
/// counts milliseconds, below it seconds (see [`epoch_time`]); reconcile
/// reads such a column back by the same rule.
pub(crate) const EPOCH_MILLIS_FROM: f64 = 1e11;

/// `value` (JSONB) as a `declared` time: a number counts seconds from the
/// epoch — milliseconds from 10^11 on, as JavaScript's and Java's clocks
/// give them, since 10^11 seconds is the year 5138 — in UTC; anything else
/// as PostgreSQL reads its text (a JSON null is NULL, a string that is no
/// time refuses the row).
fn epoch_time(value: &str, declared: &str, kind: TimeKind) -> String {
    let seconds = format!(
        "CASE WHEN abs(({value})::text::float8) >= {EPOCH_MILLIS_FROM} \
         THEN ({value})::text::float8 / 1000 ELSE ({value})::text::float8 END"
    );
    let instant = format!("to_timestamp({seconds})");
    let instant = match kind {
        TimeKind::Instant => instant,
        TimeKind::Wall => format!("({instant} AT TIME ZONE 'UTC')"),
    };
    format!(
        "CASE WHEN jsonb_typeof({value}) = 'number' THEN {instant}::{declared} \
         ELSE ({value} #>> '{{}}')::{declared} END"
    )
}

/// The key and version columns, then the payload's.
pub fn columns(spec: &TableSpec) -> Vec<SqlColumn> {
    let mut columns = vec![
        SqlColumn {
            name: spec.key_column.clone(),
            kind: ColumnType::Text,
        },
        SqlColumn {
            name: spec.version_column.clone(),
            kind: ColumnType::BigInt,
        },
    ];
    match &spec.layout {
        Layout::Columns(mapped) => columns.extend(mapped.iter().cloned()),
        Layout::Json { payload_column } => columns.push(SqlColumn {
            name: payload_column.clone(),
            kind: ColumnType::Json,
        }),
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn spec() -> TableSpec {
        TableSpec {
            table: "invoices".into(),
            schema: Some("billing".into()),
            key_column: "external_id".into(),
            version_column: "version".into(),
            layout: Layout::Columns(vec![
                SqlColumn {
                    name: "amount".into(),
                    kind: ColumnType::BigInt,
                },
                SqlColumn {
                    name: "customer".into(),
                    kind: ColumnType::Json,
                },
            ]),
            create_table: true,
            evolve: true,
            batch_size: 500,
            concurrency: 2,
        }
    }

    #[test]
    fn postgres_statements() {
        let s = Dialect::Postgres.statements(&spec(), &HashMap::new());
        assert_eq!(
            s.create_schema.as_deref(),
            Some(r#"CREATE SCHEMA "billing""#)
        );
        expect![[r#"CREATE TABLE IF NOT EXISTS "billing"."invoices" ("external_id" TEXT PRIMARY KEY NOT NULL, "version" BIGINT NOT NULL, "amount" BIGINT, "customer" JSONB)"#]].assert_eq(&s.create);
        expect![[r#"INSERT INTO "billing"."invoices" AS t ("external_id", "version", "amount", "customer") SELECT "external_id", "version", "amount", "customer" FROM jsonb_to_recordset($1::jsonb) AS r("external_id" TEXT, "version" BIGINT, "amount" BIGINT, "customer" JSONB) ON CONFLICT ("external_id") DO UPDATE SET "version" = excluded."version", "amount" = excluded."amount", "customer" = excluded."customer" WHERE t."version" <= excluded."version" RETURNING "external_id"::text"#]].assert_eq(&s.upsert);
    }

    #[test]
    fn sqlite_statements() {
        let mut spec = spec();
        spec.schema = None;
        let s = Dialect::Sqlite.statements(&spec, &HashMap::new());
        expect![[r#"INSERT INTO "invoices" AS t ("external_id", "version", "amount", "customer") SELECT r.value ->> '$."external_id"', r.value ->> '$."version"', r.value ->> '$."amount"', NULLIF(r.value -> '$."customer"', 'null') FROM jsonb_each(?1) AS r WHERE true ON CONFLICT ("external_id") DO UPDATE SET "version" = excluded."version", "amount" = excluded."amount", "customer" = excluded."customer" WHERE t."version" <= excluded."version" RETURNING CAST("external_id" AS TEXT)"#]].assert_eq(&s.upsert);
        expect![[r#"SELECT json_object('external_id', "external_id", 'version', "version", 'amount', "amount", 'customer', json("customer")) FROM "invoices" WHERE "external_id" = ?1"#]].assert_eq(&s.read);
    }
}
