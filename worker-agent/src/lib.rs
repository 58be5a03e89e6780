//! The qron worker agent: finds the leader of a qron cluster, keeps one stream to it,
//! runs the instances it is sent (shell scripts, HTTP calls and Rust [`Processor`]s
//! registered by a program that embeds this library), reports their status and logs,
//! and follows the leader when it changes.
//!
//! The agent knows only the wire contract (`qron_proto::worker`): it never depends on
//! the server's crates. Correctness across failovers rests on three things it keeps in
//! memory for as long as the process lives: the highest leader id it has seen (it
//! refuses orders from lower ones), every `(instance_id, attempt)` it ever accepted
//! (each runs at most once), and its unacknowledged reports (re-sent to whichever
//! node leads next).
//!
//! ```no_run
//! use qron_worker_agent::{Agent, AgentConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), qron_worker_agent::AgentError> {
//! let cfg = AgentConfig::new(vec!["127.0.0.1:7701".into()], "demo", "secret");
//! Agent::new(cfg).run(CancellationToken::new()).await
//! # }
//! ```
#![forbid(unsafe_code)]

mod agent;
mod config;
mod connection;
mod error;
mod executor;
mod fence;
mod http;
mod load;
mod logs;
mod outbox;
mod processor;
mod shell;

pub use agent::{Agent, ConnectionState};
pub use config::{default_worker_id, AgentConfig};
pub use error::AgentError;
pub use fence::{AttemptKey, LeaderKey};
pub use processor::{processor_fn, FnProcessor, ProcessResult, Processor, TaskContext, TaskLogger};
pub use shell::run_shell;

/// The worker clock: milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…[truncated]";
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Locks a std mutex, ignoring poisoning: the data behind our mutexes (buffers, sets)
/// stays consistent even if a holder panicked, and a worker must keep reporting.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate_text("short", 10), "short");
        let long = "é".repeat(100);
        let cut = truncate_text(&long, 50);
        assert!(cut.len() <= 50, "{}", cut.len());
        assert!(cut.ends_with("[truncated]"));
    }
}
