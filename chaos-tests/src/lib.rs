//! A harness that runs real qron clusters as processes: start N `qron-server`
//! processes on OS-chosen ports in a temp directory, kill (SIGKILL), stop
//! (SIGTERM), pause (SIGSTOP/SIGCONT) and restart them, find the leader, and
//! talk to the HTTP API. Every process-level test and benchmark uses this one
//! [`TestCluster`] (STYLE 12).
//!
//! On drop every process is killed; when the test is failing (the thread is
//! panicking) the tail of every node's log is printed and the directory is kept.
#![forbid(unsafe_code)]

pub mod chaos;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use qron_proto::api::{ClusterView, DigestView};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Polls `f` every 20 ms until it yields `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Milliseconds since the Unix epoch on this machine's clock (the clock the
/// servers and workers of a test cluster share).
pub fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A port the OS handed out (free at the time of the call).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the workspace's binaries are: `$QRON_BIN_DIR`, else the cargo target
/// directory this test binary runs from (`target/<profile>/deps/..`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("QRON_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test binary has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Path of a workspace binary, with a message saying how to build it if it is missing.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --workspace --bins`), or set QRON_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// Settings of a test cluster's servers.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--snapshot-logs`.
    pub snapshot_logs: u64,
    /// `--logs-kept`.
    pub logs_kept: u64,
    /// `--purge-batch`.
    pub purge_batch: u64,
    /// `QRON_LOG` of every server.
    pub log: String,
    /// More flags for every server (e.g. `--worker-timeout-ms 1500`).
    pub server_args: Vec<String>,
    /// More environment variables for every server.
    pub server_env: Vec<(String, String)>,
    /// More environment variables for every worker (e.g. the one that allows a
    /// worker's hidden test modes).
    pub worker_env: Vec<(String, String)>,
    /// A disk that fills up: every server runs under `ulimit -f` of this many KiB
    /// with SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk's
    /// would with ENOSPC.
    pub file_size_limit_kib: Option<u64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            snapshot_logs: 10_000,
            logs_kept: 1_000,
            purge_batch: 256,
            log: "info".into(),
            server_args: Vec::new(),
            server_env: Vec::new(),
            worker_env: Vec::new(),
            file_size_limit_kib: None,
        }
    }
}

/// One server process and where it lives.
pub struct Server {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Whether it was started with `--initial-cluster` (a founding member).
    founding: bool,
    child: Option<Child>,
}

