//! The instance lifecycle through `State::apply`: assignment, reports fenced by
//! attempt, worker loss and retries, operator verbs, and idempotent logs.

use qron_raft_store::{Attempt, Command, CommandError, InstanceId, InstanceStatus, JobId, Reply, State, WorkerId};

fn setup(retries: u32) -> State {
    let mut s = State::default();
    assert!(s
        .apply(&Command::CreateApp {
            name: "demo".into(),
            secret: "s".into(),
            now_ms: 1
        })
        .0
        .is_ok());
    let spec = serde_json::from_value(serde_json::json!({
        "app": "demo", "name": "j", "schedule": {"type": "api"},
        "processor": {"type": "shell", "script": "true"},
        "instance_retries": retries,
        "retry_backoff": {"initial_ms": 10, "multiplier": 2, "max_ms": 100}
    }))
    .expect("spec");
    assert!(s.apply(&Command::CreateJob { spec, now_ms: 2 }).0.is_ok());
    let r = s.apply(&Command::RunJob {
        job: JobId(1),
        params: String::new(),
        now_ms: 3,
    });
    assert!(matches!(r.0, Ok(Reply::Instance(_))));
    s
}

const I: InstanceId = InstanceId(1);

fn assign(s: &mut State, attempt: u32, worker: &str) -> Result<Reply, CommandError> {
    s.apply(&Command::Assign {
        instance: I,
        attempt: Attempt(attempt),
        worker: WorkerId::new(worker),
        incarnation: format!("{worker}-1"),
        now_ms: 10,
    })
    .0
}

fn report(s: &mut State, attempt: u32, status: InstanceStatus) -> Result<Reply, CommandError> {
    s.apply(&Command::Report {
        instance: I,
        attempt: Attempt(attempt),
        status,
        result: format!("{status:?}"),
        exit_code: Some(0),
        at_ms: 20,
        now_ms: 21,
    })
    .0
}

#[test]
fn run_assign_report_success() {
    let mut s = setup(0);
    assert!(assign(&mut s, 2, "w1").is_err(), "attempt must be current + 1");
    assign(&mut s, 1, "w1").expect("assign");
    assert_eq!(
        s.instance(I).expect("instance").status,
        InstanceStatus::WaitingWorkerReceive
    );
    report(&mut s, 1, InstanceStatus::Running).expect("running");
    report(&mut s, 1, InstanceStatus::Running).expect("a re-sent report is a no-op");
    report(&mut s, 1, InstanceStatus::Succeeded).expect("succeeded");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::Succeeded);
    assert_eq!(i.started_at_ms, Some(20));
    assert!(s.active_ids().is_empty());
    assert!(report(&mut s, 1, InstanceStatus::Failed).is_err(), "SUCCEEDED is final");
}

#[test]
fn lost_worker_retries_and_late_report_of_old_attempt_changes_nothing() {
    let mut s = setup(1);
    assign(&mut s, 1, "w1").expect("assign");
    report(&mut s, 1, InstanceStatus::Running).expect("running");
    s.apply(&Command::WorkerLost {
        instance: I,
        attempt: Attempt(1),
        reason: "heartbeats stopped".into(),
        now_ms: 30,
    })
    .0
    .expect("lost");
    assert_eq!(s.instance(I).expect("instance").status, InstanceStatus::WaitingDispatch);
    assign(&mut s, 2, "w2").expect("attempt 2");
    let before = s.clone();
    assert!(report(&mut s, 1, InstanceStatus::Succeeded).is_err());
    assert_eq!(before, s, "the first attempt's late report changed the state");
    report(&mut s, 2, InstanceStatus::Running).expect("running 2");
    // Out of retries now: losing attempt 2 fails the instance.
    s.apply(&Command::WorkerLost {
        instance: I,
        attempt: Attempt(2),
        reason: "gone".into(),
        now_ms: 40,
    })
    .0
    .expect("lost 2");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::Failed);
    assert!(i.reason.contains("no retries left"), "{}", i.reason);
}

#[test]
fn failed_report_retries_with_backoff_then_fails_with_exit_code() {
    let mut s = setup(1);
    assign(&mut s, 1, "w1").expect("assign");
    report(&mut s, 1, InstanceStatus::Failed).expect("failed 1");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::WaitingDispatch);
    assert_eq!(i.not_before_ms, 21 + 10);
    assign(&mut s, 2, "w1").expect("assign 2");
    s.apply(&Command::Report {
        instance: I,
        attempt: Attempt(2),
        status: InstanceStatus::Failed,
        result: "exit code 3".into(),
        exit_code: Some(3),
        at_ms: 50,
        now_ms: 51,
    })
    .0
    .expect("failed 2");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::Failed);
    assert_eq!(i.exit_code, Some(3));
    assert_eq!(i.result, "exit code 3");
}

