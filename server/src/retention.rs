//! The leader's retention task (rule 12, docs/rules.md): every tick, asks the
//! pure planner (`State::expiry_plan`) for the next bounded batch
//! of finished instances and logs the policy lets go, and proposes it as one
//! `Command::Expire` carrying the leader's time. A full batch is followed by
//! the next at once; otherwise it waits a tick.
//!
//! It never blocks firing: each batch is one small Raft entry among the
//! scheduler's, and apply removes only what is still safe when it applies
//! (`State::expirable`). It is one of the leader's tasks: `leadership.rs`
//! starts it after the term's barrier and cancels it with the term.

use std::sync::Arc;
use std::time::Duration;

use qron_raft_store::{Command, JobId, Reply};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::context::Context;
use crate::raft::propose;

/// Instances (and, separately, logs) removed by one `Expire` at most: a
/// bounded entry that applies in a few milliseconds.
pub const MAX_EXPIRE_BATCH: usize = 1_000;
/// How often the policy is checked when the last batch was not full.
const TICK: Duration = Duration::from_secs(1);

/// Runs until `token` is cancelled.
pub async fn run(ctx: Arc<Context>, token: CancellationToken) -> anyhow::Result<()> {
    tracing::info!("retention started");
    // The walk over the jobs goes on from where the last plan stopped: with many
    // jobs a pass takes several ticks, each a bounded amount of work.
    let mut from = JobId(0);
    loop {
        let now = now_ms();
        let batch = ctx.state.read().expiry_plan(now, MAX_EXPIRE_BATCH, from);
        from = batch.next_job.unwrap_or(JobId(0));
        let mut full = batch.instances.len() >= MAX_EXPIRE_BATCH || batch.logs.len() >= MAX_EXPIRE_BATCH;
        if !batch.is_empty() {
            let cmd = Command::Expire {
                instances: batch.instances,
                logs: batch.logs,
                now_ms: now,
            };
            match propose(&ctx.raft, cmd).await {
                Ok(Ok(Reply::Expired { instances, logs })) => {
                    tracing::info!(instances, logs, "expired under the retention policy");
                }
                Ok(other) => tracing::warn!(reply = ?other, "unexpected answer to an expiry"),
                // Not committed (leadership lost, most likely): the term ends soon; try again later.
                Err(e) => {
                    tracing::warn!(error = %e, "expiry not committed");
                    full = false;
                }
            }
        }
        if full {
            tokio::task::yield_now().await;
            if token.is_cancelled() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    tracing::info!("retention stopped");
    Ok(())
}
