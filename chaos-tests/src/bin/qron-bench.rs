//! `qron-bench`: benchmarks run by hand (not timed tests). Each prints its
//! figures one per line.
//!
//! * `qron-bench failover [--runs 10]`: SIGKILL the leader of a three-node
//!   cluster and time until a surviving node's `GET /api/v1/cluster` names a new
//!   leader that agrees it leads; the killed node is restarted between runs.
//! * `qron-bench worker-failover [--runs 10]`: three servers and two workers;
//!   SIGKILL the leader, then time until both workers are connected to the new
//!   leader, and until a run-now instance submitted right after the kill (retried
//!   until a node accepts it) starts on a worker.
//! * `qron-bench run-latency [--count 200]`: run-now latency, from the API call
//!   to the processor's start on the worker (its RUNNING time).
//! * `qron-bench lateness --jobs 1000 [--seconds 20]`: N fixed-rate jobs at 1 s
//!   (no-op processor, two workers); trigger lateness = processor start on the
//!   worker - scheduled fire time, over every fire of the run.
//! * `qron-bench history-memory [--jobs 200 --interval-ms 200 --output-bytes 200
//!   --warmup-seconds 60 --seconds 60]`: three servers, two workers, N fixed-rate
//!   jobs each printing a line of output; the leader's resident memory (VmRSS)
//!   every 10 s, and its growth per instance created, over the first minute and
//!   over a minute after the warm-up (RocksDB's caches full).
//! * `qron-bench restart --jobs 1000000 --instances 10000000`: builds a node's
//!   state directly (a bulk loader applying commands through the state machine),
//!   then times a real process start to its first linearizable read, and its
//!   resident memory per job; then the time a new node takes to catch up by snapshot.
//! * `qron-bench soak [--jobs 1000 --minutes 30 --retention-ms 300000]`: memory
//!   and disk of every server each minute under a short retention, and the
//!   chaos checker's fire invariant over the run.
//! * `qron-bench writes [--connections 256 --seconds 20]`: durable writes per
//!   second over HTTP, qron beside a 3-member etcd under the same wrk load.
//! * `qron-bench throughput [--mode run-now|fixed-rate --jobs N --seconds 60]`:
//!   sustained instances per second end to end (API call or fire to SUCCEEDED),
//!   three servers and two workers, no-op processor; wrk drives the run-now calls.

use std::time::{Duration, Instant};

#[path = "../bench/restart.rs"]
mod restart;
#[path = "../bench/soak.rs"]
mod soak;
#[path = "../bench/throughput.rs"]
mod throughput;
#[path = "../bench/writes.rs"]
mod writes;

use anyhow::Context;
use clap::{Parser, Subcommand};
use qron_chaos_tests::{eventually, ClusterOptions, TestCluster};
use qron_proto::api::{InstanceView, JobView, WorkerList};
use serde_json::json;

