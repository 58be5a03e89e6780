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
//!    at the same time: an attempt runs from its journal's `start` to the last
//!    line it wrote (`end`, or the last `alive` of one that was killed);
//! 4. every write the API acknowledged (job created, run-now accepted) exists;
//! 5. all nodes converge to the same applied state (equal digests).
//!
//! An instance stopped and retried by the `StopDuringFailover` fault keeps its
//! one instance per fire time and counts as ran (its first attempt started);
//! STOPPED is terminal; its attempts are checked like any others.
//!
//! The `RetryWritesDuringFailover` fault adds a client that sends writes while
//! the leader dies and sends each again through the next node until one
//! answers, under one `Idempotency-Key` per write: every key must have had
//! exactly one effect ([`check_writes`], `duplicated_writes` in the summary).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use qron_proto::api::{InstanceList, InstanceView, JobList, JobView, WorkerList};
use serde_json::json;

use crate::{epoch_ms, eventually, freeze_tree, process_alive, signal_all, thaw, ClusterOptions, TestCluster};

/// The server's `--worker-timeout-ms` in a chaos cluster: a worker silent this
/// long is dropped and its attempts are retried elsewhere (its lease is 3/5 of it).
pub const WORKER_TIMEOUT_MS: u64 = 3_000;

/// How long a frozen worker tree stays frozen: past the worker timeout, so the
/// leader retries its attempts elsewhere while they are frozen.
pub const FREEZE_MS: u64 = WORKER_TIMEOUT_MS + 2_000;

/// Where in the 1 s fire cycle (fires fall on whole seconds) a worker tree is
/// frozen: after the next fires were dispatched, before they start.
const FREEZE_PHASE_MS: i64 = 700;

/// A long job's script writes an `alive` line this often.
pub const ALIVE_EVERY_MS: u64 = 200;

/// How many `alive` lines a long job's script writes before its `end` (about 4 s).
pub const LONG_JOB_TICKS: u32 = 20;

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
    /// SIGSTOP a worker and every process below it (a paused VM or container) past
    /// the worker timeout, then SIGCONT: the worker first, its scripts once it has
    /// had the chance to kill them (rule 11: it checks its lease before anything
    /// else). Aimed at a worker running a long attempt, in the last 300 ms before
    /// a fire second, when workers hold the next fires for a later start.
    FreezeWorkerTree,
    /// SIGKILL a worker's own process only (its scripts live on unless it guards
    /// them), and start it again at once with the same `--worker-id`.
    KillWorkerOnly,
    /// SIGKILL the leader, stop a running (long) instance through a surviving node
    /// as soon as one accepts, then retry it, while the worker that runs it is slow
    /// to fail over (its process paused for 2 s, its script running on): the retry
    /// must not run beside the stopped attempt.
    StopDuringFailover,
    /// SIGKILL the leader while a client sends writes (a run-now of the burst job,
    /// a job create) to the followers, each under one `Idempotency-Key`, some just
    /// before the kill and some during the election. On any error, timeout or 5xx
    /// the client sends the same write again, with the same key, through the next
    /// node, until one answers: each key must have exactly one effect.
    RetryWritesDuringFailover,
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
    pub tree_freezes: usize,
    pub worker_only_kills: usize,
    pub failover_stops: usize,
    pub write_retry_kills: usize,
    /// TEST ONLY, the guard of `RetryWritesDuringFailover` switched off: the client
    /// sends its writes without an `Idempotency-Key`, so each retry is a fresh
    /// request (what a naive client does).
    pub retry_without_key: bool,
    /// Time between faults.
    pub spacing: Duration,
    /// Fixed-rate jobs (1 s each).
    pub jobs: usize,
    /// Of those, how many run long (an `alive` line every 200 ms, about 4 s) so
    /// that worker faults catch them running; the others take 0.3 s.
    pub long_jobs: usize,
    /// Run-now requests every 2 s.
    pub burst: usize,
    /// Of the short jobs, how many keep only their newest 3 instances (a job
    /// retention): expiry runs all through the faults, and the checker
    /// accounts for the fires it removed instead of counting them lost.
    pub short_retention_jobs: usize,
    /// Extra server flags (the negative tests' broken modes).
    pub server_args: Vec<String>,
    pub server_env: Vec<(String, String)>,
    /// Extra worker flags and environment (the negative tests' broken modes).
    pub worker_args: Vec<String>,
    pub worker_env: Vec<(String, String)>,
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
            tree_freezes: 1,
            worker_only_kills: 1,
            failover_stops: 1,
            write_retry_kills: 1,
            retry_without_key: false,
            spacing: Duration::from_millis(3_500),
            jobs: 10,
            long_jobs: 2,
            burst: 5,
            short_retention_jobs: 3,
            server_args: Vec::new(),
            server_env: Vec::new(),
            worker_args: Vec::new(),
            worker_env: Vec::new(),
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
            tree_freezes: 10,
            worker_only_kills: 10,
            failover_stops: 10,
            write_retry_kills: 10,
            ..Profile::bounded(seed)
        }
    }

    /// A short run that injects `n` faults of one kind only, on 3 jobs (one of
    /// them long): what a negative test and its positive twin need.
    pub fn only(seed: u64, fault: Fault, n: usize) -> Profile {
        let mut p = Profile {
            leader_kills: 0,
            pauses: 0,
            follower_kills: 0,
            worker_kills: 0,
            full_restarts: 0,
            tree_freezes: 0,
            worker_only_kills: 0,
            failover_stops: 0,
            write_retry_kills: 0,
            jobs: 3,
            long_jobs: 1,
            burst: 2,
            short_retention_jobs: 1,
            ..Profile::bounded(seed)
        };
        *p.count_mut(fault) = n;
        p
    }

    fn count_mut(&mut self, fault: Fault) -> &mut usize {
        match fault {
            Fault::KillLeader => &mut self.leader_kills,
            Fault::PauseLeader => &mut self.pauses,
            Fault::KillFollower => &mut self.follower_kills,
            Fault::KillWorker => &mut self.worker_kills,
            Fault::KillAllServers => &mut self.full_restarts,
            Fault::FreezeWorkerTree => &mut self.tree_freezes,
            Fault::KillWorkerOnly => &mut self.worker_only_kills,
            Fault::StopDuringFailover => &mut self.failover_stops,
            Fault::RetryWritesDuringFailover => &mut self.write_retry_kills,
        }
    }

    /// The faults in the order this seed draws them.
    pub fn schedule(&self) -> Vec<Fault> {
        let mut faults = Vec::new();
        for (fault, n) in [
            (Fault::KillLeader, self.leader_kills),
            (Fault::PauseLeader, self.pauses),
            (Fault::KillFollower, self.follower_kills),
            (Fault::KillWorker, self.worker_kills),
            (Fault::KillAllServers, self.full_restarts),
            (Fault::FreezeWorkerTree, self.tree_freezes),
            (Fault::KillWorkerOnly, self.worker_only_kills),
            (Fault::StopDuringFailover, self.failover_stops),
            (Fault::RetryWritesDuringFailover, self.write_retry_kills),
        ] {
            faults.extend(std::iter::repeat_n(fault, n));
        }
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
#[derive(Debug, Default)]
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
    /// Per worker fault, how many hit their aim: a long attempt running on the
    /// frozen or killed worker; a stop and its retry both accepted mid-failover.
    /// A fault that hit nothing proves nothing.
    pub hits: BTreeMap<String, usize>,
    pub jobs: usize,
    pub instances: usize,
    /// Fire times expected from the fixed-rate jobs (jobs x fire times).
    pub fires_checked: usize,
    /// Fires whose one instance started its processor (it is in the journal).
    pub fires_ran: usize,
    /// Fires recorded as skipped (acceptably or not).
    pub skipped_fires: usize,
    /// Fires with no instance because their instance expired (at or before the
    /// job's `expired_fires_through_ms`, and no more than the job expired).
    pub expired_fires: usize,
    /// Skipped fires without an acceptable reason (see [`skip_verdict`]), and
    /// skipped fires that ran anyway.
    pub bad_skips: usize,
    /// Fire times with no instance, acked writes missing, instances not terminal.
    pub lost: usize,
    /// Fire times with two instances, (instance, attempt) started twice, overlapping attempts.
    pub doubled: usize,
    pub diverged_nodes: usize,
    /// Writes the retrying client sent (`RetryWritesDuringFailover`), and how many
    /// of them it had to send more than once.
    pub client_writes: usize,
    pub retried_writes: usize,
    /// Client writes that took effect more than once: a run key with two
    /// instances, or a create answered 409 by its own first copy.
    pub duplicated_writes: usize,
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
        let _ = writeln!(
            s,
            "chaos summary: seed={} faults={:?} hits={:?}",
            self.seed, self.faults, self.hits
        );
        let _ = writeln!(
            s,
            "chaos summary: jobs={} instances={} fires_checked={} fires_ran={} skipped_fires={} expired_fires={} bad_skips={} lost={} doubled={} client_writes={} retried_writes={} duplicated_writes={} diverged_nodes={}",
            self.jobs,
            self.instances,
            self.fires_checked,
            self.fires_ran,
            self.skipped_fires,
            self.expired_fires,
            self.bad_skips,
            self.lost,
            self.doubled,
            self.client_writes,
            self.retried_writes,
            self.duplicated_writes,
            self.diverged_nodes
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

/// A journal line: `instance attempt worker start|alive|end epoch_ms`.
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

/// When an attempt is known to have run: from its first `start` line to the last
/// line it wrote (its `end`, or for an attempt killed before it ended, its last
/// `alive`), and on which worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub attempt: u32,
    pub worker: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Whether it wrote its `end` line (false: killed, or still running).
    pub ended: bool,
    /// How many `alive` lines it wrote (a long job's attempt writes one at once).
    pub alive_lines: u32,
}

/// Every attempt's span, per instance, from the journal (attempts that never
/// wrote `start` have none).
pub fn spans(lines: &[JournalLine]) -> BTreeMap<u64, Vec<Span>> {
    let mut by_key: BTreeMap<(u64, u32), Span> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.event == "start") {
        by_key
            .entry((l.instance, l.attempt))
            .and_modify(|s| s.from_ms = s.from_ms.min(l.at_ms))
            .or_insert_with(|| Span {
                attempt: l.attempt,
                worker: l.worker.clone(),
                from_ms: l.at_ms,
                to_ms: l.at_ms,
                ended: false,
                alive_lines: 0,
            });
    }
    for l in lines {
        if let Some(s) = by_key.get_mut(&(l.instance, l.attempt)) {
            s.to_ms = s.to_ms.max(l.at_ms);
            s.ended |= l.event == "end";
            s.alive_lines += u32::from(l.event == "alive");
        }
    }
    let mut out: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
    for ((i, _), s) in by_key {
        out.entry(i).or_default().push(s);
    }
    out
}

