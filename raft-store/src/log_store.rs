//! openraft's log store on RocksDB.
//!
//! Column families:
//! * `logs`: key = log index (8 bytes, big endian, so RocksDB's order is log
//!   order), value = the JSON-encoded `Entry`.
//! * `meta`: `vote`, `last_purged`, `committed`, and `snapshot` (the current
//!   snapshot's meta, written by the state machine).
//!
//! Durability (rule 7, docs/rules.md): `save_vote` writes with `sync = true` before it returns.
//! `append` writes its batch to the WAL without syncing and hands the
//! `LogFlushed` callback to a flusher thread; the flusher fsyncs the WAL once
//! for every callback queued so far (group commit) and only then completes
//! them, in order. openraft counts an entry as persisted only when its callback
//! completes, so nothing is acknowledged before it is on disk.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft_types::{Entry, StorageError, TypeConfig};
use crate::types::NodeId;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Opens the node's RocksDB with the column families qron uses.
pub fn open_db(path: &Path) -> Result<Arc<DB>, StorageError> {
    std::fs::create_dir_all(path).map_err(|e| StorageIOError::write(&e))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOGS, CF_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
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

/// The Raft log and vote, in RocksDB. Cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Wraps an open database and starts its WAL flusher thread.
    pub fn new(db: Arc<DB>) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        // The flusher holds the database weakly so that dropping the stores closes it.
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("qron-wal-flusher".into())
            .spawn(move || flusher(flush_db, rx))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(LogStore { db, flusher: tx })
    }

    fn logs(&self) -> Result<&ColumnFamily, StorageError> {
        cf(&self.db, CF_LOGS)
    }
}

/// Completes `LogFlushed` callbacks after one WAL fsync per batch of them.
/// Exits when every `LogStore` (every sender) is gone.
fn flusher(db: std::sync::Weak<DB>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result: Result<(), String> = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the log store was closed".to_owned()),
        };
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
            let entry: Entry = serde_json::from_slice(&v).map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<NodeId>> = get_meta(&self.db, KEY_LAST_PURGED)?;
        let last = match self.db.iterator_cf(self.logs()?, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry = serde_json::from_slice(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
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
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
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
        // Record the purge point first: entries at or below it are ignored from then on,
        // so a crash between the two writes leaves nothing inconsistent.
        put_meta(&self.db, KEY_LAST_PURGED, &log_id, false)?;
        self.db
            .delete_range_cf(self.logs()?, index_key(0), index_key(log_id.index.saturating_add(1)))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
