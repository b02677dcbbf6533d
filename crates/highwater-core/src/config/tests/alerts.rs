//! `[sync.alerts]`: the webhook (its secrets from the environment), the
//! thresholds, and every mistake named by line and key.

use super::*;

fn with_alerts(table: &str) -> String {
    format!("{VALID}{table}")
}

#[test]
fn alerts_name_a_webhook_and_their_thresholds() {
    let text = with_alerts(
        r#"
[sync.alerts]
webhook = "https://hooks.example.com/highwater"
headers = { Authorization = "Bearer ${CRM_SECRET}" }
timeout = "5s"
dead_letters_above = 25
lag_above = "2h"
"#,
    );
    let config = parse(&text, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let alerts = config.syncs[0].alerts.clone().expect("alerts");
    assert_eq!(
        alerts.webhook.base_url.as_str(),
        "https://hooks.example.com/highwater"
    );
    assert_eq!(alerts.webhook.headers.len(), 1);
    assert_eq!(alerts.webhook.headers[0].1.expose(), "Bearer s3cret");
    assert_eq!(alerts.webhook.timeout, Duration::from_secs(5));
    assert_eq!(alerts.dead_letters_above, Some(25));
    assert_eq!(alerts.lag_above, Some(Duration::from_secs(7200)));

    let text = with_alerts("[sync.alerts]\nwebhook = \"http://127.0.0.1:9/hook\"\n");
    let config = parse(&text, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    let alerts = config.syncs[0].alerts.clone().expect("alerts");
    assert_eq!(alerts.webhook.timeout, Duration::from_secs(10));
    assert_eq!(alerts.dead_letters_above, None, "failed runs only");
    assert_eq!(alerts.lag_above, None);
    let config = parse(VALID, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.syncs[0].alerts.is_none());
}

#[test]
fn every_mistake_in_the_alerts_is_named() {
    check(
        &with_alerts(
            "[sync.alerts]\nwebhook = \"hooks.example.com\"\ndead_letters_above = -1\nlag_above = \"soon\"\n",
        ),
        expect![[r#"
            hw.toml:49: sync "invoices_to_crm".alerts.webhook: expected an absolute http(s) URL, like "https://api.example.com"
            hw.toml:50: sync "invoices_to_crm".alerts.dead_letters_above: expected a whole number from 0 to 4294967295
            hw.toml:51: sync "invoices_to_crm".alerts.lag_above: expected a duration like "30s", "15m", "6h" or "1d""#]],
    );
    check(
        &with_alerts("[sync.alerts]\nwebhook = \"https://h.example.com/${HOOK}\"\n"),
        expect![[
            r#"hw.toml:49: sync "invoices_to_crm".alerts.webhook: environment variable HOOK is not set"#
        ]],
    );
    check(
        &with_alerts(
            "[sync.alerts]\nwebhook = \"https://h.example.com/hook\"\nheaders = { \"Bad Name\" = \"x\" }\n",
        ),
        expect![[
            r#"hw.toml:50: sync "invoices_to_crm".alerts.headers.Bad Name: not a valid HTTP header name"#
        ]],
    );
    check(
        &with_alerts("[sync.alerts]\nlag_above = \"1h\"\n"),
        expect![[r#"hw.toml:48: sync "invoices_to_crm".alerts: missing key `webhook`"#]],
    );
    check(
        &with_alerts("[sync.alerts]\nurl = \"https://h.example.com\"\n"),
        expect![[
            r#"hw.toml:49: sync "invoices_to_crm".alerts.url: unknown key `url`, expected one of `webhook`, `headers`, `timeout`, `dead_letters_above`, `lag_above`"#
        ]],
    );
}
