//! `/api/v1/cluster`: this node's view of the cluster, and membership changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use openraft::{ChangeMembers, ServerState};
use qron_proto::api::{
    AddNodeRequest, ClusterRetention, ClusterRetentionUpdate, ClusterView, DigestView, MemoryView, NodeRole, NodeView,
};
use qron_raft_store::{Command, NodeId, QronNode, Reply};

use super::apps::ReadParams;
use super::error::{self, ApiError, ApiJson, ApiPath, ApiQuery};
use super::idempotency::Idem;
use super::state::ApiState;
use crate::discovery;

/// `GET /api/v1/cluster`: answered locally by whichever node is asked.
pub async fn view(State(app): State<Arc<ApiState>>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster_view(&app).await?))
}

pub async fn cluster_view(app: &ApiState) -> Result<ClusterView, ApiError> {
    let m = app.ctx.raft.metrics().borrow().clone();
    let commit_index = app
        .ctx
        .raft
        .with_raft_state(|s| s.committed.map(|l| l.index))
        .await
        .map_err(|e| ApiError::Unavailable(format!("raft is stopped: {e}")))?;
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let nodes = membership
        .nodes()
        .map(|(id, node)| {
            let me = *id == app.ctx.id;
            NodeView {
                id: *id,
                grpc_addr: node.grpc_addr.clone(),
                http_addr: if me {
                    Some(app.ctx.http_addr().to_owned())
                } else {
                    app.ctx.peers.http_addr(*id)
                },
                role: if voters.contains(id) {
                    NodeRole::Voter
                } else {
                    NodeRole::Learner
                },
                reachable: me || app.ctx.peers.reachable(*id),
            }
        })
        .collect();
    let role = app.ctx.role();
    let leader_id = role.leader_id(app.ctx.id);
    let state = match m.state {
        // A leader past its lease is not reported as leading (rule 8, docs/rules.md).
        ServerState::Leader if !role.is_leader() => "leader_without_quorum",
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    Ok(ClusterView {
        node_id: app.ctx.id,
        state: state.to_owned(),
        leader_id,
        term: m.current_term,
        last_log_index: m.last_log_index,
        commit_index,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        nodes,
        memory: app.ctx.state.storage_memory().map(|s| MemoryView {
            rss_bytes: own_rss(),
            block_cache_bytes: s.block_cache_bytes,
            memtable_bytes: s.memtable_bytes,
        }),
    })
}

/// This process's resident set (`VmRSS` in `/proc/self/status`), on Linux.
fn own_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `POST /api/v1/cluster/nodes`: add as learner, wait for it to catch up, then promote.
pub async fn add_node(
    State(app): State<Arc<ApiState>>,
    ApiJson(req): ApiJson<AddNodeRequest>,
) -> Result<Json<ClusterView>, ApiError> {
    if req.id == 0 {
        return Err(ApiError::BadRequest("node id must be positive".into()));
    }
    if req
        .grpc_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "grpc_addr {:?} is not HOST:PORT",
            req.grpc_addr
        )));
    }
    let (exists, is_voter) = {
        let m = app.ctx.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        (mem.get_node(&req.id).cloned(), mem.voter_ids().any(|v| v == req.id))
    };
    if is_voter {
        return Err(ApiError::Conflict(format!("node {} is already a voter", req.id)));
    }
    if let Some(node) = &exists {
        if node.grpc_addr != req.grpc_addr {
            return Err(ApiError::Conflict(format!(
                "node {} is already a member at {}",
                req.id, node.grpc_addr
            )));
        }
    }
    let hint = |id, n: Option<&QronNode>| discovery::hint(&app.ctx, id, n);
    tracing::info!(node = req.id, addr = %req.grpc_addr, "adding node as learner");
    app.ctx
        .raft
        .add_learner(
            req.id,
            QronNode {
                grpc_addr: req.grpc_addr.clone(),
            },
            true,
        )
        .await
        .map_err(|e| error::from_write_error(e, hint))?;
    if !req.learner_only {
        tracing::info!(node = req.id, "learner caught up; promoting to voter");
        app.ctx
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
            .await
            .map_err(|e| error::from_write_error(e, hint))?;
    }
    Ok(Json(cluster_view(&app).await?))
}

/// `DELETE /api/v1/cluster/nodes/{id}`.
pub async fn remove_node(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<ClusterView>, ApiError> {
    let (known, is_voter, voters) = {
        let m = app.ctx.raft.metrics().borrow().clone();
        let mem = m.membership_config.membership();
        (
            mem.get_node(&id).is_some(),
            mem.voter_ids().any(|v| v == id),
            mem.voter_ids().count(),
        )
    };
    if !known {
        return Err(ApiError::NotFound(format!("node {id} is not a member")));
    }
    if is_voter && voters == 1 {
        return Err(ApiError::BadRequest(format!(
            "node {id} is the last voter; it cannot be removed"
        )));
    }
    let hint = |id, n: Option<&QronNode>| discovery::hint(&app.ctx, id, n);
    tracing::info!(node = id, "removing node");
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    // retain = false: a removed voter does not stay on as a learner.
    app.ctx
        .raft
        .change_membership(change, false)
        .await
        .map_err(|e| error::from_write_error(e, hint))?;
    Ok(Json(cluster_view(&app).await?))
}

/// `GET /api/v1/debug/digest`: hash of this node's applied state (rule 10, docs/rules.md).
pub async fn digest(State(app): State<Arc<ApiState>>) -> Json<DigestView> {
    let s = app.ctx.state.read();
    Json(DigestView {
        node_id: app.ctx.id,
        applied_index: s.last_applied().map(|l| l.index),
        digest: s.digest(),
    })
}

/// `GET /api/v1/cluster/retention`: the cluster's retention (rule 12).
pub async fn retention(
    State(app): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Json<ClusterRetention>, ApiError> {
    app.read_barrier(q.stale).await?;
    let view = app.ctx.state.read().retention().view();
    Ok(Json(view))
}

/// `PUT /api/v1/cluster/retention`: the fields given change, the others stay.
pub async fn set_retention(
    State(app): State<Arc<ApiState>>,
    key: Idem,
    ApiJson(u): ApiJson<ClusterRetentionUpdate>,
) -> Result<Json<ClusterRetention>, ApiError> {
    qron_raft_store::retention::validate_cluster(u.max_age_ms, u.max_count, u.max_log_bytes)
        .map_err(ApiError::BadRequest)?;
    let cmd = Command::SetClusterRetention {
        max_age_ms: u.max_age_ms,
        max_count: u.max_count,
        max_log_bytes: u.max_log_bytes,
    };
    match app.propose(&key, cmd).await? {
        Reply::ClusterRetention(r) => Ok(Json(r.view())),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}
