//! Retention in `apply`: `Command::Expire`, `SetAppRetention`, `SetClusterRetention`.
//!
//! Owns the removal of instances and logs and the guard that keeps it safe:
//! whatever the leader proposed, an instance is removed only if it is
//! [`State::expirable`] when the command applies — finished, with no stop
//! waiting for its worker's confirmation, and not the instance a fixed-delay
//! job chains its next fire from. Which instances expire is the policy's
//! business ([`plan`] below, pure), not the removal's.

use qron_proto::api::Retention;

use super::State;
use crate::command::{CommandError, Reply};
use crate::instance::{Instance, InstanceId};
use crate::retention::{validate, validate_cluster, Plan, MAX_JOBS_PER_PLAN};
use crate::types::JobId;

impl State {
    /// The next bounded batch the retention policy lets expire at `now_ms`,
    /// walking the jobs from `from` (see [`plan`]).
    pub fn expiry_plan(&self, now_ms: i64, max: usize, from: JobId) -> Plan {
        plan(self, now_ms, max, from)
    }

    /// Whether `inst` may be removed now: finished (an operator's retry cannot
    /// revive what is gone, so only a finished instance is history), no stop
    /// pending confirmation (its worker may still run it), and not its job's
    /// newest fire (a fixed-delay job chains its next fire from its end).
    pub fn expirable(&self, inst: &Instance) -> bool {
        inst.status.is_terminal()
            && inst.stop_pending.is_none()
            && self
                .job(inst.job_id)
                .map_or(true, |j| j.last_fired_instance != Some(inst.id))
    }

    pub(super) fn expire(&mut self, instances: &[InstanceId], logs: &[InstanceId]) -> Result<Reply, CommandError> {
        let mut removed = 0u64;
        for id in instances {
            let Some(inst) = self.instance_opt(*id) else { continue };
            if !self.expirable(&inst) {
                continue;
            }
            self.del_instance(&inst);
            if let Ok(mut job) = self.job(inst.job_id) {
                job.expired += 1;
                if let Some(f) = inst.fire_time_ms {
                    job.expired_fires_through_ms = Some(job.expired_fires_through_ms.map_or(f, |t| t.max(f)));
                }
                self.put_job(&job);
            }
            self.count_expired();
            removed += 1;
        }
        let mut logs_removed = 0u64;
        for id in logs {
            let Some(mut inst) = self.instance_opt(*id) else {
                continue;
            };
            if !self.expirable(&inst) {
                continue;
            }
            if self.remove_log(*id) {
                inst.log_expired = true;
                self.put_instance(&inst);
                logs_removed += 1;
            }
        }
        Ok(Reply::Expired {
            instances: removed,
            logs: logs_removed,
        })
    }

    pub(super) fn set_app_retention(&mut self, app: &str, retention: &Retention) -> Result<Reply, CommandError> {
        validate("app retention", retention).map_err(CommandError::Invalid)?;
        let mut a = self
            .app(app)
            .ok_or_else(|| CommandError::NotFound(format!("app {app:?}")))?;
        a.retention = retention.clone();
        self.put_app(&a);
        Ok(Reply::App(Box::new(a)))
    }

    pub(super) fn set_cluster_retention(
        &mut self,
        max_age_ms: Option<u64>,
        max_count: Option<u64>,
        max_log_bytes: Option<u64>,
    ) -> Result<Reply, CommandError> {
        validate_cluster(max_age_ms, max_count, max_log_bytes).map_err(CommandError::Invalid)?;
        let mut r = self.retention();
        if let Some(v) = max_age_ms {
            r.max_age_ms = v;
        }
        if let Some(v) = max_count {
            r.max_count = v;
        }
        if let Some(v) = max_log_bytes {
            r.max_log_bytes = v;
        }
        self.put_retention(&r);
        Ok(Reply::ClusterRetention(r))
    }
}

