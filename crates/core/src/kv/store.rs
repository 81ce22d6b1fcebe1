//! The key-value state machine with per-client sessions.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use super::command::{ApplyError, Command, MAX_VALUE_BYTES, Op, Outcome, REGISTERED_BASE, Reply};
use super::expiry::{self, Expiry};
use crate::types::{Entry, Index, Payload, Term};

/// One client's exactly-once state.
///
/// Invariant: `results` holds the outcome of every applied opId of this
/// session that is `>= first_unacked`, so a retry of any of them (the client
/// may have several in flight) gets the first outcome and applies nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    session: u64,
    first_unacked: u64,
    results: BTreeMap<u64, Outcome>,
    /// The index of the client's last applied command (see expiry.rs).
    /// Snapshots carry it after the table, so that the table's layout
    /// stays what older servers wrote and read.
    #[serde(skip)]
    last_index: Index,
}

/// The replicated key-value state: values, client sessions, and how far the
/// log has been applied. Apply is deterministic, so every server that applies
/// the same log reaches the same state, and a snapshot is this whole struct.
///
/// The maps are persistent B-trees (`imbl`): a clone shares every node and
/// costs next to nothing, and a node is copied only when a write reaches it
/// while shared. So a server can clone the store at a snapshot's index and
/// encode the clone on another thread while it goes on applying; with a
/// `BTreeMap`, encoding a million keys stalled the event loop for 65-155 ms,
/// and cloning one took longer still. They serialize as maps, exactly as
/// `BTreeMap`s did, so snapshots written before read the same.
///
/// The session table is bounded (expiry.rs): what that adds to a snapshot
/// comes after the fields above, so a snapshot written before it restores
/// (with every session equally old), and a server from before it would
/// read a newer snapshot's table and ignore the rest.
///
/// Keys and values are `Arc<str>`, not `String`: the first write to a node
/// shared with a clone copies the node's whole key and value array, and
/// copying an `Arc` is a counter increment where a `String` is an
/// allocation and a copy. At a million keys, with the clone alive for the
/// whole encoding, that was most of the writes' extra cost meanwhile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    #[serde(deserialize_with = "super::cautious::ord_map")]
    data: OrdMap<Arc<str>, Arc<str>>,
    #[serde(deserialize_with = "super::cautious::ord_map")]
    sessions: OrdMap<String, Session>,
    applied_index: Index,
    applied_term: Term,
    #[serde(skip)]
    expiry: Expiry,
}

/// A snapshot that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("corrupt key-value snapshot: {0}")]
    Decode(#[from] postcard::Error),
    #[error("corrupt key-value snapshot: {sessions} sessions but {indexes} last-command indexes")]
    Sessions { sessions: usize, indexes: usize },
    #[error("corrupt key-value snapshot: {0} bytes after its end")]
    Trailing(usize),
}

impl KvStore {
    /// A state machine keeping at most [`expiry::MAX_SESSIONS`] sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state machine keeping at most `limit` client sessions (at least
    /// one). Every server of a cluster must use the same limit; a snapshot
    /// carries it.
    pub fn with_session_limit(limit: usize) -> Self {
        KvStore { expiry: Expiry::with_limit(limit), ..Self::default() }
    }

    /// How many client sessions are kept.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the bound on sessions has started (see `expiry::marker`):
    /// a leader that finds it not started proposes the marker.
    pub fn sessions_bounded(&self) -> bool {
        self.expiry.since().is_some()
    }

