//! CPU time of the whole bench process, shared by the benches of this workspace.

use std::time::Duration;

/// User and system CPU time of this whole process so far, threads that have ended
/// included (Linux; zero elsewhere).
pub fn process_cpu() -> Duration {
    // In clock ticks of USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_SECOND: u64 = 100;
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| fields.get(n)?.parse::<u64>().ok();
            Some(field(11)? + field(12)?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}
