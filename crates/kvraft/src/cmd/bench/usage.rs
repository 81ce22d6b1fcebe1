//! CPU seconds and peak memory of the processes a bench started, from /proc.

/// What a set of processes used over a measured period.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// CPU seconds (user + system), all processes together.
    pub cpu_s: f64,
    /// The largest peak resident memory (VmHWM) among them, in bytes.
    pub peak_rss_bytes: u64,
}

/// CPU seconds (user + system) and peak resident memory (bytes) of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = hwm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, kb * 1024))
}

/// The processes' figures now.
pub fn sample(pids: &[u32]) -> Vec<(f64, u64)> {
    pids.iter().copied().filter_map(proc_usage).collect()
}

/// What was used between two samples.
pub fn between(before: &[(f64, u64)], after: &[(f64, u64)]) -> Usage {
    let cpu_s = after.iter().map(|a| a.0).sum::<f64>() - before.iter().map(|b| b.0).sum::<f64>();
    Usage { cpu_s: cpu_s.max(0.0), peak_rss_bytes: after.iter().map(|a| a.1).max().unwrap_or(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_figures() {
        let s = sample(&[std::process::id()]);
        assert_eq!(s.len(), 1);
        assert!(s[0].1 > 0);
        let u = between(&s, &s);
        assert_eq!(u.cpu_s, 0.0);
        assert_eq!(u.peak_rss_bytes, s[0].1);
    }
}
