//! `highwater state copy`: moves the SQLite store the config names into an
//! empty PostgreSQL schema, with every sync's runs locked meanwhile, and says
//! what to put in the config to use it.

use clap::Subcommand;
use highwater_core::config::{DEFAULT_STATE_SCHEMA, StateSpec, StoreLocation};
use highwater_core::secret::Secret;
use highwater_core::state::{CopyError, Store};
use serde_json::json;

use super::{CliError, Context, Exit, print};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the SQLite store into an empty PostgreSQL schema.
    Copy {
        /// The PostgreSQL database, e.g. postgres://user:pass@host:5432/db.
        #[arg(long)]
        to: String,
        /// The schema to copy into (created when missing; it must hold no runs).
        #[arg(long, default_value = DEFAULT_STATE_SCHEMA)]
        schema: String,
    },
}

pub async fn state(ctx: &mut Context, command: StateCommand) -> Result<Exit, CliError> {
    match command {
        StateCommand::Copy { to, schema } => copy(ctx, to, schema).await,
    }
}

async fn copy(ctx: &mut Context, to: String, schema: String) -> Result<Exit, CliError> {
    let config = ctx.state_file()?;
    if config.state.store.file().is_none() {
        return Err(CliError::Usage(format!(
            "state copy: the config's state store is {} already; copy reads a SQLite store (`[state] path`)",
            config.state.store
        )));
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://"))
        || url::Url::parse(&to).is_err()
    {
        return Err(CliError::Usage(
            "state copy: --to takes a PostgreSQL URL, like postgres://user:pass@host:5432/database"
                .into(),
        ));
    }
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || schema.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(CliError::Usage(format!(
            "state copy: --schema {schema:?} is not a schema name of letters, digits and `_`"
        )));
    }
    let source = ctx.store().await?;
    // No run of any sync starts or goes on while its state moves.
    let mut locks = Vec::with_capacity(config.syncs.len());
    for sync in &config.syncs {
        let lock = source.lock_all(sync).await.map_err(|e| match e.held_by() {
            Some((kind, holder)) => CliError::Failed(format!(
                "sync {sync:?} is running its {kind} run ({holder}): nothing was copied; try again once it has ended"
            )),
            None => CliError::failed(e),
        })?;
        locks.push(lock);
    }
    let target_spec = StateSpec {
        store: StoreLocation::Postgres {
            url: Secret::new(to),
            schema,
        },
        ..config.state.clone()
    };
    let target = Store::connect(&target_spec)
        .await
        .map_err(CliError::failed)?;
    let copied = source.copy_to(&target).await;
    target.close().await;
    ctx.close().await;
    drop(locks);
    let copied = match copied {
        Ok(copied) => copied,
        Err(e @ (CopyError::RunOpen { .. } | CopyError::NotEmpty { .. })) => {
            return Err(CliError::Usage(format!("state copy: {e}")));
        }
        Err(e) => return Err(CliError::failed(e)),
    };
    let into = target_spec.store.to_string();
    if ctx.json {
        let tables: serde_json::Map<String, serde_json::Value> = copied
            .tables
            .iter()
            .map(|(t, n)| ((*t).to_owned(), json!(n)))
            .collect();
        print(json!({ "from": config.state.store.to_string(), "to": into, "rows": tables }))?;
    } else {
        let rows: Vec<String> = copied
            .tables
            .iter()
            .map(|(t, n)| format!("  {t}: {n}"))
            .collect();
        print(format_args!(
            "copied {} into {into}:\n{}\nto use it, replace `path` in the config's [state] table with\n  url = \"postgres://…\"  (the same database; a password from the environment, like ${{PGPASSWORD}})\n  schema = \"{}\"",
            config.state.store,
            rows.join("\n"),
            match &target_spec.store {
                StoreLocation::Postgres { schema, .. } => schema.as_str(),
                StoreLocation::File(_) => "",
            }
        ))?;
    }
    Ok(Exit::Complete)
}
