//! Destinations and credentials: the JSON Lines file destination, and each auth
//! method on the source and the destination, with secrets kept out of output.

use std::time::Duration;

use simsaas::{SimAuth, SimConfig};

use crate::util::{Mode, SYNC, Setup, Style, World, describe, stderr, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn the_json_lines_destination_upserts_into_one_file() {
    let world = World::start(
        "jsonl",
        SimConfig::new(51, 500),
        &Setup::new(Style::Keyset, Mode::Put),
    )
    .await;
    let out_file = world.dir.join("out").join("contacts.jsonl");
    world.use_jsonl_destination(&out_file, None);
    world.run_to_completion().await;
    let lines = std::fs::read_to_string(&out_file).expect("jsonl file");
    // A file takes what a CRM would refuse; only records that fail mapping are out.
    let valid = world
        .sim
        .source_records()
        .iter()
        .filter(|r| r.rejection != Some(simsaas::Rejection::Invalid))
        .count();
    assert_eq!(lines.lines().count(), valid);
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().unwrap_or("{}")).expect("a JSON line");
    assert!(
        first["external_id"].is_string() && first["email"].is_string(),
        "{first}"
    );
    // A second run changes nothing and leaves one line per record.
    world.run_to_completion().await;
    assert_eq!(
        std::fs::read_to_string(&out_file)
            .expect("jsonl")
            .lines()
            .count(),
        valid
    );
}

