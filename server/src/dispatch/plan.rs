//! One dispatch round, decided as a pure function of the applied state, the
//! registry's snapshot and the time ([`plan`]); the dispatcher loop only
//! gathers these inputs and carries the plan out. Tested without a cluster.
//!
//! What a round decides:
//! - a waiting instance whose time has come is assigned to a worker the job's
//!   filter and strategy pick (`Assign`, sent only once committed, rule 2 of docs/rules.md), or
//!   failed when no live worker could ever take it and the job says fail (only
//!   after the failover grace, rule 6 of docs/rules.md: workers may still be reconnecting);
//! - an assigned or running instance whose worker came back as a new process
//!   is lost now (it died with the old process); one whose worker is gone is
//!   lost after the grace; one committed to a connected worker that does not
//!   run it yet is sent again (a previous leader may have committed it and died);
//! - an attempt an operator stopped while a worker held it is told to stop again
//!   (every `RESTOP_MS`) until the worker confirms it ended; a worker that came back
//!   as a new process, or is gone after the grace, confirms it by its loss. Until
//!   then the instance is not assigned again (rule 11 of docs/rules.md).

use std::collections::{BTreeSet, HashMap};

use qron_proto::api::{JobSpec, NoWorkerPolicy};
use qron_raft_store::{Attempt, Command, Instance, InstanceId, InstanceStatus, JobId, State, WorkerId};

use super::registry::Worker;
use super::select;

/// What a round needs besides the state and the workers.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub now_ms: i64,
    /// Whether this leadership's failover grace is over.
    pub grace_over: bool,
    /// Scheduled instances become dispatchable this long before their fire time.
    pub horizon_ms: i64,
    /// (instance, attempt) dispatches this leadership has already sent, with
    /// the worker stream (`Worker::conn`) each went on: one queued on a stream
    /// that has since been replaced never arrived, and is sent again.
    pub sent: &'a HashMap<(InstanceId, Attempt), u64>,
    /// When this leadership last sent a Stop for each unconfirmed stopped attempt.
    pub stops_sent: &'a HashMap<(InstanceId, Attempt), i64>,
    /// Drives round-robin and random picks.
    pub turn: u64,
    /// Look at every active instance (assigned and running ones: lost,
    /// restarted or re-sent), not only the waiting index. The dispatcher asks
    /// for it when the registry changed, when the grace ends and every
    /// `SWEEP_MS`; other rounds cost what is waiting, not what is active.
    pub sweep: bool,
    /// TEST ONLY: plan a contradicting dispatch before the assignment commits.
    pub unsafe_dispatch_before_commit: bool,
    /// TEST ONLY: confirm every unconfirmed stop at once (as if its worker were lost)
    /// instead of waiting for the worker: what "stop sent once and forgotten" was.
    pub unsafe_unconfirmed_stops: bool,
}

/// A committed assignment to send (again) to its connected worker.
#[derive(Debug, Clone)]
pub struct Send {
    pub worker: WorkerId,
    pub instance: Instance,
    pub job: JobSpec,
}

/// A stopped attempt's worker is told again to stop it this often until it confirms.
pub const RESTOP_MS: i64 = 1_000;

/// Rounds look at every active instance at least this often (`Inputs::sweep`).
pub const SWEEP_MS: u64 = 1_000;

/// A Stop to send for a stopped attempt its worker has not confirmed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSend {
    pub worker: WorkerId,
    pub instance: InstanceId,
    pub attempt: Attempt,
}

/// What the round decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// To propose (in batches); the dispatches of committed assignments follow.
    pub commands: Vec<Command>,
    /// Committed assignments to re-send now.
    pub resend: Vec<Send>,
    /// Stops to send (again) for stopped attempts not yet confirmed ended.
    pub stops: Vec<StopSend>,
    /// TEST ONLY (`unsafe_dispatch_before_commit`): dispatches sent before any commit.
    pub early: Vec<Send>,
    /// The turn counter after this round's picks.
    pub turn: u64,
}

