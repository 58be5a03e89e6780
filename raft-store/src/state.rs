//! The replicated state and its pure `apply`.
//!
//! `State::apply` reads nothing but the state and the command: no clock, no
//! randomness, no I/O (rule 1). Maps are ordered and the encoding is canonical
//! (serde_json over `BTreeMap`s and structs in declaration order), so two nodes
//! that applied the same log produce the same bytes and the same
//! [`State::digest`] (rule 10).

use std::collections::BTreeMap;

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::collections::BTreeSet;

use crate::command::{Command, CommandError, Reply, Response};
use crate::instance::{backoff_ms, bounded, Instance, InstanceId, InstanceLog, InstanceStatus, MAX_RESULT_LEN};
use crate::model::{validate_app, validate_job, App, Job, MAX_TEXT_LEN};
use crate::types::{JobId, NodeId, QronNode};

/// Everything the cluster replicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The last log entry applied (openraft bookkeeping).
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied (openraft bookkeeping).
    pub last_membership: StoredMembership<NodeId, QronNode>,
    pub apps: BTreeMap<String, App>,
    pub jobs: BTreeMap<JobId, Job>,
    /// Index `"app/name"` → job id (names cannot contain `/`), kept by `apply`.
    pub job_names: BTreeMap<String, JobId>,
    /// The id the next created job gets.
    pub next_job_id: u64,
    pub instances: BTreeMap<InstanceId, Instance>,
    /// Index of the instances not in a terminal status, kept by `apply`.
    pub active: BTreeSet<InstanceId>,
    pub logs: BTreeMap<InstanceId, InstanceLog>,
    /// The id the next created instance gets.
    pub next_instance_id: u64,
    /// Bumped by every change to a job's definition (create, update, delete,
    /// enable): the leader's time wheel rebuilds when it moves.
    #[serde(default)]
    pub job_epoch: u64,
}

/// The part of the state a digest covers: the domain data, not openraft's
/// bookkeeping (whose log ids legitimately differ between a node that applied
/// entries and one that installed a snapshot of them).
#[derive(Serialize)]
struct DigestView<'a> {
    apps: &'a BTreeMap<String, App>,
    jobs: &'a BTreeMap<JobId, Job>,
    next_job_id: u64,
    instances: &'a BTreeMap<InstanceId, Instance>,
    logs: &'a BTreeMap<InstanceId, InstanceLog>,
    next_instance_id: u64,
}

