//! `qron-worker`: runs a worker agent for one app until SIGINT/SIGTERM.
//!
//! Parses flags into an [`AgentConfig`] and calls [`Agent::run`]; nothing else. A
//! refused registration (wrong secret, unknown app) ends the process with status 1.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use qron_worker_agent::{default_worker_id, processor_fn, Agent, AgentConfig, ProcessResult, WorkerId};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// A qron worker: runs the shell scripts, HTTP calls and other processors of one
/// app's jobs, as the cluster's leader dispatches them.
///
/// Give it the gRPC address of any one or more qron servers (--seeds): it asks them
/// which node leads, connects to the leader itself, and follows the leader when it
/// changes. It opens every connection itself, so it needs no listening port and works
/// behind NAT or in a container. It starts even when no server answers yet and keeps
/// trying; instances it is running keep running while it fails over.
///
/// Every flag with an environment variable shown can be set through it instead.
#[derive(Debug, Parser)]
#[command(name = "qron-worker", version, about, long_about)]
struct Args {
    /// gRPC addresses (HOST:PORT) of qron servers, comma separated; any servers of the
    /// cluster will do, the worker finds the leader itself [e.g. 127.0.0.1:7701,127.0.0.1:7711].
    #[arg(long, env = "QRON_SEEDS", value_delimiter = ',', required = true)]
    seeds: Vec<String>,

    /// The app whose jobs this worker runs.
    #[arg(long, env = "QRON_APP")]
    app: String,

    /// The app's secret, as set when the app was created.
    #[arg(long, env = "QRON_SECRET", hide_env_values = true)]
    secret: String,

    /// A tag jobs can require through their worker filter; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Instances run at once; more are queued on the worker.
    #[arg(long, default_value_t = 8)]
    max_concurrency: u32,

    /// Name of this worker, unique among live workers [default: HOSTNAME:PID].
    #[arg(long, env = "QRON_WORKER_ID")]
    worker_id: Option<String>,

    /// Fail over when the leader has not answered for this long (milliseconds).
    #[arg(long, default_value_t = 1000)]
    ping_timeout_ms: u64,

    /// How often to send the leader a heartbeat with this machine's load (milliseconds).
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list.
    #[arg(long, env = "QRON_LOG", default_value = "info")]
    log: String,
}

impl Args {
    fn into_config(self) -> AgentConfig {
        let seeds = self
            .seeds
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let mut cfg = AgentConfig::new(seeds, self.app, self.secret);
        cfg.worker_id = self.worker_id.map(WorkerId::from).unwrap_or_else(default_worker_id);
        cfg.tags = self.tags;
        cfg.max_concurrency = self.max_concurrency;
        cfg.ping_timeout = Duration::from_millis(self.ping_timeout_ms);
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        // Pings go four times per timeout, so one lost pong does not cause a failover.
        cfg.ping_interval = (cfg.ping_timeout / 4).max(Duration::from_millis(10));
        cfg
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("qron-worker: --log {:?}: bad filter: {e}", args.log);
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
    let cfg = args.into_config();
    if let Err(e) = cfg.validate() {
        eprintln!("qron-worker: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qron-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; draining");
            signals.cancel();
        });
        // Built-in custom processor `noop` (succeeds at once): for smoke tests and
        // benchmarks that measure qron, not the work.
        Agent::new(cfg)
            .with_processor("noop", processor_fn(|_ctx| async { ProcessResult::ok("") }))
            .run(shutdown)
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qron-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
