//! `qron-server`: parses the configuration and runs a node until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use qron_server::config::Args;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cfg = Args::parse().with_file()?.validate()?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cfg.log).context("--log: bad filter")?)
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; draining");
            signals.cancel();
        });
        qron_server::node::run(cfg, shutdown).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
