//! `/api/v1/jobs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qron_proto::api::{JobList, JobSpec, JobView};
use qron_raft_store::{Command, JobId, Reply};
use serde::Deserialize;

use super::apps::ReadParams;
use super::{now_ms, ApiError, ApiJson, ApiPath, ApiQuery, ApiState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub stale: bool,
}

fn job_reply(reply: Reply) -> Result<Json<JobView>, ApiError> {
    match reply {
        Reply::Job(job) => Ok(Json(job.view())),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

fn check(spec: &JobSpec) -> Result<(), ApiError> {
    qron_raft_store::model::validate_job(spec).map_err(ApiError::BadRequest)
}

/// `POST /api/v1/jobs`.
pub async fn create(
    State(app): State<Arc<ApiState>>,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    check(&spec)?;
    let reply = app.propose(Command::CreateJob { spec, now_ms: now_ms() }).await?;
    Ok((StatusCode::CREATED, job_reply(reply)?))
}

/// `GET /api/v1/jobs?app=`.
pub async fn list(
    State(app): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<JobList>, ApiError> {
    app.read_barrier(q.stale).await?;
    let state = app.state.read();
    if let Some(name) = &q.app {
        if !state.apps.contains_key(name) {
            return Err(ApiError::NotFound(format!("app {name:?} not found")));
        }
    }
    let jobs = state
        .jobs
        .values()
        .filter(|j| q.app.as_ref().is_none_or(|a| *a == j.spec.app))
        .map(|j| j.view())
        .collect();
    Ok(Json(JobList { jobs }))
}

/// `GET /api/v1/jobs/{id}`.
pub async fn get(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Json<JobView>, ApiError> {
    app.read_barrier(q.stale).await?;
    let state = app.state.read();
    Ok(Json(state.job(JobId(id))?.view()))
}

/// `PUT /api/v1/jobs/{id}`: replaces the job's spec.
pub async fn update(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<Json<JobView>, ApiError> {
    check(&spec)?;
    job_reply(
        app.propose(Command::UpdateJob {
            id: JobId(id),
            spec,
            now_ms: now_ms(),
        })
        .await?,
    )
}

/// `DELETE /api/v1/jobs/{id}`.
pub async fn delete(State(app): State<Arc<ApiState>>, ApiPath(id): ApiPath<u64>) -> Result<StatusCode, ApiError> {
    match app.propose(Command::DeleteJob { id: JobId(id) }).await? {
        Reply::JobDeleted { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

async fn set_enabled(app: &ApiState, id: u64, enabled: bool) -> Result<Json<JobView>, ApiError> {
    job_reply(
        app.propose(Command::SetJobEnabled {
            id: JobId(id),
            enabled,
            now_ms: now_ms(),
        })
        .await?,
    )
}

/// `POST /api/v1/jobs/{id}/enable`.
pub async fn enable(State(app): State<Arc<ApiState>>, ApiPath(id): ApiPath<u64>) -> Result<Json<JobView>, ApiError> {
    set_enabled(&app, id, true).await
}

/// `POST /api/v1/jobs/{id}/disable`.
pub async fn disable(State(app): State<Arc<ApiState>>, ApiPath(id): ApiPath<u64>) -> Result<Json<JobView>, ApiError> {
    set_enabled(&app, id, false).await
}
