//! The HTTP/JSON API under `/api/v1` (axum), one file per resource.
//!
//! Any node answers any request. What must run on the leader (writes, and
//! reads unless `?stale=true`) is forwarded to it over the gRPC port by the
//! [`forward::to_leader`] middleware, so a client never needs to know who leads.
//! On the leader, writes are proposed through Raft and answered once applied;
//! reads first confirm leadership with openraft's linearizable read. A write's
//! `Idempotency-Key` ([`idempotency`]) travels into its Raft command, so a
//! retried write is applied once.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

mod apps;
mod cluster;
pub mod error;
mod forward;
pub mod idempotency;
pub mod instances;
mod jobs;
mod workers;

mod state;

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery};
pub use state::ApiState;

/// Builds the router for `/api/v1` and `/server/acquire`.
pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/cluster", get(cluster::view))
        .route("/cluster/nodes", post(cluster::add_node))
        .route("/cluster/nodes/{id}", axum::routing::delete(cluster::remove_node))
        .route(
            "/cluster/retention",
            get(cluster::retention).put(cluster::set_retention),
        )
        .route("/debug/digest", get(cluster::digest))
        .route("/apps", post(apps::create).get(apps::list))
        .route("/apps/{name}/retention", axum::routing::put(apps::set_retention))
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get).put(jobs::update).delete(jobs::delete))
        .route("/jobs/{id}/enable", post(jobs::enable))
        .route("/jobs/{id}/disable", post(jobs::disable))
        .route("/jobs/{id}/run", post(instances::run))
        .route("/jobs/{id}/next-fires", get(jobs::next_fires))
        .route("/instances", get(instances::list))
        .route("/instances/{id}", get(instances::get))
        .route("/instances/{id}/stop", post(instances::stop))
        .route("/instances/{id}/cancel", post(instances::cancel))
        .route("/instances/{id}/retry", post(instances::retry))
        .route("/instances/{id}/logs", get(instances::logs))
        .route("/workers", get(workers::list));
    Router::new()
        .nest("/api/v1", api)
        .route("/server/acquire", get(workers::acquire))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward::to_leader))
        // Outside forwarding: a bad key is refused on the node that received it.
        .layer(axum::middleware::from_fn_with_state(
            state::MAX_BODY,
            idempotency::layer,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(state::MAX_BODY))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Response {
    let e = ApiError::BadRequest(format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    ));
    let mut r = e.into_response();
    *r.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    r
}
