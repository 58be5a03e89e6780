//! Three real `qron-server` processes: one leader; a job written through a
//! follower is readable everywhere; SIGKILL of the leader elects another within
//! 3 s and loses nothing; the killed node restarts from its data dir and catches
//! up; a fourth node added at runtime gets the state by snapshot; a removed node
//! stops counting towards the quorum.

use std::time::{Duration, Instant};

use qron_chaos_tests::{eventually, ClusterOptions, TestCluster};
use qron_proto::api::{JobView, NodeRole};
use reqwest::Method;
use serde_json::json;

fn job(name: &str) -> serde_json::Value {
    json!({
        "app": "demo",
        "name": name,
        "schedule": {"type": "cron", "expression": "0 */5 * * * *", "time_zone": "Europe/Paris"},
        "processor": {"type": "shell", "script": "echo hello"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_survives_leader_death_and_changes_membership() -> anyhow::Result<()> {
    // Snapshot often and keep few entries behind it, so a late node must get a snapshot.
    let opts = ClusterOptions {
        snapshot_logs: 20,
        logs_kept: 5,
        purge_batch: 1,
        ..Default::default()
    };
    let mut c = TestCluster::start(3, opts)?;

    // One leader, agreed on by all three.
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let views = [1, 2, 3].map(|id| c.cluster_view(id));
    let mut leaders = 0;
    for v in views {
        let v = v.await.expect("every node answers /cluster");
        assert_eq!(v.nodes.len(), 3);
        assert!(v.nodes.iter().all(|n| n.role == NodeRole::Voter));
        leaders += usize::from(v.state == "leader");
    }
    assert_eq!(leaders, 1, "exactly one node says it leads");

    // Writes through a follower are forwarded to the leader.
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    c.post_ok(follower, "/api/v1/apps", &json!({"name": "demo", "secret": "s3cret"}))
        .await?;
    let created: JobView = serde_json::from_value(c.post_ok(follower, "/api/v1/jobs", &job("nightly")).await?)?;
    let path = format!("/api/v1/jobs/{}", created.id);

    // Readable from every node (local reads, waiting for replication).
    for id in [1, 2, 3] {
        let stale = format!("{path}?stale=true");
        let got: JobView = eventually(Duration::from_secs(5), "the job on every node", || async {
            c.get::<JobView>(id, &stale).await.ok()
        })
        .await?;
        assert_eq!(got, created, "node {id}");
    }

    // A conflicting write is refused and changes nothing.
    let (status, body) = c
        .send(follower, Method::POST, "/api/v1/jobs", Some(&job("nightly")))
        .await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    // SIGKILL the leader: a new one within 3 s, the job still there.
    let killed_at = Instant::now();
    c.kill(leader)?;
    let new_leader = c.wait_leader(Duration::from_secs(3)).await?;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(failover < Duration::from_secs(3), "failover took {failover:?}");
    eprintln!("failover: new leader {new_leader} after {failover:?}");
    let survivor = c.running()[0];
    let got: JobView = c.get(survivor, &path).await?; // linearizable, forwarded to the leader
    assert_eq!(got, created);

    // Enough writes while the old leader is down to snapshot and purge past it.
    for i in 0..45 {
        c.post_ok(survivor, "/api/v1/jobs", &job(&format!("batch-{i}"))).await?;
    }
    // The killed node restarts from its data dir and catches up.
    c.restart(leader)?;
    let digest = c.wait_converged(Duration::from_secs(15)).await?;
    let restarted: JobView = c.get(leader, &format!("{path}?stale=true")).await?;
    assert_eq!(restarted, created);

    // openraft purges only what no replication stream still reads: once every node
    // caught up, the leader compacts its log behind the snapshot.
    eventually(Duration::from_secs(10), "the leader to purge its log", || async {
        let v = c.cluster_view(new_leader).await?;
        (v.purged_index.unwrap_or(0) > 0).then_some(())
    })
    .await?;

    // A fourth node, added at runtime, gets the state through a snapshot.
    c.spawn_joiner(4)?;
    let grpc4 = c.server(4)?.grpc.clone();
    let view = c
        .post_ok(
            new_leader,
            "/api/v1/cluster/nodes",
            &json!({"id": 4, "grpc_addr": grpc4}),
        )
        .await?;
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(4), "{view}");
    let d4 = c.wait_converged(Duration::from_secs(15)).await?;
    assert!(d4.applied_index >= digest.applied_index);
    let log4 = std::fs::read_to_string(&c.server(4)?.log_path)?;
    assert!(log4.contains("installed snapshot"), "node 4 was brought up by snapshot");
    let v4 = c.cluster_view(4).await.expect("node 4 answers");
    assert!(v4.nodes.iter().any(|n| n.id == 4 && n.role == NodeRole::Voter));

    // Remove node 4 and stop it; then lose one more node. With 4 still counted, 2 of 4
    // would be no quorum; with it removed, 2 of 3 is, so writes go on.
    let (status, body) = c
        .send::<()>(new_leader, Method::DELETE, "/api/v1/cluster/nodes/4", None)
        .await?;
    assert_eq!(status, 200, "{body}");
    c.stop(4)?;
    let voters = |v: &qron_proto::api::ClusterView| v.nodes.iter().map(|n| n.id).collect::<Vec<_>>();
    let after = c.cluster_view(new_leader).await.expect("leader view");
    assert_eq!(voters(&after), vec![1, 2, 3]);
    let other = c
        .running()
        .into_iter()
        .find(|id| *id != new_leader)
        .expect("a follower");
    c.kill(other)?;
    let leader_now = c.wait_leader(Duration::from_secs(5)).await?;
    c.post_ok(leader_now, "/api/v1/jobs", &job("after-removal")).await?;

    // Removing an unknown node is a 404 with the JSON error body.
    let (status, body) = c
        .send::<()>(leader_now, Method::DELETE, "/api/v1/cluster/nodes/42", None)
        .await?;
    assert_eq!(status, 404, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_change_nothing() -> anyhow::Result<()> {
    let c = TestCluster::start(3, ClusterOptions::default())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    let before = c.wait_converged(Duration::from_secs(5)).await?;

    let cases: Vec<(Method, &str, Option<serde_json::Value>, u16)> = vec![
        (
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "", "secret": "s"})),
            400,
        ),
        (
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "demo", "secret": "s"})),
            409,
        ),
        (
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "x", "secret": "s", "extra": 1})),
            400,
        ),
        (Method::POST, "/api/v1/jobs", Some(json!({"app": "demo"})), 400),
        (
            Method::POST,
            "/api/v1/jobs",
            Some({
                let mut j = job("bad-cron");
                j["schedule"]["expression"] = json!("61 * * * * *");
                j
            }),
            400,
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            Some({
                let mut j = job("bad-tz");
                j["schedule"]["time_zone"] = json!("Mars/Olympus");
                j
            }),
            400,
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            Some({
                let mut j = job("no-app");
                j["app"] = json!("nope");
                j
            }),
            404,
        ),
        // Accepted and ignored is a defect: what is not built is refused (rule 13).
        (
            Method::POST,
            "/api/v1/jobs",
            Some({
                let mut j = job("map-reduce");
                j["execution"] = json!("map_reduce");
                j
            }),
            400,
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            Some({
                let mut j = job("alarmed");
                j["alarm"] = json!({"webhook_url": "http://127.0.0.1:9/hook"});
                j
            }),
            400,
        ),
        // A lifecycle near chrono's last date once made every leader's wheel panic.
        (
            Method::POST,
            "/api/v1/jobs",
            Some({
                let mut j = job("far-future");
                j["lifecycle"] = json!({"not_before_ms": 8_210_298_412_799_999i64});
                j
            }),
            400,
        ),
        (Method::GET, "/api/v1/jobs/12345", None, 404),
        (Method::GET, "/api/v1/jobs/not-a-number", None, 400),
        (Method::PUT, "/api/v1/jobs/12345", Some(job("ghost")), 404),
        (Method::DELETE, "/api/v1/jobs/12345", None, 404),
        (Method::POST, "/api/v1/jobs/12345/enable", None, 404),
        (Method::GET, "/api/v1/nope", None, 404),
    ];
    for (method, path, body, want) in cases {
        for node in [leader, follower] {
            let (status, v) = c.send(node, method.clone(), path, body.as_ref()).await?;
            assert_eq!(status, want, "{method} {path} on node {node}: {v}");
            assert!(
                v["error"]["code"].is_string(),
                "{method} {path}: JSON error body, got {v}"
            );
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    // A body that is not JSON at all.
    let url = format!("{}/api/v1/jobs", c.server(follower)?.url());
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await?;
    assert_eq!(v["error"]["code"], "bad_request");

    let after = c.wait_converged(Duration::from_secs(5)).await?;
    assert_eq!(before.digest, after.digest, "refused requests changed the state");
    Ok(())
}
