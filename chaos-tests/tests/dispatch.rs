//! Workers and dispatch on real processes: three servers, two `qron-worker`s.
//! Run-now success and failure with logs; a worker killed mid-run (its attempt
//! retried on the other worker, the late report of attempt 1 changing nothing);
//! the leader SIGKILLed with 50 instances in flight (all end, none run twice,
//! workers reconnect without restarting, logs survive); bad registrations and
//! malformed stream messages refused without harm; a follower that was down
//! while instances wrote megabytes of log catches up.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use qron_chaos_tests::{eventually, ClusterOptions, TestCluster};
use qron_proto::api::{InstanceList, InstanceLogView, InstanceView, JobView, WorkerList};
use qron_proto::worker::worker_service_client::WorkerServiceClient;
use qron_proto::worker::{server_message, worker_message, Register, StatusReport, WorkerMessage};
use serde_json::json;

const SECRET: &str = "s3cret";

fn options() -> ClusterOptions {
    ClusterOptions {
        server_args: ["--worker-timeout-ms", "1500", "--failover-grace-ms", "3000"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

/// Starts 3 servers and workers `w1`, `w2`; creates app `demo`. Returns the leader.
async fn cluster_with_workers(extra_worker_args: &[&str]) -> anyhow::Result<(TestCluster, u64)> {
    let mut c = TestCluster::start(3, options())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": SECRET}))
        .await?;
    c.spawn_worker("w1", "demo", SECRET, extra_worker_args)?;
    c.spawn_worker("w2", "demo", SECRET, extra_worker_args)?;
    wait_workers(&c, leader, 2).await?;
    Ok((c, leader))
}

async fn wait_workers(c: &TestCluster, node: u64, n: usize) -> anyhow::Result<WorkerList> {
    eventually(Duration::from_secs(20), "workers connected to the leader", || async {
        let l: WorkerList = c.get(node, "/api/v1/workers?app=demo").await.ok()?;
        (l.workers.iter().filter(|w| w.connected).count() == n).then_some(l)
    })
    .await
}

async fn create_job(
    c: &TestCluster,
    node: u64,
    name: &str,
    script: &str,
    extra: serde_json::Value,
) -> anyhow::Result<u64> {
    let mut spec = json!({
        "app": "demo", "name": name, "schedule": {"type": "api"},
        "processor": {"type": "shell", "script": script}
    });
    if let (Some(o), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    let job: JobView = serde_json::from_value(c.post_ok(node, "/api/v1/jobs", &spec).await?)?;
    Ok(job.id)
}

async fn run(c: &TestCluster, node: u64, job: u64) -> anyhow::Result<u64> {
    let inst: InstanceView =
        serde_json::from_value(c.post_ok(node, &format!("/api/v1/jobs/{job}/run"), &json!({})).await?)?;
    Ok(inst.id)
}

async fn wait_status(c: &TestCluster, id: u64, status: &str, timeout: Duration) -> anyhow::Result<InstanceView> {
    eventually(timeout, &format!("instance {id} {status}"), || async {
        for node in c.running() {
            if let Ok(i) = c.get::<InstanceView>(node, &format!("/api/v1/instances/{id}")).await {
                return (i.status == status).then_some(i);
            }
        }
        None
    })
    .await
}

async fn log_of(c: &TestCluster, node: u64, id: u64) -> anyhow::Result<String> {
    let l: InstanceLogView = c.get(node, &format!("/api/v1/instances/{id}/logs?offset=0")).await?;
    Ok(l.data)
}

/// Lines `instance attempt worker event` appended by the test scripts.
fn journal(path: &Path) -> Vec<(u64, u32, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(2)?.to_string(),
                f.get(3)?.to_string(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_succeeds_and_fails_with_logs_and_exit_code() -> anyhow::Result<()> {
    let (c, leader) = cluster_with_workers(&[]).await?;
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");

    let ok = create_job(
        &c,
        follower,
        "hello",
        "echo hello from $QRON_INSTANCE_ID; echo to-stderr >&2",
        json!({}),
    )
    .await?;
    let id = run(&c, follower, ok).await?;
    let done = wait_status(&c, id, "SUCCEEDED", Duration::from_secs(20)).await?;
    assert_eq!(done.attempt, 1);
    assert_eq!(done.exit_code, Some(0));
    assert!(done.worker.is_some());
    let log = log_of(&c, follower, id).await?;
    assert!(log.contains(&format!("hello from {id}")), "log: {log:?}");
    assert!(log.contains("to-stderr"), "log: {log:?}");

    let bad = create_job(&c, leader, "boom", "echo about to fail; exit 3", json!({})).await?;
    let id = run(&c, leader, bad).await?;
    let failed = wait_status(&c, id, "FAILED", Duration::from_secs(20)).await?;
    assert_eq!(failed.exit_code, Some(3), "{failed:?}");
    assert!(log_of(&c, leader, id).await?.contains("about to fail"));

    // Operator verbs: a finished instance cannot be canceled; it can be retried.
    let (status, body) = c
        .send::<()>(
            leader,
            reqwest::Method::POST,
            &format!("/api/v1/instances/{id}/cancel"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "{body}");
    let retried: InstanceView = serde_json::from_value(
        c.post_ok(leader, &format!("/api/v1/instances/{id}/retry"), &json!({}))
            .await?,
    )?;
    assert_eq!(retried.status, "WAITING_DISPATCH");
    let again = wait_status(&c, id, "FAILED", Duration::from_secs(20)).await?;
    assert_eq!(again.attempt, 2);
    let l: InstanceList = c
        .get(leader, &format!("/api/v1/instances?job={bad}&status=FAILED"))
        .await?;
    assert_eq!(l.instances.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_mid_run_is_retried_on_the_other_and_its_late_report_changes_nothing() -> anyhow::Result<()> {
    let (mut c, leader) = cluster_with_workers(&[]).await?;
    let journal_path = c.dir().join("journal-kill-worker");
    let script = format!(
        "echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID start\" >> {j}; sleep 2; \
         echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID end\" >> {j}",
        j = journal_path.display()
    );
    let job = create_job(&c, leader, "slow", &script, json!({"instance_retries": 1})).await?;
    let id = run(&c, leader, job).await?;
    let running = wait_status(&c, id, "RUNNING", Duration::from_secs(20)).await?;
    let first = running.worker.clone().expect("a worker");
    c.kill_worker(&first)?;

    let done = wait_status(&c, id, "SUCCEEDED", Duration::from_secs(30)).await?;
    assert_eq!(done.attempt, 2, "{done:?}");
    let second = done.worker.clone().expect("a worker");
    assert_ne!(second, first);
    let j = journal(&journal_path);
    assert!(j.contains(&(id, 1, first.clone(), "start".into())), "{j:?}");
    assert!(
        !j.contains(&(id, 1, first.clone(), "end".into())),
        "killed attempt must not finish: {j:?}"
    );
    assert!(j.contains(&(id, 2, second.clone(), "end".into())), "{j:?}");

    // Attempt 1's late report, sent by a worker posing as the dead one, changes nothing.
    let before = c.wait_converged(Duration::from_secs(10)).await?;
    let leader = c.wait_leader(Duration::from_secs(5)).await?;
    let grpc = c.server(leader)?.grpc.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(register(&first, SECRET)).await?;
    tx.send(WorkerMessage {
        msg: Some(worker_message::Msg::Status(StatusReport {
            seq: 1,
            instance_id: id,
            attempt: 1,
            status: qron_proto::worker::InstanceStatus::Failed as i32,
            result: "late".into(),
            at_ms: 1,
            exit_code: Some(9),
        })),
    })
    .await?;
    let mut client = worker_client(&grpc).await?;
    let mut inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(m)) = inbound.message().await {
            if matches!(m.msg, Some(server_message::Msg::Ack(a)) if a.seq == 1) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(acked.ok(), Some(true), "late report was not acknowledged");
    let after: InstanceView = c.get(leader, &format!("/api/v1/instances/{id}")).await?;
    assert_eq!(after.status, "SUCCEEDED");
    assert_eq!(after.attempt, 2);
    assert_eq!(after.exit_code, done.exit_code);
    let d = c.wait_converged(Duration::from_secs(10)).await?;
    assert_eq!(d.digest, before.digest, "the late report changed the replicated state");
    drop(tx);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_with_50_instances_in_flight_loses_nothing_and_runs_nothing_twice() -> anyhow::Result<()> {
    let (mut c, leader) = cluster_with_workers(&["--max-concurrency", "64"]).await?;
    let journal_path = c.dir().join("journal-leader-kill");
    let script = format!(
        "echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID start\" >> {j}; echo before-kill-$QRON_INSTANCE_ID; \
         sleep 3; echo after-$QRON_INSTANCE_ID; echo \"$QRON_INSTANCE_ID $QRON_ATTEMPT $QRON_WORKER_ID end\" >> {j}",
        j = journal_path.display()
    );
    let job = create_job(&c, leader, "fleet", &script, json!({"instance_retries": 2})).await?;
    let pids: HashMap<String, Option<u32>> = c.workers.iter().map(|(n, w)| (n.clone(), w.pid())).collect();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(run(&c, leader, job).await?);
    }
    // In flight: every instance started, and its first output replicated.
    eventually(Duration::from_secs(30), "50 instances running with output", || async {
        let l: InstanceList = c
            .get(leader, &format!("/api/v1/instances?job={job}&status=RUNNING&limit=100"))
            .await
            .ok()?;
        if l.instances.len() < 50 {
            return None;
        }
        for id in &ids {
            if !log_of(&c, leader, *id)
                .await
                .ok()?
                .contains(&format!("before-kill-{id}"))
            {
                return None;
            }
        }
        Some(())
    })
    .await?;

    let killed = Instant::now();
    c.kill(leader)?;
    let new_leader = c.wait_leader(Duration::from_secs(5)).await?;
    wait_workers(&c, new_leader, 2).await?;
    eprintln!("workers reconnected {:?} after the leader kill", killed.elapsed());

    // Every instance reaches a terminal state.
    let finals: BTreeMap<u64, InstanceView> =
        eventually(Duration::from_secs(60), "all 50 instances terminal", || async {
            let l: InstanceList = c
                .get(new_leader, &format!("/api/v1/instances?job={job}&limit=100"))
                .await
                .ok()?;
            let done: BTreeMap<u64, InstanceView> = l
                .instances
                .into_iter()
                .filter(|i| ["SUCCEEDED", "FAILED", "STOPPED", "CANCELED"].contains(&i.status.as_str()))
                .map(|i| (i.id, i))
                .collect();
            (done.len() == 50).then_some(done)
        })
        .await?;
    let succeeded = finals.values().filter(|i| i.status == "SUCCEEDED").count();
    assert_eq!(
        succeeded,
        50,
        "all should succeed: {:?}",
        finals.values().filter(|i| i.status != "SUCCEEDED").collect::<Vec<_>>()
    );

    // No (instance, attempt) started twice.
    let mut starts: HashMap<(u64, u32), u32> = HashMap::new();
    for (id, attempt, _, event) in journal(&journal_path) {
        if event == "start" {
            *starts.entry((id, attempt)).or_default() += 1;
        }
    }
    let doubled: Vec<_> = starts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "executed twice: {doubled:?}");
    for id in &ids {
        assert!(starts.keys().any(|(i, _)| i == id), "instance {id} never started");
    }

    // The workers never restarted.
    for (name, pid) in pids {
        let w = c.worker(&name)?;
        assert!(w.alive(), "worker {name} died");
        assert_eq!(w.pid(), pid, "worker {name} restarted");
    }
    // Logs written before the kill are still there, and the rest arrived.
    for id in &ids {
        let log = log_of(&c, new_leader, *id).await?;
        assert!(log.contains(&format!("before-kill-{id}")), "{id}: {log:?}");
        assert!(log.contains(&format!("after-{id}")), "{id}: {log:?}");
    }
    Ok(())
}

fn register(worker_id: &str, secret: &str) -> WorkerMessage {
    WorkerMessage {
        msg: Some(worker_message::Msg::Register(Register {
            app: "demo".into(),
            secret: secret.into(),
            worker_id: worker_id.into(),
            max_concurrency: 1,
            ..Register::default()
        })),
    }
}

async fn worker_client(grpc: &str) -> anyhow::Result<WorkerServiceClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    Ok(WorkerServiceClient::new(ch))
}

/// Opens a stream, sends `msgs`, and returns the first server message (or the stream's error).
async fn first_answer(
    grpc: &str,
    msgs: Vec<WorkerMessage>,
) -> anyhow::Result<Result<Option<server_message::Msg>, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for m in msgs {
        tx.send(m).await?;
    }
    let mut client = worker_client(grpc).await?;
    let mut inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let r = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await?;
    drop(tx);
    Ok(r.map(|m| m.and_then(|m| m.msg)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_and_malformed_messages_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, options())?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "demo", "secret": SECRET}))
        .await?;
    let before = c.wait_converged(Duration::from_secs(5)).await?;

    // The real worker binary: a wrong secret ends it with a clear message.
    c.spawn_worker("bad-secret", "demo", "wrong", &[])?;
    c.spawn_worker("bad-app", "nope", SECRET, &[])?;
    let w = c.worker("bad-secret")?;
    let st = w.wait_exit(Duration::from_secs(20))?;
    assert!(!st.success(), "a wrong secret should end the worker with an error");
    let log = std::fs::read_to_string(&w.log_path)?;
    assert!(log.contains("wrong secret"), "{log}");
    // An unknown app is retried with a warning (in compose or Kubernetes the app may
    // be created a moment later): the worker registers once it exists.
    let log_path = c.worker("bad-app")?.log_path.clone();
    eventually(Duration::from_secs(20), "the unknown-app warning", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move { log.contains("unknown app").then_some(()) }
    })
    .await?;
    assert!(c.worker("bad-app")?.alive(), "an unknown app must not end the worker");

    let grpc = c.server(leader)?.grpc.clone();
    // A stream whose first message is not Register.
    let r = first_answer(
        &grpc,
        vec![WorkerMessage {
            msg: Some(worker_message::Msg::Ping(Default::default())),
        }],
    )
    .await?;
    assert!(
        matches!(r, Ok(Some(server_message::Msg::Refused(ref f))) if f.reason.contains("Register")),
        "{r:?}"
    );
    // A registered stream that then sends an empty message: refused with
    // InvalidArgument naming the problem, which ends the stream. Our side stays
    // open (`tx` lives until the answer), so the end is the server's doing.
    let refusal = {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(register("raw", SECRET)).await?;
        tx.send(WorkerMessage { msg: None }).await?;
        let mut client = worker_client(&grpc).await?;
        let mut inbound = client
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            let mut seen = Vec::new();
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => seen.push(m.msg), // Registered
                    Ok(None) => break Err(format!("the stream closed without an error after {seen:?}")),
                    Err(status) => break Ok(status),
                }
            }
        })
        .await;
        drop(tx);
        end
    };
    let status = match refusal {
        Ok(Ok(status)) => status,
        Ok(Err(no_refusal)) => panic!("an empty message was not refused: {no_refusal}"),
        Err(_) => panic!("an empty message was not refused: the stream stayed open for 10 s"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("empty or unknown worker message"),
        "the refusal does not name the problem: {status:?}"
    );
    // A follower answers NotLeader with the leader's address.
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    let fgrpc = c.server(follower)?.grpc.clone();
    let r = first_answer(&fgrpc, vec![register("x", SECRET)]).await?;
    match r {
        Ok(Some(server_message::Msg::NotLeader(n))) => {
            assert!(n.has_leader);
            assert_eq!(n.leader_grpc, grpc);
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // Every node still answers and nothing changed.
    for id in c.running() {
        assert!(c.cluster_view(id).await.is_some(), "node {id} is down");
    }
    let after = c.wait_converged(Duration::from_secs(5)).await?;
    assert_eq!(before.digest, after.digest);

    // The app the waiting worker asked for appears: it registers without a restart.
    assert!(c.worker("bad-app")?.alive(), "an unknown app must not end the worker");
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "nope", "secret": SECRET}))
        .await?;
    eventually(
        Duration::from_secs(20),
        "bad-app registered once its app exists",
        || {
            let c = &c;
            async move {
                let l: WorkerList = c.get(leader, "/api/v1/workers?app=nope").await.ok()?;
                l.workers.iter().any(|w| w.worker_id == "bad-app").then_some(())
            }
        },
    )
    .await?;
    Ok(())
}

