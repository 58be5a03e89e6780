//! The JSON bodies of the HTTP API (`/api/v1`).
//!
//! Request bodies reject unknown fields so that a typo (`"shedule"`) is a 400,
//! not a silently ignored setting. Every optional setting has a documented
//! default so that the smallest useful job is a name, an app and a schedule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `not_found`, `conflict`,
    /// `idempotency_key_reused` (422), `payload_too_large` (413), `no_leader`,
    /// `outcome_unknown`, `unavailable` (these three 503), `internal`.
    pub code: String,
    /// For people: what went wrong and, where possible, what to do.
    pub message: String,
    /// Set on `no_leader`/`unavailable`/`outcome_unknown`: who this node believes leads, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
    /// Set on `outcome_unknown`: the write may or may not have been applied;
    /// sending it again with this `Idempotency-Key` applies it at most once and
    /// answers its first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub node_id: u64,
    pub grpc_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
}

// ---------------------------------------------------------------- cluster

/// `GET /api/v1/cluster`: this node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Last log index covered by this node's current snapshot.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// Log entries up to this index were purged (compacted into the snapshot).
    #[serde(default)]
    pub purged_index: Option<u64>,
    pub nodes: Vec<NodeView>,
    /// This node's memory: its resident set and what RocksDB holds of it.
    #[serde(default)]
    pub memory: Option<MemoryView>,
}

/// A node's memory, as it sees it (`GET /api/v1/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryView {
    /// The process's resident set (`VmRSS`), where the platform tells it.
    pub rss_bytes: Option<u64>,
    /// RocksDB's shared block cache in use (bounded by its budget).
    pub block_cache_bytes: u64,
    /// RocksDB's memtables, all column families (bounded by its budget).
    pub memtable_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub grpc_addr: String,
    /// Learned from the node itself over gRPC; `None` until it answered once.
    pub http_addr: Option<String>,
    pub role: NodeRole,
    /// Whether this node reached it recently (always true for itself).
    pub reachable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Voter,
    Learner,
}

/// `POST /api/v1/cluster/nodes`: add a node (learner first, voter once caught up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    pub id: u64,
    pub grpc_addr: String,
    /// Leave it a learner instead of promoting it to voter (default false).
    #[serde(default)]
    pub learner_only: bool,
}

/// `GET /api/v1/debug/digest`: a hash of the replicated state at an applied index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestView {
    pub node_id: u64,
    pub applied_index: Option<u64>,
    pub digest: String,
}

// ---------------------------------------------------------------- apps

/// `POST /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    pub name: String,
    /// Workers of this app present it to register.
    pub secret: String,
}

/// An app as the API shows it: the secret is never echoed back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    pub created_at_ms: i64,
    /// The app's retention overrides (unset fields inherit the cluster's).
    #[serde(default)]
    pub retention: Retention,
}

// ---------------------------------------------------------------- retention

/// How long finished instances (and their logs) are kept: a job's or an app's
/// override of the cluster's defaults (docs/retention.md). An unset field
/// inherits: job, then app, then cluster. An instance expires once it is
/// finished and either older than `max_age_ms` (counted from its end) or
/// not among its job's newest `max_count` instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
}

/// The cluster's retention: the defaults every app and job inherits, and the
/// bound on the bytes of all instance logs together (oldest logs go first).
/// `GET /api/v1/cluster/retention`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRetention {
    pub max_age_ms: u64,
    pub max_count: u64,
    pub max_log_bytes: u64,
}

/// `PUT /api/v1/cluster/retention`: the fields given change, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRetentionUpdate {
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    #[serde(default)]
    pub max_count: Option<u64>,
    #[serde(default)]
    pub max_log_bytes: Option<u64>,
}

// ---------------------------------------------------------------- jobs

/// When a job fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Only when run through the API (`POST /jobs/{id}/run`).
    Api,
    /// A cron expression with seconds (6 fields; 5 fields mean second 0), in a time zone.
    Cron {
        expression: String,
        /// IANA name such as `Europe/Paris`; default `UTC`.
        #[serde(default = "default_time_zone")]
        time_zone: String,
    },
    /// Every `interval_ms`, aligned on `start_at_ms` (default: the job's creation time).
    FixedRate {
        interval_ms: u64,
        #[serde(default)]
        start_at_ms: Option<i64>,
    },
    /// `delay_ms` after the previous instance of the job finished.
    FixedDelay { delay_ms: u64 },
    /// Only as a node of a workflow.
    Workflow,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// A daily window (in the schedule's time zone, UTC if none) outside which fires are skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyWindow {
    /// `HH:MM` or `HH:MM:SS`.
    pub start: String,
    /// `HH:MM` or `HH:MM:SS`; earlier than `start` means the window spans midnight.
    pub end: String,
    /// ISO weekdays 1 (Monday) ..= 7 (Sunday); empty means every day.
    #[serde(default)]
    pub weekdays: Vec<u8>,
}

