//! Typed access to the state's tables, and the indexes kept with them.
//!
//! The indexes of instances (active, waiting, per job, unconfirmed stops) are
//! derived in one place, [`State::put_instance`], from the record before and
//! after the change, so no command can forget one. Reads answer owned values:
//! a record is decoded from the store (or this batch's writes) each time.

use std::collections::BTreeMap;

use openraft::{LogId, StoredMembership};

use super::store::{id_key, key, pair_key, u64_at, T};
use super::State;
use crate::command::CommandError;
use crate::idempotency::KeyRecord;
use crate::instance::{Instance, InstanceId, InstanceStatus, LogMeta, LogRead};
use crate::model::{App, Job};
use crate::retention::ClusterPolicy;
use crate::types::{JobId, NodeId, QronNode};

/// Bytes of log text per stored piece.
pub const LOG_CHUNK: u64 = 16 * 1024;

const NEXT_JOB_ID: &[u8] = b"next_job_id";
const NEXT_INSTANCE_ID: &[u8] = b"next_instance_id";
const JOB_EPOCH: &[u8] = b"job_epoch";
const EXPIRED_TOTAL: &[u8] = b"expired_total";
const LOG_BYTES: &[u8] = b"log_bytes";
const RETENTION: &[u8] = b"retention";
const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";

impl State {
    fn meta_u64(&self, name: &[u8]) -> u64 {
        self.get(&key(T::Meta, name)).unwrap_or(0)
    }

    fn set_meta_u64(&mut self, name: &[u8], v: u64) {
        self.put(key(T::Meta, name), &v);
    }

    /// The id the last created job got (0: none yet).
    pub fn next_job_id(&self) -> u64 {
        self.meta_u64(NEXT_JOB_ID)
    }

    pub(super) fn take_job_id(&mut self) -> JobId {
        let id = self.next_job_id() + 1;
        self.set_meta_u64(NEXT_JOB_ID, id);
        JobId(id)
    }

    /// The id the last created instance got (0: none yet); ids are dense.
    pub fn next_instance_id(&self) -> u64 {
        self.meta_u64(NEXT_INSTANCE_ID)
    }

    pub(super) fn take_instance_id(&mut self) -> InstanceId {
        let id = self.next_instance_id() + 1;
        self.set_meta_u64(NEXT_INSTANCE_ID, id);
        InstanceId(id)
    }

    /// Bumped by every change to a job's definition: the leader's time wheel
    /// rebuilds when it moves.
    pub fn job_epoch(&self) -> u64 {
        self.meta_u64(JOB_EPOCH)
    }

    /// Records that job `id`'s definition changed.
    pub(super) fn bump_job_epoch(&mut self, id: JobId) {
        let e = self.job_epoch() + 1;
        self.set_meta_u64(JOB_EPOCH, e);
        self.changed_jobs.push(id);
    }

    /// Instances that expired, over the cluster's life.
    pub fn expired_total(&self) -> u64 {
        self.meta_u64(EXPIRED_TOTAL)
    }

    pub(super) fn count_expired(&mut self) {
        let n = self.expired_total() + 1;
        self.set_meta_u64(EXPIRED_TOTAL, n);
    }

    /// Bytes of all instance logs together.
    pub fn log_bytes(&self) -> u64 {
        self.meta_u64(LOG_BYTES)
    }

    fn add_log_bytes(&mut self, added: u64, removed: u64) {
        let n = self.log_bytes().saturating_add(added).saturating_sub(removed);
        self.set_meta_u64(LOG_BYTES, n);
    }

    /// The cluster's retention (rule 12): defaults for every app and job.
    pub fn retention(&self) -> ClusterPolicy {
        self.get(&key(T::Meta, RETENTION)).unwrap_or_default()
    }

    pub(super) fn put_retention(&mut self, r: &ClusterPolicy) {
        self.put(key(T::Meta, RETENTION), r);
    }

