//! Runs the instances the leader dispatches, independently of any connection: a
//! failover changes where reports go, never what runs.
//!
//! This module owns the decision to run (fencing and once-only acceptance, through
//! [`Fence`]; the dispatch must name this process's incarnation and come while the
//! lease holds), the wait for the start time and a free slot, the instance timeout, the
//! cancel on stop, shutdown or a lapsed lease (rule 11, docs/rules.md), the log flusher
//! of each attempt, and the RUNNING and final reports. An attempt that never started
//! is given back (RELEASED), so it does not spend the instance's retry budget. It never talks to the network: reports go into the outbox, and the
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
use crate::groups::StateDir;
use crate::http::{run_http, HttpCall};
use crate::ids::AttemptKey;
use crate::lease::Lease;
use crate::logs::{run_flusher, LogSink};
use crate::outbox::{Report, SharedOutbox};
use crate::processor::{CancelHandle, ProcessResult, Processor, TaskContext, TaskLogger};
use crate::shell::run_shell_in;
use crate::util::{lock, now_ms, truncate_text};

/// Longest result text sent with a final status.
const MAX_RESULT_BYTES: usize = 4 * 1024;

/// How often the lease is checked while attempts are held.
const LEASE_CHECK: Duration = Duration::from_millis(50);

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
    /// Renewed by the connection; when it lapses every held attempt is ended.
    lease: Arc<Lease>,
    /// Where shell attempts' process groups are recorded (none in unit tests).
    state_dir: Option<Arc<StateDir>>,
    /// This process's incarnation: dispatches meant for another one are refused.
    incarnation: String,
}