    /// The index of the last entry applied (or folded into a restored snapshot).
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// A read outside the log, for reads served by ReadIndex.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(|v| &**v)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applies one committed entry. Entries must come in index order; an
    /// entry at or below `applied_index` is ignored (it is already in the
    /// state, e.g. folded into a snapshot) and returns `None`, as does a No-Op.
    pub fn apply(&mut self, entry: &Entry) -> Option<Outcome> {
        if entry.index <= self.applied_index {
            return None;
        }
        debug_assert_eq!(entry.index, self.applied_index + 1, "apply out of order");
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        match &entry.payload {
            Payload::Noop => None,
            Payload::Command(cmd) if expiry::is_marker(cmd) => {
                if self.expiry.start(entry.index, self.sessions.keys().map(String::as_str)) {
                    let at = entry.index;
                    self.sessions = std::mem::take(&mut self.sessions)
                        .into_iter()
                        .map(|(client, s)| (client, Session { last_index: at, ..s }))
                        .collect();
                }
                None
            }
            // Before the session lookup: a registration must not create or
            // touch the client's session, or a late duplicate of an old
            // incarnation's registration could reset the live one.
            Payload::Command(Command { op: Op::Register, .. }) => {
                Some(Ok(Reply::Registered { session: REGISTERED_BASE + entry.index }))
            }
            Payload::Command(cmd) => {
                let outcome = self.apply_command(cmd, entry.index);
                self.forget_over_limit(entry.index);
                Some(outcome)
            }
        }
    }

    /// Forgets the least recently active sessions beyond the limit, at
    /// `index`. A session no registration had issued by then (taken before
    /// the bound started, see [`ApplyError::Unissued`]) raises the
    /// watermark only to just below the next registration's: its client's
    /// late retries lose exactly-once, which only a client that made up
    /// its session can meet, rather than every new client its service.
    fn forget_over_limit(&mut self, index: Index) {
        while let Some(client) = self.expiry.over_limit() {
            if let Some(s) = self.sessions.remove(&client) {
                self.expiry.forgot(s.session.min(REGISTERED_BASE.saturating_add(index)));
            }
        }
    }

    fn apply_command(&mut self, cmd: &Command, index: Index) -> Outcome {
        let below = REGISTERED_BASE.saturating_add(index);
        if self.expiry.since().is_some() && cmd.session >= below {
            return Err(ApplyError::Unissued { session: cmd.session, below });
        }
        if !self.sessions.contains_key(&cmd.client_id) {
            if self.expiry.refuses(cmd.session) {
                return Err(ApplyError::SessionExpired {
                    session: cmd.session,
                    forgotten_through: self.expiry.forgotten_through().unwrap_or(0),
                });
            }
            self.sessions.insert(cmd.client_id.clone(), Session::default());
        }
        let at = self.expiry.stamp(index);
        let s = self.sessions.get_mut(&cmd.client_id).expect("inserted above");
        self.expiry.touched(&cmd.client_id, s.last_index, at);
        s.last_index = at;
        if cmd.session < s.session {
            return Err(ApplyError::Stale { session: cmd.session, op_id: cmd.op_id });
        }
        if cmd.session > s.session {
            // A new incarnation of the client: its numbering starts afresh.
            *s = Session { session: cmd.session, last_index: at, ..Session::default() };
        }
        if cmd.first_unacked > s.first_unacked {
            s.first_unacked = cmd.first_unacked;
            s.results = s.results.split_off(&cmd.first_unacked);
        }
        if let Some(saved) = s.results.get(&cmd.op_id) {
            return saved.clone();
        }
        if cmd.op_id < s.first_unacked {
            return Err(ApplyError::Stale { session: cmd.session, op_id: cmd.op_id });
        }
        let outcome = Ok(execute(&mut self.data, &cmd.op));
        s.results.insert(cmd.op_id, outcome.clone());
        outcome
    }

    /// Encodes the whole state (values, sessions, applied index, then
    /// what bounds the sessions).
    pub fn snapshot(&self) -> Vec<u8> {
        let saved = expiry::Saved {
            limit: self.expiry.limit() as u64,
            since: self.expiry.since(),
            forgotten_through: self.expiry.forgotten_through(),
            last_indexes: self.sessions.values().map(|s| s.last_index).collect(),
        };
        let bytes = postcard::to_stdvec(self).expect("encoding to memory cannot fail");
        postcard::to_extend(&saved, bytes).expect("encoding to memory cannot fail")
    }

