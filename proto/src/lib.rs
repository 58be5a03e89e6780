//! qron's wire contracts: the gRPC services between servers (and, later, with
//! workers) generated from `proto/*.proto`, and the serde types of the HTTP/JSON
//! API under `/api/v1`.
//!
//! This crate holds shapes only: no behaviour, no I/O. Fields are added, never
//! reused or renamed.
#![forbid(unsafe_code)]

pub mod api;

/// Raft RPCs between server nodes (`qron.raft.v1`).
pub mod raft {
    tonic::include_proto!("qron.raft.v1");
}
