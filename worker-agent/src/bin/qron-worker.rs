//! `qron-worker`: runs a worker agent for one app until SIGINT/SIGTERM.
//!
//! Parses flags into an [`AgentConfig`] and calls [`Agent::run`]; nothing else. A
//! registration refused for good (wrong secret), an unusable state dir or settings end
//! the process with status 1; an unknown app is retried (it may be created later).

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
/// trying; instances it is running keep running while it fails over, for as long as
/// its lease (3/5 of the leader's --worker-timeout-ms, 3 s by default) allows: a worker
/// that no leader has answered for its lease kills what it runs, because the leader
/// will retry those instances elsewhere once its worker timeout passes.
///
/// Scripts run in process groups that die with the worker. The worker records them in
/// its state dir, and a worker restarted with the same --worker-id kills whatever a
/// crashed process left before it registers.
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

    /// Where running process groups are recorded [default:
    /// /var/tmp/qron-worker/APP/WORKER_ID, base movable with QRON_WORKER_STATE_BASE].
    /// One live worker per state dir.
    #[arg(long, env = "QRON_WORKER_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,

    /// Fail over when the leader has not answered for this long (milliseconds).
    #[arg(long, default_value_t = 1000)]
    ping_timeout_ms: u64,

    /// How often to send the leader a heartbeat with this machine's load (milliseconds).
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,

    /// TEST ONLY (needs QRON_ALLOW_UNSAFE_TEST_MODES=1): no lease; attempts run on
    /// however long no leader answers. For the chaos checker's own test.
    #[arg(long, hide = true)]
    unsafe_test_no_lease: bool,

    /// TEST ONLY (needs QRON_ALLOW_UNSAFE_TEST_MODES=1): scripts outlive the worker
    /// (no watcher, no state dir, no kill of leftovers). For the chaos checker's own test.
    #[arg(long, hide = true)]
    unsafe_test_orphan_scripts: bool,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list.
    #[arg(long, env = "QRON_LOG", default_value = "info")]
    log: String,
}

impl Args {
    fn into_config(self) -> Result<AgentConfig, String> {
        let unsafe_allowed = std::env::var("QRON_ALLOW_UNSAFE_TEST_MODES").as_deref() == Ok("1");
        if (self.unsafe_test_no_lease || self.unsafe_test_orphan_scripts) && !unsafe_allowed {
            return Err(
                "--unsafe-test-* modes break exactly-once and are for the chaos checker's own tests only".into(),
            );
        }
        let seeds = self
            .seeds
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let mut cfg = AgentConfig::new(seeds, self.app, self.secret);
        cfg.worker_id = self.worker_id.map(WorkerId::from).unwrap_or_else(default_worker_id);
        cfg.tags = self.tags;
        cfg.state_dir = self.state_dir;
        cfg.unsafe_no_lease = self.unsafe_test_no_lease;
        cfg.unsafe_orphan_scripts = self.unsafe_test_orphan_scripts;
        cfg.max_concurrency = self.max_concurrency;
        cfg.ping_timeout = Duration::from_millis(self.ping_timeout_ms);
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        // Pings go four times per timeout, so one lost pong does not cause a failover.
        cfg.ping_interval = (cfg.ping_timeout / 4).max(Duration::from_millis(10));
        Ok(cfg)
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
    let cfg = match args.into_config() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("qron-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
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
