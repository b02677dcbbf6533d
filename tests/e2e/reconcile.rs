//! `highwater reconcile`: after a clean sync it finds nothing; objects deleted or
//! edited in the destination behind highwater's back are found (missing, drifted)
//! and `--repair` writes them again, after which the destination is exact and
//! reconciliation clean; bad input is refused.

use serde_json::{Value, json};
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report};

async fn reconcile(world: &World, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["reconcile", SYNC, "--sample", "all", "--json"];
    args.extend_from_slice(extra);
    let out = world.highwater(&args).await;
    let code = out.status.code();
    assert!(matches!(code, Some(0 | 1)), "{}", describe(&out));
    // With --repair the repair run's report follows the reconciliation's.
    let first = crate::util::stdout(&out)
        .lines()
        .next()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .unwrap_or(Value::Null);
    (code, first)
}

fn ids(report: &Value, list: &str) -> Vec<String> {
    let mut ids: Vec<String> = report[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}: {report}"))
        .iter()
        .filter_map(|m| m["source_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_finds_what_changed_behind_highwaters_back_and_repairs_it() {
    let mut sim = SimConfig::new(47, 500);
    sim.invalid_ratio = 0.02;
    sim.poisoned_ratio = 0.02;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.lookback = "5m";
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    let world = World::start("reconcile", sim, &setup).await;
    let out = world.highwater(&["reconcile", SYNC]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "no state store yet: {}",
        describe(&out)
    );
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let (code, clean) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(0), "{clean}");
    let healthy: Vec<String> = world
        .sim
        .source_records()
        .into_iter()
        .filter(|r| r.rejection.is_none())
        .map(|r| r.id)
        .collect();
    assert_eq!(clean["checked"], healthy.len() as u64, "{clean}");
    assert!(clean["dead_lettered"].as_u64().unwrap_or(0) > 0, "{clean}");

    // A record updated at the source since the last run lies past the
    // window's mark: not extra, the next run takes its newer copy.
    assert!(world.sim.update_record(&healthy[5]).is_some());
    let (code, moved) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(0), "{moved}");
    assert_eq!(moved["extra"], json!([]), "{moved}");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Deleted and edited by hand in the destination.
    let mut deleted: Vec<String> = healthy[10..13].to_vec();
    deleted.sort();
    for id in &deleted {
        assert_eq!(world.sim.remove_dest_object(id), 1);
    }
    let mut edited: Vec<String> = healthy[20..22].to_vec();
    edited.sort();
    for id in &edited {
        assert_eq!(
            world.sim.alter_dest_object(id, "amount_cents", json!(-1)),
            1
        );
    }
    let (code, found) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(ids(&found, "missing"), deleted, "{found}");
    assert_eq!(ids(&found, "drifted"), edited, "{found}");
    assert!(ids(&found, "stale").is_empty(), "{found}");
    assert!(
        found["drifted"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("amount_cents"),
        "{found}"
    );

    // Repaired through the normal path: the destination is exact again.
    let (code, _) = reconcile(&world, &["--repair"]).await;
    assert_eq!(code, Some(0));
    world.assert_exact().await;
    let (code, after) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(0), "{after}");
    let story = report(
        &world
            .highwater(&["explain", SYNC, &deleted[0], "--json"])
            .await,
    );
    let last = story["events"]
        .as_array()
        .and_then(|e| e.last().cloned())
        .unwrap_or(Value::Null);
    assert_eq!(
        (&last["kind"], &last["action"]),
        (&json!("repair"), &json!("written")),
        "{story}"
    );

    // Bad input is refused.
    for args in [
        ["reconcile", SYNC, "--window", "lots"],
        ["reconcile", SYNC, "--sample", "some"],
    ] {
        let out = world.highwater(&args).await;
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    }
}

