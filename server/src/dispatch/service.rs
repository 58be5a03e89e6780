//! The gRPC `WorkerService`: `Acquire` (any node answers who leads) and
//! `Connect` (one stream per worker, accepted only while this node's published
//! role is Leader; a follower answers `NotLeader` naming the leader).

use std::sync::Arc;

use qron_proto::worker::worker_service_server::WorkerService;
use qron_proto::worker::{AcquireRequest, AcquireResponse, ServerMessage, WorkerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::messages::not_leader;
use super::session::Session;
use super::Dispatch;
use crate::context::Context;
use crate::discovery;
use crate::role::Role;

pub struct WorkerRpc {
    pub ctx: Arc<Context>,
    pub dispatch: Arc<Dispatch>,
}

/// Messages queued for one worker's stream at most.
const STREAM_CAPACITY: usize = 8_192;

#[tonic::async_trait]
impl WorkerService for WorkerRpc {
    async fn acquire(&self, _req: Request<AcquireRequest>) -> Result<Response<AcquireResponse>, Status> {
        Ok(Response::new(discovery::acquire(&self.ctx)))
    }

    type ConnectStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(&self, req: Request<Streaming<WorkerMessage>>) -> Result<Response<Self::ConnectStream>, Status> {
        // Room for a burst: with pre-dispatch, a second's fires of thousands of
        // jobs leave for a worker at once. A full stream refuses a dispatch
        // (re-sent by the next sweep) rather than blocking the dispatcher.
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let out = ReceiverStream::new(rx);
        let Role::Leader(leader) = self.ctx.role() else {
            // A follower (or a leader without quorum): name the leader and end the stream.
            let _ = tx.try_send(Ok(not_leader(discovery::other_leader(&self.ctx))));
            return Ok(Response::new(out));
        };
        let session = Session {
            ctx: self.ctx.clone(),
            d: self.dispatch.clone(),
            tx,
            leader,
        };
        self.dispatch.sessions.spawn(session.run(req.into_inner()));
        Ok(Response::new(out))
    }
}
