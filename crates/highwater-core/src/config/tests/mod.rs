use std::path::Path;

use expect_test::{Expect, expect};

use super::*;

const VALID: &str = r#"
[state]
path = "state/hw.db"

[[sync]]
name = "invoices_to_crm"

[sync.source]
base_url = "https://billing.example.com"
path = "/v1/invoices"
params = { status = "all" }
headers = { "X-Api-Version" = "2024-01" }
records_path = "data"
version_field = "version"
page_size = 500
lag = "1m"
lookback = "10m"
start = "2026-01-01T00:00:00Z"
lower_bound_param = "updated_after"
upper_bound_param = "updated_before"
auth = { type = "bearer", token = "${BILLING_TOKEN}" }

[sync.source.pagination]
style = "cursor"
token_path = "next_cursor"

[sync.mapping]
external_id = "inv-{id}"
fields = { email = "customer.email", "contact.name" = "customer.name" }
constants = { origin = "billing" }
required = { email = "string" }

[sync.destination]
type = "http"
base_url = "https://crm.example.com"
mode = "lookup"
lookup_path = "/v1/contacts"
lookup_param = "external_id"
create_path = "/v1/contacts"
update_path = "/v1/contacts/{dest_id}"
external_id_field = "external_id"
auth = { type = "oauth2", token_url = "https://crm.example.com/oauth/token", client_id = "hw", client_secret = "${CRM_SECRET}" }

[sync.retry]
base = "100ms"
cap = "10s"
max_attempts = 5
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "BILLING_TOKEN" => Some("tok-123".into()),
        "CRM_SECRET" => Some("s3cret".into()),
        _ => None,
    }
}

