//! Prometheus metrics: scraped from `--metrics-addr` while a run runs, and read
//! from `--metrics-file` after it; their counters agree with the run's report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report};

/// `name{labels} value` lines, keyed by the whole `name{labels}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sum(samples: &HashMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            k.split('{').next() == Some(name) && with.iter().all(|label| k.contains(label))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_served_during_a_run_and_written_after_it_agree_with_its_report() {
    let mut sim = SimConfig::new(29, 1_500);
    sim.dest.latency = Duration::from_millis(3);
    sim.dest.burst_start_ratio = 0.01;
    sim.dest.rate_limit_ratio = 0.01;
    sim.dest.retry_after_secs = 0;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.concurrency = 2;
    setup.page_size = 50;
    let world = World::start("metrics", sim, &setup).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let file = world.dir.join("highwater.prom");
    let mut command = tokio::process::Command::new(crate::util::bin());
    command
        .arg("--config")
        .arg(&world.config)
        .args([
            "run",
            SYNC,
            "--json",
            "--metrics-addr",
            &addr,
            "--metrics-file",
        ])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn highwater");

    // Scraped mid-run: some records written, not all.
    let client = highwater_core::http::client()
        .build()
        .expect("an HTTP client");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut mid_run = None;
    while Instant::now() < deadline && world.sim.dest_count() < 1_400 {
        if let Ok(answer) = client.get(format!("http://{addr}/metrics")).send().await
            && let Ok(text) = answer.text().await
        {
            let written = sum(
                &samples(&text),
                "highwater_records_total",
                &["outcome=\"written\""],
            );
            if written > 0.0 {
                mid_run = Some(written);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = crate::util::finish_child(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let run = report(&out);
    let written_at_end = run["session"]["written"].as_f64().expect("written");
    let mid_run = mid_run.expect("the endpoint answered with records written during the run");
    assert!(mid_run < written_at_end, "{mid_run} of {written_at_end}");

    // The file, after the run: the same counts as the report.
    let text = std::fs::read_to_string(&file).expect("metrics file");
    let s = samples(&text);
    let sync = format!("sync=\"{SYNC}\"");
    for outcome in ["read", "written", "unchanged", "stale", "dead_lettered"] {
        assert_eq!(
            sum(
                &s,
                "highwater_records_total",
                &[&sync, &format!("outcome=\"{outcome}\"")]
            ),
            run["session"][outcome].as_f64().unwrap_or(-1.0),
            "{outcome}\n{text}"
        );
    }
    assert_eq!(
        sum(&s, "highwater_requests_retried_total", &[&sync]),
        run["retries"].as_f64().unwrap_or(-1.0),
        "{text}"
    );
    // Every record dead-lettered by this run, by stage.
    assert_eq!(
        sum(&s, "highwater_dead_letters_total", &[&sync]),
        run["session"]["dead_lettered"].as_f64().unwrap_or(-1.0),
        "{text}"
    );
    let stats = world.sim.stats();
    assert_eq!(
        sum(
            &s,
            "highwater_http_responses_total",
            &[&sync, "api=\"destination\"", "class=\"5xx\""]
        ),
        stats.dest.server_errors as f64,
        "{text}"
    );
    assert!(
        sum(
            &s,
            "highwater_http_responses_total",
            &[&sync, "api=\"destination\"", "class=\"2xx\""]
        ) >= written_at_end,
        "{text}"
    );
    for gauge in [
        "highwater_lag_seconds",
        "highwater_high_water_mark_age_seconds",
        "highwater_run_duration_seconds",
        "highwater_last_success_timestamp_seconds",
    ] {
        assert!(
            s.keys()
                .any(|k| k.split('{').next() == Some(gauge) && k.contains(&sync)),
            "{gauge} missing:\n{text}"
        );
    }
}
