//! The node handle every subsystem takes: this node's id and configuration,
//! its Raft handle, the applied state, the peer table, and the role the
//! leadership watcher publishes. Nothing below this level knows about the
//! scheduler, the dispatcher or the API; everything above reads leadership
//! from [`Context::role`] and from nowhere else.

use std::sync::Arc;
use std::time::Duration;

use qron_proto::worker::LeaderId;
use qron_raft_store::{NodeId, Raft, SharedState};
use tokio::sync::watch;

use crate::config::Config;
use crate::peers::Peers;
use crate::raft::group::GroupCommit;
use crate::role::Role;

/// One node's shared handle (cheap to clone inside an `Arc`).
pub struct Context {
    /// This node's Raft id.
    pub id: NodeId,
    pub cfg: Arc<Config>,
    pub raft: Raft,
    /// The state as applied on this node.
    pub state: SharedState,
    pub peers: Arc<Peers>,
    /// Client writes, grouped into batches while earlier ones are under way.
    pub writes: GroupCommit,
    role: watch::Receiver<Role>,
}

impl Context {
    pub fn new(
        cfg: Arc<Config>,
        raft: Raft,
        state: SharedState,
        peers: Arc<Peers>,
        role: watch::Receiver<Role>,
    ) -> Self {
        Context {
            id: cfg.node_id,
            cfg,
            writes: GroupCommit::start(raft.clone()),
            raft,
            state,
            peers,
            role,
        }
    }

    /// The role as last published by the leadership watcher.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// A receiver that sees every later role change.
    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The leader lease: `election_timeout_max` (rule 8, docs/rules.md).
    pub fn lease(&self) -> Duration {
        self.cfg.election_timeout_max
    }

    /// The HTTP address this node advertises.
    pub fn http_addr(&self) -> &str {
        &self.cfg.advertise_http
    }
}

/// Resolves once the role is no longer `Leader(leader)` (or the publisher is gone).
pub async fn leadership_lost(rx: &mut watch::Receiver<Role>, leader: LeaderId) {
    let _ = rx.wait_for(|r| *r != Role::Leader(leader)).await;
}
