//! Jobs: their definitions and the index of their names.
//!
//! Owns create, update, delete and enable; keeps the name index in step with
//! the jobs; bumps the job epoch on every change to a definition (the leader's time
//! wheel rebuilds when it moves). Never touches instances: a deleted job's
//! instances stay as they are.

use qron_proto::api::JobSpec;

use super::State;
use crate::command::{CommandError, Reply};
use crate::model::{validate_job, Job};
use crate::types::JobId;

impl State {
    pub(super) fn create_job(&mut self, spec: &JobSpec, now_ms: i64) -> Result<Reply, CommandError> {
        validate_job(spec).map_err(CommandError::Invalid)?;
        self.require_app(&spec.app)?;
        if self.job_named(&spec.app, &spec.name, None).is_some() {
            return Err(CommandError::AlreadyExists(format!(
                "job {:?} in app {:?}",
                spec.name, spec.app
            )));
        }
        let id = self.take_job_id();
        let job = Job {
            id,
            spec: spec.clone(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            last_fire_ms: None,
            last_fired_instance: None,
            expired: 0,
            expired_fires_through_ms: None,
        };
        self.bump_job_epoch(id);
        self.put_job(&job);
        self.set_job_name(&spec.app, &spec.name, Some(id));
        Ok(Reply::Job(Box::new(job)))
    }

    /// Replaces a job's spec; the app cannot change.
    pub(super) fn update_job(&mut self, id: JobId, spec: &JobSpec, now_ms: i64) -> Result<Reply, CommandError> {
        validate_job(spec).map_err(CommandError::Invalid)?;
        let current = self.job(id)?;
        if current.spec.app != spec.app {
            return Err(CommandError::Invalid(format!(
                "a job cannot move between apps (job {id} belongs to {:?})",
                current.spec.app
            )));
        }
        if self.job_named(&spec.app, &spec.name, Some(id)).is_some() {
            return Err(CommandError::AlreadyExists(format!(
                "job {:?} in app {:?}",
                spec.name, spec.app
            )));
        }
        let mut job = current;
        self.set_job_name(&job.spec.app, &job.spec.name, None);
        self.set_job_name(&spec.app, &spec.name, Some(id));
        job.spec = spec.clone();
        job.updated_at_ms = now_ms;
        self.bump_job_epoch(id);
        self.put_job(&job);
        Ok(Reply::Job(Box::new(job)))
    }

    pub(super) fn delete_job(&mut self, id: JobId) -> Result<Reply, CommandError> {
        let job = self.job(id)?;
        self.del_job(id);
        self.set_job_name(&job.spec.app, &job.spec.name, None);
        self.bump_job_epoch(id);
        Ok(Reply::JobDeleted { id })
    }

    /// Enables or disables a job; setting what it already is changes nothing.
    pub(super) fn set_job_enabled(&mut self, id: JobId, enabled: bool, now_ms: i64) -> Result<Reply, CommandError> {
        let mut job = self.job(id)?;
        if job.spec.enabled != enabled {
            job.spec.enabled = enabled;
            job.updated_at_ms = now_ms;
            self.bump_job_epoch(id);
            self.put_job(&job);
        }
        Ok(Reply::Job(Box::new(job)))
    }

    /// The job named `name` in `app`, unless it is `except`.
    fn job_named(&self, app: &str, name: &str, except: Option<JobId>) -> Option<JobId> {
        self.job_id_named(app, name).filter(|id| Some(*id) != except)
    }
}
