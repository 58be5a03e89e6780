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

/// Which attempt of an instance: 0 before the first dispatch, raised by each
/// assignment to a worker. Reports, logs and losses are fenced by it (rule 1,
/// docs/rules.md). Serialized as the bare number, so the log is unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt after this one.
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A worker's name (its `--worker-id`), unique among the live workers of a
/// cluster. A restarted worker keeps it; its incarnation changes. Serialized as
/// the bare string.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl WorkerId {
    /// A worker id with this name.
    pub fn new(name: impl Into<String>) -> Self {
        WorkerId(name.into())
    }

    /// The name, as the wire carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
