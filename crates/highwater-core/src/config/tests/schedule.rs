//! `schedule = { every, jitter }`: when `highwater serve` runs a sync.

use super::*;

fn with_schedule(value: &str) -> String {
    // `schedule` is a key of the sync: it goes before the sync's first table.
    VALID.replacen(
        "\n[sync.source]",
        &format!("schedule = {value}\n\n[sync.source]"),
        1,
    )
}

#[test]
fn a_schedule_is_a_period_and_a_jitter() {
    let config = parse(
        &with_schedule(r#"{ every = "15m", jitter = "1m" }"#),
        Path::new("hw.toml"),
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.syncs[0].schedule,
        Some(ScheduleSpec {
            every: Duration::from_secs(900),
            jitter: Duration::from_secs(60),
        })
    );
    let config = parse(
        &with_schedule(r#"{ every = "1d" }"#),
        Path::new("hw.toml"),
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.syncs[0].schedule.map(|s| (s.every, s.jitter)),
        Some((Duration::from_secs(86_400), Duration::ZERO))
    );
    let config = parse(VALID, Path::new("hw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.syncs[0].schedule, None);
}

#[test]
fn every_mistake_in_a_schedule_is_named() {
    check(
        &with_schedule(r#"{ every = "often" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule.every: expected a duration like "30s", "15m", "6h" or "1d""#
        ]],
    );
    check(
        &with_schedule(r#"{ every = "500ms" }"#),
        expect![[r#"hw.toml:7: sync "invoices_to_crm".schedule.every: expected at least "1s""#]],
    );
    check(
        &with_schedule(r#"{ every = "1m", jitter = "1m" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule.jitter: expected less than `every`: a run would start past the next one's time"#
        ]],
    );
    check(
        &with_schedule(r#"{ cron = "0 2 * * *" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule.cron: unknown key `cron`, expected `every` or `jitter`"#
        ]],
    );
}
