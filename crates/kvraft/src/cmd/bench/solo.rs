//! A single-threaded runtime on a thread of its own, for loads of a few
//! lanes: their connections are made on it and their lanes run on it, so
//! one operation's tasks (the lane, the client library's session, the
//! HTTP/2 connection) hand each other work without waking another thread.
//!
//! Why: a few lanes cannot use a second core, and on the multi-thread
//! runtime every hand-over between those tasks may wake another worker.
//! On this 2-vCPU VM, where waking a halted vCPU takes tens of
//! microseconds, one client's put p50 was 4-6% lower on a `Solo` (two
//! interleaved A/Bs on one running cluster, 8 and 12 rounds each; see
//! docs/perf-log.md, the fifth session): time that was the load
//! generator's, not the system's. Both systems get the same treatment.

use std::future::Future;
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Loads of at most this many lanes (clients x window) run on a [`Solo`].
pub const MAX_LANES: u64 = 4;

/// The runtime's thread runs until this is dropped; every task on it is
/// dropped with it.
pub struct Solo {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Solo {
    /// A `Solo` if a load of `lanes` lanes should run on one.
    pub fn for_lanes(lanes: u64) -> anyhow::Result<Option<Solo>> {
        if lanes > MAX_LANES {
            return Ok(None);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the load's runtime")?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kvraft-bench-lanes".into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
            })
            .context("starting the load's thread")?;
        Ok(Some(Solo { handle, stop: Some(stop), thread: Some(thread) }))
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `f` to its end on this runtime, so that whatever it spawns
    /// (connections' background tasks) lives here. (Only etcd's clients
    /// connect asynchronously.)
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub async fn run<F, T>(&self, f: F) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(f).await.map_err(|e| anyhow!("the load's runtime: {e}"))?
    }
}

impl Drop for Solo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` on `solo` if there is one, else here.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub async fn on<F, T>(solo: Option<&Solo>, f: F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    match solo {
        Some(s) => s.run(f).await,
        None => f.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_few_lanes_get_one() {
        assert!(Solo::for_lanes(1).unwrap().is_some());
        assert!(Solo::for_lanes(MAX_LANES).unwrap().is_some());
        assert!(Solo::for_lanes(MAX_LANES + 1).unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_on_the_solo_thread_and_stops_with_it() {
        let solo = Solo::for_lanes(1).unwrap().unwrap();
        let name = solo.run(async { Ok(std::thread::current().name().map(str::to_owned)) }).await.unwrap();
        assert_eq!(name.as_deref(), Some("kvraft-bench-lanes"));
        // A task left running is dropped with the runtime: its sender closes.
        let (tx, rx) = oneshot::channel::<()>();
        solo.handle().spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(solo);
        assert!(rx.await.is_err());
    }
}
