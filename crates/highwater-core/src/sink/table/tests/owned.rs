//! Tables their owners made before highwater wrote to them: their keys,
//! column types and names as the owner chose them.

use super::*;

/// A SQLite table that was there before, keyed by an integer: rows land,
/// are found again by their key, and deleted.
#[tokio::test]
async fn sqlite_an_existing_table_keyed_by_an_integer_takes_rows() {
    let db = Db::sqlite("int-key").await;
    db.exec(
        "CREATE TABLE contacts (external_id INTEGER PRIMARY KEY, version INTEGER NOT NULL, \
         name TEXT, score REAL)",
    )
    .await;
    let mut table = spec(&[("name", ColumnType::Json), ("score", ColumnType::Json)]);
    table.create_table = false;
    let sink = db.sink(table, "int-key");
    let a = record("7", json!({"name": "Ann", "score": 1.5}));
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    let older = record("7", json!({"name": "Old", "score": 0.5}));
    assert!(matches!(
        sink.write(write(&older, 0), &Stop::never()).await,
        Err(SinkError::Superseded)
    ));
    assert_eq!(held(sink.as_ref(), "7").await["name"], json!("Ann"));
    let delete = Delete {
        external_id: "7",
        known_dest_id: None,
        unsettled_until: None,
    };
    sink.delete(&delete, &Stop::never()).await.expect("delete");
    assert_eq!(held(sink.as_ref(), "7").await, Value::Null);
    db.drop().await;
}

/// A SQLite table its owner made with typed columns, mapped with no
/// `required` types: each column takes the SQL value the JSON holds (a
/// string's text, not the string quoted; a boolean as 1), a column whose type
/// names JSON takes JSON text, and a table highwater makes keeps an untyped
/// field's JSON as it was sent.
#[tokio::test]
async fn sqlite_an_existing_table_s_columns_take_sql_values_unless_typed_json() {
    let db = Db::sqlite("typed").await;
    db.exec(
        "CREATE TABLE contacts (external_id TEXT PRIMARY KEY, version INTEGER NOT NULL, \
         email TEXT, score REAL, active BOOLEAN, tags TEXT, meta JSON, note)",
    )
    .await;
    let fields = [
        ("email", ColumnType::Json),
        ("score", ColumnType::Json),
        ("active", ColumnType::Json),
        ("tags", ColumnType::Json),
        ("meta", ColumnType::Json),
        ("note", ColumnType::Json),
    ];
    let mut table = spec(&fields);
    table.create_table = false;
    let sink = db.sink(table, "typed");
    let payload = json!({"email": "ann@example.com", "score": 1.5, "active": true,
                         "tags": ["a", "b"], "meta": {"n": "5"}, "note": "say \"hi\""});
    let a = record("a", payload.clone());
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    let exact = db
        .number(
            "SELECT count(*) FROM contacts WHERE email = 'ann@example.com' AND score = 1.5 \
             AND active = 1 AND tags = '[\"a\",\"b\"]' AND meta = '{\"n\":\"5\"}' \
             AND note = 'say \"hi\"'",
        )
        .await;
    assert_eq!(exact, 1, "each column holds the SQL value");
    assert_eq!(
        held(sink.as_ref(), "a").await["email"],
        json!("ann@example.com")
    );
    assert_eq!(held(sink.as_ref(), "a").await["meta"], json!({"n": "5"}));

    let mut made = spec(&fields);
    made.table = "made".into();
    let sink = db.sink(made, "typed");
    sink.write(write(&a, 1), &Stop::never())
        .await
        .expect("written");
    let kept = db
        .number(
            "SELECT count(*) FROM made WHERE email = '\"ann@example.com\"' AND active = 'true' \
             AND meta = '{\"n\":\"5\"}' AND typeof(score) = 'text'",
        )
        .await;
    assert_eq!(kept, 1, "an untyped field's column holds JSON text");
    let back = held(sink.as_ref(), "a").await;
    for (field, value) in payload.as_object().expect("an object") {
        assert_eq!(&back[field], value, "{field} read back as it was sent");
    }
    db.drop().await;
}

