//! Instances: born by a run or a fire, then moved by assignments, worker
//! reports, lost workers and operators.
//!
//! Owns every change of an instance's status. Each one is checked by `change`,
//! which asks the transition table (`Verb::allows`) and words the refusal,
//! and is made by `State::set_status`, which keeps the indexes (`put_instance`). Reports
//! and losses are fenced by attempt: one for any attempt but the current one is
//! refused and changes nothing. An instance is born in one place only,
//! `State::new_instance`, never from a struct literal elsewhere.

use super::State;
use crate::command::{CommandError, Reply};
use crate::instance::{backoff_ms, bounded, Instance, InstanceId, InstanceStatus, PendingStop, Verb, MAX_RESULT_LEN};
use crate::model::MAX_TEXT_LEN;
use crate::types::{Attempt, JobId, WorkerId};

impl State {
    /// Looks an instance up by id.
    pub fn instance(&self, id: InstanceId) -> Result<Instance, CommandError> {
        self.instance_opt(id).ok_or_else(|| {
            if id.0 >= 1 && id.0 <= self.next_instance_id() {
                CommandError::Expired(format!(
                    "instance {id} has expired: it finished and was removed under the retention policy \
                     (see GET /api/v1/cluster/retention; `qronctl instance list` shows how far back history goes)"
                ))
            } else {
                not_found(id)
            }
        })
    }

    /// Run now: a new instance of `job`, waiting for dispatch.
    pub(super) fn run_job(&mut self, job: JobId, params: &str, now_ms: i64) -> Result<Reply, CommandError> {
        self.job(job)?;
        if params.len() > MAX_TEXT_LEN {
            return Err(CommandError::Invalid(format!(
                "params is longer than {MAX_TEXT_LEN} bytes"
            )));
        }
        let reason = "run now".to_owned();
        let inst = self.new_instance(job, params, None, InstanceStatus::WaitingDispatch, reason, now_ms)?;
        Ok(Reply::Instance(Box::new(inst)))
    }

    /// The one place an instance is born: the next id, no attempt yet out of
    /// its job's retry budget, indexed by `put_instance`.
    pub(super) fn new_instance(
        &mut self,
        job: JobId,
        params: &str,
        fire_time_ms: Option<i64>,
        status: InstanceStatus,
        reason: String,
        now_ms: i64,
    ) -> Result<Instance, CommandError> {
        let job = self.job(job)?;
        let (job_id, app, max_attempt) = (
            job.id,
            job.spec.app.clone(),
            Attempt(job.spec.instance_retries.saturating_add(1)),
        );
        let id = self.take_instance_id();
        let inst = Instance {
            id,
            job_id,
            app,
            status,
            attempt: Attempt(0),
            max_attempt,
            worker: None,
            worker_incarnation: None,
            stop_pending: None,
            params: params.to_owned(),
            created_at_ms: now_ms,
            fire_time_ms,
            not_before_ms: 0,
            assigned_at_ms: None,
            started_at_ms: None,
            finished_at_ms: status.is_terminal().then_some(now_ms),
            result: String::new(),
            exit_code: None,
            reason,
            log_expired: false,
        };
        self.put_instance(&inst);
        Ok(inst)
    }

