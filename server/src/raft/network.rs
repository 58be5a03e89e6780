//! openraft's `RaftNetwork` over gRPC. One lazily connected channel per peer;
//! every call is bounded by openraft's time-to-live for it. Payloads are
//! binary, or JSON for a peer of an earlier release (`wire.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use qron_proto::raft::raft_service_client::RaftServiceClient;
use qron_proto::raft::RaftPayload;
use qron_raft_store::{NodeId, QronNode, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::wire::{self, JsonPeers, Wire};
use super::{MAX_APPEND_BYTES, MAX_MESSAGE_BYTES};
use crate::peers::Peers;

/// Makes a [`PeerClient`] per target node.
#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Arc<Peers>,
    /// Peers that read JSON payloads only, shared by every client.
    pub json_peers: JsonPeers,
}

/// Opens a lazily connected gRPC channel to `addr` (`HOST:PORT`).
pub fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A gRPC client for one peer's Raft service.
pub fn raft_client(addr: &str) -> Result<RaftServiceClient<Channel>, tonic::transport::Error> {
    Ok(RaftServiceClient::new(channel(addr)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// One gRPC client per peer address, made on first use and reused (forwarded
/// API requests, the peer poller).
#[derive(Default)]
pub struct Clients(Mutex<HashMap<String, RaftServiceClient<Channel>>>);

impl Clients {
    /// The client for `addr` (`HOST:PORT`).
    pub fn get(&self, addr: &str) -> Result<RaftServiceClient<Channel>, tonic::transport::Error> {
        let mut clients = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let c = raft_client(addr)?;
        clients.insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &QronNode) -> PeerClient {
        PeerClient {
            target,
            client: raft_client(&node.grpc_addr).map_err(|e| e.to_string()),
            peers: self.peers.clone(),
            json_peers: self.json_peers.clone(),
            refused_binary: false,
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftServiceClient<Channel>, String>,
    peers: Arc<Peers>,
    json_peers: JsonPeers,
    /// The last call was refused as undecodable.
    refused_binary: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

type RpcErr<E> = RPCError<NodeId, QronNode, RaftError<NodeId, E>>;

enum Rpc {
    Append,
    Vote,
    Snapshot,
}

fn encode<Req: Serialize, E>(wire: Wire, req: &Req) -> Result<Vec<u8>, RpcErr<E>>
where
    E: std::error::Error,
{
    wire.encode(req)
        .map_err(|e| RPCError::Network(NetworkError::new(&Msg(e))))
}

/// How many of `entries`, from the first, fit in `budget` bytes once encoded
/// in `wire`; at least one (a single entry is bounded where it is proposed).
pub fn entries_that_fit<T: Serialize>(wire: Wire, entries: &[T], budget: usize) -> usize {
    let mut used = 0usize;
    for (i, e) in entries.iter().enumerate() {
        used = used.saturating_add(wire.encode(e).map_or(usize::MAX, |v| v.len()));
        if used > budget {
            return i.max(1);
        }
    }
    entries.len().max(1)
}

impl PeerClient {
    /// Sends `req` (already encoded in `wire` as `data`); a peer that refuses
    /// a binary payload is sent it again as JSON, and JSON from then on.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        wire: Wire,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let first = self.send(&rpc, data, option).await;
        let refused = std::mem::take(&mut self.refused_binary);
        match first {
            Err(RPCError::Network(_)) if wire == Wire::Binary && refused => {
                if self.json_peers.json_only(self.target) {
                    tracing::info!(
                        peer = self.target,
                        "peer refused a binary raft payload (an earlier release?): sending it JSON"
                    );
                }
                let data = encode(Wire::Json, req)?;
                self.send(&rpc, data, option).await
            }
            other => other,
        }
    }

    async fn send<Resp, E>(&mut self, rpc: &Rpc, data: Vec<u8>, option: &RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.refused_binary = false;
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&Msg(e.clone())))),
        };
        let payload = RaftPayload { data };
        let mut client = client;
        let fut = async move {
            match rpc {
                Rpc::Append => client.append_entries(payload).await,
                Rpc::Vote => client.vote(payload).await,
                Rpc::Snapshot => client.install_snapshot(payload).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(_) => return Err(RPCError::Network(NetworkError::new(&Msg("rpc timed out".into())))),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                // It may come back as another release: probe it with binary again.
                self.json_peers.forget(self.target);
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Ok(Err(status)) => {
                if status.code() == tonic::Code::InvalidArgument && status.message().starts_with(wire::UNDECODABLE) {
                    self.refused_binary = true;
                }
                return Err(RPCError::Network(NetworkError::new(&status)));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.peers.mark_ok(self.target);
        let result: Result<Resp, RaftError<NodeId, E>> =
            wire::decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&Msg(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let wire = self.json_peers.wire(self.target);
        let data = encode(wire, &req)?;
        // openraft counts entries, not bytes (`max_payload_entries`), and our entries
        // are batches: a lagging follower would be sent tens of MiB in one call that
        // cannot finish within its time-to-live, again and again. Past the budget,
        // tell openraft how many entries fit; it sends that many and goes on.
        if data.len() > MAX_APPEND_BYTES && req.entries.len() > 1 {
            let fit = entries_that_fit(wire, &req.entries, MAX_APPEND_BYTES);
            tracing::debug!(
                target = self.target,
                entries = req.entries.len(),
                bytes = data.len(),
                fit,
                "append-entries too large; splitting"
            );
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit as u64)));
        }
        self.call(Rpc::Append, &req, wire, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let wire = self.json_peers.wire(self.target);
        self.call(Rpc::Snapshot, &req, wire, encode(wire, &req)?, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let wire = self.json_peers.wire(self.target);
        self.call(Rpc::Vote, &req, wire, encode(wire, &req)?, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{VoteRequest, VoteResponse};
    use openraft::Vote;
    use qron_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
    use qron_proto::raft::{ForwardRequest, ForwardResponse, NodeInfoRequest, NodeInfoResponse, RaftPayload};
    use qron_raft_store::{NodeId, QronNode};
    use tonic::{Request, Response, Status};

    use super::{entries_that_fit, NetworkFactory};
    use crate::raft::wire::Wire;

    /// A peer of an earlier release: reads and answers JSON only.
    #[derive(Default)]
    struct OldPeer {
        /// The first byte of every vote request it got.
        seen: Mutex<Vec<u8>>,
    }

    #[tonic::async_trait]
    impl RaftService for OldPeer {
        async fn append_entries(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            let data = &req.get_ref().data;
            self.seen
                .lock()
                .expect("lock")
                .push(data.first().copied().unwrap_or_default());
            // What releases before the binary wire did, error message included.
            let v: VoteRequest<NodeId> = serde_json::from_slice(data)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))?;
            let r: Result<VoteResponse<NodeId>, openraft::error::RaftError<NodeId>> =
                Ok(VoteResponse::new(v.vote, None, true));
            let data = serde_json::to_vec(&r).map_err(|e| Status::internal(e.to_string()))?;
            Ok(Response::new(RaftPayload { data }))
        }

        async fn install_snapshot(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn forward(&self, _: Request<ForwardRequest>) -> Result<Response<ForwardResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn node_info(&self, _: Request<NodeInfoRequest>) -> Result<Response<NodeInfoResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    #[tokio::test]
    async fn a_peer_of_an_earlier_release_is_sent_json_after_it_refuses_binary() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let old = std::sync::Arc::new(OldPeer::default());
        let svc = RaftServiceServer::from_arc(old.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut factory = NetworkFactory {
            peers: Default::default(),
            json_peers: Default::default(),
        };
        let node = QronNode {
            grpc_addr: addr.to_string(),
        };
        let option = RPCOption::new(Duration::from_secs(5));
        for term in [4, 5] {
            // A new client each time, as openraft makes them: what was learned is shared.
            let mut client = factory.new_client(2, &node).await;
            let r = client
                .vote(VoteRequest::new(Vote::new(term, 1), None), option.clone())
                .await
                .expect("the vote crosses");
            assert!(r.vote_granted && r.vote == Vote::new(term, 1));
        }
        // Binary once, refused; then JSON, for the retry and for the next call.
        assert_eq!(*old.seen.lock().expect("lock"), [1, b'{', b'{']);
        assert_eq!(factory.json_peers.wire(2), Wire::Json);
    }

    #[test]
    fn entries_that_fit_counts_from_the_first_and_is_never_zero() {
        let entries = vec!["x".repeat(400), "y".repeat(400), "z".repeat(400)];
        // Each encodes to 402 bytes in JSON (quotes), 404 in binary (version
        // byte, str16 header).
        for (wire, each) in [(Wire::Json, 402), (Wire::Binary, 404)] {
            assert_eq!(entries_that_fit(wire, &entries, 10_000), 3);
            assert_eq!(entries_that_fit(wire, &entries, 2 * each), 2);
            assert_eq!(entries_that_fit(wire, &entries, 2 * each - 1), 1);
            // One entry larger than the budget still goes alone.
            assert_eq!(entries_that_fit(wire, &entries, 10), 1);
            assert_eq!(entries_that_fit::<String>(wire, &[], 10), 1);
        }
    }
}