#[derive(Parser)]
#[command(name = "qron-bench", about = "qron benchmarks; run by hand, figures one per line")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Time from leader SIGKILL to a new leader seen by GET /api/v1/cluster.
    Failover {
        /// How many leader kills to time.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Time from leader SIGKILL until the workers are connected to the new leader
    /// and the next instance is dispatched.
    WorkerFailover {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Trigger lateness of N fixed-rate jobs at 1 s: processor start - fire time.
    Lateness {
        /// Fixed-rate jobs (1 s interval each).
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Seconds of firing measured.
        #[arg(long, default_value_t = 20)]
        seconds: i64,
    },
    /// The leader's resident memory as finished instances accumulate.
    HistoryMemory {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Bytes of output each instance prints.
        #[arg(long, default_value_t = 200)]
        output_bytes: usize,
        /// Seconds of load before the second measurement starts.
        #[arg(long, default_value_t = 60)]
        warmup_seconds: u64,
        /// Seconds of each measurement.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Restart time and memory of a node holding a large state.
    Restart {
        #[arg(long, default_value_t = 1_000_000)]
        jobs: u64,
        /// Finished instances, spread evenly over the jobs.
        #[arg(long, default_value_t = 10_000_000)]
        instances: u64,
        /// Keep the data dir here (and reuse it when it holds a loaded state).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Also time a new node catching up by snapshot (the whole state crosses
        /// the network: minutes for millions of instances).
        #[arg(long)]
        join: bool,
    },
    /// Memory and disk over a long run with a short retention, and the fire invariant.
    Soak {
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// The cluster's retention (max age of finished instances).
        #[arg(long, default_value_t = 300_000)]
        retention_ms: u64,
        /// The servers' --snapshot-logs (the server's default is 10,000: under
        /// this load the first snapshot, a copy of the state on disk, comes
        /// after minute 10, so minute 10 is not yet the steady state).
        #[arg(long, default_value_t = 10_000)]
        snapshot_logs: u64,
        /// One more flag for every server, repeatable (e.g.
        /// `--server-arg=--heartbeat-ms=150`).
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Durable replicated writes per second over HTTP (wrk): `POST /api/v1/jobs`
    /// on a 3-server qron beside `POST /v3/kv/put` on a 3-member etcd, unique
    /// names and keys, in one run; prints both and the ratio.
    Writes {
        #[arg(long, default_value_t = 256)]
        connections: u32,
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// wrk's threads (the machine's cores are shared with the servers).
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// One more flag for every qron server, repeatable.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Sustained instances per second end to end (API call or fire to
    /// SUCCEEDED committed), 3 servers and 2 workers, no-op processor.
    Throughput {
        #[arg(long, value_enum, default_value_t = throughput::Mode::RunNow)]
        mode: throughput::Mode,
        /// Jobs: API jobs the run-now calls cycle over, or fixed-rate 1 s jobs.
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// wrk's connections (run-now).
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// wrk's threads (run-now).
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// One more flag for every server, repeatable.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Run-now latency: API call to processor start.
    RunLatency {
        /// Instances to run, one every 20 ms.
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Failover { runs } => failover(runs).await,
        Bench::WorkerFailover { runs } => worker_failover(runs).await,
        Bench::RunLatency { count } => run_latency(count).await,
        Bench::Lateness { jobs, seconds } => lateness(jobs, seconds).await,
        Bench::HistoryMemory {
            jobs,
            interval_ms,
            output_bytes,
            warmup_seconds,
            seconds,
        } => history_memory(jobs, interval_ms, output_bytes, warmup_seconds, seconds).await,
        Bench::Restart {
            jobs,
            instances,
            dir,
            join,
        } => restart::run(jobs, instances, dir, join).await,
        Bench::Soak {
            jobs,
            minutes,
            retention_ms,
            snapshot_logs,
            server_args,
        } => soak::run(jobs, minutes, retention_ms, snapshot_logs, server_args).await,
        Bench::Writes {
            connections,
            seconds,
            threads,
            server_args,
        } => writes::run(connections, seconds, threads, server_args).await,
        Bench::Throughput {
            mode,
            jobs,
            seconds,
            connections,
            threads,
            server_args,
        } => throughput::run(mode, jobs, seconds, connections, threads, server_args).await,
    }
}

/// Bytes of every file under `p`.
fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// VmRSS of a process, in bytes.
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kib * 1024)
}

/// The newest instance id the node `id` holds.
async fn newest_instance(c: &TestCluster, id: u64) -> anyhow::Result<u64> {
    let v: serde_json::Value = c.get(id, "/api/v1/instances?limit=1&stale=true").await?;
    Ok(v["instances"][0]["id"].as_u64().unwrap_or(0))
}

async fn history_memory(
    jobs: usize,
    interval_ms: u64,
    output_bytes: usize,
    warmup_seconds: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let (c, _) = worker_cluster().await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let script = format!("printf '%0{}d\\n' 0", output_bytes.saturating_sub(1));
    for j in 0..jobs {
        c.post_ok(
            leader,
            "/api/v1/jobs",
            &json!({"app": "bench", "name": format!("j{j}"),
                    "schedule": {"type": "fixed_rate", "interval_ms": interval_ms},
                    "processor": {"type": "shell", "script": script}}),
        )
        .await?;
    }
    let pid = c.server(leader)?.pid().context("leader pid")?;
    let start = Instant::now();
    async fn sample(c: &TestCluster, leader: u64, pid: u32) -> anyhow::Result<(u64, u64)> {
        Ok((rss_bytes(pid)?, newest_instance(c, leader).await?))
    }
    let mut marks = vec![(0u64, sample(&c, leader, pid).await?)];
    let total = seconds + warmup_seconds.max(seconds);
    let mut t = 0;
    while t < total {
        tokio::time::sleep(Duration::from_secs(10)).await;
        t += 10;
        let (rss, newest) = sample(&c, leader, pid).await?;
        println!(
            "history-memory t={}s rss_mb={:.1} instances={newest}",
            start.elapsed().as_secs(),
            rss as f64 / 1e6
        );
        marks.push((t, (rss, newest)));
    }
    let at = |secs: u64| {
        marks
            .iter()
            .find(|(t, _)| *t >= secs)
            .map(|(_, m)| *m)
            .unwrap_or_default()
    };
    for (what, from, to) in [
        ("first minute", 0, seconds),
        ("after warm-up", warmup_seconds, warmup_seconds + seconds),
    ] {
        let ((r0, n0), (r1, n1)) = (at(from), at(to));
        let made = n1.saturating_sub(n0).max(1);
        println!(
            "history-memory {what}: instances={} rss_growth_mb={:.1} bytes_per_instance={:.0}",
            n1.saturating_sub(n0),
            (r1 as f64 - r0 as f64) / 1e6,
            (r1 as f64 - r0 as f64) / made as f64
        );
    }
    Ok(())
}

async fn failover(runs: usize) -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, ClusterOptions::default())?;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let leader = c.wait_leader(Duration::from_secs(20)).await?;
        // Let the cluster settle (heartbeats flowing) before the kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let observer = c
            .running()
            .into_iter()
            .find(|id| *id != leader)
            .context("no follower")?;
        let t0 = Instant::now();
        c.kill(leader)?;
        let new_leader = eventually(Duration::from_secs(10), "a new leader", || async {
            let v = c.cluster_view(observer).await?;
            let l = v.leader_id.filter(|l| *l != leader)?;
            let own = c.cluster_view(l).await?;
            (own.state == "leader").then_some(l)
        })
        .await?;
        let took = t0.elapsed();
        println!(
            "failover run {run}: leader {leader} -> {new_leader} in {} ms",
            took.as_millis()
        );
        samples.push(took);
        c.restart(leader)?;
        c.wait_converged(Duration::from_secs(20)).await?;
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if samples.len() % 2 == 1 {
        ms(samples[samples.len() / 2])
    } else {
        (ms(samples[samples.len() / 2 - 1]) + ms(samples[samples.len() / 2])) / 2.0
    };
    println!(
        "failover summary: runs={} median_ms={:.0} min_ms={:.0} max_ms={:.0}",
        samples.len(),
        median,
        samples.first().map(|d| ms(*d)).unwrap_or(0.0),
        samples.last().map(|d| ms(*d)).unwrap_or(0.0)
    );
    Ok(())
}

fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// p-th percentile (0..=100) of sorted samples, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Three servers, two workers, app `bench` and a shell job `true`; returns the job id.
async fn worker_cluster() -> anyhow::Result<(TestCluster, u64)> {
    worker_cluster_with(ClusterOptions::default()).await
}

/// Three servers (logging warnings) with `opts`, app `bench`, an API job and two workers.
async fn worker_cluster_with(opts: ClusterOptions) -> anyhow::Result<(TestCluster, u64)> {
    let mut c = TestCluster::start(
        3,
        ClusterOptions {
            log: "warn".into(),
            ..opts
        },
    )?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "bench", "secret": "s"}))
        .await?;
    let job: JobView = serde_json::from_value(
        c.post_ok(
            leader,
            "/api/v1/jobs",
            &json!({"app": "bench", "name": "noop", "schedule": {"type": "api"},
                    "processor": {"type": "shell", "script": "true"}}),
        )
        .await?,
    )?;
    for w in ["w1", "w2"] {
        c.spawn_worker(w, "bench", "s", &["--max-concurrency", "4096"])?;
    }
    wait_workers(&c, leader).await?;
    Ok((c, job.id))
}