/// Decides one dispatch round.
pub fn plan(state: &State, workers: &[Worker], input: Inputs<'_>) -> Plan {
    let now = input.now_ms;
    let mut out = Plan {
        turn: input.turn,
        ..Plan::default()
    };
    let mut waiting: Vec<(Instance, Option<JobSpec>)> = Vec::new();
    let mut assigned: Vec<(Instance, Option<JobSpec>)> = Vec::new();
    let mut specs: HashMap<JobId, Option<JobSpec>> = HashMap::new();
    let ids = if input.sweep {
        state.active_ids()
    } else {
        state.waiting_ids()
    };
    for id in ids {
        let Some(inst) = state.instance_opt(id) else { continue };
        let job = specs
            .entry(inst.job_id)
            .or_insert_with(|| state.job(inst.job_id).ok().map(|j| j.spec))
            .clone();
        match inst.status {
            // A retried instance whose stopped attempt is not confirmed ended waits.
            InstanceStatus::WaitingDispatch
                if inst.stop_pending.is_none()
                    && inst.not_before_ms <= now
                    && inst.fire_time_ms.is_none_or(|f| f - input.horizon_ms <= now) =>
            {
                waiting.push((inst, job));
            }
            InstanceStatus::WaitingWorkerReceive | InstanceStatus::Running => assigned.push((inst, job)),
            _ => {}
        }
    }

    let mut pending: HashMap<WorkerId, u32> = HashMap::new();
    for (inst, job) in &waiting {
        let Some(job) = job else {
            out.commands.push(Command::FailInstance {
                instance: inst.id,
                reason: format!("job {} was deleted", inst.job_id),
                now_ms: now,
            });
            continue;
        };
        match select::pick(job, workers, &pending, out.turn) {
            Some(w) => {
                out.turn = out.turn.wrapping_add(1);
                if input.unsafe_dispatch_before_commit {
                    // Deliberately broken (test only): what a deposed leader's early send
                    // looks like, a dispatch that the committed assignment contradicts.
                    if let Some(other) = workers
                        .iter()
                        .find(|o| o.reg.app == job.app && o.reg.worker_id != w.reg.worker_id && o.connected())
                    {
                        let mut early = inst.clone();
                        early.attempt = early.attempt.next();
                        out.early.push(Send {
                            worker: other.reg.worker_id.clone(),
                            instance: early,
                            job: job.clone(),
                        });
                    }
                }
                *pending.entry(w.reg.worker_id.clone()).or_default() += 1;
                out.commands.push(Command::Assign {
                    instance: inst.id,
                    attempt: inst.attempt.next(),
                    worker: w.reg.worker_id.clone(),
                    incarnation: w.reg.incarnation.clone(),
                    now_ms: now,
                });
            }
            // Workers may still be reconnecting after a failover: decide after the grace.
            // Matching workers that are only busy mean waiting for a slot, not failing.
            None if input.grace_over
                && job.no_worker_policy == NoWorkerPolicy::Fail
                && !select::any_matching(job, workers) =>
            {
                out.commands.push(Command::FailInstance {
                    instance: inst.id,
                    reason: select::no_worker_reason(job, workers),
                    now_ms: now,
                });
            }
            None => {}
        }
    }

    for (inst, job) in &assigned {
        let Some(worker) = inst.worker.as_ref() else { continue };
        let live = workers.iter().find(|w| &w.reg.worker_id == worker);
        let restarted = live.is_some_and(|w| {
            inst.worker_incarnation
                .as_deref()
                .is_some_and(|i| !i.is_empty() && i != w.reg.incarnation)
        });
        match live {
            // The same worker id, but a new process: it has forgotten this attempt,
            // which died with the old process. Lost now, no grace needed.
            Some(w) if restarted => out.commands.push(Command::WorkerLost {
                instance: inst.id,
                attempt: inst.attempt,
                reason: format!("worker {worker} restarted (new process {})", w.reg.incarnation),
                now_ms: now,
            }),
            Some(w) => {
                // Committed by an earlier leader (or by us, but the send failed): send it
                // again. The worker runs an (instance, attempt) at most once.
                let running = w.load.running.contains(&(inst.id, inst.attempt));
                if inst.status == InstanceStatus::WaitingWorkerReceive
                    && !running
                    && input.sent.get(&(inst.id, inst.attempt)) != Some(&w.conn)
                {
                    if let Some(job) = job {
                        out.resend.push(Send {
                            worker: worker.clone(),
                            instance: inst.clone(),
                            job: job.clone(),
                        });
                    }
                }
            }
            None if input.grace_over => out.commands.push(Command::WorkerLost {
                instance: inst.id,
                attempt: inst.attempt,
                reason: format!("worker {worker} is gone"),
                now_ms: now,
            }),
            None => {}
        }
    }

    for id in &state.unconfirmed_ids() {
        let Some(inst) = state.instance_opt(*id) else { continue };
        let Some(p) = inst.stop_pending.as_ref() else {
            continue;
        };
        let live = workers.iter().find(|w| w.reg.worker_id == p.worker);
        if input.unsafe_unconfirmed_stops {
            out.commands.push(Command::WorkerLost {
                instance: *id,
                attempt: p.attempt,
                reason: "TEST MODE: stop taken as confirmed without the worker".into(),
                now_ms: now,
            });
            continue;
        }
        match live {
            // A new process of the worker killed what the old one left before it
            // registered: that confirms the end.
            Some(w) if !p.incarnation.is_empty() && w.reg.incarnation != p.incarnation => {
                out.commands.push(Command::WorkerLost {
                    instance: *id,
                    attempt: p.attempt,
                    reason: format!("worker {} restarted (new process {})", p.worker, w.reg.incarnation),
                    now_ms: now,
                })
            }
            Some(w) if w.connected() => {
                let due = input
                    .stops_sent
                    .get(&(*id, p.attempt))
                    .is_none_or(|t| now.saturating_sub(*t) >= RESTOP_MS);
                if due {
                    out.stops.push(StopSend {
                        worker: p.worker.clone(),
                        instance: *id,
                        attempt: p.attempt,
                    });
                }
            }
            // Registered but between streams: it reconnects or expires.
            Some(_) => {}
            // Gone for the worker timeout (its lease lapsed well before), or never
            // back to this leader within the grace.
            None if input.grace_over => out.commands.push(Command::WorkerLost {
                instance: *id,
                attempt: p.attempt,
                reason: format!("worker {} is gone", p.worker),
                now_ms: now,
            }),
            None => {}
        }
    }
    out
}