/// Not before / not after, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    #[serde(default)]
    pub not_before_ms: Option<i64>,
    #[serde(default)]
    pub not_after_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionType {
    #[default]
    Standalone,
    Broadcast,
    Map,
    MapReduce,
}

/// What a worker runs for an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Processor {
    /// A script run by `/bin/sh`; stdout/stderr become the instance log, exit code 0 = success.
    Shell { script: String },
    /// An HTTP call; success when the answer has `expected_status` (default 200).
    Http {
        #[serde(default = "default_http_method")]
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
        #[serde(default = "default_expected_status")]
        expected_status: u16,
    },
    /// A processor registered under `name` by a program that embeds the worker agent.
    Custom { name: String },
}

fn default_http_method() -> String {
    "GET".to_owned()
}

fn default_expected_status() -> u16 {
    200
}

/// Back-off between retries of an instance: `initial_ms * multiplier^(n-1)`, capped at `max_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_backoff_initial")]
    pub initial_ms: u64,
    #[serde(default = "default_backoff_multiplier")]
    pub multiplier: u32,
    #[serde(default = "default_backoff_max")]
    pub max_ms: u64,
}

fn default_backoff_initial() -> u64 {
    1_000
}
fn default_backoff_multiplier() -> u32 {
    2
}
fn default_backoff_max() -> u64 {
    60_000
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: default_backoff_initial(),
            multiplier: default_backoff_multiplier(),
            max_ms: default_backoff_max(),
        }
    }
}

/// Which workers may run the job. Empty/zero fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFilter {
    /// The worker must carry every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub min_cpu_cores: u32,
    #[serde(default)]
    pub min_memory_mb: u64,
    #[serde(default)]
    pub min_disk_mb: u64,
    /// Worker addresses; non-empty means only these.
    #[serde(default)]
    pub designated_workers: Vec<String>,
    /// At most this many workers take part (broadcast, map); 0 = no limit.
    #[serde(default)]
    pub max_worker_count: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchStrategy {
    /// The least loaded live worker that passes the filter.
    #[default]
    HealthFirst,
    Random,
    RoundRobin,
}

/// What to do with fire times missed while the cluster was down or leaderless.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// One catch-up instance for all the missed fires.
    #[default]
    FireOnce,
    /// Record the missed fires as skipped.
    Skip,
}

/// What to do with an instance when no live worker matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoWorkerPolicy {
    /// Fail the instance at once with a reason.
    #[default]
    Fail,
    /// Keep it waiting until a worker appears, however long that takes (cancel
    /// it to give up; `instance_timeout_ms` counts from the start on a worker).
    Wait,
}

/// Where to send an alarm when an instance finally fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub emails: Vec<String>,
}

/// Everything a user sets on a job (`POST /api/v1/jobs`, `PUT /api/v1/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub app: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub schedule: Schedule,
    #[serde(default)]
    pub daily_window: Option<DailyWindow>,
    #[serde(default)]
    pub lifecycle: Lifecycle,
    #[serde(default)]
    pub execution: ExecutionType,
    pub processor: Processor,
    /// Passed to the processor as the job's parameters.
    #[serde(default)]
    pub params: String,
    /// Instances of this job running at once; 0 = unlimited.
    #[serde(default)]
    pub max_instances: u32,
    /// Tasks of one instance a worker runs at once (map/reduce); default 1.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Stop and fail an instance running longer; 0 = no limit.
    #[serde(default)]
    pub instance_timeout_ms: u64,
    #[serde(default)]
    pub instance_retries: u32,
    #[serde(default)]
    pub task_retries: u32,
    #[serde(default)]
    pub retry_backoff: Backoff,
    #[serde(default)]
    pub worker_filter: WorkerFilter,
    #[serde(default)]
    pub dispatch_strategy: DispatchStrategy,
    #[serde(default)]
    pub misfire_policy: MisfirePolicy,
    #[serde(default)]
    pub no_worker_policy: NoWorkerPolicy,
    #[serde(default)]
    pub alarm: Alarm,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// This job's retention overrides (unset fields inherit the app's, then the cluster's).
    #[serde(default)]
    pub retention: Retention,
}

fn default_concurrency() -> u32 {
    1
}
fn default_enabled() -> bool {
    true
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: u64,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The newest fire time recorded for this job, if it ever fired.
    pub last_fire_ms: Option<i64>,
    /// How many of its finished instances expired under the retention policy.
    #[serde(default)]
    pub expired_instances: u64,
    /// The newest fire time among its expired instances: a fire at or before
    /// it may have no instance any more (history expired, not lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_fires_through_ms: Option<i64>,
}

/// `GET /api/v1/jobs?app=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// `GET /api/v1/apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppView>,
}

// ---------------------------------------------------------------- instances

