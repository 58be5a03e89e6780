//! The agent's settings, with the defaults that make failover fast.
//!
//! This module owns defaults and validation only; it never reads flags (the binary
//! does) and never touches the network.

use std::time::Duration;

use crate::error::AgentError;
use crate::ids::WorkerId;

/// Everything the agent needs to find its cluster and run instances.
#[derive(Clone)]
pub struct AgentConfig {
    /// gRPC addresses (`host:port`) of any servers of the cluster; the agent asks them
    /// who leads and connects to the leader itself.
    pub seeds: Vec<String>,
    /// The app this worker serves.
    pub app: String,
    /// The app's secret, presented at registration.
    pub secret: String,
    /// Stable name of this worker, unique among live workers (default `hostname:pid`).
    pub worker_id: WorkerId,
    /// Tags the server's worker filters match against.
    pub tags: Vec<String>,
    /// Instances run at once; more are queued locally.
    pub max_concurrency: u32,
    /// How often a heartbeat (load, running instances) is sent.
    pub heartbeat_interval: Duration,
    /// How often a ping is sent to detect a dead leader.
    pub ping_interval: Duration,
    /// Silence from the leader longer than this drops the stream and re-acquires the
    /// leader. Kept well under 2 s so a failover completes within the server's grace.
    pub ping_timeout: Duration,
    /// Timeout of one TCP/HTTP2 connect and of one `Acquire` call.
    pub connect_timeout: Duration,
    /// First pause after a failed attempt to reach a leader; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest pause between attempts to reach a leader.
    pub backoff_max: Duration,
    /// Logs of a running instance are sent at least this often.
    pub log_batch_interval: Duration,
    /// A log batch is sent early once this many bytes are buffered; no batch is larger.
    pub log_batch_max_bytes: usize,
    /// Past this many bytes of log for one attempt, further lines are dropped (marked).
    pub log_max_bytes_per_attempt: u64,
    /// After a stop or a timeout, how long a processor gets to wind down before its
    /// result is reported without it.
    pub cancel_grace: Duration,
    /// On shutdown, how long running instances may go on before they are cancelled.
    pub shutdown_grace: Duration,
    /// On shutdown, how long the agent waits for its last reports to be acknowledged.
    pub final_flush: Duration,
    /// Where the worker records its running process groups, so that a restart kills
    /// what a crashed process left. `None`: `/var/tmp/qron-worker/<app>/<worker id>`
    /// (the base can be moved with `QRON_WORKER_STATE_BASE`).
    pub state_dir: Option<std::path::PathBuf>,
    /// TEST ONLY: no lease (attempts run on however long no leader answers). Breaks
    /// rule 11 on purpose, for the chaos checker's own test.
    #[doc(hidden)]
    pub unsafe_no_lease: bool,
    /// TEST ONLY: scripts run as before the process-group guards (no watcher, no
    /// record, no kill of what they leave). Breaks rule 11 on purpose.
    #[doc(hidden)]
    pub unsafe_orphan_scripts: bool,
}

impl AgentConfig {
    /// Settings for `app` with the default timings and `worker_id` = `hostname:pid`.
    pub fn new(seeds: Vec<String>, app: impl Into<String>, secret: impl Into<String>) -> Self {
        AgentConfig {
            seeds,
            app: app.into(),
            secret: secret.into(),
            worker_id: default_worker_id(),
            tags: Vec::new(),
            max_concurrency: 8,
            heartbeat_interval: Duration::from_millis(500),
            ping_interval: Duration::from_millis(250),
            ping_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            log_batch_interval: Duration::from_millis(100),
            log_batch_max_bytes: 64 * 1024,
            log_max_bytes_per_attempt: 16 * 1024 * 1024,
            cancel_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            final_flush: Duration::from_secs(2),
            state_dir: None,
            unsafe_no_lease: false,
            unsafe_orphan_scripts: false,
        }
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |msg: String| Err(AgentError::Config(msg));
        if self.seeds.iter().all(|s| s.trim().is_empty()) {
            return bad("seeds: give at least one server gRPC address (host:port)".into());
        }
        if self.app.trim().is_empty() {
            return bad("app: must not be empty".into());
        }
        if self.worker_id.as_str().trim().is_empty() {
            return bad("worker_id: must not be empty".into());
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency: must be at least 1".into());
        }
        // tokio intervals panic on a zero period, so refuse zeros here with a clear message.
        for (name, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
            ("log_batch_interval", self.log_batch_interval),
        ] {
            if d.is_zero() {
                return bad(format!("{name}: must be greater than zero"));
            }
        }
        if self.ping_timeout <= self.ping_interval {
            return bad(format!(
                "ping_timeout ({:?}) must be longer than ping_interval ({:?})",
                self.ping_timeout, self.ping_interval
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return bad("backoff_max: must not be shorter than backoff_initial".into());
        }
        if self.log_batch_max_bytes == 0 || self.log_batch_max_bytes > qron_proto::worker::MAX_LOG_BATCH_BYTES {
            return bad(format!(
                "log_batch_max_bytes: must be between 1 and {} (the servers' limit), got {}",
                qron_proto::worker::MAX_LOG_BATCH_BYTES,
                self.log_batch_max_bytes
            ));
        }
        Ok(())
    }
}

// By hand, so that printing a config never prints the app's secret.
impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("seeds", &self.seeds)
            .field("app", &self.app)
            .field("secret", &"<redacted>")
            .field("worker_id", &self.worker_id.as_str())
            .field("tags", &self.tags)
            .field("max_concurrency", &self.max_concurrency)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .finish_non_exhaustive()
    }
}

/// `hostname:pid`, the hostname taken from `$HOSTNAME`, then `/etc/hostname`, else `worker`.
pub fn default_worker_id() -> WorkerId {
    let host = std::env::var("HOSTNAME")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "worker".to_owned());
    WorkerId::new(format!("{host}:{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let cfg = AgentConfig::new(vec!["127.0.0.1:7701".into()], "demo", "top-secret-value");
        cfg.validate().expect("defaults are valid");
        assert!(cfg.ping_timeout < Duration::from_secs(2));
        assert!(cfg.worker_id.as_str().contains(':'));
        assert!(
            !format!("{cfg:?}").contains("top-secret-value"),
            "the secret is not printed"
        );
    }

    #[test]
    fn empty_seeds_are_refused_by_name() {
        let cfg = AgentConfig::new(vec![], "demo", "s");
        let err = cfg.validate().expect_err("no seeds");
        assert!(err.to_string().contains("seeds"), "{err}");
    }

    #[test]
    fn ping_timeout_must_exceed_interval() {
        let mut cfg = AgentConfig::new(vec!["a:1".into()], "demo", "s");
        cfg.ping_timeout = cfg.ping_interval;
        assert!(cfg.validate().is_err());
    }
}
