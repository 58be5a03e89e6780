//! The replicated state and its pure `apply`.
//!
//! `State::apply` reads nothing but the state and the command: no clock, no
//! randomness, no I/O but the state's own records (rule 1, docs/rules.md).
//! The records live in an ordered key-value store (`store`: RocksDB on a
//! node, memory in tests), one key per record, and the encoding is canonical
//! (fields in declaration order, maps ordered), so two nodes that applied the
//! same log hold the same bytes and the same [`State::digest`] (rule 10,
//! docs/rules.md).
//!
//! This file owns the dispatch: `apply` hands each command to the one method
//! that handles it, in `apps`, `jobs`, `instances`, `fires`, `logs` or
//! `retention`; `records` owns the typed access to the tables and keeps the
//! indexes. Every such method checks before it changes anything, so a refused
//! command leaves the state as it was; the one exception is a `Keyed` command,
//! which records its key with the refusal (`keys`), so a retry answers the same.

mod apps;
mod fires;
mod instances;
mod jobs;
mod keys;
mod logs;
mod overlay;
mod records;
mod retention;
pub mod store;

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::command::{Command, CommandError, Reply, Response};
pub use crate::instance::{LogMeta, LogRead};
use crate::types::JobId;
use store::{in_digest, Kv, MemKv, Writes};

/// Everything the cluster replicates: the committed records in a store, and
/// the writes of the batch being applied.
pub struct State {
    kv: Arc<dyn Kv>,
    /// This batch's writes, not yet in `kv`; reads see them first.
    writes: Writes,
    /// Jobs whose definition this batch changed (each bump of the job epoch).
    changed_jobs: Vec<JobId>,
    /// The first store fault met while applying (see `store`).
    fault: Mutex<Option<String>>,
}

impl Default for State {
    /// An empty state in memory.
    fn default() -> Self {
        State::over(Arc::new(MemKv::default()))
    }
}

impl Clone for State {
    /// The same committed store (shared, not copied) and a copy of the pending
    /// writes: what tests compare before and after a command.
    fn clone(&self) -> Self {
        State {
            kv: self.kv.clone(),
            writes: self.writes.clone(),
            changed_jobs: self.changed_jobs.clone(),
            fault: Mutex::new(None),
        }
    }
}

impl PartialEq for State {
    /// Equal when every record, bookkeeping included, has the same bytes.
    fn eq(&self, other: &Self) -> bool {
        self.all_records() == other.all_records()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("pending_writes", &self.writes.len())
            .finish()
    }
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
            Command::FireAssign {
                job,
                fire_time_ms,
                now_ms,
                worker,
                incarnation,
            } => self.fire_assign(*job, *fire_time_ms, *now_ms, worker, incarnation),
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

    /// Every record, bookkeeping included, in key order.
    pub fn all_records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        self.scan_bulk(&[], &[0xff; 2], |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }

    /// Visits every record the digest covers, in key order.
    fn for_each_digested(&self, mut f: impl FnMut(&[u8], &[u8])) {
        self.scan_bulk(&[], &[0xff; 2], |k, v| {
            if k.first().is_some_and(|t| in_digest(*t)) {
                f(k, v);
            }
            true
        });
    }

    /// The canonical bytes of the domain data: every record the digest covers,
    /// key and value, each prefixed by its length.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.for_each_digested(|k, v| {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        });
        out
    }

    /// SHA-256 of [`State::canonical_bytes`], hex encoded, computed as the
    /// records stream by.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        self.for_each_digested(|k, v| {
            h.update((k.len() as u32).to_be_bytes());
            h.update(k);
            h.update((v.len() as u32).to_be_bytes());
            h.update(v);
        });
        hex::encode(h.finalize())
    }
}