/// Extras above the sync's `full_delete_limit` share of the ledger (a
/// window the source does not read as the config says looks the same as
/// records gone): `--repair` refuses, deleting and writing nothing, until
/// `--allow-mass-delete` says they are gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_repair_that_would_delete_too_much_is_refused() {
    let mut sim = SimConfig::new(48, 300);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.lookback = "5m";
    setup.deletes = crate::deletes::deletes_endpoint(Mode::Put);
    let world = World::start("reconcile-mass", sim, &setup).await;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let gone: Vec<String> = world.sim.source_records()[..60]
        .iter()
        .map(|r| r.id.clone())
        .collect();
    for id in &gone {
        assert!(world.sim.delete_record(id, simsaas::Deletion::Hard));
    }
    let (code, found) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(found["extra"].as_array().map(Vec::len), Some(60), "{found}");

    let before = world.state_dump().await;
    let out = world
        .highwater(&["reconcile", SYNC, "--sample", "all", "--repair"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let message = crate::util::stderr(&out);
    for expected in ["refusing to delete 60 of the 300", "--allow-mass-delete"] {
        assert!(message.contains(expected), "{expected:?}: {message}");
    }
    assert_eq!(
        world.state_dump().await,
        before,
        "the refused repair changed the state"
    );
    assert!(world.sim.deletes_applied().is_empty(), "nothing deleted");

    let (code, _) = reconcile(&world, &["--repair", "--allow-mass-delete"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(world.sim.deletes_applied().len(), 60);
}

/// A database table is read back with its version column, which says which
/// copy a row holds whatever the mapping writes, and a number comes back as
/// the database keeps it (PostgreSQL's DOUBLE PRECISION gives `2` for the
/// `2.0` it was sent): after a clean sync, SQLite and PostgreSQL alike
/// reconcile clean, with no version mapped into the rows; a row whose
/// version is set back behind highwater's back is stale.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_reads_a_table_s_version_column() {
    let pg_url = crate::util::postgres_url();
    let (schema, pool) = crate::util::tables_schema("reconcile").await;
    for database in ["sqlite", "postgres"] {
        let mut sim = SimConfig::new(53, 300);
        sim.invalid_ratio = 0.0;
        sim.poisoned_ratio = 0.0;
        let setup = Setup::new(Style::Cursor, Mode::Put);
        let world = World::start(&format!("reconcile-{database}"), sim, &setup).await;
        let destination = match database {
            "sqlite" => format!(
                "[sync.destination]\ntype = \"sqlite\"\npath = \"{}\"\n",
                world.dir.join("out").join("crm.db").display()
            ),
            _ => format!(
                "[sync.destination]\ntype = \"postgres\"\nurl = \"{pg_url}\"\nschema = \"{schema}\"\n"
            ),
        };
        let text = std::fs::read_to_string(&world.config).expect("read config");
        let start = text.find("[sync.destination]").expect("destination table");
        let end = text.find("[sync.retry]").expect("retry table");
        let text = format!(
            "{}{destination}table = \"contacts\"\nversion_column = \"row_version\"\n\n{}",
            &text[..start],
            &text[end..]
        )
        // No version in the rows; a whole number sent as a float.
        .replace(
            "currency = \"currency\"\nversion = \"version\"\n",
            "currency = \"currency\"\n",
        )
        .replace(
            "external_id = \"{id}\"\n",
            "external_id = \"{id}\"\nconstants = { rate = 2.0 }\n",
        )
        .replace(
            "amount_cents = \"integer\"\n",
            "amount_cents = \"integer\"\nrate = \"number\"\n",
        );
        std::fs::write(&world.config, text).expect("write config");
        let out = world.highwater(&["run", SYNC]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

        let (code, clean) = reconcile(&world, &[]).await;
        assert_eq!(code, Some(0), "{database}: {clean}");
        assert_eq!(clean["checked"], 300, "{database}: {clean}");

        let behind = world.sim.source_records()[7].id.clone();
        let sql = format!("UPDATE contacts SET row_version = 0 WHERE external_id = '{behind}'");
        match database {
            "sqlite" => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(world.dir.join("out").join("crm.db"));
                let db = sqlx::SqlitePool::connect_with(options)
                    .await
                    .expect("sqlite");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&db)
                    .await
                    .expect("update");
                db.close().await;
            }
            _ => {
                sqlx::query(sqlx::AssertSqlSafe(
                    sql.replace("UPDATE contacts", &format!("UPDATE {schema}.contacts")),
                ))
                .execute(&pool)
                .await
                .expect("update");
            }
        }
        let (code, found) = reconcile(&world, &[]).await;
        assert_eq!(code, Some(1), "{database}: {found}");
        assert_eq!(ids(&found, "stale"), vec![behind], "{database}: {found}");
        assert!(ids(&found, "drifted").is_empty(), "{database}: {found}");
    }
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await;
    pool.close().await;
}

/// A destination copy that carries no version is judged by its fields: one
/// edited behind highwater's back, whose payload the ledger says was
/// written, is drift naming the field, not an older copy; once the mapping
/// writes a field the copies lack, they are stale, saying which field
/// differs, and `--repair` writes them.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_without_its_version_is_judged_by_its_fields() {
    let mut sim = SimConfig::new(59, 200);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    let world = World::start("reconcile-fields", sim, &setup).await;
    let text = std::fs::read_to_string(&world.config).expect("read config");
    let unversioned = text.replace(
        "currency = \"currency\"\nversion = \"version\"\n",
        "currency = \"currency\"\n",
    );
    assert_ne!(unversioned, text, "the mapping writes the version");
    std::fs::write(&world.config, &unversioned).expect("write config");
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (code, clean) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(0), "{clean}");
    assert_eq!(clean["checked"], 200, "{clean}");

    let edited = world.sim.source_records()[3].id.clone();
    assert_eq!(
        world
            .sim
            .alter_dest_object(&edited, "currency", json!("XXX")),
        1
    );
    let (code, found) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(ids(&found, "drifted"), vec![edited.clone()], "{found}");
    assert!(ids(&found, "stale").is_empty(), "{found}");
    assert_eq!(
        found["drifted"][0]["detail"],
        json!("changed behind highwater: currency"),
        "{found}"
    );

    // A field the mapping now writes and the copies lack.
    let remapped = unversioned.replace(
        "external_id = \"{id}\"\n",
        "external_id = \"{id}\"\nconstants = { tier = \"gold\" }\n",
    );
    assert_ne!(remapped, unversioned, "the mapping's external id");
    std::fs::write(&world.config, remapped).expect("write config");
    let (code, found) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(
        found["stale"].as_array().map(Vec::len),
        Some(200),
        "{found}"
    );
    let detail = found["stale"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with("the destination does not hold the source's copy (version ")
            && detail.ends_with("it differs in tier"),
        "{found}"
    );
    let (code, _) = reconcile(&world, &["--repair"]).await;
    assert_eq!(code, Some(0));
    let (code, after) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(0), "{after}");
}

