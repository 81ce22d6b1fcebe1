//! Conversions between the wire types (`kvraft-proto`) and the core's.
//! Anything read from the network is checked here: a malformed message is an
//! error, never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kvraft_core::kv::{Command, Op, Reply};
use kvraft_core::{AppendResult, Entry, Message, Payload, Snapshot, SnapshotMeta};
use kvraft_proto as pb;

/// Largest key and value accepted from a client.
pub const MAX_KEY_BYTES: usize = 4 << 10;
pub use kvraft_core::kv::MAX_VALUE_BYTES;
/// Snapshots travel in chunks of this size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A wire message that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("bad message: {0}")]
pub struct BadMessage(pub String);

fn bad(what: impl Into<String>) -> BadMessage {
    BadMessage(what.into())
}

/// `v`, if it is a term or index a message may carry
/// ([`pb::MAX_TERM_OR_INDEX`]).
pub fn bounded(v: u64, what: &str) -> Result<u64, BadMessage> {
    if v > pb::MAX_TERM_OR_INDEX {
        return Err(bad(format!("{what} {v} is out of range")));
    }
    Ok(v)
}

pub fn command_from_pb(c: pb::Command) -> Result<Command, BadMessage> {
    use pb::command::Op as P;
    let check_key = |k: &str| {
        if k.len() > MAX_KEY_BYTES {
            Err(bad(format!("key of {} bytes is over the limit of {MAX_KEY_BYTES}", k.len())))
        } else {
            Ok(())
        }
    };
    let check_value = |v: &str| {
        if v.len() > MAX_VALUE_BYTES {
            Err(bad(format!("value of {} bytes is over the limit of {MAX_VALUE_BYTES}", v.len())))
        } else {
            Ok(())
        }
    };
    let op = match c.op.ok_or_else(|| bad("command without an operation"))? {
        P::Get(g) => {
            check_key(&g.key)?;
            Op::Get { key: g.key }
        }
        P::Put(p) => {
            check_key(&p.key)?;
            check_value(&p.value)?;
            Op::Put { key: p.key, value: p.value }
        }
        P::Delete(d) => {
            check_key(&d.key)?;
            Op::Delete { key: d.key }
        }
        P::Append(a) => {
            check_key(&a.key)?;
            check_value(&a.value)?;
            Op::Append { key: a.key, value: a.value }
        }
        P::Cas(c) => {
            check_key(&c.key)?;
            check_value(&c.new_value)?;
            if let Some(e) = &c.expected {
                check_value(e)?;
            }
            Op::Cas { key: c.key, expected: c.expected, new: c.new_value }
        }
        P::Register(_) => Op::Register,
    };
    if c.client_id.is_empty() || c.client_id.len() > pb::MAX_CLIENT_ID_BYTES {
        return Err(bad(format!("client_id must be 1 to {} bytes", pb::MAX_CLIENT_ID_BYTES)));
    }
    if c.op_id == 0 {
        return Err(bad("op_id must be at least 1"));
    }
    Ok(Command {
        client_id: c.client_id,
        session: c.session,
        op_id: c.op_id,
        first_unacked: c.first_unacked.min(c.op_id),
        op,
    })
}

pub fn command_to_pb(c: &Command) -> pb::Command {
    use pb::command::Op as P;
    let op = match &c.op {
        Op::Get { key } => P::Get(pb::GetOp { key: key.clone() }),
        Op::Put { key, value } => P::Put(pb::PutOp { key: key.clone(), value: value.clone() }),
        Op::Delete { key } => P::Delete(pb::DeleteOp { key: key.clone() }),
        Op::Append { key, value } => P::Append(pb::AppendOp { key: key.clone(), value: value.clone() }),
        Op::Cas { key, expected, new } => {
            P::Cas(pb::CasOp { key: key.clone(), expected: expected.clone(), new_value: new.clone() })
        }
        Op::Register => P::Register(pb::RegisterOp {}),
    };
    pb::Command {
        client_id: c.client_id.clone(),
        session: c.session,
        op_id: c.op_id,
        first_unacked: c.first_unacked,
        op: Some(op),
        trace: Vec::new(),
    }
}