/// What the executor needs besides its settings and processors.
pub(crate) struct Env {
    pub(crate) http: reqwest::Client,
    pub(crate) outbox: Arc<SharedOutbox>,
    pub(crate) lease: Arc<Lease>,
    pub(crate) state_dir: Option<Arc<StateDir>>,
    pub(crate) incarnation: String,
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
    pub(crate) fn new(cfg: Arc<AgentConfig>, processors: ProcessorMap, env: Env) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_concurrency.max(1) as usize));
        Executor {
            inner: Arc::new(Inner {
                cfg,
                processors,
                http: env.http,
                outbox: env.outbox,
                state: Mutex::new(State::default()),
                slots,
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                lease: env.lease,
                state_dir: env.state_dir,
                incarnation: env.incarnation,
            }),
        }
    }

    /// Ends every held attempt as soon as the lease lapses, until `stop` fires: the
    /// leader may retry them elsewhere once its worker timeout passes, and the lease
    /// is shorter by the margin (rule 11, docs/rules.md). Runs beside the connection.
    pub(crate) async fn watch_lease(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(LEASE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.inner.lease.lapsed() {
                self.lease_lapsed();
            }
        }
    }

    /// The lease lapsed: kill what runs (no grace), give back what waits, and take
    /// nothing new until a leader grants a new lease.
    pub(crate) fn lease_lapsed(&self) {
        let lease = &self.inner.lease;
        let reason = format!(
            "the worker lost its lease: no leader answered it for {} ms",
            lease.length().as_millis()
        );
        lease.revoke();
        let ending: Vec<(AttemptKey, CancelHandle)> = lock(&self.inner.state)
            .held
            .iter()
            .filter(|(_, h)| h.final_seq.is_none())
            .map(|(k, h)| (*k, h.cancel.clone()))
            .collect();
        if ending.is_empty() {
            return;
        }
        warn!(attempts = ending.len(), %reason, "lease lapsed: ending every held attempt");
        for (key, cancel) in ending {
            warn!(
                instance_id = key.instance_id.0,
                attempt = key.attempt.0,
                "ending attempt: lease lapsed"
            );
            cancel.cancel_now(reason.clone());
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
        if !d.incarnation.is_empty() && d.incarnation != self.inner.incarnation {
            warn!(instance_id, attempt, meant_for = %d.incarnation, "dispatch meant for another process of this worker refused");
            return;
        }
        if !self.inner.lease.valid() {
            // Not recorded: the leader re-sends it on the next registration, or
            // declares it lost.
            warn!(instance_id, attempt, "no lease in force: dispatch refused");
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
                Some(_) => {
                    debug!(instance_id, attempt, "stop for an attempt already finished");
                    return;
                }
                None => {
                    if st.fence.tombstone(key) {
                        // Never received (it may still be on its way, or was lost):
                        // it can no longer start here, and the leader learns that it
                        // did not run.
                        info!(
                            instance_id,
                            attempt, "stop for an attempt never received: it will not start"
                        );
                        self.inner.outbox.push(Report::status(
                            key,
                            InstanceStatus::Released,
                            "stopped before this worker received it".to_owned(),
                            now_ms(),
                            None,
                        ));
                    } else {
                        debug!(
                            instance_id,
                            attempt, "stop for an attempt that ended and was acknowledged"
                        );
                    }
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
        let mut st = lock(&self.inner.state);
        let done: Vec<AttemptKey> = st
            .held
            .iter()
            .filter(|(_, h)| h.final_seq.is_some_and(|f| f <= seq))
            .map(|(k, _)| *k)
            .collect();
        let now = std::time::Instant::now();
        for k in done {
            st.held.remove(&k);
            // Rule 12: the fence forgets it once it can no longer be re-sent.
            st.fence.finished(k, now);
        }
    }

    /// Shuts the executor down: refuses new dispatches, gives queued instances back (RELEASED, no retry spent), lets the
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
        let inner = &self.inner;
        let cfg = &inner.cfg;
        // Made while the dispatch waits for its start time (pre-dispatch sends it
        // ahead): the processor parsed, its context and log sink ready, so that at
        // the instant only the processor starts. Thousands of dispatches start in
        // the same millisecond, one after the other on the runtime's threads.
        let sink = Arc::new(LogSink::new(cfg.log_max_bytes_per_attempt, cfg.log_batch_max_bytes));
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
            logger: TaskLogger::new(sink.clone()),
            cancel: cancel.token.clone(),
            cancel_reason: cancel.reason.clone(),
        };
        let prepared = self.processor_future(&d.processor_json, ctx);
        let permit = match self.wait_to_start(d.start_at_ms, &cancel).await {
            Ok(p) => p,
            Err(reason) => {
                info!(%reason, "instance not started: giving it back");
                self.release(key, reason);
                return;
            }
        };
        inner.outbox.push(Report::status(
            key,
            InstanceStatus::Running,
            String::new(),
            now_ms(),
            None,
        ));
        debug!("instance running");
        let flushed = CancellationToken::new();
        let flusher = tokio::spawn(run_flusher(
            sink,
            key,
            inner.outbox.clone(),
            cfg.log_batch_interval,
            flushed.clone(),
        ));
        let result = match prepared {
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
    async fn wait_to_start(&self, start_at_ms: i64, cancel: &CancelHandle) -> Result<OwnedSemaphorePermit, String> {
        let inner = &self.inner;
        let shut_down = || "the worker shut down before the instance started".to_owned();
        let stopped = |c: &CancelHandle| {
            format!(
                "{} before it started",
                c.reason().unwrap_or_else(|| "stopped".to_owned())
            )
        };
        let lapsed = || "the worker lost its lease before the instance started".to_owned();
        let wait_ms = start_at_ms.saturating_sub(now_ms());
        if start_at_ms > 0 && wait_ms > 0 {
            let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.token.cancelled() => return Err(stopped(cancel)),
                _ = inner.draining.cancelled() => return Err(shut_down()),
            }
        }
        let permit = tokio::select! {
            permit = inner.slots.clone().acquire_owned() => permit.map_err(|_| shut_down()),
            _ = cancel.token.cancelled() => Err(stopped(cancel)),
            _ = inner.draining.cancelled() => Err(shut_down()),
        }?;
        // A worker that woke from a freeze checks its lease before it starts anything.
        if !inner.lease.valid() || cancel.is_hard() {
            return Err(lapsed());
        }
        Ok(permit)
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
            ProcessorSpec::Shell { script } => {
                let dir = self.inner.state_dir.clone();
                let guarded = !self.inner.cfg.unsafe_orphan_scripts;
                Box::pin(async move { run_shell_in(&script, &ctx, dir.as_deref(), guarded).await })
            }
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
        // A lapsed lease allows no grace: the attempt must be over before the leader
        // may start its retry (a shell's group is killed at once either way).
        let grace = if cancel.is_hard() {
            Duration::ZERO
        } else {
            self.inner.cfg.cancel_grace
        };
        let exit_code = match tokio::time::timeout(grace, &mut fut).await {
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

    /// Gives back an attempt that never started (RELEASED): the leader puts it back
    /// to waiting without spending its retry budget, or takes it as the
    /// confirmation of a stop.
    fn release(&self, key: AttemptKey, reason: String) {
        self.push_final(
            key,
            Report::status(key, InstanceStatus::Released, reason, now_ms(), None),
        );
        info!(status = "RELEASED", "instance given back");
    }

    /// Pushes an attempt's last report and remembers its sequence number, so the
    /// attempt is declared held until the leader acknowledges it.
    fn push_final(&self, key: AttemptKey, report: Report) {
        // Push under the state lock (lock order: state, then outbox) so an ack of this
        // report cannot be handled before its sequence number is recorded.
        let mut st = lock(&self.inner.state);
        let seq = self.inner.outbox.push(report);
        if let Some(h) = st.held.get_mut(&key) {
            h.final_seq = Some(seq);
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
        self.push_final(key, report);
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
        let lease = Arc::new(Lease::new(Duration::from_secs(3600)));
        lease.granted(crate::lease::BootInstant::now());
        let env = Env {
            http: reqwest::Client::new(),
            outbox: outbox.clone(),
            lease,
            state_dir: None,
            incarnation: "test-incarnation".into(),
        };
        let exec = Executor::new(Arc::new(cfg), processors, env);
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
