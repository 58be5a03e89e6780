//! `qron-server` configuration: flags, `QRON_*` environment variables and an
//! optional TOML file, in that order of precedence, validated at start with
//! messages that name the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

/// A qron server node: one member of a Raft cluster that replicates apps and
/// jobs, fires their schedules and dispatches instances to workers.
///
/// Start three nodes with the same --initial-cluster, in any order, and they form
/// one cluster. Restart a node with its --data-dir and it rejoins with its state.
/// A node started without --initial-cluster waits until a member adds it with
/// `qronctl cluster add-node` (POST /api/v1/cluster/nodes).
///
/// Every flag can also be set as the environment variable shown, or as a key of
/// the TOML file given with --config (keys are the flag names with `_`, e.g.
/// `node_id = 1`). Flags win over the environment, which wins over the file.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(name = "qron-server", version, about, long_about)]
#[serde(default, deny_unknown_fields)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "QRON_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// This node's Raft id: a positive integer, unique in the cluster and stable across restarts.
    #[arg(long, env = "QRON_NODE_ID")]
    pub node_id: Option<u64>,

    /// Address the HTTP API (and console) listens on [default: 127.0.0.1:7700].
    #[arg(long, env = "QRON_HTTP")]
    pub http: Option<SocketAddr>,

    /// Address the gRPC port (Raft between servers, workers) listens on [default: 127.0.0.1:7701].
    #[arg(long, env = "QRON_GRPC")]
    pub grpc: Option<SocketAddr>,

    /// gRPC address other nodes use to reach this one, when it differs from --grpc
    /// (e.g. listening on 0.0.0.0 in a container) [default: --grpc].
    #[arg(long, env = "QRON_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,

    /// HTTP address clients are pointed to (leader hints) [default: --http].
    #[arg(long, env = "QRON_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,

    /// Directory for the Raft log, votes and snapshots; created if missing.
    #[arg(long, env = "QRON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// The founding members, as `ID=HOST:GRPC_PORT` pairs separated by commas,
    /// identical on every founding node. Leave it out on a node that will be added later.
    #[arg(long, env = "QRON_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Raft heartbeat interval in milliseconds [default: 100].
    #[arg(long, env = "QRON_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,

    /// Lower bound of the randomized election timeout in milliseconds [default: 300].
    #[arg(long, env = "QRON_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,

    /// Upper bound of the election timeout in milliseconds; also the leader lease [default: 500].
    #[arg(long, env = "QRON_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,

    /// Build a snapshot after this many log entries since the last one [default: 10000].
    #[arg(long, env = "QRON_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,

    /// Log entries kept behind the last snapshot for lagging followers [default: 1000].
    #[arg(long, env = "QRON_LOGS_KEPT")]
    pub logs_kept: Option<u64>,

    /// Purge the log in batches of at least this many entries [default: 256].
    #[arg(long, env = "QRON_PURGE_BATCH")]
    pub purge_batch: Option<u64>,

    /// A worker silent for this long is dead and its instances are retried elsewhere
    /// [default: 5000]. Workers run under a lease of 3/5 of it (they kill their
    /// attempts when no leader answered them for that long); the rest is the margin.
    #[arg(long, env = "QRON_WORKER_TIMEOUT_MS")]
    pub worker_timeout_ms: Option<u64>,

    /// After a leader change, how long the new leader waits for workers to reconnect
    /// before it declares any assigned instance lost; keep it above the workers'
    /// failover time and at least --worker-timeout-ms [default: 5000].
    #[arg(long, env = "QRON_FAILOVER_GRACE_MS")]
    pub failover_grace_ms: Option<u64>,

    /// Heartbeat interval asked of workers, in milliseconds [default: 500].
    #[arg(long, env = "QRON_WORKER_HEARTBEAT_MS")]
    pub worker_heartbeat_ms: Option<u64>,

    /// Cap of one instance's log in bytes; output past it is dropped and the log marked [default: 1048576].
    #[arg(long, env = "QRON_MAX_LOG_BYTES")]
    pub max_log_bytes: Option<u64>,

    /// Scheduled fires due within this many milliseconds are committed and sent to
    /// workers ahead of time; workers start them on the dot [default: 500].
    #[arg(long, env = "QRON_FIRE_HORIZON_MS")]
    pub fire_horizon_ms: Option<u64>,

    /// A fire found this many milliseconds past its time (the cluster was down or
    /// leaderless) is a misfire and the job's misfire policy applies; later ones
    /// just run late [default: 5000].
    #[arg(long, env = "QRON_MISFIRE_THRESHOLD_MS")]
    pub misfire_threshold_ms: Option<u64>,

    /// TEST ONLY, breaks exactly-once: send each dispatch before its assignment is
    /// committed, to a worker the committed assignment does not name. Exists so
    /// that the chaos checker can be shown to fail; refused unless
    /// QRON_ALLOW_UNSAFE_TEST_MODES=1 is set.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub unsafe_test_dispatch_before_commit: bool,

    /// TEST ONLY: the leader's scheduler task panics at its first N starts in this
    /// process, to show that a failed leader task is restarted once and that a
    /// second failure within a minute stops the node. Refused unless
    /// QRON_ALLOW_UNSAFE_TEST_MODES=1 is set.
    #[arg(long, hide = true, value_name = "N")]
    #[serde(skip)]
    pub unsafe_test_fail_scheduler: Option<u32>,

    /// TEST ONLY: a stopped attempt counts as ended at once (the stop is sent once
    /// and not reconciled), so a retry may start beside it: breaks rule 11 on purpose,
    /// for the chaos checker's own test. Refused unless QRON_ALLOW_UNSAFE_TEST_MODES=1.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub unsafe_test_unconfirmed_stops: bool,

    /// TEST ONLY: as leader, run the first N writes forwarded to this node and,
    /// when they succeed, hold their answers back for 5 s, as if each answer
    /// were lost after its commit: shows that the forwarding node sends the
    /// write again under the same idempotency key. Refused unless
    /// QRON_ALLOW_UNSAFE_TEST_MODES=1 is set.
    #[arg(long, hide = true, value_name = "N")]
    #[serde(skip)]
    pub unsafe_test_hold_forward_answers: Option<u32>,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `qron_server=debug` [default: info].
    #[arg(long, env = "QRON_LOG")]
    pub log: Option<String>,
}

