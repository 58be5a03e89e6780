//! What this node knows about its peers beyond the membership: their HTTP
//! addresses (learned from them over gRPC, so they are configured once) and
//! whether they answered recently.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qron_raft_store::NodeId;

/// A peer counts as reachable if it answered an RPC within this window.
pub const REACHABLE_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Clone)]
struct Peer {
    http_addr: Option<String>,
    last_ok: Option<Instant>,
}

/// Shared, thread-safe peer table.
#[derive(Debug, Default)]
pub struct Peers {
    inner: Mutex<HashMap<NodeId, Peer>>,
}

impl Peers {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<NodeId, Peer>) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Records a successful exchange with `id`.
    pub fn mark_ok(&self, id: NodeId) {
        self.with(|m| m.entry(id).or_default().last_ok = Some(Instant::now()));
    }

    /// Records `id`'s HTTP address as it reported it.
    pub fn set_http(&self, id: NodeId, http: String) {
        self.with(|m| m.entry(id).or_default().http_addr = Some(http));
    }

    pub fn http_addr(&self, id: NodeId) -> Option<String> {
        self.with(|m| m.get(&id).and_then(|p| p.http_addr.clone()))
    }

    pub fn reachable(&self, id: NodeId) -> bool {
        self.with(|m| {
            m.get(&id)
                .and_then(|p| p.last_ok)
                .is_some_and(|t| t.elapsed() < REACHABLE_WITHIN)
        })
    }
}
