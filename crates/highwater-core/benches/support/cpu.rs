//! CPU time of the whole bench process, shared by the benches of this workspace.

use std::time::Duration;

/// User and system CPU time of this whole process so far, threads that have ended
/// included (Linux; zero elsewhere).
pub fn process_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat).map(|(_, cpu)| cpu))
        .unwrap_or_default()
}

/// The CPU time in a `/proc/…/stat` line (a process's or a thread's), with the
/// command name it gives.
pub fn stat_cpu(stat: &str) -> Option<(&str, Duration)> {
    // In clock ticks of USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_SECOND: u64 = 100;
    // The command name is in parentheses and may hold spaces.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n)?.parse::<u64>().ok();
    let ticks = field(11)? + field(12)?;
    Some((
        stat.get(open + 1..close)?,
        Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND),
    ))
}
