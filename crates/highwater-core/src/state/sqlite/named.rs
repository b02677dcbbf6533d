//! Named parameters for the store's lists of statements. sqlx's SQLite
//! driver binds only `?`, `?NNN` and `$NNN`, and numbers the arguments across
//! a whole list of statements, where a number one statement skips shifts the
//! others' arguments. So a list is written with `:name` placeholders, split
//! into its statements once, each with its names rewritten to `?1`, `?2`… in
//! order of first use, and run one statement at a time, each bound by name.
//! A statement that unpacks a list of rows ([`Param::Rows`]) handed none is
//! not run: written so, it would change nothing, and each statement is a trip
//! to SQLite's thread.
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
}

#[derive(Debug)]
struct Statement {
    /// The statement with `?N` for its N-th name.
    sql: String,
    names: Vec<String>,
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
    /// numbers each one's names.
    pub(super) fn parse(sql: &str) -> Statements {
        let mut parts = Vec::new();
        let mut current = Statement {
            sql: String::new(),
            names: Vec::new(),
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
                    let index = match current.names.iter().position(|n| *n == name) {
                        Some(i) => i + 1,
                        None => {
                            current.names.push(name);
                            current.names.len()
                        }
                    };
                    current.sql.push_str(&format!("?{index}"));
                }
                ';' => {
                    let done = std::mem::replace(
                        &mut current,
                        Statement {
                            sql: String::new(),
                            names: Vec::new(),
                        },
                    );
                    parts.push(done);
                }
                _ => current.sql.push(c),
            }
        }
        parts.push(current);
        parts.retain(|s| !s.sql.trim().is_empty());
        Statements { parts }
    }

    /// The statements as SQLite reads them, `?N` for names.
    #[cfg(test)]
    pub(super) fn sql(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|s| s.sql.as_str())
    }

    /// Runs every statement in order on `conn`, each bound by name.
    pub(super) async fn run(
        &self,
        conn: &mut SqliteConnection,
        params: &Params<'_>,
    ) -> Result<(), StateError> {
        'statements: for statement in &self.parts {
            let mut args = SqliteArguments::default();
            for name in &statement.names {
                let value = params.get(name.as_str()).ok_or_else(|| {
                    StateError::Corrupt(format!("no value for :{name} in {}", statement.sql))
                })?;
                let added = match value {
                    Param::Text(v) => sqlx::Arguments::add(&mut args, *v),
                    Param::Owned(v) => sqlx::Arguments::add(&mut args, v.as_str()),
                    Param::Int(v) => sqlx::Arguments::add(&mut args, *v),
                    Param::Null => sqlx::Arguments::add(&mut args, None::<&str>),
                    Param::Rows { empty: true, .. } => continue 'statements,
                    Param::Rows { json, .. } => sqlx::Arguments::add(&mut args, json.as_str()),
                };
                added.map_err(|e| StateError::Corrupt(e.to_string()))?;
            }
            sqlx::query_with(sqlx::AssertSqlSafe(statement.sql.as_str()), args)
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
    fn names_become_numbers_in_order_of_first_use_per_statement() {
        let list = Statements::parse(
            "INSERT INTO t VALUES (:b, :a, :b, ':not_a_name'); -- :nor; this\n\
             UPDATE t SET x = :a WHERE y = 'it''s:x' AND z = :c_2;\n",
        );
        let parts: Vec<(&str, Vec<&str>)> = list
            .parts
            .iter()
            .map(|s| (s.sql.trim(), s.names.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            parts,
            [
                (
                    "INSERT INTO t VALUES (?1, ?2, ?1, ':not_a_name')",
                    vec!["b", "a"]
                ),
                (
                    "UPDATE t SET x = ?1 WHERE y = 'it''s:x' AND z = ?2",
                    vec!["a", "c_2"]
                ),
            ]
        );
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
             INSERT INTO t VALUES ('handed no rows', 0, :none)",
        );
        let params: Params = [
            ("a", Param::from("x")),
            ("b", Param::from(7)),
            ("c", Param::from(None::<String>)),
            ("none", Param::rows::<i64>(&[]).expect("rows")),
        ]
        .into();
        list.run(&mut conn, &params).await.expect("run");
        let rows: Vec<(String, i64, String)> = sqlx::query_as("SELECT a, b, c FROM t")
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        assert_eq!(rows, [("x".into(), 7, "x-7".into())]);
        let missing = Statements::parse("SELECT :a")
            .run(&mut conn, &Params::new())
            .await;
        assert!(
            matches!(&missing, Err(StateError::Corrupt(m)) if m.contains(":a")),
            "{missing:?}"
        );
    }
}
