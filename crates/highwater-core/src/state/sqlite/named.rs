//! Named parameters for the store's lists of statements. sqlx's SQLite
//! driver binds only `?`, `?NNN` and `$NNN`; a list is written with `:name`
//! placeholders, split into its statements once and its names rewritten to
//! `?1`, `?2`… in order of first use across the list, and run as one query
//! (one trip to SQLite's thread, where a trip per statement cost a commit a
//! wake-up of each side per statement). A statement that unpacks a list of
//! rows ([`Param::Rows`]) handed none is left out: written so, it would
//! change nothing.
//! Nothing in sqlx or SQLite's Rust crates does this without unsafe code
//! (SQLite binds names itself, through its raw statement handle).

use std::collections::HashMap;

use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteArguments;

use super::StateError;

/// A list of statements with `:name` placeholders, ready to run.
#[derive(Debug)]
pub(super) struct Statements {
    parts: Vec<Statement>,
    /// Every name of the list, in order of first use: `:name` is `?N` for
    /// its place N here, in every statement.
    names: Vec<String>,
}

#[derive(Debug)]
struct Statement {
    /// The statement with `?N` for the list's N-th name.
    sql: String,
    /// The places in the list's names of those this statement uses.
    uses: Vec<usize>,
}

/// A value bound to a name.
#[derive(Debug, Clone)]
pub(super) enum Param<'a> {
    Text(&'a str),
    Owned(String),
    Int(i64),
    Null,
    /// A JSON array of rows for a statement to unpack; none, and the
    /// statements that bind it are skipped.
    Rows {
        json: String,
        empty: bool,
    },
    /// Rows packed by their reader's own format, bound as a blob; none, and
    /// the statements that bind it are skipped, as for [`Param::Rows`].
    Packed {
        bytes: Vec<u8>,
        empty: bool,
    },
}

impl Param<'_> {
    /// `rows` as a JSON array (see `json_rows`).
    pub(super) fn rows<T: serde::Serialize>(rows: &[T]) -> Result<Param<'static>, StateError> {
        Ok(Param::Rows {
            json: super::json_rows(rows)?,
            empty: rows.is_empty(),
        })
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Param<'a> {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Param<'a> {
        Param::Text(v)
    }
}

impl From<String> for Param<'_> {
    fn from(v: String) -> Self {
        Param::Owned(v)
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Param<'a> {
        v.map_or(Param::Null, Into::into)
    }
}

/// Values by name, for one run of a list.
pub(super) type Params<'a> = HashMap<&'static str, Param<'a>>;