impl State {
    /// Applies one command. A refused command leaves the state untouched.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        Response(self.apply_inner(cmd))
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<Reply, CommandError> {
        match cmd {
            Command::CreateApp { name, secret, now_ms } => {
                validate_app(name, secret).map_err(CommandError::Invalid)?;
                if self.apps.contains_key(name) {
                    return Err(CommandError::AlreadyExists(format!("app {name:?}")));
                }
                self.apps.insert(
                    name.clone(),
                    App {
                        name: name.clone(),
                        secret: secret.clone(),
                        created_at_ms: *now_ms,
                    },
                );
                Ok(Reply::AppCreated { name: name.clone() })
            }
            Command::CreateJob { spec, now_ms } => {
                validate_job(spec).map_err(CommandError::Invalid)?;
                self.require_app(&spec.app)?;
                if self.job_named(&spec.app, &spec.name, None).is_some() {
                    return Err(CommandError::AlreadyExists(format!(
                        "job {:?} in app {:?}",
                        spec.name, spec.app
                    )));
                }
                self.next_job_id += 1;
                let id = JobId(self.next_job_id);
                let job = Job {
                    id,
                    spec: spec.clone(),
                    created_at_ms: *now_ms,
                    updated_at_ms: *now_ms,
                    last_fire_ms: None,
                    last_fired_instance: None,
                };
                self.job_epoch += 1;
                self.jobs.insert(id, job.clone());
                self.job_names.insert(name_key(&spec.app, &spec.name), id);
                Ok(Reply::Job(Box::new(job)))
            }
            Command::UpdateJob { id, spec, now_ms } => {
                validate_job(spec).map_err(CommandError::Invalid)?;
                let current = self.job(*id)?;
                if current.spec.app != spec.app {
                    return Err(CommandError::Invalid(format!(
                        "a job cannot move between apps (job {id} belongs to {:?})",
                        current.spec.app
                    )));
                }
                if self.job_named(&spec.app, &spec.name, Some(*id)).is_some() {
                    return Err(CommandError::AlreadyExists(format!(
                        "job {:?} in app {:?}",
                        spec.name, spec.app
                    )));
                }
                let job = self.jobs.get_mut(id).ok_or_else(|| not_found(*id))?;
                self.job_names.remove(&name_key(&job.spec.app, &job.spec.name));
                self.job_names.insert(name_key(&spec.app, &spec.name), *id);
                job.spec = spec.clone();
                job.updated_at_ms = *now_ms;
                self.job_epoch += 1;
                Ok(Reply::Job(Box::new(job.clone())))
            }
            Command::DeleteJob { id } => {
                let job = self.jobs.remove(id).ok_or_else(|| not_found(*id))?;
                self.job_names.remove(&name_key(&job.spec.app, &job.spec.name));
                self.job_epoch += 1;
                Ok(Reply::JobDeleted { id: *id })
            }
            Command::SetJobEnabled { id, enabled, now_ms } => {
                let job = self.jobs.get_mut(id).ok_or_else(|| not_found(*id))?;
                if job.spec.enabled != *enabled {
                    job.spec.enabled = *enabled;
                    job.updated_at_ms = *now_ms;
                    self.job_epoch += 1;
                }
                Ok(Reply::Job(Box::new(job.clone())))
            }
            Command::RunJob { job, params, now_ms } => {
                let job = self.job(*job)?;
                let (job_id, app, max_attempt) = (
                    job.id,
                    job.spec.app.clone(),
                    job.spec.instance_retries.saturating_add(1),
                );
                if params.len() > MAX_TEXT_LEN {
                    return Err(CommandError::Invalid(format!(
                        "params is longer than {MAX_TEXT_LEN} bytes"
                    )));
                }
                self.next_instance_id += 1;
                let id = InstanceId(self.next_instance_id);
                let inst = Instance {
                    id,
                    job_id,
                    app,
                    status: InstanceStatus::WaitingDispatch,
                    attempt: 0,
                    max_attempt,
                    worker: None,
                    worker_incarnation: None,
                    params: params.clone(),
                    created_at_ms: *now_ms,
                    fire_time_ms: None,
                    not_before_ms: 0,
                    assigned_at_ms: None,
                    started_at_ms: None,
                    finished_at_ms: None,
                    result: String::new(),
                    exit_code: None,
                    reason: "run now".into(),
                };
                self.instances.insert(id, inst.clone());
                self.active.insert(id);
                Ok(Reply::Instance(Box::new(inst)))
            }
            Command::Assign {
                instance,
                attempt,
                worker,
                incarnation,
                now_ms,
            } => {
                let inst = self.instance(*instance)?;
                if inst.status != InstanceStatus::WaitingDispatch {
                    return Err(conflict(inst, "assign"));
                }
                if *attempt != inst.attempt + 1 {
                    return Err(CommandError::Conflict(format!(
                        "instance {instance} is at attempt {}; cannot assign attempt {attempt}",
                        inst.attempt
                    )));
                }
                self.change(*instance, InstanceStatus::WaitingWorkerReceive, |i| {
                    i.attempt = *attempt;
                    i.worker = Some(worker.clone());
                    i.worker_incarnation = Some(incarnation.clone());
                    i.assigned_at_ms = Some(*now_ms);
                    i.started_at_ms = None;
                    i.finished_at_ms = None;
                    i.exit_code = None;
                    i.reason = format!("attempt {attempt} assigned to {worker}");
                })
            }
            Command::Report {
                instance,
                attempt,
                status,
                result,
                exit_code,
                at_ms,
                now_ms,
            } => self.report(*instance, *attempt, *status, result, *exit_code, *at_ms, *now_ms),
            Command::AppendLog {
                instance,
                attempt,
                offset,
                data,
                cap,
            } => self.append_log(*instance, *attempt, *offset, data, *cap),
            Command::WorkerLost {
                instance,
                attempt,
                reason,
                now_ms,
            } => {
                let inst = self.instance(*instance)?;
                if inst.attempt != *attempt {
                    return Err(stale(inst, *attempt));
                }
                if !matches!(
                    inst.status,
                    InstanceStatus::WaitingWorkerReceive | InstanceStatus::Running
                ) {
                    return Err(conflict(inst, "declare lost"));
                }
                if inst.attempt < inst.max_attempt {
                    let why = format!("attempt {attempt} lost: {reason}; retrying");
                    self.change(*instance, InstanceStatus::WaitingDispatch, |i| {
                        i.worker = None;
                        i.reason = why;
                    })
                } else {
                    let why = format!("attempt {attempt} lost: {reason}; no retries left");
                    self.change(*instance, InstanceStatus::Failed, |i| {
                        i.finished_at_ms = Some(*now_ms);
                        i.reason = why;
                    })
                }
            }
            Command::FailInstance {
                instance,
                reason,
                now_ms,
            } => {
                let inst = self.instance(*instance)?;
                if inst.status != InstanceStatus::WaitingDispatch {
                    return Err(conflict(inst, "fail before dispatch"));
                }
                self.change(*instance, InstanceStatus::Failed, |i| {
                    i.finished_at_ms = Some(*now_ms);
                    i.reason = bounded(reason, MAX_RESULT_LEN);
                })
            }
            Command::StopInstance { instance, now_ms } => {
                let inst = self.instance(*instance)?;
                if inst.status.is_terminal() {
                    return Err(conflict(inst, "stop"));
                }
                self.change(*instance, InstanceStatus::Stopped, |i| {
                    i.finished_at_ms = Some(*now_ms);
                    i.reason = "stopped by an operator".into();
                })
            }
            Command::CancelInstance { instance, now_ms } => {
                let inst = self.instance(*instance)?;
                if inst.status != InstanceStatus::WaitingDispatch {
                    return Err(CommandError::Conflict(format!(
                        "instance {instance} is {}: only an instance waiting for dispatch can be canceled (use stop)",
                        inst.status.name()
                    )));
                }
                self.change(*instance, InstanceStatus::Canceled, |i| {
                    i.finished_at_ms = Some(*now_ms);
                    i.reason = "canceled by an operator".into();
                })
            }
            Command::RetryInstance { instance, now_ms: _ } => {
                let inst = self.instance(*instance)?;
                if !matches!(
                    inst.status,
                    InstanceStatus::Failed | InstanceStatus::Stopped | InstanceStatus::Canceled
                ) {
                    return Err(CommandError::Conflict(format!(
                        "instance {instance} is {}: only a failed, stopped or canceled instance can be retried",
                        inst.status.name()
                    )));
                }
                let retries = self.jobs.get(&inst.job_id).map_or(0, |j| j.spec.instance_retries);
                let max_attempt = inst.attempt.saturating_add(1).saturating_add(retries);
                self.change(*instance, InstanceStatus::WaitingDispatch, |i| {
                    i.max_attempt = max_attempt;
                    i.not_before_ms = 0;
                    i.worker = None;
                    i.reason = "retried by an operator".into();
                })
            }
            Command::Fire {
                job,
                fire_time_ms,
                now_ms,
                skip,
            } => self.fire(*job, *fire_time_ms, *now_ms, skip.as_deref()),
            Command::Batch { commands } => {
                let mut out = Vec::with_capacity(commands.len());
                for c in commands {
                    out.push(match c {
                        // Batches do not nest: one level keeps a log entry's meaning obvious.
                        Command::Batch { .. } => Err(CommandError::Invalid("batches cannot nest".into())),
                        c => self.apply_inner(c),
                    });
                }
                Ok(Reply::Batch(out))
            }
        }
    }

