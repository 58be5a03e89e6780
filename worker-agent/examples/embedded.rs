//! A program that embeds the qron worker agent with a processor of its own.
//!
//! It registers `word-count`, which counts the words of the job's parameters (and of
//! the instance's, when set), logging its progress to the instance log. A job selects
//! it with `"processor": {"type": "custom", "name": "word-count"}`.
//!
//! ```text
//! cargo run -p qron-worker-agent --example embedded -- 127.0.0.1:7701 demo SECRET
//! ```

use std::time::Duration;

use futures::future::BoxFuture;
use qron_worker_agent::{Agent, AgentConfig, ProcessResult, Processor, TaskContext};
use tokio_util::sync::CancellationToken;

/// Counts words, one parameter line at a time, stopping early when told to.
struct WordCount;

impl Processor for WordCount {
    fn process(&self, ctx: TaskContext) -> BoxFuture<'_, ProcessResult> {
        Box::pin(async move {
            let text = format!("{}\n{}", ctx.job_params, ctx.instance_params);
            let mut words = 0usize;
            for (n, line) in text.lines().enumerate() {
                if ctx.cancel.is_cancelled() {
                    let why = ctx.cancel_reason().unwrap_or_else(|| "stopped".to_owned());
                    return ProcessResult::failed(format!("{why} after {words} words"));
                }
                let here = line.split_whitespace().count();
                words += here;
                ctx.logger.log(format!("line {}: {here} words ({words} so far)", n + 1));
                // Yield between lines so a stop is noticed even on long inputs.
                tokio::task::yield_now().await;
            }
            ProcessResult::ok(format!("{words} words"))
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();
    let mut args = std::env::args().skip(1);
    let seeds = args.next().unwrap_or_else(|| "127.0.0.1:7701".to_owned());
    let app = args.next().unwrap_or_else(|| "demo".to_owned());
    let secret = args.next().unwrap_or_default();

    let mut cfg = AgentConfig::new(seeds.split(',').map(str::to_owned).collect(), app, secret);
    cfg.tags = vec!["embedded".to_owned()];
    cfg.shutdown_grace = Duration::from_secs(5);

    let mut agent = Agent::new(cfg);
    agent.register_processor("word-count", WordCount);

    let shutdown = CancellationToken::new();
    let on_ctrl_c = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_ctrl_c.cancel();
    });
    agent.run(shutdown).await?;
    Ok(())
}
