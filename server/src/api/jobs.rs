//! `/api/v1/jobs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qron_proto::api::{FireTime, JobList, JobSpec, JobView, NextFires, Schedule};
use qron_raft_store::schedule::{Plan, Timer};
use qron_raft_store::{Command, JobId, Reply};
use serde::Deserialize;

use super::apps::ReadParams;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::idempotency::Idem;
use super::state::ApiState;
use crate::clock::now_ms;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub app: Option<String>,
    /// At most this many jobs (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Page forward: jobs with a larger id.
    #[serde(default)]
    pub after_id: Option<u64>,
    #[serde(default)]
    pub stale: bool,
}

/// Jobs in one answer when the request does not say.
pub const DEFAULT_LIMIT: usize = 1_000;
/// Most jobs in one answer.
pub const MAX_LIMIT: usize = 10_000;

fn job_reply(reply: Reply) -> Result<Json<JobView>, ApiError> {
    match reply {
        Reply::Job(job) => Ok(Json(job.view())),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

/// What `apply` checks, plus the refusal of features not built yet (API only:
/// see `refuse_unbuilt`'s doc for why apply does not run it).
fn check(spec: &JobSpec) -> Result<(), ApiError> {
    qron_raft_store::model::validate_job(spec).map_err(ApiError::BadRequest)?;
    qron_raft_store::model::refuse_unbuilt(spec).map_err(ApiError::BadRequest)
}

/// `POST /api/v1/jobs`.
pub async fn create(
    State(app): State<Arc<ApiState>>,
    key: Idem,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    check(&spec)?;
    let reply = app.propose(&key, Command::CreateJob { spec, now_ms: now_ms() }).await?;
    Ok((StatusCode::CREATED, job_reply(reply)?))
}

/// `GET /api/v1/jobs?app=&limit=&after_id=`: by id, a page at a time.
pub async fn list(
    State(app): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<JobList>, ApiError> {
    app.read_barrier(q.stale).await?;
    let state = app.ctx.state.read();
    if let Some(name) = &q.app {
        if state.app(name).is_none() {
            return Err(ApiError::NotFound(format!("app {name:?} not found")));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let jobs = state
        .jobs_page(q.after_id.map(JobId), limit, |j| {
            q.app.as_ref().is_none_or(|a| *a == j.spec.app)
        })
        .iter()
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
    let state = app.ctx.state.read();
    Ok(Json(state.job(JobId(id))?.view()))
}

/// `PUT /api/v1/jobs/{id}`: replaces the job's spec.
pub async fn update(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<Json<JobView>, ApiError> {
    check(&spec)?;
    job_reply(
        app.propose(
            &key,
            Command::UpdateJob {
                id: JobId(id),
                spec,
                now_ms: now_ms(),
            },
        )
        .await?,
    )
}

/// `DELETE /api/v1/jobs/{id}`.
pub async fn delete(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
) -> Result<StatusCode, ApiError> {
    match app.propose(&key, Command::DeleteJob { id: JobId(id) }).await? {
        Reply::JobDeleted { .. } => Ok(StatusCode::NO_CONTENT),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

async fn set_enabled(app: &ApiState, key: &Idem, id: u64, enabled: bool) -> Result<Json<JobView>, ApiError> {
    job_reply(
        app.propose(
            key,
            Command::SetJobEnabled {
                id: JobId(id),
                enabled,
                now_ms: now_ms(),
            },
        )
        .await?,
    )
}

/// `POST /api/v1/jobs/{id}/enable`.
pub async fn enable(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
) -> Result<Json<JobView>, ApiError> {
    set_enabled(&app, &key, id, true).await
}

/// `POST /api/v1/jobs/{id}/disable`.
pub async fn disable(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    key: Idem,
) -> Result<Json<JobView>, ApiError> {
    set_enabled(&app, &key, id, false).await
}

/// Most fire times one `next-fires` call lists.
const MAX_NEXT_FIRES: usize = 1_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextFiresParams {
    #[serde(default)]
    pub count: Option<usize>,
    /// RFC 3339; default now.
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub stale: bool,
}

/// `GET /api/v1/jobs/{id}/next-fires?count=5&after=RFC3339`: check a schedule before trusting it.
pub async fn next_fires(
    State(app): State<Arc<ApiState>>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<NextFiresParams>,
) -> Result<Json<NextFires>, ApiError> {
    let count = q.count.unwrap_or(5);
    if count == 0 || count > MAX_NEXT_FIRES {
        return Err(ApiError::BadRequest(format!("count must be 1 to {MAX_NEXT_FIRES}")));
    }
    let after = match &q.after {
        None => now_ms(),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "after {t:?} is not RFC 3339 (e.g. 2026-03-08T01:00:00-05:00): {e}"
                ))
            })?
            .timestamp_millis(),
    };
    app.read_barrier(q.stale).await?;
    let (spec, created, last_end) = {
        let state = app.ctx.state.read();
        let job = state.job(JobId(id))?;
        let last_end = job
            .last_fired_instance
            .and_then(|i| state.instance_opt(i))
            .and_then(|i| i.finished_at_ms);
        (job.spec.clone(), job.created_at_ms, last_end)
    };
    let plan = Plan::new(&spec, created).map_err(ApiError::BadRequest)?;
    let tz: chrono_tz::Tz = match &spec.schedule {
        Schedule::Cron { time_zone, .. } => time_zone.parse().unwrap_or(chrono_tz::Tz::UTC),
        _ => chrono_tz::Tz::UTC,
    };
    let (from, note) = match plan.timer {
        Timer::Never => (
            after,
            Some("this job is not fired by time (API or workflow)".to_owned()),
        ),
        Timer::FixedDelay { .. } => (
            last_end.unwrap_or(created),
            Some("fixed delay: each fire follows the end of the previous instance; only the next is known".to_owned()),
        ),
        _ => (after, None),
    };
    let fires: Vec<FireTime> = plan
        .next_fires(from, count)
        .into_iter()
        .filter_map(|t| {
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)?.with_timezone(&tz);
            Some(FireTime {
                at_ms: t,
                at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            })
        })
        .collect();
    let note = note.or_else(|| (fires.len() < count).then(|| "the lifecycle or window ends the schedule".to_owned()));
    Ok(Json(NextFires {
        job_id: id,
        time_zone: tz.name().to_owned(),
        fires,
        note,
    }))
}
