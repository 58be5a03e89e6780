//! openraft's state machine: the in-memory [`State`], persisted by snapshots.
//!
//! Applying an entry changes memory only; the state reaches disk when openraft
//! builds a snapshot (every `LogsSinceLast(n)` entries). After a restart the
//! node loads its newest snapshot and openraft re-applies the log after it, so
//! nothing committed is lost as long as the log is kept until a snapshot covers
//! it: every recorded snapshot is reported to the log store's `Purger`, which
//! never deletes entries past the recorded snapshot, even when openraft asks.
//!
//! Snapshot files live in `<data-dir>/snapshots/` as `snap-<term>-<index>.json`
//! (the JSON of [`State`]); the current one is named by the `snapshot` key in
//! RocksDB's `meta` column family, written with `sync = true` after the file is
//! fsynced and renamed into place. Other files there are leftovers of a crash
//! and are removed at start-up.
//!
//! Rule 9: a snapshot is built from a copy of the state taken between two
//! applies, on openraft's snapshot task, while applying goes on.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use crate::command::{Reply, Response};
use crate::log_store::{get_meta, put_meta, Purger};
use crate::raft_types::{Entry, StorageError, TypeConfig};
use crate::snapshot_file::SnapshotFile;
use crate::state::State;
use crate::types::{NodeId, QronNode};

const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// The state shared between the state machine (writer) and the API (readers).
#[derive(Clone, Default)]
pub struct SharedState(Arc<RwLock<State>>);

impl SharedState {
    /// A read guard; a poisoned lock still yields the state (apply never panics midway).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the `meta` column family records about the current snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, QronNode>,
    file: String,
}

/// Distinguishes files written by this process (receive buffers, builds at the same index).
static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// openraft's state machine for qron.
pub struct StateMachineStore {
    state: SharedState,
    snapshots: Arc<Snapshots>,
}

/// The snapshot directory and the record of the current snapshot, shared by the
/// state machine and its builders.
struct Snapshots {
    db: Arc<DB>,
    dir: PathBuf,
    /// Serializes "make this the current snapshot" between builds and installs.
    commit_lock: Mutex<()>,
    /// Told of every recorded snapshot: the log is purged only behind one.
    purger: Arc<Purger>,
}

impl StateMachineStore {
    /// Opens the snapshot directory and loads the current snapshot, if any.
    pub(crate) fn open(db: Arc<DB>, dir: &Path, purger: Arc<Purger>) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let stored: Option<StoredSnapshot> = get_meta(&db, KEY_SNAPSHOT)?;
        let state = match &stored {
            None => State::default(),
            Some(s) => load_state(&dir.join(&s.file), &s.meta)?,
        };
        remove_other_files(dir, stored.as_ref().map(|s| s.file.as_str()), true);
        purger.covered_upto(stored.and_then(|s| s.meta.last_log_id))?;
        Ok(StateMachineStore {
            state: SharedState(Arc::new(RwLock::new(state))),
            snapshots: Arc::new(Snapshots {
                db,
                dir: dir.to_owned(),
                commit_lock: Mutex::new(()),
                purger,
            }),
        })
    }

    /// A handle for readers (the API).
    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }
}

fn load_state(path: &Path, meta: &SnapshotMeta<NodeId, QronNode>) -> Result<State, StorageError> {
    let sig = Some(meta.signature());
    let file = std::fs::File::open(path).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
    let mut state: State =
        serde_json::from_reader(BufReader::new(file)).map_err(|e| StorageIOError::read_snapshot(sig, &e))?;
    // The meta is authoritative for openraft's bookkeeping.
    state.last_applied = meta.last_log_id;
    state.last_membership = meta.last_membership.clone();
    state.rebuild_indexes();
    Ok(state)
}

/// Removes the snapshot files in `dir` but `keep`; with `all`, also temporary
/// files (only at start-up: at run time they may be builds or receives under way).
fn remove_other_files(dir: &Path, keep: Option<&str>, all: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let finished = name.starts_with("snap-") && name.ends_with(".json");
        if Some(name.as_ref()) != keep && (all || finished) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove old snapshot file");
            }
        }
    }
}

fn snapshot_file_name(last: Option<LogId<NodeId>>) -> String {
    let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    match last {
        Some(l) => format!("snap-{}-{}-{}.json", l.leader_id.term, l.index, seq),
        None => format!("snap-none-{seq}.json"),
    }
}

impl Snapshots {
    /// Makes `file` the current snapshot: fsync the directory (the rename), then
    /// record it in RocksDB with sync, then drop older files and let the log be
    /// purged up to it (a purge openraft asked for before an install waits for
    /// this). A snapshot older than the current one (a build that finished after
    /// an install) is dropped instead: the log before the current snapshot may
    /// already be purged.
    fn commit(&self, meta: &SnapshotMeta<NodeId, QronNode>, file: &str) -> Result<(), StorageError> {
        let (db, dir) = (&*self.db, self.dir.as_path());
        let _guard = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let sig = Some(meta.signature());
        if let Some(current) = get_meta::<StoredSnapshot>(db, KEY_SNAPSHOT)? {
            if current.meta.last_log_id > meta.last_log_id {
                tracing::info!(stale = %meta.snapshot_id, current = %current.meta.snapshot_id, "dropping a snapshot older than the current one");
                let _ = std::fs::remove_file(dir.join(file));
                return Ok(());
            }
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        put_meta(
            db,
            KEY_SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                file: file.to_owned(),
            },
            true,
        )?;
        remove_other_files(dir, Some(file), false);
        self.purger.covered_upto(meta.last_log_id)
    }