#[test]
fn operator_verbs_follow_the_rules() {
    let mut s = setup(0);
    assign(&mut s, 1, "w1").expect("assign");
    let cancel = s.apply(&Command::CancelInstance { instance: I, now_ms: 5 }).0;
    assert!(matches!(cancel, Err(CommandError::Conflict(_))), "{cancel:?}");
    s.apply(&Command::StopInstance { instance: I, now_ms: 6 })
        .0
        .expect("stop");
    assert_eq!(s.instance(I).expect("instance").status, InstanceStatus::Stopped);
    // The worker's last word on the stopped attempt confirms its end, nothing more.
    report(&mut s, 1, InstanceStatus::Succeeded).expect("confirms the stop");
    assert_eq!(
        s.instance(I).expect("instance").status,
        InstanceStatus::Stopped,
        "a stopped instance stays stopped"
    );
    assert!(s.instance(I).expect("instance").stop_pending.is_none());
    assert!(
        report(&mut s, 1, InstanceStatus::Succeeded).is_err(),
        "once confirmed, a report changes nothing"
    );
    s.apply(&Command::RetryInstance { instance: I, now_ms: 7 })
        .0
        .expect("retry");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::WaitingDispatch);
    assert_eq!(i.max_attempt, Attempt(2));
    assign(&mut s, 2, "w2").expect("attempt 2 after retry");
}

#[test]
fn logs_are_idempotent_capped_and_marked() {
    let mut s = setup(1);
    assign(&mut s, 1, "w1").expect("assign");
    let log = |s: &mut State, attempt, offset, data: &str, cap| {
        s.apply(&Command::AppendLog {
            instance: I,
            attempt: Attempt(attempt),
            offset,
            data: data.into(),
            cap,
        })
        .0
    };
    assert!(matches!(
        log(&mut s, 1, 0, "hello\n", 100),
        Ok(Reply::LogAppended { appended: true })
    ));
    assert!(matches!(
        log(&mut s, 1, 0, "hello\n", 100),
        Ok(Reply::LogAppended { appended: false })
    ));
    assert!(matches!(
        log(&mut s, 1, 6, "world\n", 100),
        Ok(Reply::LogAppended { appended: true })
    ));
    assert!(
        log(&mut s, 2, 0, "future\n", 100).is_err(),
        "attempt 2 does not exist yet"
    );
    assert_eq!(s.log_text(I, 0, 1 << 20).text, "hello\nworld\n");
    log(&mut s, 1, 12, &"x".repeat(200), 30).expect("over the cap");
    let l = s.log_text(I, 0, 1 << 20);
    assert!(l.truncated);
    assert!(l.text.starts_with("hello\nworld\nxxxx"));
    assert!(l.text.contains("[log truncated at 30 bytes]"));
}

fn fire(s: &mut State, t: i64, skip: Option<&str>) -> Result<Reply, CommandError> {
    s.apply(&Command::Fire {
        job: JobId(1),
        fire_time_ms: t,
        now_ms: t - 400,
        skip: skip.map(str::to_owned),
    })
    .0
}

#[test]
fn fires_are_idempotent_per_fire_time_and_record_skips() {
    let mut s = setup(0);
    let first = fire(&mut s, 1_000, None).expect("fire");
    let Reply::Instance(i) = first else { panic!("{first:?}") };
    assert_eq!(i.fire_time_ms, Some(1_000));
    assert_eq!(i.status, InstanceStatus::WaitingDispatch);
    let before = s.clone();
    assert_eq!(
        fire(&mut s, 1_000, None),
        Ok(Reply::FireIgnored),
        "same fire time again"
    );
    assert_eq!(fire(&mut s, 900, None), Ok(Reply::FireIgnored), "older fire time");
    assert_eq!(before, s, "an ignored fire changed the state");
    assert_eq!(s.job(JobId(1)).expect("job").last_fire_ms, Some(1_000));

    let Ok(Reply::Instance(skipped)) = fire(&mut s, 2_000, Some("misfire")) else {
        panic!()
    };
    assert_eq!(skipped.status, InstanceStatus::Canceled);
    assert!(skipped.reason.starts_with("skipped: misfire"), "{}", skipped.reason);
    assert_eq!(s.job(JobId(1)).expect("job").last_fire_ms, Some(2_000));
}

/// Sets job 1's `max_instances` (at time 5).
fn set_max_instances(s: &mut State, max: u32) {
    let mut spec = s.job(JobId(1)).expect("job").spec.clone();
    spec.max_instances = max;
    s.apply(&Command::UpdateJob {
        id: JobId(1),
        spec,
        now_ms: 5,
    })
    .0
    .expect("update");
}

