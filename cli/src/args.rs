//! The command line: every subcommand, flag and help text (clap derive).
//!
//! Parsing only. This module never talks to the network and never checks how
//! flags combine beyond what clap does; `spec.rs` and `commands.rs` do that, so
//! their messages can name the flags that clash.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// Where `qronctl` looks for the cluster when neither `--endpoints` nor `QRON_ENDPOINTS` is set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7700";

/// Examples shown at the end of `qronctl --help` (kept out of the doc comment,
/// whose lines clap joins into paragraphs).
const EXAMPLES: &str = "\
Examples:
  qronctl cluster status
  qronctl --endpoints 10.0.0.1:7700,10.0.0.2:7700 job list --app billing
  qronctl job create --app billing --name nightly --cron '0 0 2 * * *' \\
      --time-zone Europe/Paris --shell './run-invoices.sh'
  qronctl job get 7 -o json > job.json && qronctl job update 7 --file job.json
  qronctl job run 7 && qronctl instance logs 12 --follow
  qronctl instance list --app billing --status failed";

/// Examples shown at the end of `qronctl instance logs --help`.
const INSTANCE_LOGS_EXAMPLES: &str = "\
Examples:
  qronctl instance logs 12
  qronctl instance logs 12 --follow
  qronctl instance logs 12 --offset 4096 -o json";

/// Examples shown at the end of `qronctl job create --help`.
const JOB_CREATE_EXAMPLES: &str = "\
Examples:
  qronctl job create --app billing --name every-5s --cron '*/5 * * * * *' --shell date
  qronctl job create --app billing --name ping --fixed-rate-ms 60000 \\
      --http-url http://billing.internal/health
  qronctl job create --file job.json";

/// Operate a qron job scheduler cluster over its HTTP API.
///
/// qronctl talks to the HTTP API (/api/v1) of any node of a qron cluster. Any
/// node answers any request: writes, and reads unless --stale is given, are
/// forwarded to the leader by the node asked. When a node is down, qronctl
/// tries the next endpoint; while a leader election is in progress it retries
/// for a few seconds before giving up. Every write is sent under one
/// Idempotency-Key, so sending it again, to any node, applies it once.
#[derive(Debug, Parser)]
#[command(name = "qronctl", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Nodes to talk to, tried in order
    ///
    /// A comma-separated list of HTTP API addresses. `HOST:PORT` means
    /// `http://HOST:PORT`. The first node that answers is used for the rest of
    /// the run; a node that cannot be reached is skipped.
    #[arg(
        long,
        global = true,
        env = "QRON_ENDPOINTS",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL[,URL...]"
    )]
    pub endpoints: String,

    /// How to print answers: aligned columns for people, or the server's JSON
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Give up on a node that has not answered within this many milliseconds
    ///
    /// Applies to each HTTP request. A node that does not answer in time is
    /// treated as down and the next endpoint is tried. Writes are sent again
    /// under the same Idempotency-Key, which the cluster applies once; only
    /// `cluster add-node` and `remove-node` are not sent again once a node may
    /// have received them.
    #[arg(
        long,
        global = true,
        default_value_t = 10_000,
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_ms: u64,

    /// Read from the node asked, without asking the leader (may be out of date)
    ///
    /// Without it, reads are linearizable: the node asked forwards them to the
    /// leader, which confirms it still leads before answering. With it, the node
    /// asked answers from its own copy of the state, which may lag behind. Useful
    /// when there is no leader. Applies to `app list`, `job list`, `job get`,
    /// `instance list`, `instance get`, `instance logs` and `worker list`
    /// (`cluster status` is always answered by the node asked).
    #[arg(long, global = true)]
    pub stale: bool,

    /// Send this command's write under KEY instead of a fresh key
    ///
    /// Every write is sent with an Idempotency-Key header; the cluster applies
    /// a key's first request once and answers every repeat of it (within 24
    /// hours) with that first answer. When qronctl could not learn whether a
    /// write was applied, it prints the key it used: run the same command
    /// again with `--idempotency-key KEY` to apply it at most once and see its
    /// answer. The same key with another request is refused.
    #[arg(long, global = true, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level subcommands, one per API resource.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing buys nothing
pub enum Command {
    /// Show the cluster's nodes and leader, add or remove nodes
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Create and list apps (the namespaces jobs and workers belong to)
    #[command(subcommand)]
    App(AppCommand),

    /// Create, list, show, change, delete, enable, disable and run jobs
    #[command(subcommand)]
    Job(JobCommand),