    /// Decodes a snapshot made by [`KvStore::snapshot`], or by a server
    /// from before sessions were bounded (then every session counts as
    /// last active at index 0, and the limit is the default).
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (mut kv, rest) = postcard::take_from_bytes::<KvStore>(bytes)?;
        if rest.is_empty() {
            let clients = kv.sessions.keys().map(|c| (c.as_str(), 0));
            kv.expiry = Expiry::restored(expiry::MAX_SESSIONS, None, None, clients);
            return Ok(kv);
        }
        let (saved, trailing) = postcard::take_from_bytes::<expiry::Saved>(rest)?;
        if !trailing.is_empty() {
            return Err(SnapshotError::Trailing(trailing.len()));
        }
        if saved.last_indexes.len() != kv.sessions.len() {
            return Err(SnapshotError::Sessions { sessions: kv.sessions.len(), indexes: saved.last_indexes.len() });
        }
        let sessions = std::mem::take(&mut kv.sessions);
        kv.sessions = sessions
            .into_iter()
            .zip(saved.last_indexes)
            .map(|((client, s), last_index)| (client, Session { last_index, ..s }))
            .collect();
        let limit = usize::try_from(saved.limit).unwrap_or(usize::MAX);
        let clients = kv.sessions.iter().map(|(c, s)| (c.as_str(), s.last_index));
        kv.expiry = Expiry::restored(limit, saved.since, saved.forgotten_through, clients);
        Ok(kv)
    }

    /// Iterates over all keys and values in key order (for checks and tools).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.data.iter().map(|(k, v)| (&**k, &**v))
    }
}

