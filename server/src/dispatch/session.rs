//! One worker's stream on the leader, from `Register` to its end.
//!
//! The first message must be `Register` with the app's secret; heartbeats
//! update the registry; pings get pongs; status reports and log batches are
//! proposed in batches, in order, and acknowledged (cumulative `Ack(seq)`) only
//! once committed (rule 5, docs/rules.md). Nothing a worker sends can panic the
//! node: a malformed message ends that stream with `InvalidArgument`.
//!
//! A session belongs to one leadership: it ends (telling the worker
//! `NotLeader`) as soon as the published role is no longer `Leader` with the
//! leader id it was accepted under.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use qron_proto::worker::{
    server_message, worker_message, Ack, InstanceStatus as WireStatus, LeaderId, Pong, RefusedCode, Register,
    Registered, WorkerMessage, MAX_LOG_BATCH_BYTES,
};
use qron_raft_store::instance::{bounded, MAX_RESULT_LEN};
use qron_raft_store::{Attempt, Command, InstanceId, InstanceStatus, WorkerId};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::messages::{msg, not_leader, refused, stop_attempt};
use super::plan::stale_held;
use super::registry::{Load, Registration, StreamTx};
use super::Dispatch;
use crate::clock::now_ms;
use crate::context::{leadership_lost, Context};
use crate::discovery;
use crate::raft::{propose_batch, MAX_REPORT_BATCH_BYTES};

/// A worker must register within this long after opening its stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// Reports proposed in one Raft entry at most.
const MAX_REPORT_BATCH: usize = 512;
/// How long a stream that ends on its own waits for its received reports to commit.
const DRAIN_REPORTS: Duration = Duration::from_secs(5);

/// One accepted stream.
pub struct Session {
    pub ctx: Arc<Context>,
    pub d: Arc<Dispatch>,
    pub tx: StreamTx,
    /// The leadership this stream was accepted under.
    pub leader: LeaderId,
}

/// Why the message loop ended.
enum End {
    /// The worker closed the stream or it broke.
    Closed,
    /// This node stopped being the leader the stream was accepted under.
    LeadershipLost,
    /// The worker sent something malformed.
    Malformed(Status),
}

impl Session {
    async fn refuse(&self, code: RefusedCode, reason: String) {
        tracing::warn!(%reason, code = code.as_str_name(), "worker registration refused");
        let _ = self.tx.send(Ok(refused(code, reason))).await;
    }

    /// Checks a registration against the applied state; the error says whether the
    /// worker should retry.
    fn check(&self, r: &Register) -> Result<(), (RefusedCode, String)> {
        if r.worker_id.is_empty() || r.worker_id.len() > 256 {
            return Err((RefusedCode::Invalid, "worker_id must be 1 to 256 bytes".into()));
        }
        let state = self.ctx.state.read();
        match state.app(&r.app) {
            None => Err((
                RefusedCode::UnknownApp,
                format!("unknown app {:?}: create it first (qronctl app create)", r.app),
            )),
            Some(a) if a.secret != r.secret => {
                Err((RefusedCode::BadSecret, format!("wrong secret for app {:?}", r.app)))
            }
            Some(_) => Ok(()),
        }
    }

    /// Waits until this leadership has applied its term's first entry, so the
    /// check reads a state that has every earlier commit. False if it did not
    /// within `REGISTER_TIMEOUT` or the leadership ended.
    async fn ready(&self) -> bool {
        let mut ready = self.d.ready.subscribe();
        let mut role = self.ctx.watch_role();
        let leader = self.leader;
        tokio::select! {
            r = tokio::time::timeout(REGISTER_TIMEOUT, ready.wait_for(|r| *r == Some(leader))) => matches!(r, Ok(Ok(_))),
            _ = leadership_lost(&mut role, leader) => false,
        }
    }

    /// Tells the worker to stop each attempt it holds that is not its instance's
    /// live attempt on this worker (stopped, superseded or unknown): on every
    /// register and heartbeat, until it no longer lists it (rule 11, docs/rules.md).
    fn reconcile(&self, worker_id: &WorkerId, held: &BTreeSet<(InstanceId, Attempt)>) {
        if held.is_empty() {
            return;
        }
        let stale = stale_held(&self.ctx.state.read(), worker_id, held);
        for (instance, attempt) in stale {
            tracing::info!(worker = %worker_id, instance = instance.0, attempt = attempt.0, "worker holds an attempt that is no longer current; telling it to stop");
            let m = stop_attempt(instance, attempt, &self.leader, "no longer the current attempt");
            if self.tx.try_send(Ok(m)).is_err() {
                // Full or closed: the next heartbeat tries again.
                break;
            }
        }
    }

