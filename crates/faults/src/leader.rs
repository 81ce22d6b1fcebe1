//! Who leads now, as seen from the harness's post (a namespace no partition
//! touches). Asked of the coord first, as clients do; when the coord does
//! not answer (killed, paused) the servers' own status decides: the
//! highest-term server that says it leads.
//!
//! Every call is bounded: the nemesis must never hang on a paused process.

use std::time::Duration;

use kvraft_proto as pb;
use tonic::transport::{Channel, Endpoint};

use crate::layout::{Layout, Port};

/// A channel to `addr`, or `None` within about `within`.
pub async fn connect(addr: &str, within: Duration) -> Option<Channel> {
    let e = Endpoint::from_shared(format!("http://{addr}")).ok()?.connect_timeout(within).timeout(within);
    tokio::time::timeout(within, e.connect()).await.ok()?.ok()
}

/// The coord's answer: the leader's id, if it names one.
pub async fn from_coord(layout: &Layout) -> Option<u64> {
    let within = Duration::from_millis(500);
    let ch = connect(&layout.coord_client_addr(), within).await?;
    let mut c = pb::coord_client_client::CoordClientClient::new(ch);
    let req = pb::LeaderRequest { wait_ms: 0, client_id: String::new(), trace: vec![] };
    let info = tokio::time::timeout(within, c.get_leader(req)).await.ok()?.ok()?.into_inner();
    (info.leader_id != 0).then_some(info.leader_id)
}

/// One server's own status, if it answers within half a second.
pub async fn status(layout: &Layout, id: u64) -> Option<pb::StatusReply> {
    let within = Duration::from_millis(500);
    let mut a = admin(layout, id, within).await?;
    Some(tokio::time::timeout(within, a.status(pb::StatusRequest {})).await.ok()?.ok()?.into_inner())
}

/// Server `id`'s Admin service, if it answers within `within`.
pub async fn admin(layout: &Layout, id: u64, within: Duration) -> Option<pb::admin_client::AdminClient<Channel>> {
    Some(pb::admin_client::AdminClient::new(connect(&layout.server_addr(id, Port::Client), within).await?))
}

/// The servers' view: the highest-term server that says it leads.
/// Asked of all servers at once, so one paused server costs one timeout.
pub async fn from_servers(layout: &Layout) -> Option<u64> {
    let mut asks = tokio::task::JoinSet::new();
    for id in layout.server_ids() {
        let layout = layout.clone();
        asks.spawn(async move { (id, status(&layout, id).await) });
    }
    let mut best: Option<(u64, u64)> = None;
    while let Some(Ok((id, s))) = asks.join_next().await {
        if let Some(s) = s
            && s.role == "leader"
            && best.is_none_or(|(term, lead)| s.term > term || (s.term == term && id < lead))
        {
            best = Some((s.term, id));
        }
    }
    best.map(|(_, id)| id)
}

/// The leader now: the coord's answer, else the servers'.
pub async fn current(layout: &Layout) -> Option<u64> {
    match from_coord(layout).await {
        Some(id) => Some(id),
        None => from_servers(layout).await,
    }
}

/// The coord's and every server's view of leadership, one line each: what
/// the harness records when the cluster does not recover.
pub async fn describe(layout: &Layout) -> Vec<String> {
    let within = Duration::from_millis(500);
    let mut lines = Vec::new();
    let coord = async {
        let ch = connect(&layout.coord_client_addr(), within).await?;
        let mut c = pb::coord_client_client::CoordClientClient::new(ch);
        let req = pb::LeaderRequest { wait_ms: 0, client_id: String::new(), trace: vec![] };
        Some(tokio::time::timeout(within, c.get_leader(req)).await.ok()?.ok()?.into_inner())
    };
    lines.push(match coord.await {
        Some(i) => format!(
            "coord: leader={} term={} quorum_impossible={} ({})",
            i.leader_id, i.term, i.quorum_impossible, i.status
        ),
        None => "coord: no answer".into(),
    });
    for id in layout.server_ids() {
        lines.push(match status(layout, id).await {
            Some(s) => format!(
                "server {id}: role={} term={} leader={} commit={} applied={} last={} snapshot={}",
                s.role, s.term, s.leader_id, s.commit_index, s.applied_index, s.last_log_index, s.snapshot_index
            ),
            None => format!("server {id}: no answer"),
        });
    }
    lines
}