/// The validated configuration a node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: u64,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub advertise_grpc: String,
    pub advertise_http: String,
    pub data_dir: PathBuf,
    pub initial_cluster: BTreeMap<u64, String>,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub snapshot_logs: u64,
    pub logs_kept: u64,
    pub purge_batch: u64,
    pub worker_timeout: Duration,
    pub failover_grace: Duration,
    pub worker_heartbeat: Duration,
    pub max_log_bytes: u64,
    pub fire_horizon: Duration,
    pub misfire_threshold: Duration,
    pub unsafe_dispatch_before_commit: bool,
    pub unsafe_unconfirmed_stops: bool,
    /// TEST ONLY: scheduler starts that panic (see the flag).
    pub unsafe_fail_scheduler: u32,
    /// TEST ONLY: forwarded writes whose answers are held back (see the flag).
    pub unsafe_hold_forward_answers: u32,
    pub log: String,
}

macro_rules! merge {
    ($cli:ident, $file:ident, $($field:ident),*) => {
        Args {
            config: $cli.config.clone(),
            unsafe_test_dispatch_before_commit: $cli.unsafe_test_dispatch_before_commit,
            unsafe_test_fail_scheduler: $cli.unsafe_test_fail_scheduler,
            unsafe_test_unconfirmed_stops: $cli.unsafe_test_unconfirmed_stops,
            unsafe_test_hold_forward_answers: $cli.unsafe_test_hold_forward_answers,
            $($field: $cli.$field.or($file.$field),)*
        }
    };
}