impl Statements {
    /// Splits `sql` into statements (at `;` outside quotes and comments) and
    /// numbers the names across the list.
    pub(super) fn parse(sql: &str) -> Statements {
        let mut parts = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut current = Statement {
            sql: String::new(),
            uses: Vec::new(),
        };
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' | '"' => {
                    current.sql.push(c);
                    for inner in chars.by_ref() {
                        current.sql.push(inner);
                        // A doubled quote closes and reopens: the same text.
                        if inner == c {
                            break;
                        }
                    }
                }
                '-' if chars.peek() == Some(&'-') => {
                    for inner in chars.by_ref() {
                        if inner == '\n' {
                            current.sql.push('\n');
                            break;
                        }
                    }
                }
                ':' if chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') =>
                {
                    let mut name = String::new();
                    while let Some(n) = chars.next_if(|n| n.is_ascii_alphanumeric() || *n == '_') {
                        name.push(n);
                    }
                    let place = match names.iter().position(|n| *n == name) {
                        Some(i) => i,
                        None => {
                            names.push(name);
                            names.len() - 1
                        }
                    };
                    if !current.uses.contains(&place) {
                        current.uses.push(place);
                    }
                    current.sql.push_str(&format!("?{}", place + 1));
                }
                ';' => {
                    let done = std::mem::replace(
                        &mut current,
                        Statement {
                            sql: String::new(),
                            uses: Vec::new(),
                        },
                    );
                    parts.push(done);
                }
                _ => current.sql.push(c),
            }
        }
        parts.push(current);
        parts.retain(|s| !s.sql.trim().is_empty());
        Statements { parts, names }
    }

    /// The statements as SQLite reads them, `?N` for names.
    #[cfg(test)]
    pub(super) fn sql(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|s| s.sql.as_str())
    }

    /// Runs the statements in order on `conn`, bound by name, in one trip to
    /// SQLite's thread: the list's numbers are the same in every statement,
    /// and sqlx binds `?N` to the N-th argument whichever statement it is in.
    pub(super) async fn run(
        &self,
        conn: &mut SqliteConnection,
        params: &Params<'_>,
    ) -> Result<(), StateError> {
        let mut args = SqliteArguments::default();
        let mut empty = Vec::new();
        for (place, name) in self.names.iter().enumerate() {
            let value = params
                .get(name.as_str())
                .ok_or_else(|| StateError::Corrupt(format!("no value for :{name}")))?;
            let added = match value {
                Param::Text(v) => sqlx::Arguments::add(&mut args, *v),
                Param::Owned(v) => sqlx::Arguments::add(&mut args, v.as_str()),
                Param::Int(v) => sqlx::Arguments::add(&mut args, *v),
                Param::Null => sqlx::Arguments::add(&mut args, None::<&str>),
                Param::Rows { json, empty: none } => {
                    if *none {
                        empty.push(place);
                    }
                    sqlx::Arguments::add(&mut args, json.as_str())
                }
                Param::Packed { bytes, empty: none } => {
                    if *none {
                        empty.push(place);
                    }
                    sqlx::Arguments::add(&mut args, bytes.as_slice())
                }
            };
            added.map_err(|e| StateError::Corrupt(e.to_string()))?;
        }
        // A statement that skips numbers (`?1` and `?5`) leaves slots without
        // a name, which sqlx fills from the arguments as if each were a `?` —
        // counting on across the statements — and it stops binding a statement
        // at the first slot past the last argument, leaving the rest NULL.
        // Spare arguments, enough for every slot of every statement, keep it
        // from ever getting there.
        for _ in 0..self.parts.len() * self.names.len() {
            sqlx::Arguments::add(&mut args, None::<&str>)
                .map_err(|e| StateError::Corrupt(e.to_string()))?;
        }
        let sql = self
            .parts
            .iter()
            .filter(|s| !s.uses.iter().any(|u| empty.contains(u)))
            .map(|s| s.sql.trim())
            .collect::<Vec<_>>()
            .join(";\n");
        if !sql.is_empty() {
            sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_numbers_in_order_of_first_use_across_the_list() {
        let list = Statements::parse(
            "INSERT INTO t VALUES (:b, :a, :b, ':not_a_name'); -- :nor; this\n\
             UPDATE t SET x = :a WHERE y = 'it''s:x' AND z = :c_2;\n",
        );
        let parts: Vec<(&str, &[usize])> = list
            .parts
            .iter()
            .map(|s| (s.sql.trim(), s.uses.as_slice()))
            .collect();
        assert_eq!(
            parts,
            [
                (
                    "INSERT INTO t VALUES (?1, ?2, ?1, ':not_a_name')",
                    &[0, 1][..]
                ),
                (
                    "UPDATE t SET x = ?2 WHERE y = 'it''s:x' AND z = ?3",
                    &[1, 2][..]
                ),
            ]
        );
        assert_eq!(list.names, ["b", "a", "c_2"]);
    }

    #[tokio::test]
    async fn each_statement_is_bound_by_name() {
        use sqlx::Connection;
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("memory");
        let list = Statements::parse(
            "CREATE TABLE t (a TEXT, b INTEGER, c TEXT);
             INSERT INTO t VALUES (:a, :b, :c);
             UPDATE t SET c = :a || '-' || :b WHERE b = :b;
             INSERT INTO t VALUES ('handed no rows', 0, :none);
             INSERT INTO t VALUES (:d, :e, :f);
             INSERT INTO t VALUES (:f, :e, :d);
             UPDATE t SET c = :a WHERE b = :e AND a = :f",
        );
        let params: Params = [
            ("a", Param::from("x")),
            ("b", Param::from(7)),
            ("c", Param::from(None::<String>)),
            ("none", Param::rows::<i64>(&[]).expect("rows")),
            ("d", Param::from("d")),
            ("e", Param::from(9)),
            ("f", Param::from("f")),
        ]
        .into();
        list.run(&mut conn, &params).await.expect("run");
        let rows: Vec<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT a, b, c FROM t ORDER BY rowid")
                .fetch_all(&mut conn)
                .await
                .expect("rows");
        // The last statements skip numbers (`?4` after `?1`), each after
        // others that did: every name is still bound to its own value.
        assert_eq!(
            rows,
            [
                ("x".into(), 7, Some("x-7".into())),
                ("d".into(), 9, Some("f".into())),
                ("f".into(), 9, Some("x".into())),
            ]
        );
        let missing = Statements::parse("SELECT :a")
            .run(&mut conn, &Params::new())
            .await;
        assert!(
            matches!(&missing, Err(StateError::Corrupt(m)) if m.contains(":a")),
            "{missing:?}"
        );
    }
}
