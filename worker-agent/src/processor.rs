//! The public face of a processor: the [`Processor`] trait a program that embeds the
//! agent implements, the [`TaskContext`] an instance runs with, the [`TaskLogger`] it
//! writes its log through, and the [`ProcessResult`] it returns.
//!
//! This module defines shapes only. It never decides what happens to a result (the
//! executor does) and never sends a log line itself (the log flusher does).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::logs::LogSink;
use crate::util::lock;

/// Code that runs an instance inside a program that embeds the agent, registered
/// under a name with [`crate::Agent::register_processor`] and selected by a job's
/// `Custom { name }` processor.
///
/// A processor should watch `ctx.cancel` and return soon after it fires (a stop from
/// an operator, the instance timeout, or the worker shutting down); one that does not
/// is abandoned after the cancel grace and its instance reported failed anyway.
pub trait Processor: Send + Sync + 'static {
    /// Runs one attempt of one instance.
    fn process(&self, ctx: TaskContext) -> BoxFuture<'_, ProcessResult>;
}

/// A [`Processor`] made from an async closure; see [`processor_fn`].
pub struct FnProcessor<F>(F);

/// Wraps `f(ctx) -> impl Future<Output = ProcessResult>` as a [`Processor`].
///
/// ```
/// use qron_worker_agent::{processor_fn, ProcessResult};
/// let noop = processor_fn(|_ctx| async { ProcessResult::ok("done") });
/// # let _ = noop;
/// ```
pub fn processor_fn<F, Fut>(f: F) -> FnProcessor<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProcessResult> + Send + 'static,
{
    FnProcessor(f)
}

impl<F, Fut> Processor for FnProcessor<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProcessResult> + Send + 'static,
{
    fn process(&self, ctx: TaskContext) -> BoxFuture<'_, ProcessResult> {
        Box::pin((self.0)(ctx))
    }
}

/// What a processor returns: the instance's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessResult {
    /// SUCCEEDED when true, FAILED otherwise.
    pub success: bool,
    /// Result text shown with the instance (cut to 4 KiB).
    pub message: String,
    /// The exit code, for processors that have one.
    pub exit_code: Option<i32>,
}

impl ProcessResult {
    /// A success with this result text.
    pub fn ok(message: impl Into<String>) -> Self {
        ProcessResult {
            success: true,
            message: message.into(),
            exit_code: None,
        }
    }

    /// A failure with this result text.
    pub fn failed(message: impl Into<String>) -> Self {
        ProcessResult {
            success: false,
            message: message.into(),
            exit_code: None,
        }
    }

    /// The same result with an exit code.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }
}

/// Everything an instance runs with.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The job.
    pub job_id: u64,
    /// The job's name.
    pub job_name: String,
    /// The instance.
    pub instance_id: u64,
    /// Which attempt of the instance this is (retries raise it).
    pub attempt: u32,
    /// The job's parameters.
    pub job_params: String,
    /// This instance's parameters (set when it was run through the API or a workflow).
    pub instance_params: String,
    /// The worker running it.
    pub worker_id: String,
    /// The instance timeout, if the job has one (the executor enforces it).
    pub timeout: Option<Duration>,
    /// Writes to the instance log.
    pub logger: TaskLogger,
    /// Fires when the instance must stop: an operator's stop, its timeout, or shutdown.
    pub cancel: CancellationToken,
    pub(crate) cancel_reason: Arc<Mutex<Option<String>>>,
}

impl TaskContext {
    /// Why `cancel` fired (e.g. `timed out after 500 ms`), once it has.
    pub fn cancel_reason(&self) -> Option<String> {
        lock(&self.cancel_reason).clone()
    }

    /// A context connected to no agent, for testing a processor on its own: its log
    /// stays in memory (read it with [`TaskLogger::unsent`]).
    pub fn detached(job_params: impl Into<String>) -> Self {
        TaskContext {
            job_id: 0,
            job_name: "test".to_owned(),
            instance_id: 0,
            attempt: 1,
            job_params: job_params.into(),
            instance_params: String::new(),
            worker_id: "test-worker".to_owned(),
            timeout: None,
            logger: TaskLogger::new(Arc::new(LogSink::new(u64::MAX, usize::MAX))),
            cancel: CancellationToken::new(),
            cancel_reason: Arc::new(Mutex::new(None)),
        }
    }
}

/// Cancels a running attempt, remembering why (the first reason wins).
#[derive(Debug, Clone)]
pub(crate) struct CancelHandle {
    pub(crate) token: CancellationToken,
    pub(crate) reason: Arc<Mutex<Option<String>>>,
    /// Set by [`CancelHandle::cancel_now`]: no grace to wind down.
    hard: Arc<std::sync::atomic::AtomicBool>,
}

impl CancelHandle {
    pub(crate) fn new() -> Self {
        CancelHandle {
            token: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            hard: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Cancels with no grace: the processor is abandoned at once (the lease lapsed,
    /// so the attempt must end before the leader may retry it elsewhere).
    pub(crate) fn cancel_now(&self, reason: impl Into<String>) {
        self.hard.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel(reason);
    }

    /// Whether the cancel allows no grace.
    pub(crate) fn is_hard(&self) -> bool {
        self.hard.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records `reason` unless one is already set, then fires the token.
    pub(crate) fn cancel(&self, reason: impl Into<String>) {
        {
            let mut r = lock(&self.reason);
            if r.is_none() {
                *r = Some(reason.into());
            }
        }
        self.token.cancel();
    }

    /// The recorded reason, if cancelled.
    pub(crate) fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }
}

/// Appends lines to an instance's log. Cheap to clone; every clone writes to the same log.
#[derive(Debug, Clone)]
pub struct TaskLogger {
    sink: Arc<LogSink>,
}

impl TaskLogger {
    pub(crate) fn new(sink: Arc<LogSink>) -> Self {
        TaskLogger { sink }
    }

    /// Appends one line to the instance log (a trailing newline is added if missing).
    pub fn log(&self, line: impl AsRef<str>) {
        self.sink.append(line.as_ref());
    }

    /// What was logged and not yet handed to the agent for sending; with a
    /// [`TaskContext::detached`] context, everything logged so far.
    pub fn unsent(&self) -> String {
        self.sink.pending_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cancel_reason_wins() {
        let h = CancelHandle::new();
        assert_eq!(h.reason(), None);
        h.cancel("stopped: by operator");
        h.cancel("worker shutting down");
        assert!(h.token.is_cancelled());
        assert_eq!(h.reason().as_deref(), Some("stopped: by operator"));
    }

    #[tokio::test]
    async fn fn_processor_runs_the_closure() {
        let p = processor_fn(|ctx: TaskContext| async move {
            ctx.logger.log(format!("params={}", ctx.job_params));
            ProcessResult::ok("done").with_exit_code(0)
        });
        let ctx = TaskContext::detached("x=1");
        let logger = ctx.logger.clone();
        let r = p.process(ctx).await;
        assert_eq!(r, ProcessResult::ok("done").with_exit_code(0));
        assert_eq!(logger.unsent(), "params=x=1\n");
    }
}