    /// The last log entry applied (openraft bookkeeping).
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.get(&key(T::Raft, APPLIED)).unwrap_or_default()
    }

    /// The last membership applied (openraft bookkeeping).
    pub fn last_membership(&self) -> StoredMembership<NodeId, QronNode> {
        self.get(&key(T::Raft, MEMBERSHIP)).unwrap_or_default()
    }

    /// Records openraft's bookkeeping; the state machine writes it in the
    /// same batch as the entries it applied.
    pub fn set_applied(&mut self, applied: Option<LogId<NodeId>>) {
        self.put(key(T::Raft, APPLIED), &applied);
    }

    pub fn set_membership(&mut self, m: &StoredMembership<NodeId, QronNode>) {
        self.put(key(T::Raft, MEMBERSHIP), m);
    }

    // --- apps ---

    /// The app named `name`.
    pub fn app(&self, name: &str) -> Option<App> {
        self.get(&key(T::App, name.as_bytes()))
    }

    /// Every app, by name.
    pub fn apps(&self) -> Vec<App> {
        let mut out = Vec::new();
        self.scan_prefix(&[T::App as u8], false, |_, v| {
            match crate::encoding::decode(v) {
                Ok(a) => out.push(a),
                Err(e) => tracing::error!(error = %e, "an app record does not decode"),
            }
            true
        });
        out
    }

    pub(crate) fn put_app(&mut self, app: &App) {
        self.put(key(T::App, app.name.as_bytes()), app);
    }

    // --- jobs ---

    /// Looks a job up by id.
    pub fn job(&self, id: JobId) -> Result<Job, CommandError> {
        self.get(&id_key(T::Job, id.0))
            .ok_or_else(|| CommandError::NotFound(format!("job {id}")))
    }

    /// Jobs in id order after `after`, at most `limit` that pass `keep`.
    pub fn jobs_page(&self, after: Option<JobId>, limit: usize, mut keep: impl FnMut(&Job) -> bool) -> Vec<Job> {
        let mut out = Vec::new();
        let from = id_key(T::Job, after.map_or(0, |a| a.0.saturating_add(1)));
        if limit == 0 || after.is_some_and(|a| a.0 == u64::MAX) {
            return out;
        }
        self.scan(&from, &[T::Job as u8 + 1], false, |_, v| {
            match crate::encoding::decode::<Job>(v) {
                Ok(j) if keep(&j) => out.push(j),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "a job record does not decode"),
            }
            out.len() < limit
        });
        out
    }

    /// Calls `f` with every job, in id order (a bulk walk: the records it
    /// reads do not stay in the block cache).
    pub fn for_each_job(&self, mut f: impl FnMut(Job)) {
        self.scan_bulk(&[T::Job as u8], &[T::Job as u8 + 1], |_, v| {
            match crate::encoding::decode::<Job>(v) {
                Ok(j) => f(j),
                Err(e) => tracing::error!(error = %e, "a job record does not decode"),
            }
            true
        });
    }

    pub(super) fn put_job(&mut self, job: &Job) {
        self.put(id_key(T::Job, job.id.0), job);
    }

    pub(super) fn del_job(&mut self, id: JobId) {
        self.del(id_key(T::Job, id.0));
    }

    /// The job named `name` in `app`.
    pub fn job_id_named(&self, app: &str, name: &str) -> Option<JobId> {
        self.get(&key(T::JobName, name_key(app, name).as_bytes()))
    }

    pub(super) fn set_job_name(&mut self, app: &str, name: &str, id: Option<JobId>) {
        let k = key(T::JobName, name_key(app, name).as_bytes());
        match id {
            Some(id) => self.put(k, &id),
            None => self.del(k),
        }
    }

    // --- instances ---

    /// The instance `id`, if held.
    pub fn instance_opt(&self, id: InstanceId) -> Option<Instance> {
        self.get(&id_key(T::Instance, id.0))
    }

    /// Writes an instance and keeps its indexes, from the record it replaces.
    pub(super) fn put_instance(&mut self, inst: &Instance) {
        let old = self.instance_opt(inst.id);
        let (id, job) = (inst.id.0, inst.job_id.0);
        if old.is_none() {
            let held = self.held_of(inst.job_id);
            self.put(id_key(T::JobHeld, job), &(held + 1));
            // New ids are the highest, but a migration may come in any order.
            let job_floor = self.stored_floor(T::ByJob, job);
            if held == 0 || job_floor.is_some_and(|f| id < f) {
                self.set_floor(T::ByJob, job, Some(id));
            }
            if self.stored_floor(T::Instance, 0).is_some_and(|f| id < f) {
                self.set_floor(T::Instance, 0, Some(id));
            }
        }
        let before = old.as_ref().map(index_keys).unwrap_or_default();
        let after = index_keys(inst);
        for k in &before {
            if !after.contains(k) {
                self.del(k.clone());
            }
        }
        for k in after {
            if !before.contains(&k) {
                self.put_raw(k, Vec::new());
            }
        }
        self.put(id_key(T::Instance, id), inst);
    }

    /// Removes an instance, its indexes and its log.
    ///
    /// Only the index entries its record says exist are deleted: a delete of
    /// an absent key still leaves a tombstone in the store for walks to step
    /// over until compaction.
    pub(super) fn del_instance(&mut self, inst: &Instance) {
        let (id, job) = (inst.id.0, inst.job_id.0);
        self.del(id_key(T::Instance, id));
        for k in index_keys(inst) {
            self.del(k);
        }
        let held = self.held_of(inst.job_id).saturating_sub(1);
        if held == 0 {
            self.del(id_key(T::JobHeld, job));
            self.set_floor(T::ByJob, job, None);
        } else {
            self.put(id_key(T::JobHeld, job), &held);
            let floor = self.stored_floor(T::ByJob, job);
            // A floor naming an instance no longer held was left by a node of
            // an earlier release (it removes without keeping floors): it is
            // still a lower bound, so the walk from it finds the oldest.
            if floor.is_none_or(|f| f == id || !self.holds(pair_key(T::ByJob, job, f))) {
                // This instance's entry is deleted above: the walk passes it.
                let next = self.first_id_from(&id_key(T::ByJob, job), floor.unwrap_or(0), 9);
                self.set_floor(T::ByJob, job, next);
            }
        }
        let floor = self.stored_floor(T::Instance, 0);
        if floor.is_none_or(|f| f == id || !self.holds(id_key(T::Instance, f))) {
            // None held: the next instance created is the oldest.
            let next = self
                .first_id_from(&[T::Instance as u8], floor.unwrap_or(0), 1)
                .unwrap_or_else(|| self.next_instance_id() + 1);
            self.set_floor(T::Instance, 0, Some(next));
        }
        self.remove_log(inst.id);
    }

    // --- floors ---
    //
    // Expiry removes the oldest instances first, and a store that deletes
    // keeps a tombstone for each removed key until compaction reaches it: a
    // walk from id 0 (the oldest of a job, the oldest of all) would step over
    // every one of them, and under churn that is most of the table. A floor
    // records the lowest id held, kept exact by the removal that takes the
    // lowest (one seek to the next); walks from the oldest start there.
    // Absent (a store written before floors) means 0: walks start at the
    // beginning, and the next removal records it.

    fn holds(&self, k: Vec<u8>) -> bool {
        match self.raw(&k) {
            Ok(v) => v.is_some(),
            Err(e) => {
                self.note_fault(format!("reading {}: {e}", super::store::show_key(&k)));
                true
            }
        }
    }

    fn stored_floor(&self, t: T, owner: u64) -> Option<u64> {
        self.get(&pair_key(T::Floor, t as u64, owner))
    }

    fn set_floor(&mut self, t: T, owner: u64, v: Option<u64>) {
        let k = pair_key(T::Floor, t as u64, owner);
        match v {
            Some(v) => self.put(k, &v),
            None => self.del(k),
        }
    }

    /// The first id under `prefix` from `from` on (read at byte `at` of the key).
    fn first_id_from(&self, prefix: &[u8], from: u64, at: usize) -> Option<u64> {
        let mut lo = prefix.to_vec();
        lo.extend_from_slice(&from.to_be_bytes());
        let mut found = None;
        self.scan(&lo, &super::store::prefix_end(prefix), false, |k, _| {
            found = Some(u64_at(k, at));
            false
        });
        found
    }

    /// No instance of `job` below this id is held.
    pub fn job_floor(&self, job: JobId) -> InstanceId {
        InstanceId(self.stored_floor(T::ByJob, job.0).unwrap_or(0))
    }

    /// No instance below this id is held.
    pub fn instance_floor(&self) -> InstanceId {
        InstanceId(self.stored_floor(T::Instance, 0).unwrap_or(0))
    }

    /// How many instances of `job` are held.
    pub fn held_of(&self, job: JobId) -> u64 {
        self.get(&id_key(T::JobHeld, job.0)).unwrap_or(0)
    }

    /// Ids of an index table (`Active`, `Waiting`, `Unconfirmed`), ascending.
    fn index_ids(&self, t: T) -> Vec<InstanceId> {
        let mut out = Vec::new();
        self.scan_prefix(&[t as u8], false, |k, _| {
            out.push(InstanceId(u64_at(k, 1)));
            true
        });
        out
    }

    /// The instances not in a terminal status, by id.
    pub fn active_ids(&self) -> Vec<InstanceId> {
        self.index_ids(T::Active)
    }

    /// The instances waiting for dispatch, by id.
    pub fn waiting_ids(&self) -> Vec<InstanceId> {
        self.index_ids(T::Waiting)
    }

    /// The instances with a stop waiting for its worker's confirmation, by id.
    pub fn unconfirmed_ids(&self) -> Vec<InstanceId> {
        self.index_ids(T::Unconfirmed)
    }

    /// The active instances of `job`: how many, counting at most `max`.
    pub fn active_of_job(&self, job: JobId, max: usize) -> usize {
        let mut n = 0;
        self.scan_prefix(&id_key(T::ActiveByJob, job.0), false, |_, _| {
            n += 1;
            n < max
        });
        n
    }

    /// Ids of `job`'s instances from `from` (inclusive) on, ascending or
    /// (`newest_first`) descending, while `f` returns true.
    pub fn job_instance_ids(
        &self,
        job: JobId,
        from: InstanceId,
        newest_first: bool,
        mut f: impl FnMut(InstanceId) -> bool,
    ) {
        let lo = pair_key(T::ByJob, job.0, from.max(self.job_floor(job)).0);
        let hi = super::store::prefix_end(&id_key(T::ByJob, job.0));
        self.scan(&lo, &hi, newest_first, |k, _| f(InstanceId(u64_at(k, 9))));
    }

    /// Instances by id from `from` (inclusive), ascending or descending, while `f` returns true.
    pub fn instances_from(&self, from: InstanceId, newest_first: bool, mut f: impl FnMut(Instance) -> bool) {
        let lo = id_key(T::Instance, from.max(self.instance_floor()).0);
        self.scan(
            &lo,
            &[T::Instance as u8 + 1],
            newest_first,
            |_, v| match crate::encoding::decode::<Instance>(v) {
                Ok(i) => f(i),
                Err(e) => {
                    tracing::error!(error = %e, "an instance record does not decode");
                    true
                }
            },
        );
    }

    /// Visits the held jobs that have instances, in job order, from `from`, with their counts.
    pub fn jobs_with_instances(&self, from: JobId, mut f: impl FnMut(JobId, u64) -> bool) {
        let lo = id_key(T::JobHeld, from.0);
        self.scan(&lo, &[T::JobHeld as u8 + 1], false, |k, v| {
            let n = crate::encoding::decode::<u64>(v).unwrap_or(0);
            f(JobId(u64_at(k, 1)), n)
        });
    }

    // --- logs ---

    /// A log's bookkeeping.
    pub fn log_meta(&self, id: InstanceId) -> Option<LogMeta> {
        self.get(&id_key(T::LogMeta, id.0))
    }

    pub(super) fn put_log_meta(&mut self, id: InstanceId, meta: &LogMeta) {
        self.put(id_key(T::LogMeta, id.0), meta);
    }

    /// Appends text to a log whose bookkeeping says it holds `meta.len` bytes.
    ///
    /// The text lives in pieces of [`LOG_CHUNK`] bytes at aligned offsets (the
    /// last one partly filled and rewritten as it grows): how a log is cut
    /// depends on its text only, never on how it arrived, so a node that
    /// migrated a log whole and one that applied it batch by batch hold the
    /// same records.
    pub(super) fn push_log_text(&mut self, id: InstanceId, meta: &mut LogMeta, text: &str) {
        let mut rest = text.as_bytes();
        let mut at = meta.len;
        while !rest.is_empty() {
            let chunk = at - at % LOG_CHUNK;
            let k = pair_key(T::LogChunk, id.0, chunk);
            let mut piece = Vec::new();
            if at > chunk {
                match self.raw(&k) {
                    Ok(p) => piece = p.unwrap_or_default(),
                    Err(e) => self.note_fault(format!("reading {}: {e}", super::store::show_key(&k))),
                }
            }
            let take = ((chunk + LOG_CHUNK - at) as usize).min(rest.len());
            piece.extend_from_slice(&rest[..take]);
            self.put_raw(k, piece);
            rest = &rest[take..];
            at += take as u64;
        }
        meta.len = at;
        self.add_log_bytes(text.len() as u64, 0);
    }

    /// At most `max` bytes of a log's text from byte `offset` (moved forward
    /// to a char boundary), ending at a char boundary.
    pub fn log_text(&self, id: InstanceId, offset: u64, max: usize) -> LogRead {
        let Some(meta) = self.log_meta(id) else {
            return LogRead::default();
        };
        let offset = offset.min(meta.len);
        // The piece holding `offset` starts at or before it: find it going down.
        let mut start = offset;
        self.scan(
            &pair_key(T::LogChunk, id.0, 0),
            &pair_key(T::LogChunk, id.0, offset.saturating_add(1)),
            true,
            |k, _| {
                start = u64_at(k, 9);
                false
            },
        );
        // A char is at most 4 bytes: read a little more, then cut at boundaries.
        let want = max.saturating_add(4);
        let mut bytes: Vec<u8> = Vec::new();
        let hi = super::store::prefix_end(&id_key(T::LogChunk, id.0));
        self.scan(&pair_key(T::LogChunk, id.0, start), &hi, false, |k, v| {
            let at = u64_at(k, 9);
            let skip = (offset.saturating_sub(at) as usize).min(v.len());
            bytes.extend_from_slice(&v[skip..]);
            bytes.len() < want
        });
        let lead = bytes.iter().take_while(|b| (**b & 0xc0) == 0x80).count();
        let mut end = (lead + max).min(bytes.len());
        while end > lead && end < bytes.len() && (bytes[end] & 0xc0) == 0x80 {
            end -= 1;
        }
        LogRead {
            offset: offset + lead as u64,
            text: String::from_utf8_lossy(&bytes[lead..end]).into_owned(),
            len: meta.len,
            truncated: meta.truncated,
        }
    }

    /// Removes an instance's log and its bytes from the total; false if it had none.
    pub(super) fn remove_log(&mut self, id: InstanceId) -> bool {
        let Some(meta) = self.log_meta(id) else { return false };
        let mut keys = Vec::new();
        self.scan_prefix(&id_key(T::LogChunk, id.0), false, |k, _| {
            keys.push(k.to_vec());
            true
        });
        for k in keys {
            self.del(k);
        }
        self.del(id_key(T::LogMeta, id.0));
        self.add_log_bytes(0, meta.len);
        true
    }

    /// Visits logs from the oldest instance on, with their sizes, while `f` returns true.
    pub fn logs_oldest_first(&self, mut f: impl FnMut(InstanceId, u64) -> bool) {
        // Logs belong to held instances: none is below the instance floor.
        let lo = id_key(T::LogMeta, self.instance_floor().0);
        self.scan(&lo, &[T::LogMeta as u8 + 1], false, |k, v| {
            let len = crate::encoding::decode::<LogMeta>(v).map_or(0, |m| m.len);
            f(InstanceId(u64_at(k, 1)), len)
        });
    }

    // --- idempotency keys ---

    /// The idempotency record of key `k`, expired or not.
    pub fn key_record(&self, k: &str) -> Option<KeyRecord> {
        self.get(&key(T::Key, k.as_bytes()))
    }

    pub(super) fn put_key_record(&mut self, k: &str, record: &KeyRecord) {
        if let Some(old) = self.key_record(k) {
            self.del(expiry_key(old.expires_at_ms, k));
        }
        self.put_raw(expiry_key(record.expires_at_ms, k), Vec::new());
        self.put(key(T::Key, k.as_bytes()), record);
    }

    /// Removes at most `max` key records expired at `now_ms`, soonest expiry first.
    pub(super) fn prune_keys(&mut self, now_ms: i64, max: usize) {
        let mut gone = Vec::new();
        let end = expiry_key(now_ms.saturating_add(1), "");
        self.scan(&[T::KeyExpiry as u8], &end, false, |k, _| {
            gone.push(k.to_vec());
            gone.len() < max
        });
        for k in gone {
            let name = k.get(9..).unwrap_or_default().to_vec();
            self.del(k);
            self.del(key(T::Key, &name));
        }
    }

    /// The entries of the key expiry index (tests check it stays in step).
    #[cfg(test)]
    pub(crate) fn key_expiry_count(&self) -> usize {
        let mut n = 0;
        self.scan_prefix(&[T::KeyExpiry as u8], false, |_, _| {
            n += 1;
            true
        });
        n
    }

    /// How many idempotency records are held, expired ones not yet pruned included.
    pub fn key_count(&self) -> usize {
        let mut n = 0;
        self.scan_prefix(&[T::Key as u8], false, |_, _| {
            n += 1;
            true
        });
        n
    }
}

