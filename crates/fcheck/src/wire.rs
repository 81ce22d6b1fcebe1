//! The datagram format: a 2-byte prefix (magic byte, version byte), then one
//! postcard-encoded [`Message`] and nothing else.
//!
//! The prefix lets both ends drop stray traffic cheaply and tells a future
//! version apart instead of misparsing it. Decoding is strict (wrong prefix,
//! undecodable body and trailing bytes are all errors) and never panics:
//! every byte it reads comes from the network.

use serde::{Deserialize, Serialize};

/// First byte of every datagram ("FC", for fcheck).
pub const MAGIC: u8 = 0xFC;
/// Second byte of every datagram: the protocol version.
pub const VERSION: u8 = 1;
/// Longest encoded message: the prefix, the enum tag and two `u64` varints of
/// at most 10 bytes each. Anything longer is malformed.
pub const MAX_MESSAGE_LEN: usize = 2 + 1 + 10 + 10;

/// Probe from the monitor. `epoch` is random per monitor start, so acks meant
/// for an earlier monitor (or forged off-path) never match; `seq` is unique
/// within the epoch, so each ack names exactly one heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub epoch: u64,
    pub seq: u64,
}

/// A responder's answer: the heartbeat's `epoch` and `seq`, echoed verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub epoch: u64,
    pub seq: u64,
}

/// Everything that travels on the wire. One enum for both directions so that
/// a datagram sent to the wrong end decodes and is recognised as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Heartbeat(Heartbeat),
    Ack(Ack),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is shorter than the 2-byte prefix")]
    TooShort(usize),
    #[error("bad magic byte {0:#04x}")]
    BadMagic(u8),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("undecodable body: {0}")]
    Body(postcard::Error),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes `msg` into `buf` and returns the datagram. Cannot fail for lack of
/// room ([`MAX_MESSAGE_LEN`] bounds every message); the `Result` only avoids a
/// panic path should postcard ever disagree.
pub fn encode<'a>(msg: &Message, buf: &'a mut [u8; MAX_MESSAGE_LEN]) -> Result<&'a [u8], postcard::Error> {
    buf[0] = MAGIC;
    buf[1] = VERSION;
    let body_len = postcard::to_slice(msg, &mut buf[2..])?.len();
    Ok(&buf[..2 + body_len])
}

/// Decodes one datagram, rejecting anything that is not exactly one message.
pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
    let [magic, version, body @ ..] = datagram else {
        return Err(DecodeError::TooShort(datagram.len()));
    };
    if *magic != MAGIC {
        return Err(DecodeError::BadMagic(*magic));
    }
    if *version != VERSION {
        return Err(DecodeError::UnsupportedVersion(*version));
    }
    let (msg, rest) = postcard::take_from_bytes(body).map_err(DecodeError::Body)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(msg: Message) -> Vec<u8> {
        let mut buf = [0; MAX_MESSAGE_LEN];
        encode(&msg, &mut buf).unwrap().to_vec()
    }

    #[test]
    fn round_trips_extreme_values() {
        for (epoch, seq) in [(0, 0), (u64::MAX, u64::MAX), (1 << 63, 7)] {
            for msg in [Message::Heartbeat(Heartbeat { epoch, seq }), Message::Ack(Ack { epoch, seq })] {
                let bytes = encoded(msg);
                assert!(bytes.len() <= MAX_MESSAGE_LEN);
                assert_eq!(&bytes[..2], &[MAGIC, VERSION]);
                assert_eq!(decode(&bytes), Ok(msg));
            }
        }
    }

    #[test]
    fn rejects_bad_prefixes_and_trailing_bytes() {
        let good = encoded(Message::Ack(Ack { epoch: 9, seq: 3 }));
        assert_eq!(decode(&[]), Err(DecodeError::TooShort(0)));
        assert_eq!(decode(&[MAGIC]), Err(DecodeError::TooShort(1)));
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(decode(&bad), Err(DecodeError::BadMagic(0)));
        bad = good.clone();
        bad[1] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::UnsupportedVersion(2)));
        bad = good.clone();
        bad.push(0);
        assert_eq!(decode(&bad), Err(DecodeError::TrailingBytes(1)));
        assert!(matches!(decode(&good[..good.len() - 1]), Err(DecodeError::Body(_))));
        assert!(matches!(decode(&[MAGIC, VERSION, 9]), Err(DecodeError::Body(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(0xFC);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len >= 2 && rng.random_bool(0.5) {
                bytes[0] = MAGIC;
                bytes[1] = VERSION;
            }
            if let Ok(msg) = decode(&bytes) {
                // Whatever decodes must fit the advertised bound.
                assert!(bytes.len() <= MAX_MESSAGE_LEN, "{msg:?}");
            }
        }
    }
}
