//! The chaos run: a steady load (fixed-rate jobs plus run-now bursts) on a
//! process cluster, a fault schedule drawn from a seed (so a failing run can be
//! replayed with the same seed), and an invariant checker over the cluster's
//! state and the journal every test processor appends to.
//!
//! Invariants (issue "chaos tests"):
//! 1. every fire time of every job in the run has exactly one instance or one
//!    recorded skip;
//! 2. every instance reaches a terminal state within a bound after the faults stop;
//! 3. no (instance, attempt) runs twice, and no two attempts of one instance run
//!    at the same time;
//! 4. every write the API acknowledged (job created, run-now accepted) exists;
//! 5. all nodes converge to the same applied state (equal digests).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use qron_proto::api::{InstanceList, InstanceView, JobView, WorkerList};
use serde_json::json;

use crate::{epoch_ms, eventually, ClusterOptions, TestCluster};

/// A fault the schedule can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the leader (restarted a second later).
    KillLeader,
    /// SIGSTOP the leader past its lease, then SIGCONT: it wakes up deposed.
    PauseLeader,
    /// SIGKILL a follower (restarted a second later).
    KillFollower,
    /// SIGKILL a worker and what it runs (restarted a second later).
    KillWorker,
    /// SIGKILL every server at once, then restart them all.
    KillAllServers,
}

/// How much chaos, for how long.
#[derive(Debug, Clone)]
pub struct Profile {
    pub seed: u64,
    pub leader_kills: usize,
    pub pauses: usize,
    pub follower_kills: usize,
    pub worker_kills: usize,
    pub full_restarts: usize,
    /// Time between faults.
    pub spacing: Duration,
    /// Fixed-rate jobs (1 s each).
    pub jobs: usize,
    /// Run-now requests every 2 s.
    pub burst: usize,
    /// Extra server flags (the negative test's broken mode).
    pub server_args: Vec<String>,
    pub server_env: Vec<(String, String)>,
}

impl Profile {
    /// The CI profile: a few minutes.
    pub fn bounded(seed: u64) -> Profile {
        Profile {
            seed,
            leader_kills: 10,
            pauses: 2,
            follower_kills: 1,
            worker_kills: 1,
            full_restarts: 1,
            spacing: Duration::from_millis(3_500),
            jobs: 10,
            burst: 5,
            server_args: Vec::new(),
            server_env: Vec::new(),
        }
    }

    /// The long profile a person runs by hand: 100 leader kills.
    pub fn long(seed: u64) -> Profile {
        Profile {
            leader_kills: 100,
            pauses: 10,
            follower_kills: 10,
            worker_kills: 10,
            full_restarts: 3,
            ..Profile::bounded(seed)
        }
    }

    /// The faults in the order this seed draws them.
    pub fn schedule(&self) -> Vec<Fault> {
        let mut faults = Vec::new();
        faults.extend(std::iter::repeat_n(Fault::KillLeader, self.leader_kills));
        faults.extend(std::iter::repeat_n(Fault::PauseLeader, self.pauses));
        faults.extend(std::iter::repeat_n(Fault::KillFollower, self.follower_kills));
        faults.extend(std::iter::repeat_n(Fault::KillWorker, self.worker_kills));
        faults.extend(std::iter::repeat_n(Fault::KillAllServers, self.full_restarts));
        let mut rng = SplitMix(self.seed);
        // Fisher-Yates with the seeded generator: the same seed, the same run.
        for i in (1..faults.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            faults.swap(i, j);
        }
        faults
    }
}

