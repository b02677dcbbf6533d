//! The PostgreSQL destination's `[sync.destination]` table: a `url` (secrets
//! from the environment, `${VAR}`), an optional `schema`, and the table keys
//! every table destination shares (`sink/table/config.rs`). The database may
//! be the state store's: the rows are then written in the run's transaction
//! that its page commits go in.

use std::str::FromStr;

use serde::Deserialize;
use serde_spanned::Spanned;
use sqlx::postgres::PgConnectOptions;

use crate::config::{S, StoreLocation, Validator};
use crate::secret::Secret;
use crate::sink::DestinationContext;
use crate::sink::table::TableSpec;
use crate::sink::table::config::{TableKeys, identifier};

/// `[sync.destination]` with `type = "postgres"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgres {
    /// Read by the first pass, which chose this table's struct.
    #[serde(rename = "type")]
    _type: serde::de::IgnoredAny,
    pub url: Option<S<String>>,
    pub schema: Option<S<String>>,
    pub table: Option<S<String>>,
    pub key_column: Option<S<String>>,
    pub version_column: Option<S<String>>,
    pub layout: Option<S<String>>,
    pub payload_column: Option<S<String>>,
    pub create_table: Option<bool>,
    pub evolve: Option<bool>,
    pub batch_size: Option<S<i64>>,
    pub concurrency: Option<S<i64>>,
}

#[derive(Debug, Clone)]
pub struct PostgresSpec {
    /// `postgres://user:password@host:port/database`: a secret, since it may
    /// hold a password.
    pub url: Secret,
    pub table: TableSpec,
    /// The database is the state store's, reached as the same user: rows
    /// commit with the checkpoint, in one transaction.
    pub shares_state: bool,
}

pub(crate) fn validate(
    v: &mut Validator<'_>,
    raw: Spanned<RawPostgres>,
    ctx: &DestinationContext<'_>,
    at: &str,
) -> Option<PostgresSpec> {
    let at = format!("{at}.destination");
    let r = raw.get_ref();
    let url = match r.url.as_ref() {
        None => {
            v.problem(
                &raw,
                &at,
                "type = \"postgres\" needs `url`, like \"postgres://user:${PGPASSWORD}@host/database\"",
            );
            None
        }
        Some(url) => {
            let text = v.string(url, &format!("{at}.url"))?;
            let parses = (text.starts_with("postgres://") || text.starts_with("postgresql://"))
                && PgConnectOptions::from_str(&text).is_ok();
            if parses {
                Some(Secret::new(text))
            } else {
                v.problem(
                    url,
                    format!("{at}.url"),
                    "expected a PostgreSQL URL, like \"postgres://user:${PGPASSWORD}@host:5432/database\"",
                );
                None
            }
        }
    };
    let schema = match r.schema.as_ref() {
        Some(s) => Some(Some(identifier(v, s, &format!("{at}.schema"))?)),
        None => Some(None),
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
        concurrency: r.concurrency.as_ref(),
    };
    let table = crate::sink::table::config::validate(v, &raw, keys, schema.flatten(), ctx, &at, 64);
    let url = url?;
    let shares_state = match ctx.state {
        StoreLocation::Postgres { url: state, .. } => same_database(url.expose(), state.expose()),
        StoreLocation::File(_) => false,
    };
    let mut table = table?;
    if shares_state {
        // One transaction, one connection: the writes take turns.
        table.concurrency = 1;
    }
    Some(PostgresSpec {
        url,
        table,
        shares_state,
    })
}

/// Whether two URLs reach one database as one user: the same host, port,
/// database and user name, whatever else differs (a password from another
/// variable, connection parameters).
fn same_database(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (PgConnectOptions::from_str(a), PgConnectOptions::from_str(b)) else {
        return false;
    };
    a.get_host() == b.get_host()
        && a.get_port() == b.get_port()
        && a.get_username() == b.get_username()
        && a.get_database().unwrap_or(a.get_username())
            == b.get_database().unwrap_or(b.get_username())
}
