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

/// How often [`watch_stalls`] looks at the runtime's timers.
const STALL_TICK: std::time::Duration = std::time::Duration::from_millis(50);
/// A timer this much later than asked is logged: at the default heartbeat
/// (100 ms) a runtime stalled this long answers peers too late.
const STALL_REPORT: std::time::Duration = std::time::Duration::from_millis(100);

/// Logs when this runtime wakes a timer late: a thread blocked inside async
/// code, or a machine without CPU for the node, both of which delay
/// heartbeats and appends (the first thing to read when leadership flaps).
/// Runs until `shutdown` is cancelled.
pub async fn watch_stalls(shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    loop {
        let asked = std::time::Instant::now();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(STALL_TICK) => {}
        }
        let late = asked.elapsed().saturating_sub(STALL_TICK);
        if late >= STALL_REPORT {
            tracing::warn!(late_ms = late.as_millis() as u64, "the runtime woke a timer late");
        }
    }
}
