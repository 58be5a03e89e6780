//! Chaos in containers (deploy/docker-compose.yml): the leader is cut off from
//! the others with `docker network disconnect` (a minority of one): it stops
//! dispatching at once, the majority elects a leader and goes on, and after
//! healing the old leader rejoins as a follower. Then `docker kill` of the
//! leader during dispatch. The invariants hold throughout.
//!
//! And a worker cut off while it runs a long journaled attempt, past the
//! servers' worker timeout: the leader retries the instance on the other worker,
//! and the chaos checker's overlap check (`check_journal`) must find the two
//! attempts one after the other, since the cut-off worker's lease lapsed and it
//! killed its attempt first (rule 11). The same scenario with the lease switched
//! off (`--unsafe-test-no-lease`) must make the check report the overlap.
//!
//! `#[ignore]`d by default, because it needs a Docker engine and docker-compose:
//! `scripts/test.sh` runs it (`--run-ignored all`) where `docker info` answers,
//! and otherwise says why it is skipped; the runner's summary counts it as
//! skipped either way. Run by hand where Docker is missing, it fails: it never
//! reports a pass without having run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use qron_chaos_tests::chaos::{
    check_fires, check_journal, expected_fires, journal_script, read_journal, spans, wait_last_fire, Report, Span,
};
use qron_chaos_tests::{epoch_ms, eventually, free_port};
use qron_proto::api::{ClusterView, DigestView, InstanceList, InstanceView, JobView, WorkerList};
use serde_json::json;

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why this machine cannot run the scenario, if it cannot (the same checks as
/// `scripts/test.sh`).
fn docker_missing() -> Option<&'static str> {
    let answers = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success());
    if !answers("docker", "info") {
        Some("no Docker engine (`docker info` failed)")
    } else if !answers("docker-compose", "version") {
        Some("no docker-compose (`docker-compose version` failed)")
    } else {
        None
    }
}

/// A compose project that is taken down (with its volumes) on drop.
struct Compose {
    root: PathBuf,
    project: String,
    env: Vec<(String, String)>,
    ports: BTreeMap<u64, u16>,
}

