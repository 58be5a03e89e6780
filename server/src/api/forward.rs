//! The `to_leader` middleware: a request that must run on the leader (every
//! write; every read unless `?stale=true`) is answered here if this node leads,
//! or sent to the leader's gRPC `Forward` and its answer relayed. One mechanism
//! covers every endpoint. A forwarded request carries [`FORWARDED_HEADER`] and
//! is never forwarded twice.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use qron_proto::raft::ForwardRequest;
use qron_raft_store::QronNode;

use super::error::ApiError;
use super::state::{ApiState, MAX_BODY};
use crate::discovery;
use crate::raft::FORWARDED_HEADER;
use crate::role::Role;

/// How long a forwarded request may take on the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the query string asks for a local (possibly stale) read.
pub fn wants_stale(req: &Request) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "stale=true" || kv == "stale=1"))
}

/// Endpoints that describe this node itself and are never forwarded.
fn is_local(path: &str) -> bool {
    matches!(path, "/api/v1/cluster" | "/api/v1/debug/digest")
}

/// Sends leader-only requests to the leader.
pub async fn to_leader(State(app): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let leader_only =
        path.starts_with("/api/v1/") && !(req.method() == http::Method::GET && (is_local(path) || wants_stale(&req)));
    if !leader_only {
        return next.run(req).await;
    }
    let forwarded = req.headers().contains_key(FORWARDED_HEADER);
    match app.ctx.role() {
        Role::Leader(_) => next.run(req).await,
        Role::Follower { leader, node } if !forwarded => match forward(&app, &node, req).await {
            Ok(r) => r,
            Err(e) => ApiError::no_leader(
                format!("cannot reach the leader (node {leader} at {}): {e}", node.grpc_addr),
                discovery::hint(&app.ctx, leader, Some(&node)),
            )
            .into_response(),
        },
        Role::Follower { leader, node } => ApiError::no_leader(
            "leadership moved while the request was forwarded; retry",
            discovery::hint(&app.ctx, leader, Some(&node)),
        )
        .into_response(),
        Role::Unknown { .. } => {
            ApiError::no_leader("no leader is known right now; retry shortly", None).into_response()
        }
    }
}

async fn forward(app: &ApiState, leader: &QronNode, req: Request) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| e.to_string())?;
    let fwd = ForwardRequest {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned()),
        body: body.to_vec(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let mut client = app
        .forward
        .get(&leader.grpc_addr)
        .map_err(|e| format!("bad leader address {}: {e}", leader.grpc_addr))?;
    let reply = tokio::time::timeout(FORWARD_TIMEOUT, client.forward(fwd))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let status = http::StatusCode::from_u16(reply.status as u16).map_err(|e| e.to_string())?;
    let mut builder = Response::builder().status(status);
    if !reply.content_type.is_empty() {
        builder = builder.header(http::header::CONTENT_TYPE, reply.content_type);
    }
    builder.body(Body::from(reply.body)).map_err(|e| e.to_string())
}
