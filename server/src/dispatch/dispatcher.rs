//! The leader's dispatcher loop: each round gathers the applied state, the
//! registry and the time, lets [`plan`](super::plan::plan) decide, proposes the
//! plan's commands in batches and sends each new assignment's dispatch only
//! once it is committed (rule 2, docs/rules.md).
//!
//! It is one of the leader's tasks: `leadership.rs` starts it after the term's
//! barrier and cancels it when the leadership ends. An error it returns, or a
//! panic, ends up with the leadership supervisor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qron_proto::worker::LeaderId;
use qron_raft_store::{Attempt, Command, Instance, InstanceId, InstanceStatus, Reply};
use tokio_util::sync::CancellationToken;

use super::plan::{self, Inputs, Send};
use super::{messages, Dispatch};
use crate::clock::now_ms;
use crate::context::Context;
use crate::raft::propose_batch;

/// Upper bound of commands per proposed batch.
const MAX_BATCH: usize = 1_000;
/// Rounds run at least this often even when nothing wakes the dispatcher.
const TICK: Duration = Duration::from_millis(50);

struct Dispatcher<'a> {
    ctx: &'a Context,
    d: &'a Dispatch,
    leader: LeaderId,
    started: Instant,
    /// (instance, attempt) dispatches this leadership has sent, and the
    /// worker stream each went on.
    sent: HashMap<(InstanceId, Attempt), u64>,
    /// When this leadership last sent a Stop for each unconfirmed stopped attempt.
    stops_sent: HashMap<(InstanceId, Attempt), i64>,
    turn: u64,
    /// When the last round that looked at every active instance ran, the
    /// registry's changes it saw and whether the grace was over then.
    swept: Option<(Instant, u64, bool)>,
}