/// A field the destination takes but never gives back (Mailchimp's
/// `status_if_new`) is drift at every reconciliation until the mapping says
/// so with `write_only`; a field it does give back still is.
#[tokio::test(flavor = "multi_thread")]
async fn a_field_the_destination_never_gives_back_is_not_drift_once_said_write_only() {
    let mut sim = SimConfig::new(48, 200);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let mut setup = Setup::new(Style::Cursor, Mode::Put);
    setup.dest_extra = "read_path = \"/v1/contacts/by-external-id/{external_id}\"".into();
    setup.fields_extra = "status_if_new = \"currency\"".into();
    let world = World::start("reconcile-write-only", sim, &setup).await;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let synced: Vec<String> = world
        .sim
        .source_records()
        .into_iter()
        .map(|r| r.id)
        .collect();
    for id in &synced {
        assert_eq!(
            world
                .sim
                .alter_dest_object(id, "status_if_new", Value::Null),
            1
        );
    }
    let (code, found) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(ids(&found, "drifted").len(), synced.len(), "{found}");

    let text = std::fs::read_to_string(&world.config).expect("config");
    let said = text.replacen(
        "[sync.mapping]\n",
        "[sync.mapping]\nwrite_only = [\"status_if_new\"]\n",
        1,
    );
    assert_ne!(said, text);
    std::fs::write(&world.config, said).expect("config");
    let (code, clean) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(0), "{clean}");
    assert_eq!(clean["checked"], synced.len() as u64, "{clean}");

    let edited = &synced[3];
    world
        .sim
        .alter_dest_object(edited, "amount_cents", json!(-1));
    let (code, found) = reconcile(&world, &[]).await;
    assert_eq!(code, Some(1), "{found}");
    assert_eq!(
        ids(&found, "drifted"),
        std::slice::from_ref(edited),
        "{found}"
    );
}
