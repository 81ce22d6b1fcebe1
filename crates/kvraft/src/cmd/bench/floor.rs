//! The floor of one durable, replicated write on this machine: one
//! fdatasync (the leader's and the followers' fsyncs overlap at best) plus
//! two loopback round trips (client to leader and back, leader to a
//! follower and back). No system can acknowledge one client's write faster
//! than that; a single client's p50 is judged against it.
//!
//! The round trips are measured between two CPUs, each end pinned to one.
//! Left to the scheduler, the two ends of a ping-pong land on one vCPU in
//! some runs and on two in others, and the median moves threefold with it
//! (this VM: 0.014-0.018 ms on one, 0.05-0.10 across, as with `taskset -c
//! 0`): a round trip on one CPU is two context switches, one no network
//! has, and it made the yardstick of the single-client goal a coin flip.
//! The one-CPU figure is printed beside it, not used.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

/// fdatasyncs of a 100-byte append measured.
const FSYNCS: usize = 200;
/// Loopback round trips measured.
const ROUND_TRIPS: usize = 2000;

/// The medians, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    pub fsync_ms: f64,
    /// Between two CPUs, or unpinned where the process may use only one.
    pub rtt_ms: f64,
    /// Both ends on one CPU, for comparison; `None` where pinning failed
    /// or only one CPU is allowed.
    pub rtt_one_cpu_ms: Option<f64>,
}

impl Floor {
    /// The mean of two measurements (before and after a long run).
    pub fn mean(a: &Floor, b: &Floor) -> Floor {
        let one_cpu = match (a.rtt_one_cpu_ms, b.rtt_one_cpu_ms) {
            (Some(x), Some(y)) => Some((x + y) / 2.0),
            (x, y) => x.or(y),
        };
        Floor {
            fsync_ms: (a.fsync_ms + b.fsync_ms) / 2.0,
            rtt_ms: (a.rtt_ms + b.rtt_ms) / 2.0,
            rtt_one_cpu_ms: one_cpu,
        }
    }

    /// One fdatasync plus two round trips.
    pub fn ms(&self) -> f64 {
        self.fsync_ms + 2.0 * self.rtt_ms
    }

    pub fn line(&self) -> String {
        let trips = match self.rtt_one_cpu_ms {
            Some(one) => format!("{ROUND_TRIPS} TCP round trips between two CPUs; on one CPU {one:.3} ms"),
            None => format!("{ROUND_TRIPS} TCP round trips"),
        };
        format!(
            "floor = one fdatasync + two loopback round trips = {:.3} ms + 2 x {:.3} ms = {:.3} ms \
             (medians of {FSYNCS} fdatasyncs of a 100-byte append, {trips})",
            self.fsync_ms,
            self.rtt_ms,
            self.ms()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "floor_ms": self.ms(),
            "fsync_p50_ms": self.fsync_ms,
            "rtt_p50_ms": self.rtt_ms,
            "rtt_one_cpu_p50_ms": self.rtt_one_cpu_ms,
        })
    }
}

/// Measures the floor, the fsyncs in `dir` (created if need be), once the
/// machine is quiet (see quiet.rs).
pub async fn measure(dir: &Path) -> anyhow::Result<Floor> {
    let dir: PathBuf = dir.into();
    tokio::task::spawn_blocking(move || {
        super::quiet::wait();
        let fsync_ms = fsync_p50(&dir, FSYNCS)?;
        let (rtt_ms, rtt_one_cpu_ms) = match two_cpus() {
            Some((a, b)) => {
                (rtt_p50(ROUND_TRIPS, Placement::Pinned(a, b))?, Some(rtt_p50(ROUND_TRIPS, Placement::Pinned(a, a))?))
            }
            None => (rtt_p50(ROUND_TRIPS, Placement::Unpinned)?, None),
        };
        Ok(Floor { fsync_ms, rtt_ms, rtt_one_cpu_ms })
    })
    .await
    .map_err(|e| anyhow!("measuring the floor: {e}"))?
}

/// [`shared_fsync_p50`] off the runtime's threads.
pub async fn measure_shared(dir: &Path, writers: usize) -> anyhow::Result<f64> {
    let dir: PathBuf = dir.into();
    tokio::task::spawn_blocking(move || {
        super::quiet::wait();
        shared_fsync_p50(&dir, writers)
    })
    .await
    .map_err(|e| anyhow!("measuring fdatasyncs at once: {e}"))?
}