/// The policy in force for one job's instances: (max age, max count).
fn effective(state: &State, cluster: &crate::retention::ClusterPolicy, job: JobId, app: &str) -> (u64, u64) {
    let job = state.job(job).ok().map(|j| j.spec.retention);
    let app = state.app(app).map(|a| a.retention);
    let pick = |f: fn(&Retention) -> Option<u64>, cluster: u64| {
        job.as_ref()
            .and_then(f)
            .or_else(|| app.as_ref().and_then(f))
            .unwrap_or(cluster)
    };
    (
        pick(|r| r.max_age_ms, cluster.max_age_ms),
        pick(|r| r.max_count, cluster.max_count),
    )
}

/// Picks at most `max` instances (and `max` logs) that the policy lets expire
/// at `now_ms`, oldest first within each job. Pure: the same state and time
/// give the same plan.
///
/// The jobs are walked from `from`, at most [`MAX_JOBS_PER_PLAN`] of them;
/// `next_job` says where the next plan resumes. Per job, its instances are walked from the oldest: one expires when it is
/// expirable (`State::expirable`) and either not among the newest `max_count`
/// or finished before `now_ms - max_age`. The walk stops at the first instance
/// created after that cut-off once the count is satisfied (every later one is
/// younger). Then, while all logs together exceed the cluster's bound, the
/// oldest logs of finished instances go.
pub(super) fn plan(state: &State, now_ms: i64, max: usize, from: JobId) -> Plan {
    let mut out = Plan::default();
    let cluster = state.retention();
    let mut jobs = Vec::new();
    state.jobs_with_instances(from, |job, held| {
        jobs.push((job, held));
        jobs.len() <= MAX_JOBS_PER_PLAN
    });
    // One more than a plan looks at was read: it is where the next one starts.
    if jobs.len() > MAX_JOBS_PER_PLAN {
        out.next_job = jobs.pop().map(|(j, _)| j);
    }
    for (job, held) in jobs {
        let mut policy = None;
        let mut rank = 0u64;
        state.job_instance_ids(job, InstanceId(0), false, |id| {
            let Some(inst) = state.instance_opt(id) else {
                return true;
            };
            let (max_age, max_count) = *policy.get_or_insert_with(|| effective(state, &cluster, job, &inst.app));
            let cutoff = now_ms.saturating_sub(i64::try_from(max_age).unwrap_or(i64::MAX));
            let over_count = rank < held.saturating_sub(max_count);
            rank += 1;
            if !over_count && inst.created_at_ms >= cutoff {
                return false;
            }
            let too_old = inst.finished_at_ms.is_some_and(|f| f < cutoff);
            if (over_count || too_old) && state.expirable(&inst) {
                out.instances.push(id);
            }
            out.instances.len() < max
        });
        if out.instances.len() >= max {
            // This job may have more to go: the next plan starts with it.
            out.next_job = Some(job);
            break;
        }
    }
    let planned: std::collections::BTreeSet<InstanceId> = out.instances.iter().copied().collect();
    let bound = cluster.max_log_bytes;
    let total = state.log_bytes();
    if total > bound {
        let mut to_free = total - bound;
        // Bounded work per call, even when the bytes belong to logs that cannot go.
        let mut looked = 0usize;
        state.logs_oldest_first(|id, len| {
            looked += 1;
            if to_free == 0 || out.logs.len() >= max || looked > max.saturating_mul(10) {
                return false;
            }
            if planned.contains(&id) {
                to_free = to_free.saturating_sub(len);
            } else if state.instance_opt(id).is_some_and(|i| state.expirable(&i)) {
                to_free = to_free.saturating_sub(len);
                out.logs.push(id);
            }
            true
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::retention::validate;

    /// An app `a` with job 1 (`j`), and `n` instances run at t = 1000, 2000, ...,
    /// each canceled (finished) at the same time it was created.
    fn state_with(n: u64) -> State {
        let mut s = State::default();
        s.apply(&Command::CreateApp {
            name: "a".into(),
            secret: "s".into(),
            now_ms: 0,
        });
        let spec = serde_json::from_value(serde_json::json!({
            "app": "a", "name": "j", "schedule": {"type": "api"},
            "processor": {"type": "shell", "script": "true"}
        }))
        .expect("spec");
        s.apply(&Command::CreateJob { spec, now_ms: 0 });
        for i in 1..=n {
            let t = i as i64 * 1000;
            s.apply(&Command::RunJob {
                job: JobId(1),
                params: String::new(),
                now_ms: t,
            });
            s.apply(&Command::CancelInstance {
                instance: InstanceId(i),
                now_ms: t,
            });
        }
        s
    }

    fn ids(v: &[InstanceId]) -> Vec<u64> {
        v.iter().map(|i| i.0).collect()
    }

    fn set_cluster(s: &mut State, f: impl FnOnce(&mut crate::retention::ClusterPolicy)) {
        let mut r = s.retention();
        f(&mut r);
        s.put_retention(&r);
    }

    fn edit_job(s: &mut State, f: impl FnOnce(&mut crate::model::Job)) {
        let mut j = s.job(JobId(1)).expect("job");
        f(&mut j);
        s.put_job(&j);
    }

    fn give_log(s: &mut State, id: u64, text: &str) {
        let mut m = super::super::LogMeta::default();
        s.push_log_text(InstanceId(id), &mut m, text);
        s.put_log_meta(InstanceId(id), &m);
    }

    fn held(s: &State) -> u64 {
        s.held_of(JobId(1))
    }

    fn log_expired(s: &State, id: u64) -> bool {
        s.instance(InstanceId(id)).expect("instance").log_expired
    }

    fn expire(s: &mut State, v: &[u64]) {
        let instances = v.iter().map(|i| InstanceId(*i)).collect();
        s.apply(&Command::Expire {
            instances,
            logs: vec![],
            now_ms: 0,
        });
        s.check_indexes().expect("indexes");
    }

    fn floors(s: &State) -> (u64, u64) {
        (s.job_floor(JobId(1)).0, s.instance_floor().0)
    }

    #[test]
    fn floors_follow_the_oldest_held_instance() {
        let mut s = state_with(6);
        expire(&mut s, &[1, 2]);
        assert_eq!(floors(&s), (3, 3));
        // Out of order: the oldest (3) is still held.
        expire(&mut s, &[5]);
        assert_eq!(floors(&s), (3, 3));
        expire(&mut s, &[3]);
        assert_eq!(floors(&s), (4, 4));
        let mut seen = vec![];
        s.job_instance_ids(JobId(1), InstanceId(0), false, |id| {
            seen.push(id.0);
            true
        });
        assert_eq!(seen, [4, 6]);
        // None held: the job has no floor, and the next instance is the oldest of all.
        expire(&mut s, &[4, 6]);
        assert_eq!(floors(&s), (0, 7));
        s.apply(&Command::RunJob {
            job: JobId(1),
            params: String::new(),
            now_ms: 9_000,
        });
        s.check_indexes().expect("indexes");
        assert_eq!(floors(&s), (7, 7));
    }

    #[test]
    fn a_store_without_floors_walks_from_the_start_and_records_them_at_the_next_removal() {
        use super::super::store::{pair_key, T};
        let mut s = state_with(4);
        expire(&mut s, &[1]);
        // What a data dir written before floors holds.
        s.del(pair_key(T::Floor, T::ByJob as u64, 1));
        s.del(pair_key(T::Floor, T::Instance as u64, 0));
        s.check_indexes().expect("absent floors are allowed");
        assert_eq!(floors(&s), (0, 0));
        let mut n = 0;
        s.instances_from(InstanceId(0), false, |_| {
            n += 1;
            true
        });
        assert_eq!(n, 3);
        // Removing one that is not the oldest still finds the oldest.
        expire(&mut s, &[3]);
        assert_eq!(floors(&s), (2, 2));
    }

    #[test]
    fn a_floor_left_stale_by_an_earlier_release_is_repaired_at_the_next_removal() {
        use super::super::store::{pair_key, T};
        let mut s = state_with(4);
        expire(&mut s, &[1]);
        // A node of an earlier release removed instance 1 without moving the
        // floors: they name an id no longer held (still a lower bound).
        s.put(pair_key(T::Floor, T::ByJob as u64, 1), &1u64);
        s.put(pair_key(T::Floor, T::Instance as u64, 0), &1u64);
        assert!(s.check_indexes().is_err());
        // Removing another instance (not the oldest) repairs both.
        expire(&mut s, &[3]);
        assert_eq!(floors(&s), (2, 2));
    }

    #[test]
    fn a_wrong_floor_is_found_by_the_index_check() {
        use super::super::store::{pair_key, T};
        let mut s = state_with(3);
        s.put(pair_key(T::Floor, T::ByJob as u64, 1), &2u64);
        let e = s.check_indexes().expect_err("instance 1 is held below the floor");
        assert!(e.contains("floor"), "{e}");
        let mut s = state_with(3);
        s.put(pair_key(T::Floor, T::Instance as u64, 0), &2u64);
        assert!(s.check_indexes().is_err());
    }

    #[test]
    fn by_count_the_oldest_beyond_the_newest_n_expire() {
        let mut s = state_with(5);
        set_cluster(&mut s, |r| r.max_count = 2);
        let p = plan(&s, 6_000, 100, JobId(0));
        assert_eq!(ids(&p.instances), [1, 2, 3]);
        // A batch bound is honoured, oldest first.
        assert_eq!(ids(&plan(&s, 6_000, 2, JobId(0)).instances), [1, 2]);
    }

    #[test]
    fn by_age_only_what_finished_before_the_cutoff_expires() {
        let mut s = state_with(5);
        set_cluster(&mut s, |r| r.max_age_ms = 2_500);
        // now 6000: cutoff 3500 → instances finished at 1000, 2000, 3000.
        assert_eq!(ids(&plan(&s, 6_000, 100, JobId(0)).instances), [1, 2, 3]);
        assert!(plan(&s, 3_000, 100, JobId(0)).is_empty());
    }

    #[test]
    fn a_full_batch_resumes_at_its_job_and_a_long_walk_at_the_next_job() {
        let mut s = state_with(5);
        set_cluster(&mut s, |r| r.max_count = 1);
        let p = plan(&s, 6_000, 2, JobId(0));
        assert_eq!((ids(&p.instances), p.next_job), (vec![1, 2], Some(JobId(1))));
        // Not full: the walk ended, the next starts over.
        let p = plan(&s, 6_000, 100, JobId(0));
        assert_eq!((ids(&p.instances), p.next_job), (vec![1, 2, 3, 4], None));
        // Starting past every job finds nothing and starts over.
        let p = plan(&s, 6_000, 100, JobId(2));
        assert!(p.is_empty() && p.next_job.is_none());
    }

    #[test]
    fn overrides_inherit_job_then_app_then_cluster() {
        let mut s = state_with(4);
        set_cluster(&mut s, |r| r.max_count = 3);
        assert_eq!(ids(&plan(&s, 5_000, 100, JobId(0)).instances), [1]);
        let mut app = s.app("a").expect("app");
        app.retention.max_count = Some(2);
        s.put_app(&app);
        assert_eq!(ids(&plan(&s, 5_000, 100, JobId(0)).instances), [1, 2]);
        edit_job(&mut s, |j| j.spec.retention.max_count = Some(1));
        assert_eq!(ids(&plan(&s, 5_000, 100, JobId(0)).instances), [1, 2, 3]);
    }

    #[test]
    fn active_and_stop_pending_instances_and_the_delay_anchor_never_expire() {
        let mut s = state_with(3);
        set_cluster(&mut s, |r| r.max_count = 1);
        // A fourth instance still waiting: the oldest of a larger set, but active.
        s.apply(&Command::RunJob {
            job: JobId(1),
            params: String::new(),
            now_ms: 10_000,
        });
        let p = plan(&s, 20_000, 100, JobId(0));
        assert!(!p.instances.contains(&InstanceId(4)), "{p:?}");
        assert_eq!(ids(&p.instances), [1, 2, 3]);
        // The job's newest fire is kept whatever the policy says.
        edit_job(&mut s, |j| j.last_fired_instance = Some(InstanceId(2)));
        assert_eq!(ids(&plan(&s, 20_000, 100, JobId(0)).instances), [1, 3]);
        // And apply refuses what is not expirable, whatever the proposer sent.
        let before = held(&s);
        s.apply(&Command::Expire {
            instances: vec![InstanceId(2), InstanceId(4)],
            logs: vec![],
            now_ms: 20_000,
        });
        assert_eq!(held(&s), before, "neither the anchor nor the active one went");
    }

    #[test]
    fn logs_over_the_cluster_bound_go_oldest_first_and_the_instances_stay() {
        let mut s = state_with(3);
        for i in 1..=3u64 {
            give_log(&mut s, i, &"x".repeat(100));
        }
        assert_eq!(s.log_bytes(), 300);
        set_cluster(&mut s, |r| r.max_log_bytes = 150);
        let p = plan(&s, 4_000, 100, JobId(0));
        assert!(p.instances.is_empty());
        assert_eq!(ids(&p.logs), [1, 2]);
        s.apply(&Command::Expire {
            instances: vec![],
            logs: p.logs,
            now_ms: 4_000,
        });
        assert_eq!(s.log_bytes(), 100);
        assert!(log_expired(&s, 1) && s.instance_opt(InstanceId(2)).is_some());
        assert_eq!(
            s.log_text(InstanceId(1), 0, 1000).text,
            "",
            "the text went with the log"
        );
        assert_eq!(s.log_text(InstanceId(3), 0, 1000).text, "x".repeat(100));
    }

    #[test]
    fn a_retried_instance_logs_again_after_its_log_expired() {
        let mut s = state_with(1);
        give_log(&mut s, 1, "old");
        s.apply(&Command::Expire {
            instances: vec![],
            logs: vec![InstanceId(1)],
            now_ms: 2_000,
        });
        assert!(log_expired(&s, 1));
        s.apply(&Command::RetryInstance {
            instance: InstanceId(1),
            now_ms: 3_000,
        });
        s.apply(&Command::Assign {
            instance: InstanceId(1),
            attempt: crate::types::Attempt(1),
            worker: crate::types::WorkerId::new("w"),
            incarnation: String::new(),
            now_ms: 3_000,
        });
        let r = s.apply(&Command::AppendLog {
            instance: InstanceId(1),
            attempt: crate::types::Attempt(1),
            offset: 0,
            data: "new\n".into(),
            cap: 1_000,
        });
        assert_eq!(r.0, Ok(crate::command::Reply::LogAppended { appended: true }));
        assert!(!log_expired(&s, 1));
        assert_eq!(s.log_bytes(), 4);
        assert_eq!(s.log_text(InstanceId(1), 0, 1000).text, "new\n");
    }

    #[test]
    fn an_expired_instance_is_counted_and_answers_expired_not_missing() {
        let mut s = state_with(3);
        s.apply(&Command::Expire {
            instances: vec![InstanceId(1)],
            logs: vec![],
            now_ms: 9_000,
        });
        assert_eq!(s.job(JobId(1)).expect("job").expired, 1);
        assert_eq!(s.expired_total(), 1);
        assert_eq!(held(&s), 2);
        assert!(matches!(
            s.instance(InstanceId(1)),
            Err(crate::command::CommandError::Expired(m)) if m.contains("retention")
        ));
        assert!(matches!(
            s.instance(InstanceId(99)),
            Err(crate::command::CommandError::NotFound(_))
        ));
    }

    #[test]
    fn zero_and_too_short_settings_are_refused() {
        let zero = Retention {
            max_age_ms: None,
            max_count: Some(0),
        };
        assert!(validate("retention", &zero)
            .unwrap_err()
            .contains("max_count must be at least 1"));
        let short = Retention {
            max_age_ms: Some(0),
            max_count: None,
        };
        assert!(validate("retention", &short).unwrap_err().contains("at least 1000"));
        assert!(validate_cluster(None, None, Some(0))
            .unwrap_err()
            .contains("max_log_bytes"));
        validate_cluster(Some(60_000), Some(1), Some(1 << 20)).expect("valid");
    }
}
