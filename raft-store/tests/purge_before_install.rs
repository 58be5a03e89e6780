//! A follower killed between openraft's `PurgeLog` and the snapshot install it
//! belongs to must start again.
//!
//! When a follower receives a snapshot, openraft 0.9.25
//! (`FollowingHandler::install_full_snapshot`) queues the install on the state
//! machine task and pushes `PurgeLog { upto: snapshot's last log id }` to the log
//! task at once: the purge does not wait for the install. If the node dies in
//! between, its disk holds the old snapshot and a log purged past it; the entries
//! between the two are gone, so `Raft::new` cannot re-apply what was committed.
//!
//! The tests build the situation with real openraft runs of a one-node cluster
//! (so the log, the vote, `committed` and the snapshots are what openraft writes),
//! then do by hand what the follower's log task does, and start openraft on the
//! reopened store. They use only the store's public API and openraft, so they hold
//! for any state machine behind it (the RocksDB-backed state of rule 12 included).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{Config, LogId, SnapshotPolicy};
use qron_raft_store::{Command, LogStore, NodeId, QronNode, Raft, SharedState, StateMachineStore, TypeConfig};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A network for a cluster of one: never called, but `Raft::new` wants one.
struct NoNetwork;

struct NoPeer;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, QronNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(
        "a cluster of one has no peers",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: NodeId, _node: &QronNode) -> NoPeer {
        NoPeer
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _req: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, QronNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _req: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, QronNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _req: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, QronNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

/// Opens the stores in `dir`. RocksDB allows one opener per directory and openraft
/// drops the stores of a stopped node on its own tasks: retry while the lock is held.
async fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match qron_raft_store::open(dir) {
            Ok(stores) => return stores,
            Err(e) if tokio::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot open the store in {}: {e}", dir.display()),
        }
    }
}

/// Starts openraft as node 1 on the stores in `dir`; the error is `Raft::new`'s.
async fn start(dir: &Path) -> Result<(Raft, SharedState), openraft::error::Fatal<NodeId>> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Snapshots are taken by the test, where it wants them.
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    }
    .validate()
    .expect("config");
    let (log, sm) = open(dir).await;
    let shared = sm.shared();
    let raft = Raft::new(1, Arc::new(config), NoNetwork, log, sm).await?;
    Ok((raft, shared))
}

async fn lead(raft: &Raft) {
    raft.wait(WAIT).current_leader(1, "node 1 leads").await.expect("leader");
}

/// Writes `n` commands; returns the last log index applied.
async fn write(raft: &Raft, from: u64, n: u64) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        let cmd = Command::CreateApp {
            name: format!("app{i}"),
            secret: "s".into(),
            now_ms: i as i64,
        };
        last = raft.client_write(cmd).await.expect("write").log_id.index;
    }
    last
}

/// Builds a snapshot of everything up to `last` (the last index written); returns its last log id.
async fn snapshot(raft: &Raft, last: u64) -> LogId<NodeId> {
    raft.wait(WAIT)
        .applied_index(Some(last), "applied")
        .await
        .expect("applied");
    raft.trigger().snapshot().await.expect("trigger");
    let m = raft
        .wait(WAIT)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last),
            "a snapshot of everything written",
        )
        .await
        .expect("snapshot");
    m.snapshot.expect("snapshot")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

/// Two data directories of one history: `follower` has a snapshot and committed,
/// applied entries after it; `leader` went on and has a snapshot past all of them,
/// the one it would send to that lagging follower.
struct Setup {
    _tmp: TempDir,
    follower: std::path::PathBuf,
    leader: std::path::PathBuf,
    /// What the follower had applied (and committed) when it stopped.
    follower_applied: u64,
    follower_digest: String,
    /// The leader's snapshot.
    snapshot: LogId<NodeId>,
    leader_digest: String,
}

