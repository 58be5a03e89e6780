//! The leader's side of the worker protocol: the registry of live workers
//! ([`registry`]), worker selection ([`select`]), the dispatcher loop that
//! assigns instances and declares lost workers ([`dispatcher`]), and the gRPC
//! `WorkerService` ([`service`]).
//!
//! Everything here acts only while this node leads: [`Dispatch::begin`] and
//! [`Dispatch::end`] are called by the leadership watcher (`crate::leadership`),
//! the one place that follows openraft's metrics (STYLE 7).

use std::sync::Mutex;
use std::time::Duration;

use qron_proto::worker::{server_message, LeaderId, NotLeader, ServerMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod dispatcher;
pub mod registry;
pub mod select;
pub mod service;

/// Timing and limits of dispatch.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// A worker silent for this long is dead; its instances are retried or failed.
    pub worker_timeout: Duration,
    /// After becoming leader, wait this long for workers to reconnect before
    /// declaring any assigned instance lost or failing one for want of a worker (rule 6).
    pub failover_grace: Duration,
    /// How often workers are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// Per-instance log cap in bytes.
    pub max_log_bytes: u64,
    /// Scheduled instances are dispatched this long before their fire time.
    pub horizon: Duration,
    /// TEST ONLY (see the config flag): break rule 2 on purpose.
    pub unsafe_dispatch_before_commit: bool,
}

/// This leadership's identity and its stop signal.
#[derive(Clone)]
pub struct Leadership {
    pub leader: LeaderId,
    pub token: CancellationToken,
}

/// Shared by the dispatcher, the worker streams and the API.
pub struct Dispatch {
    pub registry: registry::Registry,
    /// Wakes the dispatcher (new instance, freed slot, new worker).
    pub notify: Notify,
    pub cfg: DispatchConfig,
    leadership: Mutex<Option<Leadership>>,
}

impl Dispatch {
    pub fn new(cfg: DispatchConfig) -> Self {
        Dispatch {
            registry: registry::Registry::default(),
            notify: Notify::new(),
            cfg,
            leadership: Mutex::new(None),
        }
    }

    /// The current leadership, if this node leads.
    pub fn leadership(&self) -> Option<Leadership> {
        self.leadership.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Called when this node starts leading.
    pub fn begin(&self, l: Leadership) {
        *self.leadership.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
    }

    /// Called when this node stops leading: streams are told NotLeader and forgotten.
    pub fn end(&self, next: Option<(u64, String)>) {
        if let Some(l) = self.leadership.lock().unwrap_or_else(|e| e.into_inner()).take() {
            l.token.cancel();
        }
        self.registry.close_all(not_leader(next));
    }

    /// Wakes the dispatcher.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// A NotLeader message naming `leader` (id, gRPC address) if known.
pub fn not_leader(leader: Option<(u64, String)>) -> ServerMessage {
    let msg = match leader {
        Some((id, grpc)) => NotLeader {
            has_leader: true,
            leader_id: id,
            leader_grpc: grpc,
        },
        None => NotLeader::default(),
    };
    ServerMessage {
        msg: Some(server_message::Msg::NotLeader(msg)),
    }
}
