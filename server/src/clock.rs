//! The node's wall clock, read only by proposers: every time value that reaches
//! the state machine is read here and carried inside a command, so `apply`
//! never reads a clock (rule 1, docs/rules.md). Ground level: imports nothing of ours.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this node's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
