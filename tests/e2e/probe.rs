//! `highwater probe`: with a correct config it shows the request, the records and
//! what is extracted from them, and exits 0; with each common mistake it names
//! the key to change and exits 1. It never writes a state store.

use serde_json::Value;
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report, stdout};

async fn probe(world: &World) -> (Option<i32>, Value) {
    let out = world.highwater(&["probe", SYNC, "--json"]).await;
    assert!(!world.has_store().await, "probe created a state store");
    let code = out.status.code();
    assert!(matches!(code, Some(0 | 1)), "{}", describe(&out));
    (code, report(&out))
}

fn keys(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces one line of the config file.
fn edit(world: &World, from: &str, to: &str) {
    let text = std::fs::read_to_string(&world.config).expect("config");
    assert!(text.contains(from), "{from:?} not in:\n{text}");
    std::fs::write(&world.config, text.replacen(from, to, 1)).expect("write config");
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_shows_what_the_config_finds_and_names_each_mistake() {
    let mut sim = SimConfig::new(19, 400);
    sim.invalid_ratio = 0.0;
    let world = World::start("probe", sim, &Setup::new(Style::Cursor, Mode::Put)).await;

    let (code, good) = probe(&world).await;
    assert_eq!(code, Some(0), "{good}");
    assert!(keys(&good).is_empty(), "{good}");
    let pages = good["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 2, "{good}");
    let first = world.sim.source_records()[0].clone();
    assert_eq!(pages[0]["extracted"]["id"], first.id.as_str(), "{good}");
    assert_eq!(pages[0]["extracted"]["version"], first.version, "{good}");
    assert_eq!(pages[0]["first_record"], first.body, "{good}");
    let query: Vec<String> = pages[0]["requests"][0]["query"]
        .as_array()
        .expect("query")
        .iter()
        .filter_map(|p| p[0].as_str().map(str::to_owned))
        .collect();
    assert!(query.contains(&"limit".to_owned()), "{query:?}");
    assert!(query.contains(&"updated_before".to_owned()), "{query:?}");
    assert!(
        pages[0]["next"].as_str().unwrap_or("").starts_with("token"),
        "{good}"
    );
    assert_eq!(pages[0]["requests"][0]["method"], "GET", "{good}");
    let text = stdout(&world.highwater(&["probe", SYNC]).await);
    assert!(text.contains("nothing looks wrong"), "{text}");
    assert!(
        text.contains("  GET http://127.0.0.1:") && !text.contains("GET GET"),
        "each request as its method and URL: {text}"
    );
    // A configured parameter is shown as sent, unless its value comes from
    // the environment.
    let params = "params = { status = \"all\", key = \"${PROBE_KEY}\" }\npage_size = ";
    edit(&world, "page_size = ", params);
    let out = crate::util::finish(
        world
            .command_with(&world.config, &["probe", SYNC])
            .env("PROBE_KEY", "hush-probe"),
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("status=all") && !text.contains("hush-probe") && !text.contains("key="),
        "{}",
        describe(&out)
    );
    edit(&world, params, "page_size = ");

    // Each mistake, alone, is named by its key.
    let cases = [
        (
            "records_path = \"data\"",
            "records_path = \"results\"",
            "records_path",
            "data",
        ),
        (
            "version_field = \"version\"",
            "version_field = \"rev\"",
            "version_field",
            "rev",
        ),
        (
            "records_path = \"data\"",
            "records_path = \"data\"\nid_field = \"uuid\"",
            "id_field",
            "uuid",
        ),
        (
            "records_path = \"data\"",
            "records_path = \"data\"\nupdated_at_field = \"modified\"",
            "updated_at_field",
            "modified",
        ),
        (
            "token_path = \"next_cursor\"",
            "token_path = \"cursor\"",
            "pagination",
            "full",
        ),
    ];
    for (from, to, key, mentioned) in cases {
        edit(&world, from, to);
        let (code, found) = probe(&world).await;
        assert_eq!(code, Some(1), "{to}: {found}");
        assert_eq!(keys(&found), [key], "{to}: {found}");
        let message = found["findings"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(mentioned), "{to}: {message}");
        edit(&world, to, from);
    }

    // A few records that cannot be used (ids taken from a field some lack)
    // are what a run dead-letters, not a key set wrong: noted, exit 0.
    let mut few = SimConfig::new(20, 400);
    few.invalid_ratio = 0.1;
    let few = World::start("probe-few", few, &Setup::new(Style::Cursor, Mode::Put)).await;
    edit(
        &few,
        "records_path = \"data\"",
        "records_path = \"data\"\nid_field = \"customer.email\"",
    );
    let (code, noted) = probe(&few).await;
    assert_eq!(code, Some(0), "{noted}");
    assert!(keys(&noted).is_empty(), "{noted}");
    let note = noted["notes"][0]["message"].as_str().unwrap_or("");
    assert!(
        noted["notes"][0]["key"] == "id_field" && note.contains("dead-letters them"),
        "{noted}"
    );

    // A next-page token that never changes.
    world.sim.set_source_faults(simsaas::SourceFaults {
        loop_pagination: true,
        ..simsaas::SourceFaults::default()
    });
    let (code, looped) = probe(&world).await;
    assert_eq!(code, Some(1), "{looped}");
    assert_eq!(keys(&looped), ["pagination"], "{looped}");
}
