//! The replicated state and its pure `apply`.
//!
//! `State::apply` reads nothing but the state and the command: no clock, no
//! randomness, no I/O (rule 1). Maps are ordered and the encoding is canonical
//! (serde_json over `BTreeMap`s and structs in declaration order), so two nodes
//! that applied the same log produce the same bytes and the same
//! [`State::digest`] (rule 10).

use std::collections::BTreeMap;

use openraft::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Command, CommandError, Reply, Response};
use crate::model::{validate_app, validate_job, App, Job};
use crate::types::{JobId, NodeId, QronNode};

/// Everything the cluster replicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The last log entry applied (openraft bookkeeping).
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied (openraft bookkeeping).
    pub last_membership: StoredMembership<NodeId, QronNode>,
    pub apps: BTreeMap<String, App>,
    pub jobs: BTreeMap<JobId, Job>,
    /// Index `"app/name"` → job id (names cannot contain `/`), kept by `apply`.
    pub job_names: BTreeMap<String, JobId>,
    /// The id the next created job gets.
    pub next_job_id: u64,
}

/// The part of the state a digest covers: the domain data, not openraft's
/// bookkeeping (whose log ids legitimately differ between a node that applied
/// entries and one that installed a snapshot of them).
#[derive(Serialize)]
struct DigestView<'a> {
    apps: &'a BTreeMap<String, App>,
    jobs: &'a BTreeMap<JobId, Job>,
    next_job_id: u64,
}

impl State {
    /// Applies one command. A refused command leaves the state untouched.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        Response(self.apply_inner(cmd))
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<Reply, CommandError> {
        match cmd {
            Command::CreateApp { name, secret, now_ms } => {
                validate_app(name, secret).map_err(CommandError::Invalid)?;
                if self.apps.contains_key(name) {
                    return Err(CommandError::AlreadyExists(format!("app {name:?}")));
                }
                self.apps.insert(
                    name.clone(),
                    App {
                        name: name.clone(),
                        secret: secret.clone(),
                        created_at_ms: *now_ms,
                    },
                );
                Ok(Reply::AppCreated { name: name.clone() })
            }
            Command::CreateJob { spec, now_ms } => {
                validate_job(spec).map_err(CommandError::Invalid)?;
                self.require_app(&spec.app)?;
                if self.job_named(&spec.app, &spec.name, None).is_some() {
                    return Err(CommandError::AlreadyExists(format!(
                        "job {:?} in app {:?}",
                        spec.name, spec.app
                    )));
                }
                self.next_job_id += 1;
                let id = JobId(self.next_job_id);
                let job = Job {
                    id,
                    spec: spec.clone(),
                    created_at_ms: *now_ms,
                    updated_at_ms: *now_ms,
                    last_fire_ms: None,
                };
                self.jobs.insert(id, job.clone());
                self.job_names.insert(name_key(&spec.app, &spec.name), id);
                Ok(Reply::Job(Box::new(job)))
            }
            Command::UpdateJob { id, spec, now_ms } => {
                validate_job(spec).map_err(CommandError::Invalid)?;
                let current = self.job(*id)?;
                if current.spec.app != spec.app {
                    return Err(CommandError::Invalid(format!(
                        "a job cannot move between apps (job {id} belongs to {:?})",
                        current.spec.app
                    )));
                }
                if self.job_named(&spec.app, &spec.name, Some(*id)).is_some() {
                    return Err(CommandError::AlreadyExists(format!(
                        "job {:?} in app {:?}",
                        spec.name, spec.app
                    )));
                }
                let job = self.jobs.get_mut(id).ok_or_else(|| not_found(*id))?;
                self.job_names.remove(&name_key(&job.spec.app, &job.spec.name));
                self.job_names.insert(name_key(&spec.app, &spec.name), *id);
                job.spec = spec.clone();
                job.updated_at_ms = *now_ms;
                Ok(Reply::Job(Box::new(job.clone())))
            }
            Command::DeleteJob { id } => {
                let job = self.jobs.remove(id).ok_or_else(|| not_found(*id))?;
                self.job_names.remove(&name_key(&job.spec.app, &job.spec.name));
                Ok(Reply::JobDeleted { id: *id })
            }
            Command::SetJobEnabled { id, enabled, now_ms } => {
                let job = self.jobs.get_mut(id).ok_or_else(|| not_found(*id))?;
                if job.spec.enabled != *enabled {
                    job.spec.enabled = *enabled;
                    job.updated_at_ms = *now_ms;
                }
                Ok(Reply::Job(Box::new(job.clone())))
            }
        }
    }

    fn require_app(&self, name: &str) -> Result<&App, CommandError> {
        self.apps
            .get(name)
            .ok_or_else(|| CommandError::NotFound(format!("app {name:?}")))
    }

    /// Looks a job up by id.
    pub fn job(&self, id: JobId) -> Result<&Job, CommandError> {
        self.jobs.get(&id).ok_or_else(|| not_found(id))
    }

    fn job_named(&self, app: &str, name: &str, except: Option<JobId>) -> Option<JobId> {
        self.job_names
            .get(&name_key(app, name))
            .copied()
            .filter(|id| Some(*id) != except)
    }

    /// The canonical bytes of the domain data.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing ordered maps of plain structs cannot fail.
        serde_json::to_vec(&DigestView {
            apps: &self.apps,
            jobs: &self.jobs,
            next_job_id: self.next_job_id,
        })
        .unwrap_or_default()
    }

    /// SHA-256 of [`State::canonical_bytes`], hex encoded.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

fn name_key(app: &str, name: &str) -> String {
    format!("{app}/{name}")
}

fn not_found(id: JobId) -> CommandError {
    CommandError::NotFound(format!("job {id}"))
}
