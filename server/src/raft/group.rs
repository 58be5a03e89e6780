//! Group commit of client writes: while earlier proposals are under way,
//! the writes that arrive meanwhile wait in a queue and go into the log
//! together, as one `Command::Batch` entry. Each write is still applied on
//! its own (a refusal touches only its own command) and answered only once
//! its entry is committed and applied (rule 7): batching changes how many log
//! entries, applies and fsync waits a thousand concurrent writes cost, not
//! what any one of them is told.
//!
//! A write that finds nothing under way is proposed at once, alone: an idle
//! cluster adds no latency.

use std::sync::Arc;

use qron_raft_store::{Command, CommandError, Raft, Reply};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{propose, propose_batch, WriteError};

/// Proposals under way at once; more writes queue and are batched.
const IN_FLIGHT: usize = 4;
/// A batch stops growing at this many commands...
const MAX_COMMANDS: usize = 512;
/// ...or before it would pass this many bytes of encoded commands (a write
/// larger than this goes alone).
const MAX_BYTES: usize = 1024 * 1024;

type Answer = Result<Result<Reply, CommandError>, WriteError>;

struct Pending {
    cmd: Command,
    bytes: usize,
    answer: oneshot::Sender<Answer>,
}

/// The queue in front of [`propose`] that groups concurrent writes.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the proposing task on the current runtime; it ends when every
    /// handle is dropped.
    pub fn start(raft: Raft) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        GroupCommit { queue }
    }

    /// Proposes `cmd` (in a batch with whatever else is waiting) and returns
    /// what applying it answered; as [`propose`].
    pub async fn propose(&self, cmd: Command) -> Answer {
        // The log store would fail on a command it cannot encode, and with it
        // the whole batch: refuse that one here.
        let bytes = match qron_raft_store::encoding::encode(&cmd) {
            Ok(b) => b.len(),
            Err(e) => return Ok(Err(CommandError::Invalid(format!("cannot encode the command: {e}")))),
        };
        let (answer, rx) = oneshot::channel();
        if self.queue.send(Pending { cmd, bytes, answer }).is_err() {
            return Err(stopped());
        }
        // The proposing task only drops an answer when the runtime stops.
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> WriteError {
    openraft::error::RaftError::Fatal(openraft::error::Fatal::Stopped)
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A write that did not fit the previous batch: the next one starts with it.
    let mut carried: Option<Pending> = None;
    loop {
        // Taking a slot first means that with IN_FLIGHT proposals under way,
        // new writes gather in the queue and leave together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS {
            match rx.try_recv() {
                Ok(p) if bytes + p.bytes > MAX_BYTES => {
                    carried = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if batch.len() == 1 {
                let p = batch.pop().expect("one write");
                let _ = p.answer.send(propose(&raft, p.cmd).await);
                return;
            }
            let (cmds, answers): (Vec<Command>, Vec<oneshot::Sender<Answer>>) =
                batch.into_iter().map(|p| (p.cmd, p.answer)).unzip();
            match propose_batch(&raft, cmds).await {
                Ok(replies) => {
                    for (answer, reply) in answers.into_iter().zip(replies) {
                        let _ = answer.send(Ok(reply));
                    }
                }
                Err(e) => {
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
