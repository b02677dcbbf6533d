//! Authentication schemes, and OAuth tokens that expire.

use super::*;

#[tokio::test]
async fn oauth_token_expires_then_a_fresh_one_works() -> R {
    let mut cfg = SimConfig::new(11, 20);
    cfg.source_auth = SimAuth::OAuth2 {
        client_id: "cid".into(),
        client_secret: "secret".into(),
        token_ttl: Duration::from_millis(300),
        refresh_token: None,
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
