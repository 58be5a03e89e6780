//! The process groups of shell attempts, and the worker's state dir that records
//! them (rule 11, docs/rules.md: no script outlives its attempt's worker).
//!
//! Three guards, from the quickest to the last resort:
//! 1. every exit path of a shell attempt kills its whole group (`shell.rs`);
//! 2. each group has a *watcher*, a tiny `/bin/sh` that is the group's leader and
//!    blocks reading a pipe whose other end only the worker holds: when the worker
//!    dies in any way (SIGKILL, OOM, panic) the kernel closes that end, the read
//!    returns and the watcher kills its group. (A parent-death signal would reach
//!    only the direct child, not what the script started, and is tied to the
//!    thread that spawned it; the pipe covers the whole group.)
//! 3. the group is recorded in the state dir; a restarted worker kills every group
//!    still recorded, and waits until none of their processes is left, before it
//!    registers. Until it registers, the leader does not retry those attempts.
//!
//! The state dir is locked while a worker uses it, so two workers never reap each
//! other's groups. This module owns the records and the killing; it never decides
//! when an attempt ends.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};
use tracing::{info, warn};

use crate::error::AgentError;
use crate::ids::AttemptKey;

/// How long a reap waits for the killed processes to be gone.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// How long opening a state dir waits for its lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The script the watcher runs: block on stdin; at EOF (the worker is gone, or the
/// attempt ended) kill the whole process group, itself included.
pub(crate) const WATCHER_SCRIPT: &str = "read _; kill -KILL 0";

/// A worker's state dir, locked for the life of the process.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    // Held for the lock: released when the worker exits, however it exits.
    _lock: File,
}

/// A recorded group: its id and the start time of its leader, which tells it from
/// a later, unrelated group that reused the id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    pgid: i32,
    boot_id: String,
    start_ticks: u64,
    what: String,
}

impl StateDir {
    /// Opens (creating) the state dir at `path` and locks it; fails if another
    /// live worker holds it.
    pub fn open(path: &Path) -> Result<StateDir, AgentError> {
        let io = |what: &str, e: std::io::Error| AgentError::StateDir(format!("{what} {}: {e}", path.display()));
        fs::create_dir_all(path.join("groups")).map_err(|e| io("cannot create", e))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(|e| io("cannot open the lock of", e))?;
        // A previous process of this worker may still be exiting, and a child being
        // spawned holds a copy of the descriptor until it execs: poll for a moment.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(AgentError::StateDir(format!(
                        "{} is in use by another live worker (the same --worker-id on this host?); give each worker its own --worker-id or --state-dir",
                        path.display()
                    )))
                }
                Err(fs::TryLockError::Error(e)) => return Err(io("cannot lock", e)),
            }
        }
        Ok(StateDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record_path(&self, pgid: i32) -> PathBuf {
        self.path.join("groups").join(pgid.to_string())
    }

    /// Records the group `pgid` (its watcher just started) of attempt `key`.
    pub(crate) fn record(&self, pgid: u32, key: AttemptKey) -> std::io::Result<()> {
        let pgid = i32::try_from(pgid).map_err(|_| std::io::Error::other("pid out of range"))?;
        let start_ticks = proc_stat(pgid)
            .map(|s| s.start_ticks)
            .ok_or_else(|| std::io::Error::other(format!("process {pgid} is already gone")))?;
        let text = format!(
            "{pgid} {} {start_ticks} instance={} attempt={}\n",
            boot_id(),
            key.instance_id,
            key.attempt
        );
        fs::write(self.record_path(pgid), text)
    }

    /// The group `pgid` is dead: forget it.
    pub(crate) fn forget(&self, pgid: u32) {
        if let Ok(pgid) = i32::try_from(pgid) {
            match fs::remove_file(self.record_path(pgid)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => warn!(pgid, error = %e, "cannot remove a process group record"),
            }
        }
    }

    /// Kills every group a previous worker process left and waits until none of
    /// their processes is left. Returns how many processes were found alive.
    pub async fn reap_leftovers(&self) -> Result<usize, AgentError> {
        let dir = self.path.join("groups");
        let entries =
            fs::read_dir(&dir).map_err(|e| AgentError::StateDir(format!("cannot read {}: {e}", dir.display())))?;
        let now_boot = boot_id();
        let mut found = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let record = fs::read_to_string(&path).ok().and_then(|t| parse_record(&t));
            let Some(r) = record else {
                warn!(file = %path.display(), "unreadable process group record; removed");
                let _ = fs::remove_file(&path);
                continue;
            };
            if r.boot_id == now_boot {
                let members = group_members(r.pgid, r.start_ticks);
                if !members.is_empty() {
                    found += members.len();
                    warn!(pgid = r.pgid, processes = members.len(), attempt = %r.what,
                        "killing what a previous worker process left running");
                    kill_group(r.pgid);
                    wait_gone(r.pgid, r.start_ticks).await?;
                }
            }
            let _ = fs::remove_file(&path);
        }
        if found > 0 {
            info!(processes = found, "leftovers of a previous worker process are dead");
        }
        Ok(found)
    }
}

/// Sends SIGKILL to the group `pgid`; a group already gone is fine.
pub(crate) fn kill_group(pgid: i32) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
}

/// Waits until no process of the group is left, or fails after `REAP_WAIT`.
async fn wait_gone(pgid: i32, start_ticks: u64) -> Result<(), AgentError> {
    let deadline = tokio::time::Instant::now() + REAP_WAIT;
    loop {
        if group_members(pgid, start_ticks).is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AgentError::StateDir(format!(
                "processes of group {pgid} left by a previous worker are still alive after SIGKILL and {REAP_WAIT:?}; not registering while they run"
            )));
        }
        kill_group(pgid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    pgrp: i32,
    start_ticks: u64,
    zombie: bool,
}

