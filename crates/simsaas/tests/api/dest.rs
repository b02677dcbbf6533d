//! The destination API: buckets, put, post, patch and upsert, refused
//! records, and the version precondition.

use super::*;

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
