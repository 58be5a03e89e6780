//! Raft between server nodes over tonic gRPC: the client side openraft calls
//! ([`network`]), the server side that hands requests to the local Raft
//! ([`service`]), and the two calls every subsystem makes on Raft: [`propose`]
//! a batch of commands and wait for the term's first entry ([`barrier`]), and
//! the group commit of client writes ([`group`]).
//!
//! Ground level: imports only `peers` (the reachability table the network fills).

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use qron_raft_store::{Command, CommandError, NodeId, QronNode, Raft, Reply};
use tokio_util::sync::CancellationToken;

pub mod group;
pub mod network;
pub mod service;
pub mod wire;

/// Largest gRPC message accepted or sent: a batch of log entries or one snapshot chunk.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// An AppendEntries carries at most this many bytes of encoded entries (more
/// than one entry); a single entry is bounded where it is proposed (a report
/// batch by [`MAX_REPORT_BATCH_BYTES`], an API write by the request limits).
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

/// A batch of worker reports proposed as one entry stops growing past this many
/// bytes of payload (log data and results).
pub const MAX_REPORT_BATCH_BYTES: usize = 256 * 1024;

/// Marks an HTTP request a follower forwarded to the leader, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-qron-forwarded";

/// The HTTP header of a write's idempotency key (docs/api.md); `Forward`
/// carries it in a field of its own and the leader puts it back here.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// openraft's answer to a write that was not committed.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, QronNode>>;

/// Proposes one command and waits until it is committed and applied; the outer
/// error is openraft's (not committed), the inner one is `apply`'s refusal.
pub async fn propose(raft: &Raft, cmd: Command) -> Result<Result<Reply, CommandError>, WriteError> {
    Ok(raft.client_write(cmd).await?.data.0)
}

/// Proposes `commands` as one log entry (`Command::Batch`) and returns each
/// command's own answer, in order.
pub async fn propose_batch(
    raft: &Raft,
    commands: Vec<Command>,
) -> Result<Vec<Result<Reply, CommandError>>, WriteError> {
    let n = commands.len();
    match propose(raft, Command::Batch { commands }).await? {
        Ok(Reply::Batch(replies)) => Ok(replies),
        // apply answers a batch with a batch; anything else would be a bug in
        // apply, reported per command rather than trusted.
        Ok(other) => Ok(vec![
            Err(CommandError::Conflict(format!(
                "unexpected batch reply {other:?}"
            )));
            n
        ]),
        Err(e) => Ok(vec![Err(e); n]),
    }
}

/// Waits until this node, as leader, has applied its term's first entry (a
/// linearizable read), so that leader-only work reads state that includes
/// everything committed before it (docs/rules.md, "a new leader first commits a
/// blank entry"). Gives up (false) when `token` is cancelled or `still_leader`
/// says the leadership this barrier was for is gone. Each try is bounded by
/// `try_for`: a leader cut off from its quorum does not hang here.
pub async fn barrier(
    raft: &Raft,
    try_for: Duration,
    token: &CancellationToken,
    still_leader: impl Fn() -> bool,
) -> bool {
    loop {
        let attempt = tokio::time::timeout(try_for, raft.ensure_linearizable());
        tokio::select! {
            _ = token.cancelled() => return false,
            r = attempt => match r {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => tracing::debug!(error = %e, "waiting for the term's first entry"),
                Err(_) => tracing::debug!(?try_for, "the term's first entry is not applied yet"),
            }
        }
        if !still_leader() {
            return false;
        }
        tokio::select! {
            _ = token.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}
