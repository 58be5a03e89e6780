//! Instances (one run of a job) and their logs, as the state machine keeps them.
//!
//! Every status change goes through [`InstanceStatus::can_become`]: illegal
//! transitions are refused in this one place (STYLE 4). Reports are fenced by
//! attempt: a report for any attempt but the current one changes nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::JobId;

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

    /// The one table of legal transitions.
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

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub job_id: JobId,
    pub app: String,
    pub status: InstanceStatus,
    /// Number of the current assignment; 0 until first assigned. Each assignment
    /// to a worker is a new attempt.
    pub attempt: u32,
    /// The last attempt the retry budget allows; past it a lost or failed attempt fails the instance.
    pub max_attempt: u32,
    /// The worker of the current attempt.
    pub worker: Option<String>,
    /// The worker process (incarnation) the current attempt was assigned to.
    #[serde(default)]
    pub worker_incarnation: Option<String>,
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
}

/// An instance's log: every attempt's output, one after the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLog {
    pub text: String,
    /// Bytes of each attempt's stream accepted so far (the next batch must start there).
    pub received: BTreeMap<u32, u64>,
    /// The cap was reached: later output was dropped.
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
pub fn backoff_ms(b: &qron_proto::api::Backoff, attempt: u32) -> u64 {
    let steps = attempt.saturating_sub(1).min(30);
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
        assert_eq!(backoff_ms(&b, 1), 100);
        assert_eq!(backoff_ms(&b, 2), 300);
        assert_eq!(backoff_ms(&b, 3), 900);
        assert_eq!(backoff_ms(&b, 4), 1_000);
        assert_eq!(backoff_ms(&b, 400), 1_000);
    }
}
