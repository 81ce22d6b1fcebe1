//! The server process with real disks and real sockets: replication, crash
//! recovery with SIGKILL, torn and corrupt logs, snapshot catch-up.

mod support;

use std::time::Duration;

use support::{TestCluster, get, is_ok, put, value_of};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn replicates_and_serves_reads_and_writes() {
    runtime().block_on(async {
        let mut c = TestCluster::new(3, "");
        for id in 1..=3 {
            c.start(id);
        }
        let leader = c.select_leader().await;
        let mut kv = c.client(leader).await;
        for i in 1..=20 {
            let r = kv
                .put(put("t", i, &format!("k{i}"), &format!("v{i}")))
                .await
                .unwrap()
                .into_inner();
            assert!(is_ok(&r), "{r:?}");
        }
        let r = kv.get(get("t", 21, "k7")).await.unwrap().into_inner();
        assert_eq!(value_of(&r), Some(Some("v7".into())));
        // A follower refuses and names the leader.
        let follower = if leader == 1 { 2 } else { 1 };
        let r = c
            .client(follower)
            .await
            .put(put("t", 22, "x", "y"))
            .await
            .unwrap()
            .into_inner();
        match r.result {
            Some(kvraft_proto::reply::Result::Error(e)) => {
                assert_eq!(e.code, kvraft_proto::ErrorCode::NotLeader as i32);
                assert_eq!(e.leader_id, leader);
            }
            other => panic!("expected not leader, got {other:?}"),
        }
        // Every server applies the same log.
        c.wait_until(
            "all servers applied everything",
            Duration::from_secs(10),
            || async {
                let mut applied = Vec::new();
                for id in 1..=3 {
                    applied.push(c.status(id).await.applied_index);
                }
                applied.iter().all(|&a| a == applied[0] && a >= 21)
            },
        )
        .await;
    });
}
