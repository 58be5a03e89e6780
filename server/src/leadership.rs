//! The one place that follows openraft's metrics to start and stop leader-only
//! work (STYLE 7): when this node becomes leader (with a fresh quorum ack) the
//! scheduler and the dispatcher start; when it stops leading, or its quorum ack is older than the
//! lease (rule 8: openraft keeps saying Leader when cut off), the dispatcher
//! stops and every worker stream is told NotLeader.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use qron_proto::worker::LeaderId;
use qron_raft_store::{NodeId, Raft, SharedState};
use tokio_util::sync::CancellationToken;

use crate::dispatch::{dispatcher, Dispatch, Leadership};
use crate::scheduler::{self, SchedulerConfig};

/// Re-checks the lease at least this often (metrics do not change while a cut-off leader waits).
const RECHECK: Duration = Duration::from_millis(50);

/// Waits until this leader's first entry of its term is applied (a linearizable
/// read), so that leader-only work reads state that includes everything committed
/// before it (DESIGN: openraft facts). False if `token` is cancelled first.
pub async fn wait_term_start(raft: &Raft, token: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = token.cancelled() => return false,
            r = raft.ensure_linearizable() => match r {
                Ok(_) => return true,
                Err(e) => {
                    tracing::debug!(error = %e, "waiting for the term's first entry");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

pub async fn watch(
    raft: Raft,
    state: SharedState,
    d: Arc<Dispatch>,
    me: NodeId,
    lease: Duration,
    sched: SchedulerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut rx = raft.metrics();
    let mut current: Option<LeaderId> = None;
    let mut last_seen = None;
    loop {
        let (leading, leader, next) = {
            let m = rx.borrow_and_update();
            let seen = (m.vote.leader_id, m.state, m.current_leader);
            if last_seen != Some(seen) {
                tracing::info!(term = m.current_term, state = ?m.state, leader = ?m.current_leader, "raft role or leader changed");
                last_seen = Some(seen);
            }
            let fresh = m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= lease.as_millis() as u64);
            let leading = m.state == ServerState::Leader && m.current_leader == Some(me) && fresh;
            let lid = m.vote.leader_id();
            let leader = LeaderId {
                term: lid.term,
                node_id: lid.node_id,
            };
            let next = m.current_leader.filter(|id| *id != me).and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| (id, n.grpc_addr.clone()))
            });
            (leading, leader, next)
        };
        if let Some(l) = current {
            if !leading || l != leader {
                tracing::warn!(
                    term = l.term,
                    "stopped leading: dispatcher stopped, workers told NotLeader"
                );
                d.end(next);
                current = None;
            }
        }
        if leading && current.is_none() {
            let token = shutdown.child_token();
            d.begin(Leadership {
                leader,
                token: token.clone(),
            });
            tracing::info!(term = leader.term, "leading: starting the scheduler and the dispatcher");
            tokio::spawn(dispatcher::run(
                raft.clone(),
                state.clone(),
                d.clone(),
                leader,
                token.clone(),
            ));
            tokio::spawn(scheduler::run(
                raft.clone(),
                state.clone(),
                d.clone(),
                sched.clone(),
                token,
            ));
            current = Some(leader);
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                d.end(None);
                return Ok(());
            }
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}
