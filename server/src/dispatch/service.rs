//! The gRPC `WorkerService`: `Acquire` (any node answers who leads) and
//! `Connect` (one stream per worker, accepted only by the leader).
//!
//! On a stream: the first message must be `Register` with the app's secret;
//! heartbeats update the registry; pings get pongs; status reports and log
//! batches are proposed in batches, in order, and acknowledged (cumulative
//! `Ack(seq)`) only once committed (rule 5). Nothing a worker sends can panic
//! the node: a malformed message ends that stream with `InvalidArgument`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use qron_proto::worker::worker_service_server::WorkerService;
use qron_proto::worker::{
    server_message, worker_message, Ack, AcquireRequest, AcquireResponse, InstanceStatus as WireStatus, Member, Pong,
    Refused, Register, Registered, ServerMessage, WorkerMessage,
};
use qron_raft_store::{Command, InstanceId, InstanceStatus, Raft};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::registry::{Load, Registration, StreamTx};
use super::{not_leader, Dispatch, Leadership};
use crate::api::{now_ms, ApiState, Leader};

/// A worker must register within this long after opening its stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Reports proposed in one Raft entry at most.
const MAX_REPORT_BATCH: usize = 512;

pub struct WorkerRpc {
    pub api: Arc<ApiState>,
}

fn msg(m: server_message::Msg) -> ServerMessage {
    ServerMessage { msg: Some(m) }
}

/// Who leads, the members and their addresses (gRPC `Acquire`, HTTP `/server/acquire`).
pub fn acquire(api: &ApiState) -> AcquireResponse {
    let m = api.raft.metrics().borrow().clone();
    let members = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| Member {
            id: *id,
            grpc_addr: n.grpc_addr.clone(),
            http_addr: if *id == api.node_id {
                api.http_addr.clone()
            } else {
                api.peers.http_addr(*id).unwrap_or_default()
            },
        })
        .collect();
    let mut r = AcquireResponse {
        term: m.current_term,
        members,
        ..AcquireResponse::default()
    };
    let leader = match api.leader() {
        Leader::Me => Some(api.node_id),
        Leader::Other(id, _) => Some(id),
        Leader::Unknown => None,
    };
    if let Some(id) = leader {
        if let Some(member) = r.members.iter().find(|mm| mm.id == id) {
            r.has_leader = true;
            r.leader_id = id;
            r.leader_grpc = member.grpc_addr.clone();
            r.leader_http = member.http_addr.clone();
        }
    }
    r
}

#[tonic::async_trait]
impl WorkerService for WorkerRpc {
    async fn acquire(&self, _req: Request<AcquireRequest>) -> Result<Response<AcquireResponse>, Status> {
        Ok(Response::new(acquire(&self.api)))
    }

    type ConnectStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(&self, req: Request<Streaming<WorkerMessage>>) -> Result<Response<Self::ConnectStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        let out = ReceiverStream::new(rx);
        let Some(leadership) = self.api.dispatch.leadership() else {
            // A follower (or a leader without quorum): name the leader and end the stream.
            let next = match self.api.leader() {
                Leader::Other(id, node) => Some((id, node.grpc_addr)),
                _ => None,
            };
            let _ = tx.try_send(Ok(not_leader(next)));
            return Ok(Response::new(out));
        };
        let session = Session {
            api: self.api.clone(),
            tx,
            leadership,
        };
        tokio::spawn(session.run(req.into_inner()));
        Ok(Response::new(out))
    }
}

struct Session {
    api: Arc<ApiState>,
    tx: StreamTx,
    leadership: Leadership,
}

impl Session {
    fn d(&self) -> &Dispatch {
        &self.api.dispatch
    }

    async fn refuse(&self, reason: String) {
        tracing::warn!(%reason, "worker registration refused");
        let _ = self
            .tx
            .send(Ok(msg(server_message::Msg::Refused(Refused { reason }))))
            .await;
    }

    fn check(&self, r: &Register) -> Result<(), String> {
        if r.worker_id.is_empty() || r.worker_id.len() > 256 {
            return Err("worker_id must be 1 to 256 bytes".into());
        }
        let state = self.api.state.read();
        match state.apps.get(&r.app) {
            None => Err(format!("unknown app {:?}: create it first (qronctl app create)", r.app)),
            Some(a) if a.secret != r.secret => Err(format!("wrong secret for app {:?}", r.app)),
            Some(_) => Ok(()),
        }
    }