pub fn reply_result(r: &Reply) -> pb::reply::Result {
    match r {
        Reply::Value(v) => pb::reply::Result::Value(pb::Value { value: v.clone() }),
        Reply::Done => pb::reply::Result::Done(pb::Done {}),
        Reply::Cas { swapped } => pb::reply::Result::Cas(pb::CasResult { swapped: *swapped }),
        Reply::Registered { session } => pb::reply::Result::Registered(pb::Registered { session: *session }),
        Reply::TooLarge { len } => pb::reply::Result::Error(pb::Error {
            code: pb::ErrorCode::BadRequest as i32,
            message: format!("the append would make the value {len} bytes, over the limit of {MAX_VALUE_BYTES}"),
            leader_id: 0,
            leader_addr: String::new(),
        }),
    }
}

fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        term: e.term,
        index: e.index,
        command: match &e.payload {
            Payload::Noop => None,
            Payload::Command(c) => Some(command_to_pb(c)),
        },
    }
}

/// A log entry from a leader. Its commands passed the client checks at
/// the leader, except the marker that starts the bound on sessions
/// (`kv/expiry.rs`), which no client may send (it has no client id) and
/// which leaders propose themselves.
fn entry_from_pb(e: pb::Entry) -> Result<Entry, BadMessage> {
    let payload = match e.command {
        None => Payload::Noop,
        Some(c) if c == command_to_pb(&kvraft_core::kv::session_bound_marker()) => {
            Payload::Command(kvraft_core::kv::session_bound_marker())
        }
        Some(c) => Payload::Command(command_from_pb(c)?),
    };
    Ok(Entry { term: bounded(e.term, "entry term")?, index: bounded(e.index, "entry index")?, payload })
}

/// A core message as one or more wire messages (a snapshot is chunked;
/// one whose bytes are only stored gives none: the caller reads it back).
pub fn message_to_pb(m: Message) -> Vec<pb::PeerMessage> {
    use pb::peer_message::Msg;
    let wrap = |msg| pb::PeerMessage { msg: Some(msg), trace: Vec::new() };
    match m {
        Message::AppendEntries { term, leader, prev_log_index, prev_log_term, entries, leader_commit, read_ctx } => {
            vec![wrap(Msg::Append(pb::AppendEntries {
                term,
                leader,
                prev_log_index,
                prev_log_term,
                entries: entries.iter().map(entry_to_pb).collect(),
                leader_commit,
                read_ctx,
            }))]
        }
        Message::AppendEntriesResponse { term, from, result, read_ctx } => {
            use pb::append_response::Result as R;
            let result = match result {
                AppendResult::Success { match_index } => R::MatchIndex(match_index),
                AppendResult::StaleTerm => R::StaleTerm(true),
                AppendResult::Conflict { rejected_prev, hint_term, hint_index } => {
                    R::Conflict(pb::Conflict { rejected_prev, hint_term, hint_index })
                }
            };
            vec![wrap(Msg::Response(pb::AppendResponse { term, from, read_ctx, result: Some(result) }))]
        }
        Message::InstallSnapshot { term, leader, snapshot, read_ctx } => {
            // A stored snapshot is read back first (`peer::outbound::snapshot_stream`).
            let Some(data) = snapshot.data.bytes() else {
                return Vec::new();
            };
            let head = ChunkHead { term, leader, read_ctx, meta: snapshot.meta };
            let crc = crc32c::crc32c(data);
            chunk_ranges(data.len())
                .map(|(from, to, last)| head.chunk(from, data[from..to].to_vec(), last.then_some(crc)))
                .collect()
        }
        // Coord-bound messages never travel on the Peer service.
        Message::LogState(_) | Message::BecomeLeaderResponse { .. } => Vec::new(),
    }
}

/// Where a snapshot's bytes are cut into chunks: `(from, to, last)`, at
/// least one (an empty snapshot is one empty chunk).
pub fn chunk_ranges(len: usize) -> impl Iterator<Item = (usize, usize, bool)> {
    let n = len.div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
    (0..n).map(move |i| {
        let from = i * SNAPSHOT_CHUNK_BYTES;
        let to = (from + SNAPSHOT_CHUNK_BYTES).min(len);
        (from, to, i + 1 == n)
    })
}

/// What every chunk of one InstallSnapshot carries.
#[derive(Clone, Copy)]
pub struct ChunkHead {
    pub term: u64,
    pub leader: u64,
    pub read_ctx: u64,
    pub meta: SnapshotMeta,
}

