//! Typed identifiers and the Raft node record.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A server node's Raft id.
pub type NodeId = u64;

/// What the membership records about a node: its gRPC address. The HTTP
/// address is learned from the node itself over gRPC, so it is configured once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QronNode {
    pub grpc_addr: String,
}

impl fmt::Display for QronNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.grpc_addr)
    }
}

/// A job's id, assigned by the state machine in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
