//! Wires one qron server node together: storage, Raft, the node context, the
//! gRPC port (Raft between servers, forwarded API calls, the worker protocol),
//! the HTTP API, bootstrap, the peer poller and the leadership watcher, all
//! stopped by one cancellation token. The top of the module graph: it composes
//! and decides nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{InitializeError, RaftError};
use openraft::SnapshotPolicy;
use qron_proto::raft::raft_service_server::RaftServiceServer;
use qron_proto::raft::NodeInfoRequest;
use qron_proto::worker::worker_service_server::WorkerServiceServer;
use qron_raft_store::{NodeId, QronNode, Raft};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::context::Context as NodeContext;
use crate::dispatch::service::WorkerRpc;
use crate::dispatch::{Dispatch, DispatchConfig};
use crate::leadership;
use crate::peers::Peers;
use crate::raft::network::{Clients, NetworkFactory};
use crate::raft::service::RaftRpc;
use crate::raft::MAX_MESSAGE_BYTES;
use crate::role::Role;
use crate::scheduler::SchedulerConfig;

/// How often peers are asked for their HTTP address (and counted reachable).
const PEER_POLL: Duration = Duration::from_secs(1);
/// How long shutdown waits for worker streams to end.
const SESSIONS_DRAIN: Duration = Duration::from_secs(10);

/// Runs a node until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("--data-dir: cannot create {}", cfg.data_dir.display()))?;
    let (log_store, state_machine) = qron_raft_store::open(&cfg.data_dir)
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    let shared = state_machine.shared();

    let raft_config = openraft::Config {
        cluster_name: "qron".into(),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        election_timeout_min: cfg.election_timeout_min.as_millis() as u64,
        election_timeout_max: cfg.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs),
        max_in_snapshot_log_to_keep: cfg.logs_kept,
        purge_batch_size: cfg.purge_batch,
        snapshot_max_chunk_size: 1024 * 1024,
        // openraft bounds an AppendEntries by the heartbeat interval: keep each one small
        // (our entries are batches) so that a busy leader still gets its acks in time.
        max_payload_entries: 64,
        install_snapshot_timeout: 2_000,
        ..Default::default()
    }
    .validate()
    .context("invalid Raft timing")?;

    let peers = Arc::new(Peers::default());
    let raft = Raft::new(
        cfg.node_id,
        Arc::new(raft_config),
        NetworkFactory {
            peers: peers.clone(),
            json_peers: Default::default(),
        },
        log_store,
        state_machine,
    )
    .await
    .context("cannot start Raft")?;

    let dispatch = Arc::new(Dispatch::new(DispatchConfig {
        worker_timeout: cfg.worker_timeout,
        failover_grace: cfg.failover_grace,
        heartbeat_interval: cfg.worker_heartbeat,
        max_log_bytes: cfg.max_log_bytes,
        horizon: cfg.fire_horizon,
        unsafe_dispatch_before_commit: cfg.unsafe_dispatch_before_commit,
        unsafe_unconfirmed_stops: cfg.unsafe_unconfirmed_stops,
    }));
    if cfg.unsafe_unconfirmed_stops {
        tracing::error!("UNSAFE TEST MODE: stopped attempts count as ended at once; a retry may run beside one");
    }
    if cfg.unsafe_dispatch_before_commit {
        tracing::error!("UNSAFE TEST MODE: dispatches are sent before their assignment is committed");
    }
    if cfg.unsafe_fail_scheduler > 0 {
        tracing::error!(
            starts = cfg.unsafe_fail_scheduler,
            "UNSAFE TEST MODE: the leader's scheduler panics at its first starts"
        );
    }
    if cfg.unsafe_hold_forward_answers > 0 {
        tracing::error!(
            writes = cfg.unsafe_hold_forward_answers,
            "UNSAFE TEST MODE: answers to the first forwarded writes are held back after their commit"
        );
    }
    let (role_tx, role_rx) = watch::channel(Role::Unknown { cut_off: false });
    let cfg = Arc::new(cfg);
    let ctx = Arc::new(NodeContext::new(
        cfg.clone(),
        raft.clone(),
        shared,
        peers.clone(),
        role_rx,
    ));
    let router = api::router(Arc::new(ApiState::new(ctx.clone(), dispatch.clone())));

    let grpc_listener = TcpListener::bind(cfg.grpc)
        .await
        .with_context(|| format!("--grpc: cannot listen on {}", cfg.grpc))?;
    let http_listener = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("--http: cannot listen on {}", cfg.http))?;
    tracing::info!(
        node_id = cfg.node_id,
        http = %http_listener.local_addr()?,
        grpc = %grpc_listener.local_addr()?,
        data_dir = %cfg.data_dir.display(),
        "qron-server listening"
    );

    let mut tasks = JoinSet::new();
    let rpc = RaftRpc {
        raft: raft.clone(),
        node_id: cfg.node_id,
        http_addr: cfg.advertise_http.clone(),
        grpc_addr: cfg.advertise_grpc.clone(),
        router: router.clone(),
        hold_forward_answers: cfg.unsafe_hold_forward_answers.into(),
    };
    let grpc_service = RaftServiceServer::new(rpc)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let worker_service = WorkerServiceServer::new(WorkerRpc {
        ctx: ctx.clone(),
        dispatch: dispatch.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let token = shutdown.clone();
    tasks.spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(grpc_service)
            .add_service(worker_service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), token.cancelled_owned())
            .await
            .context("gRPC server failed")
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(http_listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("HTTP server failed")
    });

    if !cfg.initial_cluster.is_empty() {
        bootstrap(&raft, &cfg.initial_cluster).await?;
    } else {
        tracing::info!("no --initial-cluster: waiting to be added by a member of a cluster");
    }

    tasks.spawn(crate::clock::watch_stalls(shutdown.clone()));
    tasks.spawn(poll_peers(raft.clone(), peers, cfg.node_id, shutdown.clone()));
    let start = leadership::starter(
        ctx.clone(),
        dispatch.clone(),
        SchedulerConfig {
            horizon: cfg.fire_horizon,
            misfire_threshold: cfg.misfire_threshold,
            tick: Duration::from_millis(20),
        },
    );
    tasks.spawn(leadership::run(ctx, dispatch.clone(), start, role_tx, shutdown.clone()));

    // Run until asked to stop or until a task fails.
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        Some(r) = tasks.join_next() => match r {
            // Every task runs until shutdown: one that ends before it is a failure.
            Ok(Ok(())) if shutdown.is_cancelled() => Ok(()),
            Ok(Ok(())) => Err(anyhow::anyhow!("a server task ended before shutdown")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a server task panicked: {e}")),
        },
    };
    shutdown.cancel();
    tracing::info!("shutting down");
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    while tasks.join_next().await.is_some() {}
    // Worker streams end once the role is no longer Leader; bound the wait anyway.
    dispatch.sessions.close();
    if tokio::time::timeout(SESSIONS_DRAIN, dispatch.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(open = dispatch.sessions.len(), "worker streams still open at shutdown");
    }
    result
}

