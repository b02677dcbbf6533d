//! PostgreSQL connections over TLS, as the URL's `sslmode` says: encrypted
//! where asked, and a TLS that cannot be had is a setting to fix, reported at
//! once rather than retried as a network fault.

use super::*;

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let joint = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joint}{param}")
}

/// A PostgreSQL sink of `columns()` in `db`'s schema, at `url`.
fn postgres_sink_at(db: &Db, url: String, sync: &str) -> Arc<dyn Sink> {
    Arc::new(
        crate::sink::postgres::open(
            &PostgresSpec {
                url: crate::secret::Secret::new(url),
                table: TableSpec {
                    schema: Some(db.schema_name()),
                    ..columns()
                },
                shares_state: false,
            },
            sync,
            RETRY,
            None,
        )
        .expect("open"),
    )
}

/// `sslmode=require` (as a managed database asks) connects over TLS where
/// the server offers it, and says it cannot where it does not, at once.
#[tokio::test]
async fn postgres_sslmode_require_connects_over_tls() {
    let db = Db::postgres("tls").await;
    let sync = format!("tls-{}", std::process::id());
    let sink = postgres_sink_at(&db, with_param(&pg_url(), "sslmode=require"), &sync);
    let a = record("a", json!({"name": "Ann", "amount": 5, "meta": null}));
    let written = sink.write(write(&a, 1), &Stop::never()).await;
    let Db::Postgres { pool, .. } = &db else {
        unreachable!()
    };
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(pool)
        .await
        .expect("SHOW ssl");
    if ssl == "on" {
        written.expect("written over TLS");
        let (connections, encrypted): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
        )
        .bind(format!("highwater {sync}"))
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl");
        assert!(connections > 0, "the sink's connections are open");
        assert_eq!(encrypted, connections, "every connection is encrypted");
        assert_eq!(held(sink.as_ref(), "a").await["name"], json!("Ann"));
    } else {
        // A server without TLS: a setting to change, not retried.
        match written {
            Err(SinkError::Database(m)) => assert!(m.contains("TLS"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    drop(sink);
    db.drop().await;
}

/// A server certificate the system does not trust (`sslmode=verify-full`
/// against this machine's self-signed one) stops the write at once with the
/// reason, instead of retrying it as a network fault.
#[tokio::test]
async fn postgres_a_certificate_it_cannot_trust_stops_at_once() {
    let db = Db::postgres("untrusted").await;
    let sink = postgres_sink_at(
        &db,
        with_param(&pg_url(), "sslmode=verify-full"),
        "untrusted",
    );
    let a = record("a", json!({"name": "Ann", "amount": 5, "meta": null}));
    match sink.write(write(&a, 1), &Stop::never()).await {
        Err(SinkError::Database(m)) => {
            assert!(m.contains("TLS") || m.contains("certificate"), "{m}")
        }
        other => panic!("refused as a setting to fix, not retried: {other:?}"),
    }
    drop(sink);
    db.drop().await;
}

/// A server that answers the TLS request with PostgreSQL's "no" (`N`), under
/// `sslmode=require`: the write stops at once, saying so.
#[tokio::test]
async fn postgres_a_server_without_tls_under_sslmode_require_stops_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut asked = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                asked += 1;
                let _ = socket.write_all(b"N").await;
            }
            if asked >= 8 {
                break;
            }
        }
    });
    let db = Db::postgres("notls").await;
    let sink = postgres_sink_at(
        &db,
        format!("postgres://postgres@127.0.0.1:{port}/test?sslmode=require"),
        "notls",
    );
    let a = record("a", json!({"name": "Ann", "amount": 5, "meta": null}));
    match sink.write(write(&a, 1), &Stop::never()).await {
        Err(SinkError::Database(m)) => assert!(m.contains("TLS"), "{m}"),
        other => panic!("refused as a setting to fix, not retried: {other:?}"),
    }
    server.abort();
    drop(sink);
    db.drop().await;
}
