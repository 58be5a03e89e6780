//! `qron-bench writes`: durable replicated writes per second over HTTP, qron
//! beside etcd, both loaded by the same tool (wrk, `--latency`) with the same
//! connections, threads and duration, in one run.
//!
//! - qron: three servers (no workers), app `bench`; every request is
//!   `POST /api/v1/jobs` of a job with a unique name (an API-triggered shell job,
//!   so nothing fires), sent to the leader; answered only once committed and applied.
//! - etcd: three members on loopback (Debian's `etcd-server`, 3.4), each with
//!   its own data dir; every request is `POST /v3/kv/put` of a unique key to
//!   the leader's JSON gateway; etcd answers once the entry is committed.
//!
//! Both send to the leader, so neither pays a forward. A request that does not
//! answer 2xx is counted and printed (`non2xx=`), never counted as a write.

use std::path::Path;
use std::process::{Child, Command as Proc, Stdio};
use std::time::Duration;

use anyhow::Context;
use qron_chaos_tests::{eventually, free_port, ClusterOptions, TestCluster};
use serde_json::json;

/// wrk's figures for one target.
pub(crate) struct Run {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: u64,
    pub(crate) non2xx: u64,
}

pub async fn run(connections: u32, seconds: u32, threads: u32, server_args: Vec<String>) -> anyhow::Result<()> {
    which("wrk")?;
    which("etcd")?;
    let dir = tempfile::TempDir::new()?;
    let qron = {
        let (c, leader) = bench_cluster(server_args).await?;
        let script = dir.path().join("qron.lua");
        std::fs::write(&script, format!("{LUA_THREADS}{QRON_LUA}"))?;
        let url = format!("{}/api/v1/jobs", c.server(leader)?.url());
        let r = wrk(&script, &url, connections, seconds, threads)?;
        print("qron", &r, connections, seconds);
        r
    };
    let etcd = {
        let cluster = Etcd::start(dir.path()).await?;
        let leader = cluster.leader().await?;
        let script = dir.path().join("etcd.lua");
        std::fs::write(&script, format!("{LUA_THREADS}{ETCD_LUA}"))?;
        let r = wrk(&script, &format!("{leader}/v3/kv/put"), connections, seconds, threads)?;
        print("etcd", &r, connections, seconds);
        r
    };
    println!(
        "writes ratio: qron/etcd={:.2} (writes per second; p50 {:.1} ms vs {:.1} ms)",
        qron.writes() as f64 / (etcd.writes() as f64).max(1.0),
        qron.p50_ms,
        etcd.p50_ms
    );
    Ok(())
}

/// Three servers logging warnings, with `server_args`, and app `bench`
/// (secret `s`); the leader's id.
pub(crate) async fn bench_cluster(server_args: Vec<String>) -> anyhow::Result<(TestCluster, u64)> {
    let c = TestCluster::start(
        3,
        ClusterOptions {
            log: "warn".into(),
            server_args,
            ..Default::default()
        },
    )?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    c.post_ok(leader, "/api/v1/apps", &json!({"name": "bench", "secret": "s"}))
        .await?;
    Ok((c, leader))
}

impl Run {
    /// Requests answered 2xx: the writes made.
    pub(crate) fn writes(&self) -> u64 {
        self.requests.saturating_sub(self.non2xx)
    }
}

fn print(what: &str, r: &Run, connections: u32, seconds: u32) {
    println!(
        "writes {what}: connections={connections} seconds={seconds} writes={} writes_per_s={:.0} p50_ms={:.1} p99_ms={:.1} non2xx={}",
        r.writes(),
        r.writes() as f64 / seconds as f64,
        r.p50_ms,
        r.p99_ms,
        r.non2xx
    );
}

pub(crate) fn which(tool: &str) -> anyhow::Result<()> {
    let ok = Proc::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(ok, "{tool} is not installed (apt-get install wrk etcd-server)");
    Ok(())
}

/// Runs wrk and reads its summary.
pub(crate) fn wrk(script: &Path, url: &str, connections: u32, seconds: u32, threads: u32) -> anyhow::Result<Run> {
    let out = Proc::new("wrk")
        .args(["--latency", "-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Run> {
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Run {
        p50_ms: ms(field("50%")?)?,
        p99_ms: ms(field("99%")?)?,
        requests,
        non2xx: field("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?,
    })
}

/// wrk's latency text (`812.00us`, `73.41ms`, `1.02s`) in milliseconds.
fn ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

/// What both scripts start with: each wrk thread numbers itself (`tid`, set
/// in the thread's own Lua state) and counts its requests.
const LUA_THREADS: &str = r#"
local counter = 0
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
end
"#;

/// Unique job names: the thread's id and a counter.
const QRON_LUA: &str = r#"
function request()
  counter = counter + 1
  local body = string.format(
    '{"app":"bench","name":"w-%d-%d","schedule":{"type":"api"},"processor":{"type":"shell","script":"true"}}',
    tid, counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"#;

/// Unique keys, base64-encoded as etcd's JSON gateway wants them.
const ETCD_LUA: &str = r#"
local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, byte = '', x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2^i - byte % 2^(i-1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i,i) == '1' and 2^(6-i) or 0) end
    return b:sub(c+1, c+1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
function request()
  counter = counter + 1
  local body = string.format('{"key":"%s","value":"%s"}',
    b64(string.format("w-%d-%d", tid, counter)), b64("true"))
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"#;

/// Three etcd members on loopback; killed when dropped.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<String>,
}

impl Etcd {
    async fn start(dir: &Path) -> anyhow::Result<Etcd> {
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        let mut clients = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("etcd{i}.log")))?;
            let child = Proc::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--log-level", "warn"])
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("start etcd")?;
            children.push(child);
            clients.push(format!("http://127.0.0.1:{client}"));
        }
        Ok(Etcd { children, clients })
    }

    /// The client URL of the member that leads, once one does.
    async fn leader(&self) -> anyhow::Result<String> {
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "an etcd leader", || async {
            for url in &self.clients {
                let v: serde_json::Value = http
                    .post(format!("{url}/v3/maintenance/status"))
                    .json(&json!({}))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                if v["header"]["member_id"].is_string() && v["header"]["member_id"] == v["leader"] {
                    return Some(url.clone());
                }
            }
            None
        })
        .await
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/api/v1/jobs
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    73.41ms   10.00ms   1.02s    90.00%
  Latency Distribution
     50%   70.10ms
     75%   80.00ms
     90%   90.00ms
     99%    1.20s
  34030 requests in 10.00s, 9.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   3403.00
Transfer/sec:      0.90MB
";
        let r = parse_wrk(text).expect("parses");
        assert_eq!(r.requests, 34030);
        assert_eq!(r.non2xx, 12);
        assert!((r.p50_ms - 70.1).abs() < 1e-9);
        assert!((r.p99_ms - 1200.0).abs() < 1e-9);
        assert_eq!(ms("812.00us"), Some(0.812));
    }
}
