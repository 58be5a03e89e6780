//! The leader's dispatcher: assigns waiting instances to workers, sends each
//! dispatch only after its assignment is committed (rule 2), re-sends
//! assignments a previous leader committed but may not have sent, and declares
//! the instances of dead workers lost (after the failover grace, rule 6).
//!
//! It runs only while this node leads (started and cancelled by the leadership
//! watcher) and acts on the state applied at or after its own term's first
//! entry (it waits for a linearizable read before its first round).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qron_proto::api::{JobSpec, NoWorkerPolicy};
use qron_proto::worker::{server_message, Dispatch as DispatchMsg, LeaderId, ServerMessage, Stop};
use qron_raft_store::{Command, Instance, InstanceId, InstanceStatus, Raft, Reply, SharedState};
use tokio_util::sync::CancellationToken;

use super::{select, Dispatch};
use crate::api::now_ms;

/// Upper bound of commands per proposed batch.
const MAX_BATCH: usize = 1_000;
/// Rounds run at least this often even when nothing wakes the dispatcher.
const TICK: Duration = Duration::from_millis(50);

/// Builds the Dispatch message for an instance's current attempt. A scheduled
/// instance whose fire time is still ahead starts at that time, by the worker's clock.
pub fn dispatch_message(inst: &Instance, job: &JobSpec, leader: &LeaderId) -> ServerMessage {
    let start_at_ms = inst.fire_time_ms.filter(|t| *t > now_ms()).unwrap_or(0);
    ServerMessage {
        msg: Some(server_message::Msg::Dispatch(DispatchMsg {
            instance_id: inst.id.0,
            attempt: inst.attempt,
            leader: Some(*leader),
            job_id: inst.job_id.0,
            job_name: job.name.clone(),
            processor_json: serde_json::to_string(&job.processor).unwrap_or_default(),
            job_params: job.params.clone(),
            instance_params: inst.params.clone(),
            start_at_ms,
            timeout_ms: job.instance_timeout_ms,
        })),
    }
}

/// Builds the Stop message for an instance's attempt.
pub fn stop_message(inst: &Instance, leader: &LeaderId, reason: &str) -> ServerMessage {
    ServerMessage {
        msg: Some(server_message::Msg::Stop(Stop {
            instance_id: inst.id.0,
            attempt: inst.attempt,
            leader: Some(*leader),
            reason: reason.to_owned(),
        })),
    }
}

struct Round<'a> {
    raft: &'a Raft,
    state: &'a SharedState,
    d: &'a Dispatch,
    leader: LeaderId,
    started: Instant,
    /// (instance, attempt) dispatches this leader has sent.
    sent: HashSet<(InstanceId, u32)>,
    turn: u64,
}

