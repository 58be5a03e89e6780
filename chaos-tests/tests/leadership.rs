//! What a node does when one of its leader tasks fails, on real processes: a
//! scheduler that panics once is restarted and fires go on; one that fails
//! twice within a minute stops the node with a non-zero exit and says why, so
//! that no node stays leader while firing nothing. The failures are injected
//! with the test-only `--unsafe-test-fail-scheduler N`. A node whose Raft
//! stops on a fatal error (its disk refuses writes) exits non-zero too.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use qron_chaos_tests::{eventually, ClusterOptions, TestCluster};
use qron_proto::api::InstanceList;
use serde_json::json;

fn failing_scheduler(starts: u32) -> ClusterOptions {
    ClusterOptions {
        server_args: vec!["--unsafe-test-fail-scheduler".into(), starts.to_string()],
        server_env: vec![("QRON_ALLOW_UNSAFE_TEST_MODES".into(), "1".into())],
        ..ClusterOptions::default()
    }
}

fn log_of(c: &TestCluster, id: u64) -> String {
    c.server(id)
        .ok()
        .and_then(|s| std::fs::read_to_string(&s.log_path).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_panics_once_is_restarted_and_jobs_keep_firing() -> anyhow::Result<()> {
    let c = TestCluster::start(1, failing_scheduler(1))?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    c.post_ok(
        leader,
        "/api/v1/jobs",
        &json!({
            "app": "demo", "name": "tick",
            "schedule": {"type": "fixed_rate", "interval_ms": 200},
            "processor": {"type": "shell", "script": "true"},
            "no_worker_policy": "wait"
        }),
    )
    .await?;
    // Only a restarted scheduler fires: the first one panicked at its start.
    let fired = eventually(Duration::from_secs(20), "three fires", || async {
        let l: InstanceList = c.get(leader, "/api/v1/instances?job=1").await.ok()?;
        (l.instances.len() >= 3).then_some(l.instances.len())
    })
    .await;
    let log = log_of(&c, leader);
    assert!(
        fired.is_ok(),
        "no fires after the scheduler's panic: {fired:?}\n{}",
        c.log_tails(40)
    );
    assert!(
        log.contains("injected scheduler failure") && log.contains("restarting it once"),
        "the panic and the restart are logged:\n{}",
        c.log_tails(40)
    );
    assert!(c.server(leader)?.is_running(), "one failure does not stop the node");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_fails_twice_stops_the_node_with_a_nonzero_exit() -> anyhow::Result<()> {
    let mut c = TestCluster::start(1, failing_scheduler(2))?;
    // The node leads, its scheduler panics, is restarted, panics again: the node exits.
    let status = c.wait_server_exit(1, Duration::from_secs(30)).await;
    let log = log_of(&c, 1);
    let status = match status {
        Ok(s) => s,
        Err(e) => panic!("{e}\n{}", c.log_tails(40)),
    };
    assert!(
        !status.success() && status.signal().is_none(),
        "exits on its own with a failure status, got {status:?}"
    );
    assert!(
        log.contains("failed twice within the window") && log.contains("injected scheduler failure"),
        "the log says which task failed and why:\n{log}"
    );
    Ok(())
}

/// A full disk is a fault a deployment meets: RocksDB's writes fail, openraft
/// stops its core with a fatal storage error, and the node must exit non-zero
/// (a supervisor restarts it) instead of exiting 0 or serving on as a zombie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_refuses_writes_exits_nonzero() -> anyhow::Result<()> {
    let mut c = TestCluster::start(
        1,
        ClusterOptions {
            // Room for RocksDB to open and take a few writes, not for 4 MiB of them.
            file_size_limit_kib: Some(2048),
            ..ClusterOptions::default()
        },
    )?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    // Jobs with 60 KB descriptions until a write fails (a 5xx, or no answer: the node is going).
    let description = "x".repeat(60 * 1024);
    let mut created = 0;
    for i in 0..200 {
        let body = json!({
            "app": "demo", "name": format!("big-{i}"), "description": description,
            "schedule": {"type": "api"}, "processor": {"type": "shell", "script": "true"}
        });
        match c.send(leader, reqwest::Method::POST, "/api/v1/jobs", Some(&body)).await {
            Ok((201, _)) => created += 1,
            _ => break,
        }
    }
    assert!(created > 0, "the node took writes before its disk filled up");
    let status = c.wait_server_exit(leader, Duration::from_secs(30)).await;
    let log = log_of(&c, leader);
    let status = match status {
        Ok(s) => s,
        Err(e) => panic!("{e} (after {created} jobs)\n{}", c.log_tails(40)),
    };
    assert!(
        !status.success() && status.signal().is_none(),
        "exits on its own with a failure status after a fatal storage error, got {status:?}\n{}",
        c.log_tails(40)
    );
    assert!(
        log.contains("fatal error"),
        "the log says Raft stopped on a fatal error:\n{}",
        c.log_tails(40)
    );
    Ok(())
}
