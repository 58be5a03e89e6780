//! Instances (one run of a job) and their logs, as the state machine keeps them.
//!
//! Owns the lifecycle table: [`InstanceStatus::can_become`] says which moves
//! exist, [`Verb::allows`] which of them each command may make. The state
//! machine checks every status change against them, in one place (STYLE 4).
//! Reports are fenced by attempt: a report for any attempt but the current one
//! changes nothing. Nothing here mutates an instance: the state machine does,
//! once the table allows it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{Attempt, JobId, WorkerId};

/// Longest result text kept (bytes); longer results are cut at a char boundary.
pub const MAX_RESULT_LEN: usize = 4 * 1024;

/// An instance's id, assigned by the state machine in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// PowerJob's instance statuses (same names and numbers on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    WaitingDispatch,
    WaitingWorkerReceive,
    Running,
    Failed,
    Succeeded,
    Canceled,
    Stopped,
}

impl InstanceStatus {
    /// No further change except an operator's retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Succeeded | Self::Canceled | Self::Stopped)
    }

    /// The table of the moves that exist; [`Verb::allows`] narrows it to what
    /// each command may do.
    pub fn can_become(self, to: InstanceStatus) -> bool {
        use InstanceStatus::*;
        match (self, to) {
            // Assigned to a worker; failed for want of one; canceled or stopped by an operator.
            (WaitingDispatch, WaitingWorkerReceive | Failed | Canceled | Stopped) => true,
            // The worker started it (or finished it before its RUNNING report arrived);
            // the worker was lost (back to waiting); stopped by an operator.
            (WaitingWorkerReceive, Running | Succeeded | Failed | WaitingDispatch | Stopped) => true,
            (Running, Succeeded | Failed | WaitingDispatch | Stopped) => true,
            // An operator's retry of a finished instance.
            (Failed | Stopped | Canceled, WaitingDispatch) => true,
            _ => false,
        }
    }

    /// Parses the SCREAMING_SNAKE_CASE name.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_uppercase())).ok()
    }

    pub fn name(self) -> &'static str {
        use InstanceStatus::*;
        match self {
            WaitingDispatch => "WAITING_DISPATCH",
            WaitingWorkerReceive => "WAITING_WORKER_RECEIVE",
            Running => "RUNNING",
            Failed => "FAILED",
            Succeeded => "SUCCEEDED",
            Canceled => "CANCELED",
            Stopped => "STOPPED",
        }
    }
}

/// What moves an instance's status: says in a refusal what was tried, and
/// limits the statuses the move may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// The leader assigns a waiting instance to a worker.
    Assign,
    /// A worker reports this status for the current attempt.
    Report(InstanceStatus),
    /// The worker of an assigned or running attempt is gone.
    DeclareLost,
    /// An instance that was never dispatched fails (no worker, job deleted).
    FailBeforeDispatch,
    /// An operator stops a waiting or running instance.
    Stop,
    /// A worker gives back an attempt it never started (shutting down, lease lapsed).
    Release,
    /// An operator cancels an instance not dispatched yet.
    Cancel,
    /// An operator runs a failed, stopped or canceled instance again.
    Retry,
}

impl Verb {
    /// Whether this verb may move an instance from `from` to `to`: a move the
    /// table has, from a status the verb may start from.
    pub fn allows(self, from: InstanceStatus, to: InstanceStatus) -> bool {
        use InstanceStatus::*;
        let starts = match self {
            Verb::Assign | Verb::FailBeforeDispatch | Verb::Cancel => from == WaitingDispatch,
            Verb::Release => from == WaitingWorkerReceive,
            Verb::DeclareLost => matches!(from, WaitingWorkerReceive | Running),
            Verb::Stop => !from.is_terminal(),
            Verb::Retry => matches!(from, Failed | Stopped | Canceled),
            // Reports are fenced by attempt; a finished instance takes no report (a late
            // FAILED of a stopped attempt must not revive it after Stop, Retry, Stop).
            Verb::Report(_) => !from.is_terminal(),
        };
        // Staying put is not a move: a FAILED report for an attempt already put
        // back to waiting (its worker declared lost) still records its result.
        starts && (from == to || from.can_become(to))
    }
}