impl State {
    /// Checks every index against the records it is derived from (tests, and
    /// a node that wants to verify its store): the instance indexes, the
    /// per-job counts, the log sizes and their total, the key expiry index.
    pub fn check_indexes(&self) -> Result<(), String> {
        use std::collections::BTreeSet;
        let mut want: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut held: BTreeMap<u64, u64> = BTreeMap::new();
        // Every record, not from the floors: they are checked here too.
        let mut records = Vec::new();
        self.scan_prefix(&[T::Instance as u8], false, |_, v| {
            records.push(crate::encoding::decode::<Instance>(v));
            true
        });
        for i in records {
            let i = i.map_err(|e| format!("an instance record does not decode: {e}"))?;
            *held.entry(i.job_id.0).or_default() += 1;
            want.extend(index_keys(&i));
        }
        let mut have = BTreeSet::new();
        for t in [T::Active, T::Waiting, T::ByJob, T::ActiveByJob, T::Unconfirmed] {
            self.scan_prefix(&[t as u8], false, |k, _| {
                have.insert(k.to_vec());
                true
            });
        }
        if want != have {
            let missing: Vec<_> = want.difference(&have).map(|k| super::store::show_key(k)).collect();
            let extra: Vec<_> = have.difference(&want).map(|k| super::store::show_key(k)).collect();
            return Err(format!("instance indexes differ: missing {missing:?}, extra {extra:?}"));
        }
        // Floors, where recorded, are the lowest id held.
        let mut lowest: BTreeMap<u64, u64> = BTreeMap::new();
        let mut oldest = None;
        for k in &want {
            if k[0] == T::ByJob as u8 {
                let (job, id) = (u64_at(k, 1), u64_at(k, 9));
                let e = lowest.entry(job).or_insert(id);
                *e = (*e).min(id);
                oldest = Some(oldest.map_or(id, |o: u64| o.min(id)));
            }
        }
        let mut floors = Vec::new();
        self.scan_prefix(&[T::Floor as u8], false, |k, v| {
            floors.push((u64_at(k, 1), u64_at(k, 9), crate::encoding::decode::<u64>(v).ok()));
            true
        });
        for (t, owner, v) in floors {
            let want = match t {
                t if t == T::ByJob as u64 => lowest.get(&owner).copied(),
                t if t == T::Instance as u64 && owner == 0 => {
                    Some(oldest.unwrap_or_else(|| self.next_instance_id() + 1))
                }
                _ => None,
            };
            if v.is_none() || v != want {
                return Err(format!(
                    "floor of table {t} owner {owner} is {v:?}, the records say {want:?}"
                ));
            }
        }
        let mut counted = BTreeMap::new();
        self.jobs_with_instances(JobId(0), |j, n| {
            counted.insert(j.0, n);
            true
        });
        if counted != held {
            return Err(format!("per-job counts {counted:?}, records say {held:?}"));
        }
        let mut total = 0u64;
        let mut metas = Vec::new();
        self.scan_prefix(&[T::LogMeta as u8], false, |k, v| {
            metas.push((
                InstanceId(u64_at(k, 1)),
                crate::encoding::decode::<LogMeta>(v).map_or(0, |m| m.len),
            ));
            true
        });
        for (id, len) in metas {
            let mut chunks = 0u64;
            let mut next = 0u64;
            let mut gap = None;
            self.scan_prefix(&id_key(T::LogChunk, id.0), false, |k, v| {
                if u64_at(k, 9) != next {
                    gap = Some(u64_at(k, 9));
                }
                next = u64_at(k, 9) + v.len() as u64;
                chunks += v.len() as u64;
                true
            });
            if chunks != len || gap.is_some() {
                return Err(format!(
                    "log {id}: meta says {len} bytes, pieces hold {chunks} (gap at {gap:?})"
                ));
            }
            total += len;
        }
        if total != self.log_bytes() {
            return Err(format!("log bytes {} recorded, {total} held", self.log_bytes()));
        }
        let mut keys = 0;
        let mut expiries = 0;
        self.scan_prefix(&[T::Key as u8], false, |_, _| {
            keys += 1;
            true
        });
        self.scan_prefix(&[T::KeyExpiry as u8], false, |_, _| {
            expiries += 1;
            true
        });
        if keys != expiries {
            return Err(format!("{keys} idempotency records, {expiries} in the expiry index"));
        }
        Ok(())
    }
}

