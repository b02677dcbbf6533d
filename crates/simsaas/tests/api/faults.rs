//! Fault injection: deterministic for a seed, retried writes get through,
//! writes that land late or before a 502, and deadlines of 429s.

use super::*;

fn noisy_source() -> SourceFaults {
    SourceFaults {
        rate_limit_ratio: 0.15,
        rate_limit_date_ratio: 0.1,
        burst_start_ratio: 0.1,
        burst_len: 3,
        ..SourceFaults::default()
    }
}

fn noisy_dest() -> DestFaults {
    DestFaults {
        rate_limit_ratio: 0.2,
        rate_limit_date_ratio: 0.1,
        burst_start_ratio: 0.1,
        burst_len: 3,
        ..DestFaults::default()
    }
}

async fn fault_run(seed: u64) -> Result<(Vec<u16>, simsaas::SimStats), Box<dyn Error>> {
    let mut cfg = SimConfig::new(seed, 50);
    cfg.source = noisy_source();
    cfg.dest = noisy_dest();
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let resp = c
            .get(format!("{}/v1/cursor/invoices?limit=5", sim.source_url()))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let ra = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .ok_or("429 carries Retry-After")?;
            assert!(ra == "1" || httpdate::parse_http_date(ra).is_ok(), "{ra}");
        }
        statuses.push(resp.status().as_u16());
    }
    for i in 0..40 {
        let ext = format!("inv_{:06}", i % 10);
        let resp = c
            .put(format!(
                "{}/v1/contacts/by-external-id/{ext}",
                sim.dest_url()
            ))
            .bearer_auth(TOKEN)
            .json(&json!({ "version": 1, "email": "a@example.com" }))
            .send()
            .await?;
        statuses.push(resp.status().as_u16());
    }
    let stats = sim.stats();
    sim.shutdown().await;
    Ok((statuses, stats))
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() -> R {
    let (a, stats_a) = fault_run(42).await?;
    let (b, stats_b) = fault_run(42).await?;
    let (other, _) = fault_run(43).await?;
    assert_eq!(a, b);
    assert_eq!(stats_a, stats_b);
    assert_ne!(a, other, "another seed gives another pattern");
    let s = &stats_a.source;
    assert!(
        s.rate_limited > 0 && s.rate_limited_date > 0 && s.server_errors > 0,
        "{s:?}"
    );
    assert!(stats_a.dest.rate_limited + stats_a.dest.server_errors > 0);
    assert!(a.iter().any(|&c| [500, 502, 503, 504].contains(&c)));
    Ok(())
}

#[tokio::test]
async fn retried_dest_writes_always_get_through() -> R {
    let mut cfg = SimConfig::new(8, 10);
    cfg.dest = DestFaults {
        rate_limit_ratio: 0.6,
        burst_start_ratio: 0.3,
        burst_len: 4,
        ..DestFaults::default()
    };
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let mut faults = 0;
    for i in 0..30 {
        let url = format!("{}/v1/contacts/by-external-id/inv_{i:06}", sim.dest_url());
        let mut ok = false;
        for _attempt in 0..3 {
            let resp = c
                .put(&url)
                .bearer_auth(TOKEN)
                .json(&json!({ "version": 1 }))
                .send()
                .await?;
            if resp.status().is_success() {
                ok = true;
                break;
            }
            faults += 1;
        }
        assert!(ok, "a key never meets more than two faults in a row");
    }
    assert!(faults > 10);
    assert_eq!(sim.dest_count(), 30);

    sim.set_dest_faults(DestFaults {
        rate_limit_rps: Some(3.0),
        ..DestFaults::default()
    });
    let mut limited = 0;
    for _ in 0..10 {
        let resp = c
            .get(format!(
                "{}/v1/contacts?external_id=inv_000001",
                sim.dest_url()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(resp.headers()["retry-after"], "1");
            limited += 1;
        }
    }
    assert!(limited >= 5, "token bucket empties: {limited}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_does_not_wait_for_slow_faults() -> R {
    let mut cfg = SimConfig::new(14, 5);
    cfg.source.slow_ratio = 1.0;
    cfg.source.slow_delay = Duration::from_secs(60);
    let sim = SimSaas::start(cfg).await?;
    let url = format!("{}/v1/offset/invoices", sim.source_url());
    let pending = tokio::spawn(async move {
        let c = builder().build().expect("an HTTP client");
        c.get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .map(|r| r.status())
    });
    for _ in 0..200 {
        if sim.stats().source.slow == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.stats().source.slow, 1);
    let t0 = Instant::now();
    sim.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    let _ = pending.await;
    Ok(())
}

#[tokio::test]
async fn writes_can_land_after_the_client_gave_up_or_before_a_502() -> R {
    let mut cfg = SimConfig::new(10, 1);
    cfg.dest.delayed_apply_ratio = 1.0;
    cfg.dest.delayed_apply_after = Duration::from_millis(300);
    let sim = SimSaas::start(cfg).await?;
    let d = sim.dest_url();
    let impatient = builder().timeout(Duration::from_millis(100)).build()?;
    let put = |c: &Client, v: i64| {
        c.put(format!("{d}/v1/contacts/by-external-id/x"))
            .bearer_auth(TOKEN)
            .json(&json!({ "version": v }))
            .send()
    };
    // Version 1 is held and the client gives up; version 2 then goes through.
    assert!(put(&impatient, 1).await.is_err());
    sim.set_dest_faults(DestFaults::default());
    let c = client()?;
    assert!(put(&c, 2).await?.status().is_success());
    assert_eq!(sim.dest_dump().objects[0].body["version"], 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let dump = sim.dest_dump();
    assert_eq!(dump.objects[0].body["version"], 1, "the late write landed");
    assert_eq!(dump.late_regressions, ["x"]);
    let stats = sim.stats().dest;
    assert!(stats.delayed_apply >= 1);
    // How late it landed: the hold, and whatever the task waited for a core.
    assert!(
        stats.delayed_apply_max_ms >= 300,
        "{}",
        stats.delayed_apply_max_ms
    );

    let mut cfg = SimConfig::new(11, 1);
    cfg.dest.commit_then_502_ratio = 1.0;
    let sim = SimSaas::start(cfg).await?;
    let r = c
        .post(format!("{}/v1/contacts", sim.dest_url()))
        .bearer_auth(TOKEN)
        .json(&json!({ "external_id": "y" }))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(sim.dest_count(), 1, "committed before the 502");
    assert_eq!(sim.stats().dest.commit_then_502, 1);
    Ok(())
}

/// A 429 whose body comes late still shows its status and `Retry-After` at once,
/// and a request that arrives before the deadline (after the grace for requests
/// in flight) is counted.
#[tokio::test]
async fn retry_after_deadlines_are_watched() -> R {
    let mut cfg = SimConfig::new(13, 50);
    cfg.source.rate_limit_ratio = 1.0;
    cfg.source.retry_after_secs = 2;
    cfg.source.rate_limit_body_delay = Duration::from_secs(1);
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let url = format!("{}/v1/cursor/invoices", sim.source_url());
    let started = Instant::now();
    let r = c.get(&url).bearer_auth(TOKEN).send().await?;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the head came at once"
    );
    let _ = r.bytes().await?;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the body came late"
    );
    assert_eq!(sim.stats().source.retry_after_violations, 0);
    c.get(&url).bearer_auth(TOKEN).send().await?;
    assert_eq!(sim.stats().source.retry_after_violations, 1);
    Ok(())
}
