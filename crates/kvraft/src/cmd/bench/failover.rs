//! `kvraft bench failover`: the time from SIGKILL of the leader to the first
//! write committed by the next one, again and again.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use kvslib::{Config, KvClient, Op};

use super::kvraft_target::Started;
use crate::local;

pub async fn failover(tries: u32, servers: u64, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut s = Started::new(dir, servers, false).await?;
    let coord = s.layout.coord_client.clone();
    let mut cfg = Config::new(format!("failover-{}", std::process::id()), coord.clone());
    cfg.window = 1;
    cfg.secret = s.layout.secret.clone();
    cfg.op_timeout = Duration::from_secs(20);
    let (client, _r) = KvClient::start(cfg).map_err(|e| anyhow!("{e}"))?;
    let mut times = Vec::new();
    for t in 1..=tries {
        client.execute(Op::Put { key: "warm".into(), value: t.to_string() }).await.map_err(|e| anyhow!("{e}"))?;
        let leader = local::leader(&coord, &s.layout.secret, Duration::from_secs(10)).await?.leader_id;
        let child = s.children.iter_mut().find(|(id, _)| *id == leader).and_then(|(_, c)| c.as_mut());
        let child = child.ok_or_else(|| anyhow!("leader {leader} is not one of ours"))?;
        let killed = Instant::now();
        let _ = child.kill();
        let _ = child.wait();
        client.execute(Op::Put { key: "after".into(), value: t.to_string() }).await.map_err(|e| anyhow!("{e}"))?;
        let took = killed.elapsed();
        times.push(took);
        eprintln!("try {t:>2}: leader {leader} killed; a write committed at the next leader after {took:.1?}");
        // Bring it back, and wait until it caught up, before the next try.
        let restarted = s.layout.start_server(leader, false)?;
        if let Some(slot) = s.children.iter_mut().find(|(id, _)| *id == leader) {
            slot.1 = Some(restarted);
        }
        let addr = s.layout.server(leader)?.client.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = local::server_status(&addr, &s.layout.secret).await;
            let l = local::leader(&coord, &s.layout.secret, Duration::from_secs(1)).await?;
            let ls = match s.layout.server(l.leader_id) {
                Ok(leader) => local::server_status(&leader.client, &s.layout.secret).await,
                Err(e) => Err(e),
            };
            if let (Ok(st), Ok(ls)) = (st, ls)
                && st.applied_index >= ls.commit_index
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("server {leader} did not catch up after its restart");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    println!(
        "failover over {tries} tries ({servers} servers, HeartbeatMs 25, RttFloorMs 150, LostMsgsThresh 3): median {median:.1?}, worst {worst:.1?}, best {:.1?}",
        times[0]
    );
    Ok(ExitCode::SUCCESS)
}
