//! The agent: wires the outbox, the executor and the connection together, and owns
//! the order of shutdown.
//!
//! The executor and the connection are independent on purpose: instances keep running
//! while the connection fails over, and the connection keeps delivering reports while
//! the executor drains. This module never runs an instance or opens a connection
//! itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::connection::{incarnation, Connection, ConnectionState};
use crate::error::AgentError;
use crate::executor::{Env, Executor, ProcessorMap};
use crate::groups::{default_state_dir, StateDir};
use crate::lease::Lease;
use crate::outbox::SharedOutbox;
use crate::processor::Processor;

/// A worker agent: build it from an [`AgentConfig`], register any custom processors,
/// then [`run`](Agent::run) it until shutdown.
pub struct Agent {
    cfg: AgentConfig,
    processors: ProcessorMap,
    state: watch::Sender<ConnectionState>,
}

impl Agent {
    /// An agent with these settings (checked when it runs) and no custom processors.
    pub fn new(cfg: AgentConfig) -> Self {
        let (state, _) = watch::channel(ConnectionState::Searching);
        Agent {
            cfg,
            processors: HashMap::new(),
            state,
        }
    }

    /// The settings the agent runs with.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Runs `Custom { name }` processors of this app's jobs with `p`; a later
    /// registration under the same name replaces an earlier one.
    pub fn register_processor(&mut self, name: impl Into<String>, p: impl Processor) {
        self.processors.insert(name.into(), Arc::new(p));
    }

    /// [`register_processor`](Agent::register_processor), builder style.
    pub fn with_processor(mut self, name: impl Into<String>, p: impl Processor) -> Self {
        self.register_processor(name, p);
        self
    }

    /// Watches whether the agent is registered with a leader, and which.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Runs until `shutdown` fires, then drains: no new dispatches, running instances
    /// get the shutdown grace to finish (then are cancelled), and the last reports get
    /// a short while to be acknowledged.
    ///
    /// Before it registers, it locks its state dir and kills whatever a previous
    /// process of this worker left running there (rule 11, docs/rules.md).
    ///
    /// Returns an error only for an unusable configuration or state dir, or a
    /// registration the leader refused for good (a wrong secret): unreachable servers,
    /// a leader still catching up and an app not created yet are retried for as long
    /// as the agent runs.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        self.cfg.validate()?;
        let cfg = Arc::new(self.cfg);
        let dir_path = cfg
            .state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(&cfg.app, cfg.worker_id.as_str()));
        let state_dir = if cfg.unsafe_orphan_scripts {
            warn!("TEST MODE: scripts are not guarded and outlive this worker (breaks rule 11)");
            None
        } else {
            let dir = Arc::new(StateDir::open(&dir_path)?);
            dir.reap_leftovers().await?;
            Some(dir)
        };
        // Plain HTTP only (no TLS in this build); per-call timeouts are set per request.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(AgentError::HttpClient)?;
        let outbox = Arc::new(SharedOutbox::new());
        let lease = Arc::new(if cfg.unsafe_no_lease {
            warn!("TEST MODE: no lease; attempts run on when no leader answers (breaks rule 11)");
            Lease::disabled()
        } else {
            Lease::default()
        });
        let env = Env {
            http,
            outbox: outbox.clone(),
            lease: lease.clone(),
            state_dir: state_dir.clone(),
            incarnation: incarnation().to_owned(),
        };
        let executor = Executor::new(cfg.clone(), self.processors, env);
        let connection = Connection::new(cfg.clone(), outbox.clone(), executor.clone(), self.state, lease);
        info!(
            worker_id = %cfg.worker_id,
            app = %cfg.app,
            seeds = %cfg.seeds.join(","),
            max_concurrency = cfg.max_concurrency,
            state_dir = %dir_path.display(),
            "worker agent starting"
        );

        let lease_stop = CancellationToken::new();
        // Whatever way this function returns, the lease watch stops with it.
        let _lease_guard = lease_stop.clone().drop_guard();
        tokio::spawn(executor.clone().watch_lease(lease_stop));
        let connection_stop = CancellationToken::new();
        let mut connection_task = tokio::spawn(connection.run(connection_stop.clone()));
        let ended = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = &mut connection_task => Some(r),
        };
        match ended {
            None => {
                info!(
                    active = executor.active(),
                    grace = ?cfg.shutdown_grace,
                    "shutting down: taking no new instances, letting running ones finish"
                );
                executor.drain(cfg.shutdown_grace).await;
                flush(&outbox, cfg.final_flush).await;
                connection_stop.cancel();
                let result = join(connection_task.await);
                info!("worker agent stopped");
                result
            }
            Some(r) => {
                // The connection gave up (a refused registration): nothing can be
                // reported any more, so stop the instances at once.
                executor.drain(Duration::ZERO).await;
                join(r)
            }
        }
    }
}

/// Waits until every report is acknowledged, or `limit` passes.
async fn flush(outbox: &SharedOutbox, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !outbox.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            warn!(
                unacknowledged = outbox.len(),
                "stopping with reports the leader has not acknowledged"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn join(r: Result<Result<(), AgentError>, tokio::task::JoinError>) -> Result<(), AgentError> {
    match r {
        Ok(result) => result,
        Err(e) => Err(AgentError::Internal(format!("the connection task died: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_without_any_server_and_stops_on_shutdown() {
        let mut cfg = AgentConfig::new(vec!["127.0.0.1:1".into()], "demo", "s");
        let tmp = tempfile::tempdir().expect("tmp");
        cfg.state_dir = Some(tmp.path().to_owned());
        cfg.shutdown_grace = Duration::from_millis(100);
        cfg.final_flush = Duration::from_millis(100);
        let agent = Agent::new(cfg);
        let state = agent.state();
        let shutdown = CancellationToken::new();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            stopper.cancel();
        });
        let started = std::time::Instant::now();
        agent.run(shutdown).await.expect("a clean stop");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(*state.borrow(), ConnectionState::Searching);
        assert!(tmp.path().join("lock").exists(), "the state dir was opened");
    }

    #[tokio::test]
    async fn a_bad_config_is_refused_at_start() {
        let agent = Agent::new(AgentConfig::new(vec![], "demo", "s"));
        let err = agent.run(CancellationToken::new()).await.expect_err("no seeds");
        assert!(matches!(err, AgentError::Config(_)), "{err}");
    }
}
