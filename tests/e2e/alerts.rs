//! `[sync.alerts]`: a failing run, or more open dead letters than allowed,
//! calls the webhook once per incident, retried with backoff; a call left
//! unanswered is made by the next invocation that still sees the incident.
//! The webhook is a real server on 127.0.0.1 that answers as the test says.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, stderr};

/// What the webhook got, and how many calls it still refuses with a 500.
#[derive(Default)]
struct Hook {
    calls: usize,
    accepted: Vec<Value>,
    refuse: usize,
}

type Shared = Arc<Mutex<Hook>>;

async fn receive(State(hook): State<Shared>, body: axum::body::Bytes) -> StatusCode {
    let mut hook = hook.lock().unwrap_or_else(|e| e.into_inner());
    hook.calls += 1;
    if hook.refuse > 0 {
        hook.refuse -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    hook.accepted
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::NO_CONTENT
}

/// Starts the webhook; its URL.
async fn start_hook(hook: &Shared) -> String {
    let app = axum::Router::new()
        .route("/hooks/highwater", post(receive))
        .with_state(Arc::clone(hook));
    let (addr, _) = crate::util::serve_local(app).await;
    format!("http://{addr}/hooks/highwater")
}

fn with_alerts(world: &World, table: &str) {
    let text = std::fs::read_to_string(&world.config).expect("config");
    std::fs::write(&world.config, format!("{text}\n[sync.alerts]\n{table}\n")).expect("config");
}

fn snapshot(hook: &Shared) -> (usize, Vec<Value>) {
    let hook = hook.lock().unwrap_or_else(|e| e.into_inner());
    (hook.calls, hook.accepted.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_sync_calls_its_webhook_once_per_incident() {
    let hook: Shared = Arc::default();
    let url = start_hook(&hook).await;
    let mut sim = SimConfig::new(41, 300);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.0;
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("alerts-failed", sim, &setup).await;
    let mut broken = setup.clone();
    broken.source_auth = r#"{ type = "bearer", token = "wrong-token" }"#.into();
    let configure = |setup: &Setup| {
        world.rewrite(setup);
        with_alerts(&world, &format!("webhook = \"{url}\""));
    };

    // Fails; the webhook refuses twice, then takes the call.
    hook.lock().unwrap_or_else(|e| e.into_inner()).refuse = 2;
    configure(&broken);
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let (calls, accepted) = snapshot(&hook);
    assert_eq!((calls, accepted.len()), (3, 1), "{accepted:?}");
    let first = &accepted[0];
    assert_eq!(first["sync"], SYNC);
    assert_eq!(first["kind"], "run_failed");
    let reason = first["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("401"), "{first}");
    assert!(
        !reason.contains("wrong-token"),
        "a secret in the alert: {first}"
    );
    assert!(
        first["incident"].is_string() && first["counts"].is_object(),
        "{first}"
    );

    // Fails again: the same incident, told already.
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(snapshot(&hook).0, 3, "told twice of one incident");

    // Fixed: the incident closes, silently.
    configure(&setup);
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(snapshot(&hook).0, 3);

    // Broken again, with the webhook down: a new incident, not delivered, and
    // the run's outcome unchanged.
    hook.lock().unwrap_or_else(|e| e.into_inner()).refuse = usize::MAX;
    configure(&broken);
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("alert not delivered (the next run tries again)"),
        "{}",
        describe(&out)
    );
    assert!(
        !stderr(&out).contains("/hooks/highwater"),
        "the webhook's path is shown: {}",
        describe(&out)
    );
    let (calls, accepted) = snapshot(&hook);
    assert!(calls > 4 && accepted.len() == 1, "{calls} calls");

    // The webhook is back: the next failing run tells that incident, once.
    hook.lock().unwrap_or_else(|e| e.into_inner()).refuse = 0;
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let (_, accepted) = snapshot(&hook);
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_ne!(
        accepted[1]["incident"], first["incident"],
        "a new incident after the sync recovered"
    );
    let out = world.highwater(&["run", SYNC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(snapshot(&hook).1.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_open_dead_letters_are_an_incident() {
    let hook: Shared = Arc::default();
    let url = start_hook(&hook).await;
    let mut sim = SimConfig::new(42, 400);
    sim.invalid_ratio = 0.0;
    sim.poisoned_ratio = 0.02;
    let setup = Setup::new(Style::Cursor, Mode::Put);
    let world = World::start("alerts-dead-letters", sim, &setup).await;
    with_alerts(
        &world,
        &format!("webhook = \"{url}\"\ndead_letters_above = 2"),
    );
    let out = world.run_to_completion().await;
    let v = world.assert_exact().await;
    assert!(v.dead_lettered > 2, "{v}");
    let (_, accepted) = snapshot(&hook);
    assert_eq!(accepted.len(), 1, "{accepted:?}\n{}", describe(&out));
    let alert = &accepted[0];
    assert_eq!(alert["kind"], "dead_letters");
    assert_eq!(alert["open_dead_letters"], v.dead_lettered as u64);
    assert!(
        alert["reason"]
            .as_str()
            .is_some_and(|r| r.contains("more than 2")),
        "{alert}"
    );
    // Still above: the same incident.
    world.run_to_completion().await;
    assert_eq!(snapshot(&hook).1.len(), 1);
}