impl ChunkHead {
    /// The wire message of the chunk holding `data` from `offset`; the last
    /// one carries the CRC-32C of the whole snapshot's data (`last_crc`).
    pub fn chunk(&self, offset: usize, data: Vec<u8>, last_crc: Option<u32>) -> pb::PeerMessage {
        let chunk = pb::SnapshotChunk {
            term: self.term,
            leader: self.leader,
            read_ctx: self.read_ctx,
            index: self.meta.index,
            snapshot_term: self.meta.term,
            offset: offset as u64,
            data,
            last: last_crc.is_some(),
            crc32c: last_crc,
        };
        pb::PeerMessage { msg: Some(pb::peer_message::Msg::Snapshot(chunk)), trace: Vec::new() }
    }
}

/// Reassembles snapshot chunks arriving on one stream, and checks the
/// whole against the CRC the last chunk carries.
pub struct SnapshotAssembler {
    buf: Vec<u8>,
    key: Option<(u64, u64, u64)>,
    /// CRC-32C of `buf`, kept up as chunks arrive (a chunk is checksummed
    /// while it is still in the cache).
    crc: u32,
    /// Bytes held by every assembler sharing it (one per peer connection of
    /// a server), of which `buf.len()` are this one's; at most `limit`.
    /// Without a shared bound, each connection to an open peer port could
    /// hold `limit` bytes.
    receiving: Arc<AtomicUsize>,
    limit: usize,
}

/// Bytes of snapshots being received at once, by all of a server's peer
/// connections together; more is refused.
pub const MAX_RECEIVING_BYTES: usize = 4 << 30;

impl Default for SnapshotAssembler {
    /// An assembler with a budget of its own.
    fn default() -> Self {
        SnapshotAssembler::new(Arc::default(), MAX_RECEIVING_BYTES)
    }
}

impl Drop for SnapshotAssembler {
    fn drop(&mut self) {
        self.reset();
    }
}

impl SnapshotAssembler {
    /// Whether a snapshot has started and not yet ended.
    pub fn in_progress(&self) -> bool {
        self.key.is_some()
    }

    /// An assembler sharing `receiving` (at most `limit` bytes) with others.
    pub fn new(receiving: Arc<AtomicUsize>, limit: usize) -> Self {
        SnapshotAssembler { buf: Vec::new(), key: None, crc: 0, receiving, limit }
    }