async fn wait_workers(c: &TestCluster, leader: u64) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), "both workers connected", || async {
        let l: WorkerList = c.get(leader, "/api/v1/workers").await.ok()?;
        (l.workers.iter().filter(|w| w.connected).count() == 2).then_some(())
    })
    .await
}

async fn instance_started(c: &TestCluster, id: u64, timeout: Duration) -> anyhow::Result<i64> {
    eventually(timeout, "the instance to start", || async {
        for node in c.running() {
            if let Ok(i) = c
                .get::<InstanceView>(node, &format!("/api/v1/instances/{id}?stale=true"))
                .await
            {
                if let Some(t) = i.started_at_ms {
                    return Some(t);
                }
            }
        }
        None
    })
    .await
}

async fn worker_failover(runs: usize) -> anyhow::Result<()> {
    let (mut c, job) = worker_cluster().await?;
    let (mut connected, mut dispatched) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let leader = c.wait_leader(Duration::from_secs(20)).await?;
        wait_workers(&c, leader).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_at = epoch_ms();
        let t0 = Instant::now();
        c.kill(leader)?;
        // Submit the next instance as soon as any node accepts it.
        let id = eventually(Duration::from_secs(20), "a node to accept run-now", || async {
            for node in c.running() {
                let (status, v) = c
                    .send(
                        node,
                        reqwest::Method::POST,
                        &format!("/api/v1/jobs/{job}/run"),
                        Some(&json!({})),
                    )
                    .await
                    .ok()?;
                if status == 201 {
                    return v["id"].as_u64();
                }
            }
            None
        })
        .await?;
        let new_leader = c.wait_leader(Duration::from_secs(20)).await?;
        wait_workers(&c, new_leader).await?;
        let conn_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let started = instance_started(&c, id, Duration::from_secs(30)).await?;
        let disp_ms = started as f64 - killed_at;
        println!("worker-failover run {run}: leader {leader} -> {new_leader}: workers connected {conn_ms:.0} ms, next dispatch started {disp_ms:.0} ms after the kill");
        connected.push(conn_ms);
        dispatched.push(disp_ms);
        c.restart(leader)?;
        c.wait_converged(Duration::from_secs(20)).await?;
    }
    for (what, mut v) in [("workers connected", connected), ("next dispatch", dispatched)] {
        v.sort_by(f64::total_cmp);
        println!(
            "worker-failover {what}: runs={} median_ms={:.0} p99_ms={:.0} max_ms={:.0}",
            v.len(),
            percentile(&v, 50.0),
            percentile(&v, 99.0),
            v.last().copied().unwrap_or(0.0)
        );
    }
    Ok(())
}