/// Runs until `token` is cancelled (leadership ended or shutdown).
pub async fn run(raft: Raft, state: SharedState, d: Arc<Dispatch>, leader: LeaderId, token: CancellationToken) {
    if !crate::leadership::wait_term_start(&raft, &token).await {
        return;
    }
    tracing::info!(term = leader.term, "dispatcher started");
    let mut round = Round {
        raft: &raft,
        state: &state,
        d: &d,
        leader,
        started: Instant::now(),
        sent: HashSet::new(),
        turn: 0,
    };
    loop {
        round.run_once(&token).await;
        tokio::select! {
            _ = token.cancelled() => break,
            _ = d.notify.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    tracing::info!(term = leader.term, "dispatcher stopped");
}

impl Round<'_> {
    async fn run_once(&mut self, token: &CancellationToken) {
        let now = now_ms();
        let grace_over = self.started.elapsed() >= self.d.cfg.failover_grace;
        let horizon = self.d.cfg.horizon.as_millis() as i64;
        for w in self.d.registry.expire(self.d.cfg.worker_timeout) {
            tracing::warn!(worker = %w, timeout = ?self.d.cfg.worker_timeout, "worker timed out; its instances will be retried");
        }
        let workers = self.d.registry.snapshot();
        let mut waiting: Vec<(Instance, Option<JobSpec>)> = Vec::new();
        let mut assigned: Vec<(Instance, Option<JobSpec>)> = Vec::new();
        {
            let s = self.state.read();
            for id in &s.active {
                let Some(inst) = s.instances.get(id) else { continue };
                let job = s.jobs.get(&inst.job_id).map(|j| j.spec.clone());
                match inst.status {
                    InstanceStatus::WaitingDispatch
                        if inst.not_before_ms <= now && inst.fire_time_ms.is_none_or(|f| f - horizon <= now) =>
                    {
                        waiting.push((inst.clone(), job));
                    }
                    InstanceStatus::WaitingWorkerReceive | InstanceStatus::Running => {
                        assigned.push((inst.clone(), job));
                    }
                    _ => {}
                }
            }
        }

        let mut cmds = Vec::new();
        let mut pending: HashMap<String, u32> = HashMap::new();
        for (inst, job) in waiting {
            let Some(job) = job else {
                cmds.push(Command::FailInstance {
                    instance: inst.id,
                    reason: format!("job {} was deleted", inst.job_id),
                    now_ms: now,
                });
                continue;
            };
            match select::pick(&job, &workers, &pending, self.turn) {
                Some(w) => {
                    self.turn = self.turn.wrapping_add(1);
                    if self.d.cfg.unsafe_dispatch_before_commit {
                        // Deliberately broken (test only): what a deposed leader's early send
                        // looks like, a dispatch that the committed assignment contradicts.
                        if let Some(other) = workers
                            .iter()
                            .find(|o| o.reg.app == job.app && o.reg.worker_id != w.reg.worker_id && o.connected())
                        {
                            let mut early = inst.clone();
                            early.attempt += 1;
                            self.d
                                .registry
                                .send(&other.reg.worker_id, dispatch_message(&early, &job, &self.leader));
                        }
                    }
                    *pending.entry(w.reg.worker_id.clone()).or_default() += 1;
                    cmds.push(Command::Assign {
                        instance: inst.id,
                        attempt: inst.attempt + 1,
                        worker: w.reg.worker_id.clone(),
                        incarnation: w.reg.incarnation.clone(),
                        now_ms: now,
                    });
                }
                // Workers may still be reconnecting after a failover: decide after the grace.
                // Matching workers that are only busy mean waiting for a slot, not failing.
                None if grace_over
                    && job.no_worker_policy == NoWorkerPolicy::Fail
                    && !select::any_matching(&job, &workers) =>
                {
                    cmds.push(Command::FailInstance {
                        instance: inst.id,
                        reason: select::no_worker_reason(&job, &workers),
                        now_ms: now,
                    });
                }
                None => {}
            }
        }

        for (inst, job) in assigned {
            let Some(worker) = inst.worker.as_deref() else { continue };
            let live = workers.iter().find(|w| w.reg.worker_id == worker);
            let restarted = live.is_some_and(|w| {
                inst.worker_incarnation
                    .as_deref()
                    .is_some_and(|i| !i.is_empty() && i != w.reg.incarnation)
            });
            match live {
                // The same worker id, but a new process: it has forgotten this attempt,
                // which died with the old process. Lost now, no grace needed.
                Some(w) if restarted => {
                    cmds.push(Command::WorkerLost {
                        instance: inst.id,
                        attempt: inst.attempt,
                        reason: format!("worker {worker} restarted (new process {})", w.reg.incarnation),
                        now_ms: now,
                    });
                }
                Some(w) => {
                    // Committed by an earlier leader (or by us, but the send failed): send it
                    // again. The worker runs an (instance, attempt) at most once.
                    let key = (inst.id, inst.attempt);
                    let running = w.load.running.contains(&(inst.id.0, inst.attempt));
                    if inst.status == InstanceStatus::WaitingWorkerReceive && !running && !self.sent.contains(&key) {
                        if let Some(job) = &job {
                            if self.d.registry.send(worker, dispatch_message(&inst, job, &self.leader)) {
                                tracing::info!(instance = inst.id.0, attempt = inst.attempt, %worker, "re-sent committed dispatch");
                                self.sent.insert(key);
                            }
                        }
                    }
                }
                None if grace_over => cmds.push(Command::WorkerLost {
                    instance: inst.id,
                    attempt: inst.attempt,
                    reason: format!("worker {worker} is gone"),
                    now_ms: now,
                }),
                None => {}
            }
        }

        while !cmds.is_empty() && !token.is_cancelled() {
            let rest = cmds.split_off(cmds.len().min(MAX_BATCH));
            let batch = std::mem::replace(&mut cmds, rest);
            self.commit_and_send(batch).await;
        }
    }

    async fn commit_and_send(&mut self, commands: Vec<Command>) {
        let n = commands.len();
        let replies = match self.raft.client_write(Command::Batch { commands }).await {
            Ok(r) => r.data.0,
            Err(e) => {
                tracing::warn!(error = %e, commands = n, "dispatch batch not committed");
                return;
            }
        };
        let Ok(Reply::Batch(replies)) = replies else { return };
        for reply in replies {
            match reply {
                Ok(Reply::Instance(inst)) => self.after_commit(&inst),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "dispatch command refused"),
            }
        }
    }

    /// Acts on a committed change: send the dispatch of a new assignment; log the rest.
    fn after_commit(&mut self, inst: &Instance) {
        match inst.status {
            InstanceStatus::WaitingWorkerReceive => {
                let Some(worker) = inst.worker.as_deref() else { return };
                let job = self.state.read().jobs.get(&inst.job_id).map(|j| j.spec.clone());
                let Some(job) = job else { return };
                if self.d.registry.send(worker, dispatch_message(inst, &job, &self.leader)) {
                    self.sent.insert((inst.id, inst.attempt));
                    tracing::info!(instance = inst.id.0, attempt = inst.attempt, %worker, "dispatched");
                } else {
                    tracing::warn!(instance = inst.id.0, attempt = inst.attempt, %worker, "assigned, but the worker's stream is gone; will re-send or declare it lost");
                }
            }
            InstanceStatus::WaitingDispatch => {
                tracing::info!(instance = inst.id.0, reason = %inst.reason, "instance back to waiting");
            }
            InstanceStatus::Failed => {
                tracing::warn!(instance = inst.id.0, reason = %inst.reason, "instance failed");
            }
            _ => {}
        }
    }
}
