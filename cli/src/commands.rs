//! Runs each subcommand: the API call it stands for and how its answer is shown.
//!
//! One function per resource, mirroring `server/src/api/`. Everything that can
//! be checked without the network (endpoints, flags, the job file) is checked
//! before the first request.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use qron_proto::api::{
    AddNodeRequest, AppList, AppView, ClusterRetention, ClusterRetentionUpdate, ClusterView, CreateApp, InstanceList,
    InstanceLogView, InstanceView, JobList, JobSpec, JobView, NextFires, Retention, RunJobRequest, WorkerList,
};
use serde::Serialize;

use crate::args::{
    AppCommand, Cli, ClusterCommand, Command, InstanceCommand, JobCommand, JobCreateArgs, WorkerCommand,
};
use crate::client::{self, ApiError, Client, Unreachable, Write};
use crate::output::{self, Format};
use crate::spec;

const CLUSTER: &str = "/api/v1/cluster";
const NODES: &str = "/api/v1/cluster/nodes";
const RETENTION: &str = "/api/v1/cluster/retention";
const APPS: &str = "/api/v1/apps";
const JOBS: &str = "/api/v1/jobs";
const INSTANCES: &str = "/api/v1/instances";
const WORKERS: &str = "/api/v1/workers";

/// `instance logs --follow` reads the log again this long after a read.
const LOG_POLL: Duration = Duration::from_millis(500);
/// While following a log, a read that finds no node (or no leader) is tried
/// again this many times in a row before giving up.
const FOLLOW_RETRIES: u32 = 5;
/// The first pause before such a retry; doubled each time.
const FOLLOW_FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause before such a retry.
const FOLLOW_MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    if cli.stale && !cli.command.is_read() {
        bail!(
            "--stale only applies to reads (cluster status, app list, job list, job get, instance list, \
             instance get, instance logs, worker list)"
        );
    }
    if let Some(refusal) = cli
        .command
        .refuses_idempotency_key()
        .filter(|_| cli.idempotency_key.is_some())
    {
        bail!("--idempotency-key {refusal}");
    }
    let endpoints = client::parse_endpoints(&cli.endpoints).context("bad --endpoints (or QRON_ENDPOINTS)")?;
    let mut client = Client::new(endpoints, Duration::from_millis(cli.timeout_ms))?;
    if let Some(key) = cli.idempotency_key {
        client = client.with_key(key)?;
    }
    let ctx = Ctx {
        client,
        format: cli.output,
        stale: cli.stale,
    };
    match cli.command {
        Command::Cluster(cmd) => cluster(&ctx, cmd).await,
        Command::App(cmd) => app(&ctx, cmd).await,
        Command::Job(cmd) => job(&ctx, cmd).await,
        Command::Instance(cmd) => instance(&ctx, cmd).await,
        Command::Worker(cmd) => worker(&ctx, cmd).await,
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
        ClusterCommand::Retention {
            max_age_ms,
            max_count,
            max_log_bytes,
        } => {
            let view: ClusterRetention = if max_age_ms.is_none() && max_count.is_none() && max_log_bytes.is_none() {
                ctx.client.get(RETENTION, &ctx.read_query(Vec::new())).await?
            } else {
                let update = ClusterRetentionUpdate {
                    max_age_ms,
                    max_count,
                    max_log_bytes,
                };
                ctx.client.put(RETENTION, &update).await?
            };
            return ctx.show(&view, output::retention);
        }
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
            // Not keyed, so not repeated after a timeout: the first may still be catching the node up.
            ctx.client.post(NODES, &request, Write::Once).await?
        }
        ClusterCommand::RemoveNode { id } => match ctx.client.delete(&format!("{NODES}/{id}"), Write::Once).await? {
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
            let view: AppView = ctx.client.post(APPS, &request, Write::Keyed).await?;
            ctx.show(&view, |a| output::apps(std::slice::from_ref(a)))
        }
        AppCommand::List => {
            let list: AppList = ctx.client.get(APPS, &ctx.read_query(Vec::new())).await?;
            ctx.show(&list, |l| output::apps(&l.apps))
        }
        AppCommand::Retention {
            name,
            max_age_ms,
            max_count,
        } => {
            let r = Retention { max_age_ms, max_count };
            let view: AppView = ctx.client.put(&format!("{APPS}/{name}/retention"), &r).await?;
            ctx.show(&view, |a| output::apps(std::slice::from_ref(a)))
        }
    }
}

