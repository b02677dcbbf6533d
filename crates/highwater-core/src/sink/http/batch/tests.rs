//! The batch's answers read item by item, and the split of a call into
//! batches, whatever the answers.

use super::*;
use proptest::prelude::*;

#[test]
fn an_item_s_status_may_be_a_boolean_and_an_empty_error_is_none() {
    let spec = |status: &str, error: &str| BatchSpec {
        path: crate::config::UriTemplate("/batch".into()),
        method: reqwest::Method::POST,
        size: 10,
        envelope: None,
        results_path: None,
        id_field: None,
        status_field: Some(crate::record::FieldPath::parse(status)),
        error_field: Some(crate::record::FieldPath::parse(error)),
        transient_errors: Vec::new(),
        retry_after_field: None,
        errors: None,
        item_results: true,
        failed_count_field: None,
        upsert: true,
        job: None,
    };
    let salesforce = spec("success", "errors");
    let written = serde_json::json!({"id": "003x", "success": true, "errors": []});
    assert_eq!(status_and_error(&salesforce, &written), (Some(200), None));
    let refused = serde_json::json!({"success": false, "errors": [{"message": "bad email"}]});
    assert_eq!(
        status_and_error(&salesforce, &refused),
        (
            Some(REFUSED_IN_ANSWER),
            Some(r#"[{"message":"bad email"}]"#.into())
        )
    );
    // A lock another writer held: refused by its status, failed for now by its reason.
    let locking = BatchSpec {
        transient_errors: vec!["UNABLE_TO_LOCK_ROW".into()],
        ..salesforce.clone()
    };
    let locked =
        r#"[{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access"}]"#;
    assert!(matches!(
        Item::refused(&locking, 422, locked.into(), &Value::Null),
        Item::Again {
            rate_limited: false,
            ..
        }
    ));
    assert!(matches!(
        Item::refused(&locking, 422, "bad email".into(), &Value::Null),
        Item::Refused { status: 422, .. }
    ));
    assert!(matches!(
        Item::refused(&salesforce, 422, locked.into(), &Value::Null),
        Item::Refused { status: 422, .. }
    ));
    // Microsoft Graph's: each item's own Retry-After, in its headers.
    let graph = BatchSpec {
        retry_after_field: Some(crate::record::FieldPath::parse("headers.Retry-After")),
        ..spec("status", "body.error")
    };
    for (wait, wanted) in [
        (serde_json::json!("10"), Some(Duration::from_secs(10))),
        (serde_json::json!(1.5), Some(Duration::from_millis(1500))),
        (serde_json::json!("soon"), None),
    ] {
        let result = serde_json::json!({"status": 429, "headers": {"Retry-After": wait}});
        assert!(
            matches!(
                Item::failed_for_now(&graph, 429, "throttled", &result),
                Item::Again { rate_limited: true, retry_after, .. } if retry_after == wanted
            ),
            "{result}"
        );
    }
    let coded = spec("status", "error");
    for (item, wanted) in [
        (
            serde_json::json!({"status": "201", "error": ""}),
            (Some(201), None),
        ),
        (
            serde_json::json!({"status": 200, "error": {}}),
            (Some(200), None),
        ),
        (
            serde_json::json!({"status": 429, "error": null}),
            (Some(429), None),
        ),
        (
            serde_json::json!({"status": 400, "error": "no"}),
            (Some(400), Some("no".into())),
        ),
        (
            serde_json::json!({"error": "gone"}),
            (None, Some("gone".into())),
        ),
        // Zoho's words; any other a status cannot be is not written.
        (
            serde_json::json!({"status": "success", "message": "record added"}),
            (Some(200), None),
        ),
        (serde_json::json!({"status": " OK "}), (Some(200), None)),
        (
            serde_json::json!({"status": "201 Created"}),
            (Some(201), None),
        ),
        (
            serde_json::json!({"status": "503 Service Unavailable"}),
            (Some(503), None),
        ),
        (
            serde_json::json!({"status": "error", "code": "INVALID_DATA"}),
            (Some(REFUSED_IN_ANSWER), None),
        ),
        (
            serde_json::json!({"status": "pending"}),
            (Some(REFUSED_IN_ANSWER), None),
        ),
        (
            serde_json::json!({"status": 70000}),
            (Some(REFUSED_IN_ANSWER), None),
        ),
        (
            serde_json::json!({"status": {"code": 1}}),
            (Some(REFUSED_IN_ANSWER), None),
        ),
        (serde_json::json!({"status": null}), (None, None)),
    ] {
        assert_eq!(status_and_error(&coded, &item), wanted, "{item}");
    }
}

/// Results matched by position name their own records, case aside (an
/// email given back in lower case); one that names another record is
/// not that record's answer.
#[test]
fn a_reason_told_with_an_id_of_its_own_is_the_same_reason() {
    let told = |id: &str, at: &str| {
        format!(
            r#"HTTP 400: {{"errors":[{{"id":"{id}","detail":"Invalid input at {at}.","source":{{"pointer":"/data/"}}}}]}}"#
        )
    };
    assert_eq!(
        gist(&told(
            "9c1e5b4a-27d0-4f6e-8a3b-0d2f1e7c6b59",
            "2026-12-08T02:30:09.123Z"
        )),
        gist(&told(
            "e4a8c0d1-5f3b-4b2a-9e7d-6c1a0b9f8e72",
            "2026-12-08T02:31:10.456Z"
        )),
    );
    // Reasons that differ in words stay apart, and short numbers stay.
    assert_ne!(
        gist("field `email` is invalid"),
        gist("field `phone` is invalid")
    );
    assert_eq!(gist("HTTP 422 deadbeef v2"), "HTTP 422 deadbeef v2");
}

#[test]
fn a_result_by_position_names_its_own_record() {
    let sink = super::super::tests::sink_for(
        "mode = \"batch\"\npath = \"/batch\"\nresult_status_field = \"status\"\n\
         external_id_field = \"email\"\n",
    );
    let super::super::config::WriteMode::Batch(batch) = sink.spec.mode.clone() else {
        unreachable!("batch mode")
    };
    let answer = Answer::new(
        vec![
            serde_json::json!({"email": "ann@example.com", "status": 200}),
            serde_json::json!({"email": "bob@example.com", "status": 200}),
        ],
        Vec::new(),
        &batch,
    );
    assert!(matches!(
        sink.item(&batch, &answer, 0, "Ann@Example.com"),
        Item::Written(_)
    ));
    assert!(matches!(
        sink.item(&batch, &answer, 1, "cy@example.com"),
        Item::Unanswered(detail) if detail.contains("not in the order of the records")
    ));
}

#[test]
fn an_error_listed_apart_names_its_records_and_says_whether_to_send_again() {
    let list = ErrorList {
        path: FieldPath::parse("errors"),
        names: ErrorNames::Ids(FieldPath::parse("context.ids")),
        message_field: Some(FieldPath::parse("message")),
    };
    let spec = BatchSpec {
        path: crate::config::UriTemplate("/batch".into()),
        method: reqwest::Method::POST,
        size: 10,
        envelope: Some(crate::sink::http::config::Envelope {
            before: bytes::Bytes::from_static(b"{\"inputs\":"),
            after: bytes::Bytes::from_static(b"}"),
        }),
        results_path: Some(FieldPath::parse("results")),
        id_field: Some(FieldPath::parse("properties.external_id")),
        status_field: Some(FieldPath::parse("status")),
        error_field: None,
        transient_errors: Vec::new(),
        retry_after_field: None,
        errors: Some(list.clone()),
        item_results: true,
        failed_count_field: None,
        upsert: true,
        job: None,
    };
    // HubSpot's: a status that is no code, the ids in an array.
    let hubspot = serde_json::json!({
        "status": "error", "category": "VALIDATION_ERROR",
        "message": "Property email is required", "context": {"ids": ["p-1", 7]}
    });
    let again =
        serde_json::json!({"status": 429, "message": "slow down", "context": {"ids": "p-2"}});
    let answer = Answer::new(
        vec![serde_json::json!({"properties": {"external_id": 8}})],
        vec![hubspot.clone(), again.clone()],
        &spec,
    );
    let found = |id: &str| answer.errors_by_id.get(id);
    assert_eq!(
        (found("p-1"), found("7"), found("p-2")),
        (Some(0), Some(0), Some(1))
    );
    assert_eq!((found("p-3"), answer.by_id.get("8")), (None, Some(0)));
    // Case aside when not named as it is: an email given back in lower case.
    assert_eq!(found("P-1"), Some(0));
    assert!(matches!(
        listed_error(&spec, &list, &hubspot),
        Item::Refused { status: REFUSED_IN_ANSWER, reason } if reason == "Property email is required"
    ));
    assert!(matches!(
        listed_error(&spec, &list, &again),
        Item::Again { detail, rate_limited: true, .. } if detail == "HTTP 429 slow down"
    ));
    let bare = ErrorList {
        message_field: None,
        ..list
    };
    let coded = serde_json::json!({"status": "409", "context": {"ids": ["p-3"]}});
    assert!(matches!(
        listed_error(&spec, &bare, &coded),
        Item::Refused { status: 409, reason } if reason == r#"{"context":{"ids":["p-3"]},"status":"409"}"#
    ));
}

/// Braze's answer lists only the items it refused, each by its place in the
/// batch sent: an item it names is refused with the error's reason, any
/// other written.
#[test]
fn an_answer_listing_only_failed_items_by_place_wrote_the_others() {
    let sink = super::super::tests::sink_for(
        "mode = \"batch\"\npath = \"/users/track\"\nbatch_field = \"attributes\"\n\
         item_results = false\nerrors_path = \"errors\"\nerror_index_field = \"index\"\n\
         error_message_field = \"type\"\nexternal_id_field = \"external_id\"\n",
    );
    let super::super::config::WriteMode::Batch(batch) = sink.spec.mode.clone() else {
        unreachable!("batch mode")
    };
    let answer = Answer::new(
        Vec::new(),
        vec![
            serde_json::json!({"type": "'email' must be a valid email", "input_array": "attributes", "index": 1}),
            serde_json::json!({"type": "no such place", "index": 9}),
            serde_json::json!({"type": "no place at all"}),
        ],
        &batch,
    );
    assert!(matches!(
        sink.item(&batch, &answer, 0, "a"),
        Item::Written(None)
    ));
    assert!(matches!(
        sink.item(&batch, &answer, 1, "b"),
        Item::Refused { status: REFUSED_IN_ANSWER, reason } if reason == "'email' must be a valid email"
    ));
    assert!(matches!(
        sink.item(&batch, &answer, 2, "c"),
        Item::Written(None)
    ));
}

/// What the endpoint does with one batch, as the test scripts it.
#[derive(Debug, Clone)]
enum Script {
    /// Answers each item: 0 written, 1 refused, 2 failed for now.
    Items(Vec<u8>),
    RefusedWhole,
    Fatal,
}

proptest! {
    /// Any split of a page into batches, any per-item answers, whole
    /// batches refused and errors that stop the call: every record is
    /// answered exactly once, a record is sent only until answered, and
    /// each is unsettled from the last request without a clear answer
    /// that carried it.
    #[test]
    fn every_record_is_answered_exactly_once(
        len in 0usize..60,
        size in 1usize..20,
        pre_answered in proptest::collection::vec(any::<bool>(), 60),
        scripts in proptest::collection::vec(
            prop_oneof![
                6 => proptest::collection::vec(0u8..3, 60).prop_map(Script::Items),
                1 => Just(Script::RefusedWhole),
                1 => Just(Script::Fatal),
            ],
            1..200,
        ),
        unclear_rounds in proptest::collection::vec(any::<bool>(), 200),
    ) {
        let answered: Vec<Option<&str>> = (0..len)
            .map(|i| pre_answered[i].then_some("unencodable"))
            .collect();
        let mut batches = Batches::new(answered, size);
        let mut sent = vec![0u32; len];
        let mut last_unclear = vec![None; len];
        let start = Instant::now();
        let mut scripts = scripts.into_iter().cycle();
        let mut rounds = 0;
        while let Some(group) = batches.next() {
            rounds += 1;
            prop_assert!(rounds < 10_000, "the call never ends");
            prop_assert!(!group.is_empty() && group.len() <= size);
            for &i in &group {
                prop_assert!(batches.results[i].is_none(), "record {} sent after its answer", i);
                sent[i] += 1;
            }
            if unclear_rounds[rounds % unclear_rounds.len()] {
                let since = start + std::time::Duration::from_millis(rounds as u64);
                batches.unclear(&group, since);
                for &i in &group {
                    last_unclear[i] = Some(since);
                }
            }
            match scripts.next() {
                Some(Script::RefusedWhole) if group.len() > 1 => batches.halve(group),
                Some(Script::RefusedWhole) => batches.answer(group[0], "refused alone"),
                Some(Script::Fatal) | None => {
                    batches.answer(group[0], "stopped");
                    break;
                }
                Some(Script::Items(items)) => {
                    let mut again = Vec::new();
                    for (k, &i) in group.iter().enumerate() {
                        match items[k % items.len()] {
                            0 => batches.answer(i, "written"),
                            1 => batches.answer(i, "refused"),
                            // Failed for now, a bounded number of times.
                            _ if sent[i] < 3 => again.push(i),
                            _ => batches.answer(i, "written"),
                        }
                    }
                    if !again.is_empty() {
                        batches.again(again);
                    }
                }
            }
        }
        prop_assert_eq!(&batches.unclear, &last_unclear);
        let stopped = batches.results.contains(&Some("stopped"));
        let results = batches.finish(|| "not sent");
        prop_assert_eq!(results.len(), len);
        for (i, result) in results.iter().enumerate() {
            if pre_answered[i] {
                prop_assert_eq!(*result, "unencodable");
                prop_assert_eq!(sent[i], 0);
            } else if *result == "not sent" {
                prop_assert!(stopped, "record {} left unanswered without a stop", i);
            } else {
                prop_assert!(sent[i] >= 1);
            }
        }
    }
}

/// A job is asked for only on the destination's origin, which alone is sent
/// its credentials; an answer already done is the job's answer, and one
/// naming no job leaves the batch unknown — none of them asks anything.
#[tokio::test]
async fn a_job_is_asked_for_on_the_destination_s_origin_alone() {
    let sink = super::super::tests::sink_for(
        "mode = \"batch\"\npath = \"/batch\"\n\
         external_id_field = \"external_id\"\n\
         job = { url_field = \"job_status.url\", status_field = \"job_status.status\" }\n",
    );
    let super::super::config::WriteMode::Batch(batch) = sink.spec.mode.clone() else {
        unreachable!("batch mode")
    };
    let job = batch.job.as_deref().expect("a job");
    let request =
        crate::http::Request::get(url::Url::parse("http://127.0.0.1:1/batch").expect("a URL"));
    let stop = Stop::never();
    let accepted =
        |url: &str, status: &str| serde_json::json!({"job_status": {"url": url, "status": status}});
    let elsewhere = sink
        .await_job(
            job,
            &request,
            accepted("http://127.0.0.2:1/jobs/1", "queued"),
            &stop,
        )
        .await;
    assert!(
        matches!(&elsewhere, Err(e) if e.to_string().contains(
            "its job is at http://127.0.0.2:1/jobs/1, not on the destination's origin \
             http://127.0.0.1:1"
        )),
        "{elsewhere:?}"
    );
    let done = accepted("/jobs/1", "Completed");
    assert!(matches!(
        sink.await_job(job, &request, done.clone(), &stop).await,
        Ok(Job::Done(answer)) if answer == done
    ));
    assert!(matches!(
        sink.await_job(job, &request, serde_json::json!({"ok": true}), &stop).await,
        Ok(Job::Unknown(detail)) if detail.contains("names no job at `job_status.url`")
    ));
}

/// Results matched by `result_id_field` find their record as it is named,
/// or else case aside: HubSpot gives a contact's email back in lower case,
/// and a record keyed by `Ann@Example.com` that found no result was sent
/// again until its attempts ran out, stopping every run at that page.
#[test]
fn a_result_by_id_is_found_case_aside_when_not_as_named() {
    let sink = super::super::tests::sink_for(
        "mode = \"batch\"\npath = \"/batch\"\nresults_path = \"results\"\n\
         result_id_field = \"properties.email\"\nexternal_id_field = \"email\"\n\
         dest_id_field = \"id\"\nupsert = true\n",
    );
    let super::super::config::WriteMode::Batch(batch) = sink.spec.mode.clone() else {
        unreachable!("batch mode")
    };
    let result =
        |id: &str, email: &str| serde_json::json!({"id": id, "properties": {"email": email}});
    let answer = Answer::new(
        vec![
            result("1", "ann@example.com"),
            result("2", "Bob@Example.com"),
            result("3", "bob@example.com"),
        ],
        Vec::new(),
        &batch,
    );
    let dest_id = |external_id: &str| match sink.item(&batch, &answer, 0, external_id) {
        Item::Written(dest_id) => dest_id,
        other => panic!("{external_id}: {other:?}"),
    };
    assert_eq!(dest_id("Ann@Example.com").as_deref(), Some("1"));
    // Two records alike but for case each find their own.
    assert_eq!(dest_id("Bob@Example.com").as_deref(), Some("2"));
    assert_eq!(dest_id("bob@example.com").as_deref(), Some("3"));
    assert!(matches!(
        sink.item(&batch, &answer, 0, "cy@example.com"),
        Item::Again { .. }
    ));
}