/// A field newly mapped stays empty in the records already written until
/// they are read again: the first run with the new mapping says so, naming
/// how many, and the runs after it say nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_mapping_is_said_to_leave_written_records_as_they_were() {
    let mut sim = SimConfig::new(57, 300);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let world = World::start(
        "mapping-changed",
        sim,
        &Setup::new(Style::Cursor, Mode::Put),
    )
    .await;
    world.use_jsonl_destination(&world.dir.join("out.jsonl"), None);
    let said = "the mapping changed since this sync last wrote";
    let out = world.run_to_completion().await;
    assert!(!stderr(&out).contains(said), "{}", describe(&out));
    let text = std::fs::read_to_string(&world.config).expect("config");
    let currency = "currency = \"currency\"\n";
    assert!(text.contains(currency), "{text}");
    std::fs::write(
        &world.config,
        text.replace(currency, "currency = \"currency\"\nsource_id = \"id\"\n"),
    )
    .expect("config");
    let out = world.run_to_completion().await;
    assert!(
        stderr(&out).contains(&format!("{said}: the 300 records already written")),
        "{}",
        describe(&out)
    );
    let out = world.run_to_completion().await;
    assert!(!stderr(&out).contains(said), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_and_api_keys_in_headers_and_queries() {
    let mut sim = SimConfig::new(52, 400);
    sim.source_auth = SimAuth::ApiKeyQuery {
        param: "api_key".into(),
        key: "q-secret-1".into(),
    };
    sim.dest_auth = SimAuth::ApiKeyHeader {
        header: "X-Api-Key".into(),
        key: "h-secret-2".into(),
    };
    let mut setup = Setup::new(Style::NextUrlBody, Mode::Lookup);
    setup.source_auth =
        r#"{ type = "api_key", query_param = "api_key", key = "q-secret-1" }"#.into();
    setup.dest_auth = r#"{ type = "api_key", header = "X-Api-Key", key = "h-secret-2" }"#.into();
    setup.page_size = 50;
    let world = World::start("api-keys", sim, &setup).await;
    let out = world.highwater(&["run", SYNC, "--max-pages", "2"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    // The stored cursor (a next URL) does not keep the key.
    let status = stdout(&world.highwater(&["status", "--json"]).await);
    assert!(
        status.contains("/v1/links/invoices") && !status.contains("q-secret-1"),
        "{status}"
    );
    world.run_to_completion().await;
    world.assert_exact().await;

    let mut sim = SimConfig::new(53, 300);
    sim.source_auth = SimAuth::Basic {
        user: "hw".into(),
        password: "b-secret-3".into(),
    };
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.source_auth = r#"{ type = "basic", username = "hw", password = "b-secret-3" }"#.into();
    let world = World::start("basic", sim, &setup).await;
    world.run_to_completion().await;
    world.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_tokens_are_refreshed_as_they_expire() {
    let mut sim = SimConfig::new(54, 1500);
    sim.source.latency = Duration::from_millis(40);
    for auth in [&mut sim.source_auth, &mut sim.dest_auth] {
        *auth = SimAuth::OAuth2 {
            client_id: "hw".into(),
            client_secret: "o-secret-4".into(),
            token_ttl: Duration::from_secs(1),
            refresh_token: None,
        };
    }
    let mut setup = Setup::new(Style::Cursor, Mode::Post);
    setup.page_size = 50;
    let world = World::start("oauth", sim, &setup).await;
    let oauth = |url: String| {
        format!(
            r#"{{ type = "oauth2", token_url = "{url}/oauth/token", client_id = "hw", client_secret = "${{HW_TEST_SECRET}}" }}"#
        )
    };
    setup.source_auth = oauth(world.sim.source_url());
    setup.dest_auth = oauth(world.sim.dest_url());
    world.rewrite(&setup);
    let out = crate::util::finish(
        tokio::process::Command::new(crate::util::bin())
            .arg("--config")
            .arg(&world.config)
            .args(["run", SYNC])
            .env("HW_TEST_SECRET", "o-secret-4"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stats = world.sim.stats();
    assert!(
        stats.source.tokens_issued >= 2 && stats.dest.tokens_issued >= 1,
        "{stats:?}"
    );
    world.assert_exact().await;

    // Wrong client credentials are a clear, fatal error.
    let out = crate::util::finish(
        tokio::process::Command::new(crate::util::bin())
            .arg("--config")
            .arg(&world.config)
            .args(["run", SYNC])
            .env("HW_TEST_SECRET", "not-it"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    assert!(
        message.contains("OAuth2 token request")
            && message.contains(r#"refused (401: {"error":"invalid_client"})"#),
        "{message}"
    );
    assert!(
        !message.contains("not-it") && !message.contains("o-secret-4"),
        "{message}"
    );
}

/// OAuth2 endpoints that spend each refresh token they answer (Xero's): a
/// run stopped by its budget every few pages is resumed by process after
/// process, each presenting the refresh token the one before was given (kept
/// in the state store), while tokens expiring within a process are refreshed
/// too. The sync completes, exact.
#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_an_endpoint_rotates_are_kept_for_the_next_process() {
    let mut sim = SimConfig::new(55, 600);
    sim.source.latency = Duration::from_millis(40);
    for (auth, first) in [(&mut sim.source_auth, "sr0"), (&mut sim.dest_auth, "dr0")] {
        *auth = SimAuth::OAuth2 {
            client_id: "hw".into(),
            client_secret: "o-secret-5".into(),
            token_ttl: Duration::from_secs(1),
            refresh_token: Some(first.into()),
        };
    }
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 50;
    setup.budgets = "max_pages = 3".into();
    let world = World::start("oauth-rotating", sim, &setup).await;
    let oauth = |url: String, first: &str| {
        format!(
            r#"{{ type = "oauth2", token_url = "{url}/oauth/token", client_id = "hw", client_secret = "${{HW_TEST_SECRET}}", refresh_token = "{first}" }}"#
        )
    };
    setup.source_auth = oauth(world.sim.source_url(), "sr0");
    setup.dest_auth = oauth(world.sim.dest_url(), "dr0");
    world.rewrite(&setup);
    let mut processes = 0u64;
    loop {
        processes += 1;
        assert!(processes <= 20, "the sync did not complete in 20 processes");
        let out = crate::util::finish(
            world
                .command_with(&world.config, &["run", SYNC])
                .env("HW_TEST_SECRET", "o-secret-5"),
        )
        .await;
        match out.status.code() {
            Some(0) => break,
            Some(3) => {}
            _ => panic!("process {processes}: {}", describe(&out)),
        }
    }
    assert!(processes >= 4, "{processes}");
    let stats = world.sim.stats();
    // Each process that read pages took a token with the refresh token the
    // one before was given (the last may only complete the run): a spent one
    // would have been refused, failing its process.
    assert!(
        stats.source.tokens_issued >= processes - 1 && stats.dest.tokens_issued >= processes - 1,
        "{processes}: {stats:?}"
    );
    world.assert_exact().await;
}

/// A lookup that is a search sent as a POST with a JSON body (HubSpot's and
/// Intercom's search endpoints): under the destination's faults, each record
/// is found by the body's filter, so that the run after the source changed
/// updates every object in place rather than creating it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_by_a_search_body_finds_the_objects_it_updates() {
    let mut sim = SimConfig::new(72, 400);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let mut sim = sim.with_all_faults();
    // The source changes between the runs, not during them.
    sim.mutations.max = 0;
    let world = World::start(
        "lookup-search",
        sim,
        &Setup::new(Style::Cursor, Mode::Lookup),
    )
    .await;
    let text = std::fs::read_to_string(&world.config).expect("config");
    let by_query = "lookup_path = \"/v1/contacts\"\nlookup_param = \"external_id\"\n";
    assert!(text.contains(by_query), "{text}");
    let by_search = "lookup_path = \"/v1/contacts/search\"\n\
        lookup_body = { filterGroups = [{ filters = [{ propertyName = \"external_id\", operator = \"EQ\", value = \"{external_id}\" }] }] }\n\
        lookup_results_path = \"results\"\n";
    std::fs::write(&world.config, text.replace(by_query, by_search)).expect("config");
    world.run_to_completion().await;
    world.assert_exact().await;
    for record in world.sim.source_records().iter().step_by(3) {
        world.sim.update_record(&record.id);
    }
    world.run_to_completion().await;
    world.assert_exact().await;
}