/// Entries are batches, and openraft bounds an AppendEntries by its count of
/// entries only: after heavy log output a lagging follower was sent more than
/// a gRPC message holds, in a call that could not finish within its time to
/// live, again and again, and never caught up (issue 10). The network now
/// splits an AppendEntries past 1 MiB and the report batches stay small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_during_heavy_log_output_catches_up() -> anyhow::Result<()> {
    let (mut c, leader) = cluster_with_workers(&[]).await?;
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    c.kill(follower)?;
    // 2 x 10 MB of output, in 1,000-byte lines, while the follower is down.
    let job = create_job(
        &c,
        leader,
        "loud",
        "head -c 10000000 /dev/zero | tr '\\0' x | fold -w 999",
        json!({}),
    )
    .await?;
    let a = run(&c, leader, job).await?;
    let b = run(&c, leader, job).await?;
    for id in [a, b] {
        let i = wait_status(&c, id, "SUCCEEDED", Duration::from_secs(120)).await;
        if let Err(e) = i {
            panic!("{e}\n{}", c.log_tails(30));
        }
    }
    c.restart(follower)?;
    let converged = c.wait_converged(Duration::from_secs(60)).await;
    assert!(
        converged.is_ok(),
        "the follower caught up after the heavy output: {converged:?}\n{}",
        c.log_tails(30)
    );
    // And it serves the log as the leader does.
    let path = format!("/api/v1/instances/{a}/logs?offset=0&stale=true");
    let theirs: InstanceLogView = c.get(follower, &path).await?;
    let ours: InstanceLogView = c.get(leader, &path).await?;
    assert!(
        !ours.data.is_empty() && theirs == ours,
        "the follower serves the leader's log"
    );
    Ok(())
}
