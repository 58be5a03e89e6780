//! The one way the replicated state changes: a [`Command`] in the Raft log,
//! answered by a [`Response`].
//!
//! Every time value (`now_ms`) is the proposer's clock, carried in the command,
//! so that `apply` never reads a clock (rule 1).

use qron_proto::api::JobSpec;
use serde::{Deserialize, Serialize};

use crate::model::Job;
use crate::types::JobId;

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateApp {
        name: String,
        secret: String,
        now_ms: i64,
    },
    CreateJob {
        spec: JobSpec,
        now_ms: i64,
    },
    /// Replaces a job's spec; the app cannot change.
    UpdateJob {
        id: JobId,
        spec: JobSpec,
        now_ms: i64,
    },
    DeleteJob {
        id: JobId,
    },
    SetJobEnabled {
        id: JobId,
        enabled: bool,
        now_ms: i64,
    },
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// For log entries that carry no command (blank, membership).
    None,
    AppCreated {
        name: String,
    },
    Job(Box<Job>),
    JobDeleted {
        id: JobId,
    },
}

/// The state machine's answer to one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response(pub Result<Reply, CommandError>);