    async fn run(self, mut inbound: Streaming<WorkerMessage>) {
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await;
        let reg = match first {
            Ok(Ok(Some(WorkerMessage {
                msg: Some(worker_message::Msg::Register(r)),
            }))) => r,
            Ok(Ok(Some(_))) => {
                return self
                    .refuse("the first message on a stream must be Register".into())
                    .await
            }
            Ok(Ok(None)) => return,
            Ok(Err(status)) => {
                tracing::debug!(%status, "worker stream broke before registering");
                return;
            }
            Err(_) => return self.refuse(format!("no Register within {REGISTER_TIMEOUT:?}")).await,
        };
        if let Err(reason) = self.check(&reg) {
            return self.refuse(reason).await;
        }
        let worker_id = reg.worker_id.clone();
        let running: BTreeSet<(u64, u32)> = reg.running.iter().map(|r| (r.instance_id, r.attempt)).collect();
        let conn = self.d().registry.register(
            Registration {
                worker_id: worker_id.clone(),
                incarnation: reg.incarnation.clone(),
                app: reg.app.clone(),
                tags: reg.tags.clone(),
                max_concurrency: reg.max_concurrency.max(1),
                cpu_cores: reg.cpu_cores,
                memory_total_mb: reg.memory_total_mb,
                disk_total_mb: reg.disk_total_mb,
                running: running.clone(),
            },
            self.tx.clone(),
        );
        tracing::info!(worker = %worker_id, app = %reg.app, running = running.len(), "worker registered");
        let registered = Registered {
            leader: Some(self.leadership.leader),
            heartbeat_interval_ms: self.d().cfg.heartbeat_interval.as_millis() as u64,
        };
        if self
            .tx
            .send(Ok(msg(server_message::Msg::Registered(registered))))
            .await
            .is_err()
        {
            return;
        }
        self.d().wake();

        let (rep_tx, rep_rx) = mpsc::channel::<(u64, Command)>(4096);
        let pipeline = tokio::spawn(report_pipeline(
            self.api.raft.clone(),
            self.api.clone(),
            rep_rx,
            self.tx.clone(),
            worker_id.clone(),
        ));
        let token = self.leadership.token.clone();
        let end: Result<(), Status> = loop {
            let next = tokio::select! {
                _ = token.cancelled() => break Ok(()),
                m = inbound.message() => m,
            };
            let m = match next {
                Ok(Some(m)) => m,
                Ok(None) => break Ok(()),
                Err(status) => {
                    tracing::info!(worker = %worker_id, %status, "worker stream broke");
                    break Ok(());
                }
            };
            match m.msg {
                Some(worker_message::Msg::Heartbeat(h)) => self.d().registry.heartbeat(
                    &worker_id,
                    conn,
                    Load {
                        cpu_percent: if h.cpu_percent.is_finite() { h.cpu_percent } else { 0.0 },
                        memory_free_mb: h.memory_free_mb,
                        disk_free_mb: h.disk_free_mb,
                        running: h.running.iter().map(|r| (r.instance_id, r.attempt)).collect(),
                    },
                ),
                Some(worker_message::Msg::Ping(p)) => {
                    self.d().registry.touch(&worker_id, conn);
                    let _ = self
                        .tx
                        .try_send(Ok(msg(server_message::Msg::Pong(Pong { nonce: p.nonce }))));
                }
                Some(worker_message::Msg::Status(r)) => {
                    self.d().registry.touch(&worker_id, conn);
                    let status = match WireStatus::try_from(r.status) {
                        Ok(WireStatus::Running) => InstanceStatus::Running,
                        Ok(WireStatus::Succeeded) => InstanceStatus::Succeeded,
                        Ok(WireStatus::Failed) => InstanceStatus::Failed,
                        _ => {
                            break Err(Status::invalid_argument(format!(
                                "status report {} has status {}: a worker reports RUNNING, SUCCEEDED or FAILED",
                                r.seq, r.status
                            )))
                        }
                    };
                    let cmd = Command::Report {
                        instance: InstanceId(r.instance_id),
                        attempt: r.attempt,
                        status,
                        result: r.result,
                        exit_code: r.exit_code,
                        at_ms: r.at_ms,
                        now_ms: now_ms(),
                    };
                    if rep_tx.send((r.seq, cmd)).await.is_err() {
                        break Ok(());
                    }
                }
                Some(worker_message::Msg::Logs(b)) => {
                    self.d().registry.touch(&worker_id, conn);
                    let cmd = Command::AppendLog {
                        instance: InstanceId(b.instance_id),
                        attempt: b.attempt,
                        offset: b.offset,
                        data: String::from_utf8_lossy(&b.data).into_owned(),
                        cap: self.d().cfg.max_log_bytes,
                    };
                    if rep_tx.send((b.seq, cmd)).await.is_err() {
                        break Ok(());
                    }
                }
                Some(worker_message::Msg::Register(_)) => {
                    break Err(Status::invalid_argument(
                        "Register may only be the first message of a stream",
                    ))
                }
                None => break Err(Status::invalid_argument("empty or unknown worker message")),
            }
        };
        drop(rep_tx);
        if let Err(status) = end {
            tracing::warn!(worker = %worker_id, %status, "closing a worker stream after a malformed message");
            let _ = self.tx.send(Err(status)).await;
        }
        if token.is_cancelled() {
            let _ = self.tx.try_send(Ok(not_leader(None)));
        }
        self.d().registry.disconnected(&worker_id, conn);
        if token.is_cancelled() {
            pipeline.abort();
        } else {
            // Let the reports already received be committed (the worker may be shutting down).
            let _ = tokio::time::timeout(Duration::from_secs(5), pipeline).await;
        }
        tracing::info!(worker = %worker_id, "worker stream ended");
    }
}

/// Proposes a stream's reports in order, a batch at a time, and acks each batch
/// once committed. A failed proposal ends the stream: the worker reconnects and
/// re-sends what was not acked.
async fn report_pipeline(
    raft: Raft,
    api: Arc<ApiState>,
    mut rx: mpsc::Receiver<(u64, Command)>,
    tx: StreamTx,
    worker_id: String,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_REPORT_BATCH {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let max_seq = batch.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let commands = batch.into_iter().map(|(_, c)| c).collect();
        match raft.client_write(Command::Batch { commands }).await {
            Ok(resp) => {
                if let Ok(qron_raft_store::Reply::Batch(replies)) = &resp.data.0 {
                    for r in replies.iter().filter_map(|r| r.as_ref().err()) {
                        tracing::debug!(worker = %worker_id, error = %r, "report refused (stale or duplicate)");
                    }
                }
                api.dispatch.wake();
                if tx
                    .send(Ok(msg(server_message::Msg::Ack(Ack { seq: max_seq }))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(worker = %worker_id, error = %e, "reports not committed; closing the stream so the worker re-sends them");
                let _ = tx
                    .send(Err(Status::unavailable(format!("reports not committed: {e}"))))
                    .await;
                return;
            }
        }
    }
}