impl Args {
    /// Fills what the flags and environment left unset from the TOML file.
    pub fn with_file(self) -> anyhow::Result<Args> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--config: cannot read {}", path.display()))?;
        let file: Args = toml::from_str(&text).with_context(|| format!("--config: {} is not valid", path.display()))?;
        let cli = self;
        Ok(merge!(
            cli,
            file,
            node_id,
            http,
            grpc,
            advertise_grpc,
            advertise_http,
            data_dir,
            initial_cluster,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_logs,
            logs_kept,
            purge_batch,
            worker_timeout_ms,
            failover_grace_ms,
            worker_heartbeat_ms,
            max_log_bytes,
            fire_horizon_ms,
            misfire_threshold_ms,
            log
        ))
    }

    /// Checks the settings and applies defaults.
    pub fn validate(self) -> anyhow::Result<Config> {
        let Some(node_id) = self.node_id else {
            bail!("--node-id (QRON_NODE_ID) is required: a positive integer unique in the cluster");
        };
        if node_id == 0 {
            bail!("--node-id must be positive, got 0");
        }
        let Some(data_dir) = self.data_dir else {
            bail!("--data-dir (QRON_DATA_DIR) is required: where this node keeps its Raft log and snapshots");
        };
        let http = self.http.unwrap_or_else(|| ([127, 0, 0, 1], 7700).into());
        let grpc = self.grpc.unwrap_or_else(|| ([127, 0, 0, 1], 7701).into());
        if http == grpc {
            bail!("--http and --grpc must be different addresses, both are {http}");
        }
        let advertise_grpc = self.advertise_grpc.unwrap_or_else(|| grpc.to_string());
        let advertise_http = self.advertise_http.unwrap_or_else(|| http.to_string());
        let initial_cluster = match &self.initial_cluster {
            None => BTreeMap::new(),
            Some(text) => parse_initial_cluster(text)?,
        };
        if !initial_cluster.is_empty() {
            match initial_cluster.get(&node_id) {
                None => bail!("--initial-cluster does not name this node (--node-id {node_id})"),
                Some(addr) if *addr != advertise_grpc => bail!(
                    "--initial-cluster gives node {node_id} the address {addr}, but this node's gRPC \
                     address is {advertise_grpc} (set --advertise-grpc if they differ on purpose)"
                ),
                Some(_) => {}
            }
        }
        let heartbeat = self.heartbeat_ms.unwrap_or(100);
        let emin = self.election_timeout_min_ms.unwrap_or(300);
        let emax = self.election_timeout_max_ms.unwrap_or(500);
        if heartbeat == 0 || heartbeat >= emin {
            bail!("--heartbeat-ms ({heartbeat}) must be positive and below --election-timeout-min-ms ({emin})");
        }
        if emin >= emax {
            bail!("--election-timeout-min-ms ({emin}) must be below --election-timeout-max-ms ({emax})");
        }
        let worker_heartbeat = self.worker_heartbeat_ms.unwrap_or(500);
        let worker_timeout = self.worker_timeout_ms.unwrap_or(5_000);
        if worker_heartbeat == 0 || worker_timeout <= worker_heartbeat {
            bail!(
                "--worker-timeout-ms ({worker_timeout}) must exceed --worker-heartbeat-ms ({worker_heartbeat}), which must be positive"
            );
        }
        let failover_grace = self.failover_grace_ms.unwrap_or(5_000);
        if failover_grace < worker_timeout {
            // A worker cut off from the new leader must have killed its attempts (its
            // lease is 3/5 of the worker timeout) before that leader may retry them.
            bail!(
                "--failover-grace-ms ({failover_grace}) must be at least --worker-timeout-ms ({worker_timeout}): see rule 11 in docs/rules.md"
            );
        }
        let unsafe_allowed = std::env::var("QRON_ALLOW_UNSAFE_TEST_MODES").as_deref() == Ok("1");
        if self.unsafe_test_dispatch_before_commit && !unsafe_allowed {
            bail!(
                "--unsafe-test-dispatch-before-commit breaks exactly-once and is for the chaos checker's own test only"
            );
        }
        if self.unsafe_test_unconfirmed_stops && !unsafe_allowed {
            bail!("--unsafe-test-unconfirmed-stops lets a retry run beside its stopped attempt and is for tests only");
        }
        if self.unsafe_test_fail_scheduler.is_some() && !unsafe_allowed {
            bail!("--unsafe-test-fail-scheduler makes the leader's scheduler panic and is for tests only");
        }
        if self.unsafe_test_hold_forward_answers.is_some() && !unsafe_allowed {
            bail!("--unsafe-test-hold-forward-answers delays answers on purpose and is for tests only");
        }
        let snapshot_logs = self.snapshot_logs.unwrap_or(10_000);
        if snapshot_logs == 0 {
            bail!("--snapshot-logs must be at least 1");
        }
        Ok(Config {
            node_id,
            http,
            grpc,
            advertise_grpc,
            advertise_http,
            data_dir,
            initial_cluster,
            heartbeat: Duration::from_millis(heartbeat),
            election_timeout_min: Duration::from_millis(emin),
            election_timeout_max: Duration::from_millis(emax),
            snapshot_logs,
            logs_kept: self.logs_kept.unwrap_or(1_000),
            purge_batch: self.purge_batch.unwrap_or(256).max(1),
            worker_timeout: Duration::from_millis(worker_timeout),
            failover_grace: Duration::from_millis(failover_grace),
            worker_heartbeat: Duration::from_millis(worker_heartbeat),
            max_log_bytes: self.max_log_bytes.unwrap_or(1024 * 1024),
            fire_horizon: Duration::from_millis(self.fire_horizon_ms.unwrap_or(500)),
            misfire_threshold: Duration::from_millis(self.misfire_threshold_ms.unwrap_or(5_000)),
            unsafe_dispatch_before_commit: self.unsafe_test_dispatch_before_commit,
            unsafe_unconfirmed_stops: self.unsafe_test_unconfirmed_stops,
            unsafe_fail_scheduler: self.unsafe_test_fail_scheduler.unwrap_or(0),
            unsafe_hold_forward_answers: self.unsafe_test_hold_forward_answers.unwrap_or(0),
            log: self.log.unwrap_or_else(|| "info".to_owned()),
        })
    }
}