    /// Serves the stream until the worker leaves, sends something malformed, or
    /// this leadership ends.
    pub async fn run(self, mut inbound: Streaming<WorkerMessage>) {
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await;
        let reg = match first {
            Ok(Ok(Some(WorkerMessage {
                msg: Some(worker_message::Msg::Register(r)),
            }))) => r,
            Ok(Ok(Some(_))) => {
                return self
                    .refuse(
                        RefusedCode::Invalid,
                        "the first message on a stream must be Register".into(),
                    )
                    .await
            }
            Ok(Ok(None)) => return,
            Ok(Err(status)) => {
                tracing::debug!(%status, "worker stream broke before registering");
                return;
            }
            Err(_) => {
                return self
                    .refuse(RefusedCode::Invalid, format!("no Register within {REGISTER_TIMEOUT:?}"))
                    .await
            }
        };
        if !self.ready().await {
            return self
                .refuse(
                    RefusedCode::NotReady,
                    "this leader has not applied its term's first entry yet; retry".into(),
                )
                .await;
        }
        if let Err((code, reason)) = self.check(&reg) {
            return self.refuse(code, reason).await;
        }
        let worker_id = WorkerId::new(reg.worker_id.clone());
        let running: BTreeSet<(InstanceId, Attempt)> = reg.running.iter().map(wire_attempt).collect();
        // Registered goes first: the worker takes dispatches only under the lease
        // it grants, and one queued ahead of it would be refused and never
        // re-sent on this stream. The worker is visible to the dispatcher only
        // once it is on its way.
        let registered = Registered {
            leader: Some(self.leader),
            heartbeat_interval_ms: self.d.cfg.heartbeat_interval.as_millis() as u64,
            lease_ms: self.d.worker_lease().as_millis() as u64,
        };
        if self
            .tx
            .send(Ok(msg(server_message::Msg::Registered(registered))))
            .await
            .is_err()
        {
            tracing::info!(worker = %worker_id, "worker stream ended before it was registered");
            return;
        }
        let conn = self.d.registry.register(
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
        self.reconcile(&worker_id, &running);
        self.d.wake();
        self.serve(&mut inbound, &worker_id, conn).await;
        self.d.registry.disconnected(&worker_id, conn);
        tracing::info!(worker = %worker_id, "worker stream ended");
    }

    /// The message loop after registration, with the report pipeline beside it.
    async fn serve(&self, inbound: &mut Streaming<WorkerMessage>, worker_id: &WorkerId, conn: u64) {
        let (rep_tx, rep_rx) = mpsc::channel::<(u64, Command)>(4096);
        let pipeline = tokio::spawn(report_pipeline(
            self.ctx.clone(),
            self.d.clone(),
            rep_rx,
            self.tx.clone(),
            worker_id.clone(),
        ));
        let mut role = self.ctx.watch_role();
        let end = loop {
            let next = tokio::select! {
                _ = leadership_lost(&mut role, self.leader) => break End::LeadershipLost,
                m = inbound.message() => m,
            };
            let m = match next {
                Ok(Some(m)) => m,
                Ok(None) => break End::Closed,
                Err(status) => {
                    tracing::info!(worker = %worker_id, %status, "worker stream broke");
                    break End::Closed;
                }
            };
            let report = match m.msg {
                Some(worker_message::Msg::Heartbeat(h)) => {
                    let running: BTreeSet<(InstanceId, Attempt)> = h.running.iter().map(wire_attempt).collect();
                    self.reconcile(worker_id, &running);
                    self.d.registry.heartbeat(
                        worker_id,
                        conn,
                        Load {
                            cpu_percent: if h.cpu_percent.is_finite() { h.cpu_percent } else { 0.0 },
                            memory_free_mb: h.memory_free_mb,
                            disk_free_mb: h.disk_free_mb,
                            running,
                        },
                    );
                    None
                }
                Some(worker_message::Msg::Ping(p)) => {
                    self.d.registry.touch(worker_id, conn);
                    let _ = self
                        .tx
                        .try_send(Ok(msg(server_message::Msg::Pong(Pong { nonce: p.nonce }))));
                    None
                }
                Some(worker_message::Msg::Status(r)) => {
                    self.d.registry.touch(worker_id, conn);
                    let status = match WireStatus::try_from(r.status) {
                        Ok(WireStatus::Running) => InstanceStatus::Running,
                        Ok(WireStatus::Succeeded) => InstanceStatus::Succeeded,
                        Ok(WireStatus::Failed) => InstanceStatus::Failed,
                        Ok(WireStatus::Released) => {
                            let release = Command::Release {
                                instance: InstanceId(r.instance_id),
                                attempt: Attempt(r.attempt),
                                reason: bounded(&r.result, MAX_RESULT_LEN),
                                now_ms: now_ms(),
                            };
                            if rep_tx.send((r.seq, release)).await.is_err() {
                                break End::Closed;
                            }
                            continue;
                        }
                        _ => {
                            break End::Malformed(Status::invalid_argument(format!(
                            "status report {} has status {}: a worker reports RUNNING, SUCCEEDED, FAILED or RELEASED",
                            r.seq, r.status
                        )))
                        }
                    };
                    Some((
                        r.seq,
                        Command::Report {
                            instance: InstanceId(r.instance_id),
                            attempt: Attempt(r.attempt),
                            status,
                            // apply keeps this much; the log entry need not carry more.
                            result: bounded(&r.result, MAX_RESULT_LEN),
                            exit_code: r.exit_code,
                            at_ms: r.at_ms,
                            now_ms: now_ms(),
                        },
                    ))
                }
                Some(worker_message::Msg::Logs(b)) => {
                    if b.data.len() > MAX_LOG_BATCH_BYTES {
                        break End::Malformed(Status::invalid_argument(format!(
                            "log batch {} carries {} bytes: at most {MAX_LOG_BATCH_BYTES} per batch",
                            b.seq,
                            b.data.len()
                        )));
                    }
                    self.d.registry.touch(worker_id, conn);
                    Some((
                        b.seq,
                        Command::AppendLog {
                            instance: InstanceId(b.instance_id),
                            attempt: Attempt(b.attempt),
                            offset: b.offset,
                            data: String::from_utf8_lossy(&b.data).into_owned(),
                            cap: self.d.cfg.max_log_bytes,
                        },
                    ))
                }
                Some(worker_message::Msg::Register(_)) => {
                    break End::Malformed(Status::invalid_argument(
                        "Register may only be the first message of a stream",
                    ))
                }
                None => break End::Malformed(Status::invalid_argument("empty or unknown worker message")),
            };
            if let Some(r) = report {
                if rep_tx.send(r).await.is_err() {
                    break End::Closed;
                }
            }
        };
        drop(rep_tx);
        match &end {
            End::Malformed(status) => {
                tracing::warn!(worker = %worker_id, %status, "closing a worker stream after a malformed message");
                let _ = self.tx.send(Err(status.clone())).await;
            }
            End::LeadershipLost => {
                let _ = self.tx.try_send(Ok(not_leader(discovery::other_leader(&self.ctx))));
            }
            End::Closed => {}
        }
        if matches!(end, End::LeadershipLost) {
            // Uncommitted reports stay in the worker's outbox; it re-sends them to the next leader.
            pipeline.abort();
        } else {
            // Let the reports already received be committed (the worker may be shutting down).
            let _ = tokio::time::timeout(DRAIN_REPORTS, pipeline).await;
        }
    }
}

/// An (instance, attempt) as the wire carries it, typed.
fn wire_attempt(r: &qron_proto::worker::InstanceAttempt) -> (InstanceId, Attempt) {
    (InstanceId(r.instance_id), Attempt(r.attempt))
}

/// The bytes a report carries that can be large (log data, result text).
fn payload_bytes(c: &Command) -> usize {
    match c {
        Command::AppendLog { data, .. } => data.len(),
        Command::Report { result, .. } => result.len(),
        Command::Release { reason, .. } => reason.len(),
        _ => 0,
    }
}

/// Proposes a stream's reports in order, a batch at a time, and acks each batch
/// once committed. A failed proposal ends the stream: the worker reconnects and
/// re-sends what was not acked.
async fn report_pipeline(
    ctx: Arc<Context>,
    d: Arc<Dispatch>,
    mut rx: mpsc::Receiver<(u64, Command)>,
    tx: StreamTx,
    worker_id: WorkerId,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = payload_bytes(&first.1);
        let mut batch = vec![first];
        while batch.len() < MAX_REPORT_BATCH && bytes < MAX_REPORT_BATCH_BYTES {
            match rx.try_recv() {
                Ok(x) => {
                    bytes += payload_bytes(&x.1);
                    batch.push(x);
                }
                Err(_) => break,
            }
        }
        let max_seq = batch.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let commands = batch.into_iter().map(|(_, c)| c).collect();
        match propose_batch(&ctx.raft, commands).await {
            Ok(replies) => {
                for r in replies.iter().filter_map(|r| r.as_ref().err()) {
                    tracing::debug!(worker = %worker_id, error = %r, "report refused (stale or duplicate)");
                }
                d.wake();
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
