//! The tracer ↔ tracing-server protocol over TCP.
//!
//! Every frame is `[len: u32 LE][kind: u8][payload]`, `len` counting kind and
//! payload and never above [`MAX_FRAME`]. The tracer opens with a
//! [`Hello`] (its identity and the shared secret); the server answers one
//! [`HelloReply`]. Then the tracer streams batch frames and the server
//! answers each with an [`Ack`], so the tracer counts a record as sent only
//! once the server has taken it, and counts in-flight records as dropped
//! when a connection dies.
//!
//! A batch payload is `[count: u32 LE]` followed by `count` postcard-encoded
//! [`WireRecord`]s back to back: the tracer appends each record to its
//! queue buffer as it is recorded and ships the buffer as it is, without a
//! second encoding pass. The body travels as JSON text (postcard cannot carry
//! arbitrary JSON values); the server validates it before writing it out.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::clock::VectorClock;

/// Bumped on any incompatible change; the server refuses other versions.
pub const WIRE_VERSION: u32 = 1;
/// Largest frame either side accepts (kind byte included).
pub const MAX_FRAME: usize = 16 << 20;
/// Largest hello the server accepts: it comes before the secret is
/// checked, so anyone can send one, and it holds an identity and a secret.
pub const MAX_HELLO: usize = 4 << 10;
/// The longest secret a tracer or the tracing server takes, so that a
/// hello (with an identity of at most 255 bytes) always fits in
/// [`MAX_HELLO`].
pub const MAX_SECRET_BYTES: usize = 1024;
const _: () = assert!(MAX_SECRET_BYTES + 255 + 64 < MAX_HELLO);

/// Frame kinds.
pub const KIND_HELLO: u8 = 1;
pub const KIND_HELLO_REPLY: u8 = 2;
pub const KIND_BATCH: u8 = 3;
pub const KIND_ACK: u8 = 4;

/// The tracer's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub identity: String,
    pub secret: String,
}

/// The server's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome,
    /// Refused, with a one-line reason (wrong secret, bad identity, version).
    Refused(String),
}

/// The server's answer to one batch: how many records it wrote and how many
/// it rejected as malformed (which the tracer counts as dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub accepted: u32,
    pub rejected: u32,
}

/// One record as the tracer sends it (the identity is the connection's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WireRecord {
    pub trace_id: u64,
    pub tag: String,
    /// The body as JSON text.
    pub body: String,
    pub clock: VectorClock,
}

/// Borrowed twin of [`WireRecord`] for encoding without copies; the field
/// order must match.
#[derive(Serialize)]
pub(crate) struct WireRecordRef<'a> {
    pub trace_id: u64,
    pub tag: &'a str,
    pub body: &'a str,
    pub clock: &'a VectorClock,
}

/// Why a peer's bytes could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is empty or above the {MAX_FRAME}-byte limit")]
    FrameSize(usize),
    #[error("unexpected frame kind {0}")]
    Kind(u8),
    #[error("malformed frame: {0}")]
    Decode(String),
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, payload: &[u8]) -> Result<(), WireError> {
    let len = payload.len() + 1;
    if len > MAX_FRAME {
        return Err(WireError::FrameSize(len));
    }
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[4] = kind;
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Reads one frame: `Ok(None)` on a clean end of stream between frames.
/// Not cancel-safe: call it from one task, not inside a `select!` branch.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(u8, Vec<u8>)>, WireError> {
    read_frame_at_most(r, MAX_FRAME).await
}

/// [`read_frame`], refusing frames above `max` bytes before allocating.
pub async fn read_frame_at_most<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<(u8, Vec<u8>)>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > max.min(MAX_FRAME) {
        return Err(WireError::FrameSize(len));
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await?;
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).await?;
    Ok(Some((kind[0], payload)))
}

/// Encodes a small message (hello, reply, ack).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain structs into a Vec cannot fail.
    postcard::to_allocvec(msg).unwrap_or_default()
}

/// Decodes a small message, naming what was expected on failure.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    postcard::from_bytes(payload).map_err(|e| WireError::Decode(e.to_string()))
}

/// Appends one record to a batch body (no count header).
pub(crate) fn append_record(out: &mut Vec<u8>, rec: &WireRecordRef<'_>) {
    // Serializing into a growable Vec cannot fail; on the impossible error
    // nothing is appended.
    let start = out.len();
    if postcard::to_io(rec, &mut *out).is_err() {
        out.truncate(start);
    }
}

/// Splits a batch payload into its records. Decoding stops at the first
/// malformed record (the rest of the frame cannot be framed any more); the
/// caller counts what is missing as rejected.
pub fn decode_batch(payload: &[u8]) -> Result<(u32, BatchRecords<'_>), WireError> {
    let Some((count, rest)) = payload.split_first_chunk::<4>() else {
        return Err(WireError::Decode("batch shorter than its count".into()));
    };
    Ok((u32::from_le_bytes(*count), BatchRecords { rest }))
}

/// Iterator over the records of a batch (see [`decode_batch`]).
pub struct BatchRecords<'a> {
    rest: &'a [u8],
}

impl Iterator for BatchRecords<'_> {
    type Item = Result<WireRecord, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<WireRecord>(self.rest) {
            Ok((rec, rest)) => {
                self.rest = rest;
                Some(Ok(rec))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(WireError::Decode(e.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_through_a_batch() {
        let clock: VectorClock = [("a", 2), ("b", 9)].into_iter().collect();
        let mut body = 2u32.to_le_bytes().to_vec();
        for (i, tag) in ["Put", "Get"].iter().enumerate() {
            append_record(
                &mut body,
                &WireRecordRef { trace_id: i as u64, tag, body: "{\"Key\":\"k\"}", clock: &clock },
            );
        }
        let (count, recs) = decode_batch(&body).unwrap();
        assert_eq!(count, 2);
        let recs: Vec<_> = recs.map(Result::unwrap).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].tag, "Get");
        assert_eq!(recs[1].trace_id, 1);
        assert_eq!(recs[1].clock, clock);
        // A cut batch yields an error, not a panic.
        let (_, recs) = decode_batch(&body[..body.len() - 3]).unwrap();
        assert!(recs.last().unwrap().is_err());
        assert!(decode_batch(&[1, 2]).is_err());
    }

    #[tokio::test]
    async fn frames_roundtrip_and_limits_hold() {
        let mut buf = Vec::new();
        let hello = Hello { version: WIRE_VERSION, identity: "coord".into(), secret: "s".into() };
        write_frame(&mut buf, KIND_HELLO, &encode(&hello)).await.unwrap();
        let mut r = &buf[..];
        let (kind, payload) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(kind, KIND_HELLO);
        assert_eq!(decode::<Hello>(&payload).unwrap(), hello);
        assert!(read_frame(&mut r).await.unwrap().is_none());

        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(read_frame(&mut &huge[..]).await, Err(WireError::FrameSize(_))));
        assert!(matches!(read_frame(&mut &[0u8, 0, 0, 0][..]).await, Err(WireError::FrameSize(0))));
        // The hello, which anyone can send, gets far less than a batch.
        let big = ((MAX_HELLO + 1) as u32).to_le_bytes();
        assert!(matches!(read_frame_at_most(&mut &big[..], MAX_HELLO).await, Err(WireError::FrameSize(_))));
        let mut r = &buf[..];
        assert!(read_frame_at_most(&mut r, MAX_HELLO).await.unwrap().is_some(), "a real hello fits");
        assert!(decode::<Hello>(&[0xff, 0xff]).is_err());
    }
}