/// splitmix64: a small, well-known seeded generator (no dependency needed).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub faults: BTreeMap<String, usize>,
    pub jobs: usize,
    pub instances: usize,
    pub fires_checked: usize,
    pub skipped_fires: usize,
    /// Fire times with no instance, acked writes missing, instances not terminal.
    pub lost: usize,
    /// Fire times with two instances, (instance, attempt) started twice, overlapping attempts.
    pub doubled: usize,
    pub diverged_nodes: usize,
    /// From each leader SIGKILL to the next processor start anywhere.
    pub failover_ms: Vec<i64>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line per figure, and the first problems.
    pub fn summary(&self) -> String {
        let mut f = self.failover_ms.clone();
        f.sort_unstable();
        let pct = |p: f64| {
            if f.is_empty() {
                0
            } else {
                f[((f.len() as f64 * p).ceil() as usize).clamp(1, f.len()) - 1]
            }
        };
        let mut s = String::new();
        let _ = writeln!(s, "chaos summary: seed={} faults={:?}", self.seed, self.faults);
        let _ = writeln!(
            s,
            "chaos summary: jobs={} instances={} fires_checked={} skipped_fires={} lost={} doubled={} diverged_nodes={}",
            self.jobs, self.instances, self.fires_checked, self.skipped_fires, self.lost, self.doubled, self.diverged_nodes
        );
        let _ = writeln!(
            s,
            "chaos summary: failover SIGKILL->next dispatch: n={} median_ms={} p99_ms={} max_ms={}",
            f.len(),
            pct(0.5),
            pct(0.99),
            f.last().copied().unwrap_or(0)
        );
        for p in self.problems.iter().take(30) {
            let _ = writeln!(s, "problem: {p}");
        }
        if self.problems.len() > 30 {
            let _ = writeln!(s, "... and {} more problems", self.problems.len() - 30);
        }
        s
    }
}

/// A journal line: `instance attempt worker start|end epoch_ms`.
#[derive(Debug, Clone)]
pub struct JournalLine {
    pub instance: u64,
    pub attempt: u32,
    pub worker: String,
    pub event: String,
    pub at_ms: i64,
}

