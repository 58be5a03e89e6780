//! Property tests of rule 1 (apply is pure and deterministic), rule 9/10
//! (snapshot → restore → continue equals never snapshotting), "a refused
//! command changes nothing", and rule 13's idempotency keys (a retried keyed
//! command changes nothing and answers the first reply).

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use proptest::prelude::*;
use qron_proto::api::JobSpec;
use qron_raft_store::idempotency::KEY_TTL_MS;
use qron_raft_store::{
    Attempt, Command, CommandError, Entry, InstanceId, InstanceStatus, JobId, Response, State, WorkerId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APPS: [&str; 4] = ["a", "b", "c", ""];
const JOBS: [&str; 4] = ["j1", "j2", "j3", "x/y"];
const SCHEDULES: [&str; 6] = [
    r#"{"type":"api"}"#,
    r#"{"type":"cron","expression":"*/5 * * * * *","time_zone":"Asia/Tokyo"}"#,
    r#"{"type":"cron","expression":"99 * * * * *"}"#,
    r#"{"type":"fixed_rate","interval_ms":1000}"#,
    r#"{"type":"fixed_rate","interval_ms":5}"#,
    r#"{"type":"fixed_delay","delay_ms":250}"#,
];

fn spec(app: usize, job: usize, schedule: usize, params: u8) -> JobSpec {
    serde_json::from_str(&format!(
        r#"{{"app":"{}","name":"{}","schedule":{},"params":"p{}",
            "processor":{{"type":"shell","script":"echo {}"}}}}"#,
        APPS[app], JOBS[job], SCHEDULES[schedule], params, params
    ))
    .expect("generated spec parses")
}

const STATUSES: [InstanceStatus; 4] = [
    InstanceStatus::Running,
    InstanceStatus::Succeeded,
    InstanceStatus::Failed,
    InstanceStatus::Stopped,
];

/// Commands about instances: run, assign, report, logs, loss, operator verbs.
fn attempt() -> impl Strategy<Value = Attempt> {
    (0u32..4).prop_map(Attempt)
}

fn instance_command() -> impl Strategy<Value = Command> {
    let now = 0i64..2_000_000_000_000;
    let inst = (1u64..6).prop_map(InstanceId);
    prop_oneof![
        (1u64..5, now.clone()).prop_map(|(j, now_ms)| Command::RunJob {
            job: JobId(j),
            params: "p".into(),
            now_ms
        }),
        (
            inst.clone(),
            attempt(),
            prop_oneof![Just("w1"), Just("w2")],
            now.clone()
        )
            .prop_map(|(instance, attempt, w, now_ms)| Command::Assign {
                instance,
                attempt,
                worker: WorkerId::new(w),
                incarnation: String::new(),
                now_ms
            }),
        (inst.clone(), attempt(), 0..STATUSES.len(), any::<u8>(), now.clone()).prop_map(
            |(instance, attempt, s, code, now_ms)| Command::Report {
                instance,
                attempt,
                status: STATUSES[s],
                result: format!("r{code}"),
                exit_code: Some(i32::from(code)),
                at_ms: now_ms - 5,
                now_ms
            }
        ),
        (inst.clone(), attempt(), 0u64..20, "[a-zé]{0,12}").prop_map(|(instance, attempt, offset, data)| {
            Command::AppendLog {
                instance,
                attempt,
                offset,
                data,
                cap: 40,
            }
        }),
        (inst.clone(), attempt(), now.clone()).prop_map(|(instance, attempt, now_ms)| Command::WorkerLost {
            instance,
            attempt,
            reason: "gone".into(),
            now_ms
        }),
        (inst.clone(), attempt(), now.clone()).prop_map(|(instance, attempt, now_ms)| Command::Release {
            instance,
            attempt,
            reason: "shutting down".into(),
            now_ms
        }),
        (inst.clone(), now.clone()).prop_map(|(instance, now_ms)| Command::FailInstance {
            instance,
            reason: "no worker".into(),
            now_ms
        }),
        (inst.clone(), now.clone()).prop_map(|(instance, now_ms)| Command::StopInstance { instance, now_ms }),
        (inst.clone(), now.clone()).prop_map(|(instance, now_ms)| Command::CancelInstance { instance, now_ms }),
        (inst, now.clone()).prop_map(|(instance, now_ms)| Command::RetryInstance { instance, now_ms }),
        (1u64..5, 0i64..20, now.clone(), any::<bool>()).prop_map(|(j, t, now_ms, skip)| Command::Fire {
            job: JobId(j),
            fire_time_ms: t * 1_000,
            now_ms,
            skip: skip.then(|| "misfire".to_owned()),
        }),
        (1u64..5, 0i64..20, now.clone(), prop_oneof![Just("w1"), Just("w2")]).prop_map(|(j, t, now_ms, w)| {
            Command::FireAssign {
                job: JobId(j),
                fire_time_ms: t * 1_000,
                now_ms,
                worker: WorkerId::new(w),
                incarnation: "inc".to_owned(),
            }
        }),
        // The leader's retention proposes any ids: apply removes only what is safe.
        (
            prop::collection::vec((1u64..6).prop_map(InstanceId), 0..4),
            prop::collection::vec((1u64..6).prop_map(InstanceId), 0..3),
            now
        )
            .prop_map(|(instances, logs, now_ms)| Command::Expire {
                instances,
                logs,
                now_ms
            }),
    ]
}

