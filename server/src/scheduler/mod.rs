//! The leader's time wheel: a min-heap of each enabled job's next fire, built
//! from the replicated state when this node starts leading and rebuilt whenever
//! job definitions change (`State::job_epoch`). Fires due within the
//! pre-dispatch horizon are proposed as `Fire` commands in batches, ahead of
//! their time, so that the dispatch reaches the worker before the fire instant
//! and the worker starts it on the dot by its own clock: nothing waits on a Raft
//! round trip at the fire time itself.
//!
//! Exactly once (rule 3): `Fire` is a no-op unless newer than the job's last
//! fire, and the heap is always computed from the last fire recorded in the
//! state, so a new leader fires exactly what the old one did not.
//!
//! Why a heap: one entry per job, O(log n) per fire, and the next due time is
//! at the top; a hierarchical wheel would only pay off at far more jobs than a
//! leader holds, and would need a resolution (a heap has exact times).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use qron_proto::api::MisfirePolicy;
use qron_raft_store::schedule::{Plan, Timer};
use qron_raft_store::{Command, JobId, Raft, Reply, SharedState, State};
use tokio_util::sync::CancellationToken;

use crate::api::now_ms;
use crate::dispatch::Dispatch;

/// Fires individually recorded when catching up one job's misfires; beyond it
/// the oldest are summarised by one skip record.
const MAX_CATCH_UP_RECORDS: usize = 1_000;
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

struct Wheel {
    heap: BinaryHeap<Reverse<(i64, JobId)>>,
    /// Each timed job's plan and misfire policy (copied from the state at build time).
    plans: HashMap<JobId, (Plan, MisfirePolicy)>,
    /// Fixed-delay jobs whose last instance is still running: re-checked every tick.
    delayed: HashSet<JobId>,
    epoch: u64,
}

impl Wheel {
    fn build(state: &State) -> Wheel {
        let mut w = Wheel {
            heap: BinaryHeap::new(),
            plans: HashMap::new(),
            delayed: HashSet::new(),
            epoch: state.job_epoch,
        };
        for job in state.jobs.values().filter(|j| j.spec.enabled) {
            let Ok(plan) = Plan::new(&job.spec, job.created_at_ms) else {
                continue;
            };
            match plan.timer {
                Timer::Never => continue,
                Timer::FixedDelay { .. } => {
                    w.delayed.insert(job.id);
                }
                Timer::Cron { .. } | Timer::FixedRate { .. } => {
                    let base = job.last_fire_ms.unwrap_or(job.created_at_ms - 1);
                    if let Some(next) = plan.next_after(base) {
                        w.heap.push(Reverse((next, job.id)));
                    }
                }
            }
            w.plans.insert(job.id, (plan, job.spec.misfire_policy));
        }
        w
    }

    /// Fixed-delay jobs: the next fire is `delay` after the previous instance ended
    /// (or after the job was created, for the first).
    fn chain_delayed(&mut self, state: &State) {
        let mut ready = Vec::new();
        for id in &self.delayed {
            let (Some(job), Some((plan, _))) = (state.jobs.get(id), self.plans.get(id)) else {
                continue;
            };
            let base = match job.last_fired_instance.and_then(|i| state.instances.get(&i)) {
                None => Some(job.created_at_ms),
                Some(i) if i.status.is_terminal() => i.finished_at_ms.or(Some(i.created_at_ms)),
                Some(_) => None,
            };
            if let Some(next) = base.and_then(|b| plan.next_after(b)) {
                // Never before the last fire: a fire must be newer to count.
                let next = next.max(job.last_fire_ms.map_or(i64::MIN, |l| l + 1));
                ready.push((next, *id));
            }
        }
        for (t, id) in ready {
            self.delayed.remove(&id);
            self.heap.push(Reverse((t, id)));
        }
    }
}

/// Runs the wheel until `token` is cancelled.
pub async fn run(raft: Raft, state: SharedState, d: Arc<Dispatch>, cfg: SchedulerConfig, token: CancellationToken) {
    if !crate::leadership::wait_term_start(&raft, &token).await {
        return;
    }
    let mut wheel = Wheel::build(&state.read());
    tracing::info!(jobs = wheel.plans.len(), "scheduler started");
    let horizon = cfg.horizon.as_millis() as i64;
    let misfire = cfg.misfire_threshold.as_millis() as i64;
    loop {
        {
            let s = state.read();
            if s.job_epoch != wheel.epoch {
                wheel = Wheel::build(&s);
            }
            if !wheel.delayed.is_empty() {
                wheel.chain_delayed(&s);
            }
        }
        let now = now_ms();
        let mut fires: Vec<Command> = Vec::new();
        while let Some(Reverse((t, job))) = wheel.heap.peek().copied() {
            if t > now + horizon {
                break;
            }
            wheel.heap.pop();
            let Some((plan, policy)) = wheel.plans.get(&job).cloned() else {
                continue;
            };
            let last = if t < now - misfire {
                catch_up(&plan, job, t, now, misfire, policy, &mut fires)
            } else {
                fires.push(Command::Fire {
                    job,
                    fire_time_ms: t,
                    now_ms: now,
                    skip: None,
                });
                t
            };
            match plan.timer {
                Timer::FixedDelay { .. } => {
                    wheel.delayed.insert(job);
                }
                _ => {
                    if let Some(next) = plan.next_after(last) {
                        wheel.heap.push(Reverse((next, job)));
                    }
                }
            }
        }
        if !fires.is_empty() {
            let ok = propose(&raft, fires).await;
            d.wake();
            if !ok {
                // Some fires may not be committed: start again from what the state says.
                wheel = Wheel::build(&state.read());
            }
        }
        let sleep = wheel
            .heap
            .peek()
            .map(|Reverse((t, _))| (t - horizon - now_ms()).clamp(0, cfg.tick.as_millis() as i64))
            .unwrap_or(cfg.tick.as_millis() as i64);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(sleep as u64)) => {}
        }
    }
    tracing::info!("scheduler stopped");
}

