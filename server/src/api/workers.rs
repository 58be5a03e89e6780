//! `GET /api/v1/workers` and the discovery endpoint `GET /server/acquire`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use qron_proto::api::{AcquireView, MemberView, WorkerList};
use serde::Deserialize;

use super::error::{ApiError, ApiQuery};
use super::state::ApiState;
use crate::discovery;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub app: Option<String>,
    /// Accepted like on every read, but a follower knows no workers: the list always
    /// comes from the leader.
    #[serde(default)]
    #[allow(dead_code)]
    pub stale: bool,
}

/// `GET /api/v1/workers?app=`: the leader's registry (forwarded to the leader).
pub async fn list(
    State(app): State<Arc<ApiState>>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<WorkerList>, ApiError> {
    let mut workers: Vec<_> = app
        .dispatch
        .registry
        .snapshot()
        .iter()
        .filter(|w| q.app.as_ref().is_none_or(|a| *a == w.reg.app))
        .map(|w| w.view())
        .collect();
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(Json(WorkerList { workers }))
}

#[derive(Debug, Default, Deserialize)]
pub struct AcquireParams {
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub current: Option<String>,
}

/// `GET /server/acquire?app=&current=`: who leads, from any node.
pub async fn acquire(State(app): State<Arc<ApiState>>, ApiQuery(q): ApiQuery<AcquireParams>) -> Json<AcquireView> {
    tracing::debug!(app = ?q.app, current = ?q.current, "acquire");
    let r = discovery::acquire(&app.ctx);
    Json(AcquireView {
        leader_id: r.has_leader.then_some(r.leader_id),
        leader_grpc: r.has_leader.then(|| r.leader_grpc.clone()),
        leader_http: (r.has_leader && !r.leader_http.is_empty()).then(|| r.leader_http.clone()),
        term: r.term,
        members: r
            .members
            .into_iter()
            .map(|m| MemberView {
                id: m.id,
                grpc_addr: m.grpc_addr,
                http_addr: (!m.http_addr.is_empty()).then_some(m.http_addr),
            })
            .collect(),
    })
}