pub fn read_journal(path: &Path) -> Vec<JournalLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(JournalLine {
                instance: f.first()?.parse().ok()?,
                attempt: f.get(1)?.parse().ok()?,
                worker: f.get(2)?.to_string(),
                event: f.get(3)?.to_string(),
                at_ms: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// Invariant 3 over a journal: returns (doubled count, problems).
pub fn check_journal(lines: &[JournalLine]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut starts: HashMap<(u64, u32), Vec<&JournalLine>> = HashMap::new();
    let mut ends: HashMap<(u64, u32), i64> = HashMap::new();
    for l in lines {
        match l.event.as_str() {
            "start" => starts.entry((l.instance, l.attempt)).or_default().push(l),
            "end" => {
                ends.insert((l.instance, l.attempt), l.at_ms);
            }
            _ => {}
        }
    }
    let mut doubled = 0;
    for ((i, a), s) in &starts {
        if s.len() > 1 {
            doubled += 1;
            let on: Vec<&str> = s.iter().map(|l| l.worker.as_str()).collect();
            problems.push(format!(
                "instance {i} attempt {a} started {} times (on {on:?})",
                s.len()
            ));
        }
    }
    // No two attempts of one instance at the same time (attempts with a known end).
    let mut by_instance: BTreeMap<u64, Vec<(u32, i64, i64)>> = BTreeMap::new();
    for ((i, a), s) in &starts {
        if let (Some(first), Some(end)) = (s.first(), ends.get(&(*i, *a))) {
            by_instance.entry(*i).or_default().push((*a, first.at_ms, *end));
        }
    }
    for (i, mut spans) in by_instance {
        spans.sort_unstable();
        for w in spans.windows(2) {
            let ((a1, _, e1), (a2, s2, _)) = (w[0], w[1]);
            if s2 < e1 {
                doubled += 1;
                problems.push(format!(
                    "instance {i}: attempt {a2} started at {s2} while attempt {a1} ran until {e1}"
                ));
            }
        }
    }
    (doubled, problems)
}

/// Runs a chaos profile end to end and checks the invariants.
pub async fn run(profile: &Profile, keep_dir: Option<&Path>) -> anyhow::Result<Report> {
    let opts = ClusterOptions {
        server_args: ["--worker-timeout-ms", "3000", "--failover-grace-ms", "3000"]
            .map(String::from)
            .into_iter()
            .chain(profile.server_args.iter().cloned())
            .collect(),
        server_env: profile.server_env.clone(),
        log: "info".into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::start(3, opts)?;
    let journal: PathBuf = c.dir().join("journal");
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "chaos", "secret": "s"}))
        .await?;
    for w in ["w1", "w2"] {
        c.spawn_worker(w, "chaos", "s", &["--max-concurrency", "64"])?;
    }
    eventually(Duration::from_secs(20), "workers", || async {
        let l: WorkerList = c.get(leader, "/api/v1/workers").await.ok()?;
        (l.workers.iter().filter(|w| w.connected).count() == 2).then_some(())
    })
    .await?;

    let faults = profile.schedule();
    let run_ms = (faults.len() as i64 + 1) * profile.spacing.as_millis() as i64 + 1_000;
    let t0 = (epoch_ms() / 1000 + 3) * 1000;
    let t_end = t0 + run_ms;
    let script = format!(
        "echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID start $(date +%s%3N)\" >> {j}; sleep 0.3; \
         echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID end $(date +%s%3N)\" >> {j}",
        j = journal.display()
    );
    let mut acked_jobs = Vec::new();
    for i in 0..profile.jobs {
        let job: JobView = serde_json::from_value(
            c.post_ok(
                leader,
                "/api/v1/jobs",
                &json!({
                    "app": "chaos", "name": format!("rate-{i}"), "instance_retries": 3,
                    "retry_backoff": {"initial_ms": 100, "multiplier": 2, "max_ms": 1000},
                    "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0},
                    "lifecycle": {"not_after_ms": t_end},
                    "processor": {"type": "shell", "script": script}
                }),
            )
            .await?,
        )?;
        acked_jobs.push(job.id);
    }
    let burst_job: JobView = serde_json::from_value(
        c.post_ok(
            leader,
            "/api/v1/jobs",
            &json!({"app": "chaos", "name": "burst", "instance_retries": 3, "schedule": {"type": "api"},
                    "processor": {"type": "shell", "script": script}}),
        )
        .await?,
    )?;
    acked_jobs.push(burst_job.id);

    let mut report = Report {
        seed: profile.seed,
        jobs: acked_jobs.len(),
        ..Report::default()
    };
    let mut acked_runs: Vec<u64> = Vec::new();
    let mut kills: Vec<i64> = Vec::new();
    let mut rng = SplitMix(profile.seed ^ 0xC0FFEE);
    tokio::time::sleep(Duration::from_millis((t0 - epoch_ms()).max(0) as u64)).await;
    for (n, fault) in faults.iter().enumerate() {
        // Load until the fault's time: run-now bursts to random nodes.
        // Seeded jitter: faults land at every phase of the 1 s fire cycle (mid-dispatch too).
        let at = t0 + (n as i64 + 1) * profile.spacing.as_millis() as i64 + (rng.next_u64() % 1000) as i64;
        while epoch_ms() < at {
            for _ in 0..profile.burst {
                let nodes = c.running();
                if nodes.is_empty() {
                    break;
                }
                let node = nodes[(rng.next_u64() % nodes.len() as u64) as usize];
                if let Ok((201, v)) = c
                    .send(
                        node,
                        reqwest::Method::POST,
                        &format!("/api/v1/jobs/{}/run", burst_job.id),
                        Some(&json!({})),
                    )
                    .await
                {
                    if let Some(id) = v["id"].as_u64() {
                        acked_runs.push(id);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2_000.min((at - epoch_ms()).max(0) as u64))).await;
        }
        *report.faults.entry(format!("{fault:?}")).or_default() += 1;
        inject(&mut c, *fault, &mut kills)
            .await
            .with_context(|| format!("injecting {fault:?}"))?;
    }
    tokio::time::sleep(Duration::from_millis((t_end + 1_000 - epoch_ms()).max(0) as u64)).await;

    // Heal: everything that is down comes back.
    for id in c.servers.keys().copied().collect::<Vec<_>>() {
        if !c.server(id)?.is_running() {
            c.restart(id)?;
        }
    }
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    check(
        &c,
        leader,
        profile,
        t0,
        t_end,
        &acked_jobs,
        &acked_runs,
        &journal,
        &kills,
        &mut report,
    )
    .await?;
    if !report.ok() {
        if let Some(dir) = keep_dir {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join("cluster-logs.txt"), c.log_tails(400));
            let _ = std::fs::copy(&journal, dir.join("journal"));
        }
    }
    Ok(report)
}