/// Any command without an idempotency key.
fn plain_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => base_command(),
        6 => instance_command(),
        1 => prop::collection::vec(prop_oneof![base_command(), instance_command()], 0..5)
            .prop_map(|commands| Command::Batch { commands }),
    ]
}

/// Any command, some under an idempotency key: few keys and digests, so that
/// keys are reused, retried, refused (the empty key) and expire (`now_ms`
/// spans two key lifetimes).
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        9 => plain_command(),
        2 => (
            prop_oneof![Just("k0"), Just("k1"), Just("k2"), Just("")],
            prop_oneof![Just("d0"), Just("d1")],
            0i64..2 * KEY_TTL_MS,
            plain_command(),
        )
            .prop_map(|(key, digest, now_ms, c)| keyed(key, digest, now_ms, c)),
    ]
}

fn keyed(key: &str, digest: &str, now_ms: i64, command: Command) -> Command {
    Command::Keyed {
        key: key.to_owned(),
        request_digest: digest.to_owned(),
        now_ms,
        command: Box::new(command),
    }
}

/// The command a keyed command carries, or the command itself.
fn unkeyed(c: &Command) -> &Command {
    match c {
        Command::Keyed { command, .. } => command.as_ref(),
        c => c,
    }
}

/// Whether `c`, or a command of its batch, is one `pred` matches.
fn carries(c: &Command, pred: impl Fn(&Command) -> bool) -> bool {
    match unkeyed(c) {
        Command::Batch { commands } => commands.iter().any(|c| pred(unkeyed(c))),
        c => pred(c),
    }
}

/// A retry (or a misuse) of a keyed command of the original sequence, placed
/// after it.
#[derive(Debug, Clone)]
struct Retry {
    /// Picks the keyed command retried.
    of: prop::sample::Index,
    /// Picks where after it the retry lands.
    at: prop::sample::Index,
    /// Whether the request is the same (a retry) or another one (key reused).
    same_request: bool,
    /// How long after the first the retry is proposed, within the key's life.
    after_ms: i64,
    /// What the retry's entry carries: proposed afresh, so anything.
    command: Command,
}

/// A sequence of commands, some under keys of their own (one key per client
/// request, each proposed 1 s after the previous), and retries of them.
fn with_retries() -> impl Strategy<Value = (Vec<Command>, Vec<Retry>)> {
    let original = prop::collection::vec((any::<bool>(), plain_command()), 1..40).prop_map(|cmds| {
        cmds.into_iter()
            .enumerate()
            .map(|(i, (is_keyed, c))| {
                if is_keyed {
                    keyed(&format!("k{i}"), &format!("d{i}"), T0 + i as i64 * 1_000, c)
                } else {
                    c
                }
            })
            .collect::<Vec<_>>()
    });
    let retry = (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        prop::bool::weighted(0.8),
        0..KEY_TTL_MS,
        plain_command(),
    )
        .prop_map(|(of, at, same_request, after_ms, command)| Retry {
            of,
            at,
            same_request,
            after_ms,
            command,
        });
    (original, prop::collection::vec(retry, 0..20))
}