/// Invariant 3 over a journal: returns (doubled count, problems).
///
/// An attempt ran from its `start` to the last line it wrote, so an attempt
/// that was killed (no `end`) still counts up to its last `alive`. A later
/// attempt that starts before an earlier one's last line is an overlap, and so
/// is an earlier attempt that writes anything after a later one started.
pub fn check_journal(lines: &[JournalLine]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut starts: BTreeMap<(u64, u32), Vec<&JournalLine>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.event == "start") {
        starts.entry((l.instance, l.attempt)).or_default().push(l);
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
    // No two attempts of one instance at the same time: every pair, since a killed
    // attempt may run on past several later ones.
    for (i, spans) in spans(lines) {
        for (k, early) in spans.iter().enumerate() {
            for late in &spans[k + 1..] {
                if late.from_ms < early.to_ms {
                    doubled += 1;
                    problems.push(format!(
                        "instance {i}: attempt {} started at {} on {} while attempt {} ran until {} on {} ({})",
                        late.attempt,
                        late.from_ms,
                        late.worker,
                        early.attempt,
                        early.to_ms,
                        early.worker,
                        if early.ended {
                            "its end"
                        } else {
                            "its last alive line: no end, killed"
                        }
                    ));
                }
            }
        }
    }
    (doubled, problems)
}

/// A window in which no server ran: from the SIGKILL of every server until the
/// restarted cluster agreed on a leader again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The least share (in percent) of the expected fires that must have run a
/// processor. Skips are allowed only for the reasons [`skip_verdict`] accepts,
/// but a run that ran few of its fires proves little about double execution
/// whatever the reasons: it fails on its own.
pub const MIN_RAN_PERCENT: usize = 75;

/// A fire due this long before a full-cluster outage began may still have been
/// missed by it (proposed, never committed): one fire period.
const OUTAGE_LEAD_MS: i64 = 1_000;

/// Whether a fire at `fire_ms`, recorded as skipped with the instance reason
/// `reason`, was skipped for an acceptable reason: `Ok` if so, else why not.
///
/// Acceptable: the job's `max_instances` was reached, or a misfire of a fire due
/// during a full-cluster outage (nobody could fire it on time). Anything else (a
/// misfire while a leader was up, an unknown reason) is a fire the cluster
/// dropped. The wording is the state machine's (`raft-store/src/state.rs`, the
/// scheduler's `catch_up`): a new wording shows up here as a bad skip, loudly.
pub fn skip_verdict(reason: &str, fire_ms: i64, outages: &[Outage]) -> Result<(), String> {
    let Some(why) = reason.strip_prefix("skipped: ") else {
        return Err(format!("a skip without a recorded reason ({reason:?})"));
    };
    if why.contains(" instances active, max_instances is ") {
        return Ok(());
    }
    if why.starts_with("misfire") {
        return if outages
            .iter()
            .any(|o| (o.from_ms - OUTAGE_LEAD_MS..=o.to_ms).contains(&fire_ms))
        {
            Ok(())
        } else {
            Err(format!("a misfire outside any full-cluster outage ({reason:?})"))
        };
    }
    Err(format!("an unacceptable skip reason ({reason:?})"))
}

/// Invariant 1 over the state: every expected fire time of every job in `jobs`
/// has exactly one instance, and that instance either ran (its id is in
/// `started`, the instances the journal saw start) or was skipped for an
/// acceptable reason; and at least [`MIN_RAN_PERCENT`] of the fires ran.
/// Adds its figures and problems to `report`.
pub fn check_fires(
    jobs: &[JobView],
    expected: &[i64],
    instances: &[InstanceView],
    started: &BTreeSet<u64>,
    outages: &[Outage],
    report: &mut Report,
) {
    let t0 = expected.first().copied().unwrap_or(0);
    for view in jobs {
        let job = &view.id;
        // Fires at or before this may have expired; at most `expired_instances` did.
        let expired_through = view.expired_fires_through_ms.unwrap_or(i64::MIN);
        let mut expired_here = 0u64;
        let mut per_fire: BTreeMap<i64, Vec<&InstanceView>> = BTreeMap::new();
        for i in instances.iter().filter(|i| i.job_id == *job) {
            if let Some(t) = i.fire_time_ms {
                per_fire.entry(t).or_default().push(i);
            }
        }
        for t in expected {
            report.fires_checked += 1;
            match per_fire.get(t).map(Vec::as_slice).unwrap_or_default() {
                [] if *t <= expired_through && expired_here < view.expired_instances => {
                    expired_here += 1;
                    report.expired_fires += 1;
                    // An expired fire's instance is gone: whether it ran is the
                    // journal's to say (invariant 3), not the state's.
                }
                [] => {
                    report.lost += 1;
                    report
                        .problems
                        .push(format!("job {job}: fire t0+{} ms has no instance", t - t0));
                }
                [one] if one.status == "CANCELED" && one.reason.starts_with("skipped") => {
                    report.skipped_fires += 1;
                    if let Err(why) = skip_verdict(&one.reason, *t, outages) {
                        report.bad_skips += 1;
                        report.problems.push(format!(
                            "job {job}: fire t0+{} ms (instance {}) was skipped: {why}",
                            t - t0,
                            one.id
                        ));
                    } else if started.contains(&one.id) {
                        report.bad_skips += 1;
                        report.problems.push(format!(
                            "job {job}: fire t0+{} ms (instance {}) is recorded as skipped but ran",
                            t - t0,
                            one.id
                        ));
                    }
                }
                [one] => {
                    if started.contains(&one.id) {
                        report.fires_ran += 1;
                    }
                }
                many => {
                    report.doubled += 1;
                    report
                        .problems
                        .push(format!("job {job}: fire t0+{} ms has {} instances", t - t0, many.len()));
                }
            }
        }
    }
    if report.fires_checked == 0 {
        report
            .problems
            .push("no fire time was checked: the run had no load".into());
    } else if report.fires_ran * 100 < (report.fires_checked - report.expired_fires) * MIN_RAN_PERCENT {
        report.problems.push(format!(
            "only {} of {} fires ran ({} skipped, {} lost): at least {MIN_RAN_PERCENT}% must run",
            report.fires_ran, report.fires_checked, report.skipped_fires, report.lost
        ));
    }
}

