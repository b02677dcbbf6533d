//! Deletes: the deletes feed, soft deletes, seeded delete mutations, and
//! deletes at the destination.

use super::*;

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