/// Misfires of `job` from `first` on: the policy decides. Returns the last fire
/// time handled (the wheel continues after it).
fn catch_up(
    plan: &Plan,
    job: JobId,
    first: i64,
    now: i64,
    threshold: i64,
    policy: MisfirePolicy,
    out: &mut Vec<Command>,
) -> i64 {
    let mut missed = vec![first];
    let mut t = first;
    while let Some(next) = plan.next_after(t) {
        if next >= now - threshold {
            break;
        }
        missed.push(next);
        t = next;
    }
    tracing::warn!(job = job.0, missed = missed.len(), ?policy, "misfired: catching up");
    let last = *missed.last().unwrap_or(&first);
    // Keep the newest records; the oldest beyond the cap are folded into the first kept one.
    let keep_from = missed.len().saturating_sub(MAX_CATCH_UP_RECORDS);
    let folded = keep_from;
    for (i, fire_time) in missed.into_iter().enumerate().skip(keep_from) {
        let runs = policy == MisfirePolicy::FireOnce && fire_time == last;
        let skip = if runs {
            None
        } else if i == keep_from && folded > 0 {
            Some(format!(
                "misfire ({policy:?}; {folded} earlier misfires not recorded one by one)"
            ))
        } else {
            Some(format!("misfire ({policy:?})"))
        };
        out.push(Command::Fire {
            job,
            fire_time_ms: fire_time,
            now_ms: now,
            skip,
        });
    }
    last
}

/// Proposes fires in batches; false if any batch was not committed.
async fn propose(raft: &Raft, mut fires: Vec<Command>) -> bool {
    while !fires.is_empty() {
        let rest = fires.split_off(fires.len().min(MAX_BATCH));
        let batch = std::mem::replace(&mut fires, rest);
        let n = batch.len();
        match raft.client_write(Command::Batch { commands: batch }).await {
            Ok(r) => {
                if let Ok(Reply::Batch(replies)) = r.data.0 {
                    for e in replies.iter().filter_map(|r| r.as_ref().err()) {
                        tracing::debug!(error = %e, "fire refused");
                    }
                }
                tracing::debug!(fires = n, "fires committed");
            }
            Err(e) => {
                tracing::warn!(error = %e, fires = n, "fires not committed");
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(interval: u64) -> Plan {
        let spec = serde_json::from_value(serde_json::json!({
            "app": "a", "name": "j",
            "schedule": {"type": "fixed_rate", "interval_ms": interval, "start_at_ms": 0},
            "processor": {"type": "shell", "script": "true"}
        }))
        .expect("spec");
        Plan::new(&spec, 0).expect("plan")
    }

    fn summary(out: &[Command]) -> Vec<(i64, bool)> {
        out.iter()
            .map(|c| match c {
                Command::Fire { fire_time_ms, skip, .. } => (*fire_time_ms, skip.is_some()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn fire_once_runs_the_newest_misfire_and_records_the_rest() {
        let mut out = Vec::new();
        let last = catch_up(
            &plan(1_000),
            JobId(1),
            1_000,
            10_500,
            5_000,
            MisfirePolicy::FireOnce,
            &mut out,
        );
        // Misfires are the fires older than now - threshold = 5_500.
        assert_eq!(last, 5_000);
        assert_eq!(
            summary(&out),
            [
                (1_000, true),
                (2_000, true),
                (3_000, true),
                (4_000, true),
                (5_000, false)
            ]
        );
    }

    #[test]
    fn skip_records_every_misfire() {
        let mut out = Vec::new();
        let last = catch_up(
            &plan(1_000),
            JobId(1),
            1_000,
            10_500,
            5_000,
            MisfirePolicy::Skip,
            &mut out,
        );
        assert_eq!(last, 5_000);
        assert!(summary(&out).iter().all(|(_, skipped)| *skipped));
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn long_outages_are_bounded() {
        let mut out = Vec::new();
        let last = catch_up(
            &plan(100),
            JobId(1),
            100,
            10_000_000,
            5_000,
            MisfirePolicy::FireOnce,
            &mut out,
        );
        assert_eq!(out.len(), MAX_CATCH_UP_RECORDS);
        assert_eq!(last, 9_994_900);
        assert!(matches!(&out[0], Command::Fire { skip: Some(s), .. } if s.contains("earlier misfires")));
    }
}
