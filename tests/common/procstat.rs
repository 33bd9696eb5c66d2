//! CPU time of a process from `/proc/PID/stat`, for tests and benches that weigh work per
//! line (benches include this file by path).

/// CPU time (user and system) the process `pid` has used, in seconds; `"self"` for this one.
/// 0 when it cannot be read.
pub fn cpu_secs(pid: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
