//! The API's one error type, its mapping to an HTTP status and the JSON error
//! body, and extractors whose rejections are that JSON body too (axum's own
//! answer plain text, 422 for a bad JSON body).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use qron_proto::api::{ErrorBody, ErrorDetail, LeaderHint};
use qron_raft_store::{CommandError, NodeId, QronNode};
use serde::de::DeserializeOwned;

/// Everything an API call can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A finished instance removed by the retention policy (404, code `expired`).
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` already used for a different request.
    #[error("{0}")]
    KeyReused(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No leader is known (or the known one cannot be reached); retry, maybe at the hint.
    #[error("{message}")]
    NoLeader {
        message: String,
        leader: Option<LeaderHint>,
    },
    /// A write went out to a leader and no answer came back in time: it may
    /// or may not have been applied. Sent again with `key`, it applies at most once.
    #[error("{message}")]
    OutcomeUnknown {
        message: String,
        key: String,
        leader: Option<LeaderHint>,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Expired(_) => (StatusCode::NOT_FOUND, "expired"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::KeyReused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::NoLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            ApiError::OutcomeUnknown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A leader hint built from openraft's forward-to-leader information.
    pub fn no_leader(message: impl Into<String>, leader: Option<LeaderHint>) -> Self {
        ApiError::NoLeader {
            message: message.into(),
            leader,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let (leader, idempotency_key) = match &self {
            ApiError::NoLeader { leader, .. } => (leader.clone(), None),
            ApiError::OutcomeUnknown { leader, key, .. } => (leader.clone(), Some(key.clone())),
            _ => (None, None),
        };
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "api error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                leader,
                idempotency_key,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(m) => ApiError::BadRequest(m),
            CommandError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CommandError::Expired(m) => ApiError::Expired(m),
            CommandError::AlreadyExists(_) => ApiError::Conflict(e.to_string()),
            CommandError::Conflict(m) => ApiError::Conflict(m),
            CommandError::KeyReused(m) => ApiError::KeyReused(m),
        }
    }
}

/// Maps openraft's write errors. `hint` turns a leader id and node into a hint
/// with the leader's HTTP address, where known.
pub fn from_write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, QronNode>>,
    hint: impl Fn(NodeId, Option<&QronNode>) -> Option<LeaderHint>,
) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            let leader = f.leader_id.and_then(|id| hint(id, f.leader_node.as_ref()));
            ApiError::no_leader("this node is no longer the leader; retry", leader)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(_) => {
                ApiError::Conflict(format!("a membership change is already in progress: {c}"))
            }
            ChangeMembershipError::EmptyMembership(_) | ChangeMembershipError::LearnerNotFound(_) => {
                ApiError::BadRequest(c.to_string())
            }
        },
        RaftError::Fatal(f) => ApiError::Unavailable(format!("raft is stopped: {f}")),
    }
}

/// Maps openraft's linearizable-read errors.
pub fn from_read_error(
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, QronNode>>,
    hint: impl Fn(NodeId, Option<&QronNode>) -> Option<LeaderHint>,
) -> ApiError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            let leader = f.leader_id.and_then(|id| hint(id, f.leader_node.as_ref()));
            ApiError::no_leader("this node is no longer the leader; retry", leader)
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            ApiError::Unavailable(format!("the leader cannot reach a quorum: {q}"))
        }
        RaftError::Fatal(f) => ApiError::Unavailable(format!("raft is stopped: {f}")),
    }
}

/// `Json<T>` whose rejection is a 400 with the JSON error body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    ApiError::BadRequest(e.body_text())
}

/// `Path<T>` whose rejection is a 400 with the JSON error body.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(path_rejection(e)),
        }
    }
}

fn path_rejection(e: PathRejection) -> ApiError {
    ApiError::BadRequest(e.body_text())
}

/// `Query<T>` whose rejection is a 400 with the JSON error body.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::BadRequest(e.body_text())
}