#[test]
fn a_fire_over_max_instances_is_recorded_as_skipped() {
    let mut s = setup(0);
    set_max_instances(&mut s, 1);
    // The run-now instance of `setup` is still waiting: it counts.
    let Ok(Reply::Instance(i)) = fire(&mut s, 1_000, None) else {
        panic!()
    };
    assert_eq!(i.status, InstanceStatus::Canceled);
    assert!(i.reason.contains("max_instances is 1"), "{}", i.reason);
    s.apply(&Command::CancelInstance { instance: I, now_ms: 6 })
        .0
        .expect("cancel");
    let Ok(Reply::Instance(i)) = fire(&mut s, 2_000, None) else {
        panic!()
    };
    assert_eq!(i.status, InstanceStatus::WaitingDispatch);
}

#[test]
fn a_disabled_job_does_not_fire() {
    let mut s = setup(0);
    s.apply(&Command::SetJobEnabled {
        id: JobId(1),
        enabled: false,
        now_ms: 5,
    })
    .0
    .expect("disable");
    let epoch = s.job_epoch();
    assert!(matches!(fire(&mut s, 1_000, None), Err(CommandError::Conflict(_))));
    assert_eq!(s.job(JobId(1)).expect("job").last_fire_ms, None);
    assert_eq!(s.job_epoch(), epoch, "a refused fire is not a job change");
}

fn fire_assign(s: &mut State, t: i64, worker: &str) -> Result<Reply, CommandError> {
    s.apply(&Command::FireAssign {
        job: JobId(1),
        fire_time_ms: t,
        now_ms: t - 400,
        worker: WorkerId(worker.into()),
        incarnation: "inc-1".into(),
    })
    .0
}

#[test]
fn a_fire_assign_commits_the_fire_already_assigned_as_attempt_one() {
    let mut s = setup(0);
    let Ok(Reply::Instance(i)) = fire_assign(&mut s, 1_000, "w1") else {
        panic!()
    };
    assert_eq!(i.status, InstanceStatus::WaitingWorkerReceive);
    assert_eq!(i.attempt, Attempt(1));
    assert_eq!(i.worker, Some(WorkerId("w1".into())));
    assert_eq!(i.worker_incarnation.as_deref(), Some("inc-1"));
    assert_eq!(i.fire_time_ms, Some(1_000));
    assert_eq!(i.assigned_at_ms, Some(600), "the proposer's time");
    assert_eq!(s.instance(i.id).expect("stored"), *i, "the reply is what was stored");
    assert_eq!(s.job(JobId(1)).expect("job").last_fire_ms, Some(1_000));
    // The same state as a Fire followed by an Assign of what it created.
    let mut two = setup(0);
    fire(&mut two, 1_000, None).expect("fire");
    two.apply(&Command::Assign {
        instance: i.id,
        attempt: Attempt(1),
        worker: WorkerId("w1".into()),
        incarnation: "inc-1".into(),
        now_ms: 600,
    })
    .0
    .expect("assign");
    assert_eq!(two.instance(i.id).expect("stored"), *i);

    // Idempotent per fire time, like a Fire: nothing changes, nothing is assigned.
    let before = s.clone();
    assert_eq!(fire_assign(&mut s, 1_000, "w2"), Ok(Reply::FireIgnored));
    assert_eq!(before, s, "an ignored fire assign changed the state");
}

#[test]
fn a_fire_assign_over_max_instances_is_skipped_and_not_assigned() {
    let mut s = setup(0);
    set_max_instances(&mut s, 1);
    let Ok(Reply::Instance(i)) = fire_assign(&mut s, 1_000, "w1") else {
        panic!()
    };
    assert_eq!(i.status, InstanceStatus::Canceled);
    assert_eq!(i.worker, None);
    assert_eq!(i.attempt, Attempt(0));
    // A disabled job refuses it as it refuses a Fire.
    s.apply(&Command::SetJobEnabled {
        id: JobId(1),
        enabled: false,
        now_ms: 6,
    })
    .0
    .expect("disable");
    assert!(matches!(
        fire_assign(&mut s, 2_000, "w1"),
        Err(CommandError::Conflict(_))
    ));
}

fn stop(s: &mut State) -> Result<Reply, CommandError> {
    s.apply(&Command::StopInstance {
        instance: I,
        now_ms: 30,
    })
    .0
}

fn retry(s: &mut State) -> Result<Reply, CommandError> {
    s.apply(&Command::RetryInstance {
        instance: I,
        now_ms: 31,
    })
    .0
}

fn release(s: &mut State, attempt: u32) -> Result<Reply, CommandError> {
    s.apply(&Command::Release {
        instance: I,
        attempt: Attempt(attempt),
        reason: "the worker shut down".into(),
        now_ms: 32,
    })
    .0
}