/// Parses `/proc/<pid>/stat`: the fields after the command name, which may itself
/// hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3 of proc(5)), so field N is fields[N - 3].
    Some(Stat {
        zombie: *fields.first()? == "Z",
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn proc_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The live (not zombie) processes of group `pgid` that are ours: none if the
/// group's leader id now belongs to a process started at another time (the id
/// was reused by an unrelated group).
fn group_members(pgid: i32, start_ticks: u64) -> Vec<i32> {
    if let Some(leader) = proc_stat(pgid) {
        if leader.start_ticks != start_ticks {
            return Vec::new();
        }
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.pgrp == pgid && !s.zombie))
        .collect()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn parse_record(text: &str) -> Option<Record> {
    let mut parts = text.trim().splitn(4, ' ');
    Some(Record {
        pgid: parts.next()?.parse().ok()?,
        boot_id: parts.next()?.to_owned(),
        start_ticks: parts.next()?.parse().ok()?,
        what: parts.next().unwrap_or("").to_owned(),
    })
}

/// The default state dir of a worker: `$QRON_WORKER_STATE_BASE` (or
/// `/var/tmp/qron-worker`) / app / worker id, so a worker restarted with the same
/// `--worker-id` finds what it left.
pub fn default_state_dir(app: &str, worker_id: &str) -> PathBuf {
    let base = std::env::var_os("QRON_WORKER_STATE_BASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/qron-worker"));
    base.join(sanitize(app)).join(sanitize(worker_id))
}

/// A path component from a name: `/`, `\0` and a leading `.` cannot escape the base.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, InstanceId};
    use std::process::Stdio;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (my (odd) cmd) S 1 4240 4240 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                pgrp: 4240,
                start_ticks: 987654,
                zombie: false
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn records_round_trip_and_names_cannot_escape_the_base() {
        let r = parse_record("12 abc-def 345 instance=7 attempt=2\n").expect("parses");
        assert_eq!((r.pgid, r.boot_id.as_str(), r.start_ticks), (12, "abc-def", 345));
        assert_eq!(r.what, "instance=7 attempt=2");
        let d = default_state_dir("../app", "h:1/x");
        assert!(
            d.ends_with("_.._app/h:1_x") || d.ends_with(".._app/h:1_x"),
            "{}",
            d.display()
        );
        assert!(!d.components().any(|c| c == std::path::Component::ParentDir));
    }

    #[test]
    fn a_state_dir_is_held_by_one_worker_at_a_time() {
        let tmp = tempfile::tempdir().expect("tmp");
        let a = StateDir::open(tmp.path()).expect("first");
        let err = StateDir::open(tmp.path()).expect_err("second while the first lives");
        assert!(err.to_string().contains("another live worker"), "{err}");
        drop(a);
        StateDir::open(tmp.path()).expect("free again");
    }

    /// A watcher leading a new group, as `shell.rs` starts it: (child, group id).
    fn spawn_watcher() -> (tokio::process::Child, u32) {
        let watcher = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHER_SCRIPT)
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("watcher");
        let pgid = watcher.id().expect("pid");
        (watcher, pgid)
    }

    /// `script` under `/bin/sh -c` in the group `pgid`.
    fn spawn_in_group(pgid: u32, script: &str) -> tokio::process::Child {
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .process_group(pgid as i32)
            .spawn()
            .expect("script")
    }

    /// A group left by a "previous worker" (a watcher and a script started here, then
    /// abandoned) is killed by the next worker's reap before it returns.
    #[tokio::test]
    async fn reap_kills_what_a_previous_worker_left() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = StateDir::open(tmp.path()).expect("open");
        let (mut watcher, pgid) = spawn_watcher();
        let mut script = spawn_in_group(pgid, "sleep 30 & sleep 30");
        dir.record(pgid, AttemptKey::new(InstanceId(1), Attempt(1)))
            .expect("record");
        // Keep the watcher's pipe open (as a frozen or still-living holder would), so
        // only the reap can end the group.
        let _stdin = watcher.stdin.take();
        for _ in 0..100 {
            if group_members(pgid as i32, proc_stat(pgid as i32).map_or(0, |s| s.start_ticks)).len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(dir);
        let next = StateDir::open(tmp.path()).expect("the next worker");
        let found = next.reap_leftovers().await.expect("reaped");
        assert!(found >= 2, "found {found}");
        let _ = script.wait().await;
        let _ = watcher.wait().await;
        assert!(fs::read_dir(tmp.path().join("groups")).expect("dir").next().is_none());
    }

    /// The watcher kills its group when the worker's end of the pipe closes, which
    /// is what the kernel does when the worker dies.
    #[tokio::test]
    async fn the_watcher_kills_its_group_when_the_pipe_closes() {
        let (mut watcher, pgid) = spawn_watcher();
        let start = proc_stat(pgid as i32).map_or(0, |s| s.start_ticks);
        let mut script = spawn_in_group(pgid, "sleep 30");
        drop(watcher.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(5), script.wait())
            .await
            .expect("the script was killed")
            .expect("status");
        assert!(!status.success());
        let _ = watcher.wait().await;
        // SIGKILL is delivered, but a member may need a moment to be scheduled and die.
        wait_gone(pgid as i32, start)
            .await
            .expect("no process of the group is left");
    }
}