impl Compose {
    /// A project of its own (`tag` tells two scenarios of one test process apart),
    /// HTTP on free ports of 127.0.0.1, the workers' journal in `journal_dir`.
    fn new(tag: &str, journal_dir: &Path) -> anyhow::Result<Compose> {
        let ports: BTreeMap<u64, u16> = [(1, free_port()?), (2, free_port()?), (3, free_port()?)].into();
        Ok(Compose {
            root: root(),
            project: format!("qronchaos{}{tag}", std::process::id()),
            env: vec![
                ("QRON_PORT1".into(), ports[&1].to_string()),
                ("QRON_PORT2".into(), ports[&2].to_string()),
                ("QRON_PORT3".into(), ports[&3].to_string()),
                ("QRON_JOURNAL_DIR".into(), journal_dir.display().to_string()),
            ],
            ports,
        })
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(&self.root)
            .arg("-f")
            .arg("deploy/docker-compose.yml")
            .arg("-p")
            .arg(&self.project)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn container(&self, node: u64) -> String {
        format!("{}_qron{node}_1", self.project)
    }

    /// The container of a worker started with [`Compose::run_worker`].
    fn worker_container(&self, worker: &str) -> String {
        format!("{}_{worker}", self.project)
    }

    /// Starts the compose service `worker` (`worker1` or `worker2`) as a one-off
    /// container named [`Compose::worker_container`], with `--worker-id worker`
    /// and `extra` flags, test modes allowed (`docker-compose down` removes it).
    fn run_worker(&self, worker: &str, extra: &[&str]) -> anyhow::Result<()> {
        sh(self
            .cmd()
            .args(["run", "-d", "--name", &self.worker_container(worker)])
            .args(["-e", "QRON_ALLOW_UNSAFE_TEST_MODES=1", worker])
            .args(["--seeds", "qron1:7701,qron2:7701,qron3:7701", "--app", "demo"])
            .args(["--secret", "demo-secret", "--worker-id", worker])
            .args(extra))?;
        Ok(())
    }

    fn network(&self) -> String {
        format!("{}_qron", self.project)
    }

    fn url(&self, node: u64) -> String {
        format!("http://127.0.0.1:{}", self.ports[&node])
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self.cmd().args(["logs", "--tail=80"]).output() {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let _ = self.cmd().args(["down", "-v", "-t", "1"]).output();
    }
}

async fn get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Option<T> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The leader the reachable nodes among `nodes` agree on.
async fn leader_of(http: &reqwest::Client, c: &Compose, nodes: &[u64]) -> Option<u64> {
    let mut leader = None;
    for n in nodes {
        let v: ClusterView = get(http, &format!("{}/api/v1/cluster", c.url(*n))).await?;
        let l = v.leader_id?;
        if leader.is_some_and(|x| x != l) {
            return None;
        }
        leader = Some(l);
    }
    let l = leader?;
    let own: ClusterView = get(http, &format!("{}/api/v1/cluster", c.url(l))).await?;
    (own.state == "leader").then_some(l)
}

/// Builds the image, starts the three servers of the compose project `tag`
/// (journal bind-mounted from `journal`) and waits for a leader: the project,
/// an HTTP client and the leader's node number.
async fn servers_up(tag: &str, journal: &std::path::Path) -> anyhow::Result<(Compose, reqwest::Client, u64)> {
    sh(Command::new("bash").arg("deploy/build-image.sh").current_dir(root()))?;
    let c = Compose::new(tag, journal)?;
    sh(c.cmd().args(["up", "-d", "qron1", "qron2", "qron3"]))?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let all = [1u64, 2, 3];
    let leader = eventually(Duration::from_secs(60), "a leader in the containers", || {
        leader_of(&http, &c, &all)
    })
    .await?;
    Ok((c, http, leader))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A host directory the containers' scripts append their journal to.
fn journal_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("qron-docker-journal-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and docker-compose: scripts/test.sh runs it where `docker info` answers"]
async fn partitioned_leader_stops_and_rejoins_and_killed_container_recovers() -> anyhow::Result<()> {
    if let Some(why) = docker_missing() {
        anyhow::bail!("the container scenario was asked to run but cannot: {why}");
    }
    let journal_dir = journal_dir()?;
    let (c, http, leader) = servers_up("", journal_dir.path()).await?;
    let all = [1u64, 2, 3];
    let post = |node: u64, path: &str, body: serde_json::Value| {
        let (http, url) = (http.clone(), format!("{}{path}", c.url(node)));
        async move {
            let r = http.post(&url).json(&body).send().await?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            Ok::<_, anyhow::Error>(r.json::<serde_json::Value>().await?)
        }
    };
    post(leader, "/api/v1/apps", json!({"name": "demo", "secret": "demo-secret"})).await?;
    sh(c.cmd().args(["up", "-d", "worker1", "worker2"]))?;
    eventually(Duration::from_secs(60), "both workers connected", || async {
        let l: WorkerList = get(&http, &format!("{}/api/v1/workers", c.url(leader))).await?;
        (l.workers.iter().filter(|w| w.connected).count() == 2).then_some(())
    })
    .await?;

    // Load: three fixed-rate jobs at 1 s for the whole scenario, journaling every run.
    let t0 = (epoch_ms() / 1000 + 3) * 1000;
    let t_end = t0 + 30_000;
    let script = "echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID start $(date +%s)000\" >> /journal/journal; \
                  sleep 0.2; echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID end $(date +%s)999\" >> /journal/journal";
    let mut jobs = Vec::new();
    for i in 0..3 {
        let v = post(
            leader,
            "/api/v1/jobs",
            json!({"app": "demo", "name": format!("rate-{i}"), "instance_retries": 3,
                   "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0},
                   "lifecycle": {"not_after_ms": t_end},
                   "processor": {"type": "shell", "script": script}}),
        )
        .await?;
        jobs.push(v["id"].as_u64().unwrap_or(0));
    }
    tokio::time::sleep(Duration::from_millis((t0 + 5_000 - epoch_ms()).max(0) as u64)).await;

    // 1. Partition the leader away from the others.
    let cut = leader_of(&http, &c, &all).await.unwrap_or(leader);
    let others: Vec<u64> = all.iter().copied().filter(|n| *n != cut).collect();
    let cut_at = epoch_ms();
    sh(Command::new("docker").args(["network", "disconnect", &c.network(), &c.container(cut)]))?;
    let new_leader = eventually(Duration::from_secs(15), "the majority to elect a leader", || {
        leader_of(&http, &c, &others)
    })
    .await?;
    assert_ne!(new_leader, cut);
    eprintln!("partition: new leader {new_leader} after {} ms", epoch_ms() - cut_at);
    // The cut-off leader stops acting as leader within its lease (500 ms) plus a check tick.
    let stopped = eventually(
        Duration::from_secs(10),
        "the cut-off leader to stop leading",
        || async {
            let logs = sh(Command::new("docker").args(["logs", "--timestamps", &c.container(cut)])).ok()?;
            logs.lines()
                .rev()
                .find(|l| l.contains("stopped leading"))
                .map(str::to_owned)
        },
    )
    .await?;
    eprintln!("cut-off leader: {stopped}");
    let stopped_at = stopped
        .split_whitespace()
        .next()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    let after_cut = stopped_at - cut_at;
    assert!(
        (-50..=2_000).contains(&after_cut),
        "the cut-off leader stopped {after_cut} ms after the cut (want within its 500 ms lease plus checks)"
    );
    // The majority goes on without it: every job fires again, past the cut, on the
    // new leader (then the partition heals).
    let job_on = |node: u64| {
        let http = &http;
        let c = &c;
        move |job: u64| async move { get::<JobView>(http, &format!("{}/api/v1/jobs/{job}", c.url(node))).await }
    };
    wait_last_fire(
        Duration::from_secs(15),
        &jobs,
        stopped_at.max(cut_at) + 2_000,
        job_on(new_leader),
    )
    .await?;
    sh(Command::new("docker").args(["network", "connect", &c.network(), &c.container(cut)]))?;
    let rejoined = eventually(
        Duration::from_secs(30),
        "the old leader to rejoin as follower",
        || async {
            let v: ClusterView = get(&http, &format!("{}/api/v1/cluster", c.url(cut))).await?;
            (v.state == "follower" && v.leader_id.is_some_and(|l| l != cut)).then_some(v)
        },
    )
    .await?;
    eprintln!("old leader {cut} rejoined as follower of {:?}", rejoined.leader_id);

    // 2. docker kill the leader during dispatch, then start it again.
    let victim = eventually(Duration::from_secs(15), "a leader", || leader_of(&http, &c, &all)).await?;
    sh(Command::new("docker").args(["kill", &c.container(victim)]))?;
    let rest: Vec<u64> = all.iter().copied().filter(|n| *n != victim).collect();
    eventually(Duration::from_secs(15), "a leader after docker kill", || {
        leader_of(&http, &c, &rest)
    })
    .await?;
    sh(Command::new("docker").args(["start", &c.container(victim)]))?;

    // After the run: every fire time has exactly one instance, which ran (no skips:
    // a leader was up throughout), all end, nothing ran twice, and all three nodes
    // converge. First the schedule must visibly reach its end: the checks below
    // look for what should not be there.
    let l = eventually(Duration::from_secs(60), "a leader at the end", || {
        leader_of(&http, &c, &all)
    })
    .await?;
    let expected = expected_fires(t0, t_end);
    let last = expected.last().copied().unwrap_or(t0);
    let left = Duration::from_millis((t_end - epoch_ms()).max(0) as u64) + Duration::from_secs(30);
    wait_last_fire(left, &jobs, last, job_on(l)).await?;
    let list: InstanceList = eventually(Duration::from_secs(60), "every instance terminal", || async {
        let list: InstanceList = get(&http, &format!("{}/api/v1/instances?after_id=0&limit=10000", c.url(l))).await?;
        list.instances
            .iter()
            .all(|i| ["SUCCEEDED", "FAILED", "CANCELED", "STOPPED"].contains(&i.status.as_str()))
            .then_some(list)
    })
    .await?;
    let lines = read_journal(&journal_dir.path().join("journal"));
    assert!(!lines.is_empty(), "the workers wrote no journal");
    let started = lines
        .iter()
        .filter(|l| l.event == "start")
        .map(|l| l.instance)
        .collect();
    // No outage of the whole cluster here: any skipped fire is a bad skip.
    let mut fires = Report {
        jobs: jobs.len(),
        instances: list.instances.len(),
        ..Report::default()
    };
    let mut views = Vec::new();
    for job in &jobs {
        views.push(job_on(l)(*job).await.context("a job's view")?);
    }
    check_fires(&views, &expected, &list.instances, &started, &[], &mut fires);
    eprintln!("{}", fires.summary().lines().nth(1).unwrap_or_default());
    let mut problems = fires.problems;
    let (doubled, p) = check_journal(&lines);
    problems.extend(p);
    eventually(Duration::from_secs(30), "all nodes to converge", || async {
        let mut first: Option<DigestView> = None;
        for n in all {
            let d: DigestView = get(&http, &format!("{}/api/v1/debug/digest", c.url(n))).await?;
            match &first {
                None => first = Some(d),
                Some(f) if f.digest == d.digest && f.applied_index == d.applied_index => {}
                Some(_) => return None,
            }
        }
        first
    })
    .await?;
    assert_eq!(doubled, 0, "{problems:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The clock of a journal line in the image: busybox's `date` has no `%N`, so
/// whole seconds. Attempts that run one after the other still never look like
/// an overlap (a later line never reads earlier than an earlier one), and the
/// overlap the check must see lasts seconds.
const SECONDS_CLOCK: &str = "$(date +%s)000";

/// How many `alive` lines (one every 200 ms) the cut-off worker's job writes:
/// 8 s, so that an attempt that outlives the cut (guard off) still runs when
/// the retry starts, about 4 s after the cut.
const CUT_JOB_TICKS: u32 = 40;

/// What the worker partition scenario saw.
struct WorkerCut {
    /// The worker that was cut off, and the instance it ran.
    worker: String,
    /// Every attempt of the instance, from the journal.
    attempts: Vec<Span>,
    /// `check_journal`'s verdict on the whole journal.
    doubled: usize,
    problems: Vec<String>,
    /// The cut-off worker container's log.
    worker_log: String,
}

/// Three servers and two workers (`extra` flags for both), one long journaled
/// run-now instance; the worker running it is cut off the network until the
/// leader has retried the instance on the other worker, then reconnected; once
/// the retry has ended and both workers are back, the journal is checked.
async fn cut_off_the_worker_of_a_running_attempt(tag: &str, extra: &[&str]) -> anyhow::Result<WorkerCut> {
    if let Some(why) = docker_missing() {
        anyhow::bail!("the container scenario was asked to run but cannot: {why}");
    }
    let journal_dir = journal_dir()?;
    let journal = journal_dir.path().join("journal");
    let (c, http, leader) = servers_up(tag, journal_dir.path()).await?;
    let post = |path: &str, body: serde_json::Value| {
        let (http, url) = (http.clone(), format!("{}{path}", c.url(leader)));
        async move {
            let r = http.post(&url).json(&body).send().await?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            Ok::<_, anyhow::Error>(r.json::<serde_json::Value>().await?)
        }
    };
    let connected = || async {
        let l: WorkerList = get(&http, &format!("{}/api/v1/workers", c.url(leader))).await?;
        (l.workers.iter().filter(|w| w.connected).count() == 2).then_some(())
    };
    post("/api/v1/apps", json!({"name": "demo", "secret": "demo-secret"})).await?;
    for w in ["worker1", "worker2"] {
        c.run_worker(w, extra)?;
    }
    eventually(Duration::from_secs(60), "both workers connected", connected).await?;

    let script = journal_script("/journal/journal", CUT_JOB_TICKS, SECONDS_CLOCK);
    let job = post(
        "/api/v1/jobs",
        json!({"app": "demo", "name": "long", "instance_retries": 2,
               "retry_backoff": {"initial_ms": 100, "multiplier": 2, "max_ms": 1000},
               "schedule": {"type": "api"}, "processor": {"type": "shell", "script": script}}),
    )
    .await?;
    let job = job["id"].as_u64().unwrap_or(0);
    let instance = post(&format!("/api/v1/jobs/{job}/run"), json!({})).await?;
    let id = instance["id"].as_u64().unwrap_or(0);
    // Attempt `n` once it has written `alive` lines of `ticks` ticks.
    let attempt = |n: u32, ticks: u32| {
        let journal = &journal;
        move || async move {
            spans(&read_journal(journal))
                .remove(&id)?
                .into_iter()
                .find(|s| s.attempt == n && s.alive_lines >= ticks)
        }
    };
    let first = eventually(Duration::from_secs(30), "the first attempt to run", attempt(1, 1)).await?;

    // Cut its worker off, past the worker timeout (3 s): the leader retries the
    // instance on the other worker. The cut lasts until the retry has run for 2 s
    // (10 ticks): a cut-off attempt that runs on (no lease) then writes lines
    // seconds after the retry started, before the reconnected worker is told to
    // stop it.
    let cut_at = epoch_ms();
    let network = c.network();
    let container = c.worker_container(&first.worker);
    sh(Command::new("docker").args(["network", "disconnect", &network, &container]))?;
    let retry = eventually(
        Duration::from_secs(30),
        "the retry to run on the other worker",
        attempt(2, 10),
    )
    .await;
    sh(Command::new("docker").args(["network", "connect", &network, &container]))?;
    let retry = retry?;
    eprintln!(
        "cut {} off at {cut_at}; attempt 2 started on {} at {} (second resolution); reconnected at {}",
        first.worker,
        retry.worker,
        retry.from_ms,
        epoch_ms()
    );
    anyhow::ensure!(retry.worker != first.worker, "the retry ran on the cut-off worker");

    // The retry runs to its end, the cut-off worker registers again; only then is
    // the journal complete (an attempt that outlived the cut ran beside the retry).
    eventually(Duration::from_secs(30), "the instance to end", || async {
        let i: InstanceView = get(&http, &format!("{}/api/v1/instances/{id}", c.url(leader))).await?;
        ["SUCCEEDED", "FAILED", "CANCELED", "STOPPED"]
            .contains(&i.status.as_str())
            .then_some(())
    })
    .await?;
    eventually(Duration::from_secs(30), "the cut-off worker to come back", connected).await?;
    // What the cut-off worker said about it (both streams: tracing writes to stdout).
    let worker_log = sh(Command::new("sh").args(["-c", &format!("docker logs {container} 2>&1")]))?;
    let lines = read_journal(&journal);
    let (doubled, problems) = check_journal(&lines);
    Ok(WorkerCut {
        worker: first.worker,
        attempts: spans(&lines).remove(&id).unwrap_or_default(),
        doubled,
        problems,
        worker_log,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and docker-compose: scripts/test.sh runs it where `docker info` answers"]
async fn a_worker_cut_off_mid_attempt_kills_it_before_the_retry_runs() -> anyhow::Result<()> {
    let cut = cut_off_the_worker_of_a_running_attempt("lease", &[]).await?;
    eprintln!("attempts: {:?}", cut.attempts);
    assert_eq!(cut.doubled, 0, "{}", cut.problems.join("\n"));
    assert!(cut.problems.is_empty(), "{}", cut.problems.join("\n"));
    // The lease killed the first attempt (no end line) before the retry started.
    let [first, retry] = cut.attempts.as_slice() else {
        panic!("expected two attempts: {:?}", cut.attempts);
    };
    assert_eq!(first.worker, cut.worker);
    assert!(!first.ended, "the cut-off attempt ran to its end: {first:?}");
    assert!(first.to_ms <= retry.from_ms, "{first:?} / {retry:?}");
    assert!(retry.ended, "the retry did not end: {retry:?}");
    // And it was the lease that ended it (not, say, the worker dying with its scripts).
    assert!(
        cut.worker_log.contains("lost its lease"),
        "the cut-off worker's log does not say its lease lapsed:\n{}",
        cut.worker_log
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and docker-compose: scripts/test.sh runs it where `docker info` answers"]
async fn the_checker_fails_on_a_cut_off_worker_without_the_lease() -> anyhow::Result<()> {
    let cut = cut_off_the_worker_of_a_running_attempt("nolease", &["--unsafe-test-no-lease"]).await?;
    eprintln!("attempts: {:?}\nproblems: {:?}", cut.attempts, cut.problems);
    assert!(
        cut.doubled > 0 && cut.problems.iter().any(|p| p.contains("while attempt 1 ran")),
        "the checker did not see the cut-off attempt run beside its retry: {:?} {:?}",
        cut.attempts,
        cut.problems
    );
    Ok(())
}
