//! Group commit: many writers, every job completes durably, and syncs are
//! shared.

use std::sync::{Arc, Mutex};
use std::thread;

use kvraft_core::Index;
use kvraft_storage::{GroupCommit, Job, StorageError, StorageOptions};

use crate::support::*;

const WRITERS: u64 = 16;
const JOBS_PER_WRITER: u64 = 25;

#[test]
fn concurrent_writers_all_complete_with_fewer_syncs_than_jobs() {
    let dir = tempdir();
    let (storage, _) = open(dir.path(), StorageOptions::default());
    let gc = GroupCommit::new(storage).unwrap();
    // Indexes are handed out in submission order under one lock, as the
    // server's single shell would.
    let next: Mutex<Index> = Mutex::new(1);
    thread::scope(|scope| {
        for _ in 0..WRITERS {
            scope.spawn(|| {
                // Each writer keeps all its jobs in flight, then waits.
                let pending: Vec<_> = (0..JOBS_PER_WRITER)
                    .map(|_| {
                        let mut next = next.lock().unwrap();
                        let job = Job { term: Some(1), entries: vec![entry(*next, 1)] };
                        *next += 1;
                        gc.submit(job)
                    })
                    .collect();
                for p in pending {
                    p.wait().unwrap();
                }
            });
        }
    });
    let jobs = WRITERS * JOBS_PER_WRITER;
    let stats = gc.stats();
    assert_eq!((stats.jobs, stats.entries), (jobs, jobs));
    assert!(stats.syncs < jobs, "{} syncs for {jobs} jobs", stats.syncs);
    drop(gc.shutdown().unwrap());

    let (_, rec) = open(dir.path(), StorageOptions::default());
    assert_eq!(rec.term, 1);
    assert_eq!(rec.entries, entries(1..=jobs, 1));
}

#[test]
fn a_bad_job_fails_alone_and_a_stopped_group_commit_says_so() {
    let dir = tempdir();
    let (storage, _) = open(dir.path(), StorageOptions::default());
    let gc = Arc::new(GroupCommit::new(storage).unwrap());
    let good = gc.submit(Job { term: None, entries: entries(1..=2, 1) });
    let gap = gc.submit(Job { term: None, entries: entries(9..=9, 1) });
    good.wait().unwrap();
    assert!(matches!(gap.wait(), Err(StorageError::Gap { first: 9, last: 2 })));
    gc.submit(Job::default()).wait().unwrap();

    let gc = Arc::into_inner(gc).unwrap();
    let storage = gc.shutdown().unwrap();
    assert_eq!(storage.last_index(), 2);
}