async fn setup() -> Setup {
    let tmp = TempDir::new().expect("tmp");
    let (leader, follower) = (tmp.path().join("leader"), tmp.path().join("follower"));

    let (raft, shared) = start(&leader).await.expect("first start");
    let members = BTreeMap::from([(
        1,
        QronNode {
            grpc_addr: "unused".into(),
        },
    )]);
    raft.initialize(members).await.expect("initialize");
    lead(&raft).await;
    let last = write(&raft, 0, 20).await;
    let old_snapshot = snapshot(&raft, last).await;
    let follower_applied = write(&raft, 20, 10).await;
    assert!(
        follower_applied > old_snapshot.index + 5,
        "committed entries after the old snapshot"
    );
    raft.wait(WAIT)
        .applied_index(Some(follower_applied), "applied")
        .await
        .expect("applied");
    let follower_digest = shared.read().digest();
    raft.shutdown().await.expect("shutdown");
    drop(raft);
    // A reader's handle keeps the database open: let it go too.
    drop(shared);
    // Wait until openraft has dropped the stores, then copy: the follower stops here.
    drop(open(&leader).await);
    copy_dir(&leader, &follower);

    let (raft, shared) = start(&leader).await.expect("restart");
    lead(&raft).await;
    let last = write(&raft, 30, 30).await;
    let snapshot = snapshot(&raft, last).await;
    let leader_digest = shared.read().digest();
    raft.shutdown().await.expect("shutdown");
    drop(raft);
    assert!(snapshot.index > follower_applied + 10);

    Setup {
        _tmp: tmp,
        follower,
        leader,
        follower_applied,
        follower_digest,
        snapshot,
        leader_digest,
    }
}

/// Starts openraft on `dir` and checks it runs: applies what was committed,
/// keeps openraft's order (purged ≤ snapshot ≤ applied) and takes a new write.
async fn starts_and_serves(dir: &Path, applied: u64, digest: &str) {
    let (raft, shared) = match start(dir).await {
        Ok(r) => r,
        Err(e) => panic!("Raft::new failed on the reopened store: {e}"),
    };
    raft.wait(WAIT)
        .applied_index(Some(applied), "re-applied what was committed")
        .await
        .expect("applied");
    assert_eq!(shared.read().digest(), digest, "the state after the restart");
    let m = raft.metrics().borrow().clone();
    assert!(
        m.purged <= m.snapshot && m.snapshot <= m.last_applied,
        "purged {:?} ≤ snapshot {:?} ≤ applied {:?}",
        m.purged,
        m.snapshot,
        m.last_applied
    );
    lead(&raft).await;
    let next = write(&raft, 1000, 1).await;
    assert!(next > applied);
    raft.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_after_the_purge_before_the_install_restarts() {
    let s = setup().await;
    {
        // The follower's log task, right after openraft queued the install of the
        // leader's snapshot; then the node dies: the install never happens.
        let (mut log, _sm) = open(&s.follower).await;
        log.purge(s.snapshot).await.expect("purge");
    }
    starts_and_serves(&s.follower, s.follower_applied, &s.follower_digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_asked_before_the_install_is_done_once_the_install_is_recorded() {
    let s = setup().await;
    {
        let (mut log, mut sm) = open(&s.follower).await;
        log.purge(s.snapshot).await.expect("purge");
        // The install that follows, with the leader's snapshot file.
        let (_leader_log, mut leader_sm) = open(&s.leader).await;
        let snap = leader_sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("the leader has a snapshot");
        assert_eq!(snap.meta.last_log_id, Some(s.snapshot));
        let mut bytes = Vec::new();
        let mut src = snap.snapshot;
        src.read_to_end(&mut bytes).await.expect("read snapshot");
        let mut dst = sm.begin_receiving_snapshot().await.expect("begin");
        dst.write_all(&bytes).await.expect("write snapshot");
        sm.install_snapshot(&snap.meta, dst).await.expect("install");
    }
    {
        // Recorded on disk: the purge went through once the snapshot covered it.
        let (mut log, _sm) = open(&s.follower).await;
        let st = log.get_log_state().await.expect("log state");
        assert_eq!(st.last_purged_log_id, Some(s.snapshot));
        assert_eq!(st.last_log_id, Some(s.snapshot));
    }
    starts_and_serves(&s.follower, s.snapshot.index, &s.leader_digest).await;
}