/// The verb as a refusal says it: "cannot {verb} instance 7".
impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verb::Assign => f.write_str("assign"),
            Verb::Report(status) => write!(f, "report {} for", status.name()),
            Verb::DeclareLost => f.write_str("declare lost"),
            Verb::Release => f.write_str("release"),
            Verb::FailBeforeDispatch => f.write_str("fail before dispatch"),
            Verb::Stop => f.write_str("stop"),
            Verb::Cancel => f.write_str("cancel"),
            Verb::Retry => f.write_str("retry"),
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub job_id: JobId,
    pub app: String,
    pub status: InstanceStatus,
    /// Number of the current assignment; 0 until first assigned. Each assignment
    /// to a worker is a new attempt.
    pub attempt: Attempt,
    /// The last attempt the retry budget allows; past it a lost or failed attempt fails the instance.
    pub max_attempt: Attempt,
    /// The worker of the current attempt.
    pub worker: Option<WorkerId>,
    /// The worker process (incarnation) the current attempt was assigned to.
    #[serde(default)]
    pub worker_incarnation: Option<String>,
    /// An attempt an operator stopped while a worker held it, until that worker
    /// confirms it ended (rule 11, docs/rules.md). No new attempt is assigned
    /// while it is set, so a retry never runs beside the attempt it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_pending: Option<PendingStop>,
    pub params: String,
    pub created_at_ms: i64,
    /// The scheduled fire time, for instances a schedule fired: the worker starts
    /// it at this instant (dispatch goes out ahead of it).
    #[serde(default)]
    pub fire_time_ms: Option<i64>,
    /// Do not dispatch before this (retry back-off).
    pub not_before_ms: i64,
    pub assigned_at_ms: Option<i64>,
    /// Worker clock, from its RUNNING report.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub result: String,
    pub exit_code: Option<i32>,
    /// Why the instance is where it is (retried, lost worker, no worker, stopped...).
    pub reason: String,
    /// Its log was removed to keep all logs under the cluster's bound (the instance stays).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_expired: bool,
}

/// A stopped attempt its worker has not yet confirmed ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingStop {
    pub attempt: Attempt,
    pub worker: WorkerId,
    /// The worker process it was assigned to: a new process of the same worker
    /// has killed what the old one left (before it registered), which confirms.
    pub incarnation: String,
}

/// An instance's log: every attempt's output, one after the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLog {
    pub text: String,
    /// Bytes of each attempt's stream accepted so far (the next batch must start there).
    pub received: BTreeMap<Attempt, u64>,
    /// The cap was reached: later output was dropped.
    pub truncated: bool,
}

/// A log's bookkeeping; its text is in `LogChunk` pieces keyed by their offset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogMeta {
    /// Bytes of each attempt's stream accepted so far (the next batch must start there).
    pub received: BTreeMap<Attempt, u64>,
    /// The cap was reached: later output was dropped.
    pub truncated: bool,
    /// Bytes of text held.
    pub len: u64,
}

/// A read of a log's text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRead {
    /// Where the text starts.
    pub offset: u64,
    pub text: String,
    /// The log's whole length.
    pub len: u64,
    pub truncated: bool,
}

/// Cuts `text` to at most `max` bytes at a char boundary.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Back-off before retry `attempt + 1` (after `attempt` failed), per the job's settings.
pub fn backoff_ms(b: &qron_proto::api::Backoff, attempt: Attempt) -> u64 {
    let steps = attempt.0.saturating_sub(1).min(30);
    let factor = u64::from(b.multiplier.max(1)).saturating_pow(steps);
    b.initial_ms.saturating_mul(factor).min(b.max_ms)
}