/// The index entries an instance record has, derived from the record alone:
/// what `put_instance` keeps, `del_instance` removes and `check_indexes` expects.
fn index_keys(inst: &Instance) -> Vec<Vec<u8>> {
    let (id, job) = (inst.id.0, inst.job_id.0);
    let mut keys = vec![pair_key(T::ByJob, job, id)];
    if !inst.status.is_terminal() {
        keys.push(id_key(T::Active, id));
        keys.push(pair_key(T::ActiveByJob, job, id));
    }
    if inst.status == InstanceStatus::WaitingDispatch {
        keys.push(id_key(T::Waiting, id));
    }
    if inst.stop_pending.is_some() {
        keys.push(id_key(T::Unconfirmed, id));
    }
    keys
}

fn name_key(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

/// The expiry index key: time (sign bit flipped, so the byte order is the
/// number order), then the key.
fn expiry_key(at_ms: i64, k: &str) -> Vec<u8> {
    let ordered = (at_ms as u64) ^ (1 << 63);
    let mut out = id_key(T::KeyExpiry, ordered);
    out.extend_from_slice(k.as_bytes());
    out
}

/// What `crate::legacy` writes through (the one way records enter but `apply`).
impl State {
    pub(crate) fn migrate_counters(
        &mut self,
        next_job_id: u64,
        next_instance_id: u64,
        job_epoch: u64,
        expired_total: u64,
        retention: &ClusterPolicy,
    ) {
        self.set_meta_u64(NEXT_JOB_ID, next_job_id);
        self.set_meta_u64(NEXT_INSTANCE_ID, next_instance_id);
        self.set_meta_u64(JOB_EPOCH, job_epoch);
        self.set_meta_u64(EXPIRED_TOTAL, expired_total);
        self.put_retention(retention);
    }

    pub(crate) fn migrate_app(&mut self, app: &App) {
        self.put_app(app);
    }

    pub(crate) fn migrate_job(&mut self, job: &Job) {
        self.put_job(job);
        self.set_job_name(&job.spec.app, &job.spec.name, Some(job.id));
    }

    pub(crate) fn migrate_instance(&mut self, inst: &Instance) {
        self.put_instance(inst);
    }

    pub(crate) fn migrate_log(&mut self, id: InstanceId, mut meta: LogMeta, text: &str) {
        // Earlier releases made an empty log for a batch of no bytes; this
        // release does not: leave it out, as a node applying the log would.
        if text.is_empty() && meta.received.is_empty() && !meta.truncated {
            return;
        }
        self.push_log_text(id, &mut meta, text);
        self.put_log_meta(id, &meta);
    }

    pub(crate) fn migrate_key(&mut self, k: &str, record: &KeyRecord) {
        self.put_key_record(k, record);
    }
}
