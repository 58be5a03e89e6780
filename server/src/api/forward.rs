//! The `to_leader` middleware: a request that must run on the leader (every
//! write; every read unless `?stale=true`) is answered here if this node leads,
//! or sent to the leader's gRPC `Forward` and its answer relayed. One mechanism
//! covers every endpoint. A forwarded request carries [`FORWARDED_HEADER`] and
//! is never forwarded twice.
//!
//! Writes (docs/api.md, "Forwarding") go out under an idempotency key: the
//! client's, or one this node makes. That makes them safe to send again, and
//! this node does: after a failure, a timeout ([`WRITE_ATTEMPT`]) or a leader
//! change, it sends the write again, to whoever leads then (itself included),
//! under the same key, for at most [`WRITE_BUDGET`] in all. When no answer came
//! it answers 503 `no_leader` only if no attempt can have reached a leader
//! (none was known, or every connection was refused); if one may have, it
//! answers 503 `outcome_unknown` with the key, for the client to send the
//! write again with. Cluster membership changes are not keyed in the state
//! machine and wait for a new node to catch up: like reads, they are forwarded
//! once, with [`FORWARD_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use qron_proto::api::ErrorBody;
use qron_proto::raft::{ForwardRequest, ForwardResponse};
use qron_raft_store::QronNode;
use tokio::time::Instant;

use super::error::ApiError;
use super::idempotency::{self, RequestKey, IDEMPOTENCY_HEADER};
use super::state::{ApiState, MAX_BODY};
use crate::discovery;
use crate::raft::FORWARDED_HEADER;
use crate::role::Role;

/// How long a forwarded read or membership change may take on the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node keeps trying to get a write to a leader and its answer back.
const WRITE_BUDGET: Duration = Duration::from_secs(2);
/// How long one forward of a write waits for its answer before it is sent again.
const WRITE_ATTEMPT: Duration = Duration::from_secs(1);
/// After a failed attempt, the wait for a role change before trying the same leader again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

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

/// Writes that go under a key and are sent again until answered: all but
/// membership changes, which the state machine does not record (docs/api.md).
fn is_keyed_write(req: &Request) -> bool {
    idempotency::is_write(req.method()) && !req.uri().path().starts_with("/api/v1/cluster/")
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
        Role::Follower { leader, node } if forwarded => ApiError::no_leader(
            "leadership moved while the request was forwarded; retry",
            discovery::hint(&app.ctx, leader, Some(&node)),
        )
        .into_response(),
        _ if !forwarded && is_keyed_write(&req) => forward_write(&app, req, next).await,
        Role::Follower { leader, node } => match forward_once(&app, &node, req).await {
            Ok(r) => r,
            Err(e) => ApiError::no_leader(
                format!("cannot reach the leader (node {leader} at {}): {e}", node.grpc_addr),
                discovery::hint(&app.ctx, leader, Some(&node)),
            )
            .into_response(),
        },
        Role::Unknown { .. } => {
            ApiError::no_leader("no leader is known right now; retry shortly", None).into_response()
        }
    }
}

/// Forwards a read or a membership change once.
async fn forward_once(app: &ApiState, leader: &QronNode, req: Request) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| e.to_string())?;
    let fwd = forward_request(&parts, &body, None);
    let reply = tokio::time::timeout(FORWARD_TIMEOUT, send(app, leader, fwd))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|f| f.why)?;
    relay(reply)
}

