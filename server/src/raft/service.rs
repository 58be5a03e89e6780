//! The gRPC server side between nodes: Raft RPCs handed to the local Raft,
//! requests forwarded from followers run through the local HTTP router, and
//! this node's identity for peers.
//!
//! Nothing a peer sends can panic the node: undecodable payloads are answered
//! with `InvalidArgument`.
//!
//! A forwarded request's idempotency key arrives in `ForwardRequest` and is
//! handed to the router as the `Idempotency-Key` header (docs/api.md);
//! `authorization` is reserved and not read.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use qron_proto::raft::raft_service_server::RaftService;
use qron_proto::raft::{ForwardRequest, ForwardResponse, NodeInfoRequest, NodeInfoResponse, RaftPayload};
use qron_raft_store::Raft;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};
use tower::ServiceExt;

use super::wire::{self, Wire};
use super::{FORWARDED_HEADER, IDEMPOTENCY_HEADER};

/// Largest HTTP response body relayed back to a follower.
const MAX_FORWARD_BODY: usize = 64 * 1024 * 1024;

/// TEST ONLY: how long a held answer is held (longer than a follower waits).
const HOLD_ANSWER: Duration = Duration::from_secs(5);

pub struct RaftRpc {
    pub raft: Raft,
    pub node_id: u64,
    pub http_addr: String,
    pub grpc_addr: String,
    pub router: Router,
    /// TEST ONLY (`--unsafe-test-hold-forward-answers`): how many more
    /// forwarded writes that succeed get their answer held back for
    /// [`HOLD_ANSWER`], as if it were lost after the commit. Zero in production.
    pub hold_forward_answers: AtomicU32,
}

/// Decodes a payload in either encoding (`wire.rs`); says which, to answer in it.
fn decode<T: DeserializeOwned>(p: &RaftPayload) -> Result<(T, Wire), Status> {
    wire::decode(&p.data)
        .map(|v| (v, Wire::of(&p.data)))
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", wire::UNDECODABLE)))
}

fn encode<T: Serialize>(wire: Wire, v: &T) -> Result<Response<RaftPayload>, Status> {
    wire.encode(v)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))
}

impl RaftRpc {
    /// Whether to hold this answer back (test mode), counting it.
    fn take_hold(&self) -> bool {
        self.hold_forward_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let (req, wire) = decode(req.get_ref())?;
        let r = self.raft.append_entries(req).await;
        encode(wire, &r)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let (req, wire) = decode(req.get_ref())?;
        let r = self.raft.vote(req).await;
        encode(wire, &r)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let (req, wire) = decode(req.get_ref())?;
        let r = self.raft.install_snapshot(req).await;
        encode(wire, &r)
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<ForwardResponse>, Status> {
        let f = req.into_inner();
        let mut builder = http::Request::builder()
            .method(f.method.as_str())
            .uri(f.path_and_query.as_str())
            .header(FORWARDED_HEADER, "1");
        if !f.content_type.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, f.content_type.as_str());
        }
        if let Some(key) = &f.idempotency_key {
            builder = builder.header(IDEMPOTENCY_HEADER, key.as_str());
        }
        let is_write = !matches!(f.method.as_str(), "GET" | "HEAD");
        let request = builder
            .body(Body::from(f.body))
            .map_err(|e| Status::invalid_argument(format!("bad forwarded request: {e}")))?;
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if is_write && response.status().is_success() && self.take_hold() {
            tracing::warn!(path = %f.path_and_query, "TEST: holding the answer of a committed forwarded write");
            tokio::time::sleep(HOLD_ANSWER).await;
        }
        let status = response.status().as_u16() as u32;
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), MAX_FORWARD_BODY)
            .await
            .map_err(|e| Status::internal(format!("cannot read forwarded response: {e}")))?;
        Ok(Response::new(ForwardResponse {
            status,
            body: body.to_vec(),
            content_type,
        }))
    }

    async fn node_info(&self, _req: Request<NodeInfoRequest>) -> Result<Response<NodeInfoResponse>, Status> {
        Ok(Response::new(NodeInfoResponse {
            node_id: self.node_id,
            http_addr: self.http_addr.clone(),
            grpc_addr: self.grpc_addr.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::VoteRequest;
    use openraft::Vote;
    use qron_proto::raft::RaftPayload;
    use qron_raft_store::NodeId;

    use super::{decode, encode, Wire};

    #[test]
    fn a_request_is_answered_in_its_own_encoding_and_garbage_is_invalid_argument() {
        let req = VoteRequest::<NodeId>::new(Vote::new(2, 1), None);
        for wire in [Wire::Json, Wire::Binary] {
            let p = RaftPayload {
                data: wire.encode(&req).expect("encode"),
            };
            let (back, seen): (VoteRequest<NodeId>, Wire) = decode(&p).expect("decode");
            assert_eq!((back.vote, seen), (req.vote, wire));
            let reply = encode(seen, &back).expect("reply").into_inner();
            assert_eq!(Wire::of(&reply.data), wire);
        }
        let e = decode::<VoteRequest<NodeId>>(&RaftPayload {
            data: b"\x07junk".to_vec(),
        })
        .expect_err("garbage");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("undecodable raft payload"), "{}", e.message());
    }
}
