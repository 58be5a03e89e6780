//! openraft's state machine: the [`State`]'s records in a RocksDB column
//! family beside the log (one WAL), and snapshots streamed from a point in time.
//!
//! * **Apply.** Each call applies its entries into a fresh [`State`] over the
//!   committed records and writes all their writes, with `last_applied` (and
//!   the membership), in one `WriteBatch`. A restart opens the database and
//!   serves: nothing is replayed but the log after `last_applied`, and no
//!   snapshot file is parsed. The batch is not synced on its own: the log
//!   entries it came from are (rule 7), and a lost state write is re-applied
//!   from them; the log is purged only behind a recorded snapshot, whose
//!   synced record makes every earlier write of the WAL durable with it.
//! * **Two column families**, `state_a` and `state_b`; the `meta` key
//!   `state_cf` names the current one. An installed snapshot is written into
//!   the other one (cleared first), then `state_cf` is switched with one synced
//!   write, then the old one is cleared: a node killed at any point restarts
//!   on one whole state, the old or the new (the other family is cleared at
//!   start-up).
//! * **Snapshots** (rule 9) are built from a RocksDB snapshot taken between two
//!   applies (in `get_snapshot_builder`), by a thread that streams the records
//!   into a file: `QRONSNAP`, a version byte, then length-prefixed key/value
//!   frames, then an end marker with the count and a SHA-256 of the frames
//!   (checked before the switch; lengths are bounded before they are allocated). openraft sends the file in
//!   chunks. Snapshot files live in `<data-dir>/snapshots/`; the current one is
//!   named by the `snapshot` key in `meta`, written with `sync = true` after
//!   the file is fsynced and renamed into place; other files there are
//!   leftovers of a crash and are removed at start-up.
//! * **Upgrade.** A data dir of an earlier release (state in a JSON snapshot
//!   file, no `state_cf`) is migrated on first start (`crate::legacy`), and a
//!   JSON snapshot received from a leader of an earlier release is installed
//!   the same way.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use rocksdb::{ReadOptions, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Reply, Response};
use crate::encoding::decode;
use crate::legacy::LegacyState;
use crate::log_store::{cf, get_meta, put_meta, Purger, CF_LOGS, CF_META, CF_STATE_A, CF_STATE_B};
use crate::raft_types::{Entry, StorageError, TypeConfig};
use crate::snapshot_file::SnapshotFile;
use crate::state::store::{key, Kv, Writes, T};
use crate::state::State;
use crate::types::{JobId, NodeId, QronNode};

const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_STATE_CF: &[u8] = b"state_cf";
const SNAP_MAGIC: &[u8; 8] = b"QRONSNAP";
const SNAP_VERSION: u8 = 1;
/// Marks the end of a snapshot's frames (no key is this long).
const END_MARK: u32 = u32::MAX;
/// Longest key and value a snapshot frame may carry (a damaged length is
/// refused, not allocated).
const MAX_FRAME_KEY: usize = 4 << 10;
const MAX_FRAME_VALUE: usize = 64 << 20;
/// Bytes an install writes per `WriteBatch`.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// The state shared between the state machine (writer) and the API (readers).
///
/// A reader holds the read lock while it reads, and the state machine takes
/// the write lock only to write a batch or swap the column family: a reader
/// sees the state between two batches, never half of one.
#[derive(Clone)]
pub struct SharedState {
    state: Arc<RwLock<State>>,
    /// Which jobs each recent change of `State::job_epoch` touched.
    job_changes: Arc<Mutex<JobChanges>>,
    /// The node's database (None for a state in memory), for its memory figures.
    db: Option<Arc<DB>>,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState::new(State::default(), None)
    }
}

/// What RocksDB holds in memory (both bounded: docs/architecture.md, "Memory").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageMemory {
    /// The shared block cache's use (data, index and filter blocks).
    pub block_cache_bytes: u64,
    /// Every column family's memtables, flushed or not yet.
    pub memtable_bytes: u64,
}

impl SharedState {
    fn new(state: State, db: Option<Arc<DB>>) -> Self {
        SharedState {
            state: Arc::new(RwLock::new(state)),
            job_changes: Default::default(),
            db,
        }
    }

    /// RocksDB's memory use now, if this state lives in RocksDB.
    pub fn storage_memory(&self) -> Option<StorageMemory> {
        let db = self.db.as_ref()?;
        let prop = |cf_name: &str, name: &str| -> u64 {
            db.cf_handle(cf_name)
                .and_then(|h| db.property_int_value_cf(&h, name).ok().flatten())
                .unwrap_or(0)
        };
        Some(StorageMemory {
            // One cache for every family: any family reports all of it.
            block_cache_bytes: prop(CF_META, "rocksdb.block-cache-usage"),
            memtable_bytes: [CF_LOGS, CF_META, CF_STATE_A, CF_STATE_B]
                .iter()
                .map(|cf| prop(cf, "rocksdb.cur-size-all-mem-tables"))
                .sum(),
        })
    }