/// Fire and assign in one entry: each of the wheel's runnable fires is
/// assigned at once to a worker that the job's filter and strategy pick
/// (`Command::FireAssign`), so its dispatch leaves as soon as that entry
/// commits, ahead of the fire time, with no separate `Assign` round trip. A fire
/// that no live worker can take now, a skipped fire, or one of a job that is
/// gone stays a plain `Fire`: the dispatcher assigns it when it can (or fails
/// it, per the job's policy). `turn` drives round-robin and random picks, as in
/// [`plan`]. `pending` counts what was handed to each worker since its load
/// was last reported: the caller keeps it over the steps of one burst (the
/// workers' heartbeats do not yet show those), so each step does not hand out
/// the same free slots again.
pub fn pre_assign(
    state: &State,
    workers: &[Worker],
    fires: Vec<Command>,
    turn: &mut u64,
    pending: &mut HashMap<WorkerId, u32>,
) -> Vec<Command> {
    let mut specs: HashMap<JobId, Option<JobSpec>> = HashMap::new();
    fires
        .into_iter()
        .map(|c| match c {
            Command::Fire {
                job,
                fire_time_ms,
                now_ms,
                skip: None,
            } if !workers.is_empty() => {
                let spec = specs.entry(job).or_insert_with(|| state.job(job).ok().map(|j| j.spec));
                match spec
                    .as_ref()
                    .and_then(|spec| select::pick(spec, workers, pending, *turn))
                {
                    Some(w) => {
                        *turn = turn.wrapping_add(1);
                        *pending.entry(w.reg.worker_id.clone()).or_default() += 1;
                        Command::FireAssign {
                            job,
                            fire_time_ms,
                            now_ms,
                            worker: w.reg.worker_id.clone(),
                            incarnation: w.reg.incarnation.clone(),
                        }
                    }
                    None => Command::Fire {
                        job,
                        fire_time_ms,
                        now_ms,
                        skip: None,
                    },
                }
            }
            other => other,
        })
        .collect()
}

