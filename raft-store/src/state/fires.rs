//! Fires: a schedule's tick, recorded as an instance.
//!
//! Owns `Command::Fire`: at most one instance per job and fire time (rule 3, docs/rules.md),
//! a skipped fire (misfire policy, `max_instances`) kept as a canceled
//! instance rather than dropped, and the job's record of its last fire. Never
//! decides when a job is due: the leader's scheduler does, and the time
//! arrives in the command.

use super::State;
use crate::command::{CommandError, Reply};
use crate::instance::InstanceStatus;
use crate::types::{JobId, WorkerId};

impl State {
    pub(super) fn fire(
        &mut self,
        job_id: JobId,
        fire_time_ms: i64,
        now_ms: i64,
        skip: Option<&str>,
    ) -> Result<Reply, CommandError> {
        let job = self.job(job_id)?;
        if job.last_fire_ms.is_some_and(|last| fire_time_ms <= last) {
            return Ok(Reply::FireIgnored);
        }
        if !job.spec.enabled {
            return Err(CommandError::Conflict(format!("job {job_id} is disabled")));
        }
        let max_instances = job.spec.max_instances;
        let skip_reason = match skip {
            Some(r) => Some(format!("skipped: {r}")),
            None if max_instances > 0 => {
                let running = self.active_of_job(job_id, usize::MAX);
                (running >= max_instances as usize)
                    .then(|| format!("skipped: {running} instances active, max_instances is {max_instances}"))
            }
            None => None,
        };
        let (status, reason) = match skip_reason {
            Some(r) => (InstanceStatus::Canceled, r),
            None => (InstanceStatus::WaitingDispatch, "fired by its schedule".to_owned()),
        };
        let inst = self.new_instance(job_id, "", Some(fire_time_ms), status, reason, now_ms)?;
        let mut job = job;
        job.last_fire_ms = Some(fire_time_ms);
        job.last_fired_instance = Some(inst.id);
        self.put_job(&job);
        Ok(Reply::Instance(Box::new(inst)))
    }

    /// `Command::FireAssign`: the fire, then the assignment of the instance it
    /// created (if it created a runnable one) as its first attempt.
    pub(super) fn fire_assign(
        &mut self,
        job_id: JobId,
        fire_time_ms: i64,
        now_ms: i64,
        worker: &WorkerId,
        incarnation: &str,
    ) -> Result<Reply, CommandError> {
        match self.fire(job_id, fire_time_ms, now_ms, None)? {
            Reply::Instance(inst) if inst.status == InstanceStatus::WaitingDispatch => {
                self.assign(inst.id, inst.attempt.next(), worker, incarnation, now_ms)
            }
            other => Ok(other),
        }
    }
}
