//! Upgrade from a data dir of the release before the state machine moved into
//! RocksDB (state in a JSON snapshot file, JSON log entries): the fixture
//! `fixtures/v0-data-dir.tar.gz` was written by that release's binaries
//! (`fixtures/make-v0-data-dir.sh`). Opening it migrates the snapshot's state
//! into the state column family; the JSON log entries after the snapshot are
//! read and applied as openraft would; the result is what the old node served.

use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::RaftLogReader;
use qron_raft_store::{Command, InstanceId, InstanceStatus, JobId, Reply};
use tempfile::TempDir;

fn unpack() -> TempDir {
    let tmp = TempDir::new().expect("tmp");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0-data-dir.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -xzf {}", fixture.display());
    tmp
}

fn expected() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0-expected-instances.json");
    serde_json::from_slice(&std::fs::read(path).expect("read expected")).expect("json")
}

fn old_applied_index() -> u64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0-expected-digest.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    v["applied_index"].as_u64().expect("applied_index")
}

#[test]
fn a_data_dir_of_the_previous_release_is_migrated_on_first_start() {
    let dir = unpack();
    let data = dir.path().join("node1");
    // The fixture really is the old layout: a JSON snapshot file.
    let snaps: Vec<String> = std::fs::read_dir(data.join("snapshots"))
        .expect("snapshots dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(snaps.iter().any(|n| n.ends_with(".json")), "{snaps:?}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let records = rt.block_on(async {
        let (mut log, mut sm) = qron_raft_store::open(&data).expect("open the old data dir");
        let (applied, _) = sm.applied_state().await.expect("applied");
        let applied = applied.expect("the snapshot's log id").index;
        // What openraft does next: apply the committed entries after the snapshot.
        let committed = log
            .read_committed()
            .await
            .expect("committed")
            .expect("a committed index")
            .index;
        assert!(committed > applied, "the fixture has entries after its snapshot");
        let mut reader = log.get_log_reader().await;
        let entries = reader
            .try_get_log_entries(applied + 1..=committed)
            .await
            .expect("read JSON entries");
        assert_eq!(entries.len() as u64, committed - applied);
        sm.apply(entries).await.expect("apply");
        let state = sm.shared();
        let s = state.read();
        assert_eq!(s.last_applied().map(|l| l.index), Some(old_applied_index()));
        assert!(s.app("demo").is_some());
        assert_eq!(s.job(JobId(1)).expect("job 1").spec.name, "hello");
        assert_eq!(s.job(JobId(2)).expect("job 2").spec.name, "later");
        assert_eq!(s.job_id_named("demo", "later"), Some(JobId(2)));
        // Every instance as the old node listed it, with its log.
        let want = expected();
        let want = want["instances"].as_array().expect("instances");
        assert_eq!(want.len(), 3);
        for w in want {
            let id = InstanceId(w["id"].as_u64().expect("id"));
            let i = s.instance(id).expect("instance");
            assert_eq!(i.status.name(), w["status"].as_str().expect("status"));
            assert_eq!(i.status, InstanceStatus::Succeeded);
            assert_eq!(i.job_id, JobId(1));
            assert_eq!(s.log_text(id, 0, 1000).text, format!("hello-{}\n", id.0));
        }
        s.check_indexes().expect("indexes migrated and kept");
        assert_eq!(s.next_instance_id(), 3);
        drop(s);
        // The ids go on where they were.
        let mut next = state.read().fresh();
        let spec = next.job(JobId(2)).expect("job").spec;
        let mut spec2 = spec.clone();
        spec2.name = "new".into();
        let r = next.apply(&Command::CreateJob { spec: spec2, now_ms: 1 });
        assert!(matches!(r.0, Ok(Reply::Job(ref j)) if j.id == JobId(3)), "{r:?}");
        let all = state.read().all_records();
        all
    });
    // A second start reads the migrated state as it is: nothing is migrated again.
    let (_log, sm) = qron_raft_store::open(&data).expect("reopen");
    assert_eq!(sm.shared().read().all_records(), records);
}
