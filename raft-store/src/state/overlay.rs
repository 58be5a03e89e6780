//! The state's reads and writes: reads look at this batch's pending writes
//! first, then at the committed store ([`Kv`]); writes go only into the
//! pending writes, which the state machine then writes, with `last_applied`,
//! in one RocksDB `WriteBatch`.
//!
//! A read error of the store (a disk fault, a record that does not decode)
//! cannot be a command's refusal: the state records it as a fault, reads
//! answer "absent", and the state machine fails the whole batch with a storage
//! error instead of committing it (openraft then stops the node).

use std::ops::Bound;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::store::{prefix_end, show_key, Kv, Writes};
use super::State;
use crate::encoding::{decode, encode};

impl State {
    /// A state over `kv`'s committed records, with no pending writes.
    pub fn over(kv: Arc<dyn Kv>) -> State {
        State {
            kv,
            writes: Writes::new(),
            changed_jobs: Vec::new(),
            fault: Mutex::new(None),
        }
    }

    /// A new state over the same committed records, with no pending writes:
    /// what the state machine applies a batch into.
    pub fn fresh(&self) -> State {
        State::over(self.kv.clone())
    }

    /// The first read fault since the last call, if any (see the module doc).
    pub fn take_fault(&mut self) -> Option<String> {
        self.fault.get_mut().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Takes the pending writes (the state machine writes them in one batch).
    pub fn take_writes(&mut self) -> Writes {
        std::mem::take(&mut self.writes)
    }

    /// Takes the jobs whose definition the pending writes change, each once
    /// (what the leader's wheel re-plans: `SharedState::jobs_changed`).
    pub fn take_changed_jobs(&mut self) -> Vec<crate::types::JobId> {
        let mut ids = std::mem::take(&mut self.changed_jobs);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Writes the pending writes to the store (tests and the migration; the
    /// state machine writes its own batch).
    pub fn commit(&mut self) -> Result<(), String> {
        if let Some(f) = self.take_fault() {
            return Err(f);
        }
        let writes = self.take_writes();
        self.kv.write(&writes)
    }

    /// Records a fault (the first one is kept).
    pub(super) fn note_fault(&self, what: String) {
        tracing::error!(fault = %what, "state store access failed");
        let mut f = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(what);
    }

    /// The raw bytes at `k`, pending writes first.
    pub(crate) fn raw(&self, k: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self.writes.get(k) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(k),
        }
    }

    /// The record at `k`, decoded. A read or decode fault is noted and answers `None`.
    pub(crate) fn get<V: DeserializeOwned>(&self, k: &[u8]) -> Option<V> {
        match self.raw(k) {
            Ok(Some(bytes)) => match decode(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.note_fault(format!("record {}: {e}", show_key(k)));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.note_fault(format!("reading {}: {e}", show_key(k)));
                None
            }
        }
    }

    /// Sets the record at `k`.
    pub(crate) fn put<V: Serialize + ?Sized>(&mut self, k: Vec<u8>, v: &V) {
        match encode(v) {
            Ok(bytes) => {
                self.writes.insert(k, Some(bytes));
            }
            Err(e) => self.note_fault(format!("encoding {}: {e}", show_key(&k))),
        }
    }

    /// Sets raw bytes at `k` (log text, index markers).
    pub(crate) fn put_raw(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    /// Removes the record at `k`.
    pub(crate) fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// Visits the keys in `[from, to)` (pending writes merged in), ascending or
    /// descending, while `f` returns true.
    pub(crate) fn scan(&self, from: &[u8], to: &[u8], reverse: bool, f: impl FnMut(&[u8], &[u8]) -> bool) {
        self.walk(from, to, reverse, false, f)
    }

    /// [`State::scan`] over many records read once (`bulk`, see [`Kv::scan`]).
    pub(crate) fn scan_bulk(&self, from: &[u8], to: &[u8], f: impl FnMut(&[u8], &[u8]) -> bool) {
        self.walk(from, to, false, true, f)
    }

    fn walk(&self, from: &[u8], to: &[u8], reverse: bool, bulk: bool, mut f: impl FnMut(&[u8], &[u8]) -> bool) {
        let pending: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = {
            let r = self
                .writes
                .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)));
            if reverse {
                r.rev().collect()
            } else {
                r.collect()
            }
        };
        let mut next = 0;
        let mut go = true;
        // Is `a` before `b` in the scan's direction?
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let res = self.kv.scan(from, to, reverse, bulk, &mut |k, v| {
            // Pending keys before this one come first.
            while next < pending.len() && before(pending[next].0, k) {
                if let (pk, Some(pv)) = pending[next] {
                    if !f(pk, pv) {
                        go = false;
                        return false;
                    }
                }
                next += 1;
            }
            if next < pending.len() && pending[next].0.as_slice() == k {
                let (pk, pv) = pending[next];
                next += 1;
                return match pv {
                    Some(pv) => {
                        go = f(pk, pv);
                        go
                    }
                    None => true,
                };
            }
            go = f(k, v);
            go
        });
        if let Err(e) = res {
            self.note_fault(format!("scanning {}: {e}", show_key(from)));
            return;
        }
        if go {
            for (pk, pv) in &pending[next..] {
                if let Some(pv) = pv {
                    if !f(pk, pv) {
                        return;
                    }
                }
            }
        }
    }

    /// Visits every key with `prefix`.
    pub(crate) fn scan_prefix(&self, prefix: &[u8], reverse: bool, f: impl FnMut(&[u8], &[u8]) -> bool) {
        self.scan(prefix, &prefix_end(prefix), reverse, f)
    }
}