    fn fire(
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
        let (app, max_attempt, max_instances) = (
            job.spec.app.clone(),
            job.spec.instance_retries.saturating_add(1),
            job.spec.max_instances,
        );
        let skip_reason = match skip {
            Some(r) => Some(format!("skipped: {r}")),
            None if max_instances > 0 => {
                let running = self
                    .active
                    .iter()
                    .filter(|id| self.instances.get(id).is_some_and(|i| i.job_id == job_id))
                    .count();
                (running >= max_instances as usize)
                    .then(|| format!("skipped: {running} instances active, max_instances is {max_instances}"))
            }
            None => None,
        };
        self.next_instance_id += 1;
        let id = InstanceId(self.next_instance_id);
        let (status, reason) = match skip_reason {
            Some(r) => (InstanceStatus::Canceled, r),
            None => (InstanceStatus::WaitingDispatch, "fired by its schedule".to_owned()),
        };
        let inst = Instance {
            id,
            job_id,
            app,
            status,
            attempt: 0,
            max_attempt,
            worker: None,
            worker_incarnation: None,
            params: String::new(),
            created_at_ms: now_ms,
            fire_time_ms: Some(fire_time_ms),
            not_before_ms: 0,
            assigned_at_ms: None,
            started_at_ms: None,
            finished_at_ms: (status == InstanceStatus::Canceled).then_some(now_ms),
            result: String::new(),
            exit_code: None,
            reason,
        };
        self.instances.insert(id, inst.clone());
        if !status.is_terminal() {
            self.active.insert(id);
        }
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.last_fire_ms = Some(fire_time_ms);
            job.last_fired_instance = Some(id);
        }
        Ok(Reply::Instance(Box::new(inst)))
    }

    /// Looks an instance up by id.
    pub fn instance(&self, id: InstanceId) -> Result<&Instance, CommandError> {
        self.instances
            .get(&id)
            .ok_or_else(|| CommandError::NotFound(format!("instance {id}")))
    }

    /// The one place an instance's status changes: checks the transition, applies
    /// `edit`, keeps the active index.
    fn change(
        &mut self,
        id: InstanceId,
        to: InstanceStatus,
        edit: impl FnOnce(&mut Instance),
    ) -> Result<Reply, CommandError> {
        let inst = self
            .instances
            .get_mut(&id)
            .ok_or_else(|| CommandError::NotFound(format!("instance {id}")))?;
        if inst.status != to && !inst.status.can_become(to) {
            return Err(CommandError::Conflict(format!(
                "instance {id} cannot go from {} to {}",
                inst.status.name(),
                to.name()
            )));
        }
        inst.status = to;
        edit(inst);
        if to.is_terminal() {
            self.active.remove(&id);
        } else {
            self.active.insert(id);
        }
        Ok(Reply::Instance(Box::new(inst.clone())))
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        id: InstanceId,
        attempt: u32,
        status: InstanceStatus,
        result: &str,
        exit_code: Option<i32>,
        at_ms: i64,
        now_ms: i64,
    ) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        if inst.attempt != attempt || attempt == 0 {
            return Err(stale(inst, attempt));
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
        if inst.status == status {
            // A re-sent report (after a failover): already applied.
            return Ok(Reply::Instance(Box::new(inst.clone())));
        }
        let result = bounded(result, MAX_RESULT_LEN);
        match status {
            InstanceStatus::Running => self.change(id, InstanceStatus::Running, |i| {
                i.started_at_ms = Some(at_ms);
                i.reason = format!("attempt {attempt} running");
            }),
            InstanceStatus::Failed if inst.attempt < inst.max_attempt => {
                let delay = self
                    .jobs
                    .get(&inst.job_id)
                    .map_or(0, |j| backoff_ms(&j.spec.retry_backoff, attempt));
                self.change(id, InstanceStatus::WaitingDispatch, |i| {
                    i.reason = format!("attempt {attempt} failed ({result}); retrying in {delay} ms");
                    i.result = result;
                    i.exit_code = exit_code;
                    i.worker = None;
                    i.not_before_ms = now_ms.saturating_add(delay as i64);
                })
            }
            _ => self.change(id, status, |i| {
                i.finished_at_ms = Some(at_ms);
                i.reason = format!("attempt {attempt} {}", status.name().to_lowercase());
                i.result = result;
                i.exit_code = exit_code;
            }),
        }
    }

    fn append_log(
        &mut self,
        id: InstanceId,
        attempt: u32,
        offset: u64,
        data: &str,
        cap: u64,
    ) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        if attempt == 0 || attempt > inst.attempt {
            return Err(stale(inst, attempt));
        }
        let log = self.logs.entry(id).or_default();
        let received = log.received.get(&attempt).copied().unwrap_or(0);
        let len = data.len() as u64;
        if offset.saturating_add(len) <= received {
            return Ok(Reply::LogAppended { appended: false });
        }
        let mut piece = String::new();
        if received == 0 && attempt > 1 {
            piece.push_str(&format!("--- attempt {attempt} ---\n"));
        }
        if offset > received {
            piece.push_str(&format!("[... {} bytes of output lost ...]\n", offset - received));
            piece.push_str(data);
        } else {
            // Overlap with what was already received: keep only the new tail.
            let skip = (received - offset) as usize;
            let mut start = skip.min(data.len());
            while !data.is_char_boundary(start) {
                start += 1;
            }
            piece.push_str(&data[start..]);
        }
        log.received.insert(attempt, offset.saturating_add(len));
        if log.truncated {
            return Ok(Reply::LogAppended { appended: false });
        }
        let room = (cap as usize).saturating_sub(log.text.len());
        if piece.len() <= room {
            log.text.push_str(&piece);
        } else {
            log.text.push_str(&bounded(&piece, room));
            log.text.push_str(&format!("\n[log truncated at {cap} bytes]\n"));
            log.truncated = true;
        }
        Ok(Reply::LogAppended { appended: true })
    }

    fn require_app(&self, name: &str) -> Result<&App, CommandError> {
        self.apps
            .get(name)
            .ok_or_else(|| CommandError::NotFound(format!("app {name:?}")))
    }

    /// Looks a job up by id.
    pub fn job(&self, id: JobId) -> Result<&Job, CommandError> {
        self.jobs.get(&id).ok_or_else(|| not_found(id))
    }

    fn job_named(&self, app: &str, name: &str, except: Option<JobId>) -> Option<JobId> {
        self.job_names
            .get(&name_key(app, name))
            .copied()
            .filter(|id| Some(*id) != except)
    }

    /// The canonical bytes of the domain data.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing ordered maps of plain structs cannot fail.
        serde_json::to_vec(&DigestView {
            apps: &self.apps,
            jobs: &self.jobs,
            next_job_id: self.next_job_id,
            instances: &self.instances,
            logs: &self.logs,
            next_instance_id: self.next_instance_id,
        })
        .unwrap_or_default()
    }

    /// SHA-256 of [`State::canonical_bytes`], hex encoded.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

fn conflict(inst: &Instance, what: &str) -> CommandError {
    CommandError::Conflict(format!(
        "cannot {what} instance {}: it is {}",
        inst.id,
        inst.status.name()
    ))
}

fn stale(inst: &Instance, attempt: u32) -> CommandError {
    CommandError::Conflict(format!(
        "attempt {attempt} of instance {} is stale: the current attempt is {}",
        inst.id, inst.attempt
    ))
}

fn name_key(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

fn not_found(id: JobId) -> CommandError {
    CommandError::NotFound(format!("job {id}"))
}