async fn inject(c: &mut TestCluster, fault: Fault, kills: &mut Vec<i64>) -> anyhow::Result<()> {
    match fault {
        Fault::KillLeader => {
            let l = c.wait_leader(Duration::from_secs(20)).await?;
            kills.push(epoch_ms());
            c.kill(l)?;
            c.wait_leader(Duration::from_secs(20)).await?;
            c.restart(l)?;
        }
        Fault::PauseLeader => {
            let l = c.wait_leader(Duration::from_secs(20)).await?;
            c.pause(l, true)?;
            // Past the lease: the others elect a new leader; the paused one wakes up deposed.
            let others = eventually(Duration::from_secs(20), "a new leader while one is paused", || async {
                for id in c.running().into_iter().filter(|id| *id != l) {
                    let v = c.cluster_view(id).await?;
                    if v.state == "leader" {
                        return Some(id);
                    }
                }
                None
            })
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.pause(l, false)?;
            others?;
        }
        Fault::KillFollower => {
            let l = c.wait_leader(Duration::from_secs(20)).await?;
            if let Some(f) = c.running().into_iter().find(|id| *id != l) {
                c.kill(f)?;
                tokio::time::sleep(Duration::from_millis(1_000)).await;
                c.restart(f)?;
            }
        }
        Fault::KillWorker => {
            let name = "w1";
            c.kill_worker(name)?;
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            c.respawn_worker(name)?;
        }
        Fault::KillAllServers => {
            kills.push(epoch_ms());
            for id in c.running() {
                c.kill(id)?;
            }
            for id in c.servers.keys().copied().collect::<Vec<_>>() {
                c.restart(id)?;
            }
            c.wait_leader(Duration::from_secs(30)).await?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn check(
    c: &TestCluster,
    leader: u64,
    profile: &Profile,
    t0: i64,
    t_end: i64,
    acked_jobs: &[u64],
    acked_runs: &[u64],
    journal: &Path,
    kills: &[i64],
    report: &mut Report,
) -> anyhow::Result<()> {
    // 2. Everything terminal within the bound.
    let terminal = ["SUCCEEDED", "FAILED", "CANCELED", "STOPPED"];
    let all: Vec<InstanceView> = match eventually(Duration::from_secs(90), "every instance terminal", || async {
        let l: InstanceList = c.get(leader, "/api/v1/instances?after_id=0&limit=10000").await.ok()?;
        l.instances
            .iter()
            .all(|i| terminal.contains(&i.status.as_str()))
            .then_some(l.instances)
    })
    .await
    {
        Ok(all) => all,
        Err(_) => {
            let l: InstanceList = c.get(leader, "/api/v1/instances?after_id=0&limit=10000").await?;
            for i in l.instances.iter().filter(|i| !terminal.contains(&i.status.as_str())) {
                report.lost += 1;
                report
                    .problems
                    .push(format!("instance {} still {} ({})", i.id, i.status, i.reason));
            }
            l.instances
        }
    };
    report.instances = all.len();

    // 4. Acknowledged writes exist.
    let ids: BTreeSet<u64> = all.iter().map(|i| i.id).collect();
    for id in acked_runs.iter().filter(|id| !ids.contains(id)) {
        report.lost += 1;
        report
            .problems
            .push(format!("acknowledged run-now instance {id} is missing"));
    }
    for job in acked_jobs {
        if c.get::<JobView>(leader, &format!("/api/v1/jobs/{job}")).await.is_err() {
            report.lost += 1;
            report.problems.push(format!("acknowledged job {job} is missing"));
        }
    }

    // 1. Every fire time of every fixed-rate job: exactly one instance or skip.
    let expected: Vec<i64> = (0..).map(|k| t0 + k * 1000).take_while(|t| *t <= t_end).collect();
    for job in &acked_jobs[..profile.jobs.min(acked_jobs.len())] {
        let mut per_fire: BTreeMap<i64, usize> = BTreeMap::new();
        for i in all.iter().filter(|i| i.job_id == *job) {
            if let Some(t) = i.fire_time_ms {
                *per_fire.entry(t).or_default() += 1;
                if i.status == "CANCELED" && i.reason.starts_with("skipped") {
                    report.skipped_fires += 1;
                }
            }
        }
        for t in &expected {
            report.fires_checked += 1;
            match per_fire.get(t).copied().unwrap_or(0) {
                1 => {}
                0 => {
                    report.lost += 1;
                    report
                        .problems
                        .push(format!("job {job}: fire t0+{} ms has no instance", t - t0));
                }
                n => {
                    report.doubled += 1;
                    report
                        .problems
                        .push(format!("job {job}: fire t0+{} ms has {n} instances", t - t0));
                }
            }
        }
    }

    // 3. The journal: no attempt twice, no overlapping attempts.
    let lines = read_journal(journal);
    let (doubled, problems) = check_journal(&lines);
    report.doubled += doubled;
    report.problems.extend(problems);

    // Failover: from each SIGKILL of the leader to the next processor start.
    let mut starts: Vec<i64> = lines.iter().filter(|l| l.event == "start").map(|l| l.at_ms).collect();
    starts.sort_unstable();
    for k in kills {
        if let Some(s) = starts.iter().find(|s| **s > *k) {
            report.failover_ms.push(s - k);
        }
    }

    // 5. All nodes converge.
    if c.wait_converged(Duration::from_secs(30)).await.is_err() {
        report.diverged_nodes += 1;
        let mut seen = Vec::new();
        for id in c.running() {
            seen.push(format!("{id}: {:?}", c.digest(id).await));
        }
        report
            .problems
            .push(format!("nodes did not converge: {}", seen.join("; ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let a = Profile::bounded(7).schedule();
        assert_eq!(a, Profile::bounded(7).schedule());
        assert_ne!(a, Profile::bounded(8).schedule());
        assert_eq!(a.iter().filter(|f| **f == Fault::KillLeader).count(), 10);
        assert_eq!(a.len(), 15);
    }

    fn line(i: u64, a: u32, w: &str, e: &str, at: i64) -> JournalLine {
        JournalLine {
            instance: i,
            attempt: a,
            worker: w.into(),
            event: e.into(),
            at_ms: at,
        }
    }

    #[test]
    fn the_journal_check_finds_doubles_and_overlaps() {
        let clean = [
            line(1, 1, "w1", "start", 0),
            line(1, 1, "w1", "end", 10),
            line(1, 2, "w2", "start", 20),
            line(1, 2, "w2", "end", 30),
            line(2, 1, "w1", "start", 5),
        ];
        assert_eq!(check_journal(&clean).0, 0);
        let twice = [line(1, 1, "w1", "start", 0), line(1, 1, "w2", "start", 1)];
        let (n, p) = check_journal(&twice);
        assert_eq!(n, 1);
        assert!(p[0].contains("started 2 times"), "{p:?}");
        let overlap = [
            line(1, 1, "w1", "start", 0),
            line(1, 1, "w1", "end", 50),
            line(1, 2, "w2", "start", 20),
            line(1, 2, "w2", "end", 60),
        ];
        let (n, p) = check_journal(&overlap);
        assert_eq!(n, 1);
        assert!(p[0].contains("while attempt 1 ran"), "{p:?}");
    }
}
