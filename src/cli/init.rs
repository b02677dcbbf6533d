//! `highwater init`: writes a commented `highwater.toml` for one sync, from the
//! source and destination URLs and the write mode — asked for on a terminal, taken
//! from flags elsewhere (missing ones are bad input, nothing asked). The file
//! passes `validate` as written; its comments say what to adjust, and `probe`
//! checks it against the source. An existing file is kept unless `--force`.

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
    /// The destination API's base URL, e.g. https://crm.example.com.
    #[arg(long)]
    destination_url: Option<String>,
    /// How records are written.
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
        "destination API base URL",
        "--destination-url",
    )?;
    let source = url(&source, "--source-url")?;
    let destination = url(&destination, "--destination-url")?;
    let mode = match args.mode {
        Some(mode) => mode,
        None if terminal => {
            let answer = ask("write mode (put, post or lookup)")?;
            Mode::from_str(answer.trim(), true).map_err(|_| {
                CliError::Usage(format!(
                    "write mode: expected put, post or lookup, got {answer:?}"
                ))
            })?
        }
        None => return Err(missing("--mode")),
    };
    if !valid_name(&args.name) {
        return Err(CliError::Usage(format!(
            "--name {:?}: use letters, digits, '_' and '-'",
            args.name
        )));
    }
    let text = config(&args.name, &source, &args.source_path, &destination, mode);
    std::fs::write(path, text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    print(format_args!(
        "wrote {}: sync {:?}, {} mode\nnext: set the tokens it names in the environment, `highwater probe {}` to check it against the source, then `highwater run {}`",
        path.display(),
        args.name,
        mode.to_possible_value()
            .map_or_else(|| "?".to_owned(), |v| v.get_name().to_owned()),
        args.name,
        args.name,
    ))?;
    Ok(Exit::Complete)
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

fn config(name: &str, source: &str, source_path: &str, destination: &str, mode: Mode) -> String {
    let token = name.to_ascii_uppercase().replace('-', "_");
    let destination_mode = match mode {
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
    };
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
pagination = {{ style = "cursor", token_path = "next_cursor", token_param = "cursor" }}
# or {{ style = "next_url", next_url_path = "links.next" }}, {{ style = "next_url", link_header = true }},
#    {{ style = "keyset", updated_param = "updated_after", id_param = "after_id" }},
#    {{ style = "offset", offset_param = "offset" }}, {{ style = "page", page_param = "page" }}

[sync.mapping]
external_id = "{{id}}"                  # the destination's key for a record, from its fields
fields = {{ name = "name", email = "email" }}   # destination field = source field path
# required = {{ email = "string" }}     # records without them are dead-lettered, not written

[sync.destination]
type = "http"
base_url = "{destination}"
{destination_mode}
auth = {{ type = "bearer", token = "${{{token}_DESTINATION_TOKEN}}" }}
concurrency = 4

[sync.budgets]
max_runtime = "30m"
"#
    )
}