/// Forwards a write under its key until a leader answers it or the budget is
/// spent (see the module doc).
async fn forward_write(app: &ApiState, req: Request, next: Next) -> Response {
    let deadline = Instant::now() + WRITE_BUDGET;
    let (mut parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return idempotency::body_error(MAX_BODY, e).into_response(),
    };
    let key = match parts.extensions.get::<RequestKey>() {
        Some(k) => k.key.clone(),
        None => {
            let key = match idempotency::new_key() {
                Ok(k) => k,
                Err(e) => return e.into_response(),
            };
            let digest = idempotency::request_digest(&parts.method, idempotency::path_and_query(&parts.uri), &body);
            parts.extensions.insert(RequestKey {
                key: key.clone(),
                digest,
            });
            key
        }
    };
    // The key is printable ASCII (checked, or made here), so it is a valid header value.
    match HeaderValue::from_str(&key) {
        Ok(v) => parts.headers.insert(IDEMPOTENCY_HEADER, v),
        Err(e) => return ApiError::Internal(format!("idempotency key {key:?}: {e}")).into_response(),
    };
    let fwd = forward_request(&parts, &body, Some(key.clone()));

    let mut roles = app.ctx.watch_role();
    // Whether some attempt may have reached a leader's handler (and so may be applied).
    let mut maybe_sent = false;
    let mut why = "no leader is known".to_owned();
    let mut hint = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let role = roles.borrow_and_update().clone();
        match &role {
            Role::Leader(_) => {
                // This node leads now: it runs the write itself, under the same key.
                maybe_sent = true;
                let local = Request::from_parts(parts.clone(), Body::from(body.clone()));
                match tokio::time::timeout(remaining, next.clone().run(local)).await {
                    Ok(r) if r.status() != StatusCode::SERVICE_UNAVAILABLE => return r,
                    Ok(_) => why = "this node, leading now, could not commit it yet".to_owned(),
                    Err(_) => why = "this node, leading now, did not commit it in time".to_owned(),
                }
            }
            Role::Follower { leader, node } => {
                hint = discovery::hint(&app.ctx, *leader, Some(node));
                let attempt = tokio::time::timeout(remaining.min(WRITE_ATTEMPT), send(app, node, fwd.clone()));
                tokio::select! {
                    r = attempt => match r {
                        Ok(Ok(reply)) if reply.status != u32::from(StatusCode::SERVICE_UNAVAILABLE.as_u16()) => {
                            return relay(reply).unwrap_or_else(|e| ApiError::Internal(e).into_response());
                        }
                        Ok(Ok(reply)) => {
                            maybe_sent = true;
                            why = format!("the leader (node {leader}) answered: {}", message_of(&reply.body));
                        }
                        Ok(Err(f)) => {
                            maybe_sent |= f.maybe_sent;
                            why = format!("node {leader} at {}: {}", node.grpc_addr, f.why);
                        }
                        Err(_) => {
                            maybe_sent = true;
                            why = format!("node {leader} at {} did not answer in time", node.grpc_addr);
                            // The wait is over already: send it again at once.
                            continue;
                        }
                    },
                    _ = role_changed(&mut roles, &role) => {
                        // The write may be on its way to a deposed leader: send it to the new one.
                        maybe_sent = true;
                        why = format!("the leader changed while node {leader} had the write");
                        continue;
                    }
                }
            }
            Role::Unknown { .. } => why = "no leader is known".to_owned(),
        }
        // Before trying again: a role change, or a short pause.
        let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
        let _ = tokio::time::timeout(pause, roles.changed()).await;
    }
    tracing::warn!(key = %key, path = %parts.uri.path(), maybe_sent, why = %why, "forwarded write got no answer");
    if maybe_sent {
        ApiError::OutcomeUnknown {
            message: format!(
                "the write was sent to the leader but no answer came back within {WRITE_BUDGET:?} ({why}); it may \
                 or may not have been applied. Send the same request again with the header `Idempotency-Key: \
                 {key}` (to any node): it is applied at most once, and answers what it answered first"
            ),
            key,
            leader: hint,
        }
        .into_response()
    } else {
        ApiError::no_leader(format!("the write was not applied: {why}; retry shortly"), hint).into_response()
    }
}

/// Resolves when the published role is no longer `role`.
async fn role_changed(roles: &mut tokio::sync::watch::Receiver<Role>, role: &Role) {
    // An error means the publisher is gone (shutdown): the role will not change.
    if roles.wait_for(|r| r != role).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn forward_request(parts: &Parts, body: &Bytes, idempotency_key: Option<String>) -> ForwardRequest {
    ForwardRequest {
        method: parts.method.to_string(),
        path_and_query: idempotency::path_and_query(&parts.uri).to_owned(),
        body: body.to_vec(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        idempotency_key,
        authorization: None,
    }
}

/// Why a forward got no answer.
struct Failed {
    /// False only when the request certainly did not leave this node (the
    /// connection was refused): then nothing can have been applied.
    maybe_sent: bool,
    why: String,
}

async fn send(app: &ApiState, leader: &QronNode, fwd: ForwardRequest) -> Result<ForwardResponse, Failed> {
    let mut client = app.forward.get(&leader.grpc_addr).map_err(|e| Failed {
        maybe_sent: false,
        why: format!("bad leader address {}: {e}", leader.grpc_addr),
    })?;
    match client.forward(fwd).await {
        Ok(r) => Ok(r.into_inner()),
        Err(status) => Err(Failed {
            maybe_sent: !refused_before_sending(&status),
            why: status.message().to_owned(),
        }),
    }
}

/// Whether a failed call certainly never reached the peer: its connection was
/// refused. Anything else (a reset, a timeout, an error status) may have come
/// after the peer received the request.
fn refused_before_sending(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// The message of a JSON error body, or its start.
fn message_of(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.error.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

fn relay(reply: ForwardResponse) -> Result<Response, String> {
    let status = StatusCode::from_u16(reply.status as u16).map_err(|e| e.to_string())?;
    let mut builder = Response::builder().status(status);
    if !reply.content_type.is_empty() {
        builder = builder.header(http::header::CONTENT_TYPE, reply.content_type);
    }
    builder.body(Body::from(reply.body)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_known_not_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let mut client = crate::raft::network::raft_client(&format!("127.0.0.1:{port}")).expect("client");
        let status = client
            .forward(ForwardRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(refused_before_sending(&status), "{status:?}");
    }

    #[tokio::test]
    async fn an_error_answer_may_have_been_applied() {
        assert!(!refused_before_sending(&tonic::Status::unavailable(
            "leader shutting down"
        )));
        assert!(!refused_before_sending(&tonic::Status::cancelled("reset")));
    }
}