    /// List and show the runs of jobs, stop, cancel or retry them, read their logs
    #[command(subcommand)]
    Instance(InstanceCommand),

    /// List the workers that run the jobs
    #[command(subcommand)]
    Worker(WorkerCommand),
}

impl Command {
    /// Whether the command only reads, so that `--stale` means something for it.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Command::Cluster(ClusterCommand::Status)
                | Command::App(AppCommand::List)
                | Command::Job(JobCommand::List { .. } | JobCommand::Get { .. } | JobCommand::NextFires { .. })
                | Command::Instance(
                    InstanceCommand::List { .. } | InstanceCommand::Get { .. } | InstanceCommand::Logs { .. }
                )
                | Command::Worker(WorkerCommand::List { .. })
        )
    }

    /// Why `--idempotency-key` does not apply to this command, if it does not.
    pub fn refuses_idempotency_key(&self) -> Option<&'static str> {
        match self {
            _ if self.is_read() => Some("only applies to commands that change something"),
            Command::Cluster(ClusterCommand::AddNode { .. } | ClusterCommand::RemoveNode { .. }) => {
                Some("does not apply to membership changes, which the cluster does not record under keys")
            }
            _ => None,
        }
    }
}

/// `qronctl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster as the node asked sees it
    ///
    /// Prints the node's Raft state (role, term, log, commit and applied
    /// indexes), who it believes leads, and every member with its addresses and
    /// whether the node asked can reach it. This is answered by the node asked,
    /// never forwarded, so asking each node in turn shows whether they agree.
    Status,

    /// Add a node to the cluster
    ///
    /// The node joins as a learner, receives the log until it has caught up, and
    /// is then promoted to voter (unless --learner-only). The command returns
    /// once that is done, which can take a while on a large cluster state: raise
    /// --timeout-ms if needed. The new node must already be running.
    AddNode {
        /// The new node's id (a positive number, unique in the cluster)
        #[arg(long)]
        id: u64,

        /// The new node's gRPC (Raft) address, as the other nodes can reach it
        #[arg(long, value_name = "HOST:PORT")]
        grpc_addr: String,

        /// Keep the node a learner (it gets the log but does not vote)
        #[arg(long)]
        learner_only: bool,
    },

    /// Remove a node from the cluster
    ///
    /// A voter is removed from the voters (it does not stay on as a learner); a
    /// learner is simply dropped. The last voter cannot be removed. Stop the
    /// node's process afterwards.
    RemoveNode {
        /// The id of the node to remove
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Show or change the cluster's retention of finished instances and logs
    ///
    /// A finished instance expires once it is older than the max age (counted
    /// from its end) or is not among its job's newest max-count instances; the
    /// leader removes expired instances in bounded batches. All logs together
    /// are kept under max-log-bytes, the oldest removed first. Apps and jobs
    /// may override the age and count (`qronctl app retention`, `job create
    /// --retention-*`). Without flags, shows the settings; with flags, changes
    /// those given. Defaults: 7 days, 10,000 per job, 1 GiB of logs.
    Retention {
        /// Age after which a finished instance expires, in milliseconds (at least 1000)
        #[arg(long, value_name = "MS")]
        max_age_ms: Option<u64>,

        /// Instances kept per job, the newest (at least 1)
        #[arg(long, value_name = "N")]
        max_count: Option<u64>,

        /// Bytes of all instance logs together (at least 65536)
        #[arg(long, value_name = "BYTES")]
        max_log_bytes: Option<u64>,
    },
}

/// `qronctl app ...`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app
    ///
    /// An app groups jobs and the workers that run them. Workers of the app
    /// present its secret when they register. The secret is never shown again.
    Create {
        /// The app's name
        #[arg(value_name = "NAME")]
        name: String,

        /// The secret the app's workers present when they register
        ///
        /// Prefer the QRON_APP_SECRET environment variable: a flag's value can be
        /// seen by other users in the process list.
        #[arg(long, env = "QRON_APP_SECRET", hide_env_values = true, value_name = "SECRET")]
        secret: String,
    },

    /// List the apps
    List,

    /// Set an app's retention overrides for its jobs' instances
    ///
    /// Flags given override the cluster's setting for every job of the app
    /// (a job's own setting wins over the app's); a flag left out inherits the
    /// cluster's. With no flag at all, the app's overrides are cleared.
    Retention {
        /// The app's name
        #[arg(value_name = "NAME")]
        name: String,

        /// Age after which a finished instance expires, in milliseconds (at least 1000)
        #[arg(long, value_name = "MS")]
        max_age_ms: Option<u64>,

        /// Instances kept per job, the newest (at least 1)
        #[arg(long, value_name = "N")]
        max_count: Option<u64>,
    },
}

