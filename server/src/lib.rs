//! One qron cluster node: configuration, the Raft node and its gRPC network,
//! the HTTP API, and the wiring in [`node::run`].
#![forbid(unsafe_code)]
// openraft's error types (StorageError, RaftError) are large by design and are what its
// traits require us to return; boxing them at every call would only add noise.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod config;
pub mod dispatch;
pub mod leadership;
pub mod node;
pub mod peers;
pub mod raft;
pub mod scheduler;