    /// A read guard; a poisoned lock still yields the state (apply never panics midway).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The jobs whose definition changed while `State::job_epoch` moved from
    /// `from` to `to` (created, updated, enabled, disabled, deleted), or None
    /// when this node no longer remembers all of it (it keeps the last
    /// [`JobChanges::MAX_IDS`] or so; a snapshot install or a restart forgets):
    /// the caller then reads every job. Lets the leader's wheel follow job
    /// changes without reading every job each time.
    pub fn jobs_changed(&self, from: u64, to: u64) -> Option<Vec<JobId>> {
        self.job_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .between(from, to)
    }

    fn note_job_changes(&self, from: u64, to: u64, ids: Vec<JobId>) {
        self.job_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(from, to, ids);
    }

    fn forget_job_changes(&self) {
        *self.job_changes.lock().unwrap_or_else(|e| e.into_inner()) = JobChanges::default();
    }
}

/// A bounded record of which job records each apply batch that moved the job
/// epoch wrote: `(epoch before, epoch after, ids)` per batch, oldest first.
#[derive(Default)]
struct JobChanges {
    batches: VecDeque<(u64, u64, Vec<JobId>)>,
    ids: usize,
}

impl JobChanges {
    /// Ids kept at most (beyond, the oldest batches are forgotten).
    const MAX_IDS: usize = 100_000;

    fn push(&mut self, from: u64, to: u64, ids: Vec<JobId>) {
        self.ids += ids.len();
        self.batches.push_back((from, to, ids));
        while self.ids > Self::MAX_IDS {
            match self.batches.pop_front() {
                Some((_, _, old)) => self.ids -= old.len(),
                None => break,
            }
        }
    }

    fn between(&self, from: u64, to: u64) -> Option<Vec<JobId>> {
        if from == to {
            return Some(Vec::new());
        }
        // The batches after `from`, which must start exactly there and reach `to`.
        let first = self.batches.iter().position(|(_, after, _)| *after > from)?;
        let mut epoch = from;
        let mut out = Vec::new();
        for (before, after, ids) in self.batches.iter().skip(first) {
            if *before != epoch || *after > to {
                return None;
            }
            out.extend_from_slice(ids);
            epoch = *after;
            if epoch == to {
                out.sort_unstable();
                out.dedup();
                return Some(out);
            }
        }
        None
    }
}

/// Applies `entries` to the state in one write batch (see `apply`).
fn apply_entries(
    shared: &SharedState,
    db: Arc<DB>,
    cf: &'static str,
    entries: Vec<Entry>,
) -> Result<Vec<Response>, StorageError> {
    let mut txn = shared.read().fresh();
    let epoch_before = txn.job_epoch();
    let mut out = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        last = Some(entry.log_id);
        txn.set_applied(Some(entry.log_id));
        let resp = match &entry.payload {
            EntryPayload::Blank => Response(Ok(Reply::None)),
            EntryPayload::Normal(cmd) => txn.apply(cmd),
            EntryPayload::Membership(m) => {
                txn.set_membership(&StoredMembership::new(Some(entry.log_id), m.clone()));
                Response(Ok(Reply::None))
            }
        };
        out.push(resp);
    }
    if let Some(fault) = txn.take_fault() {
        let e = std::io::Error::other(fault);
        return Err(match last {
            Some(l) => StorageIOError::apply(l, &e),
            None => StorageIOError::write_state_machine(&e),
        }
        .into());
    }
    let epoch_after = txn.job_epoch();
    let changed_jobs = txn.take_changed_jobs();
    let writes = txn.take_writes();
    // Readers wait for the batch: they see all of it or none.
    let state = shared.write();
    RocksKv { db, cf }
        .write(&writes)
        .map_err(|e| StorageIOError::write_state_machine(&std::io::Error::other(e)))?;
    if epoch_after != epoch_before {
        // Under the write lock: a reader that sees the new epoch sees its changes.
        shared.note_job_changes(epoch_before, epoch_after, changed_jobs);
    }
    drop(state);
    Ok(out)
}

/// A [`Kv`] on one column family of the node's RocksDB.
pub struct RocksKv {
    db: Arc<DB>,
    cf: &'static str,
}

fn io(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Kv for RocksKv {
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let h = self.db.cf_handle(self.cf).ok_or("state column family missing")?;
        self.db.get_cf(h, k).map_err(io)
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        bulk: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), String> {
        scan_cf(&self.db, self.cf, None, bulk, from, to, reverse, f)
    }

    fn write(&self, writes: &Writes) -> Result<(), String> {
        let h = self.db.cf_handle(self.cf).ok_or("state column family missing")?;
        let mut batch = WriteBatch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.put_cf(h, k, v),
                None => batch.delete_cf(h, k),
            }
        }
        self.db.write(batch).map_err(io)
    }
}

