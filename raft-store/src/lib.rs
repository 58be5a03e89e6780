//! qron's replicated state.
//!
//! * [`model`], [`command`] and [`state`]: the domain (apps, jobs), the
//!   [`Command`] enum every change goes through, and [`State::apply`], a pure,
//!   deterministic function of the state and a command.
//! * [`log_store`] and [`state_machine`]: openraft's v2 storage traits on
//!   RocksDB (log and vote, fsynced before they are acknowledged) and on
//!   snapshot files.
//!
//! This crate knows nothing of networks, clocks or tasks of its own: every time
//! value arrives inside a command.
#![forbid(unsafe_code)]
// openraft's error types (StorageError, RaftError) are large by design and are what its
// traits require us to return; boxing them at every call would only add noise.
#![allow(clippy::result_large_err)]

pub mod command;
pub mod encoding;
pub mod idempotency;
pub mod instance;
pub mod legacy;
pub mod limits;
pub mod log_store;
pub mod model;
pub mod raft_types;
pub mod retention;
pub mod schedule;
pub mod snapshot_file;
pub mod state;
pub mod state_machine;
pub mod types;

pub use command::{Command, CommandError, Reply, Response};
pub use instance::{Instance, InstanceId, InstanceLog, InstanceStatus, PendingStop};
pub use log_store::LogStore;
pub use raft_types::{Entry, Raft, StorageError, TypeConfig};
pub use snapshot_file::SnapshotFile;
pub use state::State;
pub use state_machine::{SharedState, StateMachineStore, StorageMemory};
pub use types::{Attempt, JobId, NodeId, QronNode, WorkerId};

/// Opens (or creates) the RocksDB database and the snapshot directory under
/// `dir` and returns the log store and the state machine sharing them.
pub fn open(dir: &std::path::Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    let db = log_store::open_db(&dir.join("raft"))?;
    // Shared: the log is purged only behind a snapshot the state machine recorded.
    let purger = log_store::Purger::open(db.clone())?;
    let log = LogStore::new(db.clone(), purger.clone())?;
    let sm = StateMachineStore::open(db, &dir.join("snapshots"), purger)?;
    Ok((log, sm))
}
