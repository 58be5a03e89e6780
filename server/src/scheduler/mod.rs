//! The leader's scheduler loop: keeps a [`Wheel`] built from the replicated
//! state (when job definitions change, `State::job_epoch`, it re-plans the
//! jobs the state machine says changed, or rebuilds when it cannot say), takes
//! the fires due within the pre-dispatch horizon, assigns each to a worker as it
//! fires (`dispatch::plan::pre_assign`), and proposes them as `FireAssign`
//! commands in batches, ahead of their time. Once a batch commits, its
//! assignments go to the dispatcher, which sends them at once: the dispatch
//! reaches the worker before the fire instant and the worker starts it on the
//! dot by its own clock. Nothing waits on a Raft round trip at the fire time
//! itself, and a scheduled instance costs one entry before its dispatch, not
//! two (a fire no worker can take now stays a plain `Fire`, which the
//! dispatcher assigns later).
//!
//! It is one of the leader's tasks: `leadership.rs` starts it after the term's
//! barrier and cancels it when the leadership ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use qron_raft_store::{Command, InstanceStatus, Raft, Reply};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::context::Context;
use crate::dispatch::{plan, Dispatch};
use crate::raft::propose_batch;

pub mod wheel;

pub use wheel::Wheel;

/// Commands per proposed batch.
const MAX_BATCH: usize = 2_000;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Fires due within this are committed and dispatched ahead of time.
    pub horizon: Duration,
    /// A fire found later than this past its time is a misfire (the job's policy applies).
    pub misfire_threshold: Duration,
    /// How often the wheel is looked at when nothing wakes it.
    pub tick: Duration,
}

/// Runs the wheel until `token` is cancelled. Starts after the term's barrier
/// (`leadership.rs`), so the wheel is built from state that includes every earlier fire.
pub async fn run(
    ctx: Arc<Context>,
    d: Arc<Dispatch>,
    cfg: SchedulerConfig,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let mut wheel = Wheel::build(&ctx.state.read());
    tracing::info!(jobs = wheel.jobs(), "scheduler started");
    let horizon = cfg.horizon.as_millis() as i64;
    let misfire = cfg.misfire_threshold.as_millis() as i64;
    let tick = cfg.tick.as_millis() as i64;
    // Drives the round-robin and random picks of fires assigned as they fire.
    let mut turn = 0u64;
    // A burst of due fires is taken in steps (MAX_BATCH jobs each). Its steps
    // share the time it was first taken (a long burst's own commits must not
    // turn its last fires into misfires) and the count of what each worker was
    // handed (their heartbeats do not show it yet).
    let mut burst: Option<i64> = None;
    let mut pending = HashMap::new();
    loop {
        {
            let s = ctx.state.read();
            let epoch = s.job_epoch();
            if epoch != wheel.epoch {
                let updated = ctx
                    .state
                    .jobs_changed(wheel.epoch, epoch)
                    .is_some_and(|changed| wheel.update(&s, &changed));
                if !updated {
                    wheel = Wheel::build(&s);
                    tracing::debug!(jobs = wheel.jobs(), "wheel rebuilt");
                }
            }
            if wheel.has_delayed() {
                wheel.chain_delayed(&s);
            }
        }
        let now = burst.unwrap_or_else(now_ms);
        if burst.is_none() {
            pending.clear();
        }
        let fires = {
            let s = ctx.state.read();
            let fires = wheel.take_due_at_most(&s, now, horizon, misfire, MAX_BATCH);
            if fires.is_empty() {
                fires
            } else {
                plan::pre_assign(&s, &d.registry.snapshot(), fires, &mut turn, &mut pending)
            }
        };
        burst = wheel.next_due().filter(|t| *t <= now + horizon).map(|_| now);
        if !fires.is_empty() {
            let ok = propose(&ctx.raft, &d, fires).await;
            d.wake();
            if !ok {
                // Some fires may not be committed: start again from what the state says.
                wheel = Wheel::build(&ctx.state.read());
                burst = None;
            }
        }
        let sleep = wheel
            .next_due()
            .map(|t| (t - horizon - now_ms()).clamp(0, tick))
            .unwrap_or(tick);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(sleep as u64)) => {}
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Proposes fires in batches and hands the committed assignments to the
/// dispatcher; false if any batch was not committed.
async fn propose(raft: &Raft, d: &Dispatch, mut fires: Vec<Command>) -> bool {
    while !fires.is_empty() {
        let rest = fires.split_off(fires.len().min(MAX_BATCH));
        let batch = std::mem::replace(&mut fires, rest);
        let n = batch.len();
        match propose_batch(raft, batch).await {
            Ok(replies) => {
                let mut assigned = Vec::new();
                for r in replies {
                    match r {
                        Ok(Reply::Instance(i)) if i.status == InstanceStatus::WaitingWorkerReceive => assigned.push(*i),
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "fire refused"),
                    }
                }
                tracing::debug!(fires = n, assigned = assigned.len(), "fires committed");
                d.hand_over(assigned);
            }
            Err(e) => {
                tracing::warn!(error = %e, fires = n, "fires not committed");
                return false;
            }
        }
    }
    true
}
