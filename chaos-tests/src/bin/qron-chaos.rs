//! `qron-chaos`: runs a chaos profile against a local process cluster and
//! prints the checker's summary. The long profile is the one a person runs:
//!
//!   cargo run -p qron-chaos-tests --bin qron-chaos -- --profile long --seed 42
//!
//! Exit status 1 if any invariant broke (logs are kept in the directory printed).

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use qron_chaos_tests::chaos::{run, Profile};

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// 10 leader kills, 2 pauses, a follower, a worker and a full restart, one
    /// each of the worker faults (tree freeze, worker-only kill, stop during
    /// failover) and one leader kill under a client retrying its writes (CI).
    Bounded,
    /// 100 leader kills, 10 pauses, 10 follower and worker kills, 3 full restarts,
    /// 10 of each worker fault, 10 leader kills under a client retrying its writes.
    Long,
}

#[derive(Parser)]
#[command(
    name = "qron-chaos",
    about = "Kill, pause and restart a local qron cluster under load, then check that nothing was lost or run twice"
)]
struct Args {
    #[arg(long, value_enum, default_value = "bounded")]
    profile: Which,
    /// Seed of the fault schedule: the same seed replays the same run.
    #[arg(long, default_value_t = 20261125)]
    seed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let profile = match args.profile {
        Which::Bounded => Profile::bounded(args.seed),
        Which::Long => Profile::long(args.seed),
    };
    let keep = std::env::temp_dir().join(format!("qron-chaos-failure-{}", args.seed));
    match run(&profile, Some(&keep)).await {
        Ok(report) => {
            print!("{}", report.summary());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("invariants broken; logs kept in {}", keep.display());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("qron-chaos: the run itself failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
