//! `highwater init`: writes a commented `highwater.toml` for one sync, from the
//! source URL and the destination — an API (with its write mode), a PostgreSQL
//! or SQLite table, or a JSON Lines file — asked for on a terminal, taken from
//! flags elsewhere (missing ones are bad input, nothing asked). The file
//! passes `validate` as written once the secrets it names are set; its
//! comments say what to adjust, and `probe` checks it against the source.
//! An existing file is kept unless `--force`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use clap::{Args, ValueEnum};
use url::Url;

use super::{CliError, Exit, print};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// PUT each record to a path holding its external id.
    Put,
    /// POST each record to an upsert endpoint.
    Post,
    /// Look each record up by external id, then create or update it.
    Lookup,
    /// POST many records in one request, each answered on its own.
    Batch,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The sync's name.
    #[arg(long, default_value = "my_sync")]
    name: String,
    /// The source API's base URL, e.g. https://billing.example.com.
    #[arg(long)]
    source_url: Option<String>,
    /// The path that lists the records.
    #[arg(long, default_value = "/v1/records")]
    source_path: String,
    /// The destination: an API's base URL (https://crm.example.com), a
    /// PostgreSQL URL (postgres://user@host/db), a SQLite file
    /// (sqlite:out/crm.db) or a JSON Lines file (out/records.jsonl).
    #[arg(long)]
    destination_url: Option<String>,
    /// How records are written to an API destination.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

pub fn init(path: &Path, args: InitArgs) -> Result<Exit, CliError> {
    if path.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{}: already exists; nothing was written (--force overwrites it)",
            path.display()
        )));
    }
    let terminal = std::io::stdin().is_terminal();
    let source = value(
        args.source_url,
        terminal,
        "source API base URL",
        "--source-url",
    )?;
    let destination = value(
        args.destination_url,
        terminal,
        "destination (an API's base URL, postgres://…, sqlite:FILE or FILE.jsonl)",
        "--destination-url",
    )?;
    let source = url(&source, "--source-url")?;
    // The write mode is asked for only once the destination is an API.
    let destination = Destination::parse(&destination, || match args.mode {
        Some(mode) => Ok(mode),
        None if terminal => {
            let answer = ask("write mode (put, post, lookup or batch)")?;
            Mode::from_str(answer.trim(), true).map_err(|_| {
                CliError::Usage(format!(
                    "write mode: expected put, post, lookup or batch, got {answer:?}"
                ))
            })
        }
        None => Err(missing("--mode")),
    })?;
    if !valid_name(&args.name) {
        return Err(CliError::Usage(format!(
            "--name {:?}: use letters, digits, '_' and '-'",
            args.name
        )));
    }
    let text = config(&args.name, &source, &args.source_path, &destination);
    std::fs::write(path, text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    print(format_args!(
        "wrote {}: sync {:?}, {}\nnext: set the secrets it names in the environment, `highwater probe {}` to check it against the source, then `highwater run {}`",
        path.display(),
        args.name,
        destination.kind(),
        args.name,
        args.name,
    ))?;
    Ok(Exit::Complete)
}

/// Where the sync writes, as `--destination-url` names it.
enum Destination {
    /// An API's base URL and its write mode.
    Api(String, Mode),
    /// A PostgreSQL URL.
    Postgres(Url),
    /// A SQLite file, as given after `sqlite:`.
    Sqlite(String),
    /// A JSON Lines file.
    JsonLines(String),
}

