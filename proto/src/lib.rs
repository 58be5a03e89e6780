//! qron's wire contracts: the gRPC services between servers and with workers generated from `proto/*.proto`, and the serde types of the HTTP/JSON
//! API under `/api/v1`.
//!
//! This crate holds shapes only: no behaviour, no I/O. Fields are added, never
//! reused or renamed.
#![forbid(unsafe_code)]

pub mod api;

/// The worker protocol (`qron.worker.v1`): discovery and the worker stream.
pub mod worker {
    tonic::include_proto!("qron.worker.v1");

    /// Largest `LogBatch.data` a server accepts: a bigger one is a malformed
    /// message. Each batch becomes part of a Raft entry, and entries must stay
    /// small enough to replicate within a heartbeat (docs/rules.md, rule 7).
    pub const MAX_LOG_BATCH_BYTES: usize = 256 * 1024;
}

/// Raft RPCs between server nodes (`qron.raft.v1`).
pub mod raft {
    tonic::include_proto!("qron.raft.v1");
}