/// How [`shared_fsync_p50`]'s figure is printed.
pub fn shared_line(writers: usize, ms: f64) -> String {
    format!(
        "not in the floor: {writers} fdatasyncs at once on this disk, as {writers} local servers do: {ms:.3} ms each \
         (median of {writers} x {FSYNCS})"
    )
}

/// What the shared disk alone costs one client's write on this machine:
/// a commit waits for the second of the servers' syncs, which run at once
/// on the one disk, so two round trips plus `shared_ms` is already spent
/// before any server does any work of its own.
pub fn shared_bound_ms(floor: &Floor, shared_ms: f64) -> f64 {
    2.0 * floor.rtt_ms + shared_ms
}

/// How [`shared_bound_ms`] is printed.
pub fn shared_bound_line(floor: &Floor, shared_ms: f64) -> String {
    let bound = shared_bound_ms(floor, shared_ms);
    format!(
        "with them, two round trips + those fdatasyncs = 2 x {:.3} ms + {shared_ms:.3} ms = {bound:.3} ms = {:.2} x the floor, \
         before any server does any work",
        floor.rtt_ms,
        bound / floor.ms()
    )
}

/// The median, in milliseconds.
fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The median time to append 100 bytes to a file in `dir` and fdatasync it.
fn fsync_p50(dir: &Path, n: usize) -> anyhow::Result<f64> {
    Ok(median_ms(fsync_times(dir, 0, n)?))
}

/// Not part of the floor: the median fdatasync when `writers` threads, each
/// appending to a file of its own in `dir`, sync at the same time, as the
/// servers of a cluster on one machine do. On a disk that serves one
/// request at a time it is well above [`fsync_p50`]'s (this VM: 0.22-0.31
/// ms for three against 0.15-0.18 for one), a bound the floor leaves out.
pub fn shared_fsync_p50(dir: &Path, writers: usize) -> anyhow::Result<f64> {
    let dir: PathBuf = dir.into();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || fsync_times(&dir, w, FSYNCS))
        })
        .collect();
    let mut all = Vec::with_capacity(writers * FSYNCS);
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow!("a writer thread panicked"))??);
    }
    Ok(median_ms(all))
}

/// `n` timed appends of 100 bytes, each followed by an fdatasync, to a new
/// file in `dir` (tagged `tag`), which is removed afterwards.
fn fsync_times(dir: &Path, tag: usize, n: usize) -> anyhow::Result<Vec<Duration>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("floor-{}-{tag}.dat", std::process::id()));
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let measured = (|| -> std::io::Result<Vec<Duration>> {
        f.sync_all()?;
        let record = [b'x'; 100];
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f.write_all(&record)?;
            f.sync_data()?;
            times.push(t.elapsed());
        }
        Ok(times)
    })();
    drop(f);
    let _ = std::fs::remove_file(&path);
    measured.with_context(|| format!("fdatasync in {}", dir.display()))
}

/// Where the two ends of the measured round trips run.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// The caller on the first CPU, the echo on the second (may be equal).
    Pinned(usize, usize),
    /// Wherever the scheduler puts them.
    Unpinned,
}

/// The first two CPUs this process may run on, if there are two.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    // SAFETY: CPU_ISSET only reads the set, for cpu < CPU_SETSIZE.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // inside it for cpu < CPU_SETSIZE (two_cpus only yields such), and
    // pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The median round trip of a 32-byte message over loopback TCP
