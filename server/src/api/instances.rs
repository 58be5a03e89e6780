//! `/api/v1/instances` and `POST /api/v1/jobs/{id}/run`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qron_proto::api::{HistoryView, InstanceList, InstanceLogView, InstanceView, RunJobRequest};
use qron_raft_store::{Command, Instance, InstanceId, InstanceStatus, JobId, Reply};
use serde::Deserialize;

use super::apps::ReadParams;
use super::error::{ApiError, ApiPath, ApiQuery};
use super::idempotency::Idem;
use super::state::ApiState;
use crate::clock::now_ms;
use crate::dispatch::messages;
use crate::role::Role;

/// Default and largest page of `GET /api/v1/instances`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// Largest piece of log returned by one `GET .../logs` call.
const MAX_LOG_READ: usize = 256 * 1024;

pub fn view(i: &Instance) -> InstanceView {
    InstanceView {
        id: i.id.0,
        job_id: i.job_id.0,
        app: i.app.clone(),
        status: i.status.name().to_owned(),
        attempt: i.attempt.0,
        max_attempt: i.max_attempt.0,
        worker: i.worker.as_ref().map(ToString::to_string),
        params: i.params.clone(),
        created_at_ms: i.created_at_ms,
        fire_time_ms: i.fire_time_ms,
        assigned_at_ms: i.assigned_at_ms,
        started_at_ms: i.started_at_ms,
        finished_at_ms: i.finished_at_ms,
        result: i.result.clone(),
        exit_code: i.exit_code,
        reason: i.reason.clone(),
    }
}

