//! Owns a sync's alerts: after an invocation, which incidents hold — its run
//! failed, more dead letters are open than `dead_letters_above`, the
//! high-water mark is further behind than `lag_above` — and the webhook call
//! for each incident not yet told, sent through the same retry loop as every
//! request. The state store keeps the incidents, so each is told once, however
//! many invocations see it, and one whose call went unanswered is told by the
//! next invocation that sees it.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::Method;
use serde_json::json;

use crate::config::{AlertSpec, SyncSpec};
use crate::http::{Api, Request};
use crate::state::{Counters, IncidentKind, StateError, Store};
use crate::stop::Stop;

/// How an invocation of one of the sync's runs ended, as the alerts weigh it.
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    pub run_id: Option<&'a str>,
    /// Why it failed; `None` when it completed or stopped at a checkpoint.
    pub failure: Option<String>,
    pub counters: Counters,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build an HTTP client for the alert webhook: {0}")]
    Client(#[from] reqwest::Error),
}

/// Opens or closes the sync's incidents after `ended`, and calls the webhook
/// for each open one not yet told; what it sent, and what went unanswered
/// (which the next invocation that sees the incident sends again), is logged.
pub async fn raise(spec: &SyncSpec, store: &Store, ended: &Ended<'_>) -> Result<(), AlertError> {
    let Some(alerts) = &spec.alerts else {
        return Ok(());
    };
    let open_dead_letters = store.open_dead_letters(&spec.name).await?;
    let now = Timestamp::now();
    let lag = store
        .high_water_mark(&spec.name)
        .await?
        .at()
        .map(|mark| Duration::try_from(now.duration_since(mark)).unwrap_or_default());
    let holding = holding(alerts, ended, open_dead_letters, lag);
    let api = Api::new(
        &spec.name,
        "alert webhook",
        alerts.webhook.clone(),
        // Retried as the sync's own requests are.
        spec.retry,
        1,
    )?;
    for (kind, reason) in holding {
        let Some(reason) = reason else {
            store.close_incident(&spec.name, kind).await?;
            continue;
        };
        let incident = store
            .open_incident(&spec.name, kind, ended.run_id, &reason)
            .await?;
        if incident.notified_at.is_some() {
            continue;
        }
        let body = json!({
            "sync": spec.name,
            "incident": incident.incident_id,
            "kind": kind.as_str(),
            "reason": incident.reason,
            "run": incident.run_id,
            "opened_at": incident.opened_at.to_string(),
            "counts": ended.counters,
            "open_dead_letters": open_dead_letters,
            "lag_seconds": lag.map(|l| l.as_secs()),
        });
        let request = Request {
            method: Method::POST,
            url: alerts.webhook.base_url.clone(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Some(body.to_string().into()),
            // The incident id lets the receiver drop a call it got twice.
            idempotent: true,
        };
        match api.send(&request, &Stop::never()).await {
            Ok(_) => {
                store.incident_notified(&incident.incident_id).await?;
                tracing::info!(
                    event = crate::obs::ALERT_SENT,
                    sync = %spec.name,
                    kind = kind.as_str(),
                    incident = %incident.incident_id,
                    "alert sent: {}",
                    incident.reason
                );
            }
            Err(e) => {
                // A webhook's path often holds its secret: it is not shown.
                let path = alerts.webhook.base_url.path();
                let mut why = e.to_string();
                if path.len() > 1 {
                    why = why.replace(path, "/***");
                }
                tracing::warn!(
                    event = crate::obs::ALERT_UNDELIVERED,
                    sync = %spec.name,
                    kind = kind.as_str(),
                    incident = %incident.incident_id,
                    "alert not delivered (the next run tries again): {why}"
                );
            }
        }
    }
    Ok(())
}

/// Each kind of incident, with why it holds, or `None` where it does not (or
/// is not configured): an incident is open exactly while its condition holds.
fn holding(
    alerts: &AlertSpec,
    ended: &Ended<'_>,
    open_dead_letters: i64,
    lag: Option<Duration>,
) -> [(IncidentKind, Option<String>); 3] {
    let dead_letters = alerts.dead_letters_above.and_then(|above| {
        (u64::try_from(open_dead_letters).unwrap_or(0) > above)
            .then(|| format!("{open_dead_letters} open dead letters, more than {above}"))
    });
    let lag = alerts.lag_above.zip(lag).and_then(|(above, lag)| {
        (lag > above).then(|| {
            format!(
                "the high-water mark is {:#} behind, more than {:#}",
                jiff::SignedDuration::from_secs(lag.as_secs() as i64),
                jiff::SignedDuration::from_secs(above.as_secs() as i64),
            )
        })
    });
    [
        (IncidentKind::RunFailed, ended.failure.clone()),
        (IncidentKind::DeadLetters, dead_letters),
        (IncidentKind::Lag, lag),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts(dead_letters_above: Option<u64>, lag_above: Option<Duration>) -> AlertSpec {
        let text = r#"
[[sync]]
name = "s"

[sync.source]
base_url = "http://127.0.0.1:1"
path = "/items"
pagination = { style = "cursor", token_path = "next", token_param = "cursor" }

[sync.destination]
type = "http"
base_url = "http://127.0.0.1:2"
mode = "put"
path = "/items/{external_id}"

[sync.alerts]
webhook = "http://127.0.0.1:3/hook"
"#;
        let config = crate::config::parse(text, std::path::Path::new("hw.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut spec = config.syncs[0]
            .alerts
            .clone()
            .unwrap_or_else(|| unreachable!());
        spec.dead_letters_above = dead_letters_above;
        spec.lag_above = lag_above;
        spec
    }

    fn ended(failure: Option<&str>) -> Ended<'static> {
        Ended {
            run_id: Some("r1"),
            failure: failure.map(str::to_owned),
            counters: Counters::default(),
        }
    }

    /// Each condition holds past its threshold only, and only when configured;
    /// a failed invocation always does.
    #[test]
    fn each_incident_holds_past_its_threshold() {
        let hour = Duration::from_secs(3600);
        let reasons = |spec: &AlertSpec, failure, dead, lag| {
            holding(spec, &ended(failure), dead, lag).map(|(_, reason)| reason)
        };
        let none = alerts(None, None);
        assert_eq!(
            reasons(&none, Some("source: 401"), 1_000, Some(hour * 100)),
            [Some("source: 401".into()), None, None]
        );
        let both = alerts(Some(10), Some(hour * 2));
        assert_eq!(
            reasons(&both, None, 11, Some(hour * 3)),
            [
                None,
                Some("11 open dead letters, more than 10".into()),
                Some("the high-water mark is 3h behind, more than 2h".into()),
            ]
        );
        assert_eq!(
            reasons(&both, None, 10, Some(hour * 2)),
            [None, None, None],
            "at the threshold is not past it"
        );
        assert_eq!(
            reasons(&both, None, 0, None),
            [None, None, None],
            "no high-water mark yet: no lag to speak of"
        );
    }
}