async fn run_latency(count: usize) -> anyhow::Result<()> {
    let (c, job) = worker_cluster().await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let mut sent = Vec::with_capacity(count);
    for _ in 0..count {
        let t = epoch_ms();
        let v = c
            .post_ok(leader, &format!("/api/v1/jobs/{job}/run"), &json!({}))
            .await?;
        let id = v["id"].as_u64().context("run-now answered no id")?;
        sent.push((id, t));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::with_capacity(count);
    for (id, t) in sent {
        let started = instance_started(&c, id, Duration::from_secs(30)).await?;
        lat.push(started as f64 - t);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "run-latency (API call -> processor start): count={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

async fn lateness(jobs: usize, seconds: i64) -> anyhow::Result<()> {
    use futures::stream::{self, StreamExt};
    let (c, _) = worker_cluster().await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    // Creation takes a while for many jobs: start firing once they all exist.
    let created = Instant::now();
    let t0_guess = (epoch_ms() as i64 / 1000 + 3600) * 1000;
    let results: Vec<(usize, anyhow::Result<serde_json::Value>)> = stream::iter(0..jobs)
        .map(|i| {
            let c = &c;
            async move {
                let r = c
                    .post_ok(
                        leader,
                        "/api/v1/jobs",
                        &json!({"app": "bench", "name": format!("rate-{i}"),
                            "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0_guess},
                            "processor": {"type": "custom", "name": "noop"}}),
                    )
                    .await;
                (i, r)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let ids: Vec<(usize, u64)> = results
        .into_iter()
        .map(|(i, r)| r.map(|v| (i, v["id"].as_u64().unwrap_or(0))))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "lateness: created {} jobs in {:.1} s",
        ids.len(),
        created.elapsed().as_secs_f64()
    );
    // Move every job's start to a common t0 a few seconds ahead, end after `seconds`.
    let t0 = (epoch_ms() as i64 / 1000 + 5) * 1000 + (jobs as i64 / 1000) * 1000;
    let results: Vec<anyhow::Result<(u16, serde_json::Value)>> = stream::iter(ids.iter().copied())
        .map(|(i, id)| {
            let c = &c;
            async move {
                c.send(
                    leader,
                    reqwest::Method::PUT,
                    &format!("/api/v1/jobs/{id}"),
                    Some(&json!({"app": "bench", "name": format!("rate-{i}"),
                            "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0},
                            "lifecycle": {"not_after_ms": t0 + (seconds - 1) * 1000 + 500},
                            "processor": {"type": "custom", "name": "noop"}})),
                )
                .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        let (status, body) = r?;
        anyhow::ensure!(status == 200, "update answered {status}: {body}");
    }
    let start_wait = t0 - epoch_ms() as i64;
    anyhow::ensure!(start_wait > 0, "updating the jobs took past t0; try fewer jobs");
    tokio::time::sleep(Duration::from_millis(
        (t0 + seconds * 1000 + 2_000 - epoch_ms() as i64).max(0) as u64,
    ))
    .await;
    // Page through every instance of the run.
    let mut lat: Vec<i64> = Vec::new();
    let mut missing = 0usize;
    let mut waiting: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut after = 0u64;
    loop {
        let page: qron_proto::api::InstanceList = c
            .get(leader, &format!("/api/v1/instances?after_id={after}&limit=10000"))
            .await?;
        let Some(last) = page.instances.last().map(|i| i.id) else {
            break;
        };
        for i in &page.instances {
            match (i.fire_time_ms, i.started_at_ms) {
                (Some(f), Some(s)) => lat.push(s - f),
                (Some(_), None) => {
                    missing += 1;
                    *waiting.entry(i.status.clone()).or_default() += 1;
                }
                _ => {}
            }
        }
        after = last;
    }
    if missing > 0 {
        println!("lateness: fires not started by the end, by status: {waiting:?}");
    }
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len().max(1)) - 1)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "lateness jobs={jobs} fires={} not_started={missing} p50_ms={} p99_ms={} max_ms={}",
        lat.len(),
        p(0.50),
        p(0.99),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}