impl Destination {
    /// The destination `text` names; `mode` gives the write mode of an API.
    fn parse(
        text: &str,
        mode: impl FnOnce() -> Result<Mode, CliError>,
    ) -> Result<Destination, CliError> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            return match path.is_empty() {
                true => Err(CliError::Usage(
                    "--destination-url \"sqlite:\": name the file, like sqlite:out/crm.db".into(),
                )),
                false => Ok(Destination::Sqlite(path.to_owned())),
            };
        }
        if text.ends_with(".jsonl") && !text.contains("://") {
            return Ok(Destination::JsonLines(text.to_owned()));
        }
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => {
                Ok(Destination::Postgres(url))
            }
            _ => {
                let url = url(text, "--destination-url").map_err(|_| {
                    CliError::Usage(format!(
                        "--destination-url {text:?}: expected an API's http(s) URL like https://crm.example.com, a postgres:// URL, sqlite:FILE or FILE.jsonl"
                    ))
                })?;
                Ok(Destination::Api(url, mode()?))
            }
        }
    }

    fn kind(&self) -> String {
        match self {
            Destination::Api(_, mode) => format!(
                "{} mode",
                mode.to_possible_value()
                    .map_or_else(|| "?".to_owned(), |v| v.get_name().to_owned())
            ),
            Destination::Postgres(_) => "a PostgreSQL table".into(),
            Destination::Sqlite(_) => "a SQLite table".into(),
            Destination::JsonLines(_) => "a JSON Lines file".into(),
        }
    }

    /// The `[sync.destination]` table, its password (if the URL holds one)
    /// replaced by an environment variable named after `token`.
    fn table(&self, name: &str, token: &str) -> String {
        // A table's name is letters, digits and `_`; a sync's may hold `-`.
        let mut table = name.replace('-', "_");
        if table.starts_with(|c: char| c.is_ascii_digit()) {
            table.insert_str(0, "sync_");
        }
        let table = format!(
            r#"# the table, created when missing with a column per mapped field
table = "{table}"
# key_column = "external_id"          # holds the mapping's external id
# version_column = "version"          # the record's version (else updated_at in µs)"#
        );
        match self {
            Destination::Api(url, mode) => {
                let mode = match mode {
                    Mode::Put => {
                        r#"mode = "put"                          # PUT each record where its external id names it
path = "/v1/records/{external_id}"
# read_path = "/v1/records/{external_id}"  # lets highwater read a record back (dry runs, late writes)"#
                    }
                    Mode::Post => {
                        r#"mode = "post"                         # POST each record to an upsert endpoint (sent with an Idempotency-Key)
path = "/v1/records/upsert"
external_id_field = "external_id"     # the field of a destination object that holds the external id"#
                    }
                    Mode::Lookup => {
                        r#"mode = "lookup"                       # find each record by external id, then create or update it
lookup_path = "/v1/records"
lookup_param = "external_id"
create_path = "/v1/records"
update_path = "/v1/records/{dest_id}"
external_id_field = "external_id"     # the field of a destination object that holds the external id"#
                    }
                    Mode::Batch => {
                        r#"mode = "batch"                        # many records a request, each answered on its own
path = "/v1/records/batch"            # POSTed; method = "PATCH" or "PUT" otherwise
batch_size = 100                      # records a request, at most: the API's own limit
batch_field = "records"               # the body is {"records": [...]}; without it, the array itself
# batch_body = { allOrNone = false }  # the body's other fields
# results_path = "results"            # where the answer lists each record's result; without it, the body
# result_id_field = "external_id"     # match results by external id; without it, by position
result_status_field = "status"        # 2xx, true or "success": written; 408, 425, 429, 5xx: sent again;
                                      #   else refused; a result without it is not written
# result_error_field = "errors"       # a result carrying it (not empty) was refused, with this reason
# dest_id_field = "id"                # where a result holds the destination's own id
# job = { url_field = "job_status.url", status_field = "job_status.status" }
#                                     # when the answer is a job to poll; results_path then points
#                                     #   into the job's answer once done ("job_status.results")
# upsert = true                       # when the endpoint upserts by external id: a batch without a
                                      #   clear answer is sent again (otherwise the run stops, naming it)
external_id_field = "external_id"     # the field of each record that holds its external id"#
                    }
                };
                format!(
                    r#"type = "http"
base_url = "{url}"
{mode}
auth = {{ type = "bearer", token = "${{{token}_DESTINATION_TOKEN}}" }}
concurrency = 4
# rate_limit = 10                     # requests/s to this API, below what its documentation allows:
#                                     #   spaced instead of refused with 429s"#
                )
            }
            Destination::Postgres(url) => {
                let mut shown = url.to_string();
                if let Some(password) = url.password() {
                    shown = shown.replacen(
                        &format!(":{password}@"),
                        &format!(":${{{token}_DATABASE_PASSWORD}}@"),
                        1,
                    );
                }
                format!(
                    r#"type = "postgres"
# a password as ${{VARIABLE}}: secrets come from the environment
url = "{shown}"
# schema = "public"                   # made with the table when missing
{table}"#
                )
            }
            Destination::Sqlite(path) => format!(
                r#"type = "sqlite"
# the database file, relative to this file
path = "{path}"
{table}"#
            ),
            Destination::JsonLines(path) => format!(
                r#"type = "jsonl"
# one record per line, by external id; relative to this file
file = "{path}""#
            ),
        }
    }
}

fn missing(flag: &str) -> CliError {
    CliError::Usage(format!(
        "init: {flag} is needed when nothing can be asked (not on a terminal); nothing was written"
    ))
}

fn value(
    given: Option<String>,
    terminal: bool,
    question: &str,
    flag: &str,
) -> Result<String, CliError> {
    match given {
        Some(value) => Ok(value),
        None if terminal => ask(question),
        None => Err(missing(flag)),
    }
}

fn ask(question: &str) -> Result<String, CliError> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question}: ");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
    Ok(answer.trim().to_owned())
}

fn url(text: &str, flag: &str) -> Result<String, CliError> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.trim_end_matches('/').to_owned())
        }
        _ => Err(CliError::Usage(format!(
            "{flag} {text:?}: expected an http(s) URL like https://api.example.com"
        ))),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn config(name: &str, source: &str, source_path: &str, destination: &Destination) -> String {
    let token = name.to_ascii_uppercase().replace('-', "_");
    let destination = destination.table(name, &token);
    format!(
        r#"# highwater: one source stream → mapping → one destination, checkpointed.
# `highwater validate` checks this file; `highwater probe {name}` reads the
# source's first pages and says which key to change. README lists every key.

[state]
path = ".highwater/state.db"          # relative to this file

[[sync]]
name = "{name}"

[sync.source]
base_url = "{source}"
path = "{source_path}"
auth = {{ type = "bearer", token = "${{{token}_SOURCE_TOKEN}}" }}   # secrets come from the environment
records_path = "data"                 # where the records array is in each answer
id_field = "id"
updated_at_field = "updated_at"       # RFC 3339; or set time_format = "epoch_millis"
# version_field = "version"           # when records carry one: versions beat timestamps
page_size = 100
page_size_param = "limit"
lower_bound_param = "updated_after"   # how the API takes the window; without it every run reads everything
upper_bound_param = "updated_before"
lookback = "5m"                       # each run overlaps the last, for late updates
# rate_limit = 10                     # requests/s to this API, below what its documentation allows
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}
# or {{ style = "next_url", next_url_path = "links.next" }}, {{ style = "next_url", link_header = true }},
#    {{ style = "keyset", updated_param = "updated_after", id_param = "after_id" }},
#    {{ style = "offset", offset_param = "offset" }}, {{ style = "page", page_param = "page" }}

[sync.mapping]
external_id = "{{id}}"                  # the destination's key for a record, from its fields
fields = {{ name = "name", email = "email" }}   # destination field = source field path
# required = {{ email = "string" }}     # records without them are dead-lettered, not written

[sync.destination]
{destination}

[sync.budgets]
max_runtime = "30m"
"#
    )
}