#[cfg(test)]
mod tests {
    use super::InstanceStatus::*;
    use super::*;

    const ALL: [InstanceStatus; 7] = [
        WaitingDispatch,
        WaitingWorkerReceive,
        Running,
        Failed,
        Succeeded,
        Canceled,
        Stopped,
    ];

    #[test]
    fn succeeded_is_final_and_nothing_returns_to_running_from_terminal() {
        for to in ALL {
            assert!(!Succeeded.can_become(to), "SUCCEEDED -> {to:?}");
        }
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(!from.can_become(Running), "{from:?} -> RUNNING");
            assert!(
                !from.can_become(WaitingWorkerReceive),
                "{from:?} -> WAITING_WORKER_RECEIVE"
            );
        }
    }

    #[test]
    fn cancel_only_before_dispatch() {
        assert!(WaitingDispatch.can_become(Canceled));
        for from in [WaitingWorkerReceive, Running, Failed, Succeeded, Stopped] {
            assert!(!from.can_become(Canceled), "{from:?} -> CANCELED");
        }
    }

    #[test]
    fn each_verb_starts_only_where_it_may() {
        for from in ALL {
            for to in ALL {
                let allowed = |v: Verb| v.allows(from, to);
                if from != to && !from.can_become(to) {
                    assert!(!allowed(Verb::Report(to)), "the table refuses {from:?} -> {to:?}");
                }
                if allowed(Verb::Retry) {
                    assert!(from.is_terminal() && from != Succeeded, "retry from {from:?}");
                }
                if allowed(Verb::Assign) || allowed(Verb::Cancel) || allowed(Verb::FailBeforeDispatch) {
                    assert_eq!(from, WaitingDispatch, "{from:?} -> {to:?}");
                }
                if allowed(Verb::DeclareLost) {
                    assert!(matches!(from, WaitingWorkerReceive | Running), "lost from {from:?}");
                }
                if allowed(Verb::Stop) {
                    assert!(!from.is_terminal(), "stop from {from:?}");
                }
                if allowed(Verb::Report(to)) {
                    assert!(
                        !from.is_terminal(),
                        "a report moved a finished instance: {from:?} -> {to:?}"
                    );
                }
                if allowed(Verb::Release) {
                    assert_eq!(from, WaitingWorkerReceive, "release from {from:?}");
                }
            }
        }
        assert!(Verb::Retry.allows(Failed, WaitingDispatch));
        assert!(
            !Verb::Retry.allows(Running, WaitingDispatch),
            "retry is not for a running instance"
        );
        assert!(!Verb::DeclareLost.allows(WaitingDispatch, Failed));
        assert!(!Verb::FailBeforeDispatch.allows(Running, Failed));
    }

    #[test]
    fn verbs_read_as_refusals() {
        assert_eq!(Verb::DeclareLost.to_string(), "declare lost");
        assert_eq!(Verb::Report(Succeeded).to_string(), "report SUCCEEDED for");
    }

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(InstanceStatus::parse(s.name()), Some(s));
            assert_eq!(InstanceStatus::parse(&s.name().to_lowercase()), Some(s));
        }
        assert_eq!(InstanceStatus::parse("nope"), None);
    }

    #[test]
    fn bounded_cuts_at_char_boundary() {
        assert_eq!(bounded("héllo", 2), "h");
        assert_eq!(bounded("abc", 10), "abc");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = qron_proto::api::Backoff {
            initial_ms: 100,
            multiplier: 3,
            max_ms: 1_000,
        };
        assert_eq!(backoff_ms(&b, Attempt(1)), 100);
        assert_eq!(backoff_ms(&b, Attempt(2)), 300);
        assert_eq!(backoff_ms(&b, Attempt(3)), 900);
        assert_eq!(backoff_ms(&b, Attempt(4)), 1_000);
        assert_eq!(backoff_ms(&b, Attempt(400)), 1_000);
    }
}
