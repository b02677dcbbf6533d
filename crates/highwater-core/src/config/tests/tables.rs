//! `type = "sqlite"` and `type = "postgres"`: the table, its columns planned
//! from the mapping, and every mistake named by line and key.

use super::*;
use crate::sink::table::{ColumnType, Layout};

/// `VALID` with its destination replaced by `table`.
fn with_destination(table: &str) -> String {
    let start = VALID.find("[sync.destination]").unwrap_or(0);
    let end = VALID.find("[sync.retry]").unwrap_or(VALID.len());
    format!("{}{table}\n{}", &VALID[..start], &VALID[end..])
}

fn env_with_url(name: &str) -> Option<String> {
    match name {
        "PG_PASSWORD" => Some("pw".into()),
        _ => env(name),
    }
}

fn table_errors(table: &str) -> String {
    match parse(
        &with_destination(table),
        Path::new("conf/hw.toml"),
        &env_with_url,
    ) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

fn destination(table: &str) -> DestinationSpec {
    let config = parse(
        &with_destination(table),
        Path::new("conf/hw.toml"),
        &env_with_url,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    config.syncs[0].destination.clone()
}

#[test]
fn a_sqlite_table_gets_a_column_per_mapped_field() {
    let DestinationSpec::Sqlite(spec) = destination(
        r#"[sync.destination]
type = "sqlite"
path = "out/crm.db"
table = "contacts"
"#,
    ) else {
        panic!("not sqlite");
    };
    assert_eq!(spec.path, Path::new("conf/out/crm.db"));
    assert!(!spec.shares_state);
    let table = spec.table;
    assert_eq!(
        (
            table.table.as_str(),
            table.key_column.as_str(),
            table.version_column.as_str()
        ),
        ("contacts", "external_id", "version")
    );
    assert!(table.create_table && table.evolve);
    let Layout::Columns(columns) = table.layout else {
        panic!("not columns");
    };
    let columns: Vec<(&str, ColumnType)> =
        columns.iter().map(|c| (c.name.as_str(), c.kind)).collect();
    // `email` is required a string; `contact.name` is nested: a JSON column;
    // the constant `origin` has no type: JSON.
    assert_eq!(
        columns,
        [
            ("contact", ColumnType::Json),
            ("email", ColumnType::Text),
            ("origin", ColumnType::Json)
        ]
    );
}

#[test]
fn a_postgres_table_reads_its_url_from_the_environment_and_keeps_it_secret() {
    let DestinationSpec::Postgres(spec) = destination(
        r#"[sync.destination]
type = "postgres"
url = "postgres://hw:${PG_PASSWORD}@db.internal:5432/crm"
schema = "sales"
table = "contacts"
key_column = "id"
version_column = "row_version"
layout = "json"
payload_column = "body"
create_table = false
evolve = false
batch_size = 250
concurrency = 4
"#,
    ) else {
        panic!("not postgres");
    };
    assert_eq!(spec.url.expose(), "postgres://hw:pw@db.internal:5432/crm");
    assert!(!format!("{spec:?}").contains("pw@"));
    let t = spec.table;
    assert_eq!(t.schema.as_deref(), Some("sales"));
    assert_eq!(
        t.layout,
        Layout::Json {
            payload_column: "body".into()
        }
    );
    assert_eq!(
        (t.batch_size, t.concurrency, t.create_table, t.evolve),
        (250, 4, false, false)
    );
}

#[test]
fn a_sqlite_table_in_the_state_store_s_file_shares_its_transactions() {
    for path in ["state/hw.db", "./state/hw.db"] {
        let DestinationSpec::Sqlite(spec) = destination(&format!(
            "[sync.destination]\ntype = \"sqlite\"\npath = \"{path}\"\ntable = \"t\"\n"
        )) else {
            panic!("not sqlite");
        };
        assert!(spec.shares_state, "{path}");
    }
}

/// A PostgreSQL table in the state store's database, reached as the same
/// user, shares the run's transactions; its writes then take turns, and so
/// do its runs. Another database, host or user does not.
#[test]
fn a_postgres_table_in_the_state_store_s_database_shares_its_transactions() {
    let state = "postgres://hw:${PG_PASSWORD}@db.internal:5432/crm";
    let cases = [
        ("postgres://hw:${PG_PASSWORD}@db.internal:5432/crm", true),
        (
            "postgres://hw:${PG_PASSWORD}@db.internal/crm?sslmode=disable",
            true,
        ),
        ("postgres://hw:${PG_PASSWORD}@db.internal:5432/sales", false),
        ("postgres://hw:${PG_PASSWORD}@db2.internal:5432/crm", false),
        (
            "postgres://loader:${PG_PASSWORD}@db.internal:5432/crm",
            false,
        ),
    ];
    for (url, shares) in cases {
        let text = with_destination(&format!(
            "[sync.destination]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"t\"\nconcurrency = 4\n"
        ))
        .replace(
            "[state]\npath = \"state/hw.db\"",
            &format!("[state]\nurl = \"{state}\""),
        );
        let config = parse(&text, Path::new("conf/hw.toml"), &env_with_url)
            .unwrap_or_else(|e| panic!("{e}"));
        let destination = &config.syncs[0].destination;
        let DestinationSpec::Postgres(spec) = destination else {
            panic!("not postgres");
        };
        assert_eq!(spec.shares_state, shares, "{url}");
        assert_eq!(spec.table.concurrency, if shares { 1 } else { 4 }, "{url}");
        assert_eq!(destination.takes_concurrent_runs(), !shares, "{url}");
    }
}

#[test]
fn table_mistakes_name_line_and_key() {
    let cases = [
        "[sync.destination]\ntype = \"sqlite\"\ntable = \"t\"\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"my \\\"table\\\"\"\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\nlayout = \"rows\"\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\nkey_column = \"email\"\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\npayload_column = \"p\"\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\nconcurrency = 2\n",
        "[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\nbatch_size = 0\n",
        "[sync.destination]\ntype = \"postgres\"\ntable = \"t\"\n",
        "[sync.destination]\ntype = \"postgres\"\nurl = \"mysql://h/db\"\ntable = \"t\"\n",
        "[sync.destination]\ntype = \"postgres\"\nurl = \"postgres://u:${NOPE}@h/db\"\ntable = \"t\"\n",
        "[sync.destination]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nschema = \"a\\u0007b\"\n",
        "[sync.destination]\ntype = \"postgres\"\nurl = \"postgres://h/db\"\ntable = \"t\"\nlayout = \"json\"\npayload_column = \"version\"\n",
        "[sync.destination]\ntype = \"mysql\"\n",
    ];
    let all: Vec<String> = cases.iter().map(|c| table_errors(c)).collect();
    expect![[r#"
        conf/hw.toml:33: sync "invoices_to_crm".destination: type = "sqlite" needs `path`, the database file
        conf/hw.toml:33: sync "invoices_to_crm".destination: a table destination needs `table`
        conf/hw.toml:36: sync "invoices_to_crm".destination.table: expected a name of 1 to 63 bytes, without `"` or control characters
        conf/hw.toml:37: sync "invoices_to_crm".destination.layout: expected "columns" (a column per mapped field) or "json" (the whole payload in one column)
        conf/hw.toml:33: sync "invoices_to_crm".destination.key_column: the mapping writes a field `email`, which is the column holding the record's external id: rename the field, or set `key_column`
        conf/hw.toml:37: sync "invoices_to_crm".destination.payload_column: only with layout = "json"
        conf/hw.toml:37: sync "invoices_to_crm".destination.concurrency: unknown key `concurrency`, expected one of `type`, `path`, `table`, `key_column`, `version_column`, `layout`, `payload_column`, `create_table`, `evolve`, `batch_size`
        conf/hw.toml:37: sync "invoices_to_crm".destination.batch_size: expected a whole number from 1 to 10000
        conf/hw.toml:33: sync "invoices_to_crm".destination: type = "postgres" needs `url`, like "postgres://user:${PGPASSWORD}@host/database"
        conf/hw.toml:35: sync "invoices_to_crm".destination.url: expected a PostgreSQL URL, like "postgres://user:${PGPASSWORD}@host:5432/database"
        conf/hw.toml:35: sync "invoices_to_crm".destination.url: environment variable NOPE is not set
        conf/hw.toml:37: sync "invoices_to_crm".destination.schema: expected a name of 1 to 63 bytes, without `"` or control characters
        conf/hw.toml:38: sync "invoices_to_crm".destination.payload_column: must differ from the key and version columns
        conf/hw.toml:34: sync "invoices_to_crm".destination.type: expected "http", "jsonl", "sqlite" or "postgres""#]].assert_eq(&all.join("\n"));
}

#[test]
fn a_mapped_field_named_like_the_version_column_is_refused_until_renamed() {
    let text =
        with_destination("[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\n")
            .replace("origin = \"billing\"", "version = 1");
    let errors = match parse(&text, Path::new("conf/hw.toml"), &env_with_url) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    };
    expect![[r#"conf/hw.toml:33: sync "invoices_to_crm".destination.version_column: the mapping writes a field `version`, which is the column holding the record's version: rename the field, or set `version_column`"#]].assert_eq(&errors);
    let renamed = text.replace(
        "table = \"t\"",
        "table = \"t\"\nversion_column = \"hw_version\"",
    );
    assert!(parse(&renamed, Path::new("conf/hw.toml"), &env_with_url).is_ok());
}

#[test]
fn a_soft_delete_field_gets_its_column_typed_by_its_value() {
    let text = format!(
        "{}[sync.deletes]\nmarker_field = \"deleted\"\nsoft_delete = {{ deleted = true }}\n",
        with_destination("[sync.destination]\ntype = \"sqlite\"\npath = \"x.db\"\ntable = \"t\"\n")
    );
    let config =
        parse(&text, Path::new("conf/hw.toml"), &env_with_url).unwrap_or_else(|e| panic!("{e}"));
    let DestinationSpec::Sqlite(spec) = &config.syncs[0].destination else {
        panic!("not sqlite");
    };
    let Layout::Columns(columns) = &spec.table.layout else {
        panic!("not columns");
    };
    assert!(
        columns
            .iter()
            .any(|c| c.name == "deleted" && c.kind == ColumnType::Boolean)
    );
}

/// An owner's table named as the database takes names quoted: spaces,
/// capitals, `-`, a reserved word, for the table, its schema, key and version
/// columns and the mapped fields' columns.
#[test]
fn a_table_s_names_are_any_the_database_takes_quoted() {
    let text = with_destination(
        r#"[sync.destination]
type = "postgres"
url = "postgres://hw:${PG_PASSWORD}@db/crm"
schema = "CRM"
table = "Contact List"
key_column = "External Id"
version_column = "Row Version"
"#,
    )
    .replace(
        r#"fields = { email = "customer.email", "contact.name" = "customer.name" }"#,
        r#"fields = { "e-mail" = "customer.email", "Full Name" = "customer.name", select = "id" }"#,
    );
    let config =
        parse(&text, Path::new("conf/hw.toml"), &env_with_url).unwrap_or_else(|e| panic!("{e}"));
    let DestinationSpec::Postgres(spec) = &config.syncs[0].destination else {
        panic!("not postgres");
    };
    let table = &spec.table;
    assert_eq!(
        (
            table.schema.as_deref(),
            table.table.as_str(),
            table.key_column.as_str(),
            table.version_column.as_str()
        ),
        (Some("CRM"), "Contact List", "External Id", "Row Version")
    );
    let Layout::Columns(columns) = &table.layout else {
        panic!("columns");
    };
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert!(
        ["e-mail", "Full Name", "select"]
            .iter()
            .all(|n| names.contains(n)),
        "{names:?}"
    );
}
