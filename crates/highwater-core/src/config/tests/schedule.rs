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
fn a_schedule_is_a_period_or_a_cron_expression_and_a_jitter() {
    use crate::schedule::{Cron, Schedule};
    let schedule = |value: &str| {
        parse(&with_schedule(value), Path::new("hw.toml"), &env)
            .unwrap_or_else(|e| panic!("{e}"))
            .syncs[0]
            .schedule
            .clone()
    };
    assert_eq!(
        schedule(r#"{ every = "15m", jitter = "1m" }"#),
        Some(ScheduleSpec {
            when: Schedule::Every(Duration::from_secs(900)),
            jitter: Duration::from_secs(60),
        })
    );
    assert_eq!(
        schedule(r#"{ every = "1d" }"#).map(|s| (s.when, s.jitter)),
        Some((Schedule::Every(Duration::from_secs(86_400)), Duration::ZERO))
    );
    let cron: Cron = "0 2 * * *".parse().unwrap_or_else(|e| panic!("{e}"));
    let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        schedule(r#"{ cron = "0 2 * * *", timezone = "Europe/Paris", jitter = "30s" }"#),
        Some(ScheduleSpec {
            when: Schedule::Cron(Box::new(cron.clone()), paris),
            jitter: Duration::from_secs(30),
        })
    );
    assert_eq!(
        schedule(r#"{ cron = "0 2 * * *" }"#).map(|s| s.when),
        Some(Schedule::Cron(Box::new(cron), jiff::tz::TimeZone::UTC)),
        "UTC unless said"
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
            r#"hw.toml:7: sync "invoices_to_crm".schedule.jitter: expected less than the time between runs: a run would start past the next one's time"#
        ]],
    );
    check(
        &with_schedule(r#"{ every = "1h", cron = "0 2 * * *" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule: expected either `every` (a period) or `cron` (an expression), not both or neither"#
        ]],
    );
    check(
        &with_schedule(r#"{ jitter = "1m" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule: expected either `every` (a period) or `cron` (an expression), not both or neither"#
        ]],
    );
    check(
        &with_schedule(r#"{ cron = "0 25 * * *", timezone = "Europe/Lutece" }"#),
        expect![[r#"
            hw.toml:7: sync "invoices_to_crm".schedule.cron: hour: "25" is not from 0 to 23
            hw.toml:7: sync "invoices_to_crm".schedule.timezone: expected a time zone name like "Europe/Paris" or "UTC""#]],
    );
    check(
        &with_schedule(r#"{ every = "1h", timezone = "Europe/Paris" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule.timezone: applies only to `cron`: a period runs from each start, whatever the zone"#
        ]],
    );
    check(
        &with_schedule(r#"{ at = "02:00" }"#),
        expect![[
            r#"hw.toml:7: sync "invoices_to_crm".schedule.at: unknown key `at`, expected one of `every`, `cron`, `timezone`, `jitter`"#
        ]],
    );
}
