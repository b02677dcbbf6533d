//! End-to-end tests of the simulated APIs over real HTTP on 127.0.0.1.
//! Every loop here is bounded so a regression fails instead of hanging.

use std::collections::HashSet;
use std::error::Error;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use simsaas::{
    BadBody, Deletion, DestFaults, LimitHeaders, Mutations, Rejection, SimAuth, SimConfig, SimSaas,
    SourceFaults,
};

type R = Result<(), Box<dyn Error>>;

const TOKEN: &str = "sim-token";
const MAX_PAGES: usize = 10_000;

fn client() -> Result<Client, reqwest::Error> {
    Client::builder().timeout(Duration::from_secs(20)).build()
}

async fn get(c: &Client, url: &str) -> Result<(StatusCode, Value), Box<dyn Error>> {
    let resp = c.get(url).bearer_auth(TOKEN).send().await?;
    let status = resp.status();
    Ok((status, resp.json().await?))
}

fn ids(data: &Value) -> Vec<String> {
    data.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

fn expected_ids(sim: &SimSaas) -> Vec<String> {
    sim.source_records().into_iter().map(|r| r.id).collect()
}

async fn wait_mutations(sim: &SimSaas, n: usize) -> R {
    for _ in 0..500 {
        if sim.mutations_done() >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("only {} of {n} mutations happened", sim.mutations_done()).into())
}

fn ties_config(seed: u64, records: usize) -> SimConfig {
    let mut cfg = SimConfig::new(seed, records);
    cfg.shared_timestamp_ratio = 0.3;
    cfg
}

#[tokio::test]
async fn cursor_walk_yields_every_record_once_in_order() -> R {
    let sim = SimSaas::start(ties_config(1, 537)).await?;
    let c = client()?;
    let base = format!("{}/v1/cursor/invoices?limit=50", sim.source_url());
    let (mut seen, mut bodies, mut url) = (Vec::new(), Vec::new(), base.clone());
    for _ in 0..MAX_PAGES {
        let (status, page) = get(&c, &url).await?;
        assert_eq!(status, StatusCode::OK);
        seen.extend(ids(&page["data"]));
        bodies.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => url = format!("{base}&cursor={next}"),
            None => break,
        }
    }
    let records = sim.source_records();
    assert_eq!(seen, expected_ids(&sim));
    let served: Vec<&Value> = bodies.iter().collect();
    let stored: Vec<&Value> = records.iter().map(|r| &r.body).collect();
    assert_eq!(served, stored, "served bodies match the dump");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn links_walk_carries_query_auth_and_epoch_ms() -> R {
    let mut cfg = ties_config(2, 321);
    cfg.source_auth = SimAuth::ApiKeyQuery {
        param: "api_key".into(),
        key: "k3y".into(),
    };
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let mut url = format!(
        "{}/v1/links/invoices?limit=40&api_key=k3y&ts=epoch_ms",
        sim.source_url()
    );
    let mut seen = Vec::new();
    let mut finished = false;
    for _ in 0..MAX_PAGES {
        let resp = c.get(&url).send().await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let link = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let page: Value = resp.json().await?;
        assert!(
            page["data"][0]["updated_at"].is_i64(),
            "ts=epoch_ms gives integers"
        );
        seen.extend(ids(&page["data"]));
        match page["links"]["next"].as_str() {
            Some(next) => {
                assert_eq!(link, Some(format!("<{next}>; rel=\"next\"")));
                assert!(next.contains("api_key=k3y") && next.contains("ts=epoch_ms"));
                url = next.to_owned();
            }
            None => {
                assert_eq!(link, None, "no Link header on the last page");
                finished = true;
                break;
            }
        }
    }
    assert!(finished);
    assert_eq!(seen, expected_ids(&sim));
    sim.shutdown().await;
    Ok(())
}

async fn keyset_walk(sim: &SimSaas, limit: usize) -> Result<Vec<String>, Box<dyn Error>> {
    let c = client()?;
    let base = format!("{}/v1/keyset/invoices?limit={limit}", sim.source_url());
    let (mut seen, mut url) = (Vec::new(), base.clone());
    for _ in 0..MAX_PAGES {
        let (status, page) = get(&c, &url).await?;
        assert_eq!(status, StatusCode::OK);
        let Some(last) = page["data"].as_array().and_then(|d| d.last()).cloned() else {
            return Ok(seen);
        };
        seen.extend(ids(&page["data"]));
        let since = last["updated_at"].as_str().unwrap_or_default();
        let after_id = last["id"].as_str().unwrap_or_default();
        // `+`/`:` in RFC 3339 must survive the query string.
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("since", since)
            .append_pair("after_id", after_id)
            .finish();
        url = format!("{base}&{q}");
    }
    Err("keyset walk did not end".into())
}

#[tokio::test]
async fn keyset_walk_does_not_skip_shared_timestamps() -> R {
    let mut cfg = SimConfig::new(3, 200);
    cfg.shared_timestamp_ratio = 0.5;
    let sim = SimSaas::start(cfg).await?;
    let records = sim.source_records();
    let shared = records
        .iter()
        .filter(|r| r.updated_at == records[100].updated_at)
        .count();
    assert!(shared >= 100, "half the records share one instant");
    // A page size far below the tie group forces pages to split inside it.
    let seen = keyset_walk(&sim, 7).await?;
    assert_eq!(seen, expected_ids(&sim));
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 200);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn offset_and_page_walks_yield_every_record_once_in_order() -> R {
    let sim = SimSaas::start(ties_config(4, 333)).await?;
    let c = client()?;
    let expected = expected_ids(&sim);

    let mut by_offset = Vec::new();
    for i in 0..MAX_PAGES {
        let url = format!(
            "{}/v1/offset/invoices?limit=60&offset={}",
            sim.source_url(),
            i * 60
        );
        let (_, page) = get(&c, &url).await?;
        assert_eq!(page["total"], json!(333));
        let got = ids(&page["data"]);
        if got.is_empty() {
            break;
        }
        by_offset.extend(got);
    }
    assert_eq!(by_offset, expected);

    let mut by_page = Vec::new();
    for p in 1..MAX_PAGES {
        let url = format!(
            "{}/v1/pages/invoices?per_page=45&page={p}",
            sim.source_url()
        );
        let (_, page) = get(&c, &url).await?;
        assert_eq!(page["page"], json!(p));
        let got = ids(&page["items"]);
        if got.is_empty() {
            break;
        }
        by_page.extend(got);
    }
    assert_eq!(by_page, expected);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn time_bounds_are_inclusive() -> R {
    let sim = SimSaas::start(SimConfig::new(5, 100)).await?;
    let c = client()?;
    let records = sim.source_records();
    let (lo, hi) = (records[10].updated_at, records[20].updated_at);
    let url = format!(
        "{}/v1/cursor/invoices?limit=1000&updated_after={}&updated_before={}",
        sim.source_url(),
        lo.as_millisecond(),
        hi.as_millisecond()
    );
    let (_, page) = get(&c, &url).await?;
    let want: Vec<String> = records
        .iter()
        .filter(|r| r.updated_at >= lo && r.updated_at <= hi)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids(&page["data"]), want);
    assert!(page["next_cursor"].is_null());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn offset_listing_shifts_after_backdated_insert() -> R {
    let mut cfg = SimConfig::new(6, 100);
    cfg.mutations = Mutations {
        max: 1,
        interval: Duration::from_millis(20),
        weights: [0, 0, 0, 1],
        ..Mutations::default()
    };
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let url = format!("{}/v1/offset/invoices?limit=1000", sim.source_url());
    let (_, before) = get(&c, &url).await?;
    wait_mutations(&sim, 1).await?;
    let (_, after) = get(&c, &url).await?;
    let (before, after) = (ids(&before["data"]), ids(&after["data"]));
    assert_eq!(after.len(), 101);
    let p = after
        .iter()
        .position(|id| id == "inv_000101")
        .ok_or("inserted id continues the sequence")?;
    assert!(p < 100, "backdated insert lands inside the existing span");
    assert_eq!(
        after[p + 1],
        before[p],
        "everything after it moved one offset down"
    );
    let mut without = after.clone();
    without.remove(p);
    assert_eq!(without, before);
    sim.stop_mutations();
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stale_versions_only_after_current_was_served() -> R {
    let mut cfg = SimConfig::new(7, 5);
    cfg.source.stale_version_ratio = 1.0;
    cfg.mutations = Mutations {
        max: 1,
        interval: Duration::from_millis(10),
        weights: [1, 0, 0, 0],
        ..Mutations::default()
    };
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let url = format!("{}/v1/offset/invoices", sim.source_url());
    let version_of = |page: &Value, id: &str| {
        page["data"]
            .as_array()
            .and_then(|d| d.iter().find(|r| r["id"] == id))
            .map(|r| r["version"].clone())
    };
    get(&c, &url).await?;
    wait_mutations(&sim, 1).await?;
    let updated = sim
        .source_records()
        .into_iter()
        .find(|r| r.version == 2)
        .ok_or("one record was updated")?;
    let (_, first) = get(&c, &url).await?;
    assert_eq!(
        version_of(&first, &updated.id),
        Some(json!(2)),
        "current first"
    );
    let (_, second) = get(&c, &url).await?;
    assert_eq!(
        version_of(&second, &updated.id),
        Some(json!(1)),
        "then the lagging replica"
    );
    assert_eq!(sim.stats().source.stale_served, 1);
    sim.shutdown().await;
    Ok(())
}

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
async fn the_destination_tells_its_bucket_in_the_form_it_is_told() -> R {
    let sim = SimSaas::start(SimConfig::new(10, 1)).await?;
    let c = client()?;
    let lookup = || {
        c.get(format!(
            "{}/v1/contacts?external_id=inv_000001",
            sim.dest_url()
        ))
        .bearer_auth(TOKEN)
        .send()
    };
    let with = |form| DestFaults {
        rate_limit_rps: Some(3.0),
        rate_limit_headers: form,
        ..DestFaults::default()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    // Only Retry-After, on the 429s.
    sim.set_dest_faults(with(LimitHeaders::RetryAfterOnly));
    for _ in 0..4 {
        let r = lookup().await?;
        assert_eq!(header(&r, "x-ratelimit-remaining"), None);
        assert_eq!(header(&r, "ratelimit"), None);
    }

    sim.set_dest_faults(with(LimitHeaders::XRateLimit));
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let r = lookup().await?;
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(header(&r, "x-ratelimit-reset").as_deref(), Some("1"));
        remaining.push((r.status().as_u16(), header(&r, "x-ratelimit-remaining")));
    }
    let left = |n: &str| Some(n.to_owned());
    assert_eq!(
        remaining,
        [
            (200, left("2")),
            (200, left("1")),
            (200, left("0")),
            (429, left("0"))
        ]
    );

    sim.set_dest_faults(with(LimitHeaders::XRateLimitEpoch));
    let r = lookup().await?;
    let reset: u64 = header(&r, "x-ratelimit-reset")
        .unwrap_or_default()
        .parse()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    assert!(
        (now.as_secs()..=now.as_secs() + 2).contains(&reset),
        "{reset} at {now:?}"
    );

    sim.set_dest_faults(with(LimitHeaders::Ietf));
    let r = lookup().await?;
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"bucket\";q=3;w=1")
    );
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some("\"bucket\";r=2;t=1")
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dest_put_post_patch_and_idempotent_upsert() -> R {
    let sim = SimSaas::start(SimConfig::new(9, 1)).await?;
    let c = client()?;
    let d = sim.dest_url();
    let put = |ext: &str, v: i64| {
        c.put(format!("{d}/v1/contacts/by-external-id/{ext}"))
            .bearer_auth(TOKEN)
            .json(&json!({ "version": v, "email": "a@example.com" }))
            .send()
    };
    assert_eq!(put("inv_000001", 1).await?.status(), StatusCode::CREATED);
    let r = put("inv_000001", 2).await?;
    assert_eq!(r.status(), StatusCode::OK);
    let obj: Value = r.json().await?;
    assert_eq!(
        (obj["external_id"].clone(), obj["version"].clone()),
        (json!("inv_000001"), json!(2))
    );

    // POST never deduplicates; missing external_id is a 400.
    for _ in 0..2 {
        let r = c
            .post(format!("{d}/v1/contacts"))
            .bearer_auth(TOKEN)
            .json(&json!({ "external_id": "dup" }))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = c
        .post(format!("{d}/v1/contacts"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "x" }))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (_, found) = get(&c, &format!("{d}/v1/contacts?external_id=dup")).await?;
    assert_eq!(found["data"].as_array().map(Vec::len), Some(2));

    let first_id = obj["id"].as_str().ok_or("id")?;
    let r = c
        .patch(format!("{d}/v1/contacts/{first_id}"))
        .bearer_auth(TOKEN)
        .json(&json!({ "version": 3 }))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .patch(format!("{d}/v1/contacts/ct_999"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let upsert = |key: Option<&str>, v: i64| {
        let mut rb = c
            .post(format!("{d}/v1/contacts/upsert"))
            .bearer_auth(TOKEN)
            .json(&json!({ "external_id": "u1", "version": v }));
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        rb.send()
    };
    let r1 = upsert(Some("k1"), 1).await?;
    assert_eq!(r1.status(), StatusCode::CREATED);
    let body1 = r1.text().await?;
    let r2 = upsert(Some("k1"), 1).await?;
    assert_eq!(
        r2.status(),
        StatusCode::CREATED,
        "replay keeps the stored status"
    );
    assert_eq!(r2.text().await?, body1);
    assert_eq!(sim.stats().dest.idempotent_replays, 1);
    assert_eq!(sim.dest_dump().duplicate_applications, 0);

    assert_eq!(upsert(None, 1).await?.status(), StatusCode::OK);
    assert_eq!(
        sim.dest_dump().duplicate_applications,
        1,
        "keyless retry re-applies"
    );
    assert_eq!(upsert(Some("k2"), 2).await?.status(), StatusCode::OK);

    let dump = sim.dest_dump();
    assert_eq!(dump.duplicate_applications, 1);
    assert_eq!(dump.objects.len(), 4);
    let u1 = dump
        .objects
        .iter()
        .find(|o| o.external_id == "u1")
        .ok_or("u1")?;
    assert_eq!((u1.writes, u1.body["version"].clone()), (3, json!(2)));
    let stats = sim.stats().dest;
    assert_eq!(stats.writes_applied, 8);
    assert_eq!(stats.rejected, 1);

    let served: simsaas::DestDump = c
        .get(format!("{d}/_sim/objects"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(served, dump);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn poisoned_records_get_400_and_422() -> R {
    let mut cfg = SimConfig::new(10, 60);
    cfg.poisoned_ratio = 0.2;
    cfg.invalid_ratio = 0.1;
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let records = sim.source_records();
    let mut seen = HashSet::new();
    for r in &records {
        let resp = c
            .put(format!(
                "{}/v1/contacts/by-external-id/{}",
                sim.dest_url(),
                r.id
            ))
            .bearer_auth(TOKEN)
            .json(&r.body)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        match r.rejection {
            Some(Rejection::Status400) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(
                    body,
                    json!({ "error": "bad_request", "message": "email rejected" })
                );
            }
            Some(Rejection::Status422) => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(body["error"], "unprocessable");
            }
            // The destination does not know the mapping rules.
            Some(Rejection::Invalid) | None => assert_eq!(status, StatusCode::CREATED),
        }
        seen.insert(r.rejection);
    }
    assert!(
        seen.contains(&Some(Rejection::Status400)) && seen.contains(&Some(Rejection::Status422))
    );
    let poisoned = records
        .iter()
        .filter(|r| {
            matches!(
                r.rejection,
                Some(Rejection::Status400 | Rejection::Status422)
            )
        })
        .count();
    assert_eq!(poisoned, 12);
    assert_eq!(sim.stats().dest.rejected, 12);
    assert_eq!(sim.dest_count(), 48);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn oauth_token_expires_then_a_fresh_one_works() -> R {
    let mut cfg = SimConfig::new(11, 20);
    cfg.source_auth = SimAuth::OAuth2 {
        client_id: "cid".into(),
        client_secret: "secret".into(),
        token_ttl: Duration::from_millis(300),
    };
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let s = sim.source_url();
    let data = format!("{s}/v1/offset/invoices");
    let token = |form: &[(&str, &str)]| c.post(format!("{s}/oauth/token")).form(form).send();

    assert_eq!(
        c.get(&data).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let bad = token(&[
        ("grant_type", "client_credentials"),
        ("client_id", "cid"),
        ("client_secret", "no"),
    ])
    .await?;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad.json::<Value>().await?,
        json!({ "error": "invalid_client" })
    );

    let issued: Value = token(&[
        ("grant_type", "client_credentials"),
        ("client_id", "cid"),
        ("client_secret", "secret"),
    ])
    .await?
    .json()
    .await?;
    assert_eq!(issued["token_type"], "Bearer");
    let t1 = issued["access_token"].as_str().ok_or("token")?.to_owned();
    assert_eq!(
        c.get(&data).bearer_auth(&t1).send().await?.status(),
        StatusCode::OK
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = c.get(&data).bearer_auth(&t1).send().await?;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        expired.json::<Value>().await?,
        json!({ "error": "unauthorized" })
    );

    // Client credentials via HTTP Basic are accepted too.
    let fresh: Value = c
        .post(format!("{s}/oauth/token"))
        .basic_auth("cid", Some("secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    let t2 = fresh["access_token"].as_str().ok_or("token")?;
    assert_ne!(t1, t2);
    assert_eq!(
        c.get(&data).bearer_auth(t2).send().await?.status(),
        StatusCode::OK
    );
    let stats = sim.stats().source;
    assert_eq!((stats.tokens_issued, stats.unauthorized), (2, 3));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn other_auth_schemes() -> R {
    let mut cfg = SimConfig::new(12, 3);
    cfg.source_auth = SimAuth::Basic {
        user: "u".into(),
        password: "p".into(),
    };
    cfg.dest_auth = SimAuth::ApiKeyHeader {
        header: "x-api-key".into(),
        key: "k".into(),
    };
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let src = format!("{}/v1/pages/invoices", sim.source_url());
    assert_eq!(
        c.get(&src)
            .basic_auth("u", Some("p"))
            .send()
            .await?
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(&src)
            .basic_auth("u", Some("x"))
            .send()
            .await?
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let dst = format!("{}/v1/contacts?external_id=a", sim.dest_url());
    assert_eq!(
        c.get(&dst).header("x-api-key", "k").send().await?.status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(&dst).bearer_auth("k").send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn loop_pagination_and_bad_bodies() -> R {
    let mut cfg = SimConfig::new(13, 50);
    cfg.source.loop_pagination = true;
    let sim = SimSaas::start(cfg).await?;
    let c = client()?;
    let s = sim.source_url();

    let (_, p1) = get(&c, &format!("{s}/v1/cursor/invoices?limit=10")).await?;
    let tok = p1["next_cursor"]
        .as_str()
        .ok_or("first page has a next cursor")?;
    let (_, p2) = get(&c, &format!("{s}/v1/cursor/invoices?limit=10&cursor={tok}")).await?;
    assert_eq!(p2["next_cursor"].as_str(), Some(tok), "same token forever");
    let (_, o) = get(&c, &format!("{s}/v1/offset/invoices?limit=10&offset=30")).await?;
    assert_eq!(ids(&o["data"]), ids(&p1["data"]), "offset ignored");
    let (_, k) = get(
        &c,
        &format!("{s}/v1/keyset/invoices?limit=10&since=1&after_id=inv_000009"),
    )
    .await?;
    assert_eq!(ids(&k["data"]), ids(&p1["data"]), "keyset position ignored");
    assert_eq!(sim.stats().source.looped, 3);

    sim.set_source_faults(SourceFaults {
        bad_body: Some(BadBody::NotJson),
        ..SourceFaults::default()
    });
    let r = c
        .get(format!("{s}/v1/cursor/invoices"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()?
            .starts_with("text/html")
    );
    assert_eq!(r.text().await?, "<html>maintenance</html>");
    sim.set_source_faults(SourceFaults {
        bad_body: Some(BadBody::MissingRecords),
        ..SourceFaults::default()
    });
    let (status, body) = get(&c, &format!("{s}/v1/links/invoices")).await?;
    assert_eq!((status, body), (StatusCode::OK, json!({ "result": "ok" })));
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
        let c = Client::new();
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
    let impatient = Client::builder()
        .timeout(Duration::from_millis(100))
        .build()?;
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
    assert!(sim.stats().dest.delayed_apply >= 1);

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

#[tokio::test]
async fn the_version_precondition_refuses_older_writes_and_reads_find_objects() -> R {
    let sim = SimSaas::start(SimConfig::new(12, 1)).await?;
    let c = client()?;
    let d = sim.dest_url();
    let url = format!("{d}/v1/contacts/by-external-id/p");
    let put = |v: i64| {
        c.put(&url)
            .bearer_auth(TOKEN)
            .header(simsaas::VERSION_HEADER, v.to_string())
            .json(&json!({ "version": v }))
            .send()
    };
    assert_eq!(c.get(&url).bearer_auth(TOKEN).send().await?.status(), 404);
    assert!(put(5).await?.status().is_success());
    assert!(
        put(5).await?.status().is_success(),
        "the same version again"
    );
    assert_eq!(put(4).await?.status(), StatusCode::PRECONDITION_FAILED);
    let (status, object) = get(&c, &url).await?;
    assert_eq!(
        (status, object["version"].clone()),
        (StatusCode::OK, json!(5))
    );
    assert_eq!(sim.stats().dest.preconditions_failed, 1);
    // Without the header nothing is compared.
    let r = c
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&json!({ "version": 3 }))
        .send()
        .await?;
    assert!(r.status().is_success());

    sim.set_dest_faults(DestFaults {
        lookup_ignores_filter: true,
        ..DestFaults::default()
    });
    c.put(format!("{d}/v1/contacts/by-external-id/q"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    let (_, found) = get(&c, &format!("{d}/v1/contacts?external_id=nobody")).await?;
    assert_eq!(found["data"].as_array().map(Vec::len), Some(2));
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

/// Every entry of the deletes feed, walked with its cursor from `query`.
async fn deletes_feed(sim: &SimSaas, query: &str) -> Result<Vec<Value>, Box<dyn Error>> {
    let c = client()?;
    let base = format!("{}/v1/invoices/deleted?limit=2{query}", sim.source_url());
    let (mut entries, mut url) = (Vec::new(), base.clone());
    for _ in 0..MAX_PAGES {
        let (status, page) = get(&c, &url).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        entries.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => url = format!("{base}&cursor={next}"),
            None => return Ok(entries),
        }
    }
    Err("the deletes feed did not end".into())
}

#[tokio::test]
async fn hard_deletes_leave_the_listings_for_the_deletes_feed() -> R {
    let sim = SimSaas::start(SimConfig::new(31, 20)).await?;
    let ids_before = expected_ids(&sim);
    let gone = [
        "inv_000003",
        "inv_000007",
        "inv_000011",
        "inv_000015",
        "inv_000019",
    ];
    for id in gone {
        assert!(sim.delete_record(id, Deletion::Hard));
        assert!(!sim.delete_record(id, Deletion::Hard), "deleted once only");
        // Each deletion in a millisecond of its own.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let c = client()?;
    let (_, listed) = get(&c, &format!("{}/v1/offset/invoices", sim.source_url())).await?;
    let listed = ids(&listed["data"]);
    assert_eq!(listed.len(), 15);
    assert!(gone.iter().all(|id| !listed.contains(&id.to_string())));
    assert_eq!(listed, expected_ids(&sim));
    assert_eq!(sim.deleted_ids(), gone.map(String::from).to_vec());

    // In deletion order, paged, each with its time; bounded like the listings.
    let feed = deletes_feed(&sim, "").await?;
    assert_eq!(
        ids(&Value::Array(feed.clone())),
        gone.map(String::from).to_vec()
    );
    let times: Vec<&str> = feed
        .iter()
        .filter_map(|e| e["deleted_at"].as_str())
        .collect();
    assert_eq!(times.len(), 5);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let since = format!("&updated_after={}", times[3]);
    assert_eq!(
        ids(&Value::Array(deletes_feed(&sim, &since).await?)).len(),
        2
    );
    let ms = deletes_feed(&sim, "&ts=epoch_ms").await?;
    assert!(ms.iter().all(|e| e["deleted_at"].is_i64()), "{ms:?}");

    // Re-created: listed again as a newer version, and still in the feed.
    let old = sim.source_records().len();
    assert!(sim.delete_record("inv_000007", Deletion::Recreate));
    assert!(
        !sim.delete_record("inv_000008", Deletion::Recreate),
        "not deleted"
    );
    let back = sim
        .source_records()
        .into_iter()
        .find(|r| r.id == "inv_000007")
        .ok_or("re-created record listed")?;
    assert_eq!(back.version, 2);
    assert_eq!(sim.source_records().len(), old + 1);
    assert_eq!(deletes_feed(&sim, "").await?.len(), 5);
    assert!(!sim.deleted_ids().contains(&"inv_000007".to_owned()));
    assert_ne!(ids_before, expected_ids(&sim));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn soft_deletes_serve_the_marker_as_a_new_version() -> R {
    let sim = SimSaas::start(SimConfig::new(32, 5)).await?;
    let before = sim.source_records();
    assert!(sim.delete_record("inv_000002", Deletion::Soft));
    assert!(
        !sim.delete_record("inv_000002", Deletion::Soft),
        "marked once"
    );
    let c = client()?;
    let (_, page) = get(&c, &format!("{}/v1/offset/invoices", sim.source_url())).await?;
    let served: Vec<&Value> = page["data"].as_array().into_iter().flatten().collect();
    let marked: Vec<&&Value> = served
        .iter()
        .filter(|r| r["deleted"] == json!(true))
        .collect();
    assert_eq!(marked.len(), 1, "{page}");
    assert_eq!(marked[0]["id"], "inv_000002");
    let old = before
        .iter()
        .find(|r| r.id == "inv_000002")
        .ok_or("record")?;
    assert_eq!(marked[0]["version"], old.version + 1);
    assert!(
        served
            .iter()
            .filter(|r| r["id"] != "inv_000002")
            .all(|r| r.get("deleted").is_none())
    );
    let now = sim.source_records();
    assert!(now.iter().all(|r| r.soft_deleted == (r.id == "inv_000002")));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn delete_mutations_are_off_by_default_and_seeded_when_weighted() -> R {
    let run = |weights: [u32; 3]| async move {
        let mut cfg = SimConfig::new(33, 200);
        cfg.mutations = Mutations {
            max: 60,
            interval: Duration::from_millis(1),
            weights: [1, 0, 1, 0],
            delete_weights: weights,
            ..Mutations::default()
        };
        let sim = SimSaas::start(cfg).await?;
        let c = client()?;
        get(&c, &format!("{}/v1/offset/invoices", sim.source_url())).await?;
        wait_mutations(&sim, 60).await?;
        let result = (
            sim.deleted_ids(),
            sim.source_records()
                .iter()
                .filter(|r| r.soft_deleted)
                .count(),
        );
        sim.shutdown().await;
        Ok::<_, Box<dyn Error>>(result)
    };
    let (deleted, soft) = run([0, 0, 0]).await?;
    assert!(deleted.is_empty() && soft == 0);
    let first = run([3, 2, 1]).await?;
    assert!(!first.0.is_empty() && first.1 > 0, "{first:?}");
    assert_eq!(
        run([3, 2, 1]).await?,
        first,
        "the same seed deletes the same records"
    );
    Ok(())
}

#[tokio::test]
async fn deletes_at_the_destination_answer_404_once_gone_and_are_counted() -> R {
    let sim = SimSaas::start(SimConfig::new(34, 1)).await?;
    let c = client()?;
    let d = sim.dest_url();
    for ext in ["a", "b"] {
        let r = c
            .put(format!("{d}/v1/contacts/by-external-id/{ext}"))
            .bearer_auth(TOKEN)
            .json(&json!({ "version": 1 }))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let delete = |url: String| c.delete(url).bearer_auth(TOKEN).send();
    let by_ext = format!("{d}/v1/contacts/by-external-id/a");
    assert_eq!(
        delete(by_ext.clone()).await?.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(delete(by_ext).await?.status(), StatusCode::NOT_FOUND);
    let id = sim
        .dest_dump()
        .objects
        .iter()
        .find(|o| o.external_id == "b")
        .map(|o| o.id.clone())
        .ok_or("b")?;
    let by_id = format!("{d}/v1/contacts/{id}");
    assert_eq!(
        delete(by_id.clone()).await?.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(delete(by_id).await?.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.dest_count(), 0);
    let applied = sim.deletes_applied();
    assert_eq!((applied.get("a"), applied.get("b")), (Some(&1), Some(&1)));
    let (status, found) = get(&c, &format!("{d}/v1/contacts?external_id=b")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["data"].as_array().map(Vec::len), Some(0));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn verify_counts_a_deleted_record_still_at_the_destination() -> R {
    let sim = SimSaas::start(SimConfig::new(35, 3)).await?;
    let c = client()?;
    let d = sim.dest_url();
    for r in sim.source_records() {
        let mut body = r.body.clone();
        body["external_id"] = json!(r.id);
        c.put(format!("{d}/v1/contacts/by-external-id/{}", r.id))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?;
    }
    // Past the soft deletion below, which stamps the record with the time it
    // happens: a watermark taken now would leave it out once a millisecond
    // has gone by.
    let watermark = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let check = |sim: &SimSaas| {
        let dest = sim.dest_dump();
        simsaas::verify(&sim.source_records(), &dest, &Default::default(), watermark)
            .with_deleted(&sim.deleted_ids(), &dest)
    };
    let rejected: usize = sim
        .source_records()
        .iter()
        .filter(|r| r.rejection.is_some())
        .count();
    assert_eq!(rejected, 0);
    assert!(check(&sim).is_exact(), "{}", check(&sim));
    sim.delete_record("inv_000001", Deletion::Hard);
    sim.delete_record("inv_000002", Deletion::Soft);
    let v = check(&sim);
    assert!(!v.is_exact());
    assert_eq!(v.not_deleted, ["inv_000001", "inv_000002"]);
    assert!(v.extras.is_empty(), "a deleted record is not an extra: {v}");
    sim.remove_dest_object("inv_000001");
    sim.alter_dest_object("inv_000002", "deleted", json!(true));
    assert!(check(&sim).is_exact(), "{}", check(&sim));
    sim.shutdown().await;
    Ok(())
}
