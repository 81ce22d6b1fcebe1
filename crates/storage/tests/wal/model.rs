//! Random sequences of appends (with suffix truncation), compactions,
//! snapshot installations, term changes and reopens, checked against a
//! model that is just a vector.

use kvraft_core::{Entry, Index, Snapshot, Term};
use kvraft_storage::{FsyncPolicy, Storage, StorageError};
use proptest::prelude::*;

use crate::support::*;

#[derive(Clone, Debug)]
enum Step {
    /// Append `count` entries starting `back` entries before the end.
    Append {
        back: u64,
        count: u64,
        size: usize,
    },
    SetTerm {
        bump: u64,
    },
    /// Compact `back` entries before the end.
    Compact {
        back: u64,
    },
    Install {
        ahead: u64,
    },
    Sync,
    Reopen,
    Gap,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..8u64, 1..6u64, 0..120usize)
            .prop_map(|(back, count, size)| Step::Append { back, count, size }),
        1 => (0..3u64).prop_map(|bump| Step::SetTerm { bump }),
        2 => (0..10u64).prop_map(|back| Step::Compact { back }),
        1 => (0..12u64).prop_map(|ahead| Step::Install { ahead }),
        1 => Just(Step::Sync),
        2 => Just(Step::Reopen),
        1 => Just(Step::Gap),
    ]
}

#[derive(Default)]
struct Model {
    term: Term,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl Model {
    fn snap(&self) -> (Index, Term) {
        self.snapshot.as_ref().map_or((0, 0), |s| (s.meta.index, s.meta.term))
    }

    fn last(&self) -> Index {
        self.entries.last().map_or(self.snap().0, |e| e.index)
    }

    fn term_at(&self, index: Index) -> Term {
        match self.entries.iter().find(|e| e.index == index) {
            Some(e) => e.term,
            None => self.snap().1,
        }
    }
}

fn run(segment_bytes: u64, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempdir();
    let opts = options(FsyncPolicy::Never, segment_bytes);
    let (mut s, _) = open(dir.path(), opts);
    let mut m = Model::default();
    for step in steps {
        match step {
            Step::Append { back, count, size } => {
                let first = (m.last() + 1).saturating_sub(back).max(m.snap().0 + 1);
                let new: Vec<_> = (first..first + count).map(|i| entry_sized(i, m.term, size)).collect();
                s.append(&new).unwrap();
                m.entries.retain(|e| e.index < first);
                m.entries.extend(new);
            }
            Step::SetTerm { bump } => {
                m.term += bump;
                s.set_term(m.term).unwrap();
            }
            Step::Compact { back } => {
                let index = m.last().saturating_sub(back).max(m.snap().0);
                let snap = snapshot(index, m.term_at(index));
                s.compact(&snap).unwrap();
                m.entries.retain(|e| e.index > index);
                m.snapshot = Some(snap);
            }
            Step::Install { ahead } => {
                let snap = snapshot(m.snap().0 + ahead, m.term);
                s.install_snapshot(&snap).unwrap();
                m.entries.clear();
                m.snapshot = Some(snap);
            }
            Step::Sync => s.sync().unwrap(),
            Step::Reopen => {
                s.sync().unwrap();
                drop(s);
                let rec;
                (s, rec) = Storage::open(dir.path(), opts).unwrap();
                prop_assert_eq!(rec.term, m.term);
                prop_assert_eq!(&rec.snapshot, &m.snapshot);
                prop_assert_eq!(&rec.entries, &m.entries);
                prop_assert_eq!(rec.torn_tail, None);
            }
            Step::Gap => {
                let gap = s.append(&[entry(m.last() + 2, m.term)]);
                let is_gap = matches!(gap, Err(StorageError::Gap { .. }));
                prop_assert!(is_gap, "expected a gap error, got {:?}", gap);
            }
        }
        prop_assert_eq!(s.last_index(), m.last());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_match_the_model(
        segment_bytes in 64..2048u64,
        steps in prop::collection::vec(step(), 1..60),
    ) {
        run(segment_bytes, steps)?;
    }
}
