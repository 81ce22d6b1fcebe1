//! The output writer: one thread that owns both log files.
//!
//! Connection tasks hand it [`Chunk`]s of whole lines; it appends them to the
//! files with plain `write_all`, coalescing whatever is waiting (up to
//! [`COALESCE_BYTES`]) into one write per file. There is no user-space buffer
//! that could be flushed half-way, so at every moment both files end on a
//! line boundary (save a write(2) interrupted by the machine itself), and
//! nothing waits longer than one write. It runs on its own thread so file
//! I/O never blocks the async workers, and it survives the server's task
//! being aborted: it drains what it was given, then exits when the last
//! sender is dropped.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::stats::StatsHandle;

/// Whole lines for both files, for the same records.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub trace: String,
    pub shiviz: String,
    pub records: u64,
}

/// Writes are batched up to about this many bytes.
const COALESCE_BYTES: usize = 1 << 20;

pub(crate) fn run(mut trace: File, mut shiviz: File, mut rx: mpsc::Receiver<Chunk>, stats: Arc<StatsHandle>) {
    let mut warned = false;
    while let Some(first) = rx.blocking_recv() {
        let mut chunk = first;
        while chunk.trace.len() < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(more) => {
                    chunk.trace.push_str(&more.trace);
                    chunk.shiviz.push_str(&more.shiviz);
                    chunk.records += more.records;
                }
                Err(_) => break,
            }
        }
        let written = trace.write_all(chunk.trace.as_bytes()).and_then(|()| shiviz.write_all(chunk.shiviz.as_bytes()));
        match written {
            Ok(()) => StatsHandle::add(&stats.records, chunk.records),
            Err(e) => {
                if !warned {
                    tracing::error!("tracing server cannot write its output: {e}; records are being lost");
                    warned = true;
                }
                StatsHandle::add(&stats.write_errors, chunk.records);
            }
        }
    }
    let _ = trace.flush();
    let _ = shiviz.flush();
}
