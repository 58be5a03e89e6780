//! The leader's side of the worker protocol: the registry of live workers
//! ([`registry`]), worker selection ([`select`]), the pure planning of a
//! dispatch round ([`plan`]) and the loop that carries it out ([`dispatcher`]),
//! the messages sent to workers ([`messages`]), one worker stream
//! ([`session`]) and the gRPC `WorkerService` ([`service`]).
//!
//! Nothing here decides leadership: the dispatcher is started and stopped by
//! `leadership.rs`, and streams are accepted only while the published role
//! (`Context::role`) is Leader, and end when it changes.

use std::sync::Mutex;
use std::time::Duration;

use qron_proto::worker::LeaderId;
use qron_raft_store::Instance;
use tokio::sync::{watch, Notify};
use tokio_util::task::TaskTracker;

pub mod dispatcher;
pub mod messages;
pub mod plan;
pub mod registry;
pub mod select;
pub mod service;
pub mod session;

/// Timing and limits of dispatch.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// A worker silent for this long is dead; its instances are retried or failed.
    pub worker_timeout: Duration,
    /// After becoming leader, wait this long for workers to reconnect before
    /// declaring any assigned instance lost or failing one for want of a worker (rule 6, docs/rules.md).
    pub failover_grace: Duration,
    /// How often workers are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// Per-instance log cap in bytes.
    pub max_log_bytes: u64,
    /// Scheduled instances are dispatched this long before their fire time.
    pub horizon: Duration,
    /// TEST ONLY (see the config flag): break rule 2 (docs/rules.md) on purpose.
    pub unsafe_dispatch_before_commit: bool,
    /// TEST ONLY (see the config flag): confirm stops at once, breaking rule 11.
    pub unsafe_unconfirmed_stops: bool,
}

/// Shared by the dispatcher, the worker streams and the API.
pub struct Dispatch {
    pub registry: registry::Registry,
    /// Wakes the dispatcher (new instance, freed slot, new worker).
    pub notify: Notify,
    pub cfg: DispatchConfig,
    /// Every worker stream's task: leadership waits for them when it ends, the node at shutdown.
    pub sessions: TaskTracker,
    /// The leadership whose term's first entry is applied (set by the barrier task in
    /// `leadership.rs`): registrations are checked against the state only then.
    pub ready: watch::Sender<Option<LeaderId>>,
    /// Assignments committed by the scheduler (`Command::FireAssign`) whose
    /// dispatches the dispatcher sends at the start of its next round.
    committed: Mutex<Vec<Instance>>,
}

impl Dispatch {
    pub fn new(cfg: DispatchConfig) -> Self {
        Dispatch {
            registry: registry::Registry::default(),
            notify: Notify::new(),
            cfg,
            sessions: TaskTracker::new(),
            ready: watch::Sender::new(None),
            committed: Mutex::new(Vec::new()),
        }
    }

    /// Hands committed assignments over to the dispatcher, which sends them
    /// (only committed facts leave the leader: rule 2, docs/rules.md) and wakes it.
    pub fn hand_over(&self, assigned: Vec<Instance>) {
        if assigned.is_empty() {
            return;
        }
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(assigned);
        self.wake();
    }

    /// The assignments handed over since the last call.
    pub fn take_committed(&self) -> Vec<Instance> {
        std::mem::take(&mut *self.committed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The lease a worker of this leader runs under: 3/5 of the worker timeout.
    /// The other 2/5 (the margin, rule 11 of docs/rules.md) covers the worker's
    /// lease check interval, the kill, clock rate differences and scheduling delays.
    pub fn worker_lease(&self) -> Duration {
        self.cfg.worker_timeout * 3 / 5
    }

    /// Wakes the dispatcher.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}