/// When the generated client requests start.
const T0: i64 = 1_700_000_000_000;

fn base_command() -> impl Strategy<Value = Command> {
    let now = 0i64..2_000_000_000_000;
    prop_oneof![
        (0..APPS.len(), prop_oneof![Just(""), Just("s3cret")], now.clone()).prop_map(|(a, secret, now_ms)| {
            Command::CreateApp {
                name: APPS[a].to_owned(),
                secret: secret.to_owned(),
                now_ms,
            }
        }),
        (
            0..APPS.len(),
            0..JOBS.len(),
            0..SCHEDULES.len(),
            any::<u8>(),
            now.clone()
        )
            .prop_map(|(a, j, s, p, now_ms)| Command::CreateJob {
                spec: spec(a, j, s, p),
                now_ms
            }),
        (
            1u64..8,
            0..APPS.len(),
            0..JOBS.len(),
            0..SCHEDULES.len(),
            any::<u8>(),
            now.clone()
        )
            .prop_map(|(id, a, j, s, p, now_ms)| Command::UpdateJob {
                id: JobId(id),
                spec: spec(a, j, s, p),
                now_ms
            }),
        (1u64..8).prop_map(|id| Command::DeleteJob { id: JobId(id) }),
        (
            0..APPS.len(),
            prop::option::of(prop_oneof![Just(0u64), Just(1_000u64), Just(60_000u64)]),
            prop::option::of(prop_oneof![Just(0u64), Just(1u64), Just(3u64)])
        )
            .prop_map(|(a, max_age_ms, max_count)| Command::SetAppRetention {
                app: APPS[a].to_owned(),
                retention: qron_proto::api::Retention { max_age_ms, max_count },
            }),
        (
            prop::option::of(prop_oneof![Just(0u64), Just(5_000u64)]),
            prop::option::of(prop_oneof![Just(0u64), Just(2u64)]),
            prop::option::of(prop_oneof![Just(10u64), Just(1u64 << 20)])
        )
            .prop_map(|(max_age_ms, max_count, max_log_bytes)| Command::SetClusterRetention {
                max_age_ms,
                max_count,
                max_log_bytes
            }),
        (1u64..8, any::<bool>(), now).prop_map(|(id, enabled, now_ms)| Command::SetJobEnabled {
            id: JobId(id),
            enabled,
            now_ms
        }),
    ]
}

/// Commands that end in one the state machine must refuse whatever state it is
/// in: the second of two identical creations or deletions, a cancel right after
/// a stop of the same instance (gone, or now terminal), a retry right after a
/// retry (the first put it back to waiting, or was refused for a reason the
/// second meets too), an assign of attempt 0 (attempts start at 1). The first
/// command may or may not be refused; the last always is, on a path that
/// depends on the state the prefix built.
fn refused_tail() -> impl Strategy<Value = Vec<Command>> {
    let now = 0i64..2_000_000_000_000;
    let inst = (1u64..6).prop_map(InstanceId);
    let twice = |c: Command| vec![c.clone(), c];
    prop_oneof![
        (0..APPS.len(), prop_oneof![Just(""), Just("s3cret")], now.clone()).prop_map(move |(a, secret, now_ms)| {
            twice(Command::CreateApp {
                name: APPS[a].to_owned(),
                secret: secret.to_owned(),
                now_ms,
            })
        }),
        (
            0..APPS.len(),
            0..JOBS.len(),
            0..SCHEDULES.len(),
            any::<u8>(),
            now.clone()
        )
            .prop_map(move |(a, j, s, p, now_ms)| twice(Command::CreateJob {
                spec: spec(a, j, s, p),
                now_ms
            })),
        (1u64..8).prop_map(move |id| twice(Command::DeleteJob { id: JobId(id) })),
        (inst.clone(), now.clone()).prop_map(|(instance, now_ms)| vec![
            Command::StopInstance { instance, now_ms },
            Command::CancelInstance { instance, now_ms },
        ]),
        (inst.clone(), now.clone())
            .prop_map(move |(instance, now_ms)| twice(Command::RetryInstance { instance, now_ms })),
        (inst, prop_oneof![Just("w1"), Just("w2")], now).prop_map(|(instance, w, now_ms)| vec![Command::Assign {
            instance,
            attempt: Attempt(0),
            worker: WorkerId::new(w),
            incarnation: String::new(),
            now_ms
        }]),
    ]
}

