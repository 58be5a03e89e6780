//! The leader's time wheel as a pure structure: a min-heap of each enabled
//! job's next fire, built from the replicated state ([`Wheel::build`]), and
//! [`Wheel::take_due`], which turns what is due within the horizon into `Fire`
//! commands (misfires per the job's policy). No clock, no Raft: the loop in
//! `scheduler/mod.rs` passes the time in and proposes what comes out.
//!
//! Exactly once (rule 3, docs/rules.md): the heap is always computed from the
//! last fire recorded in the state, and `Fire` is a no-op unless newer than it,
//! so a new leader fires exactly what the old one did not.
//!
//! Why a heap: one entry per job, O(log n) per fire, and the next due time is
//! at the top; a hierarchical wheel would only pay off at far more jobs than a
//! leader holds, and would need a resolution (a heap has exact times).
//!
//! Job changes: [`Wheel::update`] re-plans only the jobs that changed (the
//! state machine tells which: `SharedState::jobs_changed`), so creating a job
//! costs O(log n) here, not a read of every job. A changed job's old heap
//! entry stays where it is and is dropped when it comes up: each entry
//! carries its job's generation, and only changed jobs have one. A full
//! [`Wheel::build`] empties that map and the left-over entries once either
//! passes [`MAX_GENERATIONS`] (one job changed over and over leaves an entry
//! per change until its old times come up).
//!
//! Memory: the heap holds a time, a job id and a generation per timed job
//! (24 bytes), and nothing else per job. A job's plan (its parsed cron expression: most of a
//! kilobyte) is made from the job's record when the job is due, not kept:
//! a leader with a million jobs keeps tens of megabytes here, not a gigabyte.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use qron_proto::api::MisfirePolicy;
use qron_raft_store::schedule::{Plan, Timer};
use qron_raft_store::{Command, JobId, State};

/// Fires individually recorded when catching up one job's misfires; beyond it
/// the oldest are summarised by one skip record.
const MAX_CATCH_UP_RECORDS: usize = 1_000;

/// Changed jobs tracked one by one, or entries left over by changes, before
/// [`Wheel::update`] asks for a full build.
pub const MAX_GENERATIONS: usize = 50_000;

/// Each timed job's next fire, earliest first.
pub struct Wheel {
    /// (fire time, job, the job's generation when the entry was made).
    heap: BinaryHeap<Reverse<(i64, JobId, u64)>>,
    /// The generation of each job changed since the build (others: 0).
    generations: HashMap<JobId, u64>,
    /// At most this many heap entries are of an older generation than their job's.
    stale: usize,
    /// Fixed-delay jobs whose last instance is still running: re-checked every tick.
    delayed: HashSet<JobId>,
    /// Timed jobs held at the build.
    jobs: usize,
    /// The `State::job_epoch` the wheel follows: update or rebuild when the state's moves.
    pub epoch: u64,
}

impl Wheel {
    /// Builds the wheel from the applied state.
    pub fn build(state: &State) -> Wheel {
        let mut w = Wheel {
            heap: BinaryHeap::new(),
            generations: HashMap::new(),
            stale: 0,
            delayed: HashSet::new(),
            jobs: 0,
            epoch: state.job_epoch(),
        };
        state.for_each_job(|job| {
            if w.plan(&job, 0) {
                w.jobs += 1;
            }
        });
        w
    }

