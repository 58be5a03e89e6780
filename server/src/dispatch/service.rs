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

#[tonic::async_trait]
impl WorkerService for WorkerRpc {
    async fn acquire(&self, _req: Request<AcquireRequest>) -> Result<Response<AcquireResponse>, Status> {
        Ok(Response::new(discovery::acquire(&self.ctx)))
    }

    type ConnectStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(&self, req: Request<Streaming<WorkerMessage>>) -> Result<Response<Self::ConnectStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
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