/// A command sequence with at least one refused command in it by construction:
/// random commands (which are refused often, for many reasons) around a
/// [`refused_tail`] at a random place.
fn commands_with_a_refusal() -> impl Strategy<Value = Vec<Command>> {
    (
        prop::collection::vec(command(), 0..50),
        refused_tail(),
        prop::collection::vec(command(), 0..10),
    )
        .prop_map(|(mut cmds, tail, rest)| {
            cmds.extend(tail);
            cmds.extend(rest);
            cmds
        })
}

fn entries(cmds: &[Command], first_index: u64) -> Vec<Entry> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), first_index + i as u64),
            payload: EntryPayload::Normal(c.clone()),
        })
        .collect()
}

/// Every instance held, by id.
fn all_instances(s: &State) -> Vec<qron_raft_store::Instance> {
    let mut out = Vec::new();
    s.instances_from(InstanceId(0), false, |i| {
        out.push(i);
        true
    });
    out
}

/// Every record but openraft's bookkeeping (table 0), which differs between
/// a state applied in memory and one applied through the state machine.
fn data_records(s: &State) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.all_records()
        .into_iter()
        .filter(|(k, _)| k.first() != Some(&0))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #[test]
    fn same_commands_same_state_and_responses(cmds in prop::collection::vec(command(), 0..60)) {
        let (mut s1, mut s2) = (State::default(), State::default());
        let r1: Vec<Response> = cmds.iter().map(|c| s1.apply(c)).collect();
        let r2: Vec<Response> = cmds.iter().map(|c| s2.apply(c)).collect();
        prop_assert_eq!(r1, r2);
        prop_assert_eq!(s1.canonical_bytes(), s2.canonical_bytes());
        prop_assert_eq!(s1.digest(), s2.digest());
        prop_assert_eq!(s1, s2);
    }

    #[test]
    fn a_refused_command_changes_nothing(cmds in commands_with_a_refusal()) {
        let mut s = State::default();
        let mut refused = 0;
        for c in &cmds {
            let before = s.clone();
            let response = s.apply(c);
            if let Err(e) = &response.0 {
                refused += 1;
                // The one exception: a keyed command that recorded its key records it
                // with the refusal (and may prune expired keys); nothing else changes.
                if let Command::Keyed { key, now_ms, .. } = c {
                    let live = |st: &State| st.key_record(key).filter(|r| *now_ms < r.expires_at_ms);
                    if live(&before) != live(&s) {
                        let rec = live(&s).expect("a changed record is live");
                        prop_assert_eq!(&rec.response, &Err(e.clone()));
                        // The key records aside, nothing changed.
                        prop_assert_eq!(before.canonical_bytes(), s.canonical_bytes(), "refused {:?} changed the state", c);
                        continue;
                    }
                }
                prop_assert_eq!(&before, &s, "refused {:?} changed the state", c);
            }
        }
        // Not an assumption: the generator puts a refusal in every case, and this
        // says so if it ever stops doing it.
        prop_assert!(refused > 0, "the generator made a case without a refusal: {:?}", cmds);
    }

    #[test]
    fn snapshot_restore_continue_equals_straight_apply(
        cmds in prop::collection::vec(command(), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(cmds.len() + 1);
        // Straight through, in memory.
        let mut straight = State::default();
        let straight_resp: Vec<Response> = cmds.iter().map(|c| straight.apply(c)).collect();

        // Through the real stores: apply a prefix, build a snapshot, ship it to a fresh
        // store, install it, then apply the rest there.
        let rt = runtime();
        let (resumed, resumed_resp) = rt.block_on(async {
            let d1 = tempfile::TempDir::new().expect("tmp");
            let d2 = tempfile::TempDir::new().expect("tmp");
            let (_l1, mut sm1) = qron_raft_store::open(d1.path()).expect("open 1");
            let (_l2, mut sm2) = qron_raft_store::open(d2.path()).expect("open 2");
            let all = entries(&cmds, 1);
            let mut resp = sm1.apply(all[..cut].to_vec()).await.expect("apply prefix");
            let snap = sm1.get_snapshot_builder().await.build_snapshot().await.expect("build");
            let mut bytes = Vec::new();
            let mut src = snap.snapshot;
            src.read_to_end(&mut bytes).await.expect("read snapshot");
            let mut dst = sm2.begin_receiving_snapshot().await.expect("begin");
            dst.write_all(&bytes).await.expect("write snapshot");
            sm2.install_snapshot(&snap.meta, dst).await.expect("install");
            resp.extend(sm2.apply(all[cut..].to_vec()).await.expect("apply rest"));
            let state = data_records(&sm2.shared().read());
            (state, resp)
        });
        prop_assert_eq!(straight_resp, resumed_resp);
        // Every record but openraft's bookkeeping: the digest's and the
        // idempotency keys (outside the digest, carried by the snapshot all the same).
        prop_assert_eq!(data_records(&straight), resumed);
    }

    #[test]
    fn restart_from_snapshot_keeps_state(cmds in prop::collection::vec(command(), 1..30)) {
        let rt = runtime();
        let dir = tempfile::TempDir::new().expect("tmp");
        let before = rt.block_on(async {
            let (_log, mut sm) = qron_raft_store::open(dir.path()).expect("open");
            sm.apply(entries(&cmds, 1)).await.expect("apply");
            sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
            let s = sm.shared().read().all_records();
            s
        });
        let after = {
            let (_log, sm) = qron_raft_store::open(dir.path()).expect("reopen");
            let s = sm.shared().read().all_records();
            s
        };
        // Bookkeeping included: the same bytes after the restart, with no replay.
        prop_assert_eq!(before, after);
    }
}

