//! Runs the instances the leader dispatches, independently of any connection: a
//! failover changes where reports go, never what runs.
//!
//! This module owns the decision to run (fencing and once-only acceptance, through
//! [`Fence`]), the wait for the start time and a free slot, the instance timeout, the
//! cancel on stop or shutdown, the log flusher of each attempt, and the RUNNING and
//! final reports. It never talks to the network: reports go into the outbox, and the
//! connection sends them.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use qron_proto::api::Processor as ProcessorSpec;
use qron_proto::worker::{Dispatch, InstanceAttempt, InstanceStatus, Stop};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::config::AgentConfig;
use crate::fence::{Admission, Fence, LeaderKey};
use crate::http::{run_http, HttpCall};
use crate::ids::AttemptKey;
use crate::logs::{run_flusher, LogSink};
use crate::outbox::{Report, SharedOutbox};
use crate::processor::{CancelHandle, ProcessResult, Processor, TaskContext, TaskLogger};
use crate::shell::run_shell;
use crate::util::{lock, now_ms, truncate_text};

/// Longest result text sent with a final status.
const MAX_RESULT_BYTES: usize = 4 * 1024;

/// Custom processors by name.
pub(crate) type ProcessorMap = HashMap<String, Arc<dyn Processor>>;

/// The executor handle; clones share one executor.
#[derive(Clone)]
pub(crate) struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Arc<AgentConfig>,
    processors: ProcessorMap,
    http: reqwest::Client,
    outbox: Arc<SharedOutbox>,
    state: Mutex<State>,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    /// Fires when the agent shuts down: no new dispatches, queued instances give up.
    draining: CancellationToken,
}

#[derive(Default)]
struct State {
    fence: Fence,
    /// Accepted attempts this worker still holds: queued, running, or finished with a
    /// final report not yet acknowledged. Register and heartbeats declare exactly these,
    /// so a new leader never takes an attempt the worker still holds for lost.
    held: BTreeMap<AttemptKey, Held>,
}

struct Held {
    cancel: CancelHandle,
    /// Sequence number of the final report, once pushed.
    final_seq: Option<u64>,
}

