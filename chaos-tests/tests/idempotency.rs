//! Retried writes do not act twice (rule 13, docs/api.md), on real processes:
//! the same request sent twice through a follower with one `Idempotency-Key`
//! runs a job once and creates an app once, answering the first answer both
//! times; a forwarded write whose answer is lost after its commit is sent
//! again by the follower under the key it made, and answered; when no answer
//! comes within the follower's 2 s, its 503 names the key, and sending the
//! write again with it applies it once. Lost answers are injected with the
//! test-only `--unsafe-test-hold-forward-answers N` (the leader holds back the
//! answers of the first N committed forwarded writes for 5 s), so nothing
//! depends on when a signal lands.

use std::time::{Duration, Instant};

use qron_chaos_tests::{ClusterOptions, TestCluster};
use qron_proto::api::InstanceList;
use reqwest::Method;
use serde_json::{json, Value};

const KEY: &str = "Idempotency-Key";

/// A three-node cluster with an app `demo` and an API-only job 1, made on the
/// leader; returns it with the leader and a follower.
async fn cluster_with_a_job(opts: ClusterOptions) -> anyhow::Result<(TestCluster, u64, u64)> {
    let c = TestCluster::start(3, opts)?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    c.post_ok(
        leader,
        "/api/v1/jobs",
        &json!({
            "app": "demo", "name": "adhoc",
            "schedule": {"type": "api"},
            "processor": {"type": "shell", "script": "true"}
        }),
    )
    .await?;
    Ok((c, leader, follower))
}

/// How many instances job 1 has, read on the leader (linearizable).
async fn instances_of_job_1(c: &TestCluster, leader: u64) -> anyhow::Result<usize> {
    let list: InstanceList = c.get(leader, "/api/v1/instances?job=1").await?;
    Ok(list.instances.len())
}

fn holding_answers(n: u32) -> ClusterOptions {
    ClusterOptions {
        server_args: vec!["--unsafe-test-hold-forward-answers".into(), n.to_string()],
        server_env: vec![("QRON_ALLOW_UNSAFE_TEST_MODES".into(), "1".into())],
        ..ClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sent_twice_with_one_key_through_a_follower_makes_one_instance() -> anyhow::Result<()> {
    let (c, leader, follower) = cluster_with_a_job(ClusterOptions::default()).await?;
    let run = json!({"params": "--once"});
    let send = |key: &'static str, body: Value| {
        let c = &c;
        async move {
            c.send_with_headers(follower, Method::POST, "/api/v1/jobs/1/run", Some(&body), &[(KEY, key)])
                .await
        }
    };
    let (s1, first) = send("run-1", run.clone()).await?;
    let (s2, again) = send("run-1", run.clone()).await?;
    assert_eq!((s1, s2), (201, 201), "{first} / {again}");
    assert_eq!(first, again, "the repeat answers the first answer");
    assert_eq!(instances_of_job_1(&c, leader).await?, 1, "one instance, not two");

    // The same key for another request is refused and runs nothing.
    let (status, body) = send("run-1", json!({"params": "--twice"})).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused", "{body}");
    // A bad key is refused by the node that received it.
    let (status, body) = send("bad\tkey", run.clone()).await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Idempotency-Key"),
        "{body}"
    );
    // Another key is another run.
    let (status, _) = send("run-2", run).await?;
    assert_eq!(status, 201);
    assert_eq!(instances_of_job_1(&c, leader).await?, 2);
    c.wait_converged(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_created_twice_with_one_key_answers_201_both_times_with_the_same_body() -> anyhow::Result<()> {
    let c = TestCluster::start(3, ClusterOptions::default())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    let app = json!({"name": "billing", "secret": "s3cret"});
    let mut answers = Vec::new();
    for node in [follower, follower, leader] {
        answers.push(
            c.send_with_headers(
                node,
                Method::POST,
                "/api/v1/apps",
                Some(&app),
                &[(KEY, "create-billing")],
            )
            .await?,
        );
    }
    for (status, body) in &answers {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(body, &answers[0].1, "every repeat answers the first answer");
    }
    // Without a key, a second create is the conflict it always was.
    let (status, body) = c.send(follower, Method::POST, "/api/v1/apps", Some(&app)).await?;
    assert_eq!(status, 409, "{body}");

    // The same for a job.
    let job = json!({
        "app": "billing", "name": "nightly",
        "schedule": {"type": "api"},
        "processor": {"type": "shell", "script": "true"}
    });
    let (s1, first) = c
        .send_with_headers(
            follower,
            Method::POST,
            "/api/v1/jobs",
            Some(&job),
            &[(KEY, "create-nightly")],
        )
        .await?;
    let (s2, again) = c
        .send_with_headers(
            follower,
            Method::POST,
            "/api/v1/jobs",
            Some(&job),
            &[(KEY, "create-nightly")],
        )
        .await?;
    assert_eq!((s1, s2), (201, 201), "{first} / {again}");
    assert_eq!(first, again);
    c.wait_converged(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_whose_answer_is_lost_after_commit_is_sent_again_under_the_same_key() -> anyhow::Result<()> {
    // The leader holds back the answer of the first committed forwarded write.
    let (c, leader, follower) = cluster_with_a_job(holding_answers(1)).await?;
    let started = Instant::now();
    // No key from the client: the follower makes one, and its first forward times out.
    let (status, body) = c
        .send(follower, Method::POST, "/api/v1/jobs/1/run", Some(&json!({})))
        .await?;
    let took = started.elapsed();
    let leader_log = std::fs::read_to_string(&c.server(leader)?.log_path)?;
    assert!(
        leader_log.contains("TEST: holding the answer"),
        "the first answer was held back:\n{}",
        c.log_tails(30)
    );
    assert_eq!(status, 201, "answered by the second forward: {body}");
    assert!(
        took < Duration::from_millis(2_500),
        "answered within the follower's budget, took {took:?}"
    );
    assert_eq!(
        instances_of_job_1(&c, leader).await?,
        1,
        "both forwards committed, one ran"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_two_seconds_is_a_503_naming_the_key_to_send_it_again_with() -> anyhow::Result<()> {
    // Both forwards a follower makes within its 2 s have their answers held back.
    let (c, leader, follower) = cluster_with_a_job(holding_answers(2)).await?;
    let started = Instant::now();
    let (status, body) = c
        .send(follower, Method::POST, "/api/v1/jobs/1/run", Some(&json!({})))
        .await?;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    assert!(took < Duration::from_millis(2_500), "within the budget, took {took:?}");
    let key = body["error"]["idempotency_key"]
        .as_str()
        .expect("the key is in the body")
        .to_owned();
    assert!(
        body["error"]["message"].as_str().unwrap_or("").contains(&key),
        "the message says which key to send: {body}"
    );
    // It was applied (the answers were lost, not the writes); sent again with
    // the key, it answers and runs nothing more.
    let (status, again) = c
        .send_with_headers(
            follower,
            Method::POST,
            "/api/v1/jobs/1/run",
            Some(&json!({})),
            &[(KEY, key.as_str())],
        )
        .await?;
    assert_eq!(status, 201, "{again}");
    assert_eq!(instances_of_job_1(&c, leader).await?, 1);
    Ok(())
}