proptest! {
    /// Invariants that hold after any sequence: the active index is exactly the
    /// non-terminal instances; an instance's attempt never passes its budget; a
    /// terminal instance only leaves its status through an operator's retry.
    #[test]
    fn instance_invariants_hold(cmds in prop::collection::vec(command(), 0..80)) {
        let mut s = State::default();
        for c in &cmds {
            let before: Vec<(InstanceId, InstanceStatus, bool)> =
                all_instances(&s).iter().map(|i| (i.id, i.status, s.expirable(i))).collect();
            s.apply(c);
            for (id, was, expirable) in before {
                let Some(now) = s.instance_opt(id).map(|i| i.status) else {
                    // Only retention removes an instance, and only an expirable one.
                    prop_assert!(carries(c, |c| matches!(c, Command::Expire { instances, .. } if instances.contains(&id))),
                        "{:?} removed by {:?}", id, c);
                    // Inside a batch, earlier commands may make it expirable (a delete of
                    // its job, say); alone, it must have been expirable before.
                    if !matches!(unkeyed(c), Command::Batch { .. }) {
                        prop_assert!(expirable && was.is_terminal(), "{:?} ({:?}) removed while not expirable", id, was);
                    }
                    continue;
                };
                if was.is_terminal() && now != was {
                    // Only an operator's retry takes an instance out of a terminal status
                    // (inside a batch, later commands may move it on again).
                    prop_assert!(carries(c, |c| matches!(c, Command::RetryInstance { instance, .. } if *instance == id)),
                        "{:?} left terminal {:?} for {:?} by {:?}", id, was, now, c);
                    if !matches!(unkeyed(c), Command::Batch { .. }) {
                        prop_assert_eq!(now, InstanceStatus::WaitingDispatch);
                    }
                }
            }
            let all = all_instances(&s);
            let active: Vec<InstanceId> = all.iter()
                .filter(|i| !i.status.is_terminal()).map(|i| i.id).collect();
            prop_assert_eq!(active, s.active_ids());
            for i in &all {
                prop_assert!(i.attempt <= i.max_attempt, "{:?}", i);
                // cap 40 plus the truncation marker
                let len = s.log_text(i.id, 0, 1 << 20).len;
                prop_assert!(len <= 40 + 40, "{}", len);
            }
            // Every index apply keeps is what the records say it must be.
            if let Err(e) = s.check_indexes() {
                prop_assert!(false, "after {:?}: {}", c, e);
            }
        }
    }
}

