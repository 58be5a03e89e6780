//! Retention on real processes (rule 12): finished instances beyond a job's
//! count expire through the leader's batches, on every node alike; an expired
//! instance answers 404 `expired`; lists say how far back history goes; bad
//! settings are refused and change nothing.

use std::time::Duration;

use qron_chaos_tests::{eventually, ClusterOptions, TestCluster};
use qron_proto::api::{ClusterRetention, InstanceList, InstanceView, JobView};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_beyond_a_jobs_count_expire_on_every_node() -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, ClusterOptions::default())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    c.spawn_worker("w1", "demo", "s", &[])?;
    let job: JobView = serde_json::from_value(
        c.post_ok(
            leader,
            "/api/v1/jobs",
            &json!({
                "app": "demo", "name": "short-history", "schedule": {"type": "api"},
                "processor": {"type": "shell", "script": "echo run"},
                "no_worker_policy": "wait",
                "retention": {"max_count": 2}
            }),
        )
        .await?,
    )?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let i: InstanceView = serde_json::from_value(
            c.post_ok(leader, &format!("/api/v1/jobs/{}/run", job.id), &json!({}))
                .await?,
        )?;
        ids.push(i.id);
    }
    // The three oldest expire once finished; the two newest stay.
    let path = format!("/api/v1/instances?job={}", job.id);
    let kept = eventually(Duration::from_secs(30), "only the newest two kept", || async {
        let l: InstanceList = c.get(leader, &path).await.ok()?;
        let kept: Vec<u64> = l.instances.iter().map(|i| i.id).collect();
        (kept.len() == 2 && l.instances.iter().all(|i| i.status == "SUCCEEDED")).then_some(l)
    })
    .await;
    let kept = match kept {
        Ok(l) => l,
        Err(e) => panic!("{e}\n{}", c.log_tails(30)),
    };
    assert_eq!(
        kept.instances.iter().map(|i| i.id).collect::<Vec<_>>(),
        [ids[4], ids[3]],
        "newest first, the two newest"
    );
    let h = kept.history.expect("the list says how far back history goes");
    assert_eq!((h.oldest_id, h.expired), (Some(ids[3]), 3));
    let view: JobView = c.get(leader, &format!("/api/v1/jobs/{}", job.id)).await?;
    assert_eq!(view.expired_instances, 3);

    // An expired instance is 404 with its own code and a message that says why.
    let (status, body) = c
        .send::<()>(leader, Method::GET, &format!("/api/v1/instances/{}", ids[0]), None)
        .await?;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "expired", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retention")),
        "{body}"
    );
    // An id never issued is plainly not found.
    let (status, body) = c
        .send::<()>(leader, Method::GET, "/api/v1/instances/999999", None)
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // Every node removed the same instances.
    c.wait_converged(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_settings_are_validated_and_inherited() -> anyhow::Result<()> {
    let c = TestCluster::start(1, ClusterOptions::default())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    let defaults: ClusterRetention = c.get(leader, "/api/v1/cluster/retention").await?;
    assert_eq!(
        defaults,
        ClusterRetention {
            max_age_ms: 7 * 24 * 3600 * 1000,
            max_count: 10_000,
            max_log_bytes: 1 << 30
        }
    );
    let before = c.wait_converged(Duration::from_secs(5)).await?;
    for (method, path, body, needle) in [
        (
            Method::PUT,
            "/api/v1/cluster/retention",
            json!({"max_count": 0}),
            "max_count",
        ),
        (
            Method::PUT,
            "/api/v1/cluster/retention",
            json!({"max_age_ms": 0}),
            "max_age_ms",
        ),
        (
            Method::PUT,
            "/api/v1/cluster/retention",
            json!({"max_age_ms": -5}),
            "max_age_ms",
        ),
        (
            Method::PUT,
            "/api/v1/apps/demo/retention",
            json!({"max_count": 0}),
            "max_count",
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            json!({"app": "demo", "name": "j", "schedule": {"type": "api"},
                   "processor": {"type": "shell", "script": "true"}, "retention": {"max_age_ms": 10}}),
            "max_age_ms",
        ),
    ] {
        let (status, v) = c.send(leader, method.clone(), path, Some(&body)).await?;
        assert_eq!(status, 400, "{method} {path} {body}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{v}"
        );
    }
    let (status, v) = c
        .send(
            leader,
            Method::PUT,
            "/api/v1/apps/nope/retention",
            Some(&json!({"max_count": 5})),
        )
        .await?;
    assert_eq!(status, 404, "{v}");
    let after = c.wait_converged(Duration::from_secs(5)).await?;
    assert_eq!(before.digest, after.digest, "refused settings changed the state");

    // Fields given change; the others stay.
    let (status, v) = c
        .send(
            leader,
            Method::PUT,
            "/api/v1/cluster/retention",
            Some(&json!({"max_count": 50})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let now: ClusterRetention = c.get(leader, "/api/v1/cluster/retention").await?;
    assert_eq!((now.max_count, now.max_age_ms), (50, defaults.max_age_ms));
    let (status, v) = c
        .send(
            leader,
            Method::PUT,
            "/api/v1/apps/demo/retention",
            Some(&json!({"max_age_ms": 60_000})),
        )
        .await?;
    assert_eq!(
        (status, v["retention"]["max_age_ms"].as_u64()),
        (200, Some(60_000)),
        "{v}"
    );
    Ok(())
}