/// An owner's names as the database takes them quoted: spaces, capitals, a
/// `-`, a reserved word — created, upserted over, read back and deleted.
async fn names_are_taken_as_they_are(db: Db) {
    let mut table = spec(&[
        ("Full Name", ColumnType::Text),
        ("e-mail", ColumnType::Text),
        ("select", ColumnType::BigInt),
        ("Meta Data", ColumnType::Json),
    ]);
    table.table = "Contact List".into();
    table.key_column = "External Id".into();
    table.version_column = "Row Version".into();
    let sink = db.sink(table, "names");
    let stop = Stop::never();
    let row = |name: &str| {
        record(
            "c-1",
            json!({"Full Name": name, "e-mail": "ann@example.com", "select": 3, "Meta Data": {"a": 1}}),
        )
    };
    let (older, newer) = (row("Ann"), row("Ann B."));
    let results = sink.write_batch(vec![write(&newer, 2)], &stop).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let results = sink.write_batch(vec![write(&older, 1)], &stop).await;
    assert!(
        matches!(results[..], [Err(SinkError::Superseded)]),
        "{results:?}"
    );
    sink.flush().await.expect("flush");
    let held = held(sink.as_ref(), "c-1").await;
    assert_eq!(held["Full Name"], json!("Ann B."), "{held}");
    assert_eq!(held["e-mail"], json!("ann@example.com"), "{held}");
    assert_eq!(held["select"], json!(3), "{held}");
    assert_eq!(held["Meta Data"], json!({"a": 1}), "{held}");
    let quoted = match &db {
        Db::Sqlite(_) => "\"Contact List\"".to_owned(),
        Db::Postgres { schema, .. } => format!("{schema}.\"Contact List\""),
    };
    let rows = db
        .number(&format!(
            "SELECT count(*) FROM {quoted} WHERE \"External Id\" = 'c-1' AND \"Row Version\" = 2"
        ))
        .await;
    assert_eq!(rows, 1);
    let delete = Delete {
        external_id: "c-1",
        known_dest_id: None,
        unsettled_until: None,
    };
    sink.delete(&delete, &stop).await.expect("delete");
    sink.flush().await.expect("flush");
    let rows = db.number(&format!("SELECT count(*) FROM {quoted}")).await;
    assert_eq!(rows, 0);
    db.drop().await;
}

#[tokio::test]
async fn sqlite_names_are_taken_as_they_are() {
    names_are_taken_as_they_are(Db::sqlite("names").await).await;
}

#[tokio::test]
async fn postgres_names_are_taken_as_they_are() {
    names_are_taken_as_they_are(Db::postgres("names").await).await;
}

/// A table that was there before, its columns typed as its owner chose
/// (mapped with no `required` types, so sent as JSON): each value is read as
/// its column's type, the key compared as the key column's, and a value the
/// type cannot take refuses its row alone.
#[tokio::test]
async fn postgres_an_existing_table_s_column_types_are_written_as_declared() {
    let db = Db::postgres("typed").await;
    db.exec(&format!(
        "CREATE TABLE {} (external_id BIGINT PRIMARY KEY, version INTEGER NOT NULL, uid UUID, \
         signup TIMESTAMPTZ, score NUMERIC(5,2), tags TEXT[], active BOOLEAN, meta JSONB)",
        db.table("contacts")
    ))
    .await;
    let mut table = spec(&[
        ("uid", ColumnType::Json),
        ("signup", ColumnType::Json),
        ("score", ColumnType::Json),
        ("tags", ColumnType::Json),
        ("active", ColumnType::Json),
        ("meta", ColumnType::Json),
    ]);
    table.create_table = false;
    let sink = db.sink(table, "typed");
    let row = |id: &str, signup: &str, score: f64| {
        record(
            id,
            json!({"uid": "0b8f6c3e-6a55-4f3c-9a7e-000000000001", "signup": signup,
                   "score": score, "tags": ["a", "b"], "active": true, "meta": {"n": 1}}),
        )
    };
    let records = [
        row("1", "2026-01-10T08:30:00+02:00", 12.3),
        row("2", "2026-01-10T08:30:00Z", 12345.678),
        row("3", "not a date", 1.0),
    ];
    let results = sink
        .write_batch(
            records.iter().map(|r| write(r, 1)).collect(),
            &Stop::never(),
        )
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    // With PostgreSQL's detail: which value does not fit, and why.
    assert!(
        matches!(&results[1], Err(SinkError::Refused(m)) if m.contains("numeric") && m.contains("precision")),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(SinkError::Refused(m)) if m.contains("timestamp")),
        "{results:?}"
    );
    let exact = db
        .number(&format!(
            "SELECT count(*) FROM {} WHERE external_id = 1 AND signup = '2026-01-10T06:30:00Z' \
             AND score = 12.30 AND tags = '{{a,b}}' AND active \
             AND uid = '0b8f6c3e-6a55-4f3c-9a7e-000000000001' AND meta = '{{\"n\": 1}}'",
            db.table("contacts")
        ))
        .await;
    assert_eq!(exact, 1);
    assert_eq!(held(sink.as_ref(), "1").await["score"], json!(12.3));
    let delete = Delete {
        external_id: "1",
        known_dest_id: None,
        unsettled_until: None,
    };
    sink.delete(&delete, &Stop::never()).await.expect("delete");
    assert_eq!(held(sink.as_ref(), "1").await, Value::Null);
    db.drop().await;
}

