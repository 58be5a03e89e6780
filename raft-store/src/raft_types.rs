//! openraft's type configuration for qron and the aliases built on it. Kept
//! apart from `types.rs` (ids), which the command and model modules import:
//! this one imports them.

use crate::command::{Command, Response};
use crate::snapshot_file::SnapshotFile;
use crate::types::{NodeId, QronNode};

openraft::declare_raft_types!(
    /// openraft's type configuration for qron.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = QronNode,
        SnapshotData = SnapshotFile,
);

/// The openraft handle of a qron node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry of qron's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;
/// The storage error openraft expects from our stores.
pub type StorageError = openraft::StorageError<NodeId>;