/// How many instances a short-retention job keeps.
pub const SHORT_RETENTION: u64 = 3;

/// The fire times of a 1 s fixed-rate job that starts at `t0` and ends at `t_end`.
pub fn expected_fires(t0: i64, t_end: i64) -> Vec<i64> {
    (0..).map(|k| t0 + k * 1000).take_while(|t| *t <= t_end).collect()
}

/// Waits until every job in `jobs` has recorded a fire at or after `last` on
/// server `node`: the schedule has run to its end, so what is not there by then
/// is missing (rather than late). Jobs read through `get`, which returns `None`
/// while a node does not answer.
pub async fn wait_last_fire<G, Fut>(timeout: Duration, jobs: &[u64], last: i64, get: G) -> anyhow::Result<()>
where
    G: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Option<JobView>>,
{
    eventually(timeout, "every job to record its last fire time", || async {
        for job in jobs {
            if get(*job).await?.last_fire_ms.is_none_or(|t| t < last) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Runs a chaos profile end to end and checks the invariants.
pub async fn run(profile: &Profile, keep_dir: Option<&Path>) -> anyhow::Result<Report> {
    let opts = ClusterOptions {
        server_args: [
            "--worker-timeout-ms".to_owned(),
            WORKER_TIMEOUT_MS.to_string(),
            "--failover-grace-ms".to_owned(),
            WORKER_TIMEOUT_MS.to_string(),
        ]
        .into_iter()
        .chain(profile.server_args.iter().cloned())
        .collect(),
        server_env: profile.server_env.clone(),
        worker_env: profile.worker_env.clone(),
        log: "info".into(),
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::start(3, opts)?;
    let journal: PathBuf = c.dir().join("journal");
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "chaos", "secret": "s"}))
        .await?;
    let worker_args: Vec<&str> = ["--max-concurrency", "64"]
        .into_iter()
        .chain(profile.worker_args.iter().map(String::as_str))
        .collect();
    for w in WORKERS {
        c.spawn_worker(w, "chaos", "s", &worker_args)?;
    }
    eventually(Duration::from_secs(20), "workers", || async {
        let l: WorkerList = c.get(leader, "/api/v1/workers").await.ok()?;
        (l.workers.iter().filter(|w| w.connected).count() == 2).then_some(())
    })
    .await?;

    let faults = profile.schedule();
    // Each fault's time: one spacing after the previous fault's, plus what that one
    // takes itself (a freeze lasts longer than the spacing).
    let spacing = profile.spacing.as_millis() as i64;
    let mut offsets = Vec::with_capacity(faults.len());
    let mut offset = 0;
    let mut before = 0;
    for f in &faults {
        offset += spacing + before;
        offsets.push(offset);
        before = f.takes_ms();
    }
    let run_ms = offset + spacing + before + 1_000;
    let t0 = (epoch_ms() / 1000 + 3) * 1000;
    let t_end = t0 + run_ms;
    let journal_text = journal.display().to_string();
    let short_script = journal_script(&journal_text, 0, SCRIPT_CLOCK);
    let long_script = journal_script(&journal_text, LONG_JOB_TICKS, SCRIPT_CLOCK);
    let mut acked_jobs = Vec::new();
    for i in 0..profile.jobs {
        let script = if i < profile.long_jobs {
            &long_script
        } else {
            &short_script
        };
        let mut spec = json!({
            "app": "chaos", "name": format!("rate-{i}"), "instance_retries": 3,
            "retry_backoff": {"initial_ms": 100, "multiplier": 2, "max_ms": 1000},
            "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0},
            "lifecycle": {"not_after_ms": t_end},
            "processor": {"type": "shell", "script": script}
        });
        // The last short jobs keep little history: expiry runs during the faults.
        if i >= profile
            .jobs
            .saturating_sub(profile.short_retention_jobs)
            .max(profile.long_jobs)
        {
            spec["retention"] = json!({"max_count": SHORT_RETENTION});
        }
        let job: JobView = serde_json::from_value(c.post_ok(leader, "/api/v1/jobs", &spec).await?)?;
        acked_jobs.push(job.id);
    }
    let burst_job: JobView = serde_json::from_value(
        c.post_ok(
            leader,
            "/api/v1/jobs",
            &json!({"app": "chaos", "name": "burst", "instance_retries": 3, "schedule": {"type": "api"},
                    "processor": {"type": "shell", "script": short_script}}),
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
    let mut rng = SplitMix(profile.seed ^ 0xC0FFEE);
    let mut injected = Injected {
        journal: journal.clone(),
        rng: SplitMix(profile.seed ^ 0xFA11),
        burst_job: burst_job.id,
        long_jobs: acked_jobs.iter().take(profile.long_jobs).copied().collect(),
        retry_without_key: profile.retry_without_key,
        holds_answers: profile
            .server_args
            .iter()
            .any(|a| a == "--unsafe-test-hold-forward-answers"),
        ..Injected::default()
    };
    tokio::time::sleep(Duration::from_millis((t0 - epoch_ms()).max(0) as u64)).await;
    for (fault, offset) in faults.iter().zip(offsets) {
        // Load until the fault's time: run-now bursts to random nodes.
        // Seeded jitter: faults land at every phase of the 1 s fire cycle (mid-dispatch too).
        let at = t0 + offset + (rng.next_u64() % 1000) as i64;
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
        if inject(&mut c, *fault, &mut injected)
            .await
            .with_context(|| format!("injecting {fault:?}"))?
        {
            *report.hits.entry(format!("{fault:?}")).or_default() += 1;
        }
    }
    let Injected {
        kills, outages, writes, ..
    } = injected;

    // Heal: everything that is down comes back.
    for id in c.servers.keys().copied().collect::<Vec<_>>() {
        if !c.server(id)?.is_running() {
            c.restart(id)?;
        }
    }
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    // The checker looks for what should not be there (doubles, gaps): first wait
    // until the schedule has visibly run to its end. If it never gets there, the
    // checker reports the missing fires.
    let last = expected_fires(t0, t_end).last().copied().unwrap_or(t0);
    let left = Duration::from_millis((t_end - epoch_ms()).max(0) as u64) + Duration::from_secs(30);
    if let Err(e) = wait_last_fire(left, &acked_jobs[..profile.jobs], last, |job| {
        let c = &c;
        async move { c.get::<JobView>(leader, &format!("/api/v1/jobs/{job}")).await.ok() }
    })
    .await
    {
        eprintln!("chaos: {e:#}; checking what is there");
    }
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
        &outages,
        &writes,
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

/// What the fault injection keeps between faults.
#[derive(Default)]
struct Injected {
    /// When each leader SIGKILL happened (for the failover figures).
    kills: Vec<i64>,
    /// Full-cluster outages (for the fire check's skip verdicts).
    outages: Vec<Outage>,
    /// The journal, to aim worker faults at long attempts.
    journal: PathBuf,
    /// Picks a worker when no long attempt runs.
    rng: SplitMix,
    /// The run-now job the retrying client runs.
    burst_job: u64,
    /// The client's guard switched off (see [`Profile::retry_without_key`]).
    retry_without_key: bool,
    /// Whether the servers hold back answers to forwarded writes (their test
    /// mode): then the leader is killed once it holds the client's first writes.
    holds_answers: bool,
    /// What the retrying client sent, and what it was answered.
    writes: Vec<ClientWrite>,
    /// Keys made so far (each write gets the next).
    write_keys: usize,
    /// The fixed-rate jobs whose attempts run for seconds.
    long_jobs: Vec<u64>,
}

impl Fault {
    /// How long the fault itself lasts beyond what the spacing covers (the next
    /// fault is put off by this much).
    pub fn takes_ms(self) -> i64 {
        match self {
            Fault::FreezeWorkerTree => FREEZE_MS as i64 + 2_000,
            Fault::StopDuringFailover => SLOW_FAILOVER_MS + 1_000,
            // The clients' sends and retries (5 to 8 s when answers are held).
            Fault::RetryWritesDuringFailover => 8_000,
            _ => 0,
        }
    }
}

/// Injects one fault; true if it hit its aim (for the worker faults: a long
/// attempt ran where it struck; a stop and a retry were accepted mid-failover).
async fn inject(c: &mut TestCluster, fault: Fault, x: &mut Injected) -> anyhow::Result<bool> {
    match fault {
        Fault::KillLeader => {
            // Every other kill strikes where the fire cycle leaves the most in
            // flight: the next second's fires are committed already assigned
            // (`FireAssign`) and held by their workers, not yet due. The new leader
            // must keep those assignments (no loss, no second attempt beside them).
            if x.kills.len() % 2 == 0 {
                let phase = epoch_ms().rem_euclid(1_000);
                let wait = (1_000 + FREEZE_PHASE_MS - phase).rem_euclid(1_000);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let l = c.wait_leader(Duration::from_secs(20)).await?;
            x.kills.push(epoch_ms());
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
            let from_ms = epoch_ms();
            x.kills.push(from_ms);
            for id in c.running() {
                c.kill(id)?;
            }
            for id in c.servers.keys().copied().collect::<Vec<_>>() {
                c.restart(id)?;
            }
            c.wait_leader(Duration::from_secs(30)).await?;
            x.outages.push(Outage {
                from_ms,
                to_ms: epoch_ms(),
            });
        }
        Fault::FreezeWorkerTree => {
            // Strike in the last 300 ms before a fire second: the workers then hold
            // the next fires' dispatches (sent a fire horizon, 500 ms, ahead) for a
            // later start, which a woken worker must not start (rule 11).
            let phase = epoch_ms().rem_euclid(1_000);
            let wait = if phase < FREEZE_PHASE_MS {
                FREEZE_PHASE_MS - phase
            } else {
                1_000 + FREEZE_PHASE_MS - phase
            };
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            // Best: the worker holding a long job's next fire for a later start (it
            // starts after the freeze only if the lease is off, beside the retry the
            // leader made meanwhile); else the one running a long attempt.
            let (name, aimed) = match holder_of_next_long_fire(c, x).await {
                Some(w) => (w, true),
                None => aim(x),
            };
            let pid = c
                .worker(name)?
                .pid()
                .ok_or_else(|| anyhow::anyhow!("worker {name} is not running"))?;
            let frozen = freeze_tree(pid);
            let at = epoch_ms();
            // The fault itself: frozen past the server's worker timeout.
            tokio::time::sleep(Duration::from_millis(FREEZE_MS)).await;
            thaw(&[pid]);
            let woke = epoch_ms();
            // The worker wakes first and ends what it must; then whatever it left
            // frozen wakes too (a guard that failed shows up in the journal).
            let rest = &frozen[1..];
            let _ = eventually(
                Duration::from_secs(3),
                "the woken worker to end its frozen scripts",
                || async { (!rest.iter().any(|p| process_alive(*p))).then_some(()) },
            )
            .await;
            let left = rest.iter().filter(|p| process_alive(**p)).count();
            thaw(rest);
            eprintln!(
                "chaos: froze {name} and {} processes below it at {at} (aimed: {aimed}); woke it at {woke}, \
                 the rest {} ms later with {left} still alive",
                rest.len(),
                epoch_ms() - woke
            );
            return Ok(aimed);
        }
        Fault::KillWorkerOnly => {
            let (name, aimed) = aim(x);
            c.kill_worker_only(name)?;
            c.respawn_worker(name)?;
            return Ok(aimed);
        }
        Fault::StopDuringFailover => {
            let target = match long_running(&read_journal(&x.journal), epoch_ms()).into_iter().next() {
                Some((instance, span)) => Some((instance, span.worker)),
                None => {
                    let l = c.wait_leader(Duration::from_secs(20)).await?;
                    let list: InstanceList = c.get(l, "/api/v1/instances?status=RUNNING&limit=1").await?;
                    list.instances.into_iter().find_map(|i| Some((i.id, i.worker?)))
                }
            };
            let l = c.wait_leader(Duration::from_secs(20)).await?;
            // The worker that runs it is slow to fail over: its process pauses (its
            // script runs on) for less than the worker timeout, so the new leader
            // must wait for it rather than count it lost.
            let paused = match &target {
                Some((_, w)) => c.worker(w)?.pid(),
                None => None,
            };
            if let Some(pid) = paused {
                signal_all(&[pid], "STOP");
            }
            let killed_at = epoch_ms();
            x.kills.push(killed_at);
            let outcome = stop_and_retry(c, l, target.as_ref().map(|t| t.0)).await;
            let resume_at = killed_at + SLOW_FAILOVER_MS;
            tokio::time::sleep(Duration::from_millis((resume_at - epoch_ms()).max(0) as u64)).await;
            if let Some(pid) = paused {
                thaw(&[pid]);
            }
            let (stopped_at, retried_at) = outcome?;
            eprintln!(
                "chaos: killed leader {l} at {killed_at}; instance {:?} stopped at {stopped_at:?}, retried at \
                 {retried_at:?}; its worker paused until {}",
                target.as_ref().map(|t| t.0),
                epoch_ms()
            );
            c.wait_leader(Duration::from_secs(20)).await?;
            c.restart(l)?;
            return Ok(retried_at.is_some());
        }
        Fault::RetryWritesDuringFailover => return writes_during_failover(c, x).await,
    }
    Ok(false)
}

/// The workers of a chaos run.
const WORKERS: [&str; 2] = ["w1", "w2"];

/// The worker a long job's next fire is assigned to, while it waits for its
/// start (dispatched ahead, not yet started), by the leader's state.
async fn holder_of_next_long_fire(c: &TestCluster, x: &Injected) -> Option<&'static str> {
    let leader = c.agreed_leader().await?;
    let now = epoch_ms();
    for job in &x.long_jobs {
        let path = format!("/api/v1/instances?job={job}&status=WAITING_WORKER_RECEIVE&stale=true");
        let Ok(list) = c.get::<InstanceList>(leader, &path).await else {
            continue;
        };
        let held = list
            .instances
            .iter()
            .filter(|i| i.fire_time_ms.is_some_and(|t| t > now))
            .find_map(|i| i.worker.as_deref().and_then(|w| WORKERS.iter().find(|n| **n == w)));
        if let Some(w) = held {
            return Some(w);
        }
    }
    None
}

/// The worker to strike: the one running the long attempt that started last (the
/// most of it is still to run), else one the seed picks. True if aimed.
fn aim(x: &mut Injected) -> (&'static str, bool) {
    let running = long_running(&read_journal(&x.journal), epoch_ms());
    match running
        .first()
        .and_then(|(_, s)| WORKERS.iter().find(|w| **w == s.worker))
    {
        Some(w) => (w, true),
        None => (WORKERS[(x.rng.next_u64() % WORKERS.len() as u64) as usize], false),
    }
}

/// The long attempts running at `now_ms` by the journal (not ended, an `alive`
/// line within three periods) with at least half of their run ahead: newest first.
pub fn long_running(lines: &[JournalLine], now_ms: i64) -> Vec<(u64, Span)> {
    let half_run = i64::from(LONG_JOB_TICKS) * ALIVE_EVERY_MS as i64 / 2;
    let mut out: Vec<(u64, Span)> = spans(lines)
        .into_iter()
        .flat_map(|(i, spans)| spans.into_iter().map(move |s| (i, s)))
        .filter(|(_, s)| {
            s.alive_lines > 0
                && !s.ended
                && now_ms - s.to_ms <= 3 * ALIVE_EVERY_MS as i64
                && now_ms - s.from_ms <= half_run
        })
        .collect();
    out.sort_by_key(|(_, s)| std::cmp::Reverse(s.from_ms));
    out
}

/// How long the worker of the instance a `StopDuringFailover` stops stays paused
/// after the leader's SIGKILL: past the others' failover (about 1 s), short of
/// the worker timeout.
const SLOW_FAILOVER_MS: i64 = 2_000;

/// Kills leader `l`, stops `instance` through a surviving node as soon as one
/// accepts, then retries it: when each was accepted (`None`: refused, e.g. the
/// instance had ended).
async fn stop_and_retry(
    c: &mut TestCluster,
    l: u64,
    instance: Option<u64>,
) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    c.kill(l)?;
    let Some(id) = instance else {
        return Ok((None, None));
    };
    if !post_until_answered(c, &format!("/api/v1/instances/{id}/stop"), id, |s| s == "STOPPED").await? {
        return Ok((None, None));
    }
    let stopped_at = Some(epoch_ms());
    let retried = post_until_answered(c, &format!("/api/v1/instances/{id}/retry"), id, |s| s != "STOPPED").await?;
    Ok((stopped_at, retried.then(epoch_ms)))
}

/// POSTs `path` (no body) to the running nodes in turn until one answers it:
/// true if accepted (2xx), false if refused for good (409 or 404). A 409 after a
/// try whose answer was lost may mean that try committed: then instance `id`'s
/// status decides (`done`). Anything else (no leader yet, a forward to the dead
/// leader) is tried again, for up to 20 s.
async fn post_until_answered(
    c: &TestCluster,
    path: &str,
    id: u64,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<bool> {
    eventually(Duration::from_secs(20), path, || async {
        for node in c.running() {
            match c.send(node, reqwest::Method::POST, path, None::<&()>).await {
                Ok((200..=299, _)) => return Some(true),
                Ok((404 | 409, _)) => {
                    let now: InstanceView = c.get(node, &format!("/api/v1/instances/{id}")).await.ok()?;
                    return Some(done(&now.status));
                }
                _ => {}
            }
        }
        None
    })
    .await
}

/// How long one send of the retrying client waits for an answer: longer than a
/// follower tries to get a forwarded write answered (2 s), so it hears the 503.
const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the retrying client sends one write again before it gives up.
const CLIENT_GIVES_UP: Duration = Duration::from_secs(40);

/// What a write of the retrying client does. Its key also names it in the state
/// (the run's params, the new job's name), so the checker can count its effects
/// whether or not the key was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `POST /api/v1/jobs/{job}/run` with the key as its params.
    Run { job: u64 },
    /// `POST /api/v1/jobs`: an API-only job named after the key.
    CreateJob,
}

/// One write of the retrying client, and how it went.
#[derive(Debug, Clone)]
pub struct ClientWrite {
    pub key: String,
    pub kind: WriteKind,
    /// How many times it was sent (1: the first node answered).
    pub sends: u32,
    /// The answer (status, body); `None` if no node answered before the client gave up.
    pub answer: Option<(u16, serde_json::Value)>,
}

impl ClientWrite {
    fn new(key: String, kind: WriteKind) -> ClientWrite {
        ClientWrite {
            key,
            kind,
            sends: 0,
            answer: None,
        }
    }

    fn path_and_body(&self) -> (String, serde_json::Value) {
        match self.kind {
            WriteKind::Run { job } => (format!("/api/v1/jobs/{job}/run"), json!({"params": self.key})),
            WriteKind::CreateJob => (
                "/api/v1/jobs".to_owned(),
                json!({"app": "chaos", "name": self.key, "schedule": {"type": "api"},
                       "processor": {"type": "shell", "script": "true"}}),
            ),
        }
    }
}

/// The retrying client: sends `write` to `urls[first]` and, after any error,
/// timeout or 5xx, the same bytes to the next node in turn, until a node answers
/// or [`CLIENT_GIVES_UP`] has passed. Under its key if `with_key`; else each send
/// is a fresh request.
async fn send_until_answered(
    http: reqwest::Client,
    urls: Vec<String>,
    first: usize,
    mut write: ClientWrite,
    with_key: bool,
) -> ClientWrite {
    let (path, body) = write.path_and_body();
    let body = body.to_string();
    let deadline = std::time::Instant::now() + CLIENT_GIVES_UP;
    let mut node = first;
    loop {
        write.sends += 1;
        let mut req = http
            .post(format!("{}{path}", urls[node]))
            .timeout(CLIENT_SEND_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if with_key {
            req = req.header("Idempotency-Key", write.key.as_str());
        }
        if let Ok(r) = req.send().await {
            let status = r.status().as_u16();
            if status < 500 {
                if let Ok(text) = r.text().await {
                    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                    write.answer = Some((status, value));
                    return write;
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return write;
        }
        node = (node + 1) % urls.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many answers the test mode `--unsafe-test-hold-forward-answers` has held
/// back on server `id` so far (its log says so for each).
fn held_answers(c: &TestCluster, id: u64) -> usize {
    c.server(id)
        .ok()
        .and_then(|s| std::fs::read_to_string(&s.log_path).ok())
        .map_or(0, |log| log.matches("TEST: holding the answer").count())
}

/// The `RetryWritesDuringFailover` fault: a run-now and a job create through each
/// follower, the leader's SIGKILL (when it holds their answers, in the servers'
/// test mode that holds them; else after a seeded delay of up to 300 ms), one
/// more write through each follower during the election, and the killed leader
/// restarted. True if some write had to be sent more than once (else the fault
/// tested nothing).
async fn writes_during_failover(c: &mut TestCluster, x: &mut Injected) -> anyhow::Result<bool> {
    let l = c.wait_leader(Duration::from_secs(20)).await?;
    let ids: Vec<u64> = c.servers.keys().copied().collect();
    let urls: Vec<String> = c.servers.values().map(crate::Server::url).collect();
    let followers: Vec<usize> = (0..ids.len()).filter(|i| ids[*i] != l).collect();
    let http = reqwest::Client::new();
    let with_key = !x.retry_without_key;
    let client = |x: &mut Injected, kind: WriteKind, first: usize| {
        x.write_keys += 1;
        let write = ClientWrite::new(format!("client-write-{}", x.write_keys), kind);
        tokio::spawn(send_until_answered(http.clone(), urls.clone(), first, write, with_key))
    };
    let run = WriteKind::Run { job: x.burst_job };
    let held_before = held_answers(c, l);
    let mut sent = Vec::new();
    for f in &followers {
        sent.push(client(x, run, *f));
        sent.push(client(x, WriteKind::CreateJob, *f));
    }
    tokio::time::sleep(Duration::from_millis(x.rng.next_u64() % 300)).await;
    if x.holds_answers {
        // The leader has committed the first writes and holds their answers: the
        // SIGKILL loses them for sure.
        let c = &*c;
        let n = sent.len();
        // Without the hold the pair would depend on timing: fail the run instead.
        let held = eventually(
            Duration::from_secs(3),
            "the leader to hold the first answers",
            || async { (held_answers(c, l) >= held_before + n).then_some(()) },
        )
        .await;
        if let Err(e) = held {
            for task in &sent {
                task.abort();
            }
            return Err(e);
        }
    }
    x.kills.push(epoch_ms());
    c.kill(l)?;
    for (k, f) in followers.iter().enumerate() {
        sent.push(client(x, if k % 2 == 0 { run } else { WriteKind::CreateJob }, *f));
    }
    c.wait_leader(Duration::from_secs(20)).await?;
    c.restart(l)?;
    let mut retried = false;
    for task in sent {
        let w = task.await?;
        retried |= w.sends > 1;
        x.writes.push(w);
    }
    Ok(retried)
}

/// Invariant 4 (and 3, for writes) over the retrying client's writes: each key
/// had exactly one effect. A run key has one instance, the one its 201 named; a
/// create key one job, the one its 201 named; and no create was answered 409: its
/// name is its key's own, so only an earlier copy of the same write can have
/// taken it (the write acted twice: once made, once refused). A write that no
/// node answered may have had one effect or none. Adds to `report`.
pub fn check_writes(writes: &[ClientWrite], instances: &[InstanceView], jobs: &[JobView], report: &mut Report) {
    for w in writes {
        report.client_writes += 1;
        report.retried_writes += usize::from(w.sends > 1);
        let (effects, what): (Vec<u64>, &str) = match w.kind {
            WriteKind::Run { job } => (
                instances
                    .iter()
                    .filter(|i| i.job_id == job && i.params == w.key)
                    .map(|i| i.id)
                    .collect(),
                "instances",
            ),
            WriteKind::CreateJob => (
                jobs.iter().filter(|j| j.spec.name == w.key).map(|j| j.id).collect(),
                "jobs",
            ),
        };
        let said = format!("write {} ({:?}, sent {} times)", w.key, w.kind, w.sends);
        if effects.len() > 1 {
            report.duplicated_writes += effects.len() - 1;
            report
                .problems
                .push(format!("{said} made {} {what}: {effects:?}", effects.len()));
        }
        match &w.answer {
            None => {
                report.lost += 1;
                report.problems.push(format!("{said} got no answer from any node"));
            }
            Some((201, body)) => {
                let named = body["id"].as_u64();
                if !named.is_some_and(|id| effects.contains(&id)) {
                    report.lost += 1;
                    report.problems.push(format!(
                        "{said} was answered 201 with id {named:?}, but its {what} are {effects:?}"
                    ));
                }
            }
            Some((409, body)) if w.kind == WriteKind::CreateJob => {
                report.duplicated_writes += 1;
                report.problems.push(format!(
                    "{said} was answered 409 though the job {effects:?} is its own first copy's: {body}"
                ));
            }
            Some((status, body)) => report.problems.push(format!("{said} was refused {status}: {body}")),
        }
    }
}

/// Where a chaos run's processors get the time: milliseconds since the epoch.
pub const SCRIPT_CLOCK: &str = "$(date +%s%3N)";

/// The shell script of a journaled job: writes `instance attempt worker start ms`
/// to `journal`, then (if `ticks` > 0) an `alive` line at once and every 200 ms,
/// `ticks` in all, else sleeps 0.3 s; then `end`. `clock` is the shell
/// expression of the time in milliseconds.
pub fn journal_script(journal: &str, ticks: u32, clock: &str) -> String {
    let say =
        |event: &str| format!("echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID {event} {clock}\" >> {journal}");
    if ticks == 0 {
        format!("{}; sleep 0.3; {}", say("start"), say("end"))
    } else {
        format!(
            "{}; n=0; while [ $n -lt {ticks} ]; do {}; sleep {}; n=$((n+1)); done; {}",
            say("start"),
            say("alive"),
            ALIVE_EVERY_MS as f64 / 1000.0,
            say("end")
        )
    }
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
    outages: &[Outage],
    writes: &[ClientWrite],
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

    // 1. Every fire time of every fixed-rate job: exactly one instance, which ran
    //    or was skipped for an acceptable reason; most of them ran.
    let lines = read_journal(journal);
    let started: BTreeSet<u64> = lines
        .iter()
        .filter(|l| l.event == "start")
        .map(|l| l.instance)
        .collect();
    let mut fired = Vec::new();
    for job in &acked_jobs[..profile.jobs.min(acked_jobs.len())] {
        fired.push(c.get::<JobView>(leader, &format!("/api/v1/jobs/{job}")).await?);
    }
    check_fires(&fired, &expected_fires(t0, t_end), &all, &started, outages, report);

    // 3. The journal: no attempt twice, no overlapping attempts.
    let (doubled, problems) = check_journal(&lines);
    report.doubled += doubled;
    report.problems.extend(problems);

    // 4. (and 3. for writes) Every client write took effect once.
    if !writes.is_empty() {
        let jobs: JobList = c.get(leader, "/api/v1/jobs?app=chaos").await?;
        check_writes(writes, &all, &jobs.jobs, report);
    }

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
        for worker_fault in [
            Fault::FreezeWorkerTree,
            Fault::KillWorkerOnly,
            Fault::StopDuringFailover,
        ] {
            assert_eq!(a.iter().filter(|f| **f == worker_fault).count(), 1);
        }
        assert_eq!(a.iter().filter(|f| **f == Fault::RetryWritesDuringFailover).count(), 1);
        assert_eq!(a.len(), 19);
        let only = Profile::only(7, Fault::KillWorkerOnly, 3).schedule();
        assert_eq!(only, vec![Fault::KillWorkerOnly; 3]);
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

    #[test]
    fn a_killed_attempt_counts_until_its_last_alive_line() {
        // Attempt 1 was killed (no end) after its alive line at 2_600; attempt 2
        // started at 2_500 on the other worker: they ran at the same time.
        let overlap = [
            line(7, 1, "w1", "start", 0),
            line(7, 1, "w1", "alive", 0),
            line(7, 1, "w1", "alive", 200),
            line(7, 2, "w2", "start", 2_500),
            line(7, 2, "w2", "alive", 2_500),
            line(7, 1, "w1", "alive", 2_600),
            line(7, 2, "w2", "end", 6_000),
        ];
        let (n, p) = check_journal(&overlap);
        assert_eq!(n, 1, "{p:?}");
        assert!(
            p[0].contains("attempt 2 started at 2500 on w2 while attempt 1 ran until 2600 on w1"),
            "{p:?}"
        );
        assert!(p[0].contains("no end, killed"), "{p:?}");
        // The same killed attempt, its last line before the retry started: sequential.
        let sequential = [
            line(7, 1, "w1", "start", 0),
            line(7, 1, "w1", "alive", 0),
            line(7, 1, "w1", "alive", 200),
            line(7, 2, "w2", "start", 3_100),
            line(7, 2, "w2", "alive", 3_100),
            line(7, 2, "w2", "end", 7_000),
            line(7, 3, "w1", "start", 7_050),
            line(7, 3, "w1", "end", 7_350),
        ];
        assert_eq!(check_journal(&sequential), (0, vec![]));
    }

    #[test]
    fn an_old_attempt_that_runs_after_its_successor_is_an_overlap() {
        // A dispatch that sat in a frozen worker's socket runs attempt 1 after
        // attempt 2 already ended; and attempt 1 of instance 8 runs on past two
        // later attempts (every pair is checked, not only neighbours).
        let late = [
            line(7, 2, "w2", "start", 1_000),
            line(7, 2, "w2", "end", 1_300),
            line(7, 1, "w1", "start", 5_000),
            line(7, 1, "w1", "end", 5_300),
            line(8, 1, "w1", "start", 0),
            line(8, 2, "w2", "start", 100),
            line(8, 2, "w2", "end", 200),
            line(8, 3, "w2", "start", 300),
            line(8, 3, "w2", "end", 400),
            line(8, 1, "w1", "alive", 500),
        ];
        let (n, p) = check_journal(&late);
        assert_eq!(n, 3, "{p:?}");
        assert!(
            p.iter().any(|l| l.starts_with("instance 7: attempt 2 started at 1000")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|l| l.starts_with("instance 8: attempt 3 started at 300")),
            "{p:?}"
        );
    }

    #[test]
    fn long_running_finds_the_newest_long_attempt_still_alive() {
        let lines = [
            // Short: no alive line.
            line(1, 1, "w1", "start", 9_900),
            // Long, still alive, started last: the aim.
            line(2, 1, "w2", "start", 9_500),
            line(2, 1, "w2", "alive", 9_900),
            // Long, alive, older.
            line(3, 1, "w1", "start", 9_000),
            line(3, 1, "w1", "alive", 9_950),
            // Long but ended.
            line(4, 1, "w1", "start", 9_600),
            line(4, 1, "w1", "alive", 9_600),
            line(4, 1, "w1", "end", 9_700),
            // Long, silent for a second: killed or frozen.
            line(5, 1, "w1", "start", 8_900),
            line(5, 1, "w1", "alive", 9_000),
        ];
        let found: Vec<(u64, String)> = long_running(&lines, 10_000)
            .into_iter()
            .map(|(i, s)| (i, s.worker))
            .collect();
        assert_eq!(found, vec![(2, "w2".to_owned()), (3, "w1".to_owned())]);
    }

    #[test]
    fn the_journal_scripts_write_what_the_checker_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = dir.path().join("journal");
        let j = journal.display().to_string();
        for (attempt, ticks) in [(1, 0), (2, 3)] {
            let ok = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(journal_script(&j, ticks, SCRIPT_CLOCK))
                .env("QRON_INSTANCE_ID", "9")
                .env("QRON_ATTEMPT", attempt.to_string())
                .env("QRON_WORKER_ID", "w1")
                .status()
                .expect("sh runs");
            assert!(ok.success());
        }
        let lines = read_journal(&journal);
        let events: Vec<(u32, &str)> = lines.iter().map(|l| (l.attempt, l.event.as_str())).collect();
        assert_eq!(
            events,
            [
                (1, "start"),
                (1, "end"),
                (2, "start"),
                (2, "alive"),
                (2, "alive"),
                (2, "alive"),
                (2, "end")
            ]
        );
        let s = &spans(&lines)[&9];
        assert!(s
            .iter()
            .all(|s| s.ended && s.from_ms > 1_000_000_000_000 && s.to_ms >= s.from_ms));
        assert!(s[1].to_ms - s[1].from_ms >= 3 * ALIVE_EVERY_MS as i64, "{s:?}");
        assert_eq!(check_journal(&lines), (0, vec![]));
    }

    fn job_named(id: u64, name: &str) -> JobView {
        serde_json::from_value(json!({
            "id": id, "app": "chaos", "name": name, "schedule": {"type": "api"},
            "processor": {"type": "shell", "script": "true"},
            "created_at_ms": 0, "updated_at_ms": 0, "last_fire_ms": null
        }))
        .expect("a job view")
    }

    fn write(key: &str, kind: WriteKind, sends: u32, answer: Option<(u16, serde_json::Value)>) -> ClientWrite {
        ClientWrite {
            key: key.into(),
            kind,
            sends,
            answer,
        }
    }

    #[test]
    fn the_write_check_finds_writes_that_acted_twice() {
        let run = WriteKind::Run { job: 9 };
        let mut a = fired(50, 9, 0, "SUCCEEDED", "succeeded");
        a.params = "k1".into();
        let mut b = fired(51, 9, 0, "SUCCEEDED", "succeeded");
        b.params = "k3".into();
        let mut b2 = b.clone();
        b2.id = 52;
        let instances = [a, b, b2];
        let jobs = [job_named(7, "k2"), job_named(8, "k4")];
        // Retried under their keys: one effect each, answered with it.
        let clean = [
            write("k1", run, 3, Some((201, json!({"id": 50})))),
            write("k2", WriteKind::CreateJob, 2, Some((201, json!({"id": 7})))),
        ];
        let mut r = Report::default();
        check_writes(&clean, &instances, &jobs, &mut r);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.client_writes, r.retried_writes, r.duplicated_writes), (2, 2, 0));
        // Retried as fresh requests: a run made twice, a create refused by its own first copy.
        let twice = [
            write("k3", run, 2, Some((201, json!({"id": 52})))),
            write(
                "k4",
                WriteKind::CreateJob,
                2,
                Some((409, json!({"error": {"code": "conflict"}}))),
            ),
        ];
        let mut r = Report::default();
        check_writes(&twice, &instances, &jobs, &mut r);
        assert_eq!(r.duplicated_writes, 2, "{:?}", r.problems);
        assert!(r.problems[0].contains("made 2 instances: [51, 52]"), "{:?}", r.problems);
        assert!(r.problems[1].contains("answered 409"), "{:?}", r.problems);
        // Answered but not there, or never answered: lost.
        let lost = [
            write("k5", run, 1, Some((201, json!({"id": 99})))),
            write("k6", WriteKind::CreateJob, 9, None),
        ];
        let mut r = Report::default();
        check_writes(&lost, &instances, &jobs, &mut r);
        assert_eq!((r.lost, r.duplicated_writes), (2, 0), "{:?}", r.problems);
    }

    const T0: i64 = 1_000_000;
    const MISFIRE: &str = "skipped: misfire (FireOnce)";
    const MAX_INSTANCES: &str = "skipped: 1 instances active, max_instances is 1";

    /// The instance of `job`'s fire at `t`, with id `id`.
    fn fired(id: u64, job: u64, t: i64, status: &str, reason: &str) -> InstanceView {
        InstanceView {
            id,
            job_id: job,
            app: "chaos".into(),
            status: status.into(),
            attempt: u32::from(status != "CANCELED"),
            max_attempt: 4,
            worker: None,
            params: String::new(),
            created_at_ms: t,
            fire_time_ms: Some(t),
            assigned_at_ms: None,
            started_at_ms: None,
            finished_at_ms: Some(t + 300),
            result: String::new(),
            exit_code: None,
            reason: reason.into(),
        }
    }

    /// A synthetic run: jobs 1 and 2, ten fires each from `T0`; `outcome(job, k)`
    /// says how fire `k` ended: `None` = it ran, `Some(reason)` = skipped with it.
    fn history(outcome: impl Fn(u64, i64) -> Option<&'static str>) -> (Vec<i64>, Vec<InstanceView>, BTreeSet<u64>) {
        let expected = expected_fires(T0, T0 + 9_000);
        let (mut all, mut started) = (Vec::new(), BTreeSet::new());
        for job in [1, 2] {
            for (k, t) in expected.iter().enumerate() {
                let id = job * 100 + k as u64;
                match outcome(job, k as i64) {
                    None => {
                        all.push(fired(id, job, *t, "SUCCEEDED", "succeeded"));
                        started.insert(id);
                    }
                    Some(reason) => all.push(fired(id, job, *t, "CANCELED", reason)),
                }
            }
        }
        (expected, all, started)
    }

    fn check((expected, all, started): &(Vec<i64>, Vec<InstanceView>, BTreeSet<u64>), outages: &[Outage]) -> Report {
        check_with(&[view(1, None, 0), view(2, None, 0)], (expected, all, started), outages)
    }

    fn check_with(
        jobs: &[JobView],
        (expected, all, started): (&Vec<i64>, &Vec<InstanceView>, &BTreeSet<u64>),
        outages: &[Outage],
    ) -> Report {
        let mut r = Report::default();
        check_fires(jobs, expected, all, started, outages, &mut r);
        r
    }

    /// Job `id` as the API shows it, with its expiry record.
    fn view(id: u64, expired_through: Option<i64>, expired: u64) -> JobView {
        let mut v = job_named(id, &format!("rate-{id}"));
        v.expired_fires_through_ms = expired_through;
        v.expired_instances = expired;
        v
    }

    /// `h` with the instances of `job`'s first `n` fires removed, as retention does.
    fn expire_first(
        h: &(Vec<i64>, Vec<InstanceView>, BTreeSet<u64>),
        job: u64,
        n: usize,
    ) -> (Vec<i64>, Vec<InstanceView>, BTreeSet<u64>) {
        let cut: Vec<i64> = h.0.iter().take(n).copied().collect();
        let all =
            h.1.iter()
                .filter(|i| !(i.job_id == job && i.fire_time_ms.is_some_and(|t| cut.contains(&t))))
                .cloned()
                .collect();
        (h.0.clone(), all, h.2.clone())
    }

    #[test]
    fn fires_whose_instances_expired_are_accounted_not_lost() {
        let h = expire_first(&history(|_, _| None), 1, 4);
        let through = Some(h.0[3]);
        let r = check_with(&[view(1, through, 4), view(2, None, 0)], (&h.0, &h.1, &h.2), &[]);
        assert!(r.ok(), "{}", r.summary());
        assert_eq!((r.fires_checked, r.fires_ran, r.expired_fires, r.lost), (20, 16, 4, 0));
    }

    #[test]
    fn a_missing_fire_the_expiry_record_does_not_cover_is_lost() {
        let h = expire_first(&history(|_, _| None), 1, 4);
        // The job says its expired fires end at the third: the fourth is lost.
        let r = check_with(&[view(1, Some(h.0[2]), 4), view(2, None, 0)], (&h.0, &h.1, &h.2), &[]);
        assert_eq!((r.expired_fires, r.lost), (3, 1), "{}", r.summary());
        assert!(!r.ok());
        // The record covers all four, but the job expired only two instances: two are lost.
        let r = check_with(&[view(1, Some(h.0[3]), 2), view(2, None, 0)], (&h.0, &h.1, &h.2), &[]);
        assert_eq!((r.expired_fires, r.lost), (2, 2), "{}", r.summary());
        // Job 2 expired nothing: its missing fire is lost whatever job 1 says.
        let h2 = expire_first(&history(|_, _| None), 2, 1);
        let r = check_with(
            &[view(1, Some(h.0[9]), 10), view(2, None, 0)],
            (&h2.0, &h2.1, &h2.2),
            &[],
        );
        assert_eq!((r.expired_fires, r.lost), (0, 1), "{}", r.summary());
    }

    #[test]
    fn a_run_where_every_fire_ran_passes_the_fire_check() {
        let r = check(&history(|_, _| None), &[]);
        assert!(r.ok(), "{}", r.summary());
        assert_eq!(
            (r.fires_checked, r.fires_ran, r.skipped_fires, r.bad_skips),
            (20, 20, 0, 0)
        );
    }

    #[test]
    fn skips_during_a_full_outage_or_at_max_instances_are_accepted() {
        // Fires 3..=4 fell in an outage (misfires); job 2's fire 7 hit max_instances.
        let outage = Outage {
            from_ms: T0 + 3_000,
            to_ms: T0 + 9_500,
        };
        let h = history(|job, k| match (job, k) {
            (_, 3 | 4) => Some(MISFIRE),
            (2, 7) => Some(MAX_INSTANCES),
            _ => None,
        });
        let r = check(&h, &[outage]);
        assert!(r.ok(), "{}", r.summary());
        assert_eq!((r.fires_ran, r.skipped_fires, r.bad_skips), (15, 5, 0));
    }

    #[test]
    fn a_run_that_skips_every_fire_fails_even_with_acceptable_reasons() {
        // Every fire a misfire, all inside one long outage: each skip is excused,
        // but nothing ran, and that alone fails the run.
        let outage = Outage {
            from_ms: T0 - 5_000,
            to_ms: T0 + 60_000,
        };
        let r = check(&history(|_, _| Some(MISFIRE)), &[outage]);
        assert!(!r.ok(), "a run that ran nothing passed:\n{}", r.summary());
        assert_eq!(
            (r.fires_checked, r.fires_ran, r.skipped_fires, r.bad_skips),
            (20, 0, 20, 0)
        );
        assert!(
            r.problems.iter().any(|p| p.contains("only 0 of 20 fires ran")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn skips_without_an_acceptable_reason_fail_the_fire_check() {
        let outage = Outage {
            from_ms: T0 + 5_000,
            to_ms: T0 + 6_000,
        };
        // One misfire while a leader was up, one reason nobody accepts, one skip
        // without a reason: 16 of 20 ran (enough), so only the reasons fail it.
        let h = history(|job, k| match (job, k) {
            (1, 1) => Some(MISFIRE),
            (1, 5) => Some(MISFIRE), // inside the outage: fine
            (2, 2) => Some("skipped: the leader felt like it"),
            (2, 8) => Some("skipped"),
            _ => None,
        });
        let r = check(&h, &[outage]);
        assert!(!r.ok(), "bad skips passed:\n{}", r.summary());
        assert_eq!(
            (r.fires_ran, r.skipped_fires, r.bad_skips),
            (16, 4, 3),
            "{:?}",
            r.problems
        );
        let text = r.problems.join("\n");
        assert!(
            text.contains("t0+1000 ms (instance 101) was skipped: a misfire outside any full-cluster outage"),
            "{text}"
        );
        assert!(text.contains("an unacceptable skip reason"), "{text}");
        assert!(text.contains("a skip without a recorded reason"), "{text}");
    }

    #[test]
    fn every_fire_skipped_with_no_outage_is_a_violation_per_fire() {
        let r = check(&history(|_, _| Some(MISFIRE)), &[]);
        assert!(!r.ok());
        assert_eq!((r.fires_ran, r.bad_skips), (0, 20));
    }

    #[test]
    fn a_skipped_fire_that_ran_anyway_is_a_bad_skip() {
        let (expected, mut all, mut started) = history(|_, _| None);
        all[0] = fired(all[0].id, 1, T0, "CANCELED", MAX_INSTANCES);
        started.insert(all[0].id);
        let r = check(&(expected, all, started), &[]);
        assert_eq!(r.bad_skips, 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("recorded as skipped but ran"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn the_skip_verdict_accepts_only_the_two_reasons() {
        let o = [Outage {
            from_ms: 10_000,
            to_ms: 20_000,
        }];
        assert!(skip_verdict(MAX_INSTANCES, 0, &[]).is_ok());
        assert!(skip_verdict(MISFIRE, 9_000, &o).is_ok(), "due just before the outage");
        assert!(skip_verdict(MISFIRE, 20_000, &o).is_ok());
        assert!(skip_verdict(MISFIRE, 8_999, &o).is_err());
        assert!(skip_verdict(MISFIRE, 20_001, &o).is_err());
        assert!(skip_verdict(
            "skipped: misfire (Skip; 3 earlier misfires not recorded one by one)",
            15_000,
            &o
        )
        .is_ok());
        assert!(skip_verdict("canceled by an operator", 15_000, &o).is_err());
    }
}
