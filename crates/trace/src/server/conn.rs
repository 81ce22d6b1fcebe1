//! One tracer's connection: hello, then batches in, acks out.
//!
//! Everything read here comes from the network: a bad frame closes the
//! connection (counted), a bad record is rejected (counted, and reported to
//! the tracer in the ack), nothing panics. Records are formatted into whole
//! output lines here, in the connection's task, so the writer thread only
//! copies bytes; a tracer's records keep their order because one connection
//! is served by one task and the writer channel is FIFO.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::stats::StatsHandle;
use super::writer::Chunk;
use crate::record::push_trace_line;
use crate::shiviz;
use crate::tracer::valid_identity;
use crate::wire::{self, Ack, Hello, HelloReply, KIND_ACK, KIND_BATCH, KIND_HELLO, KIND_HELLO_REPLY, WireRecord};

/// A tracer must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    secret: Arc<str>,
    tx: mpsc::Sender<Chunk>,
    stats: Arc<StatsHandle>,
) {
    let identity = match hello(&mut stream, &secret, &stats).await {
        Some(identity) => identity,
        None => return,
    };
    loop {
        let (kind, payload) = match wire::read_frame(&mut stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(wire::WireError::Io(_)) => return,
            Err(e) => {
                tracing::debug!("tracer {identity}: {e}");
                StatsHandle::add(&stats.bad_connections, 1);
                return;
            }
        };
        if kind != KIND_BATCH {
            tracing::debug!("tracer {identity}: unexpected frame kind {kind}");
            StatsHandle::add(&stats.bad_connections, 1);
            return;
        }
        let (chunk, ack) = format_batch(&identity, &payload);
        StatsHandle::add(&stats.rejected, u64::from(ack.rejected));
        // The writer is gone only when the server is shutting down.
        if chunk.records > 0 && tx.send(chunk).await.is_err() {
            return;
        }
        if wire::write_frame(&mut stream, KIND_ACK, &wire::encode(&ack)).await.is_err() {
            return;
        }
    }
}

/// Reads and answers the hello; the tracer's identity if accepted.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, secret: &str, stats: &StatsHandle) -> Option<String> {
    let frame = tokio::time::timeout(HELLO_TIMEOUT, wire::read_frame_at_most(stream, wire::MAX_HELLO)).await;
    let hello = match frame {
        Ok(Ok(Some((KIND_HELLO, payload)))) => wire::decode::<Hello>(&payload).ok(),
        _ => None,
    };
    let Some(hello) = hello else {
        StatsHandle::add(&stats.bad_connections, 1);
        return None;
    };
    let refusal = if hello.version != wire::WIRE_VERSION {
        Some(format!("wire version {} not supported (server speaks {})", hello.version, wire::WIRE_VERSION))
    } else if !valid_identity(&hello.identity) {
        Some(format!("identity {:?} must be non-empty, without whitespace", hello.identity))
    } else if !same_secret(hello.secret.as_bytes(), secret.as_bytes()) {
        Some("wrong secret".to_owned())
    } else {
        None
    };
    let reply = match &refusal {
        None => HelloReply::Welcome,
        Some(reason) => HelloReply::Refused(reason.clone()),
    };
    let sent = wire::write_frame(stream, KIND_HELLO_REPLY, &wire::encode(&reply)).await;
    match refusal {
        None if sent.is_ok() => {
            StatsHandle::add(&stats.tracers_accepted, 1);
            tracing::debug!("tracer {} connected", hello.identity);
            Some(hello.identity)
        }
        None => None,
        Some(reason) => {
            StatsHandle::add(&stats.tracers_refused, 1);
            tracing::warn!("refused tracer {:?}: {reason}", hello.identity);
            None
        }
    }
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Turns a batch into output lines, rejecting malformed records.
fn format_batch(identity: &str, payload: &[u8]) -> (Chunk, Ack) {
    let mut chunk = Chunk {
        trace: String::with_capacity(payload.len() * 2),
        shiviz: String::with_capacity(payload.len() * 2),
        records: 0,
    };
    let (claimed, records) = match wire::decode_batch(payload) {
        Ok(batch) => batch,
        Err(_) => {
            return (chunk, Ack { accepted: 0, rejected: 0 });
        }
    };
    let mut accepted = 0u32;
    let mut rejected = 0u32;
    for rec in records {
        match rec {
            Ok(rec) if valid_record(&rec) => {
                push_trace_line(&mut chunk.trace, identity, rec.trace_id, &rec.tag, &rec.body, &rec.clock);
                shiviz::push_event(&mut chunk.shiviz, identity, &rec.clock, rec.trace_id, &rec.tag, &rec.body);
                accepted += 1;
            }
            _ => rejected += 1,
        }
    }
    // Records the batch announced but that could not even be framed.
    rejected += claimed.saturating_sub(accepted + rejected);
    chunk.records = u64::from(accepted);
    (chunk, Ack { accepted, rejected })
}

/// A record is written only if it cannot break either file's lines: a
/// non-empty tag without control characters and a body that is JSON on one
/// line.
fn valid_record(rec: &WireRecord) -> bool {
    !rec.tag.is_empty()
        && !rec.tag.chars().any(char::is_control)
        && !rec.body.contains(['\n', '\r'])
        && serde_json::from_str::<serde::de::IgnoredAny>(&rec.body).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VectorClock;
    use crate::wire::{WireRecordRef, append_record};

    fn batch(records: &[(&str, &str)]) -> Vec<u8> {
        let clock: VectorClock = [("c", 1)].into_iter().collect();
        let mut out = (records.len() as u32).to_le_bytes().to_vec();
        for (tag, body) in records {
            append_record(&mut out, &WireRecordRef { trace_id: 9, tag, body, clock: &clock });
        }
        out
    }

    #[test]
    fn malformed_records_are_rejected_and_counted() {
        let payload =
            batch(&[("Ok", "{\"a\":1}"), ("Bad\nTag", "{}"), ("BadBody", "{\"a\":"), ("Split", "{\n}"), ("", "{}")]);
        let (chunk, ack) = format_batch("c", &payload);
        assert_eq!(ack, Ack { accepted: 1, rejected: 4 });
        assert_eq!(chunk.trace.lines().count(), 1);
        assert_eq!(chunk.shiviz.lines().count(), 2);
        // A truncated batch: the cut record and the unframed ones count.
        let mut two = batch(&[("A", "{}"), ("B", "{}")]);
        two.truncate(two.len() - 2);
        let (_, ack) = format_batch("c", &two);
        assert_eq!(ack, Ack { accepted: 1, rejected: 1 });
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(same_secret(b"", b""));
    }
}