    /// Converts one wire message; `Ok(None)` while a snapshot is incomplete.
    pub fn accept(&mut self, m: pb::PeerMessage) -> Result<Option<Message>, BadMessage> {
        use pb::peer_message::Msg;
        match m.msg.ok_or_else(|| bad("empty peer message"))? {
            Msg::Append(a) => {
                bounded(a.term, "term")?;
                bounded(a.prev_log_index, "prev_log_index")?;
                bounded(a.prev_log_term, "prev_log_term")?;
                bounded(a.leader_commit, "leader_commit")?;
                let entries = a.entries.into_iter().map(entry_from_pb).collect::<Result<Vec<_>, _>>()?;
                for (e, i) in entries.iter().zip(a.prev_log_index + 1..) {
                    if e.index != i {
                        return Err(bad("AppendEntries with non-consecutive indexes"));
                    }
                }
                Ok(Some(Message::AppendEntries {
                    term: a.term,
                    leader: a.leader,
                    prev_log_index: a.prev_log_index,
                    prev_log_term: a.prev_log_term,
                    entries,
                    leader_commit: a.leader_commit,
                    read_ctx: a.read_ctx,
                }))
            }
            Msg::Response(r) => {
                use pb::append_response::Result as R;
                bounded(r.term, "term")?;
                let result = match r.result.ok_or_else(|| bad("response without a result"))? {
                    R::MatchIndex(match_index) => {
                        AppendResult::Success { match_index: bounded(match_index, "match_index")? }
                    }
                    R::StaleTerm(_) => AppendResult::StaleTerm,
                    R::Conflict(c) => AppendResult::Conflict {
                        rejected_prev: bounded(c.rejected_prev, "rejected_prev")?,
                        hint_term: c.hint_term.map(|t| bounded(t, "hint_term")).transpose()?,
                        hint_index: bounded(c.hint_index, "hint_index")?,
                    },
                };
                Ok(Some(Message::AppendEntriesResponse { term: r.term, from: r.from, result, read_ctx: r.read_ctx }))
            }
            Msg::Snapshot(c) => {
                bounded(c.term, "term")?;
                bounded(c.index, "snapshot index")?;
                bounded(c.snapshot_term, "snapshot term")?;
                let key = (c.term, c.index, c.snapshot_term);
                if c.offset == 0 {
                    self.reset();
                    self.key = Some(key);
                }
                if self.key != Some(key) || c.offset != self.buf.len() as u64 {
                    self.reset();
                    return Err(bad("snapshot chunk out of order"));
                }
                let n = c.data.len();
                if self.receiving.fetch_add(n, Ordering::Relaxed) + n > self.limit {
                    self.receiving.fetch_sub(n, Ordering::Relaxed);
                    self.reset();
                    return Err(bad(format!("snapshots being received would take more than {} bytes", self.limit)));
                }
                self.buf.extend_from_slice(&c.data);
                self.crc = crc32c::crc32c_append(self.crc, &c.data);
                if !c.last {
                    return Ok(None);
                }
                let crc = self.crc;
                let data = std::mem::take(&mut self.buf);
                // Handed on whole: no longer this assembler's to count.
                self.receiving.fetch_sub(data.len(), Ordering::Relaxed);
                self.reset();
                match c.crc32c {
                    None => return Err(bad("snapshot without its checksum")),
                    Some(sent) if sent != crc => return Err(bad("snapshot checksum mismatch")),
                    Some(_) => {}
                }
                Ok(Some(Message::InstallSnapshot {
                    term: c.term,
                    leader: c.leader,
                    read_ctx: c.read_ctx,
                    snapshot: Snapshot::new(SnapshotMeta { index: c.index, term: c.snapshot_term }, data),
                }))
            }
        }
    }

