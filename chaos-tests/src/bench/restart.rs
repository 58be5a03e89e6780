//! `qron-bench restart`: a node holding a large state restarts and serves.
//!
//! The state is built directly: a bulk loader opens the node's stores (a
//! one-node cluster made by a real `qron-server` first) and applies
//! `CreateJob` and skipped `Fire` commands (each a finished, canceled
//! instance) through the state machine, as entries after the node's log, in
//! batches of 10,000; then it takes a snapshot and purges the log up to it, as
//! a node that installed that snapshot would have it. What is measured is a
//! real process start: from spawning `qron-server` to its first answered
//! linearizable read (`GET /api/v1/jobs/1`, which goes through
//! `ensure_linearizable`), then its resident memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc};
use std::time::{Duration, Instant};

use anyhow::Context;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, LogId};
use qron_chaos_tests::{binary, eventually, free_port};
use qron_raft_store::{Command, Entry, JobId};

const BATCH: usize = 10_000;

struct Node {
    /// 1: the loaded node, which founds its one-node cluster; 2: the joiner.
    id: u64,
    data: PathBuf,
    http: u16,
    grpc: u16,
    log: PathBuf,
}

impl Node {
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Proc::new(binary("qron-server")?);
        cmd.args(["--node-id", &self.id.to_string()])
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--grpc", &format!("127.0.0.1:{}", self.grpc)])
            .arg("--data-dir")
            .arg(&self.data);
        if self.id == 1 {
            cmd.args(["--initial-cluster", &format!("1=127.0.0.1:{}", self.grpc)]);
        }
        Ok(cmd
            .env("QRON_LOG", node_log())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

fn stop(mut child: Child) -> anyhow::Result<()> {
    let _ = Proc::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait()?;
    Ok(())
}

/// Waits until `GET path` answers 200; returns the time from `t0`.
async fn serving(http: &reqwest::Client, url: &str, t0: Instant) -> anyhow::Result<Duration> {
    eventually(Duration::from_secs(120), "the first linearizable read", || async {
        let r = http.get(url).send().await.ok()?;
        r.status().is_success().then(|| t0.elapsed())
    })
    .await
}

pub async fn run(jobs: u64, instances: u64, dir: Option<PathBuf>, join_too: bool) -> anyhow::Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::TempDir::new()?;
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let marker = dir.join("loaded.json");
    let http = reqwest::Client::new();
    let node = if let Ok(text) = std::fs::read_to_string(&marker) {
        let v: serde_json::Value = serde_json::from_str(&text)?;
        anyhow::ensure!(
            v["jobs"] == jobs && v["instances"] == instances,
            "{} holds another load: {text}",
            dir.display()
        );
        println!("restart: reusing the state loaded in {}", dir.display());
        Node {
            id: 1,
            data: dir.join("node1"),
            http: v["http"].as_u64().context("http")? as u16,
            grpc: v["grpc"].as_u64().context("grpc")? as u16,
            log: dir.join("node1.log"),
        }
    } else {
        let node = Node {
            id: 1,
            data: dir.join("node1"),
            http: free_port()?,
            grpc: free_port()?,
            log: dir.join("node1.log"),
        };
        // A real one-node cluster first: membership, vote and log as a node has them.
        let child = node.spawn()?;
        serving(&http, &node.url("/api/v1/apps"), Instant::now()).await?;
        let r = http
            .post(node.url("/api/v1/apps"))
            .json(&serde_json::json!({"name": "bench", "secret": "bench-secret"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "create app: {}", r.status());
        stop(child)?;
        let t0 = Instant::now();
        load(&node.data, jobs, instances).await?;
        println!(
            "restart: loaded {jobs} jobs and {instances} instances in {:.0} s",
            t0.elapsed().as_secs_f64()
        );
        std::fs::write(
            &marker,
            serde_json::json!({"jobs": jobs, "instances": instances, "http": node.http, "grpc": node.grpc}).to_string(),
        )?;
        node
    };
    println!("restart: data dir {} bytes", super::dir_bytes(&node.data));
    let mut times = Vec::new();
    for run in 0..3 {
        let child = node.spawn()?;
        let read = ("/api/v1/jobs/1", "linearizable read");
        times.push(restarted(&http, &node, child, read, jobs, &format!("run {run}")).await?);
    }
    summary("summary", jobs, instances, &mut times);
    if join_too {
        join(&node, &dir, &http, jobs, instances).await?;
    }
    Ok(())
}

/// Measures a node just spawned: the time until it answers `GET path`, its
/// resident memory then and 5 s later; prints them and stops it.
async fn restarted(
    http: &reqwest::Client,
    node: &Node,
    child: Child,
    (path, read): (&str, &str),
    jobs: u64,
    what: &str,
) -> anyhow::Result<u128> {
    let t0 = Instant::now();
    let took = serving(http, &node.url(path), t0).await?;
    let pid = child.id();
    let rss_serving = super::rss_bytes(pid)?;
    // Let it settle (a leader's wheel is built from every job) and look again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = super::rss_bytes(pid)?;
    println!(
        "restart {what}: first {read} after {} ms; rss_mb at it={:.1}, 5 s later={:.1}; bytes_per_job={:.0}",
        took.as_millis(),
        rss_serving as f64 / 1e6,
        rss as f64 / 1e6,
        rss as f64 / jobs.max(1) as f64
    );
    stop(child)?;
    Ok(took.as_millis())
}

fn summary(what: &str, jobs: u64, instances: u64, times: &mut [u128]) {
    times.sort_unstable();
    println!(
        "restart {what}: jobs={jobs} instances={instances} runs={} median_ms={} max_ms={}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// Brings a new, empty node in: it receives the state by snapshot. Times the
/// `POST /api/v1/cluster/nodes` call, which returns once the learner caught up.
async fn join(node: &Node, dir: &Path, http: &reqwest::Client, jobs: u64, instances: u64) -> anyhow::Result<()> {
    let leader = node.spawn()?;
    serving(http, &node.url("/api/v1/jobs/1"), Instant::now()).await?;
    let joiner = Node {
        id: 2,
        data: dir.join("joiner"),
        http: free_port()?,
        grpc: free_port()?,
        log: dir.join("joiner.log"),
    };
    let _ = std::fs::remove_dir_all(&joiner.data);
    let _ = std::fs::remove_file(&joiner.log);
    let child = joiner.spawn()?;
    serving(http, &joiner.url("/api/v1/cluster"), Instant::now()).await?;
    let t0 = Instant::now();
    let r = http
        .post(node.url("/api/v1/cluster/nodes"))
        .timeout(Duration::from_secs(3600))
        .json(&serde_json::json!({"id": 2, "grpc_addr": format!("127.0.0.1:{}", joiner.grpc), "learner_only": true}))
        .send()
        .await?;
    let took = t0.elapsed();
    anyhow::ensure!(r.status().is_success(), "add node: {} {}", r.status(), r.text().await?);
    let rss = super::rss_bytes(child.id())?;
    println!(
        "restart join: a new node caught up by snapshot in {} ms; its data dir {} bytes, rss_mb={:.1}",
        took.as_millis(),
        super::dir_bytes(&joiner.data),
        rss as f64 / 1e6
    );
    // The joined node follows (a learner: the loaded node alone stays the
    // quorum, so the follower's restarts do not stop the cluster). Restart it
    // from its data dir until it answers a read of the last job from its own
    // state (`stale=true`: a follower forwards other reads to the leader).
    stop(child)?;
    let mut times = Vec::new();
    let last_job = format!("/api/v1/jobs/{jobs}?stale=true");
    for run in 0..3 {
        let child = joiner.spawn()?;
        let read = (last_job.as_str(), "local read of the last job");
        times.push(restarted(http, &joiner, child, read, jobs, &format!("follower run {run}")).await?);
    }
    summary("follower summary", jobs, instances, &mut times);
    // Leave the loaded state as it was for the next run.
    let _ = http.delete(node.url("/api/v1/cluster/nodes/2")).send().await;
    stop(leader)?;
    Ok(())
}

/// Applies a batch; a refused command is an error (the loader's commands are all valid).
async fn flush(batch: &mut Vec<Entry>, sm: &mut qron_raft_store::StateMachineStore) -> anyhow::Result<()> {
    let b = std::mem::take(batch);
    for r in sm.apply(b).await.map_err(|e| anyhow::anyhow!("apply: {e}"))? {
        r.0.map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    }
    Ok(())
}

/// Applies the jobs and the finished instances through the node's state
/// machine, then snapshots and purges the log.
async fn load(data: &Path, jobs: u64, instances: u64) -> anyhow::Result<()> {
    let (mut log, mut sm) = qron_raft_store::open(data).map_err(|e| anyhow::anyhow!("open: {e}"))?;
    let (applied, _) = sm.applied_state().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let st = log.get_log_state().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let last = st.last_log_id.max(applied).context("the node has no log")?;
    let (leader_id, mut index) = (last.leader_id, last.index);
    let now = chrono::Utc::now().timestamp_millis();
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    let mut push = |cmd: Command, batch: &mut Vec<Entry>| {
        index += 1;
        batch.push(Entry {
            log_id: LogId::new(leader_id, index),
            payload: EntryPayload::Normal(cmd),
        });
    };
    for j in 0..jobs {
        let spec = serde_json::from_value(serde_json::json!({
            "app": "bench", "name": format!("job-{j}"),
            "schedule": {"type": "cron", "expression": "0 0 3 * * *"},
            "processor": {"type": "shell", "script": "echo hello"},
        }))?;
        push(Command::CreateJob { spec, now_ms: now }, &mut batch);
        if batch.len() >= BATCH {
            flush(&mut batch, &mut sm).await?;
        }
    }
    flush(&mut batch, &mut sm).await?;
    let per_job = instances / jobs.max(1);
    let mut made = 0u64;
    for k in 0..per_job {
        // Fire times a minute apart, the last one about now: nothing is a misfire
        // when the node starts.
        let t = now - ((per_job - k) as i64) * 60_000;
        for j in 1..=jobs {
            push(
                Command::Fire {
                    job: JobId(j),
                    fire_time_ms: t,
                    now_ms: t,
                    skip: Some("bulk-loaded history".into()),
                },
                &mut batch,
            );
            if batch.len() >= BATCH {
                flush(&mut batch, &mut sm).await?;
            }
            made += 1;
            if made % 1_000_000 == 0 {
                println!("restart: {made} instances loaded");
            }
        }
    }
    flush(&mut batch, &mut sm).await?;
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("snapshot: {e}"))?;
    let upto = snap.meta.last_log_id.context("snapshot log id")?;
    log.purge(upto).await.map_err(|e| anyhow::anyhow!("purge: {e}"))?;
    Ok(())
}

/// The nodes' log filter: `warn`, or `QRON_BENCH_LOG` (e.g. `info` to see
/// where a join spends its time).
fn node_log() -> String {
    std::env::var("QRON_BENCH_LOG").unwrap_or_else(|_| "warn".into())
}