/// (TCP_NODELAY), its two ends on threads of their own placed as `at` says.
fn rtt_p50(n: usize, at: Placement) -> anyhow::Result<f64> {
    let (mine, theirs) = match at {
        Placement::Pinned(a, b) => (Some(a), Some(b)),
        Placement::Unpinned => (None, None),
    };
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(cpu) = theirs {
            pin_to(cpu)?;
        }
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 32];
        loop {
            match s.read_exact(&mut b) {
                Ok(()) => s.write_all(&b)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    // A thread of its own, so that pinning it leaves the caller's alone.
    // It connects before it pins, so that the echo's accept returns
    // whatever happens next.
    let caller = std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
        let mut c = TcpStream::connect(addr)?;
        if let Some(cpu) = mine {
            pin_to(cpu)?;
        }
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [7u8; 32];
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 100 {
            let t = Instant::now();
            c.write_all(&b)?;
            c.read_exact(&mut b)?;
            if i >= 100 {
                times.push(t.elapsed());
            }
        }
        Ok(times)
    });
    let measured = caller.join().map_err(|_| anyhow!("the round-trip thread panicked"))?;
    let echoed = echo.join().map_err(|_| anyhow!("the echo thread panicked"))?;
    let measured = measured.with_context(|| format!("loopback round trips ({at:?})"))?;
    echoed.with_context(|| format!("loopback echo ({at:?})"))?;
    Ok(median_ms(measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_one_fsync_and_two_round_trips() {
        let f = Floor { fsync_ms: 1.0, rtt_ms: 0.25, rtt_one_cpu_ms: Some(0.125) };
        assert_eq!(f.ms(), 1.5);
        assert!(f.line().starts_with("floor = one fdatasync + two loopback round trips"));
        assert_eq!(f.json()["floor_ms"], 1.5);
    }

    #[test]
    fn medians() {
        assert_eq!(median_ms(vec![]), 0.0);
        let ms = |m| Duration::from_millis(m);
        assert_eq!(median_ms(vec![ms(3), ms(1), ms(2)]), 2.0);
    }

    #[test]
    fn measures_something() {
        let dir = tempfile::tempdir().unwrap();
        assert!(fsync_p50(dir.path(), 5).unwrap() > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file is removed");
        assert!(rtt_p50(20, Placement::Unpinned).unwrap() > 0.0);
    }

    #[test]
    fn round_trips_are_measured_on_one_cpu_and_across_two() {
        let first =
            (0..libc::CPU_SETSIZE as usize).find(|&c| pin_to_probe(c)).expect("this process may run on some CPU");
        assert!(rtt_p50(20, Placement::Pinned(first, first)).unwrap() > 0.0);
        if let Some((a, b)) = two_cpus() {
            assert_ne!(a, b);
            assert!(rtt_p50(20, Placement::Pinned(a, b)).unwrap() > 0.0);
        }
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpu() {
        let Some((a, b)) = two_cpus() else { return };
        std::thread::spawn(move || {
            for cpu in [a, b, a] {
                pin_to(cpu).unwrap();
                // SAFETY: no arguments; returns the CPU this thread runs on.
                assert_eq!(unsafe { libc::sched_getcpu() }, cpu as i32);
            }
        })
        .join()
        .unwrap();
    }

    /// Whether this process's affinity includes `cpu`.
    fn pin_to_probe(cpu: usize) -> bool {
        // SAFETY: as in two_cpus.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
                && libc::CPU_ISSET(cpu, &set)
        }
    }

    #[test]
    fn the_mean_of_two_floors_keeps_what_either_measured() {
        let a = Floor { fsync_ms: 0.2, rtt_ms: 0.06, rtt_one_cpu_ms: Some(0.02) };
        let b = Floor { fsync_ms: 0.4, rtt_ms: 0.08, rtt_one_cpu_ms: None };
        let m = Floor::mean(&a, &b);
        assert!((m.fsync_ms - 0.3).abs() < 1e-9 && (m.rtt_ms - 0.07).abs() < 1e-9);
        assert_eq!(m.rtt_one_cpu_ms, Some(0.02));
        let both = Floor::mean(&a, &Floor { rtt_one_cpu_ms: Some(0.04), ..b });
        assert!((both.rtt_one_cpu_ms.unwrap() - 0.03).abs() < 1e-9);
        assert!(a.line().contains("between two CPUs; on one CPU 0.020 ms"), "{}", a.line());
        assert!(!b.line().contains("one CPU"), "{}", b.line());
    }

    #[test]
    fn shared_fsyncs_are_measured_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        assert!(shared_fsync_p50(dir.path(), 3).unwrap() > 0.0);
        assert!(shared_line(3, 0.25).starts_with("not in the floor: 3 fdatasyncs at once"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "every writer's file is removed");
    }
}
