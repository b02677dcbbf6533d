//! `mode = "batch"`: where a batch's records go and where each item's
//! answer is read.

use super::*;

/// The JSON text a batch's body holds before and after its records.
fn envelope(spec: &crate::sink::http::config::BatchSpec) -> Option<(&str, &str)> {
    let envelope = spec.envelope.as_ref()?;
    Some((
        std::str::from_utf8(&envelope.before).ok()?,
        std::str::from_utf8(&envelope.after).ok()?,
    ))
}

/// The batch endpoint `text` configures.
fn batch_spec(text: &str) -> crate::sink::http::config::BatchSpec {
    let config = parse(text, Path::new("hw.toml"), &env).expect("valid config");
    let DestinationSpec::Http(http) = &config.syncs[0].destination else {
        unreachable!("an HTTP destination")
    };
    let crate::config::WriteMode::Batch(spec) = &http.mode else {
        unreachable!("batch mode")
    };
    (**spec).clone()
}

#[test]
fn batch_mode_says_where_records_go_and_where_each_answer_is() {
    let lookup = "mode = \"lookup\"\nlookup_path = \"/v1/contacts\"\nlookup_param = \"external_id\"\ncreate_path = \"/v1/contacts\"\nupdate_path = \"/v1/contacts/{dest_id}\"";
    let batch = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/v1/contacts/batch\"\nbatch_size = 200\nbatch_field = \"records\"\nresults_path = \"data.results\"\nresult_id_field = \"external_id\"\nresult_status_field = \"status\"\nresult_error_field = \"error\"\nupsert = true",
    );
    let config = parse(&batch, Path::new("hw.toml"), &env).expect("valid config");
    let spec = batch_spec(&batch);
    assert_eq!((spec.size, spec.upsert), (200, true));
    assert_eq!(envelope(&spec), Some(("{\"records\":", "}")));
    assert!(config.syncs[0].destination.takes_concurrent_runs());
    // Not an upsert: the runs of the sync take turns, and a batch of 100 is the default.
    let plain = VALID.replace(lookup, "mode = \"batch\"\npath = \"/v1/contacts/batch\"");
    let config = parse(&plain, Path::new("hw.toml"), &env).expect("valid config");
    assert!(!config.syncs[0].destination.takes_concurrent_runs());
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/v1/contacts/batch\"\nbatch_size = 0\nlookup_path = \"/v1/contacts\"",
        ),
        expect![[r#"
            hw.toml:39: sync "invoices_to_crm".destination.lookup_path: does not apply to mode = "batch" (it takes: path, method, read_path, read_results_path, batch_size, batch_field, batch_body, results_path, result_id_field, result_status_field, result_error_field, result_transient_errors, result_retry_after_field, errors_path, error_id_field, error_index_field, error_message_field, item_results, failed_count_field, upsert, job)
            hw.toml:38: sync "invoices_to_crm".destination.batch_size: expected a whole number from 1 to 10000"#]],
    );
    // Fields beside the records' array, as Airtable's upsert needs.
    let airtable = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/v0/base/t\"\nbatch_field = \"records\"\nbatch_body = { performUpsert = { fieldsToMergeOn = [\"external_id\"] }, typecast = true }",
    );
    let spec = batch_spec(&airtable);
    assert_eq!(
        envelope(&spec),
        Some((
            "{\"performUpsert\":{\"fieldsToMergeOn\":[\"external_id\"]},\"records\":",
            ",\"typecast\":true}"
        ))
    );
    // A dotted path, through `batch_body`'s objects, as Klaviyo's bulk import needs.
    let klaviyo = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/api/profile-bulk-import-jobs\"\nbatch_field = \"data.attributes.profiles.data\"\nbatch_body = { data = { type = \"profile-bulk-import-job\" } }",
    );
    assert_eq!(
        envelope(&batch_spec(&klaviyo)),
        Some((
            "{\"data\":{\"attributes\":{\"profiles\":{\"data\":",
            "}},\"type\":\"profile-bulk-import-job\"}}"
        ))
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/v0/base/t\"\nbatch_field = \"data.items\"\nbatch_body = { data = \"text\" }",
        ),
        expect![[r#"hw.toml:38: sync "invoices_to_crm".destination.batch_field: names no place for the records' array: a field, or a dotted path through `batch_body`'s objects"#]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/v0/base/t\"\nbatch_body = { typecast = true }",
        ),
        expect![[
            r#"hw.toml:38: sync "invoices_to_crm".destination.batch_body: needs `batch_field`: only a body that is an object has other fields"#
        ]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/v0/base/t\"\nbatch_field = \"records\"\nbatch_body = { records = [] }",
        ),
        expect![[r#"hw.toml:39: sync "invoices_to_crm".destination.batch_body: holds "records", the records' own field (`batch_field`)"#]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/v0/base/t\"\nbatch_field = \"records\"\nbatch_body = { at = 1979-05-27 }",
        ),
        expect![[r#"hw.toml:39: sync "invoices_to_crm".destination.batch_body.at: a date or time is not accepted here (in quotes it is a string)"#]],
    );
    check(
        &VALID.replace(
            "external_id_field = \"external_id\"",
            "external_id_field = \"fields.\"",
        ),
        expect![[
            r#"hw.toml:41: sync "invoices_to_crm".destination.external_id_field: expected a field name, or a dotted path like `fields.external_id`"#
        ]],
    );
    // Refusals whose reason names a failure for now, as Salesforce's.
    let salesforce = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/composite\"\nresult_transient_errors = [\"UNABLE_TO_LOCK_ROW\"]",
    );
    assert_eq!(
        batch_spec(&salesforce).transient_errors,
        ["UNABLE_TO_LOCK_ROW"]
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/composite\"\nresult_transient_errors = [\"UNABLE_TO_LOCK_ROW\", \" \"]",
        ),
        expect![[r#"hw.toml:38: sync "invoices_to_crm".destination.result_transient_errors: an empty entry would match every reason"#]],
    );
    // A batch run as a job (Zendesk's bulk endpoints): where the job is,
    // its state, and the states that end it.
    let zendesk = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/api/v2/users/create_or_update_many\"\njob = { url_field = \"job_status.url\", status_field = \"job_status.status\", poll = \"2s\" }",
    );
    let job = batch_spec(&zendesk).job.expect("a job");
    assert_eq!(
        (job.url_field.to_string(), job.status_field.to_string()),
        ("job_status.url".to_owned(), "job_status.status".to_owned())
    );
    assert_eq!(
        (job.done, job.failed),
        (
            vec!["completed".to_owned()],
            vec!["failed".to_owned(), "killed".to_owned()]
        )
    );
    assert_eq!(
        (job.poll, job.timeout),
        (Duration::from_secs(2), Duration::from_secs(600))
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/b\"\njob = { status_field = \"s\", done = [\"ok\"], failed = [\"OK\"] }",
        ),
        expect![[r#"
            hw.toml:38: sync "invoices_to_crm".destination.job: needs `url_field` (where the batch's answer gives the job's URL, say "job_status.url")
            hw.toml:38: sync "invoices_to_crm".destination.job: "ok" is both in `done` and in `failed`"#]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/b\"\njob = { url_field = \"u\", status_field = \"s\", done = [], poll = \"1m\", timeout = \"30s\" }",
        ),
        expect![[r#"
            hw.toml:38: sync "invoices_to_crm".destination.job.done: must name at least one state
            hw.toml:38: sync "invoices_to_crm".destination.job: `poll` must be longer than nothing and shorter than `timeout`"#]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"put\"\npath = \"/c/{external_id}\"\njob = { url_field = \"u\", status_field = \"s\" }",
        ),
        expect![[r#"hw.toml:38: sync "invoices_to_crm".destination.job: does not apply to mode = "put" (it takes: path, method, read_path, read_results_path)"#]],
    );
    // An answer for the whole batch only has no item results to find.
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/batch\"\nitem_results = false\nresults_path = \"results\"",
        ),
        expect![[
            r#"hw.toml:38: sync "invoices_to_crm".destination.item_results: is false, so `results_path` has no item results to read"#
        ]],
    );
    // Failures only counted (Klaviyo's import job) are found by sending
    // halves of the batch again, which takes an upsert.
    let counted = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/jobs\"\nitem_results = false\nfailed_count_field = \"data.attributes.failed_count\"\nupsert = true",
    );
    assert_eq!(
        batch_spec(&counted)
            .failed_count_field
            .map(|f| f.to_string()),
        Some("data.attributes.failed_count".to_owned())
    );
    check(
        &counted.replace("upsert = true", "upsert = false"),
        expect![[
            r#"hw.toml:39: sync "invoices_to_crm".destination.failed_count_field: needs `upsert = true`: the records a count of failures does not name are found by sending halves of their batch again, which writes the others twice"#
        ]],
    );
    // Errors listed apart from the results, as HubSpot's batch API answers.
    let apart = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/batch/upsert\"\nerrors_path = \"errors\"\nerror_id_field = \"context.ids\"\nerror_message_field = \"message\"",
    );
    let spec = batch_spec(&apart);
    assert!(
        spec.errors
            .as_ref()
            .is_some_and(|e| e.message_field.is_some())
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/batch/upsert\"\nerrors_path = \"errors\"",
        ),
        expect![[
            r#"hw.toml:38: sync "invoices_to_crm".destination.errors_path: needs `error_id_field` (where each error names the external ids it is about) or `error_index_field` (its item's place in the batch, from 0)"#
        ]],
    );
    // Braze's: only the failed items, each by its place in the batch.
    let braze = VALID.replace(
        lookup,
        "mode = \"batch\"\npath = \"/users/track\"\nitem_results = false\nerrors_path = \"errors\"\nerror_index_field = \"index\"",
    );
    let spec = batch_spec(&braze);
    assert!(!spec.item_results);
    assert!(
        spec.errors
            .as_ref()
            .is_some_and(|e| matches!(e.names, crate::sink::http::config::ErrorNames::Index(_)))
    );
    check(
        &braze.replace("item_results = false", "error_id_field = \"id\""),
        expect![[
            r#"hw.toml:40: sync "invoices_to_crm".destination.error_index_field: an error names its items by external id (`error_id_field`) or by place in the batch, not both"#
        ]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"batch\"\npath = \"/batch/upsert\"\nerror_message_field = \"message\"",
        ),
        expect![[
            r#"hw.toml:38: sync "invoices_to_crm".destination.error_message_field: is read only with `errors_path` (where the answer lists its errors)"#
        ]],
    );
    check(
        &VALID.replace(
            lookup,
            "mode = \"put\"\npath = \"/v1/contacts/{external_id}\"\nupsert = true",
        ),
        expect![[
            r#"hw.toml:38: sync "invoices_to_crm".destination.upsert: does not apply to mode = "put" (it takes: path, method, read_path, read_results_path)"#
        ]],
    );
}