    /// Puts `job`'s next fire on the heap (or in the delayed set) under
    /// `generation`; false if it has none (disabled, API-only, no next time).
    fn plan(&mut self, job: &qron_raft_store::model::Job, generation: u64) -> bool {
        let Some((plan, _)) = plan_of(job) else {
            return false;
        };
        match plan.timer {
            Timer::Never => false,
            Timer::FixedDelay { .. } => {
                self.delayed.insert(job.id);
                true
            }
            Timer::Cron { .. } | Timer::FixedRate { .. } => {
                let base = job.last_fire_ms.unwrap_or(job.created_at_ms - 1);
                match plan.next_after(base) {
                    Some(next) => {
                        self.heap.push(Reverse((next, job.id, generation)));
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Re-plans the jobs in `changed` from `state` (created, updated, enabled,
    /// disabled or deleted since [`Wheel::epoch`]) and moves to `state`'s
    /// epoch. Returns false, changing nothing, when so many jobs changed since
    /// the build that a full [`Wheel::build`] is due.
    pub fn update(&mut self, state: &State, changed: &[JobId]) -> bool {
        if self.generations.len() + changed.len() > MAX_GENERATIONS || self.stale + changed.len() > MAX_GENERATIONS {
            return false;
        }
        for id in changed {
            let g = self.generations.entry(*id).or_insert(0);
            *g += 1;
            let g = *g;
            // Its entry on the heap, if it had one, is now stale.
            self.stale += 1;
            self.delayed.remove(id);
            if let Ok(job) = state.job(*id) {
                self.plan(&job, g);
            }
        }
        self.epoch = state.job_epoch();
        true
    }

    fn generation(&self, job: JobId) -> u64 {
        self.generations.get(&job).copied().unwrap_or(0)
    }

    /// Fixed-delay jobs: the next fire is `delay` after the previous instance ended
    /// (or after the job was created, for the first).
    pub fn chain_delayed(&mut self, state: &State) {
        let mut ready = Vec::new();
        for id in &self.delayed {
            let Some((job, (plan, _))) = state.job(*id).ok().and_then(|j| plan_of(&j).map(|p| (j, p))) else {
                continue;
            };
            let base = match job.last_fired_instance.and_then(|i| state.instance_opt(i)) {
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
            self.heap.push(Reverse((t, id, self.generation(id))));
        }
    }

    /// Jobs the wheel held when it was built.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Whether fixed-delay jobs wait for their previous instance to end.
    pub fn has_delayed(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// The next fire time held, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Every due job at once: [`Wheel::take_due_at_most`] without a bound (the
    /// tests' shorthand).
    #[cfg(test)]
    pub fn take_due(&mut self, state: &State, now: i64, horizon: i64, misfire: i64) -> Vec<Command> {
        self.take_due_at_most(state, now, horizon, misfire, usize::MAX)
    }

    /// Takes the fires due at or before `now + horizon` of at most `max_jobs`
    /// jobs (the earliest) and returns the `Fire` commands for them (with `now`
    /// as the proposer's time); the rest stay due on the heap. The caller holds
    /// the state's read lock meanwhile, so a burst of due jobs is taken in
    /// bounded steps that let the state machine apply in between. A fire more
    /// than `misfire` in the past is a misfire: the job's policy decides
    /// ([`catch_up`]). Each job's next fire goes back on the heap. A job that
    /// `state` no longer holds enabled and timed is dropped (the wheel is
    /// re-planned when the jobs change; this only spares a fire in between).
    pub fn take_due_at_most(
        &mut self,
        state: &State,
        now: i64,
        horizon: i64,
        misfire: i64,
        max_jobs: usize,
    ) -> Vec<Command> {
        let mut fires = Vec::new();
        let mut taken = 0usize;
        let mut misfired: Vec<(JobId, usize)> = Vec::new();
        while let Some(Reverse((t, job, generation))) = self.heap.peek().copied() {
            if t > now + horizon || taken >= max_jobs {
                break;
            }
            taken += 1;
            self.heap.pop();
            if generation != self.generation(job) {
                // Planned before the job last changed: its new entry is elsewhere.
                self.stale = self.stale.saturating_sub(1);
                continue;
            }
            let Some((plan, policy)) = state.job(job).ok().as_ref().and_then(plan_of) else {
                continue;
            };
            let last = if t < now - misfire {
                let before = fires.len();
                let last = catch_up(&plan, job, t, now, misfire, policy, &mut fires);
                misfired.push((job, fires.len() - before));
                last
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
                    self.delayed.insert(job);
                }
                _ => {
                    if let Some(next) = plan.next_after(last) {
                        self.heap.push(Reverse((next, job, generation)));
                    }
                }
            }
        }
        // One line for all of them: after an outage every job may misfire at once.
        if let Some((first, missed)) = misfired.first() {
            tracing::warn!(
                jobs = misfired.len(),
                first_job = first.0,
                first_missed = missed,
                "misfired: catching up per each job's misfire policy"
            );
        }
        fires
    }
}

/// An enabled job's plan and misfire policy; None if it is disabled or its
/// schedule cannot be planned.
fn plan_of(job: &qron_raft_store::model::Job) -> Option<(Plan, MisfirePolicy)> {
    if !job.spec.enabled {
        return None;
    }
    let plan = Plan::new(&job.spec, job.created_at_ms).ok()?;
    Some((plan, job.spec.misfire_policy))
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
    tracing::debug!(job = job.0, missed = missed.len(), ?policy, "misfired: catching up");
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

    fn state_with_fixed_rate_job(interval_ms: u64, created_at_ms: i64) -> State {
        let mut s = State::default();
        s.apply(&Command::CreateApp {
            name: "a".into(),
            secret: "secret".into(),
            now_ms: created_at_ms,
        })
        .0
        .expect("app");
        let spec = serde_json::from_value(serde_json::json!({
            "app": "a", "name": "j",
            "schedule": {"type": "fixed_rate", "interval_ms": interval_ms, "start_at_ms": 0},
            "processor": {"type": "shell", "script": "true"}
        }))
        .expect("spec");
        s.apply(&Command::CreateJob {
            spec,
            now_ms: created_at_ms,
        })
        .0
        .expect("job");
        s
    }

    #[test]
    fn take_due_at_most_takes_the_earliest_jobs_and_leaves_the_rest_due() {
        let mut s = state_with_fixed_rate_job(1_000, 10_500);
        for name in ["j2", "j3", "j4", "j5"] {
            let spec = serde_json::from_value(serde_json::json!({
                "app": "a", "name": name,
                "schedule": {"type": "fixed_rate", "interval_ms": 1_000, "start_at_ms": 0},
                "processor": {"type": "shell", "script": "true"}
            }))
            .expect("spec");
            s.apply(&Command::CreateJob { spec, now_ms: 10_500 }).0.expect("job");
        }
        let mut w = Wheel::build(&s);
        let ids = |fires: &[Command]| -> Vec<(u64, i64)> {
            fires
                .iter()
                .map(|c| match c {
                    Command::Fire { job, fire_time_ms, .. } => (job.0, *fire_time_ms),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let first = ids(&w.take_due_at_most(&s, 10_950, 100, 5_000, 2));
        assert_eq!(first, vec![(1, 11_000), (2, 11_000)]);
        assert_eq!(w.next_due(), Some(11_000), "the others are still due");
        let rest = ids(&w.take_due_at_most(&s, 10_950, 100, 5_000, 10));
        assert_eq!(rest, vec![(3, 11_000), (4, 11_000), (5, 11_000)]);
        assert_eq!(w.next_due(), Some(12_000));
        assert!(w.take_due_at_most(&s, 10_950, 100, 5_000, 10).is_empty());
    }

    #[test]
    fn take_due_fires_within_the_horizon_once_and_keeps_the_next() {
        let s = state_with_fixed_rate_job(1_000, 10_500);
        let mut w = Wheel::build(&s);
        assert_eq!(w.jobs(), 1);
        assert_eq!(w.next_due(), Some(11_000));
        // Not yet within the horizon (100 ms).
        assert!(w.take_due(&s, 10_800, 100, 5_000).is_empty());
        let fires = w.take_due(&s, 10_900, 100, 5_000);
        assert_eq!(summary(&fires), [(11_000, false)]);
        assert_eq!(w.next_due(), Some(12_000), "the next fire is back on the heap");
        assert!(w.take_due(&s, 10_950, 100, 5_000).is_empty(), "taken once");
        // Two periods at once (a slow tick): both fire, in order.
        assert_eq!(
            summary(&w.take_due(&s, 12_950, 100, 5_000)),
            [(12_000, false), (13_000, false)]
        );
    }

    #[test]
    fn a_job_disabled_after_the_build_is_not_fired() {
        let mut s = state_with_fixed_rate_job(1_000, 10_500);
        let mut w = Wheel::build(&s);
        s.apply(&Command::SetJobEnabled {
            id: JobId(1),
            enabled: false,
            now_ms: 10_600,
        })
        .0
        .expect("disable");
        assert!(w.take_due(&s, 10_950, 100, 5_000).is_empty());
        assert_eq!(w.next_due(), None, "dropped, not put back");
    }

    #[test]
    fn a_rebuilt_wheel_starts_after_the_last_recorded_fire() {
        let mut s = state_with_fixed_rate_job(1_000, 10_500);
        let mut w = Wheel::build(&s);
        for f in w.take_due(&s, 10_950, 100, 5_000) {
            s.apply(&f).0.expect("fire");
        }
        // A new leader builds from the state: it must not fire 11_000 again.
        let w2 = Wheel::build(&s);
        assert_eq!(w2.next_due(), Some(12_000));
    }

    fn job_spec(name: &str, schedule: serde_json::Value) -> qron_proto::api::JobSpec {
        serde_json::from_value(serde_json::json!({
            "app": "a", "name": name, "schedule": schedule,
            "processor": {"type": "shell", "script": "true"}
        }))
        .expect("spec")
    }

    fn fixed_rate(ms: u64) -> serde_json::Value {
        serde_json::json!({"type": "fixed_rate", "interval_ms": ms, "start_at_ms": 0})
    }

    /// (job, fire time) of each fire taken at each step of `now` from 10.9 s to 20 s.
    fn fires_over_time(w: &mut Wheel, s: &State) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        for now in (10_900..20_000).step_by(150) {
            for c in w.take_due(s, now, 100, 5_000) {
                match c {
                    Command::Fire { job, fire_time_ms, .. } => out.push((job.0, fire_time_ms)),
                    other => panic!("{other:?}"),
                }
            }
        }
        out
    }

    #[test]
    fn an_updated_wheel_fires_what_a_rebuilt_one_fires() {
        let mut s = state_with_fixed_rate_job(1_000, 10_500);
        for (name, ms) in [("two", 700), ("three", 400), ("four", 900)] {
            s.apply(&Command::CreateJob {
                spec: job_spec(name, fixed_rate(ms)),
                now_ms: 10_500,
            })
            .0
            .expect("job");
        }
        let mut w = Wheel::build(&s);
        // Fires taken before the changes (and recorded, as the leader's would be).
        for f in w.take_due(&s, 10_950, 100, 5_000) {
            s.apply(&f).0.expect("fire");
        }
        let before = s.job_epoch();
        let changes = [
            Command::UpdateJob {
                id: JobId(1),
                spec: job_spec("j", fixed_rate(500)),
                now_ms: 11_000,
            },
            Command::SetJobEnabled {
                id: JobId(2),
                enabled: false,
                now_ms: 11_000,
            },
            Command::DeleteJob { id: JobId(3) },
            Command::CreateJob {
                spec: job_spec("five", fixed_rate(300)),
                now_ms: 11_000,
            },
            Command::UpdateJob {
                id: JobId(4),
                spec: job_spec("four", serde_json::json!({"type": "api"})),
                now_ms: 11_000,
            },
        ];
        for c in &changes {
            s.apply(c).0.expect("change");
        }
        assert!(s.job_epoch() > before);
        let changed: Vec<JobId> = (1..=5).map(JobId).collect();
        assert!(w.update(&s, &changed));
        assert_eq!(w.epoch, s.job_epoch());
        let mut rebuilt = Wheel::build(&s);
        let updated = fires_over_time(&mut w, &s);
        assert_eq!(updated, fires_over_time(&mut rebuilt, &s));
        // And what that is: job 1 every 500 ms, job 5 every 300 ms, nothing else.
        assert!(updated.iter().all(|(job, _)| *job == 1 || *job == 5), "{updated:?}");
        assert!(
            updated.contains(&(1, 11_500)) && updated.contains(&(5, 11_100)),
            "{updated:?}"
        );
    }

    #[test]
    fn a_job_changed_twice_fires_once_per_time() {
        let mut s = state_with_fixed_rate_job(1_000, 10_500);
        let mut w = Wheel::build(&s);
        for ms in [2_000, 1_000] {
            s.apply(&Command::UpdateJob {
                id: JobId(1),
                spec: job_spec("j", fixed_rate(ms)),
                now_ms: 10_600,
            })
            .0
            .expect("update");
            assert!(w.update(&s, &[JobId(1)]));
        }
        // Three entries for job 1 are on the heap; only the newest counts.
        let fires = fires_over_time(&mut w, &s);
        let times: Vec<i64> = fires.iter().map(|(_, t)| *t).collect();
        assert_eq!(times, (11..=20).map(|k| k * 1_000).collect::<Vec<_>>());
    }

    #[test]
    fn too_many_changes_ask_for_a_build() {
        let mut w = Wheel::build(&State::default());
        let many: Vec<JobId> = (0..=MAX_GENERATIONS as u64).map(JobId).collect();
        assert!(!w.update(&State::default(), &many));
        assert!(w.update(&State::default(), &many[..10]));
    }

    #[test]
    fn one_job_changed_over_and_over_asks_for_a_build_in_the_end() {
        let s = state_with_fixed_rate_job(1_000, 10_500);
        let mut w = Wheel::build(&s);
        for _ in 0..MAX_GENERATIONS {
            assert!(w.update(&s, &[JobId(1)]));
        }
        assert_eq!(w.heap.len(), MAX_GENERATIONS + 1, "an entry per change");
        assert!(!w.update(&s, &[JobId(1)]), "the left-over entries ask for a build");
        // Taking the due ones drops the stale entries (and counts them gone).
        assert_eq!(w.take_due(&s, 10_950, 100, 5_000).len(), 1);
        assert_eq!(w.stale, 0);
        assert!(w.update(&s, &[JobId(1)]));
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