async fn job(ctx: &Ctx, cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Create(args) => {
            let spec = create_spec(&args)?;
            let view: JobView = ctx.client.post(JOBS, &spec, Write::Keyed).await?;
            ctx.show(&view, output::job)
        }
        JobCommand::List { app, limit, after_id } => {
            let list = list_jobs(ctx, app.as_deref(), limit, after_id).await?;
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
            let answer: Option<serde_json::Value> = ctx.client.delete(&job_path(id), Write::Keyed).await?;
            match answer {
                Some(body) if ctx.format == Format::Json => output::emit(&output::json(&body)?),
                _ => ctx.done(&format!("deleted job {id}")),
            }
        }
        JobCommand::Enable { id } => set_enabled(ctx, id, true).await,
        JobCommand::Disable { id } => set_enabled(ctx, id, false).await,
        JobCommand::NextFires { id, count, after } => {
            let count = count.to_string();
            let mut query = vec![("count", count.as_str())];
            if let Some(a) = after.as_deref() {
                query.push(("after", a));
            }
            let view: NextFires = ctx
                .client
                .get(&format!("{}/next-fires", job_path(id)), &ctx.read_query(query))
                .await?;
            ctx.show(&view, output::next_fires)
        }
        JobCommand::Run { id, params } => {
            let request = RunJobRequest {
                params: params.unwrap_or_default(),
            };
            // Keyed: sent again after a timeout, it still runs the job once.
            let view: InstanceView = ctx
                .client
                .post(&format!("{}/run", job_path(id)), &request, Write::Keyed)
                .await?;
            ctx.show(&view, output::instance_with_headline)
        }
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
    let view: JobView = ctx.client.post_empty(&format!("{}/{action}", job_path(id))).await?;
    ctx.show(&view, |v| {
        let state = if v.spec.enabled { "enabled" } else { "disabled" };
        format!("job {} ({}/{}) is {state}", v.id, v.spec.app, v.spec.name)
    })
}

fn job_path(id: u64) -> String {
    format!("{JOBS}/{id}")
}

async fn instance(ctx: &Ctx, cmd: InstanceCommand) -> Result<()> {
    match cmd {
        InstanceCommand::List {
            job,
            app,
            status,
            limit,
        } => {
            let owned = instance_list_query(job, app, status, limit);
            let query = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let list: InstanceList = ctx.client.get(INSTANCES, &ctx.read_query(query)).await?;
            ctx.show(&list, output::instance_list)
        }
        InstanceCommand::Get { id } => {
            let view: InstanceView = ctx.client.get(&instance_path(id), &ctx.read_query(Vec::new())).await?;
            ctx.show(&view, output::instance)
        }
        InstanceCommand::Stop { id } => instance_action(ctx, id, "stop").await,
        InstanceCommand::Cancel { id } => instance_action(ctx, id, "cancel").await,
        InstanceCommand::Retry { id } => instance_action(ctx, id, "retry").await,
        InstanceCommand::Logs { id, follow, offset } => logs(ctx, id, follow, offset).await,
    }
}

/// Jobs a page at a time (the server's pages hold at most 10,000): up to
/// `limit` of them, or all of them.
async fn list_jobs(ctx: &Ctx, app: Option<&str>, limit: Option<u32>, after_id: Option<u64>) -> Result<JobList> {
    const PAGE: usize = 10_000;
    let mut out = JobList { jobs: Vec::new() };
    let mut after = after_id;
    loop {
        let want = limit.map_or(PAGE, |l| (l as usize - out.jobs.len()).min(PAGE));
        let want_text = want.to_string();
        let after_text = after.map(|a| a.to_string());
        let mut query = vec![("limit", want_text.as_str())];
        if let Some(app) = app {
            query.push(("app", app));
        }
        if let Some(a) = after_text.as_deref() {
            query.push(("after_id", a));
        }
        let page: JobList = ctx.client.get(JOBS, &ctx.read_query(query)).await?;
        let full = page.jobs.len() >= want;
        after = page.jobs.last().map(|j| j.id);
        out.jobs.extend(page.jobs);
        if !full || limit.is_some_and(|l| out.jobs.len() >= l as usize) {
            return Ok(out);
        }
    }
}

