//! `qron-bench throughput`: sustained instances per second end to end, from the
//! API call (or the fire) to SUCCEEDED committed, on three servers and two
//! workers with the no-op processor.
//!
//! - `--mode run-now`: wrk (`--latency`, the same tool as `writes`) sends
//!   `POST /api/v1/jobs/{id}/run` to the leader over `--connections`, cycling
//!   over `--jobs` API jobs, for `--seconds`; wrk's figures give the accepted
//!   rate and the API latency.
//! - `--mode fixed-rate`: `--jobs` fixed-rate jobs at 1 s, all starting at the
//!   same second, for `--seconds` (one fire per job per second).
//!
//! Then every instance of the run is read back (paged), once none is active any
//! more or 60 s after the end: `succeeded_per_s` counts the instances that
//! SUCCEEDED by the end of the window (their `finished_at_ms`), so a backlog that
//! the cluster accepted but had not run yet does not count; `drain_s` says how
//! long after the window the last one finished. A sustained rate is one where
//! the backlog stays small: compare `accepted_per_s` with `succeeded_per_s`.

use std::collections::BTreeMap;
use std::time::Duration;

use qron_chaos_tests::{epoch_ms, eventually, TestCluster};
use qron_proto::api::{InstanceList, JobView, WorkerList};
use serde_json::json;

use crate::writes::{bench_cluster, which, wrk};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Run-now calls through the API (wrk).
    RunNow,
    /// Fixed-rate jobs at 1 s.
    FixedRate,
}

/// Finished instances of the run, as read back.
#[derive(Default)]
struct Tally {
    /// SUCCEEDED with `finished_at_ms` within the window.
    in_window: u64,
    /// Every instance of the run by status.
    by_status: BTreeMap<String, u64>,
    /// The last `finished_at_ms` of the run.
    last_finish_ms: i64,
}

pub async fn run(
    mode: Mode,
    jobs: usize,
    seconds: u32,
    connections: u32,
    threads: u32,
    server_args: Vec<String>,
) -> anyhow::Result<()> {
    if mode == Mode::RunNow {
        which("wrk")?;
    }
    anyhow::ensure!(jobs > 0 && seconds > 0, "--jobs and --seconds must be positive");
    let (mut c, leader) = bench_cluster(server_args).await?;
    for w in ["w1", "w2"] {
        c.spawn_worker(w, "bench", "s", &["--max-concurrency", "100000"])?;
    }
    eventually(Duration::from_secs(30), "both workers connected", || async {
        let l: WorkerList = c.get(leader, "/api/v1/workers").await.ok()?;
        (l.workers.iter().filter(|w| w.connected).count() == 2).then_some(())
    })
    .await?;
    // The newest instance before the run: the run's are the ones after it.
    let before: InstanceList = c.get(leader, "/api/v1/instances?limit=1").await?;
    let first_after = before.instances.first().map_or(0, |i| i.id);

    let (t0, t1, accepted, api) = match mode {
        Mode::RunNow => {
            let mut ids = Vec::with_capacity(jobs);
            for i in 0..jobs {
                let job: JobView = serde_json::from_value(
                    c.post_ok(
                        leader,
                        "/api/v1/jobs",
                        &json!({"app": "bench", "name": format!("api-{i}"), "schedule": {"type": "api"},
                                "processor": {"type": "custom", "name": "noop"}}),
                    )
                    .await?,
                )?;
                ids.push(job.id.to_string());
            }
            let dir = tempfile::TempDir::new()?;
            let script = dir.path().join("run.lua");
            std::fs::write(&script, run_lua(&ids))?;
            let url = format!("{}/", c.server(leader)?.url());
            let t0 = epoch_ms();
            let r = wrk(&script, &url, connections, seconds, threads)?;
            let t1 = epoch_ms();
            let api = format!(
                "api_p50_ms={:.1} api_p99_ms={:.1} non2xx={}",
                r.p50_ms, r.p99_ms, r.non2xx
            );
            (t0, t1, r.writes(), api)
        }
        Mode::FixedRate => {
            let t0 = (epoch_ms() / 1000 + 10 + jobs as i64 / 500) * 1000;
            let end = t0 + i64::from(seconds) * 1000;
            for i in 0..jobs {
                c.post_ok(
                    leader,
                    "/api/v1/jobs",
                    &json!({"app": "bench", "name": format!("rate-{i}"),
                            "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0},
                            "lifecycle": {"not_after_ms": end - 500},
                            "processor": {"type": "custom", "name": "noop"}}),
                )
                .await?;
            }
            anyhow::ensure!(epoch_ms() < t0, "creating the jobs took past the start; try fewer jobs");
            tokio::time::sleep(Duration::from_millis((end - epoch_ms()).max(0) as u64)).await;
            (
                t0,
                end,
                jobs as u64 * u64::from(seconds),
                "api: none (fires)".to_owned(),
            )
        }
    };
    // Until nothing of the run is active, or a minute.
    let drained = eventually(Duration::from_secs(60), "the run's instances to end", || async {
        let t = tally(&c, leader, first_after, t0, t1).await.ok()?;
        let active: u64 = t
            .by_status
            .iter()
            .filter(|(s, _)| !["SUCCEEDED", "FAILED", "CANCELED", "STOPPED"].contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum();
        (active == 0).then_some(t)
    })
    .await;
    let t = match drained {
        Ok(t) => t,
        Err(_) => tally(&c, leader, first_after, t0, t1).await?,
    };
    let secs = (t1 - t0) as f64 / 1000.0;
    println!(
        "throughput {}: jobs={jobs} seconds={secs:.1} accepted={accepted} accepted_per_s={:.0} succeeded_in_window={} succeeded_per_s={:.0} drain_s={:.1} {api}",
        match mode {
            Mode::RunNow => "run_now",
            Mode::FixedRate => "fixed_rate",
        },
        accepted as f64 / secs,
        t.in_window,
        t.in_window as f64 / secs,
        ((t.last_finish_ms - t1) as f64 / 1000.0).max(0.0),
    );
    println!("throughput: the run's instances by status: {:?}", t.by_status);
    Ok(())
}

/// Reads every instance after `first_after`.
async fn tally(c: &TestCluster, leader: u64, first_after: u64, t0: i64, t1: i64) -> anyhow::Result<Tally> {
    let mut t = Tally::default();
    let mut after = first_after;
    loop {
        let page: InstanceList = c
            .get(leader, &format!("/api/v1/instances?after_id={after}&limit=10000"))
            .await?;
        let Some(last) = page.instances.last().map(|i| i.id) else {
            break;
        };
        for i in &page.instances {
            *t.by_status.entry(i.status.clone()).or_default() += 1;
            if let Some(f) = i.finished_at_ms {
                t.last_finish_ms = t.last_finish_ms.max(f);
                if i.status == "SUCCEEDED" && f >= t0 && f <= t1 {
                    t.in_window += 1;
                }
            }
        }
        after = last;
    }
    Ok(t)
}

/// A wrk script that cycles over the jobs, one run-now per request.
fn run_lua(ids: &[String]) -> String {
    format!(
        r#"
local ids = {{{}}}
local i = 0
function request()
  i = i + 1
  return wrk.format("POST", "/api/v1/jobs/" .. ids[(i % #ids) + 1] .. "/run", {{["Content-Type"] = "application/json"}}, "")
end
"#,
        ids.join(",")
    )
}