/// What a typed column gives back is its own form of the value it took, and
/// holds what was written, as reconcile and the read-backs compare them: a
/// boolean written as `"yes"` or `1` comes back `true`, a number written as
/// a string comes back a number, a time with its offset moved to UTC, a
/// number rounded to the column's decimals. A value changed behind
/// highwater's back is not held.
#[tokio::test]
async fn postgres_a_typed_column_gives_back_what_holds_the_value_written() {
    let db = Db::postgres("forms").await;
    db.exec(&format!(
        "CREATE TABLE {} (external_id UUID PRIMARY KEY, version BIGINT NOT NULL, won BOOLEAN, \
         lost BOOLEAN, open BOOLEAN, n INTEGER, amount NUMERIC(12,2), ratio REAL, \
         signup TIMESTAMPTZ, day DATE, tags TEXT[], meta JSONB)",
        db.table("deals")
    ))
    .await;
    let fields = [
        "won", "lost", "open", "n", "amount", "ratio", "signup", "day", "tags", "meta",
    ];
    let mut table = spec(&fields.map(|f| (f, ColumnType::Json)));
    table.table = "deals".into();
    table.create_table = false;
    let sink = db.sink(table, "forms");
    let id = "0b8f6c3e-6a55-4f3c-9a7e-000000000001";
    let payloads = [
        json!({"won": "yes", "lost": "False", "open": 1, "n": "42", "amount": "10.10",
               "ratio": 0.1, "signup": "2026-01-10T08:30:00+02:00", "day": "2026-01-10",
               "tags": ["a"], "meta": {"n": 1.5}}),
        json!({"won": " t ", "lost": "off", "open": 0, "n": 7, "amount": 3,
               "ratio": "0.25", "signup": "2026-01-10 06:30:00Z", "day": "2026-01-11",
               "tags": [], "meta": null}),
        // NUMERIC(12,2) keeps two decimals: it gives back 5.43 and 10.
        json!({"amount": 5.43219}),
        json!({"amount": "9.999"}),
    ];
    for (version, payload) in (1..).zip(payloads) {
        let written = record(id, payload.clone());
        let results = sink
            .write_batch(vec![write(&written, version)], &Stop::never())
            .await;
        assert!(results[0].is_ok(), "{results:?}");
        let object = held(sink.as_ref(), id).await;
        assert!(
            crate::engine::contains(&object, &payload),
            "{object} does not hold {payload}"
        );
    }
    let written = json!({"won": " t ", "lost": "off", "open": 0});
    db.exec(&format!("UPDATE {} SET lost = true", db.table("deals")))
        .await;
    let changed = held(sink.as_ref(), id).await;
    assert!(!crate::engine::contains(&changed, &written), "{changed}");
    db.drop().await;
}

/// A number into a column its owner typed as a time is the instant it
/// counts from the epoch: seconds, or milliseconds from 10^11 on; in UTC for
/// a `timestamp` or a `date`. A string is read as PostgreSQL reads it; one
/// that is no time refuses its row alone.
#[tokio::test]
async fn postgres_a_number_into_a_time_column_counts_from_the_epoch() {
    let db = Db::postgres("epoch").await;
    db.exec(&format!(
        "CREATE TABLE {} (external_id TEXT PRIMARY KEY, version BIGINT NOT NULL, \
         seen TIMESTAMPTZ, seen_wall TIMESTAMP(3), day DATE, seen_all TIMESTAMPTZ[])",
        db.table("contacts")
    ))
    .await;
    let mut table = spec(&[
        ("seen", ColumnType::Json),
        ("seen_wall", ColumnType::Json),
        ("day", ColumnType::Json),
        ("seen_all", ColumnType::Json),
    ]);
    table.create_table = false;
    let sink = db.sink(table, "epoch");
    let records = [
        record(
            "s",
            json!({"seen": 1700000101, "seen_wall": 1700000101.5, "day": 1700000101}),
        ),
        record(
            "ms",
            json!({"seen": 1700000101250_i64, "seen_wall": 1700000101250_i64, "day": null}),
        ),
        record(
            "text",
            json!({"seen": "2023-11-14T22:15:01Z", "seen_wall": "2023-11-14 22:15:01", "day": "2023-11-14",
                   "seen_all": ["2023-11-14T22:15:01Z"]}),
        ),
        record("bad", json!({"seen": "soon"})),
    ];
    let results = sink
        .write_batch(
            records.iter().map(|r| write(r, 1)).collect(),
            &Stop::never(),
        )
        .await;
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(&results[3], Err(SinkError::Refused(m)) if m.contains("timestamp")),
        "{results:?}"
    );
    let count = |filter: &str| {
        format!(
            "SELECT count(*) FROM {} WHERE {filter}",
            db.table("contacts")
        )
    };
    let exact = [
        "external_id = 's' AND seen = '2023-11-14T22:15:01Z' \
         AND seen_wall = '2023-11-14 22:15:01.5' AND day = '2023-11-14'",
        "external_id = 'ms' AND seen = '2023-11-14T22:15:01.25Z' \
         AND seen_wall = '2023-11-14 22:15:01.25' AND day IS NULL",
        "external_id = 'text' AND seen = '2023-11-14T22:15:01Z' \
         AND seen_wall = '2023-11-14 22:15:01' AND day = '2023-11-14' \
         AND seen_all = '{2023-11-14T22:15:01Z}'",
    ];
    for filter in exact {
        assert_eq!(db.number(&count(filter)).await, 1, "{filter}");
    }
    db.drop().await;
}
