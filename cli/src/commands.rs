//! Runs each subcommand: the API call it stands for and how its answer is shown.
//!
//! One function per resource, mirroring `server/src/api/`. Everything that can
//! be checked without the network (endpoints, flags, the job file) is checked
//! before the first request.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use qron_proto::api::{AddNodeRequest, AppList, AppView, ClusterView, CreateApp, JobList, JobSpec, JobView};
use serde::Serialize;

use crate::args::{AppCommand, Cli, ClusterCommand, Command, JobCommand, JobCreateArgs};
use crate::client::{self, Client, Replay};
use crate::output::{self, Format};
use crate::spec;

const CLUSTER: &str = "/api/v1/cluster";
const NODES: &str = "/api/v1/cluster/nodes";
const APPS: &str = "/api/v1/apps";
const JOBS: &str = "/api/v1/jobs";

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    if cli.stale && !cli.command.is_read() {
        bail!("--stale only applies to reads (cluster status, app list, job list, job get)");
    }
    let endpoints = client::parse_endpoints(&cli.endpoints).context("bad --endpoints (or QRON_ENDPOINTS)")?;
    let ctx = Ctx {
        client: Client::new(endpoints, Duration::from_millis(cli.timeout_ms))?,
        format: cli.output,
        stale: cli.stale,
    };
    match cli.command {
        Command::Cluster(cmd) => cluster(&ctx, cmd).await,
        Command::App(cmd) => app(&ctx, cmd).await,
        Command::Job(cmd) => job(&ctx, cmd).await,
    }
}

/// What every subcommand needs.
struct Ctx {
    client: Client,
    format: Format,
    stale: bool,
}

impl Ctx {
    /// `query`, plus `stale=true` when `--stale` asks for a local read.
    fn read_query<'a>(&self, mut query: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
        if self.stale {
            query.push(("stale", "true"));
        }
        query
    }

    /// Prints an answer as JSON or, with `-o table`, as `table` renders it.
    fn show<T: Serialize>(&self, answer: &T, table: impl FnOnce(&T) -> String) -> Result<()> {
        match self.format {
            Format::Json => output::emit(&output::json(answer)?),
            Format::Table => output::emit(&table(answer)),
        }
    }

    /// Reports a success that came without an answer body (nothing with `-o json`).
    fn done(&self, message: &str) -> Result<()> {
        match self.format {
            Format::Json => Ok(()),
            Format::Table => output::emit(message),
        }
    }
}

async fn cluster(ctx: &Ctx, cmd: ClusterCommand) -> Result<()> {
    let view: ClusterView = match cmd {
        // Always answered by the node asked, so `--stale` changes nothing.
        ClusterCommand::Status => ctx.client.get(CLUSTER, &[]).await?,
        ClusterCommand::AddNode {
            id,
            grpc_addr,
            learner_only,
        } => {
            let request = AddNodeRequest {
                id,
                grpc_addr,
                learner_only,
            };
            // Not repeated after a timeout: the first may still be catching the node up.
            ctx.client.post(NODES, &request, Replay::Unsafe).await?
        }
        ClusterCommand::RemoveNode { id } => match ctx.client.delete(&format!("{NODES}/{id}"), Replay::Unsafe).await? {
            Some(view) => view,
            None => return ctx.done(&format!("removed node {id}")),
        },
    };
    ctx.show(&view, output::cluster)
}

async fn app(ctx: &Ctx, cmd: AppCommand) -> Result<()> {
    match cmd {
        AppCommand::Create { name, secret } => {
            let request = CreateApp { name, secret };
            let view: AppView = ctx.client.post(APPS, &request, Replay::Unsafe).await?;
            ctx.show(&view, |a| output::apps(std::slice::from_ref(a)))
        }
        AppCommand::List => {
            let list: AppList = ctx.client.get(APPS, &ctx.read_query(Vec::new())).await?;
            ctx.show(&list, |l| output::apps(&l.apps))
        }
    }
}

async fn job(ctx: &Ctx, cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Create(args) => {
            let spec = create_spec(&args)?;
            let view: JobView = ctx.client.post(JOBS, &spec, Replay::Unsafe).await?;
            ctx.show(&view, output::job)
        }
        JobCommand::List { app } => {
            let mut query = Vec::new();
            if let Some(app) = app.as_deref() {
                query.push(("app", app));
            }
            let list: JobList = ctx.client.get(JOBS, &ctx.read_query(query)).await?;
            ctx.show(&list, |l| output::jobs(&l.jobs))
        }
        JobCommand::Get { id } => {
            let view: JobView = ctx.client.get(&job_path(id), &ctx.read_query(Vec::new())).await?;
            ctx.show(&view, output::job)
        }
        JobCommand::Update { id, file } => {
            let spec = spec::from_file(&file, Some(id))?;
            let view: JobView = ctx.client.put(&job_path(id), &spec).await?;
            ctx.show(&view, output::job)
        }
        JobCommand::Delete { id } => {
            let answer: Option<serde_json::Value> = ctx.client.delete(&job_path(id), Replay::Unsafe).await?;
            match answer {
                Some(body) if ctx.format == Format::Json => output::emit(&output::json(&body)?),
                _ => ctx.done(&format!("deleted job {id}")),
            }
        }
        JobCommand::Enable { id } => set_enabled(ctx, id, true).await,
        JobCommand::Disable { id } => set_enabled(ctx, id, false).await,
    }
}

/// The job `job create` sends: the file, or the flags, never both.
fn create_spec(args: &JobCreateArgs) -> Result<JobSpec> {
    match &args.file {
        Some(path) => {
            let given = spec::given_flags(&args.flags);
            if !given.is_empty() {
                bail!(
                    "--file gives the whole job; it cannot be combined with {}",
                    given.join(", ")
                );
            }
            spec::from_file(path, None)
        }
        None => spec::from_flags(&args.flags),
    }
}

async fn set_enabled(ctx: &Ctx, id: u64, enabled: bool) -> Result<()> {
    let action = if enabled { "enable" } else { "disable" };
    let view: JobView = ctx
        .client
        .post_empty(&format!("{}/{action}", job_path(id)), Replay::Safe)
        .await?;
    ctx.show(&view, |v| {
        let state = if v.spec.enabled { "enabled" } else { "disabled" };
        format!("job {} ({}/{}) is {state}", v.id, v.spec.app, v.spec.name)
    })
}

fn job_path(id: u64) -> String {
    format!("{JOBS}/{id}")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn file_and_flags_do_not_mix() {
        let cli = Cli::try_parse_from([
            "qronctl",
            "job",
            "create",
            "--file",
            "job.json",
            "--cron",
            "* * * * * *",
        ])
        .expect("parses");
        let args = match cli.command {
            Command::Job(JobCommand::Create(args)) => args,
            other => panic!("parsed as {other:?}"),
        };
        let err = create_spec(&args).expect_err("both a file and flags");
        assert!(err.to_string().contains("cannot be combined with --cron"), "{err}");
    }

    #[tokio::test]
    async fn stale_is_refused_on_writes_before_any_request() {
        // The endpoint is never contacted: the error comes first.
        let cli = Cli::try_parse_from(["qronctl", "--endpoints", "127.0.0.1:1", "--stale", "job", "delete", "3"])
            .expect("parses");
        let err = run(cli).await.expect_err("stale write");
        assert!(err.to_string().contains("--stale only applies to reads"), "{err}");
    }
}
