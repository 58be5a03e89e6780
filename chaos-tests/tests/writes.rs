//! Group commit of client writes (docs/architecture.md, "Group commit"), on
//! real processes: many concurrent `POST /api/v1/jobs` on the leader go into
//! far fewer log entries than writes, and each caller still gets its own
//! answer: its own job, a 409 for a name another write of the same batch
//! took, a 404 for an app that does not exist.

use std::time::Duration;

use futures::future::join_all;
use qron_chaos_tests::{ClusterOptions, TestCluster};
use qron_proto::api::JobList;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_each_gets_its_own_answer() -> anyhow::Result<()> {
    let c = TestCluster::start(3, ClusterOptions::default())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": "s"}))
        .await?;
    let before = c.cluster_view(leader).await.and_then(|v| v.last_log_index).unwrap_or(0);

    const UNIQUE: usize = 240;
    const SAME_NAME: usize = 40;
    const NO_APP: usize = 20;
    let job = |app: &str, name: String| {
        json!({"app": app, "name": name, "schedule": {"type": "api"},
               "processor": {"type": "shell", "script": "true"}})
    };
    let mut bodies = Vec::new();
    for i in 0..UNIQUE {
        bodies.push(job("demo", format!("unique-{i}")));
    }
    for _ in 0..SAME_NAME {
        bodies.push(job("demo", "same-name".into()));
    }
    for i in 0..NO_APP {
        bodies.push(job("nope", format!("orphan-{i}")));
    }
    let answers = join_all(
        bodies
            .iter()
            .map(|b| c.send(leader, Method::POST, "/api/v1/jobs", Some(b))),
    )
    .await;

    let mut same_name_created = 0;
    for (body, answer) in bodies.iter().zip(answers) {
        let (status, reply) = answer?;
        let name = body["name"].as_str().unwrap_or_default();
        match (body["app"].as_str(), name) {
            (Some("nope"), _) => assert_eq!(status, 404, "{name}: {reply}"),
            (_, "same-name") if status == 201 => same_name_created += 1,
            (_, "same-name") => assert_eq!(status, 409, "{reply}"),
            _ => {
                assert_eq!(status, 201, "{name}: {reply}");
                assert_eq!(reply["name"], name, "each write is answered with its own job");
            }
        }
    }
    assert_eq!(same_name_created, 1, "one of the writes of one name creates it");

    let after = c.cluster_view(leader).await.and_then(|v| v.last_log_index).unwrap_or(0);
    let writes = bodies.len() as u64;
    assert!(
        after - before < writes / 2,
        "{writes} concurrent writes took {} log entries: they were not grouped",
        after - before
    );

    let list: JobList = c.get(leader, "/api/v1/jobs?limit=10000").await?;
    assert_eq!(list.jobs.len(), UNIQUE + 1, "every created job is there, once");
    Ok(())
}