/// Parses `1=127.0.0.1:7701,2=127.0.0.1:7711`.
pub fn parse_initial_cluster(text: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            bail!("--initial-cluster: {part:?} is not ID=HOST:PORT");
        };
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster: node id {id:?} is not a positive integer"))?;
        let addr = addr.trim();
        if id == 0 {
            bail!("--initial-cluster: node ids must be positive");
        }
        if addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            bail!("--initial-cluster: address {addr:?} of node {id} is not HOST:PORT");
        }
        if out.insert(id, addr.to_owned()).is_some() {
            bail!("--initial-cluster names node {id} twice");
        }
    }
    if out.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("qron-server").chain(list.iter().copied())).expect("flags parse")
    }

    #[test]
    fn initial_cluster_parses_and_checks() {
        let m = parse_initial_cluster("1=127.0.0.1:7701, 2=127.0.0.1:7711").expect("parses");
        assert_eq!(m.get(&2).map(String::as_str), Some("127.0.0.1:7711"));
        assert!(parse_initial_cluster("1=a:1,1=b:2")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse_initial_cluster("x=a:1").is_err());
        assert!(parse_initial_cluster("1=nohost").is_err());
    }

    #[test]
    fn missing_node_id_names_the_flag() {
        let err = args(&["--data-dir", "/tmp/x"]).validate().unwrap_err().to_string();
        assert!(err.contains("--node-id"), "{err}");
    }

    #[test]
    fn node_must_be_in_initial_cluster_with_its_address() {
        let err = args(&[
            "--node-id",
            "3",
            "--data-dir",
            "/tmp/x",
            "--grpc",
            "127.0.0.1:7701",
            "--initial-cluster",
            "1=127.0.0.1:7701,2=127.0.0.1:7711",
        ])
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not name this node"), "{err}");
        let err = args(&[
            "--node-id",
            "2",
            "--data-dir",
            "/tmp/x",
            "--grpc",
            "127.0.0.1:7701",
            "--initial-cluster",
            "1=127.0.0.1:7701,2=127.0.0.1:7711",
        ])
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--advertise-grpc"), "{err}");
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("qron.toml");
        std::fs::write(&path, "node_id = 7\ndata_dir = \"/from/file\"\nheartbeat_ms = 50\n").expect("write");
        let cfg = args(&["--config", path.to_str().expect("utf8"), "--node-id", "2"])
            .with_file()
            .expect("file loads")
            .validate()
            .expect("valid");
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.heartbeat, Duration::from_millis(50));
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("qron.toml");
        std::fs::write(&path, "node_idd = 7\n").expect("write");
        let err = args(&["--config", path.to_str().expect("utf8")])
            .with_file()
            .unwrap_err();
        assert!(format!("{err:#}").contains("node_idd"), "{err:#}");
    }
}
