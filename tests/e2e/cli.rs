//! The command line as people use it: validate, status, run reports, budgets that
//! stop at a checkpoint and resume the same run, and one process per sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use simsaas::SimConfig;

use crate::util::{
    Mode, SYNC, Setup, Style, World, describe, finish, report, serve_local, stderr, stdout,
};

#[tokio::test(flavor = "multi_thread")]
async fn validate_and_status_describe_the_syncs() {
    let world = World::start(
        "status",
        SimConfig::new(41, 400),
        &Setup::new(Style::Cursor, Mode::Put),
    )
    .await;
    let out = world.highwater(&["validate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).ends_with("ok — 1 sync: invoices\n"),
        "{}",
        stdout(&out)
    );
    let out = world.highwater(&["validate", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let validated = report(&out);
    assert_eq!(validated["syncs"], serde_json::json!(["invoices"]));
    assert_eq!(validated["warnings"], serde_json::json!([]));
    assert_eq!(validated["valid"], true);
    // A file with problems: each one as JSON, and in words on stderr.
    let bad = world.dir.join("bad.toml");
    std::fs::write(&bad, "[[sync]]\nname = 7\ncolour = \"blue\"\n").expect("write");
    let out = crate::util::highwater_at(&bad, &["validate", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let refused = report(&out);
    assert_eq!(refused["valid"], false, "{refused}");
    let problems = refused["problems"].as_array().cloned().unwrap_or_default();
    assert_eq!(problems.len(), 2, "{refused}");
    assert_eq!(problems[0]["line"], 2, "{refused}");
    assert_eq!(problems[1]["key"], "sync[0].colour", "{refused}");
    assert!(stderr(&out).contains("bad.toml:3"), "{}", describe(&out));

    let out = world.highwater(&["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stdout(&out).contains("never run"), "{}", stdout(&out));
    assert!(
        !world.has_store().await,
        "status must not create the state store"
    );

    let out = world.run_to_completion().await;
    let text = stdout(&out);
    for part in [
        "run ",
        " completed in ",
        "window",
        "(watermark)",
        "written",
        "dead-lettered",
        "retries",
    ] {
        assert!(
            text.contains(part),
            "{part:?} missing from the report:\n{text}"
        );
    }
    let out = world.highwater(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    // `--json` is global: before the command as after it. (The lag is read
    // from the clock at each call, and may have ticked between the two.)
    let out = world.highwater(&["--json", "status"]).await;
    let without_lag = |mut status: serde_json::Value| {
        status["syncs"][0]["lag_seconds"].take();
        status
    };
    assert_eq!(without_lag(report(&out)), without_lag(status.clone()));
    let sync = &status["syncs"][0];
    assert_eq!(sync["sync"], SYNC);
    assert!(sync["open_run"].is_null());
    assert!(sync["high_water_mark"].is_string());
    assert!(sync["lag_seconds"].as_i64().is_some_and(|lag| lag < 60));
    assert!(sync["dead_letters"].as_i64().is_some_and(|n| n > 0));
    assert_eq!(
        sync["last_completed_run"]["watermark"],
        sync["high_water_mark"]
    );

    let out = world.highwater(&["status"]).await;
    let table = stdout(&out);
    for header in [
        "sync",
        "open run",
        "last completed run",
        "high-water mark",
        "lag",
        "dead letters",
    ] {
        assert!(table.contains(header), "{table}");
    }

    let out = world.highwater(&["run", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no sync named \"nope\" (defined: invoices)"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_pages_stops_at_a_checkpoint_and_the_next_run_resumes_it() {
    let mut setup = Setup::new(Style::Offset, Mode::Lookup);
    setup.page_size = 50;
    let world = World::start("max-pages", SimConfig::new(42, 600), &setup).await;
    let out = world
        .highwater(&["run", SYNC, "--max-pages", "3", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let first = report(&out);
    assert_eq!(first["outcome"], "stopped");
    assert_eq!(first["stop_reason"], "max-pages reached");
    assert_eq!(first["session"]["pages"], 3);
    assert_eq!(first["resumed"], false);

    let status: serde_json::Value =
        serde_json::from_slice(&world.highwater(&["status", "--json"]).await.stdout)
            .expect("status");
    assert_eq!(status["syncs"][0]["open_run"]["run_id"], first["run_id"]);
    assert!(
        status["syncs"][0]["open_run"]["process"].is_null(),
        "stopped, so no process runs it: {status}"
    );
    assert!(status["syncs"][0]["high_water_mark"].is_null());

    let out = world
        .highwater(&["run", SYNC, "--max-pages", "2", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let second = report(&out);
    assert_eq!(second["run_id"], first["run_id"]);
    assert_eq!(second["watermark"], first["watermark"]);
    assert_eq!(second["resumed"], true);
    assert_eq!(second["counters"]["pages"], 5);

    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let last = report(&out);
    assert_eq!(last["run_id"], first["run_id"]);
    assert_eq!(last["watermark"], first["watermark"]);
    world.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_runtime_stops_at_a_checkpoint_even_mid_backoff() {
    let mut sim = SimConfig::new(43, 2000);
    sim.source.latency = Duration::from_millis(30);
    sim.source.rate_limit_ratio = 0.3;
    sim.source.retry_after_secs = 5;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 50;
    let world = World::start("max-runtime", sim, &setup).await;
    let started = std::time::Instant::now();
    let out = world
        .highwater(&["run", SYNC, "--max-runtime", "700ms", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a 5 s Retry-After outlived the budget"
    );
    let first = report(&out);
    assert_eq!(first["stop_reason"], "max-runtime reached");
    world
        .sim
        .set_source_faults(simsaas::SourceFaults::default());
    let out = world.highwater(&["run", SYNC, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(&out)["run_id"], first["run_id"]);
    world.assert_exact().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_of_the_same_sync_is_refused() {
    let mut sim = SimConfig::new(44, 3000);
    sim.source.latency = Duration::from_millis(40);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 20;
    let world = World::start("lock", sim, &setup).await;
    let mut first = world.spawn(&["run", SYNC]);
    // Wait until the first run has written something.
    for _ in 0..200 {
        if world.sim.dest_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(world.sim.dest_count() > 0);
    // The second process is pointed at a source of its own that counts what
    // it is asked: the first run goes on reading its source meanwhile.
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let (addr, _server) = serve_local(axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
    }))
    .await;
    let config = std::fs::read_to_string(&world.config)
        .expect("config")
        .replace(&world.sim.source_url(), &format!("http://{addr}"));
    let second = world.dir.join("second.toml");
    std::fs::write(&second, config).expect("write the second config");
    let out = finish(&mut world.command_with(&second, &["run", SYNC])).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = stderr(&out);
    assert!(
        message.contains("sync \"invoices\" is already running its incremental run (process "),
        "{message}"
    );
    assert!(message.contains("not starting a second one"), "{message}");
    // The refused process read nothing; the first goes on.
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "the refused run read its source"
    );
    assert!(first.try_wait().expect("wait").is_none());
    let _ = first.start_kill();
    let _ = first.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_warns_of_a_sync_that_reads_everything_or_misses_late_updates() {
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("validate-warnings", SimConfig::new(55, 10), &setup).await;
    let out = world.highwater(&["validate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stderr(&out), "", "a sound config has no warnings");

    setup.lookback = "0s";
    world.rewrite(&setup);
    let text = std::fs::read_to_string(&world.config).expect("read config");
    let text = text.replace("lower_bound_param = \"updated_after\"\n", "");
    std::fs::write(&world.config, text).expect("write config");
    let out = world.highwater(&["validate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).ends_with("ok — 1 sync: invoices\n"),
        "{}",
        describe(&out)
    );
    let warnings = stderr(&out);
    let file = world.config.display().to_string();
    let expected = [
        format!("warning: {file}:18: sync \"invoices\".source.lookback: runs do not overlap"),
        format!(
            "warning: {file}:8: sync \"invoices\".source: no `lower_bound_param` (nor `{{lower}}` in a parameter, header or body) and pagination is not keyset"
        ),
    ];
    let lines: Vec<&str> = warnings.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{warnings}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(line.starts_with(expected.as_str()), "{warnings}");
    }
}

/// Text logs written to a file or a pipe carry no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn text_logs_away_from_a_terminal_are_plain_text() {
    let mut sim = SimConfig::new(44, 100);
    sim.source.rate_limit_ratio = 0.2;
    sim.source.retry_after_secs = 0;
    let world = World::start("log-text", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    let mut command = tokio::process::Command::new(crate::util::bin());
    command
        .arg("--config")
        .arg(&world.config)
        .args(["--log-format", "text", "run", SYNC])
        .env("HIGHWATER_LOG", "info")
        .stdin(std::process::Stdio::null());
    let out = crate::util::finish(&mut command).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stderr(&out);
    assert!(text.contains("run started"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_log_line_of_a_run_carries_its_sync_and_run_id() {
    let mut sim = SimConfig::new(43, 400);
    // Retries are logged from the write slots and from the reading thread.
    sim.source.rate_limit_ratio = 0.2;
    sim.source.retry_after_secs = 0;
    sim.dest.burst_start_ratio = 0.02;
    let world = World::start("log-span", sim, &Setup::new(Style::Cursor, Mode::Put)).await;
    let mut command = tokio::process::Command::new(crate::util::bin());
    command
        .arg("--config")
        .arg(&world.config)
        .args(["run", SYNC, "--json", "--log-format", "json"])
        .env("HIGHWATER_LOG", "highwater_core=debug")
        .stdin(std::process::Stdio::null());
    let out = crate::util::finish(&mut command).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let run_id = report(&out)["run_id"].clone();
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let retried: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["event"] == "request_retried")
        .collect();
    for api in ["source", "destination"] {
        assert!(
            retried.iter().any(|l| l["api"] == api),
            "no {api} retry logged among {} lines",
            lines.len()
        );
    }
    for line in lines.iter().filter(|l| l["event"].is_string()) {
        assert_eq!(line["span"]["run_id"], run_id, "{line}");
        assert_eq!(line["span"]["sync"], SYNC, "{line}");
        assert_eq!(line["span"]["kind"], "incremental", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_config_that_validates_and_probes() {
    let sim = simsaas::SimSaas::start(SimConfig::new(5, 300))
        .await
        .expect("start sim");
    let dir = crate::util::fresh_dir("init");
    let config = dir.join("highwater.toml");
    let highwater = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(crate::util::bin());
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("MY_SYNC_SOURCE_TOKEN", "sim-token")
            .env("MY_SYNC_DESTINATION_TOKEN", "sim-token")
            .stdin(std::process::Stdio::null());
        command
    };
    let init = |mode: &str, extra: &[&str]| {
        let mut args: Vec<String> = [
            "init",
            "--source-url",
            &sim.source_url(),
            "--source-path",
            "/v1/cursor/invoices",
            "--destination-url",
            &sim.dest_url(),
            "--mode",
            mode,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // Nothing to ask off a terminal: a missing flag is bad input, no file.
    let mut args = init("put", &[]);
    args.truncate(args.len() - 2);
    let out = crate::util::finish(&mut highwater(args)).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("--mode"), "{}", describe(&out));
    assert!(!config.exists());
    let mut bad = init("put", &[]);
    bad[2] = "billing.example.com".into();
    let out = crate::util::finish(&mut highwater(bad)).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(!config.exists());

    for mode in ["put", "post", "lookup", "batch"] {
        let out = crate::util::finish(&mut highwater(init(mode, &["--force"]))).await;
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", describe(&out));
        let out = crate::util::finish(&mut highwater(vec!["validate".into()])).await;
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", describe(&out));
    }
    // A table or a file as the destination: no mode to ask for; the JSON
    // Lines one runs against the simulator as written.
    let pg = crate::util::postgres_url();
    for destination in [pg.as_str(), "sqlite:out/crm.db", "out/records.jsonl"] {
        let mut args = init("put", &["--force"]);
        args[6] = destination.into();
        args.truncate(7);
        args.push("--force".into());
        let out = crate::util::finish(&mut highwater(args)).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{destination}: {}",
            describe(&out)
        );
        let out = crate::util::finish(&mut highwater(vec!["validate".into()])).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{destination}: {}",
            describe(&out)
        );
    }
    let out = crate::util::finish(&mut highwater(vec!["run".into(), "my_sync".into()])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let lines = std::fs::read_to_string(dir.join("out").join("records.jsonl"))
        .expect("the JSON Lines file")
        .lines()
        .count();
    assert!(lines > 250, "{lines} lines");
    let mut bad = init("put", &["--force"]);
    bad[6] = "ftp://files.example.com".into();
    let out = crate::util::finish(&mut highwater(bad)).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("sqlite:FILE"), "{}", describe(&out));

    // An existing file is kept.
    let before = std::fs::read_to_string(&config).expect("config");
    let out = crate::util::finish(&mut highwater(init("put", &[]))).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&config).expect("config"), before);

    // Against an API shaped as its comments assume, the probe finds nothing wrong.
    let out = crate::util::finish(&mut highwater(vec!["probe".into(), "my_sync".into()])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("nothing looks wrong"),
        "{}",
        describe(&out)
    );
    sim.shutdown().await;
}

/// `status` names the process running a sync's open run, and no process
/// once it is gone (killed here: the run stays open, to be resumed).
#[tokio::test(flavor = "multi_thread")]
async fn status_names_the_process_running_a_sync() {
    let mut sim = SimConfig::new(43, 3_000);
    sim.source.latency = Duration::from_millis(30);
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.page_size = 50;
    let world = World::start("status-process", sim, &setup).await;
    let mut child = world.spawn(&["run", SYNC]);
    let pid = child.id().expect("pid").to_string();
    let process = |status: &serde_json::Value| status["syncs"][0]["open_run"]["process"].clone();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = world.highwater(&["status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // A process id, on its host for a lease.
        if process(&status).as_str().and_then(|p| p.split(' ').next()) == Some(pid.as_str()) {
            let text = stdout(&world.highwater(&["status"]).await);
            assert!(
                text.contains(&format!("running in process {pid}")),
                "{text}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "status never named the process: {status} ({:?})",
            child.try_wait()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let out = world.highwater(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status");
    assert!(
        status["syncs"][0]["open_run"]["run_id"].is_string(),
        "{status}"
    );
    assert!(process(&status).is_null(), "{status}");
    let text = stdout(&world.highwater(&["status"]).await);
    assert!(
        text.contains("not running; the next run resumes it"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_commands_that_read_the_store_need_no_sync_secret() {
    const TOKEN: &str = "HIGHWATER_TEST_CLI_TOKEN";
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    let auth = format!(r#"{{ type = "bearer", token = "${{{TOKEN}}}" }}"#);
    setup.source_auth = auth.clone();
    setup.dest_auth = auth;
    let world = World::start("no-secret", SimConfig::new(43, 300), &setup).await;
    let with_token = |args: &[&str]| {
        let mut command = world.command_with(&world.config, args);
        command.env(TOKEN, "sim-token");
        command
    };
    let out = finish(&mut with_token(&["run", SYNC])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let letters = stdout(&world.highwater(&["dlq", "list", SYNC, "--json"]).await);
    let letter: serde_json::Value =
        serde_json::from_str(letters.lines().next().expect("a dead letter")).expect("JSON");
    let letter = letter["source_id"].as_str().expect("its id").to_owned();

    // Without the token: every command that only reads or tends the store.
    for args in [
        vec!["status"],
        vec!["runs", SYNC],
        vec!["explain", SYNC, &letter],
        vec!["dlq", "list", SYNC],
        vec!["dlq", "show", SYNC, &letter],
        vec!["dlq", "discard", SYNC, "--id", &letter, "--reason", "test"],
        vec!["reset", SYNC],
    ] {
        let out = world.highwater(&args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
    }
    let out = world.highwater(&["runs", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("no sync named \"nope\" (defined: {SYNC})")),
        "{}",
        stderr(&out)
    );
    // The commands that call the APIs say which variable they lack.
    for args in [vec!["run", SYNC], vec!["dlq", "replay", SYNC, "--all"]] {
        let out = world.highwater(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains(&format!("environment variable {TOKEN} is not set")),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // The store's own variables are still needed, and named.
    let config = world.config.with_file_name("state-var.toml");
    std::fs::write(
        &config,
        "[state]\npath = \"${HIGHWATER_TEST_CLI_DIR}/state.db\"\n",
    )
    .expect("write config");
    let out = finish(&mut world.command_with(&config, &["status"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains(
            "state-var.toml:2: state.path: environment variable HIGHWATER_TEST_CLI_DIR is not set"
        ),
        "{}",
        stderr(&out)
    );
}
