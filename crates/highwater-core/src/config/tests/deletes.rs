//! `[sync.deletes]`: an endpoint read like the source, inheriting what it does
//! not say; a marker in the records; the DELETE request; and every mistake
//! named by line and key.

use super::*;

const ENDPOINT: &str = r#"
[sync.deletes]
path = "/v1/invoices/deleted"
lookback = "1h"
delete_path = "/v1/contacts/{dest_id}"
"#;

fn with_deletes(table: &str) -> String {
    format!("{VALID}{table}")
}

fn spec(table: &str) -> SyncSpec {
    let text = with_deletes(table);
    let config = parse(&text, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    config.syncs[0].clone()
}

#[test]
fn a_deletes_endpoint_is_the_source_with_its_own_path_time_and_lookback() {
    let sync = spec(ENDPOINT);
    let deletes = sync.deletes.expect("deletes");
    let DeleteFeed::Endpoint(feed) = &deletes.feed else {
        panic!("not an endpoint: {:?}", deletes.feed);
    };
    assert_eq!(feed.path, "/v1/invoices/deleted");
    assert_eq!(feed.updated_at_field, FieldPath::parse("deleted_at"));
    assert_eq!(feed.version_field, None);
    assert_eq!(feed.lookback, Duration::from_secs(3600));
    // Inherited: the API, the records path, the id field, bounds, pagination.
    assert_eq!(feed.http.base_url, sync.source.http.base_url);
    assert_eq!(feed.records_path, sync.source.records_path);
    assert_eq!(feed.id_field, sync.source.id_field);
    assert_eq!(feed.lower_bound_param.as_deref(), Some("updated_after"));
    assert_eq!(feed.pagination, sync.source.pagination);
    assert!(feed.params.is_empty(), "the source's filters are its own");
    assert_eq!(
        deletes.delete_path,
        Some(UriTemplate("/v1/contacts/{dest_id}".into()))
    );
    assert_eq!(deletes.full_delete_limit, DEFAULT_FULL_DELETE_LIMIT);
    assert!(spec("").deletes.is_none());
}

#[test]
fn a_deletes_endpoint_says_what_differs_from_the_source() {
    let sync = spec(
        r#"
[sync.deletes]
path = "/v1/deleted"
records_path = "items"
id_field = "invoice_id"
deleted_at_field = "removed_at"
time_format = "epoch_millis"
lower_bound_param = "since"
pagination = { style = "page", page_param = "p" }
delete_path = "/v1/contacts/by-external-id/{external_id}"
full_delete_limit = 0.25
"#,
    );
    let deletes = sync.deletes.expect("deletes");
    let DeleteFeed::Endpoint(feed) = &deletes.feed else {
        panic!("not an endpoint");
    };
    assert_eq!(feed.records_path, FieldPath::parse("items"));
    assert_eq!(feed.id_field, FieldPath::parse("invoice_id"));
    assert_eq!(feed.updated_at_field, FieldPath::parse("removed_at"));
    assert_eq!(feed.time_format, TimeFormat::EpochMillis);
    assert_eq!(feed.lower_bound_param.as_deref(), Some("since"));
    assert_eq!(
        feed.upper_bound_param, None,
        "its own bounds, not the source's"
    );
    assert_eq!(feed.lookback, sync.source.lookback);
    assert_eq!(feed.pagination.style(), "page");
    assert_eq!(deletes.full_delete_limit, 0.25);
}

#[test]
fn a_marker_deletes_records_carrying_it() {
    let sync = spec(
        "[sync.deletes]\nmarker_field = \"state.deleted\"\nmarker_value = true\ndelete_path = \"/v1/contacts/{dest_id}\"\n",
    );
    let feed = sync.deletes.expect("deletes").feed;
    assert!(feed.marks(&serde_json::json!({ "state": { "deleted": true } })));
    assert!(!feed.marks(&serde_json::json!({ "state": { "deleted": false } })));
    assert!(!feed.marks(&serde_json::json!({ "id": 1 })));
    // Without a value: deleted once the field is set, to anything but null.
    let sync = spec(
        "[sync.deletes]\nmarker_field = \"deleted_at\"\ndelete_path = \"/v1/contacts/{dest_id}\"\n",
    );
    let feed = sync.deletes.expect("deletes").feed;
    assert!(feed.marks(&serde_json::json!({ "deleted_at": "2026-01-01T00:00:00Z" })));
    assert!(!feed.marks(&serde_json::json!({ "deleted_at": null })));
    assert!(!feed.marks(&serde_json::json!({})));
}

#[test]
fn deletes_mistakes_name_line_and_key() {
    // Neither feed: only a full run deletes; keys of a feed then mean one was meant.
    check(
        &with_deletes("[sync.deletes]\ndelete_path = \"/v1/contacts/{dest_id}\"\n"),
        expect![[r#"ok"#]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\ndeleted_at_field = \"gone\"\nmarker_value = 1\ndelete_path = \"/v1/contacts/{dest_id}\"\n",
        ),
        expect![[r#"
            hw.toml:49: sync "invoices_to_crm".deletes.deleted_at_field: needs `path` (an endpoint listing deleted ids)
            hw.toml:50: sync "invoices_to_crm".deletes.marker_value: needs `marker_field`"#]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\npath = \"/v1/deleted\"\nmarker_field = \"deleted\"\ndelete_path = \"/v1/x\"\n",
        ),
        expect![[r#"
            hw.toml:50: sync "invoices_to_crm".deletes.marker_field: a sync reads deletions from an endpoint (`path`) or from a marker in its records (`marker_field`), not both
            hw.toml:51: sync "invoices_to_crm".deletes.delete_path: expected a path containing {external_id} or {dest_id}"#]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\nmarker_field = \"deleted\"\nlookback = \"1h\"\npagination = { style = \"cursor\", token_path = \"n\" }\n",
        ),
        expect![[r#"
            hw.toml:50: sync "invoices_to_crm".deletes.lookback: applies only to a deletes endpoint (`path`), not to a marker
            hw.toml:51: sync "invoices_to_crm".deletes.pagination: applies only to a deletes endpoint (`path`), not to a marker
            hw.toml:48: sync "invoices_to_crm".deletes: an http destination needs `delete_path`, the path a DELETE request takes, with {external_id} or {dest_id}"#]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\npath = \"/v1/deleted\"\nmarker_value = true\ntime_format = \"iso\"\nlookback = \"soon\"\ndelete_path = \"/v1/contacts\"\nfull_delete_limit = 1.5\n",
        ),
        expect![[r#"
            hw.toml:50: sync "invoices_to_crm".deletes.marker_value: needs `marker_field`
            hw.toml:51: sync "invoices_to_crm".deletes.time_format: expected "rfc3339", "epoch_seconds", "epoch_millis" or a strftime pattern like "%Y/%m/%d %H:%M"
            hw.toml:52: sync "invoices_to_crm".deletes.lookback: expected a duration like "500ms", "30s", "5m" or "1h"
            hw.toml:53: sync "invoices_to_crm".deletes.delete_path: expected a path containing {external_id} or {dest_id}
            hw.toml:54: sync "invoices_to_crm".deletes.full_delete_limit: expected a share above 0 and at most 1, like 0.1 for 10%"#]],
    );
    // A feed's own query or body is an endpoint's, and read as the source's.
    check(
        &with_deletes(
            "[sync.deletes]\nmarker_field = \"deleted\"\nbody = { q = \"x\" }\ndelete_path = \"/v1/x/{dest_id}\"\n",
        ),
        expect![[
            r#"hw.toml:50: sync "invoices_to_crm".deletes.body: applies only to a deletes endpoint (`path`), not to a marker"#
        ]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\npath = \"/v1/deleted\"\npage_params_in = \"query\"\ndelete_path = \"/v1/x/{dest_id}\"\n",
        ),
        expect![[
            r#"hw.toml:50: sync "invoices_to_crm".deletes.page_params_in: is read only with `body` (pages asked for with a POST)"#
        ]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\npath = \"/v1/deleted\"\ndelete_path = \"/v1/x/{dest_id}\"\nwhat = 1\n",
        ),
        expect![[
            r#"hw.toml:51: sync "invoices_to_crm".deletes.what: unknown key `what`, expected one of `path`, `params`, `body`, `body_params_path`, `page_params_in`, `records_path`, `id_field`, `deleted_at_field`, `time_format`, `lower_bound_param`, `upper_bound_param`, `lookback`, `pagination`, `marker_field`, `marker_value`, `delete_path`, `soft_delete`, `full_delete_limit`"#
        ]],
    );
}

#[test]
fn delete_path_follows_the_destination() {
    // Put without a destination id in its answers cannot delete by {dest_id}.
    let put = VALID
        .replace(
            "mode = \"lookup\"",
            "mode = \"put\"\npath = \"/v1/contacts/{external_id}\"",
        )
        .replace("lookup_path = \"/v1/contacts\"\n", "")
        .replace("lookup_param = \"external_id\"\n", "")
        .replace("create_path = \"/v1/contacts\"\n", "")
        .replace("update_path = \"/v1/contacts/{dest_id}\"\n", "");
    check(
        &format!("{put}{ENDPOINT}"),
        expect![[
            r#"hw.toml:49: sync "invoices_to_crm".deletes.delete_path: {dest_id} needs `dest_id_field` (where a write's answer says the destination id) or mode = "lookup""#
        ]],
    );
    // A file removes its own lines.
    let file = VALID[..VALID.find("[sync.destination]").unwrap_or(0)].to_owned()
        + "[sync.destination]\ntype = \"jsonl\"\nfile = \"out.jsonl\"\n";
    check(
        &format!("{file}{ENDPOINT}"),
        expect![[
            r#"hw.toml:40: sync "invoices_to_crm".deletes.delete_path: does not apply: a jsonl destination removes the record's line itself"#
        ]],
    );
    check(
        &format!("{file}[sync.deletes]\npath = \"/v1/deleted\"\n"),
        expect![[r#"ok"#]],
    );
}

#[test]
fn a_soft_delete_sets_fields_on_the_marked_record_instead_of_deleting() {
    let sync = spec(
        "[sync.deletes]\nmarker_field = \"deleted\"\nsoft_delete = { deleted = true, \"state.reason\" = \"gone\" }\n",
    );
    let deletes = sync.deletes.expect("deletes");
    assert_eq!(deletes.delete_path, None);
    assert_eq!(
        deletes.soft_delete,
        Some(vec![
            (FieldPath::parse("deleted"), serde_json::json!(true)),
            (FieldPath::parse("state.reason"), serde_json::json!("gone")),
        ])
    );
    check(
        &with_deletes("[sync.deletes]\npath = \"/v1/deleted\"\nsoft_delete = { deleted = true }\n"),
        expect![[
            r#"hw.toml:50: sync "invoices_to_crm".deletes.soft_delete: needs `marker_field`: a soft delete writes the marked record, which only a marker in the records gives"#
        ]],
    );
    check(
        &with_deletes(
            "[sync.deletes]\nmarker_field = \"deleted\"\nsoft_delete = { deleted = true }\ndelete_path = \"/v1/contacts/{dest_id}\"\n",
        ),
        expect![[
            r#"hw.toml:51: sync "invoices_to_crm".deletes.delete_path: a sync soft-deletes (`soft_delete`) or deletes (`delete_path`), not both"#
        ]],
    );
    check(
        &with_deletes("[sync.deletes]\nmarker_field = \"deleted\"\nsoft_delete = {}\n"),
        expect![[
            r#"hw.toml:50: sync "invoices_to_crm".deletes.soft_delete: expected the fields a soft delete sets, like { deleted = true }"#
        ]],
    );
}