/// `qronctl job ...`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing buys nothing
pub enum JobCommand {
    /// Create a job, from flags or from a JSON file
    ///
    /// Either give the whole job as JSON with --file (the JobSpec of the API;
    /// `qronctl job get ID -o json` prints one you can edit), or describe it
    /// with flags: --app, --name, one schedule and one processor. Every setting
    /// not given takes the API's default.
    ///
    /// Schedules: --cron EXPR [--time-zone TZ], --fixed-rate-ms N,
    /// --fixed-delay-ms N, or --api (runs only when asked through the API; the
    /// default when no schedule is given).
    ///
    /// Processors (exactly one): --shell SCRIPT, --http-url URL [--http-method
    /// M], or --custom NAME.
    ///
    /// If the request times out, it is sent again (to the next endpoint) under
    /// the same Idempotency-Key: the job is created once.
    #[command(after_help = JOB_CREATE_EXAMPLES)]
    Create(JobCreateArgs),

    /// List the jobs, of every app or of one, by id
    ///
    /// The server answers a page at a time (at most 10,000 jobs); this
    /// command fetches every page unless --limit is given.
    List {
        /// Only the jobs of this app
        #[arg(long, value_name = "NAME")]
        app: Option<String>,

        /// At most this many jobs (1 to 10000); without it, all of them
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,

        /// Only the jobs with an id above this one (the next page)
        #[arg(long, value_name = "ID")]
        after_id: Option<u64>,
    },

