//! A window written inside a parameter (`{lower}`, `{upper}`), in a time
//! format of the API's own (`time_format` as a strftime pattern, `timezone`).

use super::*;

/// A Jira-shaped source: the window goes inside the `jql` query, in the
/// user's time zone, to the minute.
fn jql(extra: &str) -> String {
    VALID
        .replace("lower_bound_param = \"updated_after\"\n", "")
        .replace("upper_bound_param = \"updated_before\"\n", "")
        .replace(
            "params = { status = \"all\" }",
            &format!(
                "params = {{ jql = 'updated >= \"{{lower}}\" AND updated <= \"{{upper}}\" ORDER BY updated ASC' }}\ntime_format = \"%Y/%m/%d %H:%M\"\n{extra}"
            ),
        )
}

#[test]
fn a_window_inside_a_parameter_is_a_window_sent() {
    let text = jql("timezone = \"Europe/Paris\"\nlower_bound_exclusive = true");
    let config = parse(&text, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let source = &config.syncs[0].source;
    assert!(source.sends_lower_bound());
    assert!(source.lower_bound_exclusive);
    match &source.time_format {
        TimeFormat::Pattern(pattern) => {
            assert_eq!(pattern.unit(), jiff::Unit::Minute);
            assert_eq!(pattern.zone().1, "Europe/Paris");
        }
        other => panic!("{other:?}"),
    }
    // No warning that every run reads everything.
    assert_eq!(warnings(&text), "");
}

#[test]
fn time_format_and_timezone_mistakes_name_line_and_key() {
    check(
        &jql("timezone = \"Mars/Olympus\""),
        expect![[
            r#"hw.toml:13: sync "invoices_to_crm".source.timezone: expected a time zone name like "Europe/Paris" or "UTC""#
        ]],
    );
    check(
        &VALID.replace("lag = \"1m\"", "lag = \"1m\"\ntimezone = \"Europe/Paris\""),
        expect![[
            r#"hw.toml:17: sync "invoices_to_crm".source.timezone: only a `time_format` pattern (like "%Y/%m/%d %H:%M") is written in a time zone; RFC 3339 and epoch times say their own"#
        ]],
    );
    check(
        &jql("").replace("%Y/%m/%d %H:%M", "%m/%d %H:%M"),
        expect![[
            r#"hw.toml:12: sync "invoices_to_crm".source.time_format: the pattern writes "11/27 15:49", which does not read back as the time it was written from: it needs the year, month and day, and the time down to what the API compares ("%Y/%m/%d %H:%M" writes to the minute)"#
        ]],
    );
    check(
        &jql("").replace("%Y/%m/%d %H:%M", "%Y-%m-%d %I:%M"),
        expect![[
            r#"hw.toml:12: sync "invoices_to_crm".source.time_format: the pattern writes "2026-11-27 03:49", which does not read back as the time it was written from: it needs the year, month and day, and the time down to what the API compares ("%Y/%m/%d %H:%M" writes to the minute)"#
        ]],
    );
}

/// A GraphQL API: pages asked for with a POST, the window in the query's
/// variables, each page's size and cursor beside it.
fn graphql(extra: &str) -> String {
    VALID
        .replace("lower_bound_param = \"updated_after\"\n", "")
        .replace("upper_bound_param = \"updated_before\"\n", "")
        .replace(
            "params = { status = \"all\" }",
            &format!(
                "body = {{ query = \"query($first: Int, $after: String, $since: DateTime) {{ issues }}\", variables = {{ since = \"{{lower}}\" }} }}\nbody_params_path = \"variables\"\n{extra}"
            ),
        )
}

#[test]
fn a_body_carries_the_window_and_takes_each_page_s_parameters() {
    let config = parse(&graphql(""), Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let source = &config.syncs[0].source;
    let body = source.body.as_ref().unwrap_or_else(|| panic!("a body"));
    assert_eq!(
        body.params_at.as_ref().map(ToString::to_string).as_deref(),
        Some("variables")
    );
    assert_eq!(body.template["variables"]["since"], "{lower}");
    assert!(source.sends_lower_bound());
    assert_eq!(warnings(&graphql("error_path = \"errors\"")), "");
    expect![[r#"hw.toml:11: sync "invoices_to_crm".source.body: looks like a GraphQL query, whose errors come with a 200 in `errors`: set error_path = "errors""#]].assert_eq(&warnings(&graphql("")));
}

#[test]
fn body_mistakes_name_line_and_key() {
    check(
        &graphql("").replace(
            "body_params_path = \"variables\"",
            "body_params_path = \"query\"",
        ),
        expect![[
            r#"hw.toml:12: sync "invoices_to_crm".source.body_params_path: names a value of `body` that is not a table: each page's parameters go into it"#
        ]],
    );
    check(
        &VALID.replace("params = { status = \"all\" }", "body = \"{}\""),
        expect![[
            r#"hw.toml:11: sync "invoices_to_crm".source.body: expected a table, sent as the JSON body of a POST, like { filter = { status = "open" } }"#
        ]],
    );
    check(
        &VALID.replace(
            "params = { status = \"all\" }",
            "body_params_path = \"variables\"",
        ),
        expect![[
            r#"hw.toml:11: sync "invoices_to_crm".source.body_params_path: is read only with `body` (pages asked for with a POST)"#
        ]],
    );
    check(
        &graphql("").replace(
            "style = \"cursor\"\ntoken_path = \"next_cursor\"",
            "style = \"next_url\"\nnext_url_path = \"next\"",
        ),
        expect![[
            r#"hw.toml:11: sync "invoices_to_crm".source.body: a next URL is asked for as the API wrote it, with a GET: `body` needs cursor, offset, page or keyset pagination"#
        ]],
    );
}

#[test]
fn a_body_s_pages_may_take_their_parameters_in_the_url() {
    let in_query = graphql("").replace(
        "body_params_path = \"variables\"",
        "page_params_in = \"query\"",
    );
    let config = parse(&in_query, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let body = config.syncs[0].source.body.as_ref();
    assert!(body.is_some_and(|b| b.params_at.is_none()), "{body:?}");
    let in_body = graphql("page_params_in = \"body\"");
    let config = parse(&in_body, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let body = config.syncs[0].source.body.as_ref();
    assert!(body.is_some_and(|b| b.params_at.is_some()), "{body:?}");

    check(
        &graphql("page_params_in = \"query\""),
        expect![[
            r#"hw.toml:12: sync "invoices_to_crm".source.body_params_path: says where in the body each page's parameters go, but `page_params_in = "query"` sends them in the URL: keep one"#
        ]],
    );
    check(
        &graphql("page_params_in = \"url\""),
        expect![[
            r#"hw.toml:13: sync "invoices_to_crm".source.page_params_in: "url" is not a place for each page's parameters: "body" (the default, at `body_params_path`) or "query" (the URL's, as NetSuite's SuiteQL takes `limit` and `offset`)"#
        ]],
    );
    check(
        &VALID.replace(
            "params = { status = \"all\" }",
            "page_params_in = \"query\"",
        ),
        expect![[
            r#"hw.toml:11: sync "invoices_to_crm".source.page_params_in: is read only with `body` (pages asked for with a POST)"#
        ]],
    );
}

#[test]
fn a_header_that_takes_the_window_is_sent_apart_from_the_others() {
    let text = VALID
        .replace("lower_bound_param = \"updated_after\"\n", "")
        .replace(
            "headers = { \"X-Api-Version\" = \"2024-01\" }",
            "headers = { \"X-Api-Version\" = \"2024-01\", \"If-Modified-Since\" = \"{lower}\" }\ntime_format = \"%a, %d %b %Y %H:%M:%S GMT\"",
        );
    let config = parse(&text, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let source = &config.syncs[0].source;
    let names = |headers: &[(reqwest::header::HeaderName, crate::secret::Secret)]| {
        headers
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&source.window_headers), ["if-modified-since"]);
    assert_eq!(names(&source.http.headers), ["x-api-version"]);
    assert!(source.sends_lower_bound());
    assert_eq!(warnings(&text), "");
}
