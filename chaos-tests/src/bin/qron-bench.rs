//! `qron-bench`: benchmarks run by hand (not timed tests). Each prints its
//! figures one per line.
//!
//! * `qron-bench failover [--runs 10]`: SIGKILL the leader of a three-node
//!   cluster and time until a surviving node's `GET /api/v1/cluster` names a new
//!   leader that agrees it leads; the killed node is restarted between runs.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use qron_chaos_tests::{eventually, ClusterOptions, TestCluster};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Failover { runs } => failover(runs).await,
    }
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
