//! One qron cluster node: configuration, the Raft node and its gRPC network,
//! the HTTP API, and the wiring in [`node::run`].
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod node;
pub mod peers;
pub mod raft;