/// The query of `instance list`; the status is sent upper-case, as the API names it.
fn instance_list_query(
    job: Option<u64>,
    app: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(job) = job {
        query.push(("job", job.to_string()));
    }
    if let Some(app) = app {
        query.push(("app", app));
    }
    if let Some(status) = status {
        query.push(("status", status.trim().to_ascii_uppercase()));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

/// `instance stop|cancel|retry ID`: keyed, so a repeat after a timeout neither
/// makes a second attempt nor answers `conflict` for a stop that worked.
async fn instance_action(ctx: &Ctx, id: u64, action: &str) -> Result<()> {
    let view: InstanceView = ctx
        .client
        .post_empty(&format!("{}/{action}", instance_path(id)))
        .await?;
    ctx.show(&view, output::instance_with_headline)
}

fn instance_path(id: u64) -> String {
    format!("{INSTANCES}/{id}")
}

/// What `instance logs` does after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextRead {
    /// Read again at once: the log is complete but may not all have come yet.
    Now,
    /// Read again after [`LOG_POLL`]: the instance may still write.
    AfterPause,
    /// Everything there is to print has been printed.
    Stop,
}

/// Whether to stop reading the log after `answer`, the answer to a read from
/// byte `asked`. Following, reading stops once the instance has finished and a
/// read brought nothing new; without --follow, after the first read of an
/// instance still running, or once a finished instance's log is all read (in
/// case the server answers a long log in pieces).
fn next_read(follow: bool, asked: u64, answer: &InstanceLogView) -> NextRead {
    let new_data = !answer.data.is_empty() || answer.next_offset > asked;
    match (answer.finished, new_data) {
        (true, true) => NextRead::Now,
        (true, false) => NextRead::Stop,
        (false, _) if follow => NextRead::AfterPause,
        (false, _) => NextRead::Stop,
    }
}

/// Where the next read of the log starts. Never before `asked`: a node that
/// lags behind (`--stale`) may answer with an older end of the log, and going
/// back would print some output twice.
fn next_offset(asked: u64, answer: &InstanceLogView) -> u64 {
    answer.next_offset.max(asked)
}

/// Whether a failed read may work if tried again a little later: no node could
/// be reached, or none knew a leader (a failover under way). Any other error
/// answer (the instance does not exist, ...) is final.
fn is_transient(err: &anyhow::Error) -> bool {
    if err.downcast_ref::<Unreachable>().is_some() {
        return true;
    }
    err.downcast_ref::<ApiError>().is_some_and(|e| e.status == 503)
}

async fn read_log(ctx: &Ctx, path: &str, offset: u64) -> Result<InstanceLogView> {
    let offset = offset.to_string();
    ctx.client
        .get(path, &ctx.read_query(vec![("offset", offset.as_str())]))
        .await
}

/// `instance logs ID [--follow] [--offset N]`.
async fn logs(ctx: &Ctx, id: u64, follow: bool, mut offset: u64) -> Result<()> {
    let path = format!("{}/logs", instance_path(id));
    if ctx.format == Format::Json && !follow {
        // One answer, as is: its `next_offset` says where to read on.
        let answer = read_log(ctx, &path, offset).await?;
        if answer.truncated {
            note_truncated(id);
        }
        if answer.log_expired {
            note_log_expired(id);
        }
        return output::emit(&output::json(&answer)?);
    }
    let mut read_once = false;
    let mut failures = 0;
    let mut backoff = FOLLOW_FIRST_BACKOFF;
    let mut noted_truncated = false;
    let mut noted_expired = false;
    loop {
        let answer = match read_log(ctx, &path, offset).await {
            Ok(answer) => answer,
            // Following, a failover must not end the output: the client already
            // tried every node; give the cluster a little more time.
            Err(e) if follow && read_once && failures < FOLLOW_RETRIES && is_transient(&e) => {
                failures += 1;
                output::note(&format!(
                    "cannot read the log of instance {id} ({e:#}); trying again in {}ms",
                    backoff.as_millis()
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FOLLOW_MAX_BACKOFF);
                continue;
            }
            Err(e) => return Err(e),
        };
        read_once = true;
        failures = 0;
        backoff = FOLLOW_FIRST_BACKOFF;
        if answer.truncated && !noted_truncated {
            note_truncated(id);
            noted_truncated = true;
        }
        if answer.log_expired && !noted_expired {
            note_log_expired(id);
            noted_expired = true;
        }
        let next = next_read(follow, offset, &answer);
        let open = match ctx.format {
            Format::Table => output::emit_raw(&answer.data)?,
            // JSON Lines: one answer per line, for each read with something new, and the last.
            Format::Json if !answer.data.is_empty() || next == NextRead::Stop => {
                let line = serde_json::to_string(&answer).context("cannot print the answer as JSON")?;
                output::emit_raw(&format!("{line}\n"))?
            }
            Format::Json => true,
        };
        if !open {
            // Nobody reads the output any more (`| head`).
            return Ok(());
        }
        offset = next_offset(offset, &answer);
        match next {
            NextRead::Now => {}
            NextRead::AfterPause => tokio::time::sleep(LOG_POLL).await,
            NextRead::Stop => return Ok(()),
        }
    }
}

fn note_log_expired(id: u64) {
    output::note(&format!(
        "the log of instance {id} was removed under the cluster's retention (qronctl cluster retention)"
    ));
}

fn note_truncated(id: u64) {
    output::note(&format!(
        "the log of instance {id} reached the server's size limit; later output was dropped"
    ));
}

async fn worker(ctx: &Ctx, cmd: WorkerCommand) -> Result<()> {
    match cmd {
        WorkerCommand::List { app } => {
            let mut query = Vec::new();
            if let Some(app) = app.as_deref() {
                query.push(("app", app));
            }
            let list: WorkerList = ctx.client.get(WORKERS, &ctx.read_query(query)).await?;
            ctx.show(&list, |l| output::workers(&l.workers))
        }
    }
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

    fn log_answer(offset: u64, data: &str, finished: bool) -> InstanceLogView {
        InstanceLogView {
            instance_id: 12,
            offset,
            next_offset: offset + data.len() as u64,
            data: data.to_owned(),
            truncated: false,
            finished,
            log_expired: false,
        }
    }

    #[test]
    fn following_waits_while_the_instance_runs() {
        // New output or not, a running instance is read again after the pause.
        assert_eq!(
            next_read(true, 0, &log_answer(0, "hello\n", false)),
            NextRead::AfterPause
        );
        assert_eq!(next_read(true, 6, &log_answer(6, "", false)), NextRead::AfterPause);
    }

    #[test]
    fn following_stops_only_once_finished_and_nothing_new_came() {
        // Finished, but this read brought output: there may be more, read at once.
        assert_eq!(next_read(true, 6, &log_answer(6, "bye\n", true)), NextRead::Now);
        // Finished and nothing new: done.
        assert_eq!(next_read(true, 10, &log_answer(10, "", true)), NextRead::Stop);
        // The offset moved without text (e.g. past a cut): that is progress, read once more.
        let skipped = InstanceLogView {
            next_offset: 14,
            ..log_answer(10, "", true)
        };
        assert_eq!(next_read(true, 10, &skipped), NextRead::Now);
    }

    #[test]
    fn without_follow_a_running_instance_is_read_once_and_a_finished_one_to_the_end() {
        assert_eq!(next_read(false, 0, &log_answer(0, "partial", false)), NextRead::Stop);
        assert_eq!(next_read(false, 0, &log_answer(0, "", false)), NextRead::Stop);
        assert_eq!(next_read(false, 0, &log_answer(0, "all of it", true)), NextRead::Now);
        assert_eq!(next_read(false, 9, &log_answer(9, "", true)), NextRead::Stop);
    }

    #[test]
    fn an_offset_past_the_end_of_a_finished_log_stops() {
        // --offset beyond the end: a server that clamps answers an earlier end.
        let clamped = InstanceLogView {
            offset: 50,
            next_offset: 50,
            ..log_answer(0, "", true)
        };
        assert_eq!(next_read(true, 1000, &clamped), NextRead::Stop);
        assert_eq!(next_offset(1000, &clamped), 1000);
    }

    #[test]
    fn the_offset_never_goes_back() {
        assert_eq!(next_offset(0, &log_answer(0, "hello\n", false)), 6);
        // A lagging node answering from an older end of the log.
        let behind = InstanceLogView {
            next_offset: 3,
            ..log_answer(3, "", false)
        };
        assert_eq!(next_offset(6, &behind), 6);
    }

    #[test]
    fn only_unreachable_nodes_and_no_leader_are_worth_retrying() {
        let unreachable: anyhow::Error = Unreachable {
            nodes: vec!["http://127.0.0.1:1: Connection refused".to_owned()],
        }
        .into();
        assert!(is_transient(&unreachable));
        let api = |status: u16, code: &str| -> anyhow::Error {
            ApiError {
                status,
                code: code.to_owned(),
                message: "x".to_owned(),
            }
            .into()
        };
        assert!(is_transient(&api(503, "no_leader")));
        assert!(is_transient(&api(503, "unavailable").context("reading the log")));
        assert!(!is_transient(&api(404, "not_found")));
        assert!(!is_transient(&api(500, "internal")));
        assert!(!is_transient(&anyhow::anyhow!(
            "the answer is not what this qronctl expects"
        )));
    }

    #[test]
    fn instance_list_query_upper_cases_the_status() {
        let query = instance_list_query(
            Some(7),
            Some("billing".to_owned()),
            Some(" running".to_owned()),
            Some(20),
        );
        assert_eq!(
            query,
            vec![
                ("job", "7".to_owned()),
                ("app", "billing".to_owned()),
                ("status", "RUNNING".to_owned()),
                ("limit", "20".to_owned()),
            ]
        );
        assert!(instance_list_query(None, None, None, None).is_empty());
    }

    #[tokio::test]
    async fn stale_is_refused_on_instance_writes() {
        for action in ["stop", "cancel", "retry"] {
            let cli = Cli::try_parse_from([
                "qronctl",
                "--endpoints",
                "127.0.0.1:1",
                "--stale",
                "instance",
                action,
                "3",
            ])
            .expect("parses");
            let err = run(cli).await.expect_err("stale write");
            assert!(err.to_string().contains("--stale only applies to reads"), "{err}");
        }
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
