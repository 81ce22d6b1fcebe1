//! Length-prefixed protobuf on a TCP connection: the framing of the peer
//! wire (server to server) and of the client wire (kvslib to a server).
//!
//! ```text
//! connection = hello frame*
//! hello      = magic:4 version:u8 len:u32be Hello-message
//! frame      = len:u32be message
//! ```
//!
//! Plain frames rather than a gRPC stream where every microsecond counts:
//! no HTTP/2 framing, and no task hand-offs between the socket and the
//! code that makes or takes a message. Every length is checked against a
//! limit before anything is allocated.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

/// One wire: the magic its connections start with, and its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wire {
    pub magic: &'static [u8; 4],
    pub version: u8,
    /// What the wire is, for errors ("peer", "client").
    pub name: &'static str,
}

/// The client wire: kvslib to a server's client port (the proto's
/// `ClientHello`, then Commands one way and Replies the other).
pub const CLIENT_WIRE: Wire = Wire { magic: b"KVRC", version: 1, name: "client" };

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a KVRaft {0} connection (bad magic)")]
    BadMagic(&'static str),
    #[error("{name} wire version {got}, this process speaks {speaks}")]
    BadVersion { name: &'static str, got: u8, speaks: u8 },
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("connection closed inside a frame")]
    Truncated,
}

impl Wire {
    /// The first bytes on a connection of this wire.
    pub fn hello(&self, msg: &impl Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + msg.encoded_len());
        out.extend_from_slice(self.magic);
        out.push(self.version);
        push(&mut out, msg);
        out
    }

    /// Reads the hello a connection starts with (its body at most `max`
    /// bytes: it comes before any secret is checked).
    pub async fn read_hello<M, R>(&self, r: &mut R, max: usize) -> Result<M, FrameError>
    where
        M: Message + Default,
        R: AsyncRead + Unpin,
    {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic).await.map_err(truncated)?;
        if &magic != self.magic {
            return Err(FrameError::BadMagic(self.name));
        }
        self.read_hello_rest(r, max).await
    }

    /// [`Wire::read_hello`] for a listener that has read the magic already
    /// (to tell this wire from another on the same port).
    pub async fn read_hello_rest<M, R>(&self, r: &mut R, max: usize) -> Result<M, FrameError>
    where
        M: Message + Default,
        R: AsyncRead + Unpin,
    {
        let mut version = [0u8; 1];
        r.read_exact(&mut version).await.map_err(truncated)?;
        if version[0] != self.version {
            return Err(FrameError::BadVersion { name: self.name, got: version[0], speaks: self.version });
        }
        let mut body = Vec::new();
        match read_body(r, &mut body, max).await? {
            true => Ok(M::decode(body.as_slice())?),
            false => Err(FrameError::Truncated),
        }
    }
}

/// Appends one frame of `msg` to `buf` (a `Vec` or `BytesMut`: it grows).
pub fn push(buf: &mut impl bytes::BufMut, msg: &impl Message) {
    push_sized(buf, msg, msg.encoded_len());
}

/// [`push`] for a caller that has `msg.encoded_len()` already.
pub fn push_sized(buf: &mut impl bytes::BufMut, msg: &impl Message, len: usize) {
    buf.put_u32(len as u32);
    msg.encode(buf).expect("a growable buffer");
}

/// Reads the next message (at most `max` bytes); `Ok(None)` when the
/// connection ends cleanly between frames. `scratch` is reused from call
/// to call.
pub async fn read<M, R>(r: &mut R, scratch: &mut Vec<u8>, max: usize) -> Result<Option<M>, FrameError>
where
    M: Message + Default,
    R: AsyncRead + Unpin,
{
    if !read_body(r, scratch, max).await? {
        return Ok(None);
    }
    Ok(Some(M::decode(scratch.as_slice())?))
}

/// Reads a length (at most `max`) and that many bytes into `body`; false
/// on EOF before the length.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, body: &mut Vec<u8>, max: usize) -> Result<bool, FrameError> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1]).await? {
        0 => return Ok(false),
        _ => r.read_exact(&mut len[1..]).await.map_err(truncated)?,
    };
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if body.capacity() > KEEP_SCRATCH {
        // One large frame does not pin its buffer for the connection's life.
        *body = Vec::new();
    }
    body.clear();
    // Memory grows as the bytes arrive, not as the length claims: a peer
    // that names a large frame and sends nothing costs nothing.
    r.take(len as u64).read_to_end(body).await?;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(true)
}

/// A read buffer above this is dropped before the next frame.
const KEEP_SCRATCH: usize = 4 << 20;

fn truncated(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { FrameError::Truncated } else { FrameError::Io(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate as pb;

    #[tokio::test]
    async fn a_client_wire_connection_round_trips() {
        let mut wire = CLIENT_WIRE.hello(&pb::ClientHello { secret: "s".into() });
        let cmd = pb::Command { client_id: "c".into(), session: 2, op_id: 3, ..Default::default() };
        push(&mut wire, &cmd);
        push(&mut wire, &cmd);
        let mut r = wire.as_slice();
        let hello: pb::ClientHello = CLIENT_WIRE.read_hello(&mut r, 64).await.unwrap();
        assert_eq!(hello.secret, "s");
        let mut scratch = Vec::new();
        for _ in 0..2 {
            assert_eq!(read::<pb::Command, _>(&mut r, &mut scratch, 64).await.unwrap(), Some(cmd.clone()));
        }
        assert_eq!(read::<pb::Command, _>(&mut r, &mut scratch, 64).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_claimed_length_is_not_allocated_before_its_bytes_arrive() {
        let mut wire = (16u32 << 20).to_be_bytes().to_vec();
        wire.extend([0u8; 10]);
        let mut scratch = Vec::new();
        let r = read::<pb::Command, _>(&mut wire.as_slice(), &mut scratch, 32 << 20).await;
        assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");
        assert!(scratch.capacity() < 1 << 20, "{} bytes allocated for 10 received", scratch.capacity());
    }

    #[tokio::test]
    async fn limits_hold_for_the_hello_and_the_frames() {
        let hello = CLIENT_WIRE.hello(&pb::ClientHello { secret: "x".repeat(100) });
        let r = CLIENT_WIRE.read_hello::<pb::ClientHello, _>(&mut hello.as_slice(), 64).await;
        assert!(matches!(r, Err(FrameError::TooLarge { len: 102, max: 64 })), "{r:?}");
        let peer = Wire { magic: b"KVRP", version: 1, name: "peer" };
        let r = peer.read_hello::<pb::ClientHello, _>(&mut hello.as_slice(), 1024).await;
        assert!(matches!(r, Err(FrameError::BadMagic("peer"))), "{r:?}");
        let mut scratch = Vec::new();
        let r = read::<pb::Command, _>(&mut &65u32.to_be_bytes()[..], &mut scratch, 64).await;
        assert!(matches!(r, Err(FrameError::TooLarge { len: 65, max: 64 })), "{r:?}");
    }
}
