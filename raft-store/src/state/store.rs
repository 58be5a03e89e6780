//! Where the state's records live: an ordered key-value store ([`Kv`]) seen
//! through this batch's pending writes.
//!
//! Every record is one key: a table byte ([`T`]) and the record's key
//! (ids big endian, so the store's order is id order). How `apply` reads and
//! writes through this batch's pending writes is `overlay.rs`. Tests use
//! [`MemKv`]: the same commands give the same bytes on it and on RocksDB
//! (apply_props checks it).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

/// The tables, as the first byte of every key. Never renumber: the byte is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum T {
    /// openraft's bookkeeping: `applied`, `membership`. Not in the digest.
    Raft = 0,
    /// Counters and the cluster's settings, by name.
    Meta = 1,
    /// App by name.
    App = 2,
    /// Job by id.
    Job = 3,
    /// `"app/name"` → job id.
    JobName = 4,
    /// Instance by id.
    Instance = 5,
    /// Index: instances not in a terminal status.
    Active = 6,
    /// Index: instances waiting for dispatch.
    Waiting = 7,
    /// Index: job id + instance id, every instance held.
    ByJob = 8,
    /// Index: job id + instance id, the active ones.
    ActiveByJob = 9,
    /// Job id → how many of its instances are held.
    JobHeld = 10,
    /// Index: instances with a stop waiting for its worker's confirmation.
    Unconfirmed = 11,
    /// Instance id → its log's bookkeeping (`LogMeta`).
    LogMeta = 12,
    /// Instance id + byte offset → a piece of its log text.
    LogChunk = 13,
    /// Idempotency key → its record. Not in the digest.
    Key = 14,
    /// Expiry time + key: the order keys are pruned in. Not in the digest.
    KeyExpiry = 15,
    /// Where a walk from the oldest starts: table byte (as a u64) + owner →
    /// the lowest id held there. `ByJob` + job id: the job's oldest instance;
    /// `Instance` + 0: the oldest instance of all. Expiry removes the oldest
    /// first, so these walks would otherwise step over every removed key the
    /// store has not compacted away yet (see `records.rs`).
    Floor = 16,
}

/// Tables the digest leaves out: openraft's bookkeeping (log ids differ
/// between a node that applied entries and one that installed a snapshot of
/// them), the idempotency records (remembered answers, not data; a refused
/// keyed request records one, and a refused request must leave the digest as
/// it was) and the floors (where walks start, derived from the records: a
/// node of an earlier release in a rolling upgrade keeps none, and what a walk
/// answers does not depend on them).
pub fn in_digest(table: u8) -> bool {
    ![T::Raft as u8, T::Key as u8, T::KeyExpiry as u8, T::Floor as u8].contains(&table)
}

/// A full key: the table byte, then `rest`.
pub fn key(t: T, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(t as u8);
    k.extend_from_slice(rest);
    k
}

/// The key of a record under a u64 id.
pub fn id_key(t: T, id: u64) -> Vec<u8> {
    key(t, &id.to_be_bytes())
}

/// The key of a record under two u64s (an index entry: owner, then member).
pub fn pair_key(t: T, a: u64, b: u64) -> Vec<u8> {
    let mut k = id_key(t, a);
    k.extend_from_slice(&b.to_be_bytes());
    k
}

/// Reads the big-endian u64 at `at` in `k` (after the table byte: `at` = 1).
pub fn u64_at(k: &[u8], at: usize) -> u64 {
    k.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; 9]
}

/// Pending writes: key → new value, or `None` for a delete.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// An ordered key-value store holding the committed state.
pub trait Kv: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Visits the keys in `[from, to)`, ascending or (`reverse`) descending,
    /// while `f` returns true. A `bulk` walk reads many records once (every
    /// job, the whole state): it reads ahead and leaves the block cache to
    /// what the node serves from.
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        bulk: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), String>;
    /// Writes `writes` at once.
    fn write(&self, writes: &Writes) -> Result<(), String>;
}

/// A [`Kv`] in memory: for tests and for the state before a store is opened.
#[derive(Default)]
pub struct MemKv(RwLock<BTreeMap<Vec<u8>, Vec<u8>>>);

impl Kv for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned())
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        _bulk: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), String> {
        // Copied out first: `f` may read the store again, and a lock held
        // across it could meet a waiting writer.
        let mut items: Vec<(Vec<u8>, Vec<u8>)> = {
            let map = self.0.read().unwrap_or_else(|e| e.into_inner());
            map.range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if reverse {
            items.reverse();
        }
        for (k, v) in &items {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, writes: &Writes) -> Result<(), String> {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k.clone(), v.clone()),
                None => map.remove(k),
            };
        }
        Ok(())
    }
}

/// A key for messages: its table and the rest in hex.
pub fn show_key(k: &[u8]) -> String {
    match k.split_first() {
        Some((t, rest)) => format!("table {t} key {}", hex::encode(rest)),
        None => "the empty key".into(),
    }
}