impl Server {
    /// `http://HOST:PORT` of its API.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A `qron-worker` process, in its own process group so that killing it kills
/// what it runs too (like losing the machine).
pub struct WorkerProc {
    pub name: String,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// How it was started, to start it again.
    spawn: (String, String, Vec<String>),
}

impl WorkerProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is still alive (not exited).
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("worker {} is not running", self.name))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("worker {} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A cluster of `qron-server` processes.
pub struct TestCluster {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    opts: ClusterOptions,
    initial_cluster: String,
    pub servers: BTreeMap<u64, Server>,
    pub workers: BTreeMap<String, WorkerProc>,
    http: reqwest::Client,
}

impl TestCluster {
    /// Starts `n` founding servers (ids 1..=n).
    pub fn start(n: u64, opts: ClusterOptions) -> anyhow::Result<Self> {
        let bin = binary("qron-server")?;
        let dir = tempfile::Builder::new().prefix("qron-cluster-").tempdir()?;
        let mut servers = BTreeMap::new();
        for id in 1..=n {
            servers.insert(id, Self::describe(dir.path(), id, true)?);
        }
        let initial_cluster = servers
            .values()
            .map(|s| format!("{}={}", s.id, s.grpc))
            .collect::<Vec<_>>()
            .join(",");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        let mut cluster = TestCluster {
            dir: Some(dir),
            bin,
            opts,
            initial_cluster,
            servers,
            workers: BTreeMap::new(),
            http,
        };
        for id in 1..=n {
            cluster.launch(id)?;
        }
        Ok(cluster)
    }

    fn describe(dir: &Path, id: u64, founding: bool) -> anyhow::Result<Server> {
        Ok(Server {
            id,
            http: format!("127.0.0.1:{}", free_port()?),
            grpc: format!("127.0.0.1:{}", free_port()?),
            data_dir: dir.join(format!("node{id}")),
            log_path: dir.join(format!("node{id}.log")),
            founding,
            child: None,
        })
    }

    /// The temp directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("."))
    }

    fn launch(&mut self, id: u64) -> anyhow::Result<()> {
        let s = self.servers.get_mut(&id).ok_or_else(|| anyhow!("no server {id}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log_path)?;
        let mut cmd = match self.opts.file_size_limit_kib {
            None => Command::new(&self.bin),
            Some(kib) => {
                // bash's `ulimit -f` counts KiB; the ignored signal and the limit are
                // inherited through exec, so the server keeps this pid.
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("trap '' XFSZ; ulimit -f {kib} && exec \"$0\" \"$@\""))
                    .arg(&self.bin);
                c
            }
        };
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--http")
            .arg(&s.http)
            .arg("--grpc")
            .arg(&s.grpc)
            .arg("--data-dir")
            .arg(&s.data_dir)
            .arg("--snapshot-logs")
            .arg(self.opts.snapshot_logs.to_string())
            .arg("--logs-kept")
            .arg(self.opts.logs_kept.to_string())
            .arg("--purge-batch")
            .arg(self.opts.purge_batch.to_string())
            .env("QRON_LOG", &self.opts.log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if s.founding {
            cmd.arg("--initial-cluster").arg(&self.initial_cluster);
        }
        cmd.args(&self.opts.server_args);
        cmd.envs(self.opts.server_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        s.child = Some(
            cmd.spawn()
                .with_context(|| format!("cannot start {}", self.bin.display()))?,
        );
        Ok(())
    }

    /// Starts a new, non-founding server `id` that waits to be added.
    pub fn spawn_joiner(&mut self, id: u64) -> anyhow::Result<()> {
        if self.servers.contains_key(&id) {
            bail!("server {id} exists already");
        }
        let s = Self::describe(self.dir(), id, false)?;
        self.servers.insert(id, s);
        self.launch(id)
    }

    pub fn server(&self, id: u64) -> anyhow::Result<&Server> {
        self.servers.get(&id).ok_or_else(|| anyhow!("no server {id}"))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let s = self.servers.get_mut(&id).ok_or_else(|| anyhow!("no server {id}"))?;
        if let Some(mut child) = s.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, and wait for the process to exit.
    pub fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        let s = self.servers.get_mut(&id).ok_or_else(|| anyhow!("no server {id}"))?;
        if let Some(mut child) = s.child.take() {
            signal(child.id(), "TERM")?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP (`pause = true`) or SIGCONT.
    pub fn pause(&mut self, id: u64, pause: bool) -> anyhow::Result<()> {
        let pid = self
            .server(id)?
            .pid()
            .ok_or_else(|| anyhow!("server {id} is not running"))?;
        signal(pid, if pause { "STOP" } else { "CONT" })
    }

    /// Waits for server `id` to exit by itself (not killed by the harness); its exit status.
    pub async fn wait_server_exit(&mut self, id: u64, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.servers.get_mut(&id).ok_or_else(|| anyhow!("no server {id}"))?;
            let child = s.child.as_mut().ok_or_else(|| anyhow!("server {id} is not running"))?;
            if let Some(st) = child.try_wait()? {
                s.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("server {id} did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a stopped or killed server again from its data directory.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.server(id)?.is_running() {
            bail!("server {id} is still running");
        }
        self.launch(id)
    }

    /// Every server's gRPC address, comma separated (a worker's `--seeds`).
    pub fn seeds(&self) -> String {
        self.servers
            .values()
            .map(|s| s.grpc.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a `qron-worker` named `name` for `app`, seeded with every server.
    pub fn spawn_worker(&mut self, name: &str, app: &str, secret: &str, extra: &[&str]) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let bin = binary("qron-worker")?;
        let log_path = self.dir().join(format!("worker-{name}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let child = Command::new(bin)
            .arg("--seeds")
            .arg(self.seeds())
            .arg("--app")
            .arg(app)
            .arg("--secret")
            .arg(secret)
            .arg("--worker-id")
            .arg(name)
            .args(extra)
            .env("QRON_LOG", &self.opts.log)
            .env("NO_COLOR", "1")
            // Each cluster's workers keep their state dirs (locked, one live worker
            // each) under the cluster's own directory, so parallel tests never share one.
            .env("QRON_WORKER_STATE_BASE", self.dir().join("worker-state"))
            .envs(self.opts.worker_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.workers.insert(
            name.to_owned(),
            WorkerProc {
                name: name.to_owned(),
                log_path,
                child: Some(child),
                spawn: (
                    app.to_owned(),
                    secret.to_owned(),
                    extra.iter().map(|s| s.to_string()).collect(),
                ),
            },
        );
        Ok(())
    }

    /// Starts a killed worker again with the arguments it was first started with.
    pub fn respawn_worker(&mut self, name: &str) -> anyhow::Result<()> {
        let (app, secret, extra) = self.worker(name)?.spawn.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.spawn_worker(name, &app, &secret, &extra)
    }

    pub fn worker(&mut self, name: &str) -> anyhow::Result<&mut WorkerProc> {
        self.workers.get_mut(name).ok_or_else(|| anyhow!("no worker {name}"))
    }

    /// SIGKILL a worker's whole process group (it and what it runs), and reap it.
    pub fn kill_worker(&mut self, name: &str) -> anyhow::Result<()> {
        let w = self.worker(name)?;
        if let Some(mut child) = w.child.take() {
            // The worker runs scripts in process groups of their own: find them first so
            // that they die with it, as they would with the machine.
            let tree = descendants(child.id());
            signal_group(child.id(), "KILL")?;
            for pid in tree {
                let _ = signal(pid, "KILL");
            }
            child.wait()?;
        }
        Ok(())
    }

    /// SIGKILL a worker's own process only, and reap it: what it runs is left to
    /// its guards (a script whose worker does not guard it lives on).
    pub fn kill_worker_only(&mut self, name: &str) -> anyhow::Result<()> {
        let w = self.worker(name)?;
        if let Some(mut child) = w.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Ids of the servers whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.servers.values().filter(|s| s.is_running()).map(|s| s.id).collect()
    }

    /// GET a JSON document from server `id`.
    pub async fn get<T: DeserializeOwned>(&self, id: u64, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.server(id)?.url());
        let r = self.http.get(&url).send().await?;
        decode(r, &url).await
    }

    /// Sends a JSON body with `method` to server `id`; returns status and body.
    pub async fn send<B: Serialize>(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.send_with_headers(id, method, path, body, &[]).await
    }

    /// [`TestCluster::send`] with extra request headers (e.g. `Idempotency-Key`).
    pub async fn send_with_headers<B: Serialize>(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}{path}", self.server(id)?.url());
        let mut req = self.http.request(method, &url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{url} answered non-JSON: {text}"))?
        };
        Ok((status, value))
    }

    /// POST that must succeed (2xx); returns the body.
    pub async fn post_ok<B: Serialize>(&self, id: u64, path: &str, body: &B) -> anyhow::Result<serde_json::Value> {
        let (status, v) = self.send(id, reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&status) {
            bail!("POST {path} on node {id} answered {status}: {v}");
        }
        Ok(v)
    }

    /// `GET /api/v1/cluster` of server `id`, if it answers.
    pub async fn cluster_view(&self, id: u64) -> Option<ClusterView> {
        self.get(id, "/api/v1/cluster").await.ok()
    }

    /// `GET /api/v1/debug/digest` of server `id`, if it answers.
    pub async fn digest(&self, id: u64) -> Option<DigestView> {
        self.get(id, "/api/v1/debug/digest").await.ok()
    }

    /// The leader that every running server agrees on (and that says it leads).
    pub async fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for id in self.running() {
            let v = self.cluster_view(id).await?;
            let l = v.leader_id?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        let l = leader?;
        let own = self.cluster_view(l).await?;
        (own.state == "leader").then_some(l)
    }

    /// Waits until the running servers agree on a leader.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        eventually(timeout, "an agreed leader", || self.agreed_leader()).await
    }

    /// Waits until every running server has applied the same state (equal digests
    /// at the highest applied index seen).
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<DigestView> {
        eventually(timeout, "all running nodes to converge", || async {
            let mut first: Option<DigestView> = None;
            for id in self.running() {
                let d = self.digest(id).await?;
                match &first {
                    None => first = Some(d),
                    Some(f) if f.digest == d.digest && f.applied_index == d.applied_index => {}
                    Some(_) => return None,
                }
            }
            first
        })
        .await
    }

    /// The tail of every server's and worker's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let logs = self
            .servers
            .values()
            .map(|s| (format!("node {}", s.id), &s.log_path))
            .chain(
                self.workers
                    .values()
                    .map(|w| (format!("worker {}", w.name), &w.log_path)),
            );
        for (title, path) in logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("----- {title} ({}) -----\n", path.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for w in self.workers.values_mut() {
            if let Some(mut c) = w.child.take() {
                let _ = signal_group(c.id(), "KILL");
                let _ = c.wait();
            }
        }
        for s in self.servers.values_mut() {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // A panicking test keeps its cluster's directory (logs, data) for the
        // post-mortem; `QRON_KEEP_CLUSTER=1` keeps it always (a benchmark's run).
        let keep = std::env::var_os("QRON_KEEP_CLUSTER").is_some_and(|v| v == "1");
        if std::thread::panicking() || keep {
            eprintln!("{}", self.log_tails(60));
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("cluster directory kept at {}", kept.display());
            }
        }
    }
}

/// Every process below `root`, read from /proc (parents before children).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The command name is in parentheses and may hold spaces: parse after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid) in &parent_of {
            if *ppid == p && !out.contains(pid) {
                out.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    out
}

/// SIGSTOP `root` and every process below it, as a paused VM or container
/// freezes them: `root` first (so it starts nothing new), then its descendants
/// until a pass finds no new one (a script may fork between two passes). Returns
/// the frozen pids, `root` first.
pub fn freeze_tree(root: u32) -> Vec<u32> {
    signal_all(&[root], "STOP");
    let mut frozen = vec![root];
    for _ in 0..20 {
        let new: Vec<u32> = descendants(root).into_iter().filter(|p| !frozen.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        signal_all(&new, "STOP");
        frozen.extend(new);
    }
    frozen
}

/// SIGCONT each of `pids` (those gone meanwhile are skipped).
pub fn thaw(pids: &[u32]) {
    signal_all(pids, "CONT");
}

/// Whether process `pid` exists and is not a zombie (a process killed while
/// stopped stays a zombie until its parent reaps it: it runs no more).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// One `kill -SIG` for all of `pids`; those that are gone are ignored.
pub fn signal_all(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

fn signal_group(pgid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kill -{sig} -- -{pgid} failed");
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

async fn decode<T: DeserializeOwned>(r: reqwest::Response, url: &str) -> anyhow::Result<T> {
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{url} answered unexpected JSON: {text}"))
}
