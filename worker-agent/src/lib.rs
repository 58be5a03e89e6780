//! The qron worker agent: finds the leader of a qron cluster, keeps one stream to it,
//! runs the instances it is sent (shell scripts, HTTP calls and Rust [`Processor`]s
//! registered by a program that embeds this library), reports their status and logs,
//! and follows the leader when it changes.
//!
//! The agent knows only the wire contract (`qron_proto::worker`): it never depends on
//! the server's crates. Correctness across failovers rests on three things it keeps in
//! memory for as long as the process lives: the highest leader id it has seen (it
//! refuses orders from lower ones), every `(instance_id, attempt)` it ever accepted
//! (each runs at most once), and its unacknowledged reports (re-sent to whichever
//! node leads next). Two more keep an attempt from running beside its retry: the
//! worker's lease (it kills every attempt once no leader has answered it for the
//! lease, which is shorter than what the leader waits before retrying them) and its
//! state dir (a restarted worker kills what its previous process left before it
//! registers). See rule 11 of docs/rules.md.
//!
//! ```no_run
//! use qron_worker_agent::{Agent, AgentConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), qron_worker_agent::AgentError> {
//! let cfg = AgentConfig::new(vec!["127.0.0.1:7701".into()], "demo", "secret");
//! Agent::new(cfg).run(CancellationToken::new()).await
//! # }
//! ```
#![forbid(unsafe_code)]

// Module layering, lowest first: each module imports (`use crate::…`) only from
// modules above it in this list (STYLE 15). lib.rs only declares and re-exports;
// no module imports from it.
//
//   error, ids, load, util   (nothing from the crate)
//   lease                    util
//   groups                   error, ids
//   config                   error, ids
//   fence                    ids
//   outbox                   ids, util
//   logs                     ids, outbox, util
//   processor                logs, util
//   http                     processor
//   shell                    groups, processor (its tests: util)
//   executor                 config, fence, groups, http, ids, lease, logs, outbox, processor, shell, util
//   connection               config, error, executor, fence, lease, load, outbox, util
//   agent                    config, connection, error, executor, groups, lease, outbox, processor

mod agent;
mod config;
mod connection;
mod error;
mod executor;
mod fence;
mod groups;
mod http;
mod ids;
mod lease;
mod load;
mod logs;
mod outbox;
mod processor;
mod shell;
mod util;

pub use agent::Agent;
pub use config::{default_worker_id, AgentConfig};
pub use connection::ConnectionState;
pub use error::AgentError;
pub use fence::LeaderKey;
pub use groups::{default_state_dir, StateDir};
pub use ids::{Attempt, AttemptKey, InstanceId, WorkerId};
pub use lease::{Lease, DEFAULT_LEASE};
pub use processor::{processor_fn, FnProcessor, ProcessResult, Processor, TaskContext, TaskLogger};
pub use shell::run_shell;
