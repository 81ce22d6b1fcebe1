//! The floor of one durable, replicated write on this machine: one
//! fdatasync (the leader's and the followers' fsyncs overlap at best) plus
//! two loopback round trips (client to leader and back, leader to a
//! follower and back). No system can acknowledge one client's write faster
//! than that; a single client's p50 is judged against it.

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
    pub rtt_ms: f64,
}

impl Floor {
    /// The mean of two measurements (before and after a long run).
    pub fn mean(a: &Floor, b: &Floor) -> Floor {
        Floor { fsync_ms: (a.fsync_ms + b.fsync_ms) / 2.0, rtt_ms: (a.rtt_ms + b.rtt_ms) / 2.0 }
    }

    /// One fdatasync plus two round trips.
    pub fn ms(&self) -> f64 {
        self.fsync_ms + 2.0 * self.rtt_ms
    }

    pub fn line(&self) -> String {
        format!(
            "floor = one fdatasync + two loopback round trips = {:.3} ms + 2 x {:.3} ms = {:.3} ms \
             (medians of {FSYNCS} fdatasyncs of a 100-byte append, {ROUND_TRIPS} TCP round trips)",
            self.fsync_ms,
            self.rtt_ms,
            self.ms()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"floor_ms": self.ms(), "fsync_p50_ms": self.fsync_ms, "rtt_p50_ms": self.rtt_ms})
    }
}

/// Measures the floor, the fsyncs in `dir` (created if need be), once the
/// machine is quiet (see quiet.rs).
pub async fn measure(dir: &Path) -> anyhow::Result<Floor> {
    let dir: PathBuf = dir.into();
    tokio::task::spawn_blocking(move || {
        super::quiet::wait();
        let fsync_ms = fsync_p50(&dir, FSYNCS)?;
        let rtt_ms = rtt_p50(ROUND_TRIPS)?;
        Ok(Floor { fsync_ms, rtt_ms })
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

/// The median round trip of a 32-byte message over loopback TCP (TCP_NODELAY).
fn rtt_p50(n: usize) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
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
    let measured = (|| -> std::io::Result<Vec<Duration>> {
        let mut c = TcpStream::connect(addr)?;
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
    })()
    .context("loopback round trips")?;
    let _ = echo.join();
    Ok(median_ms(measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_one_fsync_and_two_round_trips() {
        let f = Floor { fsync_ms: 1.0, rtt_ms: 0.25 };
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
        assert!(rtt_p50(20).unwrap() > 0.0);
    }

    #[test]
    fn shared_fsyncs_are_measured_and_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        assert!(shared_fsync_p50(dir.path(), 3).unwrap() > 0.0);
        assert!(shared_line(3, 0.25).starts_with("not in the floor: 3 fdatasyncs at once"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "every writer's file is removed");
    }
}
