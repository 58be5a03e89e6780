//! Retention (rule 12, docs/rules.md): which finished instances and logs expire.
//!
//! Owns the policy's shapes — the cluster's defaults, the validation of
//! settings, the [`Plan`] of a batch to expire. The planner that reads the
//! state (`State::expiry_plan`, the inheritance job → app → cluster) and the
//! apply side live in `state/retention.rs`. Nothing here deletes anything: the
//! leader proposes `Command::Expire` with what the planner picked, and `apply`
//! removes only what is still safe to remove when the command applies.

use qron_proto::api::{ClusterRetention, Retention};
use serde::{Deserialize, Serialize};

use crate::instance::InstanceId;
use crate::limits::check_span;

/// Default age after which a finished instance expires: 7 days.
pub const DEFAULT_MAX_AGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// Default number of instances kept per job.
pub const DEFAULT_MAX_COUNT: u64 = 10_000;
/// Default bound on the bytes of all instance logs together: 1 GiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 1 << 30;
/// Shortest age a setting may name: below a second, an instance could expire
/// before anyone had the chance to read its result.
pub const MIN_MAX_AGE_MS: u64 = 1_000;
/// Smallest bound on all logs a setting may name.
pub const MIN_MAX_LOG_BYTES: u64 = 64 * 1024;

/// The cluster's retention as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    pub max_age_ms: u64,
    pub max_count: u64,
    pub max_log_bytes: u64,
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy {
            max_age_ms: DEFAULT_MAX_AGE_MS,
            max_count: DEFAULT_MAX_COUNT,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

impl ClusterPolicy {
    /// The API's view.
    pub fn view(&self) -> ClusterRetention {
        ClusterRetention {
            max_age_ms: self.max_age_ms,
            max_count: self.max_count,
            max_log_bytes: self.max_log_bytes,
        }
    }
}

/// Checks a retention override; `what` names it in the message ("retention",
/// "app retention"). Zero is refused: it would expire everything at once.
pub fn validate(what: &str, r: &Retention) -> Result<(), String> {
    if let Some(age) = r.max_age_ms {
        check_age(&format!("{what} max_age_ms"), age)?;
    }
    if r.max_count == Some(0) {
        return Err(format!(
            "{what} max_count must be at least 1: a job keeps at least its newest instance"
        ));
    }
    Ok(())
}

fn check_age(field: &str, age: u64) -> Result<(), String> {
    if age < MIN_MAX_AGE_MS {
        return Err(format!("{field} must be at least {MIN_MAX_AGE_MS} (1 s), got {age}"));
    }
    check_span(field, age)
}

/// Checks a change of the cluster's retention.
pub fn validate_cluster(
    max_age_ms: Option<u64>,
    max_count: Option<u64>,
    max_log_bytes: Option<u64>,
) -> Result<(), String> {
    validate("cluster retention", &Retention { max_age_ms, max_count })?;
    if let Some(b) = max_log_bytes {
        if b < MIN_MAX_LOG_BYTES {
            return Err(format!(
                "cluster retention max_log_bytes must be at least {MIN_MAX_LOG_BYTES}, got {b}"
            ));
        }
    }
    Ok(())
}

/// What the leader proposes next: instances to remove (with their logs), and
/// logs to remove from instances that stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub instances: Vec<InstanceId>,
    pub logs: Vec<InstanceId>,
    /// Where the next plan resumes its walk over the jobs (`None`: from the
    /// first job again). A plan looks at [`MAX_JOBS_PER_PLAN`] jobs at most.
    pub next_job: Option<crate::types::JobId>,
}

/// Jobs one plan looks at, at most: with a million jobs a pass over all of
/// them takes a hundred plans, and each plan stays a few milliseconds.
pub const MAX_JOBS_PER_PLAN: usize = 10_000;

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.logs.is_empty()
    }
}
