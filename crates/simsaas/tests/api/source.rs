//! The source API: every pagination style walks every record once, in order;
//! time bounds, shifting offsets, stale replicas, loops and bad bodies.

use super::*;

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
