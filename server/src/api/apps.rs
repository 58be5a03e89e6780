//! `/api/v1/apps`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use qron_proto::api::{AppList, AppView, CreateApp, Retention};
use qron_raft_store::model::App;
use qron_raft_store::{Command, Reply};
use serde::Deserialize;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::idempotency::Idem;
use super::state::ApiState;
use crate::clock::now_ms;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    #[serde(default)]
    pub stale: bool,
}

/// `POST /api/v1/apps`.
pub async fn create(
    State(app): State<Arc<ApiState>>,
    key: Idem,
    ApiJson(req): ApiJson<CreateApp>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    qron_raft_store::model::validate_app(&req.name, &req.secret).map_err(ApiError::BadRequest)?;
    let cmd = Command::CreateApp {
        name: req.name.clone(),
        secret: req.secret,
        now_ms: now_ms(),
    };
    match app.propose(&key, cmd).await? {
        Reply::AppCreated { name } => {
            let view = app.ctx.state.read().app(&name).as_ref().map(view);
            view.map(|v| (StatusCode::CREATED, Json(v)))
                .ok_or_else(|| ApiError::Internal(format!("app {name:?} vanished after creation")))
        }
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

/// `GET /api/v1/apps`.
pub async fn list(
    State(app): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Json<AppList>, ApiError> {
    app.read_barrier(q.stale).await?;
    let apps = app.ctx.state.read().apps().iter().map(view).collect();
    Ok(Json(AppList { apps }))
}

fn view(a: &App) -> AppView {
    AppView {
        name: a.name.clone(),
        created_at_ms: a.created_at_ms,
        retention: a.retention.clone(),
    }
}

/// `PUT /api/v1/apps/{name}/retention`: the app's overrides of the cluster's
/// retention (unset fields inherit; an empty object clears them).
pub async fn set_retention(
    State(app): State<Arc<ApiState>>,
    ApiPath(name): ApiPath<String>,
    key: Idem,
    ApiJson(retention): ApiJson<Retention>,
) -> Result<Json<AppView>, ApiError> {
    qron_raft_store::retention::validate("app retention", &retention).map_err(ApiError::BadRequest)?;
    match app
        .propose(&key, Command::SetAppRetention { app: name, retention })
        .await?
    {
        Reply::App(a) => Ok(Json(view(&a))),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}