fn with_cases() -> ProptestConfig {
    ProptestConfig::with_cases(64)
}

proptest! {
    #![proptest_config(with_cases())]
    /// Two stores that apply the same commands hold the same bytes: one in
    /// memory, applying one command at a time; one on RocksDB through the state
    /// machine, in batches cut anywhere (each batch one `WriteBatch`).
    #[test]
    fn memory_and_rocksdb_hold_the_same_bytes(
        cmds in prop::collection::vec(command(), 0..50),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut mem = State::default();
        let mem_resp: Vec<Response> = cmds.iter().map(|c| mem.apply(c)).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(cmds.len() + 1)).collect();
        cuts.push(0);
        cuts.push(cmds.len());
        cuts.sort_unstable();
        cuts.dedup();
        let rt = runtime();
        let dir = tempfile::TempDir::new().expect("tmp");
        let (rocks, rocks_resp) = rt.block_on(async {
            let (_log, mut sm) = qron_raft_store::open(dir.path()).expect("open");
            let all = entries(&cmds, 1);
            let mut resp = Vec::new();
            for w in cuts.windows(2) {
                resp.extend(sm.apply(all[w[0]..w[1]].to_vec()).await.expect("apply"));
            }
            let s = data_records(&sm.shared().read());
            (s, resp)
        });
        prop_assert_eq!(mem_resp, rocks_resp);
        prop_assert_eq!(data_records(&mem), rocks);
    }
}

proptest! {
    /// Rule 13: applying a sequence with retried keyed commands in it (same key,
    /// same request, proposed again later, any command in the entry) ends in the
    /// same state as applying it without them, each retry answers exactly what
    /// the first answered, and the same key for another request is refused.
    #[test]
    fn retried_keyed_commands_change_nothing_and_answer_the_first_reply((original, retries) in with_retries()) {
        let keyed_at: Vec<usize> = original.iter().enumerate()
            .filter(|(_, c)| matches!(c, Command::Keyed { .. })).map(|(i, _)| i).collect();
        // After each original position, the retries that land there.
        let mut after: Vec<Vec<(usize, Command)>> = vec![Vec::new(); original.len()];
        if !keyed_at.is_empty() {
            for r in &retries {
                let first = keyed_at[r.of.index(keyed_at.len())];
                let Command::Keyed { key, request_digest, now_ms, .. } = &original[first] else { unreachable!() };
                let digest = if r.same_request { request_digest.clone() } else { format!("other-{request_digest}") };
                let at = first + r.at.index(original.len() - first);
                after[at].push((first, keyed(key, &digest, now_ms + r.after_ms, r.command.clone())));
            }
        }

        let mut once = State::default();
        let first_replies: Vec<Response> = original.iter().map(|c| once.apply(c)).collect();

        let mut retried = State::default();
        for (i, c) in original.iter().enumerate() {
            prop_assert_eq!(&retried.apply(c), &first_replies[i], "original command {} answered otherwise", i);
            for (first, retry) in &after[i] {
                let Command::Keyed { request_digest, .. } = retry else { unreachable!() };
                let before = retried.clone();
                let reply = retried.apply(retry);
                if request_digest.starts_with("other-") {
                    prop_assert!(matches!(reply.0, Err(CommandError::KeyReused(_))), "{:?}", reply);
                } else {
                    prop_assert_eq!(&reply, &first_replies[*first], "a retry answers the first reply");
                }
                prop_assert_eq!(&before, &retried, "a retry changed the state: {:?}", retry);
            }
        }
        prop_assert_eq!(&once, &retried);
        prop_assert_eq!(once.digest(), retried.digest());
    }
}