impl Executor {
    pub(crate) fn new(
        cfg: Arc<AgentConfig>,
        processors: ProcessorMap,
        http: reqwest::Client,
        outbox: Arc<SharedOutbox>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_concurrency.max(1) as usize));
        Executor {
            inner: Arc::new(Inner {
                cfg,
                processors,
                http,
                outbox,
                state: Mutex::new(State::default()),
                slots,
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
            }),
        }
    }

    /// The highest leader id seen (sent in Register so a stale leader can tell).
    pub(crate) fn highest_leader(&self) -> Option<LeaderKey> {
        lock(&self.inner.state).fence.highest()
    }

    /// Notes the leader a Registered answer names; false if it is a deposed one.
    pub(crate) fn observe_leader(&self, leader: LeaderKey) -> bool {
        lock(&self.inner.state).fence.observe(leader)
    }

    /// The attempts this worker holds, for Register and heartbeats.
    pub(crate) fn held(&self) -> Vec<InstanceAttempt> {
        lock(&self.inner.state)
            .held
            .keys()
            .map(|k| InstanceAttempt::from(*k))
            .collect()
    }

    /// Attempts still queued or running (not yet finished).
    pub(crate) fn active(&self) -> usize {
        lock(&self.inner.state)
            .held
            .values()
            .filter(|h| h.final_seq.is_none())
            .count()
    }

    /// Takes a dispatch: runs it unless it is fenced off, a repeat, or the agent is
    /// shutting down.
    pub(crate) fn dispatch(&self, d: Dispatch) {
        let key = AttemptKey::from(&d);
        // Plain numbers for the log fields, so tracing records them as integers.
        let (instance_id, attempt, job_id) = (key.instance_id.0, key.attempt.0, d.job_id);
        if self.inner.draining.is_cancelled() {
            // Not recorded as accepted: the leader will retry it elsewhere once this
            // worker is gone.
            info!(instance_id, attempt, "shutting down: dispatch ignored");
            return;
        }
        let leader = d.leader.as_ref().map(LeaderKey::from);
        let cancel = CancelHandle::new();
        {
            let mut st = lock(&self.inner.state);
            match st.fence.admit_dispatch(leader, key) {
                Admission::Accept => {
                    st.held.insert(
                        key,
                        Held {
                            cancel: cancel.clone(),
                            final_seq: None,
                        },
                    );
                }
                Admission::NoLeader => {
                    warn!(instance_id, attempt, "dispatch without a leader id refused");
                    return;
                }
                Admission::StaleLeader { highest } => {
                    warn!(
                        instance_id,
                        attempt,
                        ?leader,
                        ?highest,
                        "dispatch from a deposed leader refused"
                    );
                    return;
                }
                Admission::Duplicate => {
                    debug!(instance_id, attempt, "dispatch of an attempt already taken ignored");
                    return;
                }
            }
        }
        info!(instance_id, attempt, job_id, job = %d.job_name, "instance accepted");
        let span = tracing::info_span!("instance", instance_id, attempt, job_id);
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.run_attempt(d, key, cancel).await }.instrument(span));
    }

    /// Takes a stop: cancels the named attempt if a current leader sent it.
    pub(crate) fn stop(&self, s: Stop) {
        let key = AttemptKey::from(&s);
        let (instance_id, attempt) = (key.instance_id.0, key.attempt.0);
        let leader = s.leader.as_ref().map(LeaderKey::from);
        let cancel = {
            let mut st = lock(&self.inner.state);
            if !st.fence.admit_stop(leader) {
                warn!(instance_id, attempt, ?leader, "stop from a deposed leader refused");
                return;
            }
            match st.held.get(&key) {
                Some(h) if h.final_seq.is_none() => h.cancel.clone(),
                _ => {
                    debug!(instance_id, attempt, "stop for an attempt not running");
                    return;
                }
            }
        };
        let reason = if s.reason.trim().is_empty() {
            "stopped".to_owned()
        } else {
            format!("stopped: {}", s.reason.trim())
        };
        info!(instance_id, attempt, %reason, "stopping instance");
        cancel.cancel(reason);
    }

    /// The leader committed every report up to `seq`: forget the attempts whose final
    /// report is among them.
    pub(crate) fn on_ack(&self, seq: u64) {
        lock(&self.inner.state)
            .held
            .retain(|_, h| h.final_seq.is_none_or(|f| f > seq));
    }

    /// Shuts the executor down: refuses new dispatches, fails queued instances, lets the
    /// running ones finish for up to `grace`, then cancels them and waits for their
    /// final reports (up to the cancel grace).
    pub(crate) async fn drain(&self, grace: Duration) {
        let inner = &self.inner;
        inner.draining.cancel();
        inner.tasks.close();
        if tokio::time::timeout(grace, inner.tasks.wait()).await.is_ok() {
            return;
        }
        let running: Vec<CancelHandle> = lock(&inner.state)
            .held
            .values()
            .filter(|h| h.final_seq.is_none())
            .map(|h| h.cancel.clone())
            .collect();
        warn!(
            count = running.len(),
            "cancelling instances still running after the shutdown grace"
        );
        for c in running {
            c.cancel("the worker shut down");
        }
        let wait = inner.cfg.cancel_grace + Duration::from_secs(1);
        if tokio::time::timeout(wait, inner.tasks.wait()).await.is_err() {
            warn!("some instances did not end in time; their results are lost to this worker");
        }
    }

    /// One attempt from dispatch to final report.
    async fn run_attempt(self, d: Dispatch, key: AttemptKey, cancel: CancelHandle) {
        let permit = match self.wait_to_start(&d, &cancel).await {
            Ok(p) => p,
            Err(reason) => {
                info!(%reason, "instance not started");
                self.finish(key, ProcessResult::failed(reason));
                return;
            }
        };
        let inner = &self.inner;
        let cfg = &inner.cfg;
        inner.outbox.push(Report::status(
            key,
            InstanceStatus::Running,
            String::new(),
            now_ms(),
            None,
        ));
        debug!("instance running");

        let sink = Arc::new(LogSink::new(cfg.log_max_bytes_per_attempt, cfg.log_batch_max_bytes));
        let flushed = CancellationToken::new();
        let flusher = tokio::spawn(run_flusher(
            sink.clone(),
            key,
            inner.outbox.clone(),
            cfg.log_batch_interval,
            flushed.clone(),
        ));
        let timeout = (d.timeout_ms > 0).then(|| Duration::from_millis(d.timeout_ms));
        let ctx = TaskContext {
            job_id: d.job_id,
            job_name: d.job_name,
            // The processor-facing context keeps plain values, like the wire.
            instance_id: key.instance_id.0,
            attempt: key.attempt.0,
            job_params: d.job_params,
            instance_params: d.instance_params,
            worker_id: cfg.worker_id.to_string(),
            timeout,
            logger: TaskLogger::new(sink),
            cancel: cancel.token.clone(),
            cancel_reason: cancel.reason.clone(),
        };
        let result = match self.processor_future(&d.processor_json, ctx) {
            Ok(fut) => self.supervise(fut, timeout, &cancel).await,
            Err(result) => result,
        };
        drop(permit);
        // Logs first, then the result: the final status never overtakes the log.
        flushed.cancel();
        let _ = flusher.await;
        self.finish(key, result);
    }

    /// Waits for the dispatch's start time and a free slot, or gives up on a stop or
    /// shutdown (the error is the result text).
    async fn wait_to_start(&self, d: &Dispatch, cancel: &CancelHandle) -> Result<OwnedSemaphorePermit, String> {
        let inner = &self.inner;
        let shut_down = || "the worker shut down before the instance started".to_owned();
        let stopped = |c: &CancelHandle| {
            format!(
                "{} before it started",
                c.reason().unwrap_or_else(|| "stopped".to_owned())
            )
        };
        let wait_ms = d.start_at_ms.saturating_sub(now_ms());
        if d.start_at_ms > 0 && wait_ms > 0 {
            let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.token.cancelled() => return Err(stopped(cancel)),
                _ = inner.draining.cancelled() => return Err(shut_down()),
            }
        }
        tokio::select! {
            permit = inner.slots.clone().acquire_owned() => permit.map_err(|_| shut_down()),
            _ = cancel.token.cancelled() => Err(stopped(cancel)),
            _ = inner.draining.cancelled() => Err(shut_down()),
        }
    }

    /// Turns the job's processor JSON into a future that runs it, or the failure to report.
    fn processor_future(
        &self,
        processor_json: &str,
        ctx: TaskContext,
    ) -> Result<BoxFuture<'static, ProcessResult>, ProcessResult> {
        let fail = |ctx: &TaskContext, msg: String| {
            ctx.logger.log(&msg);
            ProcessResult::failed(msg)
        };
        let spec: ProcessorSpec = match serde_json::from_str(processor_json) {
            Ok(spec) => spec,
            Err(e) => return Err(fail(&ctx, format!("invalid processor: {e}"))),
        };
        // Annotated so that every arm's boxed future coerces to the same trait object.
        let fut: BoxFuture<'static, ProcessResult> = match spec {
            ProcessorSpec::Shell { script } => Box::pin(async move { run_shell(&script, &ctx).await }),
            ProcessorSpec::Http {
                method,
                url,
                headers,
                body,
                expected_status,
            } => {
                let client = self.inner.http.clone();
                let call = HttpCall {
                    method,
                    url,
                    headers,
                    body,
                    expected_status,
                };
                Box::pin(async move { run_http(&client, call, &ctx).await })
            }
            ProcessorSpec::Custom { name } => match self.inner.processors.get(&name) {
                Some(p) => {
                    let p = Arc::clone(p);
                    Box::pin(async move { p.process(ctx).await })
                }
                None => return Err(fail(&ctx, format!("no processor registered under {name}"))),
            },
        };
        Ok(fut)
    }

    /// Runs a processor under the instance timeout and the cancel token. Once either
    /// fires, the processor gets the cancel grace to wind down; the result is then a
    /// failure with the reason, whatever the processor returns.
    async fn supervise(
        &self,
        fut: BoxFuture<'static, ProcessResult>,
        timeout: Option<Duration>,
        cancel: &CancelHandle,
    ) -> ProcessResult {
        // A panicking processor must still produce a final report.
        let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind().map(|r| match r {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".to_owned());
                ProcessResult::failed(format!("processor panicked: {what}"))
            }
        }));
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut fut => return result,
            _ = deadline => {
                let ms = timeout.map_or(0, |t| t.as_millis());
                cancel.cancel(format!("timed out after {ms} ms"));
            }
            _ = cancel.token.cancelled() => {}
        }
        let reason = cancel.reason().unwrap_or_else(|| "stopped".to_owned());
        let exit_code = match tokio::time::timeout(self.inner.cfg.cancel_grace, &mut fut).await {
            Ok(r) => r.exit_code,
            Err(_) => {
                warn!(grace = ?self.inner.cfg.cancel_grace, "processor ignored the cancel; abandoned");
                None
            }
        };
        ProcessResult {
            success: false,
            message: reason,
            exit_code,
        }
    }

    /// Pushes the final report and remembers its sequence number, so the attempt is
    /// declared held until the leader acknowledges it.
    fn finish(&self, key: AttemptKey, result: ProcessResult) {
        let status = if result.success {
            InstanceStatus::Succeeded
        } else {
            InstanceStatus::Failed
        };
        let report = Report::status(
            key,
            status,
            truncate_text(&result.message, MAX_RESULT_BYTES),
            now_ms(),
            result.exit_code,
        );
        // Push under the state lock (lock order: state, then outbox) so an ack of this
        // report cannot be handled before its sequence number is recorded.
        {
            let mut st = lock(&self.inner.state);
            let seq = self.inner.outbox.push(report);
            if let Some(h) = st.held.get_mut(&key) {
                h.final_seq = Some(seq);
            }
        }
        info!(
            status = status.as_str_name(),
            exit_code = ?result.exit_code,
            result = %truncate_text(&result.message, 200),
            "instance finished"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qron_proto::worker::{worker_message::Msg, LeaderId};

    fn executor(max_concurrency: u32) -> (Executor, Arc<SharedOutbox>) {
        let mut cfg = AgentConfig::new(vec!["127.0.0.1:1".into()], "demo", "s");
        cfg.max_concurrency = max_concurrency;
        cfg.log_batch_interval = Duration::from_millis(10);
        cfg.cancel_grace = Duration::from_secs(2);
        let outbox = Arc::new(SharedOutbox::new());
        let mut processors: ProcessorMap = HashMap::new();
        processors.insert(
            "echo-params".into(),
            Arc::new(crate::processor::processor_fn(|ctx: TaskContext| async move {
                ctx.logger.log(format!("params {}", ctx.job_params));
                ProcessResult::ok(ctx.job_params)
            })),
        );
        let exec = Executor::new(Arc::new(cfg), processors, reqwest::Client::new(), outbox.clone());
        (exec, outbox)
    }

    fn dispatch(instance_id: u64, attempt: u32, term: u64, processor_json: &str) -> Dispatch {
        Dispatch {
            instance_id,
            attempt,
            leader: Some(LeaderId { term, node_id: 1 }),
            job_id: 1,
            job_name: "j".into(),
            processor_json: processor_json.into(),
            job_params: "p".into(),
            ..Default::default()
        }
    }

    /// Every status report in the outbox: (instance, attempt, status, result).
    fn statuses(outbox: &SharedOutbox) -> Vec<(u64, u32, InstanceStatus, String)> {
        outbox
            .after(0, usize::MAX)
            .0
            .into_iter()
            .filter_map(|(_, m)| match m.msg {
                Some(Msg::Status(s)) => Some((
                    s.instance_id,
                    s.attempt,
                    InstanceStatus::try_from(s.status).unwrap_or(InstanceStatus::Unspecified),
                    s.result,
                )),
                _ => None,
            })
            .collect()
    }

    async fn settle(exec: &Executor) {
        for _ in 0..500 {
            if exec.active() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("instances did not finish");
    }

    #[tokio::test]
    async fn runs_a_custom_processor_and_reports_in_order() {
        let (exec, outbox) = executor(2);
        exec.dispatch(dispatch(1, 1, 1, r#"{"type":"custom","name":"echo-params"}"#));
        settle(&exec).await;
        let (msgs, _) = outbox.after(0, 100);
        let kinds: Vec<String> = msgs
            .iter()
            .map(|(_, m)| match &m.msg {
                Some(Msg::Status(s)) => format!("{:?}", InstanceStatus::try_from(s.status)),
                Some(Msg::Logs(l)) => format!("log@{}", l.offset),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, vec!["Ok(Running)", "log@0", "Ok(Succeeded)"]);
        assert_eq!(statuses(&outbox)[1].3, "p");
        // Held until the final report is acknowledged.
        assert_eq!(exec.held().len(), 1);
        let last = msgs.last().map(|(s, _)| *s).unwrap_or(0);
        exec.on_ack(last);
        assert!(exec.held().is_empty());
    }

    #[tokio::test]
    async fn the_same_attempt_runs_once_and_stale_leaders_are_ignored() {
        let (exec, outbox) = executor(2);
        let json = r#"{"type":"custom","name":"echo-params"}"#;
        exec.dispatch(dispatch(1, 1, 5, json));
        exec.dispatch(dispatch(1, 1, 5, json));
        exec.dispatch(dispatch(1, 1, 6, json));
        exec.dispatch(dispatch(2, 1, 4, json)); // deposed leader
        settle(&exec).await;
        let finals: Vec<_> = statuses(&outbox)
            .into_iter()
            .filter(|s| s.2 != InstanceStatus::Running)
            .collect();
        assert_eq!(finals.len(), 1, "{finals:?}");
        assert_eq!((finals[0].0, finals[0].1), (1, 1));
        assert_eq!(exec.highest_leader(), Some(LeaderKey { term: 5, node_id: 1 }));
    }

    #[tokio::test]
    async fn unknown_custom_and_malformed_processors_fail_with_the_reason() {
        let (exec, outbox) = executor(2);
        exec.dispatch(dispatch(1, 1, 1, r#"{"type":"custom","name":"nope"}"#));
        exec.dispatch(dispatch(2, 1, 1, r#"{"type":"shel"#));
        settle(&exec).await;
        let finals: Vec<_> = statuses(&outbox)
            .into_iter()
            .filter(|s| s.2 == InstanceStatus::Failed)
            .collect();
        assert_eq!(finals.len(), 2, "{finals:?}");
        let of = |id: u64| {
            finals
                .iter()
                .find(|s| s.0 == id)
                .map(|s| s.3.clone())
                .unwrap_or_default()
        };
        assert_eq!(of(1), "no processor registered under nope");
        assert!(of(2).starts_with("invalid processor"), "{}", of(2));
    }

    #[tokio::test]
    async fn timeout_fails_the_instance_and_stop_cancels_it() {
        let (exec, outbox) = executor(2);
        let mut d = dispatch(1, 1, 1, r#"{"type":"shell","script":"sleep 5"}"#);
        d.timeout_ms = 200;
        exec.dispatch(d);
        exec.dispatch(dispatch(2, 1, 1, r#"{"type":"shell","script":"sleep 5"}"#));
        tokio::time::sleep(Duration::from_millis(100)).await;
        exec.stop(Stop {
            instance_id: 2,
            attempt: 1,
            leader: Some(LeaderId { term: 1, node_id: 1 }),
            reason: "by operator".into(),
        });
        settle(&exec).await;
        let finals: Vec<_> = statuses(&outbox)
            .into_iter()
            .filter(|s| s.2 == InstanceStatus::Failed)
            .collect();
        let of = |id: u64| {
            finals
                .iter()
                .find(|s| s.0 == id)
                .map(|s| s.3.clone())
                .unwrap_or_default()
        };
        assert_eq!(of(1), "timed out after 200 ms");
        assert_eq!(of(2), "stopped: by operator");
    }

    #[tokio::test]
    async fn concurrency_is_bounded_and_the_rest_queue() {
        let (exec, outbox) = executor(1);
        exec.dispatch(dispatch(1, 1, 1, r#"{"type":"shell","script":"sleep 0.3"}"#));
        exec.dispatch(dispatch(2, 1, 1, r#"{"type":"shell","script":"true"}"#));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let running: Vec<u64> = statuses(&outbox).iter().map(|s| s.0).collect();
        assert_eq!(running, vec![1], "the second waits for the slot");
        assert_eq!(exec.held().len(), 2, "a queued attempt is declared held");
        settle(&exec).await;
        assert_eq!(
            statuses(&outbox)
                .iter()
                .filter(|s| s.2 == InstanceStatus::Succeeded)
                .count(),
            2
        );
    }
}