fn errors(text: &str) -> String {
    match parse(text, Path::new("hw.toml"), &env) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

fn check(text: &str, expected: Expect) {
    expected.assert_eq(&errors(text));
}

#[test]
fn a_full_config_validates_into_a_spec() {
    let config = parse(VALID, Path::new("conf/hw.toml"), &env).expect("valid config");
    assert_eq!(
        config.state.store.file(),
        Some(Path::new("conf/state/hw.db"))
    );
    assert_eq!(config.state.merge_rows, DEFAULT_MERGE_ROWS);
    let sync = config.sync("invoices_to_crm").expect("sync");
    assert_eq!(sync.source.page_size, 500);
    assert_eq!(sync.source.lag, Duration::from_secs(60));
    assert!(
        matches!(sync.source.http.auth, AuthSpec::Bearer { ref token, .. } if token.expose() == "tok-123")
    );
    assert!(
        matches!(&sync.destination, DestinationSpec::Http(d) if d.mode.name() == "lookup" && d.concurrency == 8)
    );
    assert_eq!(sync.retry.max_attempts, 5);
    assert_eq!(sync.mapping.fields.len(), 2);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = parse(VALID, Path::new("hw.toml"), &env).expect("valid config");
    let dump = format!("{config:?}");
    assert!(
        !dump.contains("tok-123") && !dump.contains("s3cret"),
        "{dump}"
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    check(
        &VALID.replace("page_size = 500", "page_size = 500\npage_sise = 5"),
        expect![[
            r#"hw.toml:16: sync "invoices_to_crm".source.page_sise: unknown key `page_sise`, expected one of `base_url`, `path`, `params`, `body`, `body_params_path`, `page_params_in`, `headers`, `auth`, `timeout`, `rate_limit`, `rate_limit_probe`, `error_path`, `transient_errors`, `records_path`, `id_field`, `updated_at_field`, `version_field`, `time_format`, `timezone`, `page_size`, `page_size_param`, `start`, `lag`, `lookback`, `lower_bound_param`, `upper_bound_param`, `lower_bound_exclusive`, `upper_bound_exclusive`, `sorted`, `end_of_list_errors`, `pagination`"#
        ]],
    );
}

#[test]
fn missing_env_var_names_the_variable_not_a_value() {
    check(
        &VALID.replace("${CRM_SECRET}", "${CRM_SECRETS}"),
        expect![[
            r#"hw.toml:42: sync "invoices_to_crm".destination.auth.client_secret: environment variable CRM_SECRETS is not set"#
        ]],
    );
}

#[test]
fn the_state_alone_is_read_without_the_syncs_values_or_secrets() {
    let no_env = |_: &str| None;
    // Neither secret set, and a sync value wrong: the store and names stand.
    let text = VALID.replace("page_size = 500", "page_size = 0");
    let state = parse_state(&text, Path::new("conf/hw.toml"), &no_env).expect("state");
    assert_eq!(
        state.state.store.file(),
        Some(Path::new("conf/state/hw.db"))
    );
    assert_eq!(state.syncs, ["invoices_to_crm"]);
    let state_errors = |text: &str| match parse_state(text, Path::new("hw.toml"), &no_env) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    // The file's shape, the store's values and the names are still checked.
    expect![[r#"hw.toml:15: sync "invoices_to_crm".source.page_sise: unknown key `page_sise`, expected one of `base_url`, `path`, `params`, `body`, `body_params_path`, `page_params_in`, `headers`, `auth`, `timeout`, `rate_limit`, `rate_limit_probe`, `error_path`, `transient_errors`, `records_path`, `id_field`, `updated_at_field`, `version_field`, `time_format`, `timezone`, `page_size`, `page_size_param`, `start`, `lag`, `lookback`, `lower_bound_param`, `upper_bound_param`, `lower_bound_exclusive`, `upper_bound_exclusive`, `sorted`, `end_of_list_errors`, `pagination`"#]]
    .assert_eq(&state_errors(&VALID.replace("page_size = 500", "page_sise = 5")));
    expect![[r#"hw.toml:3: state.path: environment variable STATE_DIR is not set"#]].assert_eq(
        &state_errors(&VALID.replace("state/hw.db", "${STATE_DIR}/hw.db")),
    );
    let twice = format!(
        "{VALID}{}",
        &VALID[VALID.find("[[sync]]").expect("a sync")..]
    );
    expect![[
        r#"hw.toml:49: sync.name: sync "invoices_to_crm" is defined twice (first at line 5)"#
    ]]
    .assert_eq(&state_errors(&twice));
}

#[test]
fn invalid_toml_names_the_line() {
    check(
        "[[sync]]\nname = \"a\"\n[sync.source\n",
        expect![[r#"hw.toml:3: invalid TOML: unclosed table, expected `]`"#]],
    );
}

#[test]
fn keys_of_another_style_or_mode_are_errors() {
    check(
        &VALID
            .replace(
                "token_path = \"next_cursor\"",
                "token_path = \"n\"\noverlap = 3",
            )
            .replace("update_method", "x_update_method")
            .replace(
                "lookup_param = \"external_id\"",
                "lookup_param = \"external_id\"\npath = \"/v1/x\"",
            ),
        expect![[r#"
            hw.toml:26: sync "invoices_to_crm".source.pagination.overlap: does not apply to style = "cursor" (it takes: token_path, token_param, token_field, more_path, end_path)
            hw.toml:40: sync "invoices_to_crm".destination.path: does not apply to mode = "lookup" (it takes: lookup_path, lookup_param, lookup_results_path, lookup_body, create_path, update_path, update_method)"#]],
    );
}

#[test]
fn keys_of_the_wrong_type_or_unknown_are_all_reported_at_once() {
    check(
        &VALID
            .replace("lookback = \"10m\"", "lookback = 10")
            .replace("page_size = 500", "page_size = \"500\"")
            .replace(
                "name = \"invoices_to_crm\"",
                "name = \"invoices_to_crm\"\ncolour = \"blue\"",
            ),
        expect![[r#"
            hw.toml:7: sync "invoices_to_crm".colour: unknown key `colour`, expected one of `name`, `source`, `mapping`, `destination`, `retry`, `budgets`, `deletes`, `alerts`, `schedule`
            hw.toml:16: sync "invoices_to_crm".source.page_size: invalid type: string "500", expected an integer
            hw.toml:18: sync "invoices_to_crm".source.lookback: invalid type: integer `10`, expected a string"#]],
    );
    // A required key of the wrong type is named once, not again as missing.
    check(
        &VALID.replace("name = \"invoices_to_crm\"", "name = 7"),
        expect!["hw.toml:6: sync[0].name: invalid type: integer `7`, expected a string"],
    );
}

#[test]
fn an_offset_in_a_parameter_is_an_offset_walk_s_alone() {
    let query = "params = { query = \"SELECT * STARTPOSITION {offset} MAXRESULTS 500\" }";
    let with_query = VALID.replace("params = { status = \"all\" }", query);
    check(
        &with_query,
        expect![[
            r#"hw.toml:11: sync "invoices_to_crm".source.params.query: {offset} takes the position of style = "offset" pagination, not of "cursor""#
        ]],
    );
    let offset = with_query.replace(
        "style = \"cursor\"\ntoken_path = \"next_cursor\"",
        "style = \"offset\"\noffset_param = \"start\"\nfirst_offset = 1",
    );
    check(
        &offset,
        expect![[
            r#"hw.toml:25: sync "invoices_to_crm".source.pagination.offset_param: the position goes into `query` ({offset}): leave out offset_param"#
        ]],
    );
}

#[test]
fn pages_asked_for_by_offset_need_their_size_sent() {
    let by_offset = VALID.replace(
        "style = \"cursor\"\ntoken_path = \"next_cursor\"",
        "style = \"page\"\noffset_param = \"offset\"\nmore_path = \"hasMore\"",
    );
    let config = parse(&by_offset, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            &config.syncs[0].source.pagination,
            Pagination::Page { page_param, by_offset: true, first_page: 1, more_path: Some(more), .. }
                if page_param == "offset" && more.to_string() == "hasMore"
        ),
        "{:?}",
        config.syncs[0].source.pagination
    );
    check(
        &by_offset.replace("page_size = 500", "page_size = 500\npage_size_param = \"\""),
        expect![[
            r#"hw.toml:16: sync "invoices_to_crm".source.page_size_param: pages asked for by offset count page_size records a page, so the API must be sent page_size: name its parameter"#
        ]],
    );
    check(
        &by_offset.replace("offset_param", "page_param = \"p\"\noffset_param"),
        expect![[
            r#"hw.toml:26: sync "invoices_to_crm".source.pagination.offset_param: a page is asked for by its number (`page_param`) or by the offset of its first record (`offset_param`), not both"#
        ]],
    );
}

#[test]
fn end_of_list_errors_are_read_by_the_walks_that_ask_past_the_end() {
    let words = "end_of_list_errors = [\"rest_post_invalid_page_number\"]\npage_size = 500";
    let paged = VALID
        .replace(
            "style = \"cursor\"\ntoken_path = \"next_cursor\"",
            "style = \"page\"",
        )
        .replace("page_size = 500", words);
    let config = parse(&paged, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.syncs[0].source.end_of_list_errors,
        ["rest_post_invalid_page_number"]
    );
    check(
        &VALID.replace("page_size = 500", words),
        expect![[
            r#"hw.toml:15: sync "invoices_to_crm".source.end_of_list_errors: is read only with offset or page pagination, which ask for a position past the last themselves; style = "cursor" follows what the API gives"#
        ]],
    );
    check(
        &paged.replace("[\"rest_post_invalid_page_number\"]", "[\" \"]"),
        expect![[
            r#"hw.toml:15: sync "invoices_to_crm".source.end_of_list_errors: an empty entry would match every reason"#
        ]],
    );
}

#[test]
fn bad_values_are_all_reported_at_once() {
    check(
        &VALID
            .replace("lag = \"1m\"", "lag = \"soon\"")
            .replace("style = \"cursor\"", "style = \"cursr\"")
            .replace("max_attempts = 5", "max_attempts = 0"),
        expect![[r#"
            hw.toml:16: sync "invoices_to_crm".source.lag: expected a duration like "500ms", "30s", "5m" or "1h"
            hw.toml:24: sync "invoices_to_crm".source.pagination.style: expected one of "cursor", "next_url", "keyset", "offset", "page"
            hw.toml:47: sync "invoices_to_crm".retry.max_attempts: expected a whole number from 1 to 100"#]],
    );
}

#[test]
fn a_destination_path_on_another_origin_is_refused() {
    let with = |update_path: &str| {
        VALID.replace(
            "update_path = \"/v1/contacts/{dest_id}\"",
            &format!("update_path = \"{update_path}\""),
        )
    };
    check(
        &with("https://crm.example.com/v1/contacts/{dest_id}"),
        expect!["ok"],
    );
    check(
        &with("http://127.0.0.1:18412/v1/contacts/{dest_id}"),
        expect![[
            r#"hw.toml:40: sync "invoices_to_crm".destination.update_path: is a URL on another origin than base_url: the destination's credentials go to base_url's origin alone"#
        ]],
    );
}

#[test]
fn transient_errors_are_words_a_refusal_names() {
    let with = |words: &str| {
        VALID.replace(
            "update_path = \"/v1/contacts/{dest_id}\"",
            &format!("update_path = \"/v1/contacts/{{dest_id}}\"\ntransient_errors = {words}"),
        )
    };
    let config =
        parse(&with("[\"conflict_error\"]"), Path::new("hw.toml"), &env).expect("valid config");
    let DestinationSpec::Http(http) = &config.syncs[0].destination else {
        unreachable!("an HTTP destination")
    };
    assert_eq!(http.http.transient_errors, ["conflict_error"]);
    check(
        &with("[\"conflict_error\", \"\"]"),
        expect![[
            r#"hw.toml:41: sync "invoices_to_crm".destination.transient_errors: an empty entry would match every reason"#
        ]],
    );
}

#[test]
fn oauth2_takes_a_refresh_token_and_an_api_s_own_scheme() {
    let oauth = "auth = { type = \"oauth2\", token_url = \"https://crm.example.com/oauth/token\", client_id = \"hw\", client_secret = \"${CRM_SECRET}\" }";
    let with = |extra: &str| VALID.replace(oauth, &oauth.replace(" }", &format!(", {extra} }}")));
    let config = parse(
        &with("refresh_token = \"r-1\", scheme = \"Zoho-oauthtoken\""),
        Path::new("hw.toml"),
        &env,
    )
    .expect("valid config");
    let DestinationSpec::Http(http) = &config.syncs[0].destination else {
        unreachable!("an HTTP destination")
    };
    assert!(
        matches!(
            &http.http.auth,
            AuthSpec::OAuth2 { refresh_token: Some(token), scheme, .. }
                if token.expose() == "r-1" && scheme == "Zoho-oauthtoken"
        ),
        "{:?}",
        http.http.auth
    );
    check(
        &with("scheme = \"Zoho oauthtoken\""),
        expect![[
            r#"hw.toml:42: sync "invoices_to_crm".destination.auth.scheme: expected one word, the Authorization header's scheme (Bearer, Zoho-oauthtoken)"#
        ]],
    );
}

#[test]
fn write_only_fields_are_fields_the_mapping_writes() {
    let with = |list: &str| {
        VALID.replace(
            "required = { email = \"string\" }",
            &format!("required = {{ email = \"string\" }}\nwrite_only = {list}"),
        )
    };
    let config = parse(
        &with(r#"["origin", "contact.name"]"#),
        Path::new("hw.toml"),
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = config.syncs[0]
        .mapping
        .write_only
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["origin", "contact.name"]);
    check(
        &with(r#"["status_if_new"]"#),
        expect![[
            r#"hw.toml:32: sync "invoices_to_crm".mapping.write_only: "status_if_new" is not a field the mapping writes (a key of `fields` or `constants`)"#
        ]],
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    check(
        "[[sync]]\nname = \"a\"\n[sync.source]\nbase_url = \"http://x\"\npagination = { style = \"keyset\" }\n[sync.destination]\ntype = \"http\"\nbase_url = \"http://y\"\nmode = \"put\"\n",
        expect![[r#"
            hw.toml:5: sync "a".source.pagination: style = "keyset" needs `updated_param` and `id_param` (the query parameters that take the last record's updated_at and id)
            hw.toml:6: sync "a".destination: mode = "put" needs `path`"#]],
    );
}

#[test]
fn a_missing_file_says_how_to_fix_it() {
    let err = load(Path::new("does/not/exist.toml")).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "does/not/exist.toml: config file not found (create it, or pass --config PATH)"
    );
}

#[test]
fn interpolation_handles_escapes_and_reports_bad_syntax() {
    assert_eq!(
        interpolate("a$${B}${BILLING_TOKEN}", &env),
        Ok("a${B}tok-123".into())
    );
    assert_eq!(interpolate("cost $5", &env), Ok("cost $5".into()));
    assert!(interpolate("${UNSET", &env).is_err());
}

#[test]
fn templates_split_into_literals_and_fields() {
    let t = parse_template("inv-{customer.id}-x").expect("template");
    assert_eq!(t.parts.len(), 3);
    assert!(parse_template("{}").is_err());
}

#[test]
fn overlap_must_leave_room_for_new_records() {
    let text = VALID.replace("page_size = 500", "page_size = 10").replace(
        "style = \"cursor\"\ntoken_path = \"next_cursor\"",
        "style = \"offset\"\noverlap = 10",
    );
    check(
        &text,
        expect![[
            r#"hw.toml:23: sync "invoices_to_crm".source.pagination.overlap: must be smaller than page_size (10): each page re-reads `overlap` records"#
        ]],
    );
}

#[test]
fn merge_rows_is_a_bounded_count() {
    let with = |rows: &str| {
        VALID.replace(
            "path = \"state/hw.db\"",
            &format!("path = \"state/hw.db\"\nmerge_rows = {rows}"),
        )
    };
    let config = parse(&with("1000"), Path::new("hw.toml"), &env).expect("valid config");
    assert_eq!(config.state.merge_rows, 1000);
    check(
        &with("10"),
        expect!["hw.toml:4: state.merge_rows: expected a whole number from 500 to 10000000"],
    );
}

/// A key an earlier release read is still accepted, with a warning that it
/// does nothing, so that a config written for it keeps running.
#[test]
fn first_run_ids_is_accepted_with_a_warning() {
    let text = VALID.replace(
        "path = \"state/hw.db\"",
        "path = \"state/hw.db\"\nfirst_run_ids = 1000",
    );
    expect!["hw.toml:4: state.first_run_ids: no longer has an effect: every run looks its ids up in the ledger; remove it"].assert_eq(&warnings(&text));
}

#[test]
fn a_jsonl_files_compaction_bound_is_a_bounded_count() {
    let with = |extra: &str| {
        VALID[..VALID.find("[sync.destination]").unwrap_or(0)].to_owned()
            + "[sync.destination]\ntype = \"jsonl\"\nfile = \"out.jsonl\"\n"
            + extra
    };
    let compact_lines = |text: &str| {
        let config = parse(text, Path::new("hw.toml"), &env).expect("valid config");
        match &config.syncs[0].destination {
            DestinationSpec::JsonLines(spec) => spec.compact_lines,
            other => unreachable!("a jsonl destination, not {other:?}"),
        }
    };
    assert_eq!(compact_lines(&with("")), crate::sink::jsonl::COMPACT_LINES);
    assert_eq!(compact_lines(&with("compact_lines = 5000\n")), 5000);
    check(
        &with("compact_lines = 10\n"),
        expect![[
            r#"hw.toml:36: sync "invoices_to_crm".destination.compact_lines: expected a whole number from 100 to 10000000"#
        ]],
    );
}

#[test]
fn record_events_are_kept_thirty_days_unless_told_otherwise() {
    let with = |retention: &str| {
        VALID.replace(
            "path = \"state/hw.db\"",
            &format!("path = \"state/hw.db\"\nevent_retention = \"{retention}\""),
        )
    };
    let days = |n: u64| std::time::Duration::from_secs(n * 24 * 3600);
    let config = parse(VALID, Path::new("hw.toml"), &env).expect("valid config");
    assert_eq!(config.state.event_retention, days(30));
    for (text, expected) in [
        ("7d", days(7)),
        ("2w", days(14)),
        ("36h", days(1) * 3 / 2),
        ("0s", days(0)),
    ] {
        let config = parse(&with(text), Path::new("hw.toml"), &env).expect("valid config");
        assert_eq!(config.state.event_retention, expected, "{text}");
    }
    check(
        &with("-1d"),
        expect![[
            r#"hw.toml:4: state.event_retention: expected a duration like "30d", "12h" or "2w" ("0s" keeps none)"#
        ]],
    );
    check(
        &with("a month"),
        expect![[
            r#"hw.toml:4: state.event_retention: expected a duration like "30d", "12h" or "2w" ("0s" keeps none)"#
        ]],
    );
}

#[test]
fn lookup_and_post_need_the_external_id_field() {
    let without = VALID.replace("external_id_field = \"external_id\"\n", "");
    check(
        &without,
        expect![[
            r#"hw.toml:33: sync "invoices_to_crm".destination: mode = "lookup" needs `external_id_field` (the field of a destination object that holds the external id)"#
        ]],
    );
    let post = without
        .replace(
            "mode = \"lookup\"\nlookup_path = \"/v1/contacts\"\nlookup_param = \"external_id\"\ncreate_path = \"/v1/contacts\"\nupdate_path = \"/v1/contacts/{dest_id}\"",
            "mode = \"post\"\npath = \"/v1/contacts/upsert\"",
        );
    check(
        &post,
        expect![[
            r#"hw.toml:33: sync "invoices_to_crm".destination: mode = "post" needs `external_id_field` (the field of a destination object that holds the external id)"#
        ]],
    );
}

#[test]
fn a_field_mapped_where_the_external_id_goes_is_refused() {
    check(
        &VALID.replace(
            "fields = { email = \"customer.email\"",
            "fields = { external_id = \"id\", email = \"customer.email\"",
        ),
        expect![[
            r#"hw.toml:41: sync "invoices_to_crm".destination.external_id_field: the mapping also writes `external_id`, which the external id would replace: map that value under another name, or leave it to the external id"#
        ]],
    );
}

#[test]
fn a_lookup_names_the_external_id_in_its_path_query_or_body() {
    let search = VALID.replace(
        "lookup_path = \"/v1/contacts\"\nlookup_param = \"external_id\"",
        "lookup_path = \"/v1/contacts/search\"\nlookup_body = { query = { field = \"external_id\", operator = \"=\", value = \"{external_id}\" } }",
    );
    check(&search, expect!["ok"]);
    check(
        &search.replace("\"{external_id}\" }", "\"x\" }"),
        expect![[
            r#"hw.toml:33: sync "invoices_to_crm".destination: mode = "lookup" needs `lookup_param`, {external_id} in `lookup_path`, or {external_id} in `lookup_body`"#
        ]],
    );
}

#[test]
fn reading_back_and_late_writes_are_configured_per_mode() {
    let put = VALID.replace(
        "mode = \"lookup\"\nlookup_path = \"/v1/contacts\"\nlookup_param = \"external_id\"\ncreate_path = \"/v1/contacts\"\nupdate_path = \"/v1/contacts/{dest_id}\"",
        "mode = \"put\"\npath = \"/v1/contacts/{external_id}\"\nread_path = \"/v1/contacts/{external_id}\"\nversion_header = \"X-Source-Version\"\nlate_write_window = \"45s\"",
    );
    let config = parse(&put, Path::new("hw.toml"), &env).expect("valid config");
    let DestinationSpec::Http(http) = &config.syncs[0].destination else {
        unreachable!("an HTTP destination")
    };
    assert_eq!(http.late_write_window, Duration::from_secs(45));
    assert_eq!(
        http.version_header.as_ref().map(|h| h.as_str()),
        Some("x-source-version")
    );
    assert_eq!(
        http.read.as_ref().map(|r| r.path.0.as_str()),
        Some("/v1/contacts/{external_id}")
    );
    // By default a late write is awaited for three times the timeout.
    let default = parse(VALID, Path::new("hw.toml"), &env).expect("valid config");
    let DestinationSpec::Http(http) = &default.syncs[0].destination else {
        unreachable!("an HTTP destination")
    };
    assert_eq!(http.late_write_window, http.http.timeout * 3);
    check(
        &put.replace(
            "read_path = \"/v1/contacts/{external_id}\"",
            "read_path = \"/v1/contacts\"",
        )
        .replace(
            "late_write_window = \"45s\"",
            "late_write_window = \"soon\"",
        ),
        expect![[r#"
            hw.toml:40: sync "invoices_to_crm".destination.late_write_window: expected a duration like "500ms", "30s", "5m" or "1h"
            hw.toml:38: sync "invoices_to_crm".destination.read_path: expected a path containing {external_id}"#]],
    );
    check(
        &VALID.replace(
            "update_path = \"/v1/contacts/{dest_id}\"",
            "update_path = \"/v1/contacts/{dest_id}\"\nread_path = \"/v1/contacts/{external_id}\"",
        ),
        expect![[
            r#"hw.toml:41: sync "invoices_to_crm".destination.read_path: does not apply to mode = "lookup" (it takes: lookup_path, lookup_param, lookup_results_path, lookup_body, create_path, update_path, update_method)"#
        ]],
    );
}

#[test]
fn type_errors_name_types_as_toml_does() {
    check(
        &VALID.replace("style = \"cursor\"", "style = { a = 1 }"),
        expect![[
            r#"hw.toml:24: sync "invoices_to_crm".source.pagination.style: invalid type: table, expected a string"#
        ]],
    );
    check(
        &VALID.replace("token_path = \"next_cursor\"", "token_path = [1]"),
        expect![[
            r#"hw.toml:25: sync "invoices_to_crm".source.pagination.token_path: invalid type: array, expected a string"#
        ]],
    );
    check(
        &VALID.replace(
            "auth = { type = \"bearer\", token = \"${BILLING_TOKEN}\" }",
            "auth = \"bearer\"",
        ),
        expect![[
            r#"hw.toml:21: sync "invoices_to_crm".source.auth: invalid type: string "bearer", expected a table"#
        ]],
    );
    check(
        &VALID.replace("max_attempts = 5", "max_attempts = \"5\""),
        expect![[
            r#"hw.toml:47: sync "invoices_to_crm".retry.max_attempts: invalid type: string "5", expected an integer"#
        ]],
    );
    check(
        &VALID.replace("page_size = 500", "page_size = 99999999999999999999"),
        expect![[
            "hw.toml:15: sync[0].source.page_size: integer `99999999999999999999` is out of range"
        ]],
    );
    check(
        &VALID.replace("params = { status = \"all\" }", "params = [\"all\"]"),
        expect![[
            r#"hw.toml:11: sync "invoices_to_crm".source.params: invalid type: array, expected a table"#
        ]],
    );
}

#[test]
fn a_date_where_none_is_accepted_says_so() {
    check(
        &VALID.replace(
            "start = \"2026-01-01T00:00:00Z\"",
            "start = 2026-01-01T00:00:00Z",
        ),
        expect![[
            r#"hw.toml:18: sync "invoices_to_crm".source.start: a date or time is not accepted here (in quotes it is a string)"#
        ]],
    );
    check(
        &VALID.replace(
            "constants = { origin = \"billing\" }",
            "constants = { since = 2026-01-01 }",
        ),
        expect![[
            r#"hw.toml:30: sync "invoices_to_crm".mapping.constants.since: a date or time is not accepted here (in quotes it is a string)"#
        ]],
    );
    check(
        &VALID.replace(
            "constants = { origin = \"billing\" }",
            "constants = 07:32:00",
        ),
        expect![[
            r#"hw.toml:30: sync "invoices_to_crm".mapping.constants: a date or time is not accepted here (in quotes it is a string)"#
        ]],
    );
}

mod alerts;
mod batch;
mod deletes;
mod properties;
mod schedule;
mod tables;
mod windows;

/// The warnings of a valid config, as `validate` prints them.
fn warnings(text: &str) -> String {
    match parse(text, Path::new("hw.toml"), &env) {
        Ok(config) => config
            .warnings
            .iter()
            .map(|w| w.in_file(&config.file).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("not valid: {e}"),
    }
}

#[test]
fn runs_overlap_by_five_minutes_unless_told_otherwise() {
    let text = VALID
        .replace("lookback = \"10m\"\n", "")
        .replace("lag = \"1m\"\n", "");
    let config = parse(&text, Path::new("hw.toml"), &env).expect("valid config");
    let source = &config.syncs[0].source;
    assert_eq!(source.lookback, Duration::from_secs(300));
    assert_eq!(source.lag, Duration::ZERO);
    assert_eq!(warnings(&text), "");
}

#[test]
fn a_config_that_reads_and_overlaps_windows_has_no_warnings() {
    assert_eq!(warnings(VALID), "");
}

#[test]
fn a_zero_lookback_set_explicitly_is_a_warning() {
    let expected = expect![[
        r#"hw.toml:17: sync "invoices_to_crm".source.lookback: runs do not overlap, so a record stamped before the last run's watermark but visible only after it (a slow transaction, a lagging replica) is never read; the default is 5m"#
    ]];
    expected.assert_eq(&warnings(
        &VALID.replace("lookback = \"10m\"", "lookback = \"0s\""),
    ));
    expected.assert_eq(&warnings(
        &VALID.replace("lookback = \"10m\"", "lookback = \"0m\""),
    ));
}

#[test]
fn no_lower_bound_is_a_warning_unless_keyset_pagination_gives_one() {
    let without = VALID.replace("lower_bound_param = \"updated_after\"\n", "");
    check(&without, expect!["ok"]);
    expect![[r#"hw.toml:8: sync "invoices_to_crm".source: no `lower_bound_param` (nor `{lower}` in a parameter, header or body) and pagination is not keyset: every run reads everything the source has, not only what changed since the last run"#]]
    .assert_eq(&warnings(&without));
    let keyset = without.replace(
        "style = \"cursor\"\ntoken_path = \"next_cursor\"",
        "style = \"keyset\"\nupdated_param = \"since\"\nid_param = \"after_id\"",
    );
    assert_eq!(warnings(&keyset), "");
}

#[test]
fn a_keyset_parameter_cannot_be_a_bound_s_too() {
    let keyset = VALID
        .replace("lower_bound_param = \"updated_after\"\n", "")
        .replace(
            "style = \"cursor\"\ntoken_path = \"next_cursor\"",
            "style = \"keyset\"\nupdated_param = \"updated_before\"\nid_param = \"after_id\"",
        );
    check(
        &keyset,
        expect![[
            r#"hw.toml:19: sync "invoices_to_crm".source.pagination.updated_param: "updated_before" is also a bound's parameter: keyset pagination sends the last record's value in it, so it cannot carry the window too (keyset takes `updated_param` as the lower bound; an API that lists newest first, or pages after the last record's id alone, is `cursor` pagination with `token_field`)"#
        ]],
    );
}

#[test]
fn a_cursor_token_comes_from_the_answer_or_its_last_record() {
    let stripe = VALID.replace(
        "style = \"cursor\"\ntoken_path = \"next_cursor\"",
        "style = \"cursor\"\ntoken_param = \"starting_after\"\ntoken_field = \"id\"\nmore_path = \"has_more\"",
    );
    let config = parse(&stripe, Path::new("hw.toml"), &env).expect("valid config");
    match &config.syncs[0].source.pagination {
        Pagination::Cursor {
            token_param,
            token_field,
            more_path,
            ..
        } => {
            assert_eq!(token_param, "starting_after");
            assert_eq!(
                token_field.as_ref().map(ToString::to_string).as_deref(),
                Some("id")
            );
            assert_eq!(
                more_path.as_ref().map(ToString::to_string).as_deref(),
                Some("has_more")
            );
        }
        other => panic!("{other:?}"),
    }
    check(
        &stripe.replace(
            "token_field = \"id\"",
            "token_field = \"id\"\ntoken_path = \"next\"",
        ),
        expect![[
            r#"hw.toml:27: sync "invoices_to_crm".source.pagination.token_path: the next token comes from the answer (`token_path`) or from its last record (`token_field`), not both"#
        ]],
    );
}

#[test]
fn strict_bounds_are_opt_in_and_need_the_bound_they_describe() {
    let config = parse(VALID, Path::new("hw.toml"), &env).expect("valid config");
    let source = &config.syncs[0].source;
    assert!(!source.lower_bound_exclusive && !source.upper_bound_exclusive);

    let strict = VALID.replace(
        "upper_bound_param = \"updated_before\"",
        "upper_bound_param = \"updated_before\"\nlower_bound_exclusive = true\nupper_bound_exclusive = true",
    );
    let config = parse(&strict, Path::new("hw.toml"), &env).expect("valid config");
    let source = &config.syncs[0].source;
    assert!(source.lower_bound_exclusive && source.upper_bound_exclusive);

    let keyset = strict
        .replace("lower_bound_param = \"updated_after\"\n", "")
        .replace("upper_bound_param = \"updated_before\"\n", "")
        .replace(
            "style = \"cursor\"\ntoken_path = \"next_cursor\"",
            "style = \"keyset\"\nupdated_param = \"since\"\nid_param = \"after_id\"",
        );
    check(
        &keyset,
        expect![[
            r#"hw.toml:20: sync "invoices_to_crm".source.upper_bound_exclusive: does not apply: the bound is sent only with `upper_bound_param` or `{upper}` in a parameter, header or body"#
        ]],
    );
    check(
        &keyset.replace(
            "style = \"keyset\"\nupdated_param = \"since\"\nid_param = \"after_id\"",
            "style = \"cursor\"",
        ),
        expect![[r#"
            hw.toml:19: sync "invoices_to_crm".source.lower_bound_exclusive: does not apply: the bound is sent only with `lower_bound_param`, `{lower}` in a parameter, header or body, or keyset pagination
            hw.toml:20: sync "invoices_to_crm".source.upper_bound_exclusive: does not apply: the bound is sent only with `upper_bound_param` or `{upper}` in a parameter, header or body"#]],
    );
}

#[test]
fn the_rate_limit_probe_period_is_thirty_seconds_unless_told_otherwise() {
    let with = |probe: &str| {
        VALID.replace(
            "lookup_param = \"external_id\"",
            &format!("lookup_param = \"external_id\"\nrate_limit = 20\nrate_limit_probe = {probe}"),
        )
    };
    let config = parse(VALID, Path::new("hw.toml"), &env).expect("valid config");
    let sync = config.sync("invoices_to_crm").expect("sync");
    assert_eq!(sync.source.http.rate_limit_probe, Duration::from_secs(30));
    let config = parse(&with("\"2m\""), Path::new("hw.toml"), &env).expect("valid config");
    let sync = config.sync("invoices_to_crm").expect("sync");
    assert!(matches!(
        &sync.destination,
        DestinationSpec::Http(d)
            if d.http.rate_limit_probe == Duration::from_secs(120) && d.http.rate_limit == Some(20.0)
    ));
    check(
        &with("\"0s\""),
        expect![[
            r#"hw.toml:40: sync "invoices_to_crm".destination.rate_limit_probe: expected a duration > 0"#
        ]],
    );
}

#[test]
fn a_postgres_state_store_takes_a_url_a_schema_and_a_lease() {
    let with = |state: &str| VALID.replace("path = \"state/hw.db\"", state);
    let config = parse(
        &with("url = \"postgres://hw:${CRM_SECRET}@db.internal/ops\"\nlease = \"10s\""),
        Path::new("hw.toml"),
        &env,
    )
    .expect("valid config");
    match &config.state.store {
        StoreLocation::Postgres { url, schema } => {
            assert_eq!(url.expose(), "postgres://hw:s3cret@db.internal/ops");
            assert_eq!(schema, DEFAULT_STATE_SCHEMA);
        }
        other => panic!("not PostgreSQL: {other:?}"),
    }
    assert_eq!(config.state.lease, Duration::from_secs(10));
    // Shown without its password, and with its schema.
    assert_eq!(
        config.state.store.to_string(),
        "postgres://db.internal/ops (schema highwater)"
    );
    check(
        &with("path = \"a.db\"\nurl = \"postgres://db/ops\""),
        expect![[
            r#"hw.toml:3: state.path: give either `path` (a SQLite file) or `url` (a PostgreSQL database), not both"#
        ]],
    );
    check(
        &with("url = \"mysql://db/ops\""),
        expect![[
            r#"hw.toml:3: state.url: expected a PostgreSQL URL, like "postgres://user:${PGPASSWORD}@host:5432/database""#
        ]],
    );
    check(
        &with("url = \"postgres://db/ops\"\nschema = \"1 drop\""),
        expect![
            "hw.toml:4: state.schema: expected a schema name of letters, digits and `_` (not first), up to 63"
        ],
    );
    check(
        &with("path = \"a.db\"\nschema = \"ops\""),
        expect!["hw.toml:4: state.schema: `schema` is for a PostgreSQL store (`url`)"],
    );
    check(
        &with("url = \"postgres://db/ops\"\nlease = \"soon\""),
        expect![[
            r#"hw.toml:4: state.lease: expected a duration like "500ms", "30s", "5m" or "1h""#
        ]],
    );
}
