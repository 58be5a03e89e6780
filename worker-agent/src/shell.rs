//! The shell processor: runs a job's script with `/bin/sh -c`, its stdout and stderr
//! becoming the instance log and its exit code the result.
//!
//! This module owns one child process per call and makes sure it does not outlive the
//! call: the script runs in its own process group, which is killed whole on every
//! exit path, and whose watcher kills it if the worker dies first (`groups.rs`). It never decides the instance's
//! final status; it returns a [`ProcessResult`] like any processor.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::groups::{kill_group, StateDir, WATCHER_SCRIPT};
use crate::ids::{Attempt, AttemptKey, InstanceId};
use crate::processor::{ProcessResult, TaskContext, TaskLogger};

/// Longest line kept whole; a longer one is split (a script printing megabytes
/// without a newline must not grow one buffer without bound).
const MAX_LINE: u64 = 64 * 1024;

/// After the script exits, how long its output may still drain: a background child
/// that kept the pipes open must not hold the instance forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// After a kill, how long the output may still drain.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(200);

/// Runs `script` with `/bin/sh -c`, logging its output line by line, until it exits
/// or `ctx.cancel` fires. Exit code 0 is a success; the result text is `exit code N`.
///
/// The script sees `QRON_INSTANCE_ID`, `QRON_ATTEMPT`, `QRON_JOB_ID`, `QRON_JOB_NAME`,
/// `QRON_JOB_PARAMS`, `QRON_INSTANCE_PARAMS` and `QRON_WORKER_ID` in its environment.
/// It runs in a process group of its own that dies with the call, and with the
/// calling process if that dies first (see `groups.rs`).
pub async fn run_shell(script: &str, ctx: &TaskContext) -> ProcessResult {
    run_shell_in(script, ctx, None, true).await
}

/// [`run_shell`], recording the script's process group in the worker's state dir
/// (if any) for as long as it may live. `guarded: false` (TEST ONLY, see
/// `AgentConfig::unsafe_orphan_scripts`) runs it as before the guards: its own
/// group, no watcher, killed only on a cancel.
pub(crate) async fn run_shell_in(
    script: &str,
    ctx: &TaskContext,
    state: Option<&StateDir>,
    guarded: bool,
) -> ProcessResult {
    let fail = |msg: String| {
        ctx.logger.log(&msg);
        ProcessResult::failed(msg)
    };
    let mut group = if guarded {
        match Group::start(ctx, state) {
            Ok(g) => g,
            Err(msg) => return fail(msg),
        }
    } else {
        Group::unguarded()
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .env("QRON_INSTANCE_ID", ctx.instance_id.to_string())
        .env("QRON_ATTEMPT", ctx.attempt.to_string())
        .env("QRON_JOB_ID", ctx.job_id.to_string())
        .env("QRON_JOB_NAME", &ctx.job_name)
        .env("QRON_JOB_PARAMS", &ctx.job_params)
        .env("QRON_INSTANCE_PARAMS", &ctx.instance_params)
        .env("QRON_WORKER_ID", &ctx.worker_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The watcher's group (or, unguarded, one of its own), so a stop reaches what
        // the script started too, and a Ctrl-C meant for the worker does not hit the
        // script behind the agent's back.
        .process_group(group.pgid as i32)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            group.end().await;
            return fail(format!("cannot start /bin/sh: {e}"));
        }
    };
    if !guarded {
        group.pgid = child.id().unwrap_or(0);
    }
    let mut pumps = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, ctx.logger.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, ctx.logger.clone())));
    }

    let waited = tokio::select! {
        status = child.wait() => Some(status),
        _ = ctx.cancel.cancelled() => None,
    };
    // Every exit path kills the whole group: what the script left in the background
    // does not outlive its attempt.
    let result = match waited {
        Some(Ok(status)) => {
            if guarded {
                group.kill();
            }
            drain(pumps, DRAIN_AFTER_EXIT).await;
            exit_result(status)
        }
        Some(Err(e)) => {
            group.kill();
            let _ = child.start_kill();
            let _ = child.wait().await;
            drain(pumps, DRAIN_AFTER_KILL).await;
            ProcessResult::failed(format!("cannot wait for the script: {e}"))
        }
        None => {
            group.kill();
            // The group kill covers the shell too; this is the fallback if it failed.
            let _ = child.start_kill();
            let status = child.wait().await.ok();
            drain(pumps, DRAIN_AFTER_KILL).await;
            let reason = ctx.cancel_reason().unwrap_or_else(|| "stopped".to_owned());
            let mut result = ProcessResult::failed(reason);
            result.exit_code = status.and_then(|s| s.code());
            result
        }
    };
    group.end().await;
    result
}