fn execute(data: &mut OrdMap<Arc<str>, Arc<str>>, op: &Op) -> Reply {
    match op {
        Op::Get { key } => Reply::Value(data.get(key.as_str()).map(|v| v.to_string())),
        Op::Put { key, value } => {
            data.insert(key.as_str().into(), value.as_str().into());
            Reply::Done
        }
        Op::Delete { key } => {
            data.remove(key.as_str());
            Reply::Done
        }
        Op::Append { key, value } => {
            let len = data.get(key.as_str()).map_or(0, |v| v.len()) + value.len();
            if len > MAX_VALUE_BYTES {
                return Reply::TooLarge { len };
            }
            match data.get_mut(key.as_str()) {
                Some(v) => *v = [&**v, value.as_str()].concat().into(),
                None => {
                    data.insert(key.as_str().into(), value.as_str().into());
                }
            }
            Reply::Done
        }
        Op::Cas { key, expected, new } => {
            let swapped = data.get(key.as_str()).map(|v| &**v) == expected.as_deref();
            if swapped {
                data.insert(key.as_str().into(), new.as_str().into());
            }
            Reply::Cas { swapped }
        }
        // Never reached: `KvStore::apply` answers a registration before
        // any session is looked at. It would change nothing anyway.
        Op::Register => Reply::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, client: &str, session: u64, op_id: u64, first_unacked: u64, op: Op) -> Entry {
        Entry {
            term: 1,
            index,
            payload: Payload::Command(Command { client_id: client.into(), session, op_id, first_unacked, op }),
        }
    }

    fn append(v: &str) -> Op {
        Op::Append { key: "k".into(), value: v.into() }
    }

    #[test]
    fn a_snapshot_claiming_huge_maps_is_an_error_not_an_abort() {
        // A map length of 2^60 (postcard varint), then nothing: the values
        // map, then (after an empty values map) the sessions map.
        let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        assert!(KvStore::restore(&huge).is_err());
        let huge_sessions: Vec<u8> = [0x00].iter().chain(&huge).copied().collect();
        assert!(KvStore::restore(&huge_sessions).is_err());
        // A true length still decodes.
        let mut kv = KvStore::new();
        for i in 1..=3 {
            kv.apply(&entry(i, "c", 1, i, 1, append(&i.to_string())));
        }
        assert_eq!(KvStore::restore(&kv.snapshot()).unwrap(), kv);
    }

    #[test]
    fn appends_grow_a_value_up_to_the_limit_and_no_further() {
        let mut kv = KvStore::new();
        let almost = "x".repeat(MAX_VALUE_BYTES - 1);
        assert_eq!(kv.apply(&entry(1, "c", 1, 1, 1, append(&almost))), Some(Ok(Reply::Done)));
        assert_eq!(kv.apply(&entry(2, "c", 1, 2, 2, append("y"))), Some(Ok(Reply::Done)));
        let over = Some(Ok(Reply::TooLarge { len: MAX_VALUE_BYTES + 1 }));
        assert_eq!(kv.apply(&entry(3, "c", 1, 3, 3, append("z"))), over);
        // Nothing changed, and a retry of the refused append gets the same answer.
        assert_eq!(kv.get("k").map(str::len), Some(MAX_VALUE_BYTES));
        assert!(kv.get("k").is_some_and(|v| v.ends_with('y')));
        assert_eq!(kv.apply(&entry(4, "c", 1, 3, 3, append("z"))), over);
        // A new key starts from nothing.
        let other = Op::Append { key: "other".into(), value: "x".repeat(MAX_VALUE_BYTES + 1) };
        assert_eq!(kv.apply(&entry(5, "c", 1, 4, 4, other)), Some(Ok(Reply::TooLarge { len: MAX_VALUE_BYTES + 1 })));
        assert_eq!(kv.get("other"), None);
    }

    #[test]
    fn retried_op_is_applied_once_and_returns_first_result() {
        let mut kv = KvStore::new();
        assert_eq!(kv.apply(&entry(1, "c", 1, 1, 1, append("a"))), Some(Ok(Reply::Done)));
        // The same opId again (a retry after failover) at a later index.
        assert_eq!(kv.apply(&entry(2, "c", 1, 1, 1, append("a"))), Some(Ok(Reply::Done)));
        assert_eq!(kv.get("k"), Some("a"));
    }

    #[test]
    fn several_in_flight_ops_are_each_deduplicated() {
        let mut kv = KvStore::new();
        kv.apply(&entry(1, "c", 1, 1, 1, append("1")));
        kv.apply(&entry(2, "c", 1, 2, 1, append("2")));
        kv.apply(&entry(3, "c", 1, 3, 1, append("3")));
        // The client resends 1..=3 after a failover: all are duplicates.
        for (i, op) in (4..).zip(1..=3) {
            kv.apply(&entry(i, "c", 1, op, 1, append("x")));
        }
        assert_eq!(kv.get("k"), Some("123"));
    }

    #[test]
    fn op_below_first_unacked_is_stale() {
        let mut kv = KvStore::new();
        kv.apply(&entry(1, "c", 1, 1, 1, append("1")));
        kv.apply(&entry(2, "c", 1, 2, 2, append("2")));
        let late = kv.apply(&entry(3, "c", 1, 1, 1, append("1")));
        assert_eq!(late, Some(Err(ApplyError::Stale { session: 1, op_id: 1 })));
        assert_eq!(kv.get("k"), Some("12"));
    }

    #[test]
    fn restarted_client_with_new_session_is_not_locked_out() {
        let mut kv = KvStore::new();
        for i in 1..=5 {
            kv.apply(&entry(i, "c", 1, i, i, append("a")));
        }
        // Restart: numbering starts again at 1 in a larger session.
        assert_eq!(kv.apply(&entry(6, "c", 2, 1, 1, append("b"))), Some(Ok(Reply::Done)));
        // A late duplicate from the old session is refused, not applied.
        assert!(matches!(kv.apply(&entry(7, "c", 1, 5, 5, append("a"))), Some(Err(ApplyError::Stale { .. }))));
        assert_eq!(kv.get("k"), Some("aaaaab"));
    }

    /// A registration at `index` by client `c` (its opId is a nonce).
    fn register(index: Index, nonce: u64) -> Entry {
        entry(index, "c", 0, nonce, 0, Op::Register)
    }

    fn registered(kv: &mut KvStore, index: Index, nonce: u64) -> u64 {
        match kv.apply(&register(index, nonce)) {
            Some(Ok(Reply::Registered { session })) => session,
            other => panic!("registration answered {other:?}"),
        }
    }

    #[test]
    fn a_registration_gives_a_session_above_clock_sessions_and_changes_nothing() {
        let mut kv = KvStore::new();
        // The previous incarnation's session was a start time in ns.
        let clock_session = 1_800_000_000_000_000_000;
        kv.apply(&entry(1, "c", clock_session, 1, 1, append("a")));
        let before = kv.snapshot();
        let session = registered(&mut kv, 2, 77);
        assert_eq!(session, REGISTERED_BASE + 2);
        assert!(session > clock_session);
        // Nothing but the applied index moved.
        let mut expected = KvStore::restore(&before).unwrap();
        expected.applied_index = 2;
        assert_eq!(kv, expected);
        // The new incarnation numbers from 1 again and is not locked out.
        assert_eq!(kv.apply(&entry(3, "c", session, 1, 1, append("b"))), Some(Ok(Reply::Done)));
        assert_eq!(kv.get("k"), Some("ab"));
    }

    #[test]
    fn a_late_registration_of_an_old_incarnation_locks_nobody_out() {
        let mut kv = KvStore::new();
        let old = registered(&mut kv, 1, 5);
        kv.apply(&entry(2, "c", old, 1, 1, append("a")));
        // The next incarnation registers and writes.
        let new = registered(&mut kv, 3, 6);
        assert!(new > old);
        assert_eq!(kv.apply(&entry(4, "c", new, 1, 1, append("b"))), Some(Ok(Reply::Done)));
        // A duplicate of the old registration arrives late: it hands out an
        // unused, larger number and leaves the live session alone.
        assert!(registered(&mut kv, 5, 5) > new);
        assert_eq!(kv.apply(&entry(6, "c", new, 2, 1, append("c"))), Some(Ok(Reply::Done)));
        // A retry of an applied op of the live session still applies nothing.
        assert_eq!(kv.apply(&entry(7, "c", new, 1, 1, append("b"))), Some(Ok(Reply::Done)));
        // And the old incarnation's late ops are refused.
        assert!(matches!(kv.apply(&entry(8, "c", old, 2, 1, append("x"))), Some(Err(ApplyError::Stale { .. }))));
        assert_eq!(kv.get("k"), Some("abc"));
    }

    #[test]
    fn cas_put_delete_get() {
        let mut kv = KvStore::new();
        let cas = |expected: Option<&str>, new: &str| Op::Cas {
            key: "k".into(),
            expected: expected.map(Into::into),
            new: new.into(),
        };
        assert_eq!(kv.apply(&entry(1, "c", 1, 1, 1, cas(None, "a"))), Some(Ok(Reply::Cas { swapped: true })));
        assert_eq!(kv.apply(&entry(2, "c", 1, 2, 2, cas(None, "b"))), Some(Ok(Reply::Cas { swapped: false })));
        assert_eq!(kv.apply(&entry(3, "c", 1, 3, 3, cas(Some("a"), "b"))), Some(Ok(Reply::Cas { swapped: true })));
        kv.apply(&entry(4, "c", 1, 4, 4, Op::Delete { key: "k".into() }));
        assert_eq!(kv.apply(&entry(5, "c", 1, 5, 5, Op::Get { key: "k".into() })), Some(Ok(Reply::Value(None))));
        kv.apply(&entry(6, "c", 1, 6, 6, Op::Put { key: "k".into(), value: "v".into() }));
        assert_eq!(kv.get("k"), Some("v"));
    }

    #[test]
    fn snapshot_round_trips_values_and_sessions() {
        let mut kv = KvStore::new();
        kv.apply(&entry(1, "c", 1, 1, 1, append("a")));
        let restored = KvStore::restore(&kv.snapshot()).unwrap();
        assert_eq!(restored, kv);
        let mut restored = restored;
        // The session survived: the retry is still deduplicated.
        restored.apply(&entry(2, "c", 1, 1, 1, append("a")));
        assert_eq!(restored.get("k"), Some("a"));
        assert!(KvStore::restore(&[0xff, 0xff, 0xff]).is_err());
    }

    /// The server encodes a clone while it goes on applying: the clone must
    /// not see what is applied after it was taken.
    #[test]
    fn a_clone_keeps_its_state_while_the_original_moves_on() {
        let mut kv = KvStore::new();
        for i in 1..=200 {
            kv.apply(&entry(i, "c", 1, i, i, Op::Put { key: format!("k{i}"), value: "old".into() }));
        }
        let frozen = kv.clone();
        let encoded = frozen.snapshot();
        for i in 201..=400 {
            kv.apply(&entry(i, "c", 1, i, i, Op::Put { key: format!("k{}", i - 200), value: "new".into() }));
        }
        assert_eq!(frozen.applied_index(), 200);
        assert!((1..=200).all(|i| frozen.get(&format!("k{i}")) == Some("old")));
        assert!((1..=200).all(|i| kv.get(&format!("k{i}")) == Some("new")));
        assert_eq!(frozen.snapshot(), encoded);
    }

    /// The layout of a snapshot before the session bound (and, with
    /// `BTreeMap`s, before `imbl`): what older servers wrote and read.
    #[derive(Serialize, Deserialize)]
    struct Before {
        data: BTreeMap<String, String>,
        sessions: BTreeMap<String, Session>,
        applied_index: Index,
        applied_term: Term,
    }

    /// Snapshots written when the maps were `BTreeMap`s restore the same.
    #[test]
    fn snapshots_of_the_btreemap_layout_still_restore() {
        let mut results = BTreeMap::new();
        results.insert(7, Ok(Reply::Done));
        let before = Before {
            data: [("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())].into(),
            sessions: [("c".to_string(), Session { session: 3, first_unacked: 7, results, last_index: 0 })].into(),
            applied_index: 9,
            applied_term: 2,
        };
        let bytes = postcard::to_stdvec(&before).unwrap();
        let kv = KvStore::restore(&bytes).unwrap();
        assert_eq!((kv.get("a"), kv.get("b"), kv.applied_index(), kv.applied_term()), (Some("1"), Some("2"), 9, 2));
        assert!(kv.snapshot().starts_with(&bytes), "the same state encodes to the same bytes, then the expiry's");
        assert_eq!(kv.expiry, Expiry::restored(crate::kv::MAX_SESSIONS, None, None, [("c", 0)].into_iter()));
        assert!(!kv.sessions_bounded());
        // The restored session still deduplicates op 7.
        let mut kv = kv;
        assert_eq!(kv.apply(&entry(10, "c", 3, 7, 7, append("x"))), Some(Ok(Reply::Done)));
        assert_eq!(kv.get("k"), None);
    }

    /// A state machine keeping `limit` sessions, its bound started at once.
    fn bounded(limit: usize) -> KvStore {
        let mut kv = KvStore::with_session_limit(limit);
        kv.expiry.start(0, std::iter::empty());
        kv
    }

    /// The marker at `index`.
    fn marker(index: Index) -> Entry {
        Entry { term: 1, index, payload: Payload::Command(expiry::marker()) }
    }

    /// Servers whose states came from snapshots written before the bound,
    /// at different indexes, forget the same sessions: the order starts at
    /// the marker, which both apply.
    #[test]
    fn states_from_snapshots_before_the_bound_forget_alike() {
        let old = |kv: &KvStore| {
            let sessions =
                kv.sessions.iter().map(|(c, s)| (c.clone(), Session { last_index: 0, ..s.clone() })).collect();
            let data = kv.data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let before = Before { data, sessions, applied_index: kv.applied_index, applied_term: kv.applied_term };
            KvStore::restore(&postcard::to_stdvec(&before).unwrap()).unwrap()
        };
        // The log: zz writes, then aa; a server from before the bound
        // snapshots after zz's write (a), another after aa's (b).
        let log = [put(1, "zz", 1, 1), put(2, "aa", 1, 1)];
        let mut kv = KvStore::new();
        kv.apply(&log[0]);
        let mut a = old(&kv);
        kv.apply(&log[1]);
        let mut b = old(&kv);
        a.apply(&log[1]);
        assert!(!a.sessions_bounded() && !b.sessions_bounded());
        // Upgraded, the first leader proposes the marker; then a third client.
        let rest = [marker(3), put(4, "mm", 1, 1), put(5, "zz", 1, 2)];
        a.expiry.set_limit(2);
        b.expiry.set_limit(2);
        for e in &rest {
            assert_eq!(a.apply(e), b.apply(e));
        }
        assert_eq!(a, b);
        assert_eq!(a.snapshot(), b.snapshot());
        // aa was forgotten (equally old as zz at the marker, first by id).
        assert_eq!(a.sessions(), 2);
        assert!(matches!(a.apply(&put(6, "aa", 1, 1)), Some(Err(ApplyError::SessionExpired { .. }))));
    }

    #[test]
    fn nothing_is_forgotten_before_the_marker() {
        let mut kv = KvStore::with_session_limit(1);
        for (i, c) in (1..).zip(["a", "b", "c"]) {
            kv.apply(&put(i, c, 1, 1));
        }
        assert_eq!(kv.sessions(), 3);
        assert_eq!(kv.apply(&marker(4)), None);
        assert!(kv.sessions_bounded());
        kv.apply(&put(5, "b", 1, 2));
        assert_eq!(kv.sessions(), 1, "the marker started the bound");
        assert_eq!(KvStore::restore(&kv.snapshot()).unwrap(), kv);
        // A second marker changes nothing.
        let before = kv.clone();
        kv.apply(&marker(6));
        assert_eq!(KvStore { applied_index: 5, ..kv }, before);
    }

    /// A session no registration issued cannot raise the watermark above
    /// the sessions registrations will issue (it would lock every new
    /// client out once forgotten).
    #[test]
    fn a_session_from_the_future_is_refused_once_the_bound_started() {
        let mut kv = KvStore::with_session_limit(1);
        let future = REGISTERED_BASE + 1_000;
        // Before the marker, as servers from before the bound did: applied.
        assert_eq!(kv.apply(&put(1, "x", future, 1)), Some(Ok(Reply::Done)));
        kv.apply(&marker(2));
        let refused = Some(Err(ApplyError::Unissued { session: u64::MAX, below: REGISTERED_BASE + 3 }));
        assert_eq!(kv.apply(&put(3, "evil", u64::MAX, 1)), refused);
        assert!(matches!(kv.apply(&put(4, "evil", REGISTERED_BASE + 4, 1)), Some(Err(ApplyError::Unissued { .. }))));
        assert_eq!(kv.get("k"), Some("x"));
        // A registered session is served; x's, taken before the marker,
        // is forgotten, but only up to what registrations issued.
        let s = registered(&mut kv, 5, 1);
        assert_eq!(kv.apply(&entry(6, "c", s, 1, 1, append("c"))), Some(Ok(Reply::Done)));
        assert_eq!(kv.expiry.forgotten_through(), Some(REGISTERED_BASE + 6));
        let next = registered(&mut kv, 7, 2);
        assert_eq!(kv.apply(&entry(8, "d", next, 1, 1, append("d"))), Some(Ok(Reply::Done)));
    }

    /// Client `c`'s command at `index`, in session 1 (numbers from 1).
    fn put(index: Index, client: &str, session: u64, op_id: u64) -> Entry {
        entry(index, client, session, op_id, op_id, append(client))
    }

    #[test]
    fn sessions_beyond_the_limit_are_forgotten_least_recently_active_first() {
        let mut kv = bounded(2);
        assert_eq!(kv.apply(&put(1, "a", 5, 1)), Some(Ok(Reply::Done)));
        assert_eq!(kv.apply(&put(2, "b", 6, 1)), Some(Ok(Reply::Done)));
        // a is active again, so b is now the least recent.
        assert_eq!(kv.apply(&put(3, "a", 5, 2)), Some(Ok(Reply::Done)));
        assert_eq!(kv.apply(&put(4, "c", 3, 1)), Some(Ok(Reply::Done)));
        assert_eq!(kv.sessions(), 2);
        // b's retry of its applied op is refused, not applied again.
        let refused = Some(Err(ApplyError::SessionExpired { session: 6, forgotten_through: 6 }));
        assert_eq!(kv.apply(&put(5, "b", 6, 1)), refused);
        assert_eq!(kv.get("k"), Some("abac"));
        // a and c still deduplicate their retries.
        assert_eq!(kv.apply(&put(6, "a", 5, 2)), Some(Ok(Reply::Done)));
        assert_eq!(kv.apply(&put(7, "c", 3, 1)), Some(Ok(Reply::Done)));
        assert_eq!(kv.get("k"), Some("abac"));
        assert_eq!(kv.sessions(), 2, "a refusal creates no session");
    }

    #[test]
    fn a_client_forgotten_registers_again_and_is_served() {
        let mut kv = bounded(1);
        let z = registered(&mut kv, 1, 9);
        let a = registered(&mut kv, 2, 10);
        kv.apply(&entry(3, "a", a, 1, 1, append("a")));
        // Another client's registration and write push a out.
        let b = registered(&mut kv, 4, 11);
        kv.apply(&entry(5, "b", b, 1, 1, append("b")));
        // a's late retry, and a late op of an even older session of it.
        let expired = |r: Option<Outcome>| matches!(r, Some(Err(ApplyError::SessionExpired { .. })));
        assert!(expired(kv.apply(&entry(6, "a", a, 1, 1, append("a")))));
        assert!(expired(kv.apply(&entry(7, "a", 9, 3, 3, append("x")))));
        // A client that registered before a was forgotten and never wrote
        // is refused too: the table cannot tell it from a forgotten one.
        assert!(expired(kv.apply(&entry(8, "z", z, 1, 1, append("z")))));
        // A new registration is above everything forgotten, so a is served.
        let a2 = registered(&mut kv, 9, 12);
        assert_eq!(kv.apply(&entry(10, "a", a2, 1, 1, append("A"))), Some(Ok(Reply::Done)));
        assert_eq!(kv.get("k"), Some("abA"));
        // b was forgotten in turn.
        assert!(expired(kv.apply(&entry(11, "b", b, 2, 2, append("b")))));
    }

    #[test]
    fn a_snapshot_keeps_which_session_goes_next() {
        let mut kv = bounded(3);
        for (i, c) in (1..).zip(["a", "b", "c", "a"]) {
            kv.apply(&put(i, c, 1, i));
        }
        let mut restored = KvStore::restore(&kv.snapshot()).unwrap();
        assert_eq!(restored, kv);
        // The next new client pushes out b, the least recent, in both.
        for s in [&mut kv, &mut restored] {
            s.apply(&put(5, "d", 1, 1));
            assert!(matches!(s.apply(&put(6, "b", 1, 2)), Some(Err(ApplyError::SessionExpired { .. }))));
            assert!(matches!(s.apply(&put(7, "c", 1, 3)), Some(Ok(_))));
        }
        assert_eq!(restored, kv);
        assert_eq!(restored.snapshot(), kv.snapshot());
    }

    #[test]
    fn an_older_server_reads_a_newer_snapshot_and_a_bad_tail_is_an_error() {
        let mut kv = bounded(1);
        kv.apply(&put(1, "a", 1, 1));
        kv.apply(&put(2, "b", 1, 1));
        let bytes = kv.snapshot();
        let old: Before = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(old.data.get("k").map(String::as_str), Some("ab"));
        assert_eq!(old.sessions.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!((old.applied_index, old.applied_term), (2, 1));
        // Trailing bytes after the expiry's part, or a count that does not match.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(KvStore::restore(&longer), Err(SnapshotError::Trailing(1))));
        let table = postcard::to_stdvec(&KvStore { expiry: Expiry::default(), ..kv.clone() }).unwrap();
        let wrong = expiry::Saved { limit: 1, since: Some(0), forgotten_through: Some(1), last_indexes: vec![1, 2] };
        let wrong = postcard::to_extend(&wrong, table).unwrap();
        assert!(matches!(KvStore::restore(&wrong), Err(SnapshotError::Sessions { sessions: 1, indexes: 2 })));
    }
}