/// `POST /api/v1/jobs/{id}/run`: run a job now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunJobRequest {
    /// Instance parameters passed to the processor (besides the job's own).
    #[serde(default)]
    pub params: String,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: u64,
    pub job_id: u64,
    pub app: String,
    /// WAITING_DISPATCH, WAITING_WORKER_RECEIVE, RUNNING, FAILED, SUCCEEDED, CANCELED or STOPPED.
    pub status: String,
    /// The current attempt (0 until first dispatched).
    pub attempt: u32,
    /// The last attempt the retry budget allows.
    pub max_attempt: u32,
    pub worker: Option<String>,
    pub params: String,
    pub created_at_ms: i64,
    /// For instances a schedule fired: the fire time (the worker starts it then).
    #[serde(default)]
    pub fire_time_ms: Option<i64>,
    pub assigned_at_ms: Option<i64>,
    /// Worker clock.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub result: String,
    pub exit_code: Option<i32>,
    /// Why the instance is where it is.
    pub reason: String,
}

/// `GET /api/v1/instances?job=&status=&app=&limit=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceList {
    pub instances: Vec<InstanceView>,
    /// How far back the history asked for goes (absent for an old server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryView>,
}

/// How far back instance history goes, for the filter of a list: older
/// instances expired under the retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryView {
    /// The oldest instance kept (of the job, when the list is filtered by job).
    pub oldest_id: Option<u64>,
    pub oldest_created_at_ms: Option<i64>,
    /// Instances that expired (of the job, or of the whole cluster).
    pub expired: u64,
}

/// `GET /api/v1/instances/{id}/logs?offset=`: the log from byte `offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceLogView {
    pub instance_id: u64,
    pub offset: u64,
    /// Ask again from here for what comes next.
    pub next_offset: u64,
    pub data: String,
    /// The per-instance cap was reached; later output was dropped.
    pub truncated: bool,
    /// The instance is in a terminal status: no more output will come.
    pub finished: bool,
    /// The log was removed to keep all logs under the cluster's retention bound.
    #[serde(default)]
    pub log_expired: bool,
}

/// `GET /api/v1/jobs/{id}/next-fires?count=&after=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextFires {
    pub job_id: u64,
    /// The schedule's time zone (UTC unless a cron job names one).
    pub time_zone: String,
    pub fires: Vec<FireTime>,
    /// Why the list is short or empty (API jobs, fixed delay, lifecycle end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireTime {
    pub at_ms: i64,
    /// RFC 3339 in the schedule's time zone.
    pub at: String,
}

// ---------------------------------------------------------------- workers

/// A live worker, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub worker_id: String,
    pub app: String,
    pub tags: Vec<String>,
    pub max_concurrency: u32,
    pub cpu_cores: u32,
    pub cpu_percent: f64,
    pub memory_total_mb: u64,
    pub memory_free_mb: u64,
    pub disk_total_mb: u64,
    pub disk_free_mb: u64,
    /// `(instance, attempt)` pairs it says it is running.
    pub running: Vec<(u64, u32)>,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms_ago: u64,
    /// Whether its stream to the leader is open.
    pub connected: bool,
}

/// `GET /api/v1/workers?app=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// `GET /server/acquire?app=&current=`: who leads (any node answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcquireView {
    pub leader_id: Option<u64>,
    pub leader_grpc: Option<String>,
    pub leader_http: Option<String>,
    pub term: u64,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub grpc_addr: String,
    pub http_addr: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_job_gets_defaults() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"app":"demo","name":"hello","schedule":{"type":"api"},
                "processor":{"type":"shell","script":"echo hi"}}"#,
        )
        .expect("minimal job parses");
        assert!(spec.enabled);
        assert_eq!(spec.concurrency, 1);
        assert_eq!(spec.dispatch_strategy, DispatchStrategy::HealthFirst);
        assert_eq!(spec.retry_backoff, Backoff::default());
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = serde_json::from_str::<JobSpec>(
            r#"{"app":"demo","name":"hello","shedule":{"type":"api"},
                "processor":{"type":"shell","script":"echo hi"}}"#,
        )
        .expect_err("typo must not parse");
        assert!(err.to_string().contains("shedule"), "{err}");
    }

    #[test]
    fn job_view_round_trips_with_flattened_spec() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"app":"a","name":"n","schedule":{"type":"cron","expression":"*/5 * * * * *"},
                "processor":{"type":"http","url":"http://127.0.0.1/x"}}"#,
        )
        .expect("parses");
        let view = JobView {
            id: 7,
            spec,
            created_at_ms: 1,
            updated_at_ms: 2,
            last_fire_ms: None,
            expired_instances: 3,
            expired_fires_through_ms: Some(9),
        };
        let text = serde_json::to_string(&view).expect("serializes");
        let back: JobView = serde_json::from_str(&text).expect("parses back");
        assert_eq!(back, view);
    }
}
