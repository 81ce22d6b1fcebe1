//! Tokens: the bytes that carry a trace id and the sender's vector clock
//! inside a message between processes.
//!
//! The layout is the prototype's (GoVector's), three MessagePack values back
//! to back: the sender's identity (str), the trace id (uint64, always the
//! 9-byte `0xcf` form) and the clock (a map of str to uint). Keeping it means
//! the tokens in the reference traces decode here, and a trace written by
//! this crate reads like one written by the prototype. Only that subset of
//! MessagePack is implemented; decoding is bounded and never panics.

use crate::clock::VectorClock;

/// A decoded token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Identity of the tracer that generated the token.
    pub sender: String,
    /// The trace the token continues.
    pub trace_id: u64,
    /// The sender's clock right after it recorded `GenerateTokenTrace`.
    pub clock: VectorClock,
}

/// More clock entries than any real cluster has; bounds decoding work.
pub const MAX_ENTRIES: usize = 4096;

/// Why bytes are not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("empty token (the sender does not trace)")]
    Empty,
    #[error("token truncated at byte {0}")]
    Truncated(usize),
    #[error("unexpected byte 0x{byte:02x} at offset {at} in token (expected {expected})")]
    Unexpected { at: usize, byte: u8, expected: &'static str },
    #[error("token string at offset {0} is not UTF-8")]
    Utf8(usize),
    #[error("token clock has {0} entries (at most {MAX_ENTRIES})")]
    TooManyEntries(usize),
    #[error("{0} unexpected bytes after the token")]
    Trailing(usize),
    #[error("token names a process {0:?}: not an identity (1 to 255 bytes, no whitespace)")]
    BadIdentity(String),
    #[error(
        "token names processes the clock has no room for (its ids may take {} bytes)",
        crate::tracer::MAX_CLOCK_ID_BYTES
    )]
    ClockFull,
}

/// `id` as a token may carry it: a tracer identity.
fn identity(id: &str) -> Result<&str, TokenError> {
    if crate::tracer::valid_identity(id) {
        Ok(id)
    } else {
        let shown: String = id.chars().take(40).collect();
        Err(TokenError::BadIdentity(shown))
    }
}

impl Token {
    /// Encodes the token (the prototype's layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.sender.len() + self.clock.len() * 12);
        encode_parts(&mut out, &self.sender, self.trace_id, &self.clock);
        out
    }

    /// Decodes a token; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Token, TokenError> {
        if bytes.is_empty() {
            return Err(TokenError::Empty);
        }
        let mut r = Reader { bytes, pos: 0 };
        let sender = identity(r.str()?)?.to_owned();
        let trace_id = r.uint()?;
        let n = r.map_len()?;
        if n > MAX_ENTRIES {
            return Err(TokenError::TooManyEntries(n));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let id = identity(r.str()?)?;
            let v = r.uint()?;
            entries.push((id, v));
        }
        if r.pos != bytes.len() {
            return Err(TokenError::Trailing(bytes.len() - r.pos));
        }
        Ok(Token { sender, trace_id, clock: entries.into_iter().collect() })
    }
}

