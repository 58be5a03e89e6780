//! openraft's `RaftNetwork` over gRPC. One lazily connected channel per peer;
//! every call is bounded by openraft's time-to-live for it.

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

use super::{MAX_APPEND_BYTES, MAX_MESSAGE_BYTES};
use crate::peers::Peers;

/// Makes a [`PeerClient`] per target node.
#[derive(Clone)]
pub struct NetworkFactory {
    pub peers: Arc<Peers>,
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
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftServiceClient<Channel>, String>,
    peers: Arc<Peers>,
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

fn encode<Req: Serialize, E>(req: &Req) -> Result<Vec<u8>, RpcErr<E>>
where
    E: std::error::Error,
{
    serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

/// How many of `entries`, from the first, fit in `budget` bytes once encoded;
/// at least one (a single entry is bounded where it is proposed).
pub fn entries_that_fit<T: Serialize>(entries: &[T], budget: usize) -> usize {
    let mut used = 0usize;
    for (i, e) in entries.iter().enumerate() {
        used = used.saturating_add(serde_json::to_vec(e).map_or(usize::MAX, |v| v.len()));
        if used > budget {
            return i.max(1);
        }
    }
    entries.len().max(1)
}

impl PeerClient {
    async fn call<Resp, E>(&mut self, rpc: Rpc, data: Vec<u8>, option: &RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
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
                return Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Ok(Err(status)) => return Err(RPCError::Network(NetworkError::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        self.peers.mark_ok(self.target);
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let data = encode(&req)?;
        // openraft counts entries, not bytes (`max_payload_entries`), and our entries
        // are batches: a lagging follower would be sent tens of MiB in one call that
        // cannot finish within its time-to-live, again and again. Past the budget,
        // tell openraft how many entries fit; it sends that many and goes on.
        if data.len() > MAX_APPEND_BYTES && req.entries.len() > 1 {
            let fit = entries_that_fit(&req.entries, MAX_APPEND_BYTES);
            tracing::debug!(
                target = self.target,
                entries = req.entries.len(),
                bytes = data.len(),
                fit,
                "append-entries too large; splitting"
            );
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit as u64)));
        }
        self.call(Rpc::Append, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, encode(&req)?, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call(Rpc::Vote, encode(&req)?, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::entries_that_fit;

    #[test]
    fn entries_that_fit_counts_from_the_first_and_is_never_zero() {
        let entries = vec!["x".repeat(400), "y".repeat(400), "z".repeat(400)];
        // Each encodes to 402 bytes (JSON quotes).
        assert_eq!(entries_that_fit(&entries, 10_000), 3);
        assert_eq!(entries_that_fit(&entries, 804), 2);
        assert_eq!(entries_that_fit(&entries, 803), 1);
        // One entry larger than the budget still goes alone.
        assert_eq!(entries_that_fit(&entries, 10), 1);
        assert_eq!(entries_that_fit::<String>(&[], 10), 1);
    }
}