/// Visits `[from, to)` of column family `name` (through `snapshot` if given;
/// `bulk`: see [`Kv::scan`]).
#[allow(clippy::too_many_arguments)]
fn scan_cf(
    db: &DB,
    name: &str,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    bulk: bool,
    from: &[u8],
    to: &[u8],
    reverse: bool,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), String> {
    let h = db.cf_handle(name).ok_or("state column family missing")?;
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(from.to_vec());
    ro.set_iterate_upper_bound(to.to_vec());
    if let Some(s) = snapshot {
        ro.set_snapshot(s);
    }
    if bulk {
        // Many records read once: read ahead, and leave the block cache to
        // what the node serves from.
        ro.fill_cache(false);
        ro.set_readahead_size(2 << 20);
    }
    let mut it = db.raw_iterator_cf_opt(h, ro);
    if reverse {
        it.seek_to_last();
    } else {
        it.seek_to_first();
    }
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !f(k, v) {
            return Ok(());
        }
        if reverse {
            it.prev();
        } else {
            it.next();
        }
    }
    it.status().map_err(io)
}

/// Every key of a state column family lies below this.
const ALL_KEYS_END: &[u8] = &[0xff; 2];

/// Removes every record of a state column family.
fn clear_cf(db: &DB, name: &str) -> Result<(), StorageError> {
    let h = cf(db, name)?;
    db.delete_range_cf(h, [0u8].as_slice(), ALL_KEYS_END)
        .map_err(|e| StorageIOError::write_state_machine(&e).into())
}

fn other_cf(name: &str) -> &'static str {
    if name == CF_STATE_A {
        CF_STATE_B
    } else {
        CF_STATE_A
    }
}

fn known_cf(name: &str) -> Option<&'static str> {
    [CF_STATE_A, CF_STATE_B].into_iter().find(|c| *c == name)
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
    db: Arc<DB>,
    /// The column family holding the state.
    cf: &'static str,
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
    /// Opens the state's column family (migrating an earlier release's data
    /// dir on its first start) and the snapshot directory.
    pub(crate) fn open(db: Arc<DB>, dir: &Path, purger: Arc<Purger>) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let stored: Option<StoredSnapshot> = get_meta(&db, KEY_SNAPSHOT)?;
        let current: Option<String> = get_meta(&db, KEY_STATE_CF)?;
        let cf_name = match current.as_deref() {
            Some(name) => known_cf(name).ok_or_else(|| {
                StorageIOError::read_state_machine(&std::io::Error::other(format!(
                    "meta names state column family {name:?}, which this release does not know"
                )))
            })?,
            None => {
                // A new data dir, or one of an earlier release: its state (if
                // any) is the JSON snapshot file the record names.
                clear_cf(&db, CF_STATE_A)?;
                if let Some(s) = &stored {
                    let path = dir.join(&s.file);
                    let legacy = read_legacy(&path, &s.meta)?;
                    let mut state = State::over(Arc::new(RocksKv {
                        db: db.clone(),
                        cf: CF_STATE_A,
                    }));
                    legacy.write_into(&mut state);
                    state.set_applied(s.meta.last_log_id);
                    state.set_membership(&s.meta.last_membership);
                    state
                        .commit()
                        .map_err(|e| StorageIOError::write_state_machine(&std::io::Error::other(e)))?;
                    tracing::info!(snapshot = %s.meta.snapshot_id, "migrated the state of an earlier release's data dir from its JSON snapshot into column family state_a");
                }
                put_meta(&db, KEY_STATE_CF, &CF_STATE_A, true)?;
                CF_STATE_A
            }
        };
        // The other family holds nothing of value: an install a crash interrupted.
        clear_cf(&db, other_cf(cf_name))?;
        remove_other_files(dir, stored.as_ref().map(|s| s.file.as_str()), true);
        purger.covered_upto(stored.and_then(|s| s.meta.last_log_id))?;
        let state = State::over(Arc::new(RocksKv {
            db: db.clone(),
            cf: cf_name,
        }));
        Ok(StateMachineStore {
            state: SharedState::new(state, Some(db.clone())),
            db: db.clone(),
            cf: cf_name,
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

fn read_legacy(path: &Path, meta: &SnapshotMeta<NodeId, QronNode>) -> Result<LegacyState, StorageError> {
    let sig = Some(meta.signature());
    let file = std::fs::File::open(path).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
    serde_json::from_reader(BufReader::new(file)).map_err(|e| StorageIOError::read_snapshot(sig, &e).into())
}

/// Removes the snapshot files in `dir` but `keep`; with `all`, also temporary
/// files (only at start-up: at run time they may be builds or receives under way).
fn remove_other_files(dir: &Path, keep: Option<&str>, all: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let finished = name.starts_with("snap-") && (name.ends_with(".snap") || name.ends_with(".json"));
        if Some(name.as_ref()) != keep && (all || finished) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove old snapshot file");
            }
        }
    }
}

