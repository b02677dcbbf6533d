//! Bad input: every user-facing error gives a clear message and the right exit code,
//! and leaves the state store exactly as it was.

use simsaas::{BadBody, SimConfig, SourceFaults};

use crate::util::{Mode, SYNC, Setup, Style, World, bin, describe, finish, fresh_dir, stderr};

async fn highwater_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    finish(
        tokio::process::Command::new(bin())
            .current_dir(dir)
            .args(args)
            .env_remove("HIGHWATER_CONFIG"),
    )
    .await
}

#[tokio::test]
async fn a_missing_config_file_says_how_to_fix_it() {
    let dir = fresh_dir("missing-config");
    let out = highwater_in(&dir, &["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        stderr(&out).trim(),
        "highwater.toml: config file not found (create it, or pass --config PATH)"
    );
    assert!(
        !dir.join(".highwater").exists(),
        "no state store may be created"
    );
}

#[tokio::test]
async fn invalid_toml_unknown_keys_and_missing_variables_name_line_and_key() {
    let dir = fresh_dir("bad-config");
    let cases = [
        (
            "[[sync]]\nname = \"a\"\n[sync.source\n",
            "highwater.toml:3: invalid TOML: unclosed table, expected `]`",
        ),
        (
            "[[sync]]\nname = \"a\"\ncolour = \"red\"\n",
            "highwater.toml:3: sync \"a\".colour: unknown key `colour`, expected one of `name`, `source`, `mapping`, `destination`, `retry`, `budgets`, `deletes`, `alerts`, `schedule`",
        ),
        (
            "[[sync]]\nname = \"a\"\n[sync.source]\nbase_url = \"http://127.0.0.1:9\"\nauth = { type = \"bearer\", token = \"${HIGHWATER_TEST_UNSET_TOKEN}\" }\npagination = { style = \"cursor\" }\n[sync.destination]\ntype = \"jsonl\"\nfile = \"out.jsonl\"\n",
            "highwater.toml:5: sync \"a\".source.auth.token: environment variable HIGHWATER_TEST_UNSET_TOKEN is not set",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.join("highwater.toml"), text).expect("write");
        for command in [&["validate"][..], &["run", "a"][..]] {
            let out = highwater_in(&dir, command).await;
            assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
            assert_eq!(stderr(&out).trim(), expected);
        }
    }
    assert!(
        !dir.join(".highwater").exists(),
        "no state store may be created"
    );
}

/// Runs once successfully, breaks something, runs again: the failure must be
/// explained, exit 1, and change nothing in the state store but its history.
async fn fails_cleanly(
    name: &str,
    setup: Setup,
    break_it: impl FnOnce(&World, &mut Setup),
    expected: &[&str],
) {
    let world = World::start(name, SimConfig::new(31, 300), &setup).await;
    world.run_to_completion().await;
    let before = world.state_dump().await;
    let mut broken = setup.clone();
    break_it(&world, &mut broken);
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in:\n{message}");
    }
    assert!(
        message.contains("nothing to resume: run ")
            && message
                .contains("made no progress, so the next `highwater run invoices` starts afresh"),
        "{message}"
    );
    assert!(
        !message.contains("sim-token") && !message.contains("wrong-token"),
        "secret leaked:\n{message}"
    );
    assert_eq!(
        world.state_dump().await,
        before,
        "the failed run changed the state store"
    );
    // The history keeps the failed attempt, with the error it printed.
    let out = world.highwater(&["runs", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let newest: serde_json::Value = text
        .lines()
        .next()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no run in the history:\n{text}"));
    assert_eq!(newest["status"], "failed", "{newest}");
    let error = newest["errors"]["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    for part in expected {
        assert!(error.contains(part), "expected {part:?} in {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_stops_after_retries() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.max_attempts = 3;
    fails_cleanly(
        "unreachable",
        setup,
        |world, _| {
            // Port 9 (discard) on loopback: nothing listens there.
            let text = std::fs::read_to_string(&world.config).expect("read");
            std::fs::write(
                &world.config,
                text.replace(&world.sim.source_url(), "http://127.0.0.1:9"),
            )
            .expect("write");
        },
        &[
            "source kept failing",
            "could not connect",
            "gave up after 3 attempts",
        ],
    )
    .await;
}

/// A PostgreSQL destination nothing answers at: the run stops after its
/// attempts naming the connection's own error, not a pool's timeout, and
/// keeps nothing it did not write.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_stops_after_retries_naming_the_cause() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.max_attempts = 2;
    let world = World::start("unreachable-db", SimConfig::new(31, 300), &setup).await;
    let text = std::fs::read_to_string(&world.config).expect("read");
    let start = text.find("[sync.destination]").expect("destination table");
    let end = text.find("[sync.retry]").expect("retry table");
    // Port 9 (discard) on loopback: nothing listens there.
    let destination = "[sync.destination]\ntype = \"postgres\"\n\
        url = \"postgres://postgres@127.0.0.1:9/test\"\n\
        table = \"contacts\"\nversion_column = \"row_version\"\n\n";
    std::fs::write(
        &world.config,
        format!("{}{destination}{}", &text[..start], &text[end..]),
    )
    .expect("write");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    for part in [
        "PostgreSQL 127.0.0.1:9/test table contacts",
        "gave up after 2 attempts",
        "Connection refused",
        "fix the cause, then `highwater run invoices` resumes it",
    ] {
        assert!(message.contains(part), "expected {part:?} in:\n{message}");
    }
    assert!(!message.contains("pool timed out"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_stops_with_a_clear_message() {
    let setup = Setup::new(Style::Cursor, Mode::Put);
    fails_cleanly(
        "unauthorized",
        setup.clone(),
        |world, broken| {
            broken.source_auth = r#"{ type = "bearer", token = "wrong-token" }"#.into();
            world.rewrite(broken);
        },
        &[
            "source refused the credentials",
            // With what the API said of them.
            r#"answered 401 ({"error":"unauthorized"})"#,
            "check the auth settings",
        ],
    )
    .await;
    fails_cleanly(
        "unauthorized-dest",
        setup,
        |world, broken| {
            broken.dest_auth = r#"{ type = "bearer", token = "wrong-token" }"#.into();
            world.rewrite(broken);
            // A mapping change, so that every record has something new to write.
            let text = std::fs::read_to_string(&world.config).expect("read");
            let text = text.replace(
                "currency = \"currency\"",
                "currency = \"currency\"\nplan = \"status\"",
            );
            std::fs::write(&world.config, text).expect("write");
        },
        &["destination refused the credentials", "answered 401"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_is_not_json_stops_the_run() {
    fails_cleanly(
        "not-json",
        Setup::new(Style::Cursor, Mode::Put),
        |world, _| {
            world.sim.set_source_faults(SourceFaults {
                bad_body: Some(BadBody::NotJson),
                ..SourceFaults::default()
            });
            // Asked for again as a 5xx is, but not for a minute's outage.
            let text = std::fs::read_to_string(&world.config).expect("read");
            let text = text.replace("[sync.retry]\n", "[sync.retry]\noutage = \"0s\"\n");
            std::fs::write(&world.config, text).expect("write");
        },
        &[
            "is not usable",
            "not JSON",
            "text/html",
            "maintenance",
            "(asked 10 times)",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_without_the_records_path_stops_the_run() {
    fails_cleanly(
        "no-records-path",
        Setup::new(Style::Keyset, Mode::Put),
        |world, _| {
            world.sim.set_source_faults(SourceFaults {
                bad_body: Some(BadBody::MissingRecords),
                ..SourceFaults::default()
            });
        },
        &["the answer has no `data` field (records_path)"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_api_is_stopped_in_every_style() {
    for style in Style::ALL {
        let world = World::start(&format!("loop-{style:?}"), SimConfig::new(32, 1000), &{
            let mut s = Setup::new(style, Mode::Put);
            s.page_size = 50;
            s
        })
        .await;
        world.sim.set_source_faults(SourceFaults {
            loop_pagination: true,
            ..SourceFaults::default()
        });
        let out = world.highwater(&["run", SYNC]).await;
        assert_eq!(out.status.code(), Some(1), "{style:?}: {}", describe(&out));
        let message = stderr(&out);
        assert!(
            message.contains("looping")
                || message.contains("the same records for two different positions"),
            "{style:?}: {message}"
        );
        assert!(
            world.sim.stats().source.requests < 50,
            "{style:?}: the loop was not caught quickly"
        );
    }
}