/// Encodes a token from borrowed parts (the tracer's hot path: no clone).
pub(crate) fn encode_parts(out: &mut Vec<u8>, sender: &str, trace_id: u64, clock: &VectorClock) {
    put_str(out, sender);
    out.push(0xcf);
    out.extend_from_slice(&trace_id.to_be_bytes());
    let n = clock.len();
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xde);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for (id, v) in clock.iter() {
        put_str(out, id);
        put_uint(out, v);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xd9, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xda);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(0xcd);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(0xce);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A bounds-checked cursor over the token bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(TokenError::Truncated(self.bytes.len()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, TokenError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn unexpected(&self, byte: u8, expected: &'static str) -> TokenError {
        TokenError::Unexpected { at: self.pos - 1, byte, expected }
    }

    fn str(&mut self) -> Result<&'a str, TokenError> {
        let b = self.byte()?;
        let n = match b {
            0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return Err(self.unexpected(b, "a string")),
        };
        let at = self.pos;
        std::str::from_utf8(self.take(n)?).map_err(|_| TokenError::Utf8(at))
    }

    fn uint(&mut self) -> Result<u64, TokenError> {
        let b = self.byte()?;
        match b {
            0x00..=0x7f => Ok(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            // Signed forms, as some encoders write small counters; negative
            // values are not counters.
            0xd0..=0xd3 => {
                let n = 1usize << (b - 0xd0);
                let raw = self.be(n)?;
                let sign_bit = 1u64 << (8 * n - 1);
                if raw & sign_bit != 0 { Err(self.unexpected(b, "a non-negative integer")) } else { Ok(raw) }
            }
            _ => Err(self.unexpected(b, "an unsigned integer")),
        }
    }

    fn map_len(&mut self) -> Result<usize, TokenError> {
        let b = self.byte()?;
        match b {
            0x80..=0x8f => Ok(usize::from(b & 0x0f)),
            0xde => Ok(self.be(2)? as usize),
            0xdf => Ok(self.be(4)? as usize),
            _ => Err(self.unexpected(b, "a map")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base64;

    #[test]
    fn decodes_a_prototype_token() {
        // From the reference trace: coord's reply to server1's join.
        let bytes = base64::decode("pWNvb3Jkz3TgDYrP49bZgqdzZXJ2ZXIxBKVjb29yZAU=").unwrap();
        let t = Token::decode(&bytes).unwrap();
        assert_eq!(t.sender, "coord");
        assert_eq!(t.trace_id, 8421746193027290841);
        let expected: VectorClock = [("coord", 5), ("server1", 4)].into_iter().collect();
        assert_eq!(t.clock, expected);
        // Go wrote the map in random order, we write it sorted.
        assert_eq!(Token::decode(&t.encode()).unwrap(), t);
        // With one entry the order cannot differ: the same bytes.
        let single = base64::decode("p3NlcnZlcjHPdOANis/j1tmBp3NlcnZlcjEE").unwrap();
        assert_eq!(Token::decode(&single).unwrap().encode(), single);
    }

    #[test]
    fn roundtrips_wide_values() {
        let clock: VectorClock = (0..40).map(|i| (format!("host-with-a-long-identity-{i:04}"), 1u64 << i)).collect();
        let t = Token { sender: "x".repeat(255), trace_id: u64::MAX, clock };
        assert_eq!(Token::decode(&t.encode()).unwrap(), t);
    }

    /// Every name a token carries must be an identity a tracer could have:
    /// a forged one could otherwise put megabytes into a process's clock.
    #[test]
    fn rejects_names_no_tracer_could_have() {
        let one = |sender: &str, id: &str| Token {
            sender: sender.into(),
            trace_id: 1,
            clock: [(id.to_string(), 1u64)].into_iter().collect(),
        };
        assert!(Token::decode(&one("a", "b").encode()).is_ok());
        for (sender, id) in [("a", "x".repeat(256)), ("a", "two words".into()), ("", "b".into()), ("a\n", "b".into())] {
            let got = Token::decode(&one(sender, &id).encode());
            assert!(matches!(got, Err(TokenError::BadIdentity(_))), "{sender:?} {id:?}: {got:?}");
        }
    }

    #[test]
    fn rejects_malformed_tokens() {
        let good = Token { sender: "a".into(), trace_id: 7, clock: [("a", 300)].into_iter().collect() }.encode();
        assert_eq!(Token::decode(&[]), Err(TokenError::Empty));
        for cut in 1..good.len() {
            assert!(Token::decode(&good[..cut]).is_err(), "prefix {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Token::decode(&long), Err(TokenError::Trailing(1)));
        assert!(matches!(Token::decode(&[0xc0]), Err(TokenError::Unexpected { at: 0, .. })));
        // A huge declared map is refused before any allocation.
        let mut huge = vec![0xa1, b'a', 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xdf];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Token::decode(&huge), Err(TokenError::TooManyEntries(u32::MAX as usize)));
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = Token::decode(&bytes);
        }
    }
}
