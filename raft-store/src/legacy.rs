//! The state as the first releases stored it: one JSON document, in a
//! snapshot file (`snap-<term>-<index>-<seq>.json`). A node started on such a
//! data dir migrates it into the state's column family on its first start
//! (`state_machine`), and a node that receives such a snapshot from a leader of
//! an earlier release installs it the same way.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::idempotency::IdempotencyKeys;
use crate::instance::{Instance, InstanceId, InstanceLog};
use crate::model::{App, Job};
use crate::retention::ClusterPolicy;
use crate::state::{LogMeta, State};
use crate::types::JobId;

/// The fields of the old JSON state that hold data; the rest was derived.
#[derive(Debug, Default, Deserialize)]
pub struct LegacyState {
    #[serde(default)]
    apps: BTreeMap<String, App>,
    #[serde(default)]
    jobs: BTreeMap<JobId, Job>,
    #[serde(default)]
    next_job_id: u64,
    #[serde(default)]
    instances: BTreeMap<InstanceId, Instance>,
    #[serde(default)]
    logs: BTreeMap<InstanceId, InstanceLog>,
    #[serde(default)]
    next_instance_id: u64,
    #[serde(default)]
    job_epoch: u64,
    #[serde(default)]
    keys: IdempotencyKeys,
    #[serde(default)]
    retention: ClusterPolicy,
    #[serde(default)]
    expired_total: u64,
}

impl LegacyState {
    /// Writes every record into `state` (as pending writes), with the indexes
    /// the new layout keeps. The result is what applying the same log gives.
    pub fn write_into(self, state: &mut State) {
        state.migrate_counters(
            self.next_job_id,
            self.next_instance_id,
            self.job_epoch,
            self.expired_total,
            &self.retention,
        );
        for app in self.apps.values() {
            state.migrate_app(app);
        }
        for job in self.jobs.values() {
            state.migrate_job(job);
        }
        for inst in self.instances.values() {
            state.migrate_instance(inst);
        }
        for (id, log) in self.logs {
            let meta = LogMeta {
                received: log.received,
                truncated: log.truncated,
                len: 0,
            };
            state.migrate_log(id, meta, &log.text);
        }
        for (key, record) in self.keys.records() {
            state.migrate_key(key, record);
        }
    }
}
