//! The bounded chaos profile (CI): 10 leader kills, 2 leader pauses, a follower
//! kill, a worker kill, a kill of every server, a frozen worker tree, a worker
//! killed alone, a stop during a failover and a leader kill under a client that
//! retries its writes through the next node, under fixed-rate and run-now load;
//! then the invariant checker must find nothing.
//!
//! And the checker's own tests: a deliberately broken server (dispatch sent
//! before its assignment is committed) must make it fail; for each of the three
//! worker-side guards of rule 11 (docs/rules.md), a short run of the one fault
//! it answers must fail with the guard switched off (a hidden test flag) and
//! pass with it on; and the same for the idempotency key of rule 13: a client
//! that retries its writes without a key during a leader kill must make the
//! checker report duplicated writes, and with its key, none.
//! `QRON_CHAOS_PROFILE=long` runs those pairs with more faults each (too slow
//! for CI).

use qron_chaos_tests::chaos::{run, Fault, Profile, Report, MIN_RAN_PERCENT};

fn seed() -> u64 {
    std::env::var("QRON_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125)
}

/// `QRON_CHAOS_PROFILE=long`: the heavier variants a person runs by hand.
fn long_profile() -> bool {
    std::env::var("QRON_CHAOS_PROFILE").is_ok_and(|p| p == "long")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_chaos_profile_keeps_every_invariant() -> anyhow::Result<()> {
    let profile = Profile::bounded(seed());
    let keep = std::env::temp_dir().join(format!("qron-chaos-failure-{}", profile.seed));
    let report = run(&profile, Some(&keep)).await?;
    eprintln!("{}", report.summary());
    assert!(
        report.ok(),
        "chaos invariants broken (replay with QRON_CHAOS_SEED={}; logs in {}):\n{}",
        profile.seed,
        keep.display(),
        report.summary()
    );
    assert_eq!(report.lost, 0);
    assert_eq!(report.doubled, 0);
    // Skipping a fire is a way to never run it twice: every skip needs an
    // acceptable reason (a misfire during the full restart, max_instances), and
    // most fires must really have run a processor (the checker's unit tests show
    // both checks failing on synthetic runs).
    assert_eq!(report.bad_skips, 0, "{}", report.summary());
    assert!(report.instances > 0, "the run produced no load");
    // The fires whose instances retention removed are accounted by the checker
    // (at or before their job's expiry record); of the rest, most must have run.
    let kept = report.fires_checked - report.expired_fires;
    assert!(
        kept > 0 && report.fires_ran * 100 >= kept * MIN_RAN_PERCENT,
        "only {} of {} fires ran ({} skipped, {} expired):\n{}",
        report.fires_ran,
        report.fires_checked,
        report.skipped_fires,
        report.expired_fires,
        report.summary()
    );
    // The short-retention jobs expired history while the faults (a full-cluster
    // SIGKILL among them) went on.
    assert!(
        report.expired_fires > 0,
        "nothing expired during the run:\n{}",
        report.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_on_a_server_that_dispatches_before_commit() -> anyhow::Result<()> {
    // A short profile is enough: the broken server doubles attempts without any fault.
    let mut profile = Profile::only(seed(), Fault::KillLeader, 1);
    profile.jobs = 3;
    profile.long_jobs = 0;
    profile.burst = 5;
    profile.server_args = vec!["--unsafe-test-dispatch-before-commit".into()];
    profile.server_env = vec![("QRON_ALLOW_UNSAFE_TEST_MODES".into(), "1".into())];
    let report = run(&profile, None).await?;
    eprintln!("{}", report.summary());
    assert!(!report.ok(), "the checker did not notice a broken dispatcher");
    assert!(report.doubled > 0, "expected doubled attempts:\n{}", report.summary());
    Ok(())
}

/// Which guard (of rule 11, or the key of rule 13) a pair of runs switches off,
/// and the one fault it answers.
#[derive(Clone, Copy)]
enum Guard {
    /// The worker lease (`qron-worker --unsafe-test-no-lease`).
    Lease,
    /// Scripts die with their worker (`qron-worker --unsafe-test-orphan-scripts`).
    ScriptsDieWithWorker,
    /// Stops are confirmed before a retry (`qron-server --unsafe-test-unconfirmed-stops`).
    ConfirmedStops,
    /// A client sends a write again under its `Idempotency-Key` (off: as a fresh
    /// request, `Profile::retry_without_key`).
    IdempotencyKey,
}

impl Guard {
    fn fault(self) -> Fault {
        match self {
            Guard::Lease => Fault::FreezeWorkerTree,
            Guard::ScriptsDieWithWorker => Fault::KillWorkerOnly,
            Guard::ConfirmedStops => Fault::StopDuringFailover,
            Guard::IdempotencyKey => Fault::RetryWritesDuringFailover,
        }
    }

    /// The short run of its fault alone: 2 faults in CI, 8 in the long profile.
    /// `on: false` switches the guard off; the runs are otherwise the same (the
    /// environment that allows test modes is set in both).
    ///
    /// The key's pair runs its servers in both runs with the test mode that holds
    /// back the answers of committed forwarded writes (`--unsafe-test-hold-forward-answers`):
    /// the leader is killed while it holds the client's first writes, so some
    /// write is applied and its answer lost for sure, and its follower's own
    /// retries hit held answers on the next leader too; the client then sends it
    /// again. Without run-now bursts: they would be held as well.
    fn profile(self, on: bool) -> Profile {
        let n = if long_profile() { 8 } else { 2 };
        let mut p = Profile::only(seed(), self.fault(), n);
        let allow = vec![("QRON_ALLOW_UNSAFE_TEST_MODES".to_owned(), "1".to_owned())];
        p.server_env = allow.clone();
        p.worker_env = allow;
        if let Guard::IdempotencyKey = self {
            p.server_args = vec!["--unsafe-test-hold-forward-answers".into(), "100".into()];
            p.burst = 0;
        }
        if !on {
            match self {
                Guard::Lease => p.worker_args = vec!["--unsafe-test-no-lease".into()],
                Guard::ScriptsDieWithWorker => p.worker_args = vec!["--unsafe-test-orphan-scripts".into()],
                Guard::ConfirmedStops => p.server_args = vec!["--unsafe-test-unconfirmed-stops".into()],
                Guard::IdempotencyKey => p.retry_without_key = true,
            }
        }
        p
    }

    /// Whether the checker reported what this guard prevents.
    fn broken(self, report: &Report) -> bool {
        match self {
            Guard::IdempotencyKey => report.duplicated_writes > 0,
            _ => report.doubled > 0 && report.problems.iter().any(|p| p.contains("while attempt")),
        }
    }
}

/// The fault with its guard switched off: the checker must find two attempts of
/// one instance at once (for the key: a write that took effect twice).
async fn fails_without(guard: Guard) -> anyhow::Result<Report> {
    let profile = guard.profile(false);
    let report = run(&profile, None).await?;
    eprintln!("guard OFF:\n{}", report.summary());
    assert!(
        guard.broken(&report),
        "the checker did not see what the guard prevents, with the guard off:\n{}",
        report.summary()
    );
    Ok(report)
}

/// The same run with the guard on: every invariant holds, and the fault struck
/// what it aims at (else the pass proves nothing).
async fn passes_with(guard: Guard) -> anyhow::Result<Report> {
    let profile = guard.profile(true);
    let keep = std::env::temp_dir().join(format!("qron-chaos-failure-{:?}-{}", guard.fault(), profile.seed));
    let report = run(&profile, Some(&keep)).await?;
    eprintln!("guard ON:\n{}", report.summary());
    assert!(
        report.ok(),
        "invariants broken with the guard on (logs in {}):\n{}",
        keep.display(),
        report.summary()
    );
    let hits = report.hits.get(&format!("{:?}", guard.fault())).copied().unwrap_or(0);
    assert!(hits > 0, "the fault never struck its aim:\n{}", report.summary());
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_on_a_frozen_worker_tree_without_the_lease() -> anyhow::Result<()> {
    fails_without(Guard::Lease).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_tree_runs_nothing_twice_with_the_lease() -> anyhow::Result<()> {
    passes_with(Guard::Lease).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_on_scripts_that_outlive_their_killed_worker() -> anyhow::Result<()> {
    fails_without(Guard::ScriptsDieWithWorker).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_alone_runs_nothing_twice_when_its_scripts_die_with_it() -> anyhow::Result<()> {
    passes_with(Guard::ScriptsDieWithWorker).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_on_a_retry_that_does_not_wait_for_the_stop() -> anyhow::Result<()> {
    fails_without(Guard::ConfirmedStops).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_failover_then_retry_runs_nothing_twice_with_confirmed_stops() -> anyhow::Result<()> {
    passes_with(Guard::ConfirmedStops).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_on_a_client_that_retries_writes_without_a_key() -> anyhow::Result<()> {
    fails_without(Guard::IdempotencyKey).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_retried_through_other_nodes_under_one_key_act_once_while_the_leader_dies() -> anyhow::Result<()> {
    passes_with(Guard::IdempotencyKey).await.map(drop)
}
