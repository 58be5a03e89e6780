//! The bounded chaos profile (CI): 10 leader kills, 2 leader pauses, a follower
//! kill, a worker kill and a kill of every server, under fixed-rate and run-now
//! load; then the invariant checker must find nothing. And the checker's own
//! test: a deliberately broken server (dispatch sent before its assignment is
//! committed) must make it fail.

use qron_chaos_tests::chaos::{run, Profile, MIN_RAN_PERCENT};

fn seed() -> u64 {
    std::env::var("QRON_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125)
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
    assert!(
        report.fires_checked > 0 && report.fires_ran * 100 >= report.fires_checked * MIN_RAN_PERCENT,
        "only {} of {} fires ran ({} skipped):\n{}",
        report.fires_ran,
        report.fires_checked,
        report.skipped_fires,
        report.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_fails_on_a_server_that_dispatches_before_commit() -> anyhow::Result<()> {
    // A short profile is enough: the broken server doubles attempts without any fault.
    let mut profile = Profile::bounded(seed());
    profile.leader_kills = 1;
    profile.pauses = 0;
    profile.follower_kills = 0;
    profile.worker_kills = 0;
    profile.full_restarts = 0;
    profile.jobs = 3;
    profile.server_args = vec!["--unsafe-test-dispatch-before-commit".into()];
    profile.server_env = vec![("QRON_ALLOW_UNSAFE_TEST_MODES".into(), "1".into())];
    let report = run(&profile, None).await?;
    eprintln!("{}", report.summary());
    assert!(!report.ok(), "the checker did not notice a broken dispatcher");
    assert!(report.doubled > 0, "expected doubled attempts:\n{}", report.summary());
    Ok(())
}