/// Runs rounds until `token` is cancelled. Starts after the term's barrier
/// (`leadership.rs`), so it acts on state that includes every earlier commit.
pub async fn run(
    ctx: Arc<Context>,
    d: Arc<Dispatch>,
    leader: LeaderId,
    token: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(term = leader.term, "dispatcher started");
    let mut me = Dispatcher {
        ctx: &ctx,
        d: &d,
        leader,
        started: Instant::now(),
        sent: HashMap::new(),
        stops_sent: HashMap::new(),
        turn: 0,
        swept: None,
    };
    // Hand-overs of an earlier leadership: the sweep re-sends what is still due.
    drop(d.take_committed());
    loop {
        me.round(&token).await;
        tokio::select! {
            _ = token.cancelled() => break,
            _ = d.notify.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    tracing::info!(term = leader.term, "dispatcher stopped");
    Ok(())
}

impl Dispatcher<'_> {
    async fn round(&mut self, token: &CancellationToken) {
        // The scheduler's fires committed already assigned leave first (a
        // yield now and then: thousands may come at once).
        for (i, handed) in self.d.take_committed().into_iter().enumerate() {
            // As the state holds it now: a hand-over can wait while a busy round
            // commits, and meanwhile the attempt may have been stopped, lost or
            // finished. Only the live assignment it names is sent.
            let now = self.ctx.state.read().instance_opt(handed.id);
            let live = now.filter(|i| {
                i.status == InstanceStatus::WaitingWorkerReceive
                    && i.attempt == handed.attempt
                    && i.worker == handed.worker
                    && i.worker_incarnation == handed.worker_incarnation
            });
            if let Some(inst) = live.filter(|i| !self.sent.contains_key(&(i.id, i.attempt))) {
                self.after_commit(&inst);
            }
            if i % 512 == 511 {
                tokio::task::yield_now().await;
            }
        }
        for w in self.d.registry.expire(self.d.cfg.worker_timeout) {
            tracing::warn!(worker = %w, timeout = ?self.d.cfg.worker_timeout, "worker timed out; its instances will be retried");
        }
        let changes = self.d.registry.changes();
        let workers = self.d.registry.snapshot();
        let now = now_ms();
        let grace_over = self.started.elapsed() >= self.d.cfg.failover_grace;
        let sweep = self.swept.is_none_or(|(at, seen, grace)| {
            at.elapsed() >= Duration::from_millis(plan::SWEEP_MS) || seen != changes || grace != grace_over
        });
        if sweep {
            self.swept = Some((Instant::now(), changes, grace_over));
        }
        let p = {
            let state = self.ctx.state.read();
            let unconfirmed: std::collections::HashSet<_> = state.unconfirmed_ids().into_iter().collect();
            self.stops_sent.retain(|(id, _), _| unconfirmed.contains(id));
            if sweep {
                forget_inactive(&mut self.sent, &state.active_ids());
            }
            plan::plan(
                &state,
                &workers,
                Inputs {
                    now_ms: now,
                    grace_over,
                    horizon_ms: self.d.cfg.horizon.as_millis() as i64,
                    sent: &self.sent,
                    stops_sent: &self.stops_sent,
                    turn: self.turn,
                    sweep,
                    unsafe_dispatch_before_commit: self.d.cfg.unsafe_dispatch_before_commit,
                    unsafe_unconfirmed_stops: self.d.cfg.unsafe_unconfirmed_stops,
                },
            )
        };
        self.turn = p.turn;
        for s in &p.early {
            self.d
                .registry
                .send(&s.worker, messages::dispatch(&s.instance, &s.job, &self.leader, now));
        }
        for s in &p.stops {
            let m = messages::stop_attempt(s.instance, s.attempt, &self.leader, "stopped by an operator");
            if self.d.registry.send(&s.worker, m) {
                self.stops_sent.insert((s.instance, s.attempt), now);
                tracing::debug!(instance = s.instance.0, attempt = s.attempt.0, worker = %s.worker, "sent stop (not yet confirmed)");
            }
        }
        for s in p.resend {
            if self.send(&s) {
                tracing::info!(instance = s.instance.id.0, attempt = s.instance.attempt.0, worker = %s.worker, "re-sent committed dispatch");
            }
        }
        let mut cmds = p.commands;
        while !cmds.is_empty() && !token.is_cancelled() {
            let rest = cmds.split_off(cmds.len().min(MAX_BATCH));
            let batch = std::mem::replace(&mut cmds, rest);
            self.commit_and_send(batch).await;
        }
    }

    /// Sends a committed assignment to its worker; remembers it if the stream took it.
    fn send(&mut self, s: &Send) -> bool {
        let conn = self.d.registry.send_on(
            &s.worker,
            messages::dispatch(&s.instance, &s.job, &self.leader, now_ms()),
        );
        if let Some(conn) = conn {
            self.sent.insert((s.instance.id, s.instance.attempt), conn);
        }
        conn.is_some()
    }

    async fn commit_and_send(&mut self, commands: Vec<Command>) {
        let n = commands.len();
        let replies = match propose_batch(&self.ctx.raft, commands).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, commands = n, "dispatch batch not committed");
                return;
            }
        };
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
                let Some(worker) = inst.worker.clone() else { return };
                let job = self.ctx.state.read().job(inst.job_id).ok().map(|j| j.spec);
                let Some(job) = job else { return };
                let s = Send {
                    worker,
                    instance: inst.clone(),
                    job,
                };
                if self.send(&s) {
                    tracing::info!(instance = inst.id.0, attempt = inst.attempt.0, worker = %s.worker, "dispatched");
                } else {
                    tracing::warn!(instance = inst.id.0, attempt = inst.attempt.0, worker = %s.worker, "assigned, but the worker's stream is gone or full; will re-send or declare it lost");
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

/// Keeps only the sent dispatches of active instances: what was sent matters
/// only while its instance may need a re-send (an assigned one). Without this the
/// set held every dispatch of the leadership: at a thousand instances a second,
/// 20 to 40 bytes each, gigabytes a day, all of it on the leader.
fn forget_inactive(sent: &mut HashMap<(InstanceId, Attempt), u64>, active: &[InstanceId]) {
    let active: HashSet<InstanceId> = active.iter().copied().collect();
    sent.retain(|(id, _), _| active.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_set_forgets_instances_that_are_no_longer_active() {
        let mut sent: HashMap<(InstanceId, Attempt), u64> =
            (1..=1_000).map(|i| ((InstanceId(i), Attempt(1)), 1)).collect();
        sent.insert((InstanceId(7), Attempt(2)), 2);
        forget_inactive(&mut sent, &[InstanceId(7), InstanceId(999), InstanceId(5_000)]);
        let want: HashMap<(InstanceId, Attempt), u64> = [(7, 1, 1), (7, 2, 2), (999, 1, 1)]
            .into_iter()
            .map(|(i, a, c)| ((InstanceId(i), Attempt(a)), c))
            .collect();
        assert_eq!(sent, want);
    }
}