#[test]
fn a_retry_waits_until_the_worker_confirms_the_stopped_attempt_ended() {
    let mut s = setup(0);
    assign(&mut s, 1, "w1").expect("assign");
    report(&mut s, 1, InstanceStatus::Running).expect("running");
    stop(&mut s).expect("stop");
    let pending = s
        .instance(I)
        .expect("instance")
        .stop_pending
        .clone()
        .expect("a worker holds attempt 1");
    assert_eq!((pending.attempt, pending.worker.as_str()), (Attempt(1), "w1"));
    assert!(s.unconfirmed_ids().contains(&I));
    retry(&mut s).expect("retry is accepted at once");
    assert_eq!(s.instance(I).expect("instance").status, InstanceStatus::WaitingDispatch);
    let refused = assign(&mut s, 2, "w2");
    assert!(
        matches!(&refused, Err(CommandError::Conflict(m)) if m.contains("confirm")),
        "attempt 2 must not start beside attempt 1: {refused:?}"
    );
    assert!(
        report(&mut s, 1, InstanceStatus::Running).is_err(),
        "a stopped attempt does not run again"
    );
    report(&mut s, 1, InstanceStatus::Failed).expect("the worker's final report confirms");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::WaitingDispatch, "the retry stands");
    assert!(i.stop_pending.is_none() && s.unconfirmed_ids().is_empty());
    assign(&mut s, 2, "w2").expect("attempt 2 once attempt 1 is confirmed ended");
}

#[test]
fn a_lost_or_restarted_worker_confirms_its_stopped_attempt() {
    let mut s = setup(0);
    assign(&mut s, 1, "w1").expect("assign");
    stop(&mut s).expect("stop");
    s.apply(&Command::WorkerLost {
        instance: I,
        attempt: Attempt(1),
        reason: "worker w1 is gone".into(),
        now_ms: 40,
    })
    .0
    .expect("the loss confirms the stop");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::Stopped);
    assert!(i.stop_pending.is_none() && s.unconfirmed_ids().is_empty());
}

#[test]
fn a_late_failed_report_never_revives_a_stopped_instance() {
    // Stop, retry, stop; then attempt 1's FAILED report arrives (it was lost, so no
    // stop was pending for it). Before the fix it moved STOPPED back to waiting.
    let mut s = setup(1);
    assign(&mut s, 1, "w1").expect("assign");
    report(&mut s, 1, InstanceStatus::Running).expect("running");
    s.apply(&Command::WorkerLost {
        instance: I,
        attempt: Attempt(1),
        reason: "gone".into(),
        now_ms: 25,
    })
    .0
    .expect("lost");
    stop(&mut s).expect("stop");
    retry(&mut s).expect("retry");
    stop(&mut s).expect("stop again");
    let before = s.clone();
    assert!(report(&mut s, 1, InstanceStatus::Failed).is_err());
    assert_eq!(s, before, "a late report changed a stopped instance");
    assert_eq!(s.instance(I).expect("instance").status, InstanceStatus::Stopped);
}

#[test]
fn stop_retry_stop_keeps_the_first_unconfirmed_stop() {
    let mut s = setup(0);
    assign(&mut s, 1, "w1").expect("assign");
    stop(&mut s).expect("stop");
    retry(&mut s).expect("retry");
    stop(&mut s).expect("stop again");
    assert_eq!(
        s.instance(I)
            .expect("instance")
            .stop_pending
            .as_ref()
            .map(|p| p.attempt),
        Some(Attempt(1)),
        "the second stop must not forget that attempt 1 is unconfirmed"
    );
    report(&mut s, 1, InstanceStatus::Failed).expect("confirms");
    assert_eq!(s.instance(I).expect("instance").status, InstanceStatus::Stopped);
}

#[test]
fn a_released_attempt_waits_again_without_spending_the_retry_budget() {
    let mut s = setup(0);
    assign(&mut s, 1, "w1").expect("assign");
    release(&mut s, 1).expect("given back before it started");
    let i = &s.instance(I).expect("instance");
    assert_eq!(i.status, InstanceStatus::WaitingDispatch);
    assert_eq!(i.max_attempt, Attempt(2), "the unstarted attempt is not counted");
    assert!(i.worker.is_none());
    assert!(release(&mut s, 1).is_err(), "nothing to give back now");
    assign(&mut s, 2, "w2").expect("attempt 2");
    report(&mut s, 2, InstanceStatus::Running).expect("running");
    let before = s.clone();
    assert!(release(&mut s, 2).is_err(), "a started attempt cannot be given back");
    assert_eq!(s, before);
}
