//! The peer wire: what one server writes to another on a TCP connection.
//!
//! ```text
//! connection = hello frame*
//! hello      = "KVRP" version:u8 len:u32be PeerHello
//! frame      = len:u32be PeerMessage
//! ```
//!
//! Plain length-prefixed protobuf rather than a gRPC stream
//! (`kvraft_proto::frame`, shared with the client wire): the event loop
//! writes a message to the socket itself, in the same turn that made it,
//! with no task hand-offs or HTTP/2 framing in between (see
//! docs/architecture.md for what that bought). Every length is checked
//! against [`MAX_FRAME`] before anything is allocated.

use bytes::BytesMut;
use kvraft_proto as pb;
use kvraft_proto::frame::{self as wire, Wire};
use tokio::io::AsyncRead;

pub use kvraft_proto::frame::FrameError;

pub const WIRE: Wire = Wire { magic: b"KVRP", version: 1, name: "peer" };
/// The largest frame accepted. An AppendEntries carries at most about
/// 1 MiB of entries and a snapshot chunk 1 MiB; a single entry may be a
/// little over that, so the limit leaves room.
pub const MAX_FRAME: usize = 16 << 20;
/// The largest hello accepted: an id and the cluster secret. It comes
/// before the secret is checked, so anyone can send one.
pub const MAX_HELLO: usize = 4 << 10;
/// The longest cluster secret a server takes (configs refuse longer ones),
/// so that its hello always fits in [`MAX_HELLO`].
pub const MAX_SECRET_BYTES: usize = kvraft_proto::secret::MAX_SECRET_BYTES;
const _: () = assert!(MAX_SECRET_BYTES + 64 < MAX_HELLO);

/// The first bytes on a connection: who is speaking, and the cluster secret.
pub fn hello(from: u64, secret: &str) -> Vec<u8> {
    WIRE.hello(&pb::PeerHello { from, secret: secret.to_owned() })
}

/// Appends one frame; `len` is `msg.encoded_len()`, computed by the caller.
pub fn push(buf: &mut BytesMut, msg: &pb::PeerMessage, len: usize) {
    buf.reserve(4 + len);
    wire::push_sized(buf, msg, len);
}

/// Reads the hello a connection starts with.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<pb::PeerHello, FrameError> {
    WIRE.read_hello(r, MAX_HELLO).await
}

/// Reads the next message; `Ok(None)` when the connection ends cleanly
/// between frames. `scratch` is reused from call to call.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<Option<pb::PeerMessage>, FrameError> {
    wire::read(r, scratch, MAX_FRAME).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn response(from: u64) -> pb::PeerMessage {
        pb::PeerMessage {
            msg: Some(pb::peer_message::Msg::Response(pb::AppendResponse {
                term: 3,
                from,
                read_ctx: 0,
                result: Some(pb::append_response::Result::MatchIndex(7)),
            })),
            trace: vec![1, 2, 3],
        }
    }

    fn framed(msgs: &[pb::PeerMessage]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for m in msgs {
            push(&mut buf, m, m.encoded_len());
        }
        buf.to_vec()
    }

    #[tokio::test]
    async fn hello_and_frames_round_trip() {
        let mut wire = hello(2, "s3cret");
        wire.extend(framed(&[response(2), response(3)]));
        let mut r = wire.as_slice();
        let h = read_hello(&mut r).await.unwrap();
        assert_eq!((h.from, h.secret.as_str()), (2, "s3cret"));
        let mut scratch = Vec::new();
        assert_eq!(read(&mut r, &mut scratch).await.unwrap(), Some(response(2)));
        assert_eq!(read(&mut r, &mut scratch).await.unwrap(), Some(response(3)));
        assert_eq!(read(&mut r, &mut scratch).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_wrong_start_is_refused() {
        let mut wire = hello(1, "");
        wire[0] = b'G';
        assert!(matches!(read_hello(&mut wire.as_slice()).await, Err(FrameError::BadMagic(_))));
        let mut wire = hello(1, "");
        wire[4] = 9;
        assert!(matches!(read_hello(&mut wire.as_slice()).await, Err(FrameError::BadVersion { got: 9, .. })));
        let wire = b"GET / HTTP/1.1\r\n".to_vec();
        assert!(read_hello(&mut wire.as_slice()).await.is_err());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_allocating() {
        let wire = (u32::MAX).to_be_bytes();
        let mut scratch = Vec::new();
        assert!(matches!(read(&mut &wire[..], &mut scratch).await, Err(FrameError::TooLarge { .. })));
        assert!(scratch.capacity() < MAX_FRAME);
        // A hello, which comes before the secret is checked, gets far less.
        let mut wire = hello(1, "");
        wire.truncate(5);
        wire.extend(((MAX_HELLO + 1) as u32).to_be_bytes());
        assert!(matches!(read_hello(&mut wire.as_slice()).await, Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn a_cut_frame_is_an_error_not_an_end() {
        let wire = framed(&[response(1)]);
        for cut in 1..wire.len() {
            let mut scratch = Vec::new();
            let r = read(&mut &wire[..cut], &mut scratch).await;
            assert!(matches!(r, Err(FrameError::Truncated)), "cut at {cut}: {r:?}");
        }
    }

    #[tokio::test]
    async fn garbage_bodies_do_not_decode() {
        let mut wire = 4u32.to_be_bytes().to_vec();
        wire.extend([0xff, 0xff, 0xff, 0xff]);
        let mut scratch = Vec::new();
        assert!(matches!(read(&mut wire.as_slice(), &mut scratch).await, Err(FrameError::Decode(_))));
    }
}