    /// Assigns a waiting instance to `worker` as the next attempt.
    pub(super) fn assign(
        &mut self,
        id: InstanceId,
        attempt: Attempt,
        worker: &WorkerId,
        incarnation: &str,
        now_ms: i64,
    ) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        // The status before the attempt: a refusal names the status first.
        change(id, inst.status, InstanceStatus::WaitingWorkerReceive, Verb::Assign)?;
        if let Some(p) = &inst.stop_pending {
            return Err(CommandError::Conflict(format!(
                "instance {id} waits for worker {} to confirm that stopped attempt {} ended",
                p.worker, p.attempt
            )));
        }
        if attempt != inst.attempt.next() {
            return Err(CommandError::Conflict(format!(
                "instance {id} is at attempt {}; cannot assign attempt {attempt}",
                inst.attempt
            )));
        }
        self.set_status(id, InstanceStatus::WaitingWorkerReceive, Verb::Assign, |i| {
            i.attempt = attempt;
            i.worker = Some(worker.clone());
            i.worker_incarnation = Some(incarnation.to_owned());
            i.assigned_at_ms = Some(now_ms);
            i.started_at_ms = None;
            i.finished_at_ms = None;
            i.exit_code = None;
            i.reason = format!("attempt {attempt} assigned to {worker}");
        })
    }

    /// A worker's report on the current attempt; a FAILED attempt with retries
    /// left goes back to waiting, after the job's back-off.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn report(
        &mut self,
        id: InstanceId,
        attempt: Attempt,
        status: InstanceStatus,
        result: &str,
        exit_code: Option<i32>,
        at_ms: i64,
        now_ms: i64,
    ) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        if inst.attempt != attempt || attempt == Attempt(0) {
            return Err(stale(&inst, attempt));
        }
        if !matches!(
            status,
            InstanceStatus::Running | InstanceStatus::Succeeded | InstanceStatus::Failed
        ) {
            return Err(CommandError::Invalid(format!(
                "a worker may report RUNNING, SUCCEEDED or FAILED, not {}",
                status.name()
            )));
        }
        if inst.stop_pending.as_ref().is_some_and(|p| p.attempt == attempt) {
            if status == InstanceStatus::Running {
                return Err(CommandError::Conflict(format!(
                    "attempt {attempt} of instance {id} was stopped; RUNNING changes nothing"
                )));
            }
            return self.confirm_stop(id, &format!("it ended {}", status.name()));
        }
        if inst.status == status {
            // A re-sent report (after a failover): already applied.
            return Ok(Reply::Instance(Box::new(inst)));
        }
        let verb = Verb::Report(status);
        let result = bounded(result, MAX_RESULT_LEN);
        match status {
            InstanceStatus::Running => self.set_status(id, InstanceStatus::Running, verb, |i| {
                i.started_at_ms = Some(at_ms);
                i.reason = format!("attempt {attempt} running");
            }),
            InstanceStatus::Failed if inst.attempt < inst.max_attempt => {
                let delay = self
                    .job(inst.job_id)
                    .map_or(0, |j| backoff_ms(&j.spec.retry_backoff, attempt));
                self.set_status(id, InstanceStatus::WaitingDispatch, verb, |i| {
                    i.reason = format!("attempt {attempt} failed ({result}); retrying in {delay} ms");
                    i.result = result;
                    i.exit_code = exit_code;
                    i.worker = None;
                    i.not_before_ms = now_ms.saturating_add(delay as i64);
                })
            }
            _ => self.set_status(id, status, verb, |i| {
                // The worker's clock, kept between the leader's assignment and commit
                // times: retention measures age from it, and a worker clock far behind
                // or ahead must not expire an instance early or keep it forever.
                let floor = i.assigned_at_ms.unwrap_or(i.created_at_ms);
                i.finished_at_ms = Some(at_ms.clamp(floor.min(now_ms), now_ms));
                i.reason = format!("attempt {attempt} {}", status.name().to_lowercase());
                i.result = result;
                i.exit_code = exit_code;
            }),
        }
    }

    /// The worker of an assigned or running attempt is gone: retry while the
    /// budget allows, else fail.
    pub(super) fn worker_lost(
        &mut self,
        id: InstanceId,
        attempt: Attempt,
        reason: &str,
        now_ms: i64,
    ) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        if inst.attempt != attempt {
            return Err(stale(&inst, attempt));
        }
        if inst.stop_pending.is_some() {
            return self.confirm_stop(id, reason);
        }
        if inst.attempt < inst.max_attempt {
            let why = format!("attempt {attempt} lost: {reason}; retrying");
            self.set_status(id, InstanceStatus::WaitingDispatch, Verb::DeclareLost, |i| {
                i.worker = None;
                i.reason = why;
            })
        } else {
            let why = format!("attempt {attempt} lost: {reason}; no retries left");
            self.set_status(id, InstanceStatus::Failed, Verb::DeclareLost, |i| {
                i.finished_at_ms = Some(now_ms);
                i.reason = why;
            })
        }
    }

    /// Fails an instance that was never dispatched (no worker, job deleted).
    pub(super) fn fail_instance(&mut self, id: InstanceId, reason: &str, now_ms: i64) -> Result<Reply, CommandError> {
        self.set_status(id, InstanceStatus::Failed, Verb::FailBeforeDispatch, |i| {
            i.finished_at_ms = Some(now_ms);
            i.reason = bounded(reason, MAX_RESULT_LEN);
        })
    }

    /// Operator: stop a waiting or running instance.
    pub(super) fn stop_instance(&mut self, id: InstanceId, now_ms: i64) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        // A worker may hold the attempt: until it confirms the end, nothing new starts.
        let held = match (inst.status, &inst.worker) {
            (InstanceStatus::WaitingWorkerReceive | InstanceStatus::Running, Some(worker)) => Some(PendingStop {
                attempt: inst.attempt,
                worker: worker.clone(),
                incarnation: inst.worker_incarnation.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        self.set_status(id, InstanceStatus::Stopped, Verb::Stop, |i| {
            i.finished_at_ms = Some(now_ms);
            i.reason = match held.as_ref().or(i.stop_pending.as_ref()) {
                Some(p) => format!(
                    "stopped by an operator; waiting for worker {} to confirm attempt {} ended",
                    p.worker, p.attempt
                ),
                None => "stopped by an operator".into(),
            };
            // Stopped again after a retry: the earlier stop may still be unconfirmed.
            if held.is_some() {
                i.stop_pending = held;
            }
        })
    }

    /// A worker gives back an attempt it never started: back to waiting with its
    /// retry budget intact; or, for a stopped attempt, the confirmation it ended.
    pub(super) fn release(&mut self, id: InstanceId, attempt: Attempt, reason: &str) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        if inst.attempt != attempt || attempt == Attempt(0) {
            return Err(stale(&inst, attempt));
        }
        if inst.stop_pending.is_some() {
            return self.confirm_stop(id, &format!("given back unstarted: {reason}"));
        }
        let why = format!(
            "attempt {attempt} given back unstarted by worker {}: {}; waiting again",
            inst.worker.as_ref().map_or("?", WorkerId::as_str),
            bounded(reason, MAX_RESULT_LEN)
        );
        self.set_status(id, InstanceStatus::WaitingDispatch, Verb::Release, |i| {
            // The attempt never ran: it does not count against the retry budget.
            i.max_attempt = i.max_attempt.next();
            i.worker = None;
            i.reason = why;
        })
    }

    /// The worker of a stopped attempt confirmed it ended (`how`): new attempts may start.
    fn confirm_stop(&mut self, id: InstanceId, how: &str) -> Result<Reply, CommandError> {
        let mut inst = self.instance_opt(id).ok_or_else(|| not_found(id))?;
        let Some(p) = inst.stop_pending.take() else {
            return Ok(Reply::Instance(Box::new(inst)));
        };
        let base = match inst.status {
            InstanceStatus::Stopped => "stopped by an operator",
            _ => "retried by an operator",
        };
        inst.reason = format!(
            "{base}; attempt {} on worker {} confirmed ended ({})",
            p.attempt,
            p.worker,
            bounded(how, 200)
        );
        self.put_instance(&inst);
        Ok(Reply::Instance(Box::new(inst)))
    }

    /// Operator: cancel an instance not dispatched yet.
    pub(super) fn cancel_instance(&mut self, id: InstanceId, now_ms: i64) -> Result<Reply, CommandError> {
        self.set_status(id, InstanceStatus::Canceled, Verb::Cancel, |i| {
            i.finished_at_ms = Some(now_ms);
            i.reason = "canceled by an operator".into();
        })
    }

    /// Operator: run a failed, stopped or canceled instance again, with a
    /// fresh retry budget counted from its current attempt.
    pub(super) fn retry_instance(&mut self, id: InstanceId) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        let retries = self.job(inst.job_id).map_or(0, |j| j.spec.instance_retries);
        let max_attempt = Attempt(inst.attempt.0.saturating_add(1).saturating_add(retries));
        self.set_status(id, InstanceStatus::WaitingDispatch, Verb::Retry, |i| {
            i.max_attempt = max_attempt;
            // A log the retention removed starts again with the new attempt.
            i.log_expired = false;
            i.not_before_ms = 0;
            i.worker = None;
            i.reason = match &i.stop_pending {
                Some(p) => format!(
                    "retried by an operator; starts once worker {} confirms attempt {} ended",
                    p.worker, p.attempt
                ),
                None => "retried by an operator".into(),
            };
        })
    }

    /// The one place an instance's status changes: checks the move with
    /// [`change`], applies `edit`, keeps the indexes (`put_instance`).
    fn set_status(
        &mut self,
        id: InstanceId,
        to: InstanceStatus,
        verb: Verb,
        edit: impl FnOnce(&mut Instance),
    ) -> Result<Reply, CommandError> {
        let mut inst = self.instance_opt(id).ok_or_else(|| not_found(id))?;
        change(id, inst.status, to, verb)?;
        inst.status = to;
        edit(&mut inst);
        self.put_instance(&inst);
        Ok(Reply::Instance(Box::new(inst)))
    }
}

/// Checks one status change against the transition table; the refusal says
/// which instance, the status it is in and what was attempted.
fn change(id: InstanceId, from: InstanceStatus, to: InstanceStatus, verb: Verb) -> Result<(), CommandError> {
    if verb.allows(from, to) {
        return Ok(());
    }
    let hint = match verb {
        Verb::Cancel => "; only an instance waiting for dispatch can be canceled (use stop)",
        Verb::Retry => "; only a failed, stopped or canceled instance can be retried",
        _ => "",
    };
    Err(CommandError::Conflict(format!(
        "cannot {verb} instance {id}: it is {}{hint}",
        from.name()
    )))
}

/// The refusal of a report, a loss or a log batch for an attempt that is not
/// the current one.
pub(super) fn stale(inst: &Instance, attempt: Attempt) -> CommandError {
    CommandError::Conflict(format!(
        "attempt {attempt} of instance {} is stale: the current attempt is {}",
        inst.id, inst.attempt
    ))
}

fn not_found(id: InstanceId) -> CommandError {
    CommandError::NotFound(format!("instance {id}"))
}
