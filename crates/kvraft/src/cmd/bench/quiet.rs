//! Waiting for a quiet machine before the floor is measured.
//!
//! A floor measured while anything else runs is no floor: with the vCPUs
//! kept awake (a cluster still exiting, the disk freeing a removed folder),
//! a loopback round trip took 0.014 ms instead of 0.055, and the servers,
//! measured later on a quiet machine, pay the wake-ups the floor skipped.

use std::time::{Duration, Instant};

/// How busy the CPUs may be, as a fraction of all of them, over one window.
pub const QUIET_BUSY: f64 = 0.03;
/// One look at the CPUs.
const WINDOW: Duration = Duration::from_millis(300);
/// Longest wait before measuring anyway.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// CPU time in clock ticks since boot: (all, busy). Busy is everything but
/// idle and I/O wait.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let all = fields.iter().take(8).fold(0u64, |a, &f| a.saturating_add(f));
    let idle = fields.get(3)?.saturating_add(fields.get(4).copied().unwrap_or(0));
    Some((all, all.saturating_sub(idle)))
}

fn read_ticks() -> Option<(u64, u64)> {
    cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The busy fraction of all CPUs over `window`; `None` where /proc/stat
/// cannot be read (then nothing is waited for).
fn busy_over(window: Duration) -> Option<f64> {
    let (a0, b0) = read_ticks()?;
    std::thread::sleep(window);
    let (a1, b1) = read_ticks()?;
    let all = a1.checked_sub(a0).filter(|&n| n > 0)?;
    Some(b1.saturating_sub(b0) as f64 / all as f64)
}

/// Blocks until one `window` sees the CPUs at most `busy` busy, for at
/// most `max_wait`. Returns the last busy fraction if the machine never
/// got that quiet.
pub fn wait_with(window: Duration, busy: f64, max_wait: Duration) -> Option<f64> {
    let start = Instant::now();
    loop {
        let seen = busy_over(window)?;
        if seen <= busy {
            return None;
        }
        if start.elapsed() >= max_wait {
            return Some(seen);
        }
    }
}

/// [`wait_with`] with the bench's settings; says on standard error when
/// the machine stayed busy.
pub fn wait() {
    if let Some(busy) = wait_with(WINDOW, QUIET_BUSY, MAX_WAIT) {
        eprintln!(
            "kvraft bench: the CPUs stayed {:.0}% busy for {MAX_WAIT:?}; measuring the floor anyway \
             (it may come out low)",
            busy * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn proc_stat_is_read_as_all_and_busy_ticks() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n";
        assert_eq!(cpu_ticks(stat), Some((1000, 160)));
        assert_eq!(cpu_ticks("intr 1\n"), None);
        assert_eq!(cpu_ticks("cpu  1 2 x\n"), None);
        assert_eq!(cpu_ticks(&format!("cpu  {} 1 0 {}\n", u64::MAX, u64::MAX)), Some((u64::MAX, 0)));
    }

    /// A thread spinning on one CPU keeps the machine busy: the wait ends
    /// only after it stops (or at the longest wait, if other tests keep
    /// the CPUs busy, which is later still).
    #[test]
    fn the_wait_outlasts_a_spinning_thread() {
        let done = Arc::new(AtomicBool::new(false));
        let spinner = {
            let done = done.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_millis(700);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        wait_with(Duration::from_millis(100), QUIET_BUSY, Duration::from_secs(5));
        assert!(done.load(Ordering::SeqCst), "the wait ended while a CPU was busy");
        spinner.join().unwrap();
    }
}