fn instance_reply(reply: Reply) -> Result<Instance, ApiError> {
    match reply {
        Reply::Instance(i) => Ok(*i),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

/// `POST /api/v1/jobs/{id}/run`: a new instance, dispatched as soon as a worker is free.
pub async fn run(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<InstanceView>), ApiError> {
    // The body is optional: no body runs the job with no instance parameters.
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        serde_json::from_slice::<RunJobRequest>(&body)
            .map_err(|e| ApiError::BadRequest(format!("bad run request body: {e}")))?
            .params
    };
    let inst = instance_reply(
        app.propose(
            &key,
            Command::RunJob {
                job: JobId(id),
                params,
                now_ms: now_ms(),
            },
        )
        .await?,
    )?;
    tracing::info!(instance = inst.id.0, job = id, "run now");
    app.dispatch.wake();
    Ok((StatusCode::CREATED, Json(view(&inst))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub job: Option<u64>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Page forward: instances with a larger id, oldest first (default: newest first).
    #[serde(default)]
    pub after_id: Option<u64>,
    #[serde(default)]
    pub stale: bool,
}

/// `GET /api/v1/instances?job=&app=&status=&limit=&after_id=`: newest first, or
/// oldest first from `after_id` for paging through everything.
pub async fn list(
    State(app): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<InstanceList>, ApiError> {
    let status = match &q.status {
        None => None,
        Some(s) => Some(InstanceStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status {s:?}: use WAITING_DISPATCH, WAITING_WORKER_RECEIVE, RUNNING, FAILED, SUCCEEDED, CANCELED or STOPPED"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    app.read_barrier(q.stale).await?;
    // A handle on the store, not the read lock: a filtered listing may walk many
    // records, and holding the lock that long would stall apply (each read
    // still sees whole batches).
    let state = app.ctx.state.read().fresh();
    let from = InstanceId(q.after_id.map_or(0, |a| a.saturating_add(1)));
    let newest_first = q.after_id.is_none();
    let keep = |i: &Instance| {
        q.job.is_none_or(|j| i.job_id.0 == j)
            && q.app.as_ref().is_none_or(|a| *a == i.app)
            && status.is_none_or(|s| i.status == s)
    };
    let mut instances = Vec::new();
    match q.job {
        // One job's instances come from its index: the newest 20 of a job cost
        // the same among 10 million instances as among 100.
        Some(j) => {
            let start = if newest_first { InstanceId(0) } else { from };
            state.job_instance_ids(JobId(j), start, newest_first, |id| {
                if let Some(i) = state.instance_opt(id).filter(|i| keep(i)) {
                    instances.push(view(&i));
                }
                instances.len() < limit
            });
        }
        None => {
            let start = if newest_first { InstanceId(0) } else { from };
            state.instances_from(start, newest_first, |i| {
                if keep(&i) {
                    instances.push(view(&i));
                }
                instances.len() < limit
            });
        }
    }
    Ok(Json(InstanceList {
        instances,
        history: Some(history(&state, q.job.map(JobId))),
    }))
}

/// How far back history goes: of one job, or of the whole cluster.
fn history(state: &qron_raft_store::State, job: Option<JobId>) -> HistoryView {
    let mut oldest = None;
    let expired = match job {
        Some(j) => {
            state.job_instance_ids(j, InstanceId(0), false, |id| {
                oldest = state.instance_opt(id);
                false
            });
            state.job(j).map_or(0, |job| job.expired)
        }
        None => {
            state.instances_from(InstanceId(0), false, |i| {
                oldest = Some(i);
                false
            });
            state.expired_total()
        }
    };
    HistoryView {
        oldest_id: oldest.as_ref().map(|i| i.id.0),
        oldest_created_at_ms: oldest.as_ref().map(|i| i.created_at_ms),
        expired,
    }
}

/// `GET /api/v1/instances/{id}`.
pub async fn get(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Json<InstanceView>, ApiError> {
    app.read_barrier(q.stale).await?;
    let state = app.ctx.state.read();
    Ok(Json(view(&state.instance(InstanceId(id))?)))
}

/// `POST /api/v1/instances/{id}/stop`: marks it STOPPED and tells its worker to stop.
pub async fn stop(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
) -> Result<Json<InstanceView>, ApiError> {
    let inst = instance_reply(
        app.propose(
            &key,
            Command::StopInstance {
                instance: InstanceId(id),
                now_ms: now_ms(),
            },
        )
        .await?,
    )?;
    if let (Some(worker), Role::Leader(leader)) = (&inst.worker, app.ctx.role()) {
        let sent = app
            .dispatch
            .registry
            .send(worker, messages::stop(&inst, &leader, "stopped by an operator"));
        tracing::info!(instance = id, %worker, sent, "stop");
    }
    Ok(Json(view(&inst)))
}

/// `POST /api/v1/instances/{id}/cancel`: only before it was dispatched.
pub async fn cancel(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
) -> Result<Json<InstanceView>, ApiError> {
    let inst = instance_reply(
        app.propose(
            &key,
            Command::CancelInstance {
                instance: InstanceId(id),
                now_ms: now_ms(),
            },
        )
        .await?,
    )?;
    Ok(Json(view(&inst)))
}

/// `POST /api/v1/instances/{id}/retry`: a failed, stopped or canceled instance runs again.
pub async fn retry(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
) -> Result<Json<InstanceView>, ApiError> {
    let inst = instance_reply(
        app.propose(
            &key,
            Command::RetryInstance {
                instance: InstanceId(id),
                now_ms: now_ms(),
            },
        )
        .await?,
    )?;
    app.dispatch.wake();
    Ok(Json(view(&inst)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub stale: bool,
}

/// `GET /api/v1/instances/{id}/logs?offset=`.
pub async fn logs(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<LogParams>,
) -> Result<Json<InstanceLogView>, ApiError> {
    app.read_barrier(q.stale).await?;
    let state = app.ctx.state.read();
    let inst = state.instance(InstanceId(id))?;
    let read = state.log_text(inst.id, q.offset, MAX_LOG_READ);
    let next_offset = read.offset + read.text.len() as u64;
    Ok(Json(InstanceLogView {
        instance_id: id,
        offset: read.offset,
        next_offset,
        finished: inst.status.is_terminal() && next_offset == read.len,
        data: read.text,
        truncated: read.truncated,
        log_expired: inst.log_expired,
    }))
}
