//! The replicated state and its pure `apply`.
//!
//! `State::apply` reads nothing but the state and the command: no clock, no
//! randomness, no I/O (rule 1, docs/rules.md). Maps are ordered and the encoding is canonical
//! (serde_json over `BTreeMap`s and structs in declaration order), so two nodes
//! that applied the same log produce the same bytes and the same
//! [`State::digest`] (rule 10, docs/rules.md).
//!
//! This file owns the record and the dispatch: `apply` hands each command to
//! the one method that handles it, in `apps`, `jobs`, `instances`, `fires` or
//! `logs`. Every such method checks before it changes anything, so a refused
//! command leaves the state as it was; the one exception is a `Keyed` command,
//! which records its key with the refusal (`keys`), so a retry answers the same.

mod apps;
mod fires;
mod instances;
mod jobs;
mod keys;
mod logs;
mod retention;

use std::collections::{BTreeMap, BTreeSet};

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Command, CommandError, Reply, Response};
use crate::idempotency::IdempotencyKeys;
use crate::instance::{Instance, InstanceId, InstanceLog};
use crate::model::{App, Job};
use crate::retention::ClusterPolicy;
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
    /// Index of the instances with a stopped attempt not yet confirmed ended
    /// (`Instance::stop_pending`), kept by `apply`.
    #[serde(default)]
    pub unconfirmed_stops: BTreeSet<InstanceId>,
    pub logs: BTreeMap<InstanceId, InstanceLog>,
    /// The id the next created instance gets.
    pub next_instance_id: u64,
    /// Bumped by every change to a job's definition (create, update, delete,
    /// enable): the leader's time wheel rebuilds when it moves.
    #[serde(default)]
    pub job_epoch: u64,
    /// Idempotency keys of client writes and their first answers, kept by `apply`.
    #[serde(default)]
    pub keys: IdempotencyKeys,
    /// The cluster's retention (rule 12): defaults for every app and job.
    #[serde(default)]
    pub retention: ClusterPolicy,
    /// Instances that expired, over the cluster's life.
    #[serde(default)]
    pub expired_total: u64,
    /// Index job → its instances (oldest first), kept by `apply`; derived, so
    /// not stored: [`State::rebuild_indexes`] makes it after a load.
    #[serde(skip)]
    pub by_job: BTreeMap<JobId, BTreeSet<InstanceId>>,
    /// Bytes of all instance logs together, kept by `apply`; derived like `by_job`.
    #[serde(skip)]
    pub log_bytes: u64,
}

/// The part of the state a digest covers: the domain data, not openraft's
/// bookkeeping (whose log ids legitimately differ between a node that applied
/// entries and one that installed a snapshot of them), nor the idempotency
/// records (`keys`: remembered answers, not data; a refused keyed request
/// records one, and a refused request must leave the digest as it was).
#[derive(Serialize)]
struct DigestView<'a> {
    apps: &'a BTreeMap<String, App>,
    jobs: &'a BTreeMap<JobId, Job>,
    next_job_id: u64,
    instances: &'a BTreeMap<InstanceId, Instance>,
    logs: &'a BTreeMap<InstanceId, InstanceLog>,
    next_instance_id: u64,
    retention: &'a ClusterPolicy,
    expired_total: u64,
}

impl State {
    /// Applies one command. A refused command leaves the state untouched.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        Response(self.apply_inner(cmd))
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<Reply, CommandError> {
        match cmd {
            Command::CreateApp { name, secret, now_ms } => self.create_app(name, secret, *now_ms),
            Command::CreateJob { spec, now_ms } => self.create_job(spec, *now_ms),
            Command::UpdateJob { id, spec, now_ms } => self.update_job(*id, spec, *now_ms),
            Command::DeleteJob { id } => self.delete_job(*id),
            Command::SetJobEnabled { id, enabled, now_ms } => self.set_job_enabled(*id, *enabled, *now_ms),
            Command::RunJob { job, params, now_ms } => self.run_job(*job, params, *now_ms),
            Command::Assign {
                instance,
                attempt,
                worker,
                incarnation,
                now_ms,
            } => self.assign(*instance, *attempt, worker, incarnation, *now_ms),
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
            } => self.worker_lost(*instance, *attempt, reason, *now_ms),
            Command::Release {
                instance,
                attempt,
                reason,
                now_ms: _,
            } => self.release(*instance, *attempt, reason),
            Command::FailInstance {
                instance,
                reason,
                now_ms,
            } => self.fail_instance(*instance, reason, *now_ms),
            Command::StopInstance { instance, now_ms } => self.stop_instance(*instance, *now_ms),
            Command::CancelInstance { instance, now_ms } => self.cancel_instance(*instance, *now_ms),
            Command::RetryInstance { instance, now_ms: _ } => self.retry_instance(*instance),
            Command::Fire {
                job,
                fire_time_ms,
                now_ms,
                skip,
            } => self.fire(*job, *fire_time_ms, *now_ms, skip.as_deref()),
            Command::Batch { commands } => self.batch(commands),
            Command::Expire {
                instances,
                logs,
                now_ms: _,
            } => self.expire(instances, logs),
            Command::SetAppRetention { app, retention } => self.set_app_retention(app, retention),
            Command::SetClusterRetention {
                max_age_ms,
                max_count,
                max_log_bytes,
            } => self.set_cluster_retention(*max_age_ms, *max_count, *max_log_bytes),
            Command::Keyed {
                key,
                request_digest,
                now_ms,
                command,
            } => self.keyed(key, request_digest, *now_ms, command),
        }
    }

    /// Applies each command of a batch on its own: one refusal does not undo
    /// the others.
    fn batch(&mut self, commands: &[Command]) -> Result<Reply, CommandError> {
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

    /// Makes the derived indexes (`by_job`, `log_bytes`) from the records:
    /// after a state is loaded from a snapshot. `apply` keeps them from then on.
    pub fn rebuild_indexes(&mut self) {
        self.by_job.clear();
        for (id, inst) in &self.instances {
            self.by_job.entry(inst.job_id).or_default().insert(*id);
        }
        self.log_bytes = self.logs.values().map(|l| l.text.len() as u64).sum();
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
            retention: &self.retention,
            expired_total: self.expired_total,
        })
        .unwrap_or_default()
    }

    /// SHA-256 of [`State::canonical_bytes`], hex encoded.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}
