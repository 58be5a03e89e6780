//! Raft between server nodes over tonic gRPC: the client side openraft calls
//! ([`network`]) and the server side that hands requests to the local Raft
//! ([`service`]). openraft's messages travel as JSON inside `RaftPayload`.

pub mod network;
pub mod service;

/// Largest gRPC message accepted or sent: a batch of log entries or one snapshot chunk.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
