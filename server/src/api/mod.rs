//! The HTTP/JSON API under `/api/v1` (axum), one file per resource.
//!
//! Any node answers any request. What must run on the leader (writes, and
//! reads unless `?stale=true`) is forwarded to it over the gRPC port by the
//! [`to_leader`] middleware, so a client never needs to know who leads. On the
//! leader, writes are proposed through Raft and answered once applied; reads
//! first confirm leadership with openraft's linearizable read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use openraft::ServerState;
use qron_proto::api::LeaderHint;
use qron_proto::raft::raft_service_client::RaftServiceClient;
use qron_proto::raft::ForwardRequest;
use qron_raft_store::{Command, NodeId, QronNode, Raft, Reply, SharedState};
use tonic::transport::Channel;

use crate::dispatch::Dispatch;
use crate::peers::Peers;

mod apps;
mod cluster;
pub mod error;
pub mod instances;
mod jobs;
mod workers;

pub use error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Marks a request a follower forwarded, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-qron-forwarded";

/// Largest request body accepted (and forwarded).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What every handler can reach.
pub struct ApiState {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub peers: Arc<Peers>,
    /// The leader lease (`election_timeout_max`): a leader that has not heard
    /// from a quorum for this long stops calling itself leader (rule 8).
    pub lease: Duration,
    pub http_addr: String,
    pub dispatch: Arc<Dispatch>,
    forward_clients: Mutex<HashMap<String, RaftServiceClient<Channel>>>,
}

/// Who leads, as far as this node can tell.
pub enum Leader {
    Me,
    Other(NodeId, QronNode),
    Unknown,
}

impl ApiState {
    pub fn new(
        node_id: NodeId,
        raft: Raft,
        state: SharedState,
        peers: Arc<Peers>,
        lease: Duration,
        http_addr: String,
        dispatch: Arc<Dispatch>,
    ) -> Self {
        ApiState {
            node_id,
            raft,
            state,
            peers,
            lease,
            http_addr,
            dispatch,
            forward_clients: Mutex::default(),
        }
    }

    /// The leader per the latest metrics; a leader past its lease without a
    /// quorum ack counts as unknown.
    pub fn leader(&self) -> Leader {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(id) if id == self.node_id => {
                let fresh = m
                    .millis_since_quorum_ack
                    .is_some_and(|ms| ms <= self.lease.as_millis() as u64);
                if m.state == ServerState::Leader && fresh {
                    Leader::Me
                } else {
                    Leader::Unknown
                }
            }
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other(id, node.clone()),
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    /// A leader hint for clients, with the HTTP address where known.
    pub fn hint(&self, id: NodeId, node: Option<&QronNode>) -> Option<LeaderHint> {
        let grpc_addr = match node {
            Some(n) => n.grpc_addr.clone(),
            None => self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)?
                .grpc_addr
                .clone(),
        };
        let http_addr = if id == self.node_id {
            Some(self.http_addr.clone())
        } else {
            self.peers.http_addr(id)
        };
        Some(LeaderHint {
            node_id: id,
            grpc_addr,
            http_addr,
        })
    }

    /// Proposes a command and returns what applying it answered.
    pub async fn propose(&self, cmd: Command) -> Result<Reply, ApiError> {
        let resp = self
            .raft
            .client_write(cmd)
            .await
            .map_err(|e| error::from_write_error(e, |id, n| self.hint(id, n)))?;
        Ok(resp.data.0?)
    }

    /// Waits until a read on this node is linearizable, unless `stale` asks for a local read.
    pub async fn read_barrier(&self, stale: bool) -> Result<(), ApiError> {
        if stale {
            return Ok(());
        }
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| error::from_read_error(e, |id, n| self.hint(id, n)))
    }

    fn forward_client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, ApiError> {
        let mut clients = self.forward_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = crate::raft::network::raft_client(addr)
            .map_err(|e| ApiError::Unavailable(format!("bad leader address {addr}: {e}")))?;
        clients.insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}

/// Milliseconds since the Unix epoch on this node's clock: the proposer's time
/// that goes into commands.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Builds the router for `/api/v1`.
pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/cluster", get(cluster::view))
        .route("/cluster/nodes", post(cluster::add_node))
        .route("/cluster/nodes/{id}", axum::routing::delete(cluster::remove_node))
        .route("/debug/digest", get(cluster::digest))
        .route("/apps", post(apps::create).get(apps::list))
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), to_leader))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
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
async fn to_leader(State(app): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let leader_only =
        path.starts_with("/api/v1/") && !(req.method() == http::Method::GET && (is_local(path) || wants_stale(&req)));
    if !leader_only {
        return next.run(req).await;
    }
    let forwarded = req.headers().contains_key(FORWARDED_HEADER);
    match app.leader() {
        Leader::Me => next.run(req).await,
        Leader::Other(id, node) if !forwarded => match forward(&app, &node, req).await {
            Ok(r) => r,
            Err(e) => ApiError::no_leader(
                format!("cannot reach the leader (node {id} at {}): {e}", node.grpc_addr),
                app.hint(id, Some(&node)),
            )
            .into_response(),
        },
        Leader::Other(id, node) => ApiError::no_leader(
            "leadership moved while the request was forwarded; retry",
            app.hint(id, Some(&node)),
        )
        .into_response(),
        Leader::Unknown => ApiError::no_leader("no leader is known right now; retry shortly", None).into_response(),
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
    let mut client = app.forward_client(&leader.grpc_addr).map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(30), client.forward(fwd))
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