/// The name of the snapshot file of `last`; `seq` tells apart files of one index.
fn snapshot_file_name(last: Option<LogId<NodeId>>, seq: u64) -> String {
    match last {
        Some(l) => format!("snap-{}-{}-{}.snap", l.leader_id.term, l.index, seq),
        None => format!("snap-none-{seq}.snap"),
    }
}

impl Snapshots {
    /// Makes the file at `tmp` the current snapshot, named `file`. Under the
    /// commit lock: rename it into place, fsync the directory, then record it in
    /// RocksDB with sync (for an install, in the same write as the switch of
    /// `state_cf` to the family it loaded: a node killed at any point has a
    /// state and a snapshot record that agree), then remove the other snapshot
    /// files and let the log be purged up to it (a purge openraft asked for
    /// before an install waits for this). A build older than the current
    /// snapshot (one that finished after an install) is dropped instead: the log
    /// before the current snapshot may already be purged. Unrecorded files keep
    /// their temporary names until here, so no commit removes another's file
    /// before it is recorded.
    fn commit(
        &self,
        meta: &SnapshotMeta<NodeId, QronNode>,
        tmp: &Path,
        file: &str,
        state_cf: Option<&str>,
    ) -> Result<(), StorageError> {
        let (db, dir) = (&*self.db, self.dir.as_path());
        let _guard = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let sig = Some(meta.signature());
        let werr = |e: &dyn std::fmt::Display| {
            StorageIOError::write_snapshot(sig.clone(), &std::io::Error::other(e.to_string()))
        };
        if state_cf.is_none() {
            if let Some(current) = get_meta::<StoredSnapshot>(db, KEY_SNAPSHOT)? {
                if current.meta.last_log_id > meta.last_log_id {
                    tracing::info!(stale = %meta.snapshot_id, current = %current.meta.snapshot_id, "dropping a snapshot older than the current one");
                    let _ = std::fs::remove_file(tmp);
                    return Ok(());
                }
            }
        }
        std::fs::rename(tmp, dir.join(file)).map_err(|e| werr(&e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| werr(&e))?;
        let record = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            file: file.to_owned(),
        })
        .map_err(|e| werr(&e))?;
        let meta_cf = cf(db, CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta_cf, KEY_SNAPSHOT, record);
        if let Some(name) = state_cf {
            batch.put_cf(meta_cf, KEY_STATE_CF, serde_json::to_vec(name).map_err(|e| werr(&e))?);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo).map_err(|e| werr(&e))?;
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

/// What a snapshot's point in time holds of openraft's bookkeeping.
type Applied = (Option<LogId<NodeId>>, StoredMembership<NodeId, QronNode>);

/// Writes the state of column family `cf_name`, as of a RocksDB snapshot, to
/// `tmp`, fsynced; calls `taken` as soon as the snapshot is taken (the caller
/// waits for that, not for the file). Returns the file open for reading.
fn write_snapshot_file(
    db: &DB,
    cf_name: &str,
    tmp: &Path,
    taken: impl FnOnce(Result<Applied, String>),
) -> std::io::Result<std::fs::File> {
    let snap = db.snapshot();
    let read = |k: &[u8]| -> Result<Option<Vec<u8>>, String> {
        let h = db.cf_handle(cf_name).ok_or("state column family missing")?;
        snap.get_cf(h, k).map_err(io)
    };
    let applied = (|| -> Result<Applied, String> {
        let a = read(&key(T::Raft, b"applied"))?
            .map(|b| decode::<Option<LogId<NodeId>>>(&b))
            .transpose()
            .map_err(io)?
            .flatten();
        let m = read(&key(T::Raft, b"membership"))?
            .map(|b| decode::<StoredMembership<NodeId, QronNode>>(&b))
            .transpose()
            .map_err(io)?
            .unwrap_or_default();
        Ok((a, m))
    })();
    let failed = applied.as_ref().err().cloned();
    taken(applied);
    if let Some(e) = failed {
        return Err(std::io::Error::other(e));
    }
    let file = PacedFile {
        file: std::fs::File::create(tmp)?,
        unsynced: 0,
    };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(SNAP_MAGIC)?;
    w.write_all(&[SNAP_VERSION])?;
    let mut count = 0u64;
    let mut err = None;
    let mut hash = Sha256::new();
    // openraft's bookkeeping is not in the frames: the installer takes it from the meta.
    scan_cf(
        db,
        cf_name,
        Some(&snap),
        true,
        &[T::Raft as u8 + 1],
        ALL_KEYS_END,
        false,
        &mut |k, v| {
            let r = (|| {
                for part in [
                    &(k.len() as u32).to_be_bytes()[..],
                    k,
                    &(v.len() as u32).to_be_bytes()[..],
                    v,
                ] {
                    hash.update(part);
                    w.write_all(part)?;
                }
                Ok::<(), std::io::Error>(())
            })();
            count += 1;
            match r {
                Ok(()) => true,
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        },
    )
    .map_err(std::io::Error::other)?;
    if let Some(e) = err {
        return Err(e);
    }
    w.write_all(&END_MARK.to_be_bytes())?;
    w.write_all(&count.to_be_bytes())?;
    w.write_all(&hash.finalize())?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.file.sync_all()?;
    std::fs::File::open(tmp)
}

/// Gives the calling thread the lowest CPU priority (nice 19; Linux keeps
/// the nice value per thread). A snapshot build reads, hashes and writes the
/// whole state, and every node builds one at the same log index: on a busy
/// machine that would take the CPU from the Raft and API threads, heartbeats
/// would be late, and followers would call elections (a soak with a snapshot
/// every 2,000 entries thrashed through 40 terms). The build can wait.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "could not lower the snapshot thread's priority");
    }
}