/// The attempts a worker says it holds that are not their instance's live
/// attempt on that worker (stopped, superseded, finished, or unknown): the worker
/// is told to stop each, on every register and heartbeat (rule 11, docs/rules.md).
/// Stopping an attempt that already ended is a no-op on the worker.
pub fn stale_held(
    state: &State,
    worker: &WorkerId,
    held: &BTreeSet<(InstanceId, Attempt)>,
) -> Vec<(InstanceId, Attempt)> {
    held.iter()
        .filter(|(id, attempt)| match state.instance_opt(*id) {
            Some(i) => {
                let live = i.attempt == *attempt
                    && i.worker.as_ref() == Some(worker)
                    && matches!(i.status, InstanceStatus::WaitingWorkerReceive | InstanceStatus::Running);
                !live
            }
            None => true,
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {

    use qron_raft_store::Reply;
    use tokio::sync::mpsc;

    use super::*;
    use crate::dispatch::registry::{Registration, Registry};

    const NOW: i64 = 1_000_000;

    /// A state with app "demo", job 1 (no worker → `policy`), and one instance run at `NOW - 10`.
    fn state_with_instance(policy: &str) -> (State, InstanceId) {
        let mut s = State::default();
        let ok = |r: qron_raft_store::Response| r.0.expect("applied");
        ok(s.apply(&Command::CreateApp {
            name: "demo".into(),
            secret: "s3cret-s3cret".into(),
            now_ms: NOW - 100,
        }));
        let spec = serde_json::from_value(serde_json::json!({
            "app": "demo", "name": "j", "schedule": {"type": "api"},
            "processor": {"type": "shell", "script": "true"},
            "no_worker_policy": policy,
        }))
        .expect("spec");
        ok(s.apply(&Command::CreateJob { spec, now_ms: NOW - 50 }));
        let Reply::Instance(inst) = ok(s.apply(&Command::RunJob {
            job: JobId(1),
            params: String::new(),
            now_ms: NOW - 10,
        })) else {
            panic!("RunJob answers the instance")
        };
        (s, inst.id)
    }

    fn registry(
        ids: &[(&str, &str)],
    ) -> (
        Registry,
        Vec<mpsc::Receiver<Result<qron_proto::worker::ServerMessage, tonic::Status>>>,
    ) {
        let r = Registry::default();
        let mut rxs = vec![];
        for (id, incarnation) in ids {
            let (tx, rx) = mpsc::channel(4);
            rxs.push(rx);
            r.register(Registration::for_test(id, incarnation, &[]), tx);
        }
        (r, rxs)
    }

    static NO_STOPS: std::sync::LazyLock<HashMap<(InstanceId, Attempt), i64>> = std::sync::LazyLock::new(HashMap::new);

    fn inputs(sent: &HashMap<(InstanceId, Attempt), u64>, grace_over: bool) -> Inputs<'_> {
        Inputs {
            now_ms: NOW,
            grace_over,
            horizon_ms: 500,
            sent,
            stops_sent: &NO_STOPS,
            turn: 0,
            sweep: true,
            unsafe_dispatch_before_commit: false,
            unsafe_unconfirmed_stops: false,
        }
    }

    fn assign(s: &mut State, id: InstanceId, worker: &str, incarnation: &str) {
        s.apply(&Command::Assign {
            instance: id,
            attempt: Attempt(1),
            worker: WorkerId::new(worker),
            incarnation: incarnation.into(),
            now_ms: NOW - 5,
        })
        .0
        .expect("assigned");
    }

    #[test]
    fn a_waiting_instance_is_assigned_to_a_live_worker_as_the_next_attempt() {
        let (s, id) = state_with_instance("wait");
        let (r, _rx) = registry(&[("w1", "i1")]);
        let sent = HashMap::new();
        let p = plan(&s, &r.snapshot(), inputs(&sent, false));
        assert_eq!(p.commands.len(), 1);
        assert!(
            matches!(&p.commands[0], Command::Assign { instance, attempt: Attempt(1), worker, incarnation, .. }
                if *instance == id && worker.as_str() == "w1" && incarnation == "i1"),
            "{:?}",
            p.commands
        );
        assert_eq!(p.turn, 1);
        assert!(p.resend.is_empty() && p.early.is_empty());
    }

    #[test]
    fn no_worker_fails_only_after_the_grace_and_only_if_the_job_says_fail() {
        let sent = HashMap::new();
        let (s, id) = state_with_instance("fail");
        assert!(
            plan(&s, &[], inputs(&sent, false)).commands.is_empty(),
            "within the grace: wait"
        );
        let p = plan(&s, &[], inputs(&sent, true));
        assert!(
            matches!(&p.commands[..], [Command::FailInstance { instance, reason, .. }]
                if *instance == id && reason.contains("no live worker")),
            "{:?}",
            p.commands
        );
        let (s, _) = state_with_instance("wait");
        assert!(
            plan(&s, &[], inputs(&sent, true)).commands.is_empty(),
            "policy wait: wait"
        );
    }

    #[test]
    fn a_round_without_a_sweep_looks_at_waiting_instances_only() {
        let sent = HashMap::new();
        let (mut s, assigned) = state_with_instance("wait");
        assign(&mut s, assigned, "w1", "i1");
        s.apply(&Command::RunJob {
            job: JobId(1),
            params: String::new(),
            now_ms: NOW - 5,
        })
        .0
        .expect("run");
        let (r, _rx) = registry(&[("w2", "i1")]);
        let quick = Inputs {
            sweep: false,
            ..inputs(&sent, true)
        };
        // The waiting one is assigned; w1's attempt is not looked at.
        let p = plan(&s, &r.snapshot(), quick);
        assert!(
            matches!(&p.commands[..], [Command::Assign { instance, .. }] if *instance != assigned),
            "{:?}",
            p.commands
        );
        // A sweep finds that w1 is gone.
        let p = plan(&s, &r.snapshot(), inputs(&sent, true));
        assert!(
            p.commands
                .iter()
                .any(|c| matches!(c, Command::WorkerLost { instance, .. } if *instance == assigned)),
            "{:?}",
            p.commands
        );
    }

    #[test]
    fn registering_or_removing_a_worker_is_a_change_the_dispatcher_sees() {
        let (r, _rx) = registry(&[("w1", "i1")]);
        let before = r.changes();
        let (tx, _rx2) = mpsc::channel(4);
        r.register(Registration::for_test("w1", "i2", &[]), tx);
        let after_register = r.changes();
        assert!(after_register > before);
        r.heartbeat(&WorkerId::new("w1"), 2, Default::default());
        assert_eq!(r.changes(), after_register, "a heartbeat is not a change");
        r.expire(std::time::Duration::ZERO);
        assert!(r.changes() > after_register);
    }

    #[test]
    fn a_gone_worker_loses_its_attempt_after_the_grace_a_restarted_one_at_once() {
        let sent = HashMap::new();
        let (mut s, id) = state_with_instance("wait");
        assign(&mut s, id, "w1", "i1");
        // Gone: nothing within the grace, lost after it.
        assert!(plan(&s, &[], inputs(&sent, false)).commands.is_empty());
        let p = plan(&s, &[], inputs(&sent, true));
        assert!(
            matches!(&p.commands[..], [Command::WorkerLost { instance, attempt: Attempt(1), reason, .. }]
                if *instance == id && reason.contains("is gone")),
            "{:?}",
            p.commands
        );
        // Back as a new process: lost at once, even within the grace.
        let (r, _rx) = registry(&[("w1", "i2")]);
        let p = plan(&s, &r.snapshot(), inputs(&sent, false));
        assert!(
            matches!(&p.commands[..], [Command::WorkerLost { reason, .. }] if reason.contains("restarted")),
            "{:?}",
            p.commands
        );
    }

    #[test]
    fn a_committed_assignment_is_resent_once_to_its_connected_worker() {
        let (mut s, id) = state_with_instance("wait");
        assign(&mut s, id, "w1", "i1");
        let (r, _rx) = registry(&[("w1", "i1")]);
        let mut sent = HashMap::new();
        let p = plan(&s, &r.snapshot(), inputs(&sent, true));
        assert!(p.commands.is_empty(), "{:?}", p.commands);
        assert_eq!(p.resend.len(), 1);
        assert_eq!((p.resend[0].worker.as_str(), p.resend[0].instance.id), ("w1", id));
        let conn = r.snapshot()[0].conn;
        sent.insert((id, Attempt(1)), conn);
        assert!(
            plan(&s, &r.snapshot(), inputs(&sent, true)).resend.is_empty(),
            "sent already"
        );
        // Sent on a stream the worker has since replaced (same process): what was
        // queued on the old stream never arrived, so it goes again.
        let (tx, _rx2) = mpsc::channel(4);
        r.register(Registration::for_test("w1", "i1", &[]), tx);
        assert_ne!(r.snapshot()[0].conn, conn);
        assert_eq!(plan(&s, &r.snapshot(), inputs(&sent, true)).resend.len(), 1);
    }

    #[test]
    fn a_scheduled_instance_waits_until_its_fire_time_is_within_the_horizon() {
        // Fires (not runs) of job 1 at the given time; the run-now instance is canceled.
        let fired_at = |fire_time_ms: i64| {
            let (mut s, id) = state_with_instance("wait");
            s.apply(&Command::CancelInstance {
                instance: id,
                now_ms: NOW,
            })
            .0
            .expect("cancel");
            s.apply(&Command::Fire {
                job: JobId(1),
                fire_time_ms,
                now_ms: NOW,
                skip: None,
            })
            .0
            .expect("fire");
            s
        };
        let (r, _rx) = registry(&[("w1", "i1")]);
        let sent = HashMap::new();
        let s = fired_at(NOW + 501);
        assert!(plan(&s, &r.snapshot(), inputs(&sent, true)).commands.is_empty());
        let s = fired_at(NOW + 500);
        assert_eq!(plan(&s, &r.snapshot(), inputs(&sent, true)).commands.len(), 1);
    }

    #[test]
    fn pre_assign_assigns_runnable_fires_within_the_workers_slots_and_leaves_the_rest() {
        let (s, _) = state_with_instance("wait");
        let fire = |t: i64, skip: Option<&str>, job: u64| Command::Fire {
            job: JobId(job),
            fire_time_ms: NOW + t,
            now_ms: NOW,
            skip: skip.map(str::to_owned),
        };
        // Six runnable fires, a skipped one, one of a job that does not exist.
        let mut fires: Vec<Command> = (1..=6).map(|t| fire(t, None, 1)).collect();
        fires.push(fire(7, Some("misfire"), 1));
        fires.push(fire(8, None, 99));
        let (r, _rx) = registry(&[("w1", "i1"), ("w2", "i2")]);
        let mut turn = 0;
        let out = pre_assign(&s, &r.snapshot(), fires.clone(), &mut turn, &mut HashMap::new());
        assert_eq!(out.len(), fires.len(), "one command per fire, in order");
        let mut per_worker: HashMap<String, u32> = HashMap::new();
        for (i, c) in out[..6].iter().enumerate() {
            match c {
                Command::FireAssign {
                    job,
                    fire_time_ms,
                    worker,
                    incarnation,
                    ..
                } => {
                    assert_eq!((*job, *fire_time_ms), (JobId(1), NOW + 1 + i as i64));
                    let want = if worker.as_str() == "w1" { "i1" } else { "i2" };
                    assert_eq!(incarnation, want, "the picked worker's process");
                    *per_worker.entry(worker.to_string()).or_default() += 1;
                }
                other => panic!("fire {i} not assigned: {other:?}"),
            }
        }
        assert_eq!(per_worker.len(), 2, "spread over both workers: {per_worker:?}");
        assert_eq!(out[6], fires[6], "a skipped fire stays a Fire");
        assert_eq!(out[7], fires[7], "a fire of an unknown job stays a Fire");
        assert_eq!(turn, 6);

        // Two workers of 4 slots each: the ninth and tenth fires wait for the dispatcher.
        let fires: Vec<Command> = (1..=10).map(|t| fire(t, None, 1)).collect();
        let mut pending = HashMap::new();
        let out = pre_assign(&s, &r.snapshot(), fires.clone(), &mut turn, &mut pending);
        let assigned = out.iter().filter(|c| matches!(c, Command::FireAssign { .. })).count();
        assert_eq!(assigned, 8, "{out:?}");
        assert!(
            matches!(out[8..], [Command::Fire { .. }, Command::Fire { .. }]),
            "{out:?}"
        );
        // The next step of the same burst: the slots handed out are still taken.
        let out = pre_assign(&s, &r.snapshot(), fires, &mut turn, &mut pending);
        assert!(out.iter().all(|c| matches!(c, Command::Fire { .. })), "{out:?}");

        // No live worker: nothing is assigned.
        let fires = vec![fire(1, None, 1)];
        assert_eq!(
            pre_assign(&s, &[], fires.clone(), &mut turn, &mut HashMap::new()),
            fires
        );
    }

    fn stop(s: &mut State, id: InstanceId) {
        s.apply(&Command::StopInstance {
            instance: id,
            now_ms: NOW - 4,
        })
        .0
        .expect("stopped");
    }

    #[test]
    fn an_unconfirmed_stop_is_resent_and_blocks_the_retry_until_confirmed() {
        let (mut s, id) = state_with_instance("wait");
        assign(&mut s, id, "w1", "i1");
        stop(&mut s, id);
        s.apply(&Command::RetryInstance {
            instance: id,
            now_ms: NOW - 3,
        })
        .0
        .expect("retried");
        let (r, _rx) = registry(&[("w1", "i1"), ("w2", "i1")]);
        let sent = HashMap::new();
        let p = plan(&s, &r.snapshot(), inputs(&sent, true));
        assert!(
            p.commands.is_empty(),
            "no new attempt beside the stopped one: {:?}",
            p.commands
        );
        assert_eq!(
            p.stops,
            vec![StopSend {
                worker: WorkerId::new("w1"),
                instance: id,
                attempt: Attempt(1)
            }]
        );
        // Sent a moment ago: not again until RESTOP_MS passed.
        let recent = HashMap::from([((id, Attempt(1)), NOW - 10)]);
        let mut i = inputs(&sent, true);
        i.stops_sent = &recent;
        assert!(plan(&s, &r.snapshot(), i).stops.is_empty());
        let old = HashMap::from([((id, Attempt(1)), NOW - RESTOP_MS)]);
        i.stops_sent = &old;
        assert_eq!(plan(&s, &r.snapshot(), i).stops.len(), 1, "re-sent until confirmed");
    }

    #[test]
    fn a_restarted_or_gone_worker_confirms_its_stopped_attempt_by_its_loss() {
        let (mut s, id) = state_with_instance("wait");
        assign(&mut s, id, "w1", "i1");
        stop(&mut s, id);
        let sent = HashMap::new();
        assert!(
            plan(&s, &[], inputs(&sent, false)).commands.is_empty(),
            "within the grace: wait"
        );
        let p = plan(&s, &[], inputs(&sent, true));
        assert!(
            matches!(&p.commands[..], [Command::WorkerLost { instance, attempt: Attempt(1), reason, .. }]
                if *instance == id && reason.contains("gone")),
            "{:?}",
            p.commands
        );
        let (r, _rx) = registry(&[("w1", "i2")]);
        let p = plan(&s, &r.snapshot(), inputs(&sent, false));
        assert!(
            matches!(&p.commands[..], [Command::WorkerLost { reason, .. }] if reason.contains("restarted")),
            "{:?}",
            p.commands
        );
    }

    #[test]
    fn held_attempts_that_are_not_live_on_the_worker_are_stale() {
        let (mut s, id) = state_with_instance("wait");
        assign(&mut s, id, "w1", "i1");
        let w1 = WorkerId::new("w1");
        let held = BTreeSet::from([(id, Attempt(1)), (InstanceId(99), Attempt(1))]);
        assert_eq!(
            stale_held(&s, &w1, &held),
            vec![(InstanceId(99), Attempt(1))],
            "unknown instance"
        );
        assert_eq!(
            stale_held(&s, &WorkerId::new("w2"), &held).len(),
            2,
            "another worker's attempt"
        );
        stop(&mut s, id);
        assert_eq!(stale_held(&s, &w1, &held).len(), 2, "a stopped attempt");
    }
}