    /// The current snapshot's meta and its file, open. Blocking (a file open).
    ///
    /// Holds the commit lock from reading the record until the file is open: a
    /// commit removes the files of older snapshots, and does so only under this
    /// lock, so the file the record names is still there when it is opened.
    /// Once open, a later removal does not matter (an unlinked file stays
    /// readable through the handle). `between` runs after the record is read
    /// and before the file is opened: a seam for the test of that window.
    fn current_with(&self, between: impl FnOnce()) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let _guard = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stored) = get_meta::<StoredSnapshot>(&self.db, KEY_SNAPSHOT)? else {
            return Ok(None);
        };
        between();
        let sig = Some(stored.meta.signature());
        let path = self.dir.join(&stored.file);
        let file = std::fs::File::open(&path).map_err(|e| StorageIOError::read_snapshot(sig, &e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(SnapshotFile::from_std(file, &path)),
        }))
    }
}

/// Builds snapshots from a point-in-time copy of the state.
pub struct SnapshotBuilder {
    copy: State,
    snapshots: Arc<Snapshots>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let last = self.copy.last_applied;
        let name = snapshot_file_name(last);
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.copy.last_membership.clone(),
            snapshot_id: name.trim_end_matches(".json").to_owned(),
        };
        let sig = Some(meta.signature());
        let tmp = self.snapshots.dir.join(format!("{name}.tmp"));
        let path = self.snapshots.dir.join(&name);
        let copy = std::mem::take(&mut self.copy);
        let (tmp2, path2) = (tmp.clone(), path.clone());
        // Serialization and fsync are blocking work: keep them off the async workers.
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::File::create(&tmp2)?;
            let mut w = BufWriter::new(file);
            serde_json::to_writer(&mut w, &copy)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            // Open for reading before the rename: from the rename on, a commit of
            // another snapshot (an install) may remove the file, and a stale build's
            // own commit removes it; openraft still gets the snapshot it asked for
            // through this handle.
            let reader = std::fs::File::open(&tmp2)?;
            std::fs::rename(&tmp2, &path2)?;
            Ok(reader)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?
        .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let data = SnapshotFile::from_std(file, &path);
        self.snapshots.commit(&meta, &name)?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, QronNode>), StorageError> {
        let s = self.state.read();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut state = self.state.write();
        let mut out = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let resp = match &entry.payload {
                EntryPayload::Blank => Response(Ok(Reply::None)),
                EntryPayload::Normal(cmd) => state.apply(cmd),
                EntryPayload::Membership(m) => {
                    state.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Response(Ok(Reply::None))
                }
            };
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            copy: self.state.read().clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self.snapshots.dir.join(format!("recv-{seq}.tmp"));
        let file = SnapshotFile::create(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, QronNode>,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        snapshot
            .sync()
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let name = snapshot_file_name(meta.last_log_id);
        let path = self.snapshots.dir.join(&name);
        std::fs::rename(snapshot.path(), &path).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let (path2, meta2) = (path.clone(), meta.clone());
        let new_state = tokio::task::spawn_blocking(move || load_state(&path2, &meta2))
            .await
            .map_err(|e| StorageIOError::read_snapshot(sig, &e))??;
        self.snapshots.commit(meta, &name)?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        *self.state.write() = new_state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Blocking (a std lock and a file open): off the async workers.
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || snapshots.current_with(|| {}))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::log_store::open_db;

    fn snapshots(dir: &Path) -> Snapshots {
        let db = open_db(&dir.join("raft")).expect("db");
        let purger = Purger::open(db.clone()).expect("purger");
        let dir = dir.join("snapshots");
        std::fs::create_dir_all(&dir).expect("mkdir");
        Snapshots {
            db,
            dir,
            commit_lock: Mutex::new(()),
            purger,
        }
    }

    /// Writes a snapshot file with `text` and commits it as the snapshot at `index`.
    fn commit(s: &Snapshots, index: u64, text: &str) -> SnapshotMeta<NodeId, QronNode> {
        let name = format!("snap-1-{index}-0.json");
        std::fs::write(s.dir.join(&name), text).expect("write");
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: name.trim_end_matches(".json").to_owned(),
        };
        s.commit(&meta, &name).expect("commit");
        meta
    }

    async fn read_all(mut f: Box<SnapshotFile>) -> String {
        let mut text = String::new();
        f.read_to_string(&mut text).await.expect("read");
        text
    }

    /// A reader and a commit of a newer snapshot (which removes the older file)
    /// at the worst moment: the commit tries to run between the reader's reading
    /// of the record and its opening of the file. It must wait for the reader
    /// (the same lock), and the reader gets the snapshot the record named.
    #[tokio::test]
    async fn a_commit_waits_while_a_reader_opens_the_current_snapshot() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let s = snapshots(tmp.path());
        let old = commit(&s, 10, "old");
        let mut commit_could_run = None;
        let current = s.current_with(|| {
            // A commit may run here only if the reader does not hold the lock.
            let free = s.commit_lock.try_lock().is_ok();
            commit_could_run = Some(free);
            if free {
                commit(&s, 20, "new");
            }
        });
        let current = current
            .expect("the reader opens the file its record names")
            .expect("a snapshot");
        assert_eq!(commit_could_run, Some(false), "the reader holds the commit lock");
        assert_eq!(current.meta, old);
        // The commit runs once the reader has its file: it removes the old file, and
        // the reader still reads all of it through the handle it holds.
        let new = commit(&s, 20, "new");
        assert!(!s.dir.join("snap-1-10-0.json").exists(), "the old file is removed");
        assert_eq!(read_all(current.snapshot).await, "old");
        let current = s.current_with(|| {}).expect("read").expect("a snapshot");
        assert_eq!(current.meta, new);
        assert_eq!(read_all(current.snapshot).await, "new");
    }
}