/// Bytes a snapshot file is written between two `fdatasync`s.
const SYNC_EVERY: u64 = 8 << 20;

/// A file synced every [`SYNC_EVERY`] bytes as it is written, so the final
/// fsync does not push the whole snapshot to disk at once: the log's own
/// fsyncs (every commit waits for one) would queue behind it, for seconds on
/// a slow disk, and a leader whose commits stall loses its followers.
struct PacedFile {
    file: std::fs::File,
    unsynced: u64,
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Reads a snapshot file into column family `cf_name` (cleared first), in
/// batches; a JSON file (an earlier release's) is migrated. Returns the records written.
fn load_snapshot_file(db: &Arc<DB>, cf_name: &'static str, path: &Path) -> std::io::Result<u64> {
    clear_cf(db, cf_name).map_err(std::io::Error::other)?;
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut head = [0u8; 9];
    r.read_exact(&mut head[..1])?;
    if head[0] == b'{' {
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)?;
        let mut all = vec![b'{'];
        all.extend_from_slice(&rest);
        let legacy: LegacyState = serde_json::from_slice(&all).map_err(std::io::Error::other)?;
        let kv = RocksKv {
            db: db.clone(),
            cf: cf_name,
        };
        let mut state = State::default();
        legacy.write_into(&mut state);
        let writes = state.take_writes();
        kv.write(&writes).map_err(std::io::Error::other)?;
        return Ok(writes.len() as u64);
    }
    r.read_exact(&mut head[1..])?;
    if &head[..8] != SNAP_MAGIC || head[8] != SNAP_VERSION {
        return Err(std::io::Error::other(format!(
            "not a qron snapshot of version {SNAP_VERSION} (header {})",
            hex::encode(head)
        )));
    }
    let h = db
        .cf_handle(cf_name)
        .ok_or_else(|| std::io::Error::other("state column family missing"))?;
    let mut batch = WriteBatch::default();
    let mut count = 0u64;
    let mut len4 = [0u8; 4];
    let mut hash = Sha256::new();
    let bad = |what: String| std::io::Error::other(format!("damaged snapshot: {what}"));
    loop {
        r.read_exact(&mut len4)?;
        let klen = u32::from_be_bytes(len4);
        if klen == END_MARK {
            let mut n = [0u8; 8];
            r.read_exact(&mut n)?;
            if u64::from_be_bytes(n) != count {
                return Err(bad(format!("it says {} records, holds {count}", u64::from_be_bytes(n))));
            }
            let mut sum = [0u8; 32];
            r.read_exact(&mut sum)?;
            if sum[..] != hash.finalize()[..] {
                return Err(bad("its checksum does not match its records".into()));
            }
            break;
        }
        if klen as usize > MAX_FRAME_KEY {
            return Err(bad(format!("a key of {klen} bytes")));
        }
        hash.update(len4);
        let mut k = vec![0u8; klen as usize];
        r.read_exact(&mut k)?;
        hash.update(&k);
        r.read_exact(&mut len4)?;
        let vlen = u32::from_be_bytes(len4) as usize;
        if vlen > MAX_FRAME_VALUE {
            return Err(bad(format!("a value of {vlen} bytes")));
        }
        hash.update(len4);
        let mut v = vec![0u8; vlen];
        r.read_exact(&mut v)?;
        hash.update(&v);
        if k.first().is_none_or(|t| *t == T::Raft as u8) {
            return Err(std::io::Error::other(
                "a snapshot frame with an empty or bookkeeping key",
            ));
        }
        batch.put_cf(h, &k, &v);
        count += 1;
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            db.write(std::mem::take(&mut batch)).map_err(std::io::Error::other)?;
        }
    }
    db.write(batch).map_err(std::io::Error::other)?;
    Ok(count)
}