/// Initializes the founding membership; a node that is already initialized
/// (a restart, or a peer got there first through replication) goes on as is.
async fn bootstrap(raft: &Raft, members: &BTreeMap<NodeId, String>) -> anyhow::Result<()> {
    let nodes: BTreeMap<NodeId, QronNode> = members
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                QronNode {
                    grpc_addr: addr.clone(),
                },
            )
        })
        .collect();
    match raft.initialize(nodes).await {
        Ok(()) => {
            tracing::info!(members = ?members, "initialized the founding membership");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("already initialized; rejoining with the state on disk");
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("cannot initialize the cluster: {e}")),
    }
}

/// Asks every member for its HTTP address, which also tells which are reachable.
async fn poll_peers(raft: Raft, peers: Arc<Peers>, me: NodeId, shutdown: CancellationToken) -> anyhow::Result<()> {
    let clients = Clients::default();
    let mut tick = tokio::time::interval(PEER_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let members: Vec<(NodeId, String)> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, n)| (*id, n.grpc_addr.clone()))
            .collect();
        for (id, addr) in members {
            let client = match clients.get(&addr) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(node = id, %addr, error = %e, "bad peer address");
                    continue;
                }
            };
            let peers = peers.clone();
            tokio::spawn(async move {
                let mut client = client;
                let call = client.node_info(NodeInfoRequest {});
                if let Ok(Ok(info)) = tokio::time::timeout(PEER_POLL, call).await {
                    let info = info.into_inner();
                    if info.node_id == id {
                        peers.set_http(id, info.http_addr);
                        peers.mark_ok(id);
                    } else {
                        tracing::warn!(node = id, %addr, answered = info.node_id, "peer answered with another node id");
                    }
                }
            });
        }
    }
}
