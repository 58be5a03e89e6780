//! The one owner of leader-only work, in the manner of Nomad's
//! `establishLeadership` / `revokeLeadership`.
//!
//! A single loop follows openraft's metrics, decides the role with the pure
//! [`role::role`](crate::role::role) and publishes it on the watch channel that
//! the API, `Acquire`, `Connect` and `/cluster` read. When the role becomes
//! `Leader`, [`Term::establish`] runs the Raft barrier once (the term's first
//! entry applied) and then starts the leader's tasks — the scheduler and the
//! dispatcher — in a `JoinSet` the term owns. When the role changes away,
//! [`Term::revoke`] cancels them, tells every worker `NotLeader`, and waits for
//! the tasks and the worker streams with a time limit.
//!
//! A leader task that ends while the term goes on — with an error, a panic, or
//! by returning — is restarted once; if the same task fails again within
//! [`RESTART_WINDOW`], the node revokes its leader work and [`run`] returns an
//! error, so the process exits non-zero and its supervisor restarts it while
//! another node leads (openraft 0.9 has no step-down call). Never a leader that
//! fires nothing.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use qron_proto::worker::LeaderId;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::discovery;
use crate::dispatch::{dispatcher, messages, Dispatch};
use crate::retention;
use crate::role::{self, Role};
use crate::scheduler::{self, SchedulerConfig};

/// Re-checks the lease at least this often (metrics do not change while a cut-off leader waits).
const RECHECK: Duration = Duration::from_millis(50);
/// A leader task that fails twice within this window ends the node's leadership and the process.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long revoking waits for the leader's tasks and the worker streams to end.
const REVOKE_WAIT: Duration = Duration::from_secs(5);

/// The work a leader runs, each a task of the term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// The term's first entry applied; then the others start.
    Barrier,
    Scheduler,
    Dispatcher,
    /// Expires finished instances and logs (rule 12).
    Retention,
}

/// What the supervisor does about a failed leader task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Restart,
    /// The task failed twice within the window: stop leading and exit.
    GiveUp,
}

/// The restart policy: one restart per task per [`RESTART_WINDOW`].
#[derive(Debug, Default)]
pub struct Supervisor {
    last_failure: HashMap<TaskKind, Instant>,
}

impl Supervisor {
    /// Records a failure of `task` at `now` and decides.
    pub fn on_failure(&mut self, task: TaskKind, now: Instant) -> Decision {
        match self.last_failure.insert(task, now) {
            Some(before) if now.saturating_duration_since(before) < RESTART_WINDOW => Decision::GiveUp,
            _ => Decision::Restart,
        }
    }
}

/// How a leader task ended.
type Outcome = Result<anyhow::Result<()>, Box<dyn Any + Send>>;