    /// Show one job
    ///
    /// The table shows the main settings; `-o json` shows all of them, in the
    /// form `job update --file` accepts.
    Get {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Replace a job's settings with those of a JSON file
    ///
    /// The file holds the whole job (every setting not in it takes its default,
    /// it is not merged with the current one). The output of `qronctl job get ID
    /// -o json` is accepted as is, so the usual way is: get, edit, update.
    Update {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,

        /// The job as JSON; `-` reads it from stdin
        #[arg(short = 'f', long, value_name = "PATH")]
        file: PathBuf,
    },

    /// Delete a job
    ///
    /// If the request times out, it is sent again under the same
    /// Idempotency-Key, and answers as the first did.
    Delete {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Enable a job: it fires on its schedule again
    Enable {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Disable a job: it stops firing until enabled (running instances go on)
    Disable {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Run a job now, once, besides its schedule
    ///
    /// Creates an instance of the job, which is dispatched to a worker like a
    /// scheduled run, and prints it. Follow it with `qronctl instance get N` or
    /// read its output with `qronctl instance logs N --follow`.
    ///
    /// If the request times out, it is sent again under the same
    /// Idempotency-Key: the job runs once.
    Run {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,

        /// Parameters passed to the processor for this run (besides the job's own)
        #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
        params: Option<String>,
    },

    /// Show a job's next fire times, to check a schedule before trusting it
    ///
    /// Times are printed in the schedule's time zone, daylight-saving nights
    /// included: pass --after to look at any date, e.g.
    /// `qronctl job next-fires 3 --after 2026-03-08T00:00:00-05:00 --count 10`.
    NextFires {
        /// The job's id
        #[arg(value_name = "ID")]
        id: u64,

        /// How many fire times to list
        #[arg(long, default_value_t = 5)]
        count: usize,

        /// List fires after this instant (RFC 3339); default now
        #[arg(long, value_name = "TIME")]
        after: Option<String>,
    },
}

/// `qronctl instance ...`.
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// List instances (runs of jobs), of every job or filtered
    ///
    /// The filters combine: `--app billing --status failed` lists the failed
    /// instances of the app's jobs. The server returns at most --limit
    /// instances (100 when not given).
    List {
        /// Only the instances of this job
        #[arg(long, value_name = "ID")]
        job: Option<u64>,

        /// Only the instances of this app's jobs
        #[arg(long, value_name = "NAME")]
        app: Option<String>,

        /// Only the instances in this status (case does not matter)
        ///
        /// One of WAITING_DISPATCH, WAITING_WORKER_RECEIVE, RUNNING, FAILED,
        /// SUCCEEDED, CANCELED, STOPPED.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,

        /// List at most this many instances (the server's default is 100)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },

    /// Show one instance: its status, attempts, worker, times, result and why
    ///
    /// `reason` says why the instance is where it is (retried, worker lost, no
    /// worker, stopped by an operator...).
    Get {
        /// The instance's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Stop an instance that is waiting or running; it ends STOPPED
    ///
    /// A running instance's worker is told to kill it. An instance that has
    /// already finished cannot be stopped (conflict). If the request times out,
    /// it is sent again under the same Idempotency-Key.
    Stop {
        /// The instance's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Cancel an instance not yet dispatched to a worker; it ends CANCELED
    ///
    /// Only an instance still waiting for dispatch can be canceled (conflict
    /// otherwise); use `stop` for one a worker has. If the request times out, it
    /// is sent again under the same Idempotency-Key.
    Cancel {
        /// The instance's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Run a failed, stopped or canceled instance again, as a new attempt
    ///
    /// The instance goes back to waiting for dispatch; its log goes on with the
    /// new attempt's output. If the request times out, it is sent again under
    /// the same Idempotency-Key: one new attempt, not two.
    Retry {
        /// The instance's id
        #[arg(value_name = "ID")]
        id: u64,
    },

    /// Print an instance's log (the output of every attempt, one after the other)
    ///
    /// The log is printed as is, without a table. With --follow, qronctl keeps
    /// reading every half second and prints new output as it comes, until the
    /// instance has finished and all its output is printed; it rides out a
    /// leader change. The server keeps a limited amount of output per instance:
    /// a note on stderr says when the log was truncated.
    ///
    /// With `-o json`, prints the server's answer (the text, the offsets, and
    /// whether the log is truncated or finished); with --follow, one answer per
    /// line (JSON Lines), for each read that brought new output.
    #[command(after_help = INSTANCE_LOGS_EXAMPLES)]
    Logs {
        /// The instance's id
        #[arg(value_name = "ID")]
        id: u64,

        /// Keep printing new output until the instance finishes
        #[arg(short = 'f', long)]
        follow: bool,

        /// Start at this byte of the log instead of its beginning
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: u64,
    },
}

/// `qronctl worker ...`.
#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// List the workers the leader knows, with their load and what they run
    ///
    /// LAST SEEN is the time since the worker's last heartbeat; CONNECTED says
    /// whether its stream to the leader is open. RUNNING counts the instances
    /// it says it is running.
    List {
        /// Only the workers of this app
        #[arg(long, value_name = "NAME")]
        app: Option<String>,
    },
}

/// `qronctl job create`: a file, or flags.
#[derive(Debug, Args)]
pub struct JobCreateArgs {
    /// The whole job as JSON (`-` reads stdin); no other job flag may be given then
    #[arg(short = 'f', long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub flags: JobFlags,
}

/// The settings of a job that can be given as flags; see `spec::from_flags`.
#[derive(Debug, Default, Args)]
pub struct JobFlags {
    /// The app the job belongs to (required without --file)
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,

    /// The job's name (required without --file)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A description for people
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub description: Option<String>,

    /// Fire on a cron expression with seconds (6 fields; 5 fields mean second 0)
    #[arg(long, value_name = "EXPR", help_heading = "Schedule")]
    pub cron: Option<String>,

    /// The cron expression's time zone, an IANA name such as Europe/Paris (default UTC)
    #[arg(long, value_name = "TZ", help_heading = "Schedule")]
    pub time_zone: Option<String>,

    /// Fire every N milliseconds
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub fixed_rate_ms: Option<u64>,

    /// Fire N milliseconds after the previous instance finished
    #[arg(long, value_name = "N", help_heading = "Schedule")]
    pub fixed_delay_ms: Option<u64>,

    /// Fire only when run through the API (the default when no schedule is given)
    #[arg(long, help_heading = "Schedule")]
    pub api: bool,

    /// Run this script with /bin/sh; exit code 0 means success
    #[arg(long, value_name = "SCRIPT", allow_hyphen_values = true, help_heading = "Processor")]
    pub shell: Option<String>,

    /// Call this URL; an answer with status 200 means success
    #[arg(long, value_name = "URL", help_heading = "Processor")]
    pub http_url: Option<String>,

    /// The HTTP method for --http-url (default GET)
    #[arg(long, value_name = "METHOD", help_heading = "Processor")]
    pub http_method: Option<String>,

    /// Run the processor a worker program registered under this name
    #[arg(long, value_name = "NAME", help_heading = "Processor")]
    pub custom: Option<String>,

    /// Parameters passed to the processor
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub params: Option<String>,

    /// Instances of the job allowed to run at once (default 0 = unlimited)
    #[arg(long, value_name = "N")]
    pub max_instances: Option<u32>,

    /// Stop and fail an instance that runs longer than this (default 0 = no limit)
    #[arg(long, value_name = "MS")]
    pub instance_timeout_ms: Option<u64>,

    /// Run a failed instance again up to N times (default 0)
    #[arg(long, value_name = "N")]
    pub instance_retries: Option<u32>,

    /// Create the job disabled: it does not fire until `qronctl job enable`
    #[arg(long)]
    pub disabled: bool,

    /// Keep this job's finished instances this long, in milliseconds (default: the app's, then the cluster's)
    #[arg(long, value_name = "MS", help_heading = "Retention")]
    pub retention_max_age_ms: Option<u64>,

    /// Keep this job's newest N instances (default: the app's, then the cluster's)
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub retention_max_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "qronctl",
            "job",
            "list",
            "--app",
            "demo",
            "-o",
            "json",
            "--stale",
            "--timeout-ms",
            "250",
        ])
        .expect("parses");
        assert_eq!(cli.output, Format::Json);
        assert!(cli.stale);
        assert_eq!(cli.timeout_ms, 250);
        assert!(cli.command.is_read());
        match cli.command {
            Command::Job(JobCommand::List { app, limit, after_id }) => {
                assert_eq!((app.as_deref(), limit, after_id), (Some("demo"), None, None))
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn zero_timeout_is_refused() {
        let err = Cli::try_parse_from(["qronctl", "--timeout-ms", "0", "app", "list"])
            .expect_err("a zero timeout cannot work");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn writes_are_not_reads() {
        let cli = Cli::try_parse_from(["qronctl", "job", "enable", "7"]).expect("parses");
        assert!(!cli.command.is_read());
        let cli = Cli::try_parse_from(["qronctl", "cluster", "remove-node", "3"]).expect("parses");
        assert!(!cli.command.is_read());
        for write in [
            &["qronctl", "job", "run", "7"][..],
            &["qronctl", "instance", "stop", "12"],
            &["qronctl", "instance", "cancel", "12"],
            &["qronctl", "instance", "retry", "12"],
        ] {
            let cli = Cli::try_parse_from(write).expect("parses");
            assert!(!cli.command.is_read(), "{write:?} is a write");
        }
    }

    #[test]
    fn an_idempotency_key_applies_to_keyed_writes_only() {
        let cli = Cli::try_parse_from(["qronctl", "job", "run", "7", "--idempotency-key", "k-1"]).expect("parses");
        assert_eq!(cli.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(cli.command.refuses_idempotency_key(), None);
        for refused in [
            &["qronctl", "job", "list"][..],
            &["qronctl", "cluster", "remove-node", "3"],
            &["qronctl", "cluster", "add-node", "--id", "4", "--grpc-addr", "h:1"],
        ] {
            let cli = Cli::try_parse_from(refused).expect("parses");
            assert!(cli.command.refuses_idempotency_key().is_some(), "{refused:?}");
        }
    }

    #[test]
    fn instance_and_worker_reads_are_reads() {
        for read in [
            &["qronctl", "instance", "list", "--job", "7"][..],
            &["qronctl", "instance", "get", "12"],
            &["qronctl", "instance", "logs", "12", "-f"],
            &["qronctl", "worker", "list"],
        ] {
            let cli = Cli::try_parse_from(read).expect("parses");
            assert!(cli.command.is_read(), "{read:?} is a read");
        }
    }

    #[test]
    fn instance_logs_flags() {
        let cli = Cli::try_parse_from(["qronctl", "instance", "logs", "12", "-f", "--offset", "4096"]).expect("parses");
        match cli.command {
            Command::Instance(InstanceCommand::Logs { id, follow, offset }) => {
                assert_eq!((id, follow, offset), (12, true, 4096));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["qronctl", "instance", "logs", "12"]).expect("parses");
        match cli.command {
            Command::Instance(InstanceCommand::Logs { follow, offset, .. }) => {
                assert!(!follow);
                assert_eq!(offset, 0);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn job_run_params_may_start_with_a_hyphen() {
        let cli = Cli::try_parse_from(["qronctl", "job", "run", "7", "--params", "--dry-run"]).expect("parses");
        match cli.command {
            Command::Job(JobCommand::Run { id, params }) => {
                assert_eq!(id, 7);
                assert_eq!(params.as_deref(), Some("--dry-run"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn zero_limit_is_refused() {
        let err = Cli::try_parse_from(["qronctl", "instance", "list", "--limit", "0"]).expect_err("limit 0");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
