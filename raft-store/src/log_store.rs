//! openraft's log store on RocksDB.
//!
//! Column families:
//! * `logs`: key = log index (8 bytes, big endian, so RocksDB's order is log
//!   order), value = the `Entry` (`crate::encoding`: MessagePack behind a
//!   version byte; entries written by earlier releases are JSON and still read).
//! * `meta`: `vote`, `last_purged`, `committed`, and `snapshot` (the current
//!   snapshot's meta, written by the state machine).
//!
//! Durability (rule 7, docs/rules.md): `save_vote` writes with `sync = true` before it returns.
//! `append` writes its batch to the WAL without syncing and hands the
//! `LogFlushed` callback to a flusher thread; the flusher fsyncs the WAL once
//! for every callback queued so far (group commit) and only then completes
//! them, in order. openraft counts an entry as persisted only when its callback
//! completes, so nothing is acknowledged before it is on disk.
//!
//! Purge never goes past the recorded snapshot ([`Purger`]): openraft 0.9.25
//! asks a follower to purge up to a snapshot it has only queued for install,
//! and a node that died before the install recorded it must still find, on
//! disk, the log after its own snapshot.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::{mpsc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode,
    Options, WriteBatch, WriteBufferManager, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::encoding::{decode, encode};
use crate::raft_types::{Entry, StorageError, TypeConfig};
use crate::types::NodeId;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";
/// The state machine's two column families: one holds the state, the other
/// receives an installed snapshot before the swap (`state_machine`).
pub(crate) const CF_STATE_A: &str = "state_a";
pub(crate) const CF_STATE_B: &str = "state_b";

/// The block cache every column family shares.
pub const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// The bound on all memtables together.
pub const MEMTABLE_BYTES: usize = 32 << 20;
/// The bound on the write-ahead log files kept.
pub const MAX_WAL_BYTES: u64 = 64 << 20;

/// A file with `DELETION_TRIGGER` tombstones among any `DELETION_WINDOW`
/// consecutive entries (or half of it tombstones) is marked for compaction.
const DELETION_WINDOW: usize = 10_000;
const DELETION_TRIGGER: usize = 2_000;

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Opens the node's RocksDB with the column families qron uses.
pub fn open_db(path: &Path) -> Result<Arc<DB>, StorageError> {
    std::fs::create_dir_all(path).map_err(|e| StorageIOError::write(&e))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // A fixed memory budget (docs/architecture.md): one block cache for every
    // column family (data, index and filter blocks), and the memtables of all
    // of them under one bound.
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let buffers = WriteBufferManager::new_write_buffer_manager(MEMTABLE_BYTES, false);
    opts.set_write_buffer_manager(&buffers);
    // A WAL file is kept until every family flushed what it holds; a family
    // written rarely (`meta`) would keep them all. Past this total the
    // stalest families are flushed: bounded disk, and a bounded replay at start.
    opts.set_max_total_wal_size(MAX_WAL_BYTES);
    let cf_opts = || {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Point reads (a job, an instance, a name that must not exist yet)
        // skip the files that cannot hold the key.
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache too (memory bounded
        // by the cache, not by the data), partitioned so that a lookup loads
        // one small partition, not a file's whole index; the top level stays pinned.
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut o = Options::default();
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_size(MEMTABLE_BYTES / 4);
        o.set_max_write_buffer_number(2);
        // Expiry and finished instances delete keys in id order, and purging
        // deletes the log's oldest entries: a file dense with tombstones is
        // compacted soon (so the deleted keys' tombstones go away), not when
        // its level's size next asks for it.
        o.add_compact_on_deletion_collector_factory(DELETION_WINDOW, DELETION_TRIGGER, 0.5);
        o
    };
    let cfs = [CF_LOGS, CF_META, CF_STATE_A, CF_STATE_B]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, cf_opts()));
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| StorageIOError::write(&e))?;
    Ok(Arc::new(db))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StorageError> {
    db.cf_handle(name)
        .ok_or_else(|| StorageIOError::read(&std::io::Error::other(format!("column family {name} is missing"))).into())
}

