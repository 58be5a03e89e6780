//! What every handler can reach ([`ApiState`]: the node context and the
//! dispatcher's handle) and the two calls they make on Raft, with openraft's
//! errors mapped to [`ApiError`]. Below the handlers and the router: it imports
//! neither.

use std::sync::Arc;

use qron_raft_store::{Command, Reply};

use super::error::{self, ApiError};
use super::idempotency::Idem;
use crate::clock::now_ms;
use crate::context::Context;
use crate::discovery;
use crate::dispatch::Dispatch;
use crate::raft::network::Clients;

/// Largest request body accepted (and forwarded).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What every handler can reach.
pub struct ApiState {
    pub ctx: Arc<Context>,
    /// The leader's worker registry and dispatcher wake-up (workers list, run, stop).
    pub dispatch: Arc<Dispatch>,
    /// gRPC clients of the leaders requests were forwarded to.
    pub(super) forward: Clients,
}

impl ApiState {
    pub fn new(ctx: Arc<Context>, dispatch: Arc<Dispatch>) -> Self {
        ApiState {
            ctx,
            dispatch,
            forward: Clients::default(),
        }
    }

    /// Proposes a client's command, under the request's idempotency key if it
    /// has one, and returns what applying it answered (for a key seen before:
    /// what the first command under it answered).
    pub async fn propose(&self, key: &Idem, cmd: Command) -> Result<Reply, ApiError> {
        let reply = self
            .ctx
            .writes
            .propose(key.wrap(cmd, now_ms()))
            .await
            .map_err(|e| error::from_write_error(e, |id, n| discovery::hint(&self.ctx, id, n)))?;
        Ok(reply?)
    }

    /// Waits until a read on this node is linearizable, unless `stale` asks for a local read.
    pub async fn read_barrier(&self, stale: bool) -> Result<(), ApiError> {
        if stale {
            return Ok(());
        }
        self.ctx
            .raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| error::from_read_error(e, |id, n| discovery::hint(&self.ctx, id, n)))
    }
}