    /// Forgets any snapshot under way, and frees its bytes.
    fn reset(&mut self) {
        self.receiving.fetch_sub(self.buf.len(), Ordering::Relaxed);
        self.key = None;
        self.buf = Vec::new();
        self.crc = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_over_the_value_limit_is_a_bad_request() {
        let r = reply_result(&Reply::TooLarge { len: MAX_VALUE_BYTES + 5 });
        let pb::reply::Result::Error(e) = r else { panic!("{r:?}") };
        assert_eq!(e.code, pb::ErrorCode::BadRequest as i32);
        assert!(e.message.contains(&format!("{} bytes", MAX_VALUE_BYTES + 5)), "{}", e.message);
    }

    #[test]
    fn snapshot_chunks_cover_the_bytes_once_and_the_last_says_so() {
        const C: usize = SNAPSHOT_CHUNK_BYTES;
        assert_eq!(chunk_ranges(0).collect::<Vec<_>>(), [(0, 0, true)]);
        assert_eq!(chunk_ranges(5).collect::<Vec<_>>(), [(0, 5, true)]);
        assert_eq!(chunk_ranges(2 * C).collect::<Vec<_>>(), [(0, C, false), (C, 2 * C, true)]);
        assert_eq!(
            chunk_ranges(2 * C + 5).collect::<Vec<_>>(),
            [(0, C, false), (C, 2 * C, false), (2 * C, 2 * C + 5, true)]
        );
    }

    #[test]
    fn messages_round_trip_and_snapshots_are_chunked() {
        let cmd = Command {
            client_id: "c".into(),
            session: 1,
            op_id: 2,
            first_unacked: 2,
            op: Op::Cas { key: "k".into(), expected: None, new: "v".into() },
        };
        let register = Command { client_id: "c".into(), session: 0, op_id: 99, first_unacked: 0, op: Op::Register };
        let msgs = vec![
            Message::AppendEntries {
                term: 3,
                leader: 1,
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![
                    Entry { term: 3, index: 5, payload: Payload::Noop },
                    Entry { term: 3, index: 6, payload: Payload::Command(cmd) },
                    Entry { term: 3, index: 7, payload: Payload::Command(register) },
                ],
                leader_commit: 4,
                read_ctx: 9,
            },
            Message::AppendEntriesResponse {
                term: 3,
                from: 2,
                result: AppendResult::Conflict { rejected_prev: 4, hint_term: None, hint_index: 2 },
                read_ctx: 9,
            },
            Message::InstallSnapshot {
                term: 3,
                leader: 1,
                read_ctx: 0,
                snapshot: Snapshot::new(SnapshotMeta { index: 10, term: 2 }, vec![7u8; SNAPSHOT_CHUNK_BYTES * 2 + 5]),
            },
        ];
        let mut asm = SnapshotAssembler::default();
        for m in msgs {
            let wire = message_to_pb(m.clone());
            let n = wire.len();
            let mut out = None;
            for w in wire {
                out = asm.accept(w).unwrap();
            }
            assert_eq!(out, Some(m), "after {n} wire messages");
        }
    }

    #[test]
    fn a_snapshot_whose_bytes_do_not_match_its_checksum_is_refused() {
        let snapshot = Snapshot::new(SnapshotMeta { index: 10, term: 2 }, vec![7u8; SNAPSHOT_CHUNK_BYTES * 2 + 5]);
        let m = Message::InstallSnapshot { term: 3, leader: 1, read_ctx: 0, snapshot };
        let chunks = |edit: &dyn Fn(&mut pb::SnapshotChunk, usize)| -> Vec<pb::PeerMessage> {
            let mut wire = message_to_pb(m.clone());
            for (i, w) in wire.iter_mut().enumerate() {
                let Some(pb::peer_message::Msg::Snapshot(c)) = w.msg.as_mut() else { unreachable!() };
                edit(c, i);
            }
            wire
        };
        let assemble = |asm: &mut SnapshotAssembler, wire: Vec<pb::PeerMessage>| {
            let mut out = Ok(None);
            for w in wire {
                out = asm.accept(w);
            }
            out
        };
        let mut asm = SnapshotAssembler::default();
        // One byte flipped in the middle chunk (TCP would not, a bad disk read could).
        let flipped = chunks(&|c, i| {
            if i == 1 {
                c.data[100] ^= 1;
            }
        });
        let Err(err) = assemble(&mut asm, flipped) else { panic!("the flipped snapshot was taken") };
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        // A last chunk without a checksum.
        let unchecked = chunks(&|c, _| c.crc32c = None);
        let Err(err) = assemble(&mut asm, unchecked) else { panic!("the unchecked snapshot was taken") };
        assert!(err.to_string().contains("without its checksum"), "{err}");
        // The same assembler then takes the untouched snapshot.
        assert_eq!(assemble(&mut asm, chunks(&|_, _| {})).unwrap(), Some(m.clone()));
        // A snapshot started again from offset 0 halfway through another is
        // checked on its own bytes alone.
        let other = chunks(&|c, _| c.data.iter_mut().for_each(|b| *b = 9));
        assert_eq!(asm.accept(other[0].clone()).unwrap(), None);
        assert_eq!(assemble(&mut asm, chunks(&|_, _| {})).unwrap(), Some(m.clone()));
    }

    #[test]
    fn snapshots_being_received_share_one_bound() {
        const C: usize = SNAPSHOT_CHUNK_BYTES;
        let snapshot = Snapshot::new(SnapshotMeta { index: 10, term: 2 }, vec![7u8; 2 * C + 5]);
        let m = Message::InstallSnapshot { term: 3, leader: 1, read_ctx: 0, snapshot };
        let wire = message_to_pb(m.clone());
        assert_eq!(wire.len(), 3);
        let receiving = Arc::new(AtomicUsize::new(0));
        let limit = 3 * C;
        let mut a = SnapshotAssembler::new(receiving.clone(), limit);
        let mut b = SnapshotAssembler::new(receiving.clone(), limit);
        // A holds two chunks; B may take one more, not two.
        assert!(!a.in_progress());
        assert_eq!(a.accept(wire[0].clone()).unwrap(), None);
        assert!(a.in_progress());
        assert_eq!(a.accept(wire[1].clone()).unwrap(), None);
        assert_eq!(receiving.load(Ordering::Relaxed), 2 * C);
        assert_eq!(b.accept(wire[0].clone()).unwrap(), None);
        let err = b.accept(wire[1].clone()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("would take more than"), "{err}");
        assert_eq!(receiving.load(Ordering::Relaxed), 2 * C, "B's refused snapshot still counted");
        // A completes: its bytes are handed on and no longer counted.
        assert_eq!(a.accept(wire[2].clone()).unwrap(), Some(m.clone()));
        assert!(!a.in_progress());
        assert_eq!(receiving.load(Ordering::Relaxed), 0);
        // B can now take a whole one; a connection dropped midway gives its
        // bytes back.
        let mut out = None;
        for w in &wire {
            out = b.accept(w.clone()).unwrap();
        }
        assert_eq!(out, Some(m));
        assert_eq!(b.accept(wire[0].clone()).unwrap(), None);
        assert_eq!(receiving.load(Ordering::Relaxed), C);
        drop(b);
        assert_eq!(receiving.load(Ordering::Relaxed), 0, "a dropped assembler's bytes are still counted");
    }

    /// The marker that starts the bound on sessions travels from leader
    /// to follower, though no client may send it.
    #[test]
    fn the_session_bound_marker_passes_between_servers_but_not_from_clients() {
        let marker = kvraft_core::kv::session_bound_marker();
        assert!(command_from_pb(command_to_pb(&marker)).is_err());
        let e = Entry { term: 2, index: 9, payload: Payload::Command(marker) };
        let wire = entry_to_pb(&e);
        assert_eq!(entry_from_pb(wire).unwrap(), e);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(command_from_pb(pb::Command { client_id: "c".into(), op_id: 1, ..Default::default() }).is_err());
        let big = pb::Command {
            client_id: "c".into(),
            op_id: 1,
            op: Some(pb::command::Op::Put(pb::PutOp { key: "k".into(), value: "v".repeat(MAX_VALUE_BYTES + 1) })),
            ..Default::default()
        };
        assert!(command_from_pb(big).unwrap_err().to_string().contains("over the limit"));
        let mut asm = SnapshotAssembler::default();
        assert!(asm.accept(pb::PeerMessage::default()).is_err());
        let chunk = pb::SnapshotChunk { offset: 5, ..Default::default() };
        let m = pb::PeerMessage { msg: Some(pb::peer_message::Msg::Snapshot(chunk)), trace: vec![] };
        assert!(asm.accept(m).is_err());

        // Terms and indexes past the bound, in each message that carries them.
        use pb::peer_message::Msg;
        let huge = pb::MAX_TERM_OR_INDEX + 1;
        let wrap = |msg| pb::PeerMessage { msg: Some(msg), trace: vec![] };
        let response =
            |result| Msg::Response(pb::AppendResponse { term: 1, from: 2, read_ctx: 0, result: Some(result) });
        let conflict = |c: pb::Conflict| response(pb::append_response::Result::Conflict(c));
        let out_of_range = [
            Msg::Append(pb::AppendEntries { term: huge, ..Default::default() }),
            Msg::Append(pb::AppendEntries { term: 1, prev_log_index: huge, ..Default::default() }),
            Msg::Append(pb::AppendEntries { term: 1, leader_commit: huge, ..Default::default() }),
            Msg::Append(pb::AppendEntries {
                term: 1,
                entries: vec![pb::Entry { term: huge, index: 1, command: None }],
                ..Default::default()
            }),
            response(pb::append_response::Result::MatchIndex(huge)),
            conflict(pb::Conflict { rejected_prev: huge, hint_term: None, hint_index: 1 }),
            conflict(pb::Conflict { rejected_prev: 1, hint_term: Some(huge), hint_index: 1 }),
            conflict(pb::Conflict { rejected_prev: 1, hint_term: None, hint_index: huge }),
            Msg::Snapshot(pb::SnapshotChunk { term: 1, index: huge, last: true, ..Default::default() }),
            Msg::Snapshot(pb::SnapshotChunk { term: huge, index: 1, last: true, ..Default::default() }),
        ];
        for msg in out_of_range {
            let shown = format!("{msg:?}");
            let err = asm.accept(wrap(msg)).map(|_| ()).expect_err(&shown);
            assert!(err.to_string().contains("out of range"), "{shown}: {err}");
        }
        // The bound itself is fine.
        let at_bound = Msg::Append(pb::AppendEntries { term: pb::MAX_TERM_OR_INDEX, ..Default::default() });
        assert!(asm.accept(wrap(at_bound)).is_ok());
    }
}
