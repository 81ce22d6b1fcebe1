//! The in-memory view of one server's log, which may start after a snapshot.

use crate::types::{Entry, Index, SnapshotMeta, Term};

/// A log whose first `snapshot.index` entries have been folded into a
/// snapshot. Invariant: `entries[i].index == snapshot.index + 1 + i`, and
/// terms never decrease along the log.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    snapshot: SnapshotMeta,
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log that holds `entries` after `snapshot`. Entries at or below the
    /// snapshot index are dropped; a gap or an out-of-order index ends the
    /// log before it (a recovered log is trusted only as a contiguous run).
    pub fn new(snapshot: SnapshotMeta, entries: Vec<Entry>) -> Self {
        let mut log = RaftLog { snapshot, entries: Vec::with_capacity(entries.len()) };
        for e in entries {
            if e.index <= snapshot.index {
                continue;
            }
            if e.index != log.last_index() + 1 || e.term < log.last_term() {
                break;
            }
            log.entries.push(e);
        }
        log
    }

    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }

    /// The first index still held as an entry.
    pub fn first_index(&self) -> Index {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> Index {
        self.snapshot.index + self.entries.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// The term at `index`: known for the snapshot's last index and every
    /// entry held, `None` for compacted indexes and beyond the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.entries.get((index - self.snapshot.index - 1) as usize)
    }

    /// Entries `from..=to`, cut after `max_entries` entries or once
    /// `max_bytes` is reached (but always at least one if any exist).
    pub fn slice(&self, from: Index, to: Index, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = from.max(self.first_index());
        while i <= to.min(self.last_index()) && out.len() < max_entries {
            let e = self.entry(i).expect("index within bounds");
            bytes += e.approx_size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Entries `from..` as a slice (empty if `from` is past the end).
    pub fn entries_from(&self, from: Index) -> &[Entry] {
        let start = from.max(self.first_index()) - self.first_index();
        self.entries.get(start as usize..).unwrap_or(&[])
    }

    /// Appends one entry; its index must be `last_index() + 1`.
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push(entry);
    }

    /// Drops every entry at `index` and after.
    pub fn truncate_from(&mut self, index: Index) {
        let keep = index.saturating_sub(self.first_index()) as usize;
        self.entries.truncate(keep);
    }

    /// Folds the prefix up to `meta.index` into a snapshot. Entries after it
    /// are kept only when the log holds `meta`'s entry itself; otherwise the
    /// log is inconsistent with the snapshot and is dropped whole. Returns
    /// the entries removed, so that the caller decides where they are freed.
    pub fn compact(&mut self, meta: SnapshotMeta) -> Vec<Entry> {
        if meta.index <= self.snapshot.index {
            return Vec::new();
        }
        let removed = if self.term(meta.index) == Some(meta.term) {
            // The kept suffix moves to a vector as large as the old one, so
            // the log does not regrow (reallocating and copying) from empty
            // after every compaction.
            let mut kept = Vec::with_capacity(self.entries.capacity());
            kept.extend(self.entries.drain((meta.index - self.snapshot.index) as usize..));
            std::mem::replace(&mut self.entries, kept)
        } else {
            std::mem::take(&mut self.entries)
        };
        self.snapshot = meta;
        removed
    }

    /// The first index of the run of entries of `term` that contains
    /// `index`, bounded below by the first entry held: the conflict hint a
    /// follower returns, so the leader can skip a whole term per round trip.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index whose entry has `term`, if the log holds any.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries.iter().rev().skip_while(|e| e.term > term).find(|e| e.term == term).map(|e| e.index)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries =
            terms.iter().zip(1..).map(|(&term, index)| Entry { term, index, payload: Payload::Noop }).collect();
        RaftLog::new(SnapshotMeta::default(), entries)
    }

    #[test]
    fn indexes_and_terms() {
        let log = log_of(&[1, 1, 2, 3, 3]);
        assert_eq!((log.first_index(), log.last_index(), log.last_term()), (1, 5, 3));
        assert_eq!(log.term(0), Some(0));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(6), None);
        assert_eq!(log.first_index_of_term_at(5), 4);
        assert_eq!(log.first_index_of_term_at(2), 1);
        assert_eq!(log.last_index_of_term(1), Some(2));
        assert_eq!(log.last_index_of_term(4), None);
    }

    #[test]
    fn compaction_keeps_matching_suffix_and_drops_inconsistent_log() {
        let mut log = log_of(&[1, 1, 2, 3, 3]);
        let removed = log.compact(SnapshotMeta { index: 3, term: 2 });
        assert_eq!(removed.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(log.compact(SnapshotMeta { index: 3, term: 2 }).is_empty(), "nothing twice");
        assert_eq!((log.first_index(), log.last_index()), (4, 5));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert_eq!(log.entry(4).unwrap().index, 4);

        let mut log = log_of(&[1, 1, 2]);
        assert_eq!(log.compact(SnapshotMeta { index: 2, term: 7 }).len(), 3, "the whole log goes");
        assert!(log.is_empty());
        assert_eq!((log.last_index(), log.last_term()), (2, 7));
    }

    #[test]
    fn slice_respects_count_and_byte_budgets() {
        let log = log_of(&[1; 10]);
        assert_eq!(log.slice(3, 10, 4, usize::MAX).len(), 4);
        assert_eq!(log.slice(3, 10, 100, 1).len(), 1, "always at least one entry");
        assert_eq!(log.slice(9, 20, 100, usize::MAX).len(), 2);
        assert!(log.slice(11, 20, 100, usize::MAX).is_empty());
    }

    #[test]
    fn recovery_stops_at_a_gap() {
        let mut entries: Vec<Entry> = (1..=5).map(|index| Entry { term: 1, index, payload: Payload::Noop }).collect();
        entries.remove(2);
        let log = RaftLog::new(SnapshotMeta::default(), entries);
        assert_eq!(log.last_index(), 2);
    }
}
