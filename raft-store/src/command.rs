//! The one way the replicated state changes: a [`Command`] in the Raft log,
//! answered by a [`Response`].
//!
//! Every time value (`now_ms`) is the proposer's clock, carried in the command,
//! so that `apply` never reads a clock (rule 1, docs/rules.md).

use qron_proto::api::JobSpec;
use serde::{Deserialize, Serialize};

use crate::instance::{Instance, InstanceId, InstanceStatus};
use crate::model::Job;
use crate::types::{Attempt, JobId, WorkerId};

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateApp {
        name: String,
        secret: String,
        now_ms: i64,
    },
    CreateJob {
        spec: JobSpec,
        now_ms: i64,
    },
    /// Replaces a job's spec; the app cannot change.
    UpdateJob {
        id: JobId,
        spec: JobSpec,
        now_ms: i64,
    },
    DeleteJob {
        id: JobId,
    },
    SetJobEnabled {
        id: JobId,
        enabled: bool,
        now_ms: i64,
    },
    /// Creates an instance of a job (run now), waiting for dispatch.
    RunJob {
        job: JobId,
        params: String,
        now_ms: i64,
    },
    /// Assigns a waiting instance to a worker as attempt `attempt` (the current + 1).
    /// Only once this is committed may the leader send the dispatch (rule 2, docs/rules.md).
    Assign {
        instance: InstanceId,
        attempt: Attempt,
        worker: WorkerId,
        /// The worker process it was assigned to (see `Register.incarnation`).
        #[serde(default)]
        incarnation: String,
        now_ms: i64,
    },
    /// A worker's report on an attempt (RUNNING, SUCCEEDED or FAILED); fenced by attempt.
    Report {
        instance: InstanceId,
        attempt: Attempt,
        status: InstanceStatus,
        result: String,
        exit_code: Option<i32>,
        /// Worker clock: when the status was reached.
        at_ms: i64,
        now_ms: i64,
    },
    /// Appends a batch of an attempt's output at byte `offset` of that attempt's stream.
    AppendLog {
        instance: InstanceId,
        attempt: Attempt,
        offset: u64,
        data: String,
        /// Per-instance cap in bytes (the leader's setting, carried so apply is deterministic).
        cap: u64,
    },
    /// The worker of an assigned or running attempt is gone: retry or fail.
    WorkerLost {
        instance: InstanceId,
        attempt: Attempt,
        reason: String,
        now_ms: i64,
    },
    /// A worker gives back an attempt it never started (it is shutting down, or
    /// its lease lapsed before the start): back to waiting without spending the
    /// retry budget; or, for a stopped attempt, the confirmation that it ended.
    Release {
        instance: InstanceId,
        attempt: Attempt,
        reason: String,
        now_ms: i64,
    },
    /// Fails an instance that was never dispatched (no worker, job deleted).
    FailInstance {
        instance: InstanceId,
        reason: String,
        now_ms: i64,
    },
    /// Operator: stop a waiting or running instance.
    StopInstance {
        instance: InstanceId,
        now_ms: i64,
    },
    /// Operator: cancel an instance that was not dispatched yet.
    CancelInstance {
        instance: InstanceId,
        now_ms: i64,
    },
    /// Operator: run a failed, stopped or canceled instance again (new attempt, fresh retry budget).
    RetryInstance {
        instance: InstanceId,
        now_ms: i64,
    },
    /// A schedule fired for `fire_time_ms` (rule 3 of docs/rules.md: a no-op unless newer than the
    /// job's last fire). With `skip`, the fire is recorded as skipped (misfire
    /// policy) instead of creating a runnable instance; a fire over the job's
    /// `max_instances` is recorded as skipped too.
    Fire {
        job: JobId,
        fire_time_ms: i64,
        now_ms: i64,
        skip: Option<String>,
    },
    /// A schedule's fire committed already assigned (the leader's wheel picked
    /// the worker when it fired): as `Fire`, and when the fire creates a
    /// runnable instance, that instance is assigned as attempt 1 to `worker`
    /// in the same apply, as `Assign` would. Saves an entry and a round trip per
    /// scheduled instance; rule 2 holds unchanged (the dispatch leaves once this
    /// is committed). A new variant, not a field on `Fire`: a node of an earlier
    /// release cannot decode it and refuses the entry, where an ignored field would have let
    /// it apply a different state.
    FireAssign {
        job: JobId,
        fire_time_ms: i64,
        now_ms: i64,
        worker: WorkerId,
        /// The worker process it was assigned to (see `Register.incarnation`).
        incarnation: String,
    },
    /// Several commands in one log entry (one fsync, one round trip); each answers on its own.
    Batch {
        commands: Vec<Command>,
    },
    /// The leader's retention task (rule 12): removes these finished instances
    /// with their logs, and the logs (only) of `logs`. Each is removed only if
    /// it is still safe when this applies (`State::expirable`), else skipped.
    /// `now_ms` is the proposer's time, recorded for the reader of the log.
    Expire {
        instances: Vec<InstanceId>,
        logs: Vec<InstanceId>,
        now_ms: i64,
    },
    /// Sets an app's retention overrides (unset fields inherit the cluster's).
    SetAppRetention {
        app: String,
        retention: qron_proto::api::Retention,
    },
    /// Changes the cluster's retention: the fields given change.
    SetClusterRetention {
        max_age_ms: Option<u64>,
        max_count: Option<u64>,
        max_log_bytes: Option<u64>,
    },
    /// A client's write carrying its `Idempotency-Key` (docs/api.md): the first
    /// `Keyed` under `key` applies `command` and records its response with
    /// `request_digest` (the digest of the HTTP route and body); a later one
    /// under the same key changes nothing and answers that response, or is
    /// refused if its digest differs. `now_ms` is the proposer's clock: the
    /// record expires `state::keys::KEY_TTL_MS` after it (rule 1: apply reads no clock).
    Keyed {
        key: String,
        request_digest: String,
        now_ms: i64,
        command: Box<Command>,
    },
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A finished instance the retention policy removed (ids are never reused,
    /// so a missing id below the next one is history, not a typo).
    #[error("{0}")]
    Expired(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The command does not fit the record's current state (e.g. cancel a running instance).
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key already recorded for a different request.
    #[error("{0}")]
    KeyReused(String),
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// For log entries that carry no command (blank, membership).
    None,
    AppCreated {
        name: String,
    },
    Job(Box<Job>),
    JobDeleted {
        id: JobId,
    },
    Instance(Box<Instance>),
    /// Whether a log batch was appended (false: a duplicate).
    LogAppended {
        appended: bool,
    },
    Batch(Vec<Result<Reply, CommandError>>),
    /// A fire not newer than the job's last: nothing happened.
    FireIgnored,
    /// What an `Expire` removed (the rest was no longer safe to remove).
    Expired {
        instances: u64,
        logs: u64,
    },
    /// An app after a change.
    App(Box<crate::model::App>),
    /// The cluster's retention after a change.
    ClusterRetention(crate::retention::ClusterPolicy),
}

/// The state machine's answer to one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response(pub Result<Reply, CommandError>);