/// Builds snapshots from a point in time: the RocksDB snapshot its thread took
/// when the builder was made.
pub struct SnapshotBuilder {
    /// What the point in time had applied, or why it could not be taken.
    applied: Result<Applied, String>,
    name: String,
    /// Where the thread writes the file; renamed to `name` when done.
    tmp: PathBuf,
    /// The thread's file, open for reading.
    done: Option<tokio::sync::oneshot::Receiver<std::io::Result<std::fs::File>>>,
    snapshots: Arc<Snapshots>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (last, membership) = self
            .applied
            .clone()
            .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e)))?;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: self.name.trim_end_matches(".snap").to_owned(),
        };
        let sig = Some(meta.signature());
        let gone = || StorageIOError::write_snapshot(sig.clone(), &std::io::Error::other("snapshot thread ended"));
        let done = self.done.take().ok_or_else(gone)?;
        let file = done
            .await
            .map_err(|_| gone())?
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        // From its commit on, a commit of another snapshot (an install) may
        // remove the file, and a stale build's own commit removes it; openraft
        // still gets the snapshot it asked for through the open handle.
        let path = self.snapshots.dir.join(&self.name);
        let data = SnapshotFile::from_std(file, &path);
        self.snapshots.commit(&meta, &self.tmp, &self.name, None)?;
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
        let mut s = self.state.read().fresh();
        let out = (s.last_applied(), s.last_membership());
        match s.take_fault() {
            Some(f) => Err(StorageIOError::read_state_machine(&std::io::Error::other(f)).into()),
            None => Ok(out),
        }
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (state, db, cf) = (self.state.clone(), self.db.clone(), self.cf);
        // Off the async runtime: a batch of thousands of commands reads and
        // writes RocksDB for tens of milliseconds and then waits for the
        // state's write lock behind the readers. On a runtime thread that
        // stalled the node's other tasks (Raft heartbeats among them) until a
        // busy leader lost its lease. The closure owns its handles and drops
        // them before this returns.
        match tokio::task::spawn_blocking(move || apply_entries(&state, db, cf, entries)).await {
            Ok(result) => result,
            Err(e) => Err(StorageIOError::write_state_machine(&std::io::Error::other(format!(
                "apply did not finish: {e}"
            )))
            .into()),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (db, cf_name) = (self.db.clone(), self.cf);
        let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self.snapshots.dir.join(format!("build-{seq}.tmp"));
        let tmp2 = tmp.clone();
        // The thread takes the RocksDB snapshot (it borrows the database, so it
        // lives on the thread that owns the handle) and tells us at once; the
        // file is written while applying goes on.
        let spawned = std::thread::Builder::new().name("qron-snapshot".into()).spawn(move || {
            lower_this_threads_priority();
            let result = write_snapshot_file(&db, cf_name, &tmp2, |applied| {
                let _ = taken_tx.send(applied);
            });
            // Let go of the database before answering: whoever waits for the
            // file may close the database and open it again at once, and this
            // thread, at the lowest priority, may not run again for a while.
            drop(db);
            let _ = done_tx.send(result);
        });
        let applied = match spawned {
            Ok(_) => taken_rx
                .recv()
                .unwrap_or_else(|_| Err("the snapshot thread ended before taking its snapshot".into())),
            Err(e) => Err(format!("cannot start the snapshot thread: {e}")),
        };
        let last = applied.as_ref().ok().and_then(|(l, _)| *l);
        let name = snapshot_file_name(last, seq);
        SnapshotBuilder {
            applied,
            name,
            tmp,
            done: Some(done_rx),
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
        let werr = |e: &dyn std::fmt::Display| {
            StorageIOError::write_snapshot(sig.clone(), &std::io::Error::other(e.to_string()))
        };
        snapshot.sync().await.map_err(|e| werr(&e))?;
        // The received file keeps its temporary name until `commit` records it.
        let path = snapshot.path().to_owned();
        let target = other_cf(self.cf);
        let (db, path2, meta2) = (self.db.clone(), path.clone(), meta.clone());
        let records = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let n = load_snapshot_file(&db, target, &path2)?;
            let mut state = State::over(Arc::new(RocksKv {
                db: db.clone(),
                cf: target,
            }));
            state.set_applied(meta2.last_log_id);
            state.set_membership(&meta2.last_membership);
            state.commit().map_err(std::io::Error::other)?;
            Ok(n)
        })
        .await
        .map_err(|e| werr(&e))?
        .map_err(|e| werr(&e))?;
        // The switch and the record: one synced write (it also makes the new
        // family's writes durable).
        let name = snapshot_file_name(meta.last_log_id, FILE_SEQ.fetch_add(1, Ordering::Relaxed));
        self.snapshots.commit(meta, &path, &name, Some(target))?;
        {
            let mut state = self.state.write();
            *state = State::over(Arc::new(RocksKv {
                db: self.db.clone(),
                cf: target,
            }));
            self.state.forget_job_changes();
        }
        let old = std::mem::replace(&mut self.cf, target);
        // Only space: start-up clears the other family anyway.
        if let Err(e) = clear_cf(&self.db, old) {
            tracing::warn!(error = %e, column_family = old, "cannot clear the old state family; start-up will");
        }
        tracing::info!(snapshot = %meta.snapshot_id, records, column_family = target, "installed snapshot");
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
    use openraft::{CommittedLeaderId, EntryPayload};
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
        let tmp = s.dir.join(format!("build-{index}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: name.trim_end_matches(".json").to_owned(),
        };
        s.commit(&meta, &tmp, &name, None).expect("commit");
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

    fn app(name: &str) -> crate::command::Command {
        crate::command::Command::CreateApp {
            name: name.into(),
            secret: "secret-1".into(),
            now_ms: 1,
        }
    }

    fn entry(index: u64, cmd: crate::command::Command) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn job(name: &str) -> crate::command::Command {
        crate::command::Command::CreateJob {
            spec: serde_json::from_value(serde_json::json!({
                "app": "a", "name": name, "schedule": {"type": "api"},
                "processor": {"type": "shell", "script": "true"}
            }))
            .expect("spec"),
            now_ms: 1,
        }
    }

    /// The change feed the leader's wheel follows: each applied batch that
    /// moves the job epoch records the jobs it wrote; a gap is None.
    #[tokio::test]
    async fn applied_job_changes_are_told_between_two_epochs() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let (e0, e2) = {
            let (_log, mut sm) = crate::open(tmp.path()).expect("open");
            let shared = sm.shared();
            sm.apply(vec![entry(1, app("a"))]).await.expect("apply");
            let e0 = shared.read().job_epoch();
            sm.apply(vec![entry(2, job("one")), entry(3, job("two"))])
                .await
                .expect("apply");
            let e1 = shared.read().job_epoch();
            sm.apply(vec![entry(4, job("three"))]).await.expect("apply");
            let e2 = shared.read().job_epoch();
            assert_eq!(shared.jobs_changed(e0, e1), Some(vec![JobId(1), JobId(2)]));
            assert_eq!(shared.jobs_changed(e1, e2), Some(vec![JobId(3)]));
            assert_eq!(shared.jobs_changed(e0, e2), Some(vec![JobId(1), JobId(2), JobId(3)]));
            assert_eq!(shared.jobs_changed(e2, e2), Some(vec![]));
            // A batch that moves no epoch (a refused duplicate) records nothing.
            sm.apply(vec![entry(5, job("three"))]).await.expect("apply");
            assert_eq!(shared.read().job_epoch(), e2);
            // Not remembered: past what was applied, and after a restart.
            assert_eq!(shared.jobs_changed(e2, e2 + 1), None);
            (e0, e2)
        };
        let (_log, sm) = crate::open(tmp.path()).expect("reopen");
        assert_eq!(sm.shared().jobs_changed(e0, e2), None);
    }

    #[test]
    fn job_changes_need_every_batch_between() {
        let mut c = JobChanges::default();
        c.push(1, 2, vec![JobId(7)]);
        c.push(2, 4, vec![JobId(8), JobId(9)]);
        c.push(5, 6, vec![JobId(10)]);
        assert_eq!(c.between(1, 4), Some(vec![JobId(7), JobId(8), JobId(9)]));
        assert_eq!(c.between(2, 4), Some(vec![JobId(8), JobId(9)]));
        assert_eq!(c.between(0, 4), None, "before the first batch kept");
        assert_eq!(c.between(3, 4), None, "inside a batch");
        assert_eq!(c.between(4, 6), None, "a gap (4 to 5 was never recorded)");
        assert_eq!(c.between(1, 3), None, "ends inside a batch");
        // Bounded: the oldest batches go first.
        let mut c = JobChanges::default();
        c.push(1, 2, vec![JobId(1); JobChanges::MAX_IDS]);
        c.push(2, 3, vec![JobId(2)]);
        assert_eq!(c.between(1, 3), None);
        assert_eq!(c.between(2, 3), Some(vec![JobId(2)]));
    }

    /// A node killed during an install, before the switch: it restarts on its
    /// old state, and the half-written family is cleared.
    #[tokio::test]
    async fn a_node_killed_before_the_switch_restarts_on_its_old_state() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let before = {
            let (_log, mut sm) = crate::open(tmp.path()).expect("open");
            sm.apply(vec![entry(1, app("a"))]).await.expect("apply");
            // A half-done install: records in the other family, no switch.
            let other = other_cf(sm.cf);
            let mut half = State::over(Arc::new(RocksKv {
                db: sm.db.clone(),
                cf: other,
            }));
            half.put_app(&crate::model::App {
                name: "intruder".into(),
                secret: "x".into(),
                created_at_ms: 0,
                retention: Default::default(),
            });
            half.commit().expect("write");
            let records = sm.shared().read().all_records();
            records
        };
        let (_log, sm) = crate::open(tmp.path()).expect("reopen");
        assert_eq!(sm.shared().read().all_records(), before);
        assert!(sm.shared().read().app("intruder").is_none());
        let mut other = Vec::new();
        scan_cf(
            &sm.db,
            other_cf(sm.cf),
            None,
            true,
            &[],
            ALL_KEYS_END,
            false,
            &mut |k, _| {
                other.push(k.to_vec());
                true
            },
        )
        .expect("scan");
        assert!(other.is_empty(), "the other family is cleared at start-up");
    }

    /// Killed after the switch, before the old family was cleared: it restarts
    /// on the new state.
    #[tokio::test]
    async fn a_node_killed_after_the_switch_restarts_on_the_new_state() {
        let tmp = tempfile::TempDir::new().expect("tmp");
        let src = tempfile::TempDir::new().expect("tmp");
        // A snapshot of another store holding app "b".
        let (_l, mut other_sm) = crate::open(src.path()).expect("open src");
        other_sm.apply(vec![entry(1, app("b"))]).await.expect("apply");
        let snap = other_sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        let want = other_sm.shared().read().digest();
        {
            let (_log, mut sm) = crate::open(tmp.path()).expect("open");
            sm.apply(vec![entry(1, app("a"))]).await.expect("apply");
            let target = other_cf(sm.cf);
            let path = sm.snapshots.dir.join("copy.snap");
            let mut bytes = Vec::new();
            let mut data = snap.snapshot;
            data.read_to_end(&mut bytes).await.expect("read");
            std::fs::write(&path, &bytes).expect("write");
            load_snapshot_file(&sm.db, target, &path).expect("load");
            let mut new = State::over(Arc::new(RocksKv {
                db: sm.db.clone(),
                cf: target,
            }));
            new.set_applied(snap.meta.last_log_id);
            new.set_membership(&snap.meta.last_membership);
            new.commit().expect("bookkeeping");
            // The switch and the record, as an install makes them.
            sm.snapshots
                .commit(&snap.meta, &path, "snap-copy.snap", Some(target))
                .expect("switch");
            // ...and the node dies here: the old family still holds app "a".
        }
        let (_log, sm) = crate::open(tmp.path()).expect("reopen");
        let s = sm.shared();
        assert_eq!(s.read().digest(), want);
        assert!(s.read().app("a").is_none() && s.read().app("b").is_some());
    }

    /// A snapshot file that was cut short or altered is refused, and the
    /// state is left as it was.
    #[tokio::test]
    async fn a_damaged_snapshot_is_refused() {
        let src = tempfile::TempDir::new().expect("tmp");
        let (_l, mut sm) = crate::open(src.path()).expect("open");
        sm.apply(vec![entry(1, app("a")), entry(2, app("b"))])
            .await
            .expect("apply");
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        let mut bytes = Vec::new();
        let mut data = snap.snapshot;
        data.read_to_end(&mut bytes).await.expect("read");
        let dst = tempfile::TempDir::new().expect("tmp");
        let (_l2, mut sm2) = crate::open(dst.path()).expect("open");
        sm2.apply(vec![entry(1, app("z"))]).await.expect("apply");
        let before = sm2.shared().read().all_records();
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x01;
        let mut huge = bytes.clone();
        // The first frame's key length (after the 9-byte header) made enormous.
        huge[9..13].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        for damaged in [
            bytes[..bytes.len() - 3].to_vec(),
            bytes[..20].to_vec(),
            b"garbage".to_vec(),
            flipped,
            huge,
        ] {
            let mut f = sm2.begin_receiving_snapshot().await.expect("begin");
            tokio::io::AsyncWriteExt::write_all(&mut f, &damaged)
                .await
                .expect("write");
            assert!(sm2.install_snapshot(&snap.meta, f).await.is_err());
            assert_eq!(sm2.shared().read().all_records(), before);
        }
    }
}