/// Starts a leader task of the given kind; a seam for tests.
pub type Starter =
    Arc<dyn Fn(TaskKind, LeaderId, CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// One term of leadership: its identity, its stop signal and its tasks.
pub struct Term {
    pub leader: LeaderId,
    token: CancellationToken,
    tasks: JoinSet<(TaskKind, Outcome)>,
    supervisor: Supervisor,
    start: Starter,
}

impl Term {
    /// Begins a term: the barrier runs first, the other tasks start when it is through.
    pub fn establish(leader: LeaderId, start: Starter, parent: &CancellationToken) -> Term {
        tracing::info!(term = leader.term, "leading: waiting for the term's first entry");
        let mut t = Term {
            leader,
            token: parent.child_token(),
            tasks: JoinSet::new(),
            supervisor: Supervisor::default(),
            start,
        };
        t.spawn(TaskKind::Barrier);
        t
    }

    fn spawn(&mut self, kind: TaskKind) {
        let fut = (self.start)(kind, self.leader, self.token.clone());
        self.tasks
            .spawn(async move { (kind, AssertUnwindSafe(fut).catch_unwind().await) });
    }

    /// Waits for the next task to end and acts on it: start the tasks after the
    /// barrier, restart a failed task, or give up (an error for [`run`]).
    /// Pending forever while all tasks run.
    pub async fn next(&mut self) -> anyhow::Result<()> {
        let Some(joined) = self.tasks.join_next().await else {
            return std::future::pending().await;
        };
        let (kind, outcome) = match joined {
            Ok(x) => x,
            // Only `abort_all` in revoke cancels a task; a term that is being revoked is not polled.
            Err(e) => anyhow::bail!("a leader task could not be joined: {e}"),
        };
        if self.token.is_cancelled() {
            return Ok(());
        }
        let why = match (kind, outcome) {
            (TaskKind::Barrier, Ok(Ok(()))) => {
                tracing::info!(
                    term = self.leader.term,
                    "leading: starting the scheduler, the dispatcher and retention"
                );
                self.spawn(TaskKind::Scheduler);
                self.spawn(TaskKind::Dispatcher);
                self.spawn(TaskKind::Retention);
                return Ok(());
            }
            (_, Ok(Ok(()))) => "it returned while the term goes on".to_owned(),
            (_, Ok(Err(e))) => format!("it failed: {e:#}"),
            (_, Err(panic)) => format!("it panicked: {}", panic_message(&*panic)),
        };
        match self.supervisor.on_failure(kind, Instant::now()) {
            Decision::Restart => {
                tracing::error!(task = ?kind, term = self.leader.term, reason = %why, "leader task ended; restarting it once");
                self.spawn(kind);
                Ok(())
            }
            Decision::GiveUp => {
                tracing::error!(task = ?kind, term = self.leader.term, reason = %why, window = ?RESTART_WINDOW,
                    "leader task failed twice within the window; giving up the leadership and stopping the node");
                anyhow::bail!("leader task {kind:?} failed twice within {RESTART_WINDOW:?}: {why}")
            }
        }
    }

    /// Ends the term: cancels its tasks, tells every worker `NotLeader` and
    /// waits (bounded) for the tasks and the worker streams to end.
    pub async fn revoke(mut self, ctx: &Context, d: &Dispatch) {
        tracing::warn!(
            term = self.leader.term,
            "stopped leading: leader tasks cancelled, workers told NotLeader"
        );
        self.token.cancel();
        d.registry.close_all(messages::not_leader(discovery::other_leader(ctx)));
        let tasks = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(REVOKE_WAIT, tasks).await.is_err() {
            tracing::error!(wait = ?REVOKE_WAIT, "leader tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
        // Streams end on their own once the role is no longer this term's Leader.
        d.sessions.close();
        if tokio::time::timeout(REVOKE_WAIT, d.sessions.wait()).await.is_err() {
            tracing::warn!(open = d.sessions.len(), "worker streams still open after revoking");
        }
        d.sessions.reopen();
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The leader's real tasks: the barrier, the scheduler and the dispatcher.
pub fn starter(ctx: Arc<Context>, d: Arc<Dispatch>, sched: SchedulerConfig) -> Starter {
    // TEST ONLY (`--unsafe-test-fail-scheduler N`): the first N scheduler starts panic.
    let injected = Arc::new(AtomicU32::new(ctx.cfg.unsafe_fail_scheduler));
    Arc::new(
        move |kind: TaskKind, leader: LeaderId, token: CancellationToken| -> BoxFuture<'static, anyhow::Result<()>> {
            let (ctx, d) = (ctx.clone(), d.clone());
            if kind == TaskKind::Scheduler
                && injected
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return async { panic!("injected scheduler failure (--unsafe-test-fail-scheduler)") }.boxed();
            }
            match kind {
                TaskKind::Barrier => async move {
                    let still = {
                        let ctx = ctx.clone();
                        move || role::role(&ctx.raft.metrics().borrow(), ctx.id, ctx.lease()) == Role::Leader(leader)
                    };
                    if crate::raft::barrier(&ctx.raft, ctx.lease(), &token, still).await {
                        d.ready.send_replace(Some(leader));
                        Ok(())
                    } else if token.is_cancelled() {
                        Ok(())
                    } else {
                        anyhow::bail!("lost the leadership before the term's first entry was applied")
                    }
                }
                .boxed(),
                TaskKind::Scheduler => scheduler::run(ctx, d, sched.clone(), token).boxed(),
                TaskKind::Dispatcher => dispatcher::run(ctx, d, leader, token).boxed(),
                TaskKind::Retention => retention::run(ctx, token).boxed(),
            }
        },
    )
}

/// Follows openraft's metrics until `shutdown`: publishes the role, establishes
/// and revokes terms. Returns an error when a leader task failed twice within
/// the window (the node must exit).
pub async fn run(
    ctx: Arc<Context>,
    d: Arc<Dispatch>,
    start: Starter,
    role_tx: watch::Sender<Role>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut metrics = ctx.raft.metrics();
    let mut term: Option<Term> = None;
    let mut last_seen = None;
    let result = loop {
        let role = {
            let m = metrics.borrow_and_update();
            // openraft stops its core on a fatal error (storage failure, a panic in the
            // core) and keeps answering nothing: end the node, non-zero, so that its
            // supervisor restarts it from its disk (docs/rules.md, rule 7).
            if let Err(fatal) = &m.running_state {
                tracing::error!(error = %fatal, "Raft stopped with a fatal error; stopping the node");
                break Err(anyhow::anyhow!("Raft stopped with a fatal error: {fatal}"));
            }
            let seen = (m.vote.leader_id, m.state, m.current_leader);
            if last_seen != Some(seen) {
                tracing::info!(term = m.current_term, state = ?m.state, leader = ?m.current_leader, "raft role or leader changed");
                last_seen = Some(seen);
            }
            role::role(&m, ctx.id, ctx.lease())
        };
        role_tx.send_if_modified(|r| {
            let changed = *r != role;
            *r = role.clone();
            changed
        });
        if term.as_ref().is_some_and(|t| role != Role::Leader(t.leader)) {
            if let Some(t) = term.take() {
                t.revoke(&ctx, &d).await;
            }
        }
        if let (None, Role::Leader(l)) = (&term, &role) {
            term = Some(Term::establish(*l, start.clone(), &shutdown));
        }
        let failed = async {
            match term.as_mut() {
                Some(t) => t.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            changed = metrics.changed() => if changed.is_err() {
                tracing::error!("Raft's metrics ended while the node runs: its core stopped; stopping the node");
                break Err(anyhow::anyhow!("Raft's core stopped while the node was running"));
            },
            r = failed => if let Err(e) = r { break Err(e) },
            _ = tokio::time::sleep(RECHECK) => {}
        }
    };
    role_tx.send_replace(Role::Unknown { cut_off: false });
    if let Some(t) = term.take() {
        t.revoke(&ctx, &d).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const LEADER: LeaderId = LeaderId { term: 3, node_id: 1 };

    #[test]
    fn a_task_is_restarted_once_and_a_second_failure_within_the_window_gives_up() {
        let mut s = Supervisor::default();
        let t0 = Instant::now();
        assert_eq!(s.on_failure(TaskKind::Scheduler, t0), Decision::Restart);
        // Another task's failure is counted on its own.
        assert_eq!(s.on_failure(TaskKind::Dispatcher, t0), Decision::Restart);
        assert_eq!(
            s.on_failure(TaskKind::Scheduler, t0 + Duration::from_secs(59)),
            Decision::GiveUp
        );
        // Failures further apart than the window are restarted each time.
        let mut s = Supervisor::default();
        assert_eq!(s.on_failure(TaskKind::Scheduler, t0), Decision::Restart);
        assert_eq!(
            s.on_failure(TaskKind::Scheduler, t0 + RESTART_WINDOW),
            Decision::Restart
        );
    }

    /// A starter whose scheduler panics `panics` times, then runs until cancelled.
    fn flaky(panics: usize, starts: Arc<AtomicUsize>) -> Starter {
        Arc::new(
            move |kind: TaskKind,
                  _leader: LeaderId,
                  token: CancellationToken|
                  -> BoxFuture<'static, anyhow::Result<()>> {
                let starts = starts.clone();
                async move {
                    if kind == TaskKind::Scheduler {
                        let n = starts.fetch_add(1, Ordering::SeqCst);
                        if n < panics {
                            panic!("scheduler bug #{n}");
                        }
                    }
                    if kind != TaskKind::Barrier {
                        token.cancelled().await;
                    }
                    Ok(())
                }
                .boxed()
            },
        )
    }

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_the_term_goes_on() {
        let starts = Arc::new(AtomicUsize::new(0));
        let parent = CancellationToken::new();
        let mut t = Term::establish(LEADER, flaky(1, starts.clone()), &parent);
        // Barrier through, then the scheduler's panic: both handled without an error.
        t.next().await.expect("barrier");
        t.next().await.expect("restarted after one panic");
        // The restarted task runs as soon as the runtime polls it.
        let started_again = tokio::time::timeout(Duration::from_secs(5), async {
            while starts.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(started_again.is_ok(), "the scheduler was started again");
        // Nothing else ends while the term goes on.
        let quiet = tokio::time::timeout(Duration::from_millis(100), t.next()).await;
        assert!(quiet.is_err(), "no task ended: {quiet:?}");
    }

    #[tokio::test]
    async fn a_task_that_fails_twice_ends_the_leadership_with_an_error() {
        let starts = Arc::new(AtomicUsize::new(0));
        let parent = CancellationToken::new();
        let mut t = Term::establish(LEADER, flaky(2, starts.clone()), &parent);
        t.next().await.expect("barrier");
        t.next().await.expect("first panic: restart");
        let e = t.next().await.expect_err("second panic within the window: give up");
        let msg = format!("{e:#}");
        assert!(msg.contains("Scheduler") && msg.contains("scheduler bug #1"), "{msg}");
    }

    #[tokio::test]
    async fn a_task_that_returns_early_counts_as_a_failure() {
        let parent = CancellationToken::new();
        let start: Starter = Arc::new(
            |kind: TaskKind, _l: LeaderId, _t: CancellationToken| -> BoxFuture<'static, anyhow::Result<()>> {
                async move {
                    match kind {
                        TaskKind::Dispatcher => Ok(()),
                        _ => std::future::pending().await,
                    }
                }
                .boxed()
            },
        );
        let mut t = Term::establish(LEADER, start, &parent);
        // The barrier never ends here, so nothing else starts: prove it.
        assert!(tokio::time::timeout(Duration::from_millis(50), t.next()).await.is_err());
        t.spawn(TaskKind::Dispatcher);
        t.next().await.expect("restarted once");
        assert!(t.next().await.is_err(), "returned twice: give up");
    }
}
