//! The one error type of the worker agent library.
//!
//! Only three kinds ever leave [`crate::Agent::run`]: a configuration the agent cannot
//! work with, a state dir it cannot use, and a registration the leader refused for good
//! (a wrong secret will not fix itself by retrying; an unknown app may, and is retried). Everything else — unreachable servers, broken
//! streams, missing pongs — is handled inside by reconnecting with back-off.

use std::time::Duration;

/// Errors of the worker agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A setting is unusable; the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The leader refused the registration; the reason comes from the server.
    #[error("registration refused by the leader: {0}")]
    Refused(String),

    /// A server address could not be turned into a gRPC endpoint.
    #[error("bad server address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },

    /// Connecting to a server failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },

    /// A gRPC call failed (boxed: `tonic::Status` is large).
    #[error("gRPC call to {addr} failed: {status}")]
    Rpc { addr: String, status: Box<tonic::Status> },

    /// A step did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    /// The server ended the stream.
    #[error("the server at {0} closed the stream")]
    StreamClosed(String),

    /// Could not build the HTTP client used by HTTP processors.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    /// The state dir cannot be used (locked by another worker, unreadable), or the
    /// leftovers of a previous worker process it records would not die.
    #[error("state dir: {0}")]
    StateDir(String),

    /// A task of the agent itself died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}