pub(crate) fn get_meta<T: DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, StorageError> {
    let Some(bytes) = db.get_cf(cf(db, CF_META)?, key).map_err(|e| StorageIOError::read(&e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StorageIOError::read(&e).into())
}

pub(crate) fn put_meta<T: Serialize>(db: &DB, key: &[u8], value: &T, sync: bool) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    db.put_cf_opt(cf(db, CF_META)?, key, bytes, &wo)
        .map_err(|e| StorageIOError::write(&e).into())
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// How far the log is purged. Shared by the log store, where openraft asks for
/// purges, and the state machine, which tells it when a snapshot is recorded.
///
/// openraft 0.9.25 pushes `PurgeLog { upto }` right after it queues a snapshot
/// install on the state machine, without waiting for it
/// (`FollowingHandler::install_full_snapshot`). Deleting at once would leave a
/// node that dies before the install with an old snapshot and no log after it:
/// it could not re-apply what it had committed, and `Raft::new` would fail on
/// every start. So a purge is done in two steps:
///
/// * **asked**: the newest purge openraft asked for. At once, entries up to it
///   are invisible to openraft through this process's store (reads skip them,
///   `get_log_state` reports it), as openraft's `purge` contract expects.
/// * **done**: recorded under `last_purged` and deleted from disk, never past
///   the recorded snapshot's last log id (`covered`). The rest is done when the
///   state machine records a snapshot that covers it ([`Purger::covered_upto`]).
///
/// After a crash, a restart sees only what was done: the entries between the
/// recorded snapshot and the asked purge are still there, contiguous with the
/// rest of the log, so the log has no hole and openraft's order
/// `last_purged ≤ snapshot ≤ committed` holds on disk. The asked point is not
/// persisted: it only mirrors openraft's in-memory state, which a restart
/// rebuilds from the disk.
#[derive(Debug)]
pub(crate) struct Purger {
    db: Arc<DB>,
    points: Mutex<PurgePoints>,
}

#[derive(Debug, Clone, Copy, Default)]
struct PurgePoints {
    asked: Option<LogId<NodeId>>,
    done: Option<LogId<NodeId>>,
    /// The recorded snapshot's last log id: nothing after it may be deleted.
    covered: Option<LogId<NodeId>>,
}

impl Purger {
    /// Reads what was purged. `covered` starts at nothing: the state machine
    /// reports its recorded snapshot when it opens.
    pub(crate) fn open(db: Arc<DB>) -> Result<Arc<Self>, StorageError> {
        let done: Option<LogId<NodeId>> = get_meta(&db, KEY_LAST_PURGED)?;
        Ok(Arc::new(Purger {
            db,
            points: Mutex::new(PurgePoints {
                asked: done,
                done,
                covered: None,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, PurgePoints> {
        // The points are plain values, consistent between statements: a poisoned lock is still usable.
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The purge openraft asked for: entries up to it are gone for openraft.
    fn asked(&self) -> Option<LogId<NodeId>> {
        self.lock().asked
    }

    /// openraft asks to purge up to `upto`: done at once as far as the recorded
    /// snapshot covers it, the rest when a snapshot covers it.
    fn ask(&self, upto: LogId<NodeId>) -> Result<(), StorageError> {
        let mut p = self.lock();
        p.asked = p.asked.max(Some(upto));
        self.settle(&mut p)
    }

    /// The state machine recorded (durably) a snapshot whose last log id is `last`.
    pub(crate) fn covered_upto(&self, last: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        let mut p = self.lock();
        p.covered = p.covered.max(last);
        self.settle(&mut p)
    }

    /// Deletes what was asked and is covered, and records it. The purge point is
    /// written first: entries at or below it are ignored from then on, so a crash
    /// between the two writes leaves nothing inconsistent (and one WAL orders them).
    fn settle(&self, p: &mut PurgePoints) -> Result<(), StorageError> {
        let target = p.asked.min(p.covered);
        let Some(upto) = target.filter(|_| target > p.done) else {
            return Ok(());
        };
        put_meta(&self.db, KEY_LAST_PURGED, &upto, false)?;
        self.db
            .delete_range_cf(
                cf(&self.db, CF_LOGS)?,
                index_key(0),
                index_key(upto.index.saturating_add(1)),
            )
            .map_err(|e| StorageIOError::write_logs(&e))?;
        p.done = Some(upto);
        Ok(())
    }
}

/// The Raft log and vote, in RocksDB. Cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    purger: Arc<Purger>,
}

impl LogStore {
    /// Wraps an open database and starts its WAL flusher thread.
    pub(crate) fn new(db: Arc<DB>, purger: Arc<Purger>) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        // The flusher holds the database weakly so that dropping the stores closes it.
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("qron-wal-flusher".into())
            .spawn(move || flusher(flush_db, rx))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(LogStore {
            db,
            flusher: tx,
            purger,
        })
    }

    fn logs(&self) -> Result<&ColumnFamily, StorageError> {
        cf(&self.db, CF_LOGS)
    }
}

/// An fsync of the log at least this long is logged.
const SLOW_FSYNC: std::time::Duration = std::time::Duration::from_millis(50);

/// Completes `LogFlushed` callbacks after one WAL fsync per batch of them.
/// Exits when every `LogStore` (every sender) is gone.
fn flusher(db: std::sync::Weak<DB>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let result: Result<(), String> = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the log store was closed".to_owned()),
        };
        let took = started.elapsed();
        if took >= SLOW_FSYNC {
            // Every commit and every follower's answer to an append waits for
            // this: a slow one is what makes heartbeats late (docs/architecture.md).
            tracing::warn!(
                ms = took.as_millis() as u64,
                appends = batch.len(),
                "slow fsync of the Raft log"
            );
        }
        for cb in batch {
            cb.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "fsync of the Raft log failed; entries are not acknowledged");
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // Entries a purge asked for may still be on disk (see `Purger`): never hand them out.
        let start = start.max(self.purger.asked().map_or(0, |p| p.index.saturating_add(1)));
        let key = index_key(start);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.logs()?, IteratorMode::From(&key, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| StorageIOError::read_logs(&std::io::Error::other("bad log key")))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.purger.asked();
        let last = match self.db.iterator_cf(self.logs()?, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
        // An entry at or below the asked purge point is purged for openraft, even if still on disk.
        let last = last.filter(|l| last_purged.is_none_or(|p| l.index > p.index));
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        put_meta(&self.db, KEY_VOTE, vote, true).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        get_meta(&self.db, KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        // Not synced: after a crash openraft learns the commit index from the leader again;
        // this only lets a restarted node re-apply what it already knew was committed.
        put_meta(&self.db, KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(get_meta::<Option<LogId<NodeId>>>(&self.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = self.logs()?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(logs, index_key(entry.log_id.index), bytes);
        }
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|e| StorageIOError::write_logs(&e))?;
        if let Err(mpsc::SendError(cb)) = self.flusher.send(callback) {
            // The flusher thread is gone (it only exits when every store is dropped): sync here.
            let r = self
                .db
                .flush_wal(true)
                .map_err(|e| std::io::Error::other(e.to_string()));
            cb.log_io_completed(r);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Not synced on its own: the next append's fsync covers it, and losing it in a
        // crash is the same as never having received the entries that conflicted.
        self.db
            .delete_range_cf(self.logs()?, index_key(log_id.index), index_key(u64::MAX))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // delete_range's end is exclusive: remove the entry at u64::MAX too, should it exist.
        self.db
            .delete_cf(self.logs()?, index_key(u64::MAX))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // Never past the recorded snapshot: see `Purger`.
        self.purger.ask(log_id)
    }
}