/// A script's process group, led by its watcher (none when unguarded).
struct Group<'a> {
    pgid: u32,
    watcher: Option<Child>,
    state: Option<&'a StateDir>,
}

impl<'a> Group<'a> {
    /// Starts the watcher, which leads the group: it kills the group when its stdin
    /// (held by this process only) closes, which the kernel does when this process
    /// dies. Records the group in the state dir.
    fn start(ctx: &TaskContext, state: Option<&'a StateDir>) -> Result<Group<'a>, String> {
        let watcher = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHER_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
        let pgid = watcher
            .id()
            .ok_or_else(|| "the process group's watcher ended at once".to_owned())?;
        let group = Group {
            pgid,
            watcher: Some(watcher),
            state,
        };
        if let Some(dir) = state {
            let key = AttemptKey::new(InstanceId(ctx.instance_id), Attempt(ctx.attempt));
            if let Err(e) = dir.record(pgid, key) {
                // Dropping the group closes the watcher's stdin: it kills the group.
                return Err(format!(
                    "cannot record the process group in {}: {e}",
                    dir.path().display()
                ));
            }
        }
        Ok(group)
    }

    /// TEST ONLY: no watcher; the script leads its own group (pgid set once spawned).
    fn unguarded() -> Group<'static> {
        Group {
            pgid: 0,
            watcher: None,
            state: None,
        }
    }

    fn kill(&self) {
        if self.pgid != 0 {
            kill_group(self.pgid as i32);
        }
    }

    /// Ends a guarded group: kills it (the watcher with it), reaps the watcher and
    /// forgets the record. An unguarded group is left alone (that is the point).
    async fn end(&mut self) {
        let Some(mut watcher) = self.watcher.take() else { return };
        self.kill();
        drop(watcher.stdin.take());
        let _ = watcher.wait().await;
        if let Some(dir) = self.state {
            dir.forget(self.pgid);
        }
    }
}

fn exit_result(status: ExitStatus) -> ProcessResult {
    match status.code() {
        Some(0) => ProcessResult::ok("exit code 0").with_exit_code(0),
        Some(code) => ProcessResult::failed(format!("exit code {code}")).with_exit_code(code),
        None => match status.signal() {
            Some(sig) => ProcessResult::failed(format!("killed by signal {sig}")),
            None => ProcessResult::failed(format!("ended without an exit code ({status})")),
        },
    }
}

/// Copies one output stream into the log, line by line, lossily decoded.
async fn pump<R: AsyncRead + Unpin>(stream: R, logger: TaskLogger) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                logger.log(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

/// Waits up to `grace` for the output pumps to reach the end of their streams, then
/// abandons them.
async fn drain(pumps: Vec<JoinHandle<()>>, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    for mut pump in pumps {
        if tokio::time::timeout_at(deadline, &mut pump).await.is_err() {
            pump.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn logs_both_streams_and_fails_on_a_nonzero_exit() {
        let ctx = TaskContext::detached("");
        let r = run_shell("echo out; echo err >&2; exit 3", &ctx).await;
        assert!(!r.success);
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.message, "exit code 3");
        let log = ctx.logger.unsent();
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines.contains(&"out"), "{log:?}");
        assert!(lines.contains(&"err"), "{log:?}");
    }

    #[tokio::test]
    async fn exit_zero_succeeds_and_sees_the_environment() {
        let mut ctx = TaskContext::detached("p=1");
        ctx.instance_id = 42;
        ctx.attempt = 2;
        let r = run_shell("echo \"$QRON_INSTANCE_ID/$QRON_ATTEMPT/$QRON_JOB_PARAMS\"", &ctx).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(ctx.logger.unsent(), "42/2/p=1\n");
    }

    #[tokio::test]
    async fn cancel_kills_the_script_quickly() {
        let ctx = TaskContext::detached("");
        let cancel = ctx.cancel.clone();
        let reason = ctx.cancel_reason.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            *crate::util::lock(&reason) = Some("timed out after 200 ms".to_owned());
            cancel.cancel();
        });
        let started = Instant::now();
        let r = run_shell("sleep 5; echo never", &ctx).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert!(!r.success);
        assert_eq!(r.message, "timed out after 200 ms");
        assert!(!ctx.logger.unsent().contains("never"));
    }

    #[tokio::test]
    async fn what_a_script_leaves_in_the_background_dies_with_it() {
        let ctx = TaskContext::detached("");
        let r = run_shell("sleep 30 & echo $!", &ctx).await;
        assert!(r.success, "{r:?}");
        let pid = ctx.logger.unsent().trim().to_owned();
        assert!(!pid.is_empty());
        // Killed (SIGKILL is synchronous for the target's liveness once delivered;
        // the zombie is reaped by init): wait for it to leave the process table.
        let mut gone = false;
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "background process {pid} outlived its script");
    }
}
