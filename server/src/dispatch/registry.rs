//! The leader's registry of live workers: who is connected, their load, and the
//! sender of each one's stream. It lives in the leader's memory only: a new
//! leader rebuilds it from the workers' reconnections (rule 6, docs/rules.md), never from the
//! replicated state.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qron_proto::api::WorkerView;
use qron_proto::worker::ServerMessage;
use qron_raft_store::{Attempt, InstanceId, WorkerId};
use tokio::sync::mpsc;
use tonic::Status;

/// The sending half of a worker's stream.
pub type StreamTx = mpsc::Sender<Result<ServerMessage, Status>>;

/// What a worker declared when it registered.
#[derive(Debug, Clone)]
pub struct Registration {
    pub worker_id: WorkerId,
    /// Unique per worker process start.
    pub incarnation: String,
    pub app: String,
    pub tags: Vec<String>,
    pub max_concurrency: u32,
    pub cpu_cores: u32,
    pub memory_total_mb: u64,
    pub disk_total_mb: u64,
    pub running: BTreeSet<(InstanceId, Attempt)>,
}

/// Load from the latest heartbeat.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub cpu_percent: f64,
    pub memory_free_mb: u64,
    pub disk_free_mb: u64,
    pub running: BTreeSet<(InstanceId, Attempt)>,
}

/// A worker as the dispatcher sees it.
#[derive(Debug, Clone)]
pub struct Worker {
    pub reg: Registration,
    pub load: Load,
    pub last_seen: Instant,
    /// The current stream's id; `None` sender once it closed.
    pub conn: u64,
    tx: Option<StreamTx>,
}

impl Worker {
    pub fn connected(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| !t.is_closed())
    }

    pub fn view(&self) -> WorkerView {
        WorkerView {
            worker_id: self.reg.worker_id.to_string(),
            app: self.reg.app.clone(),
            tags: self.reg.tags.clone(),
            max_concurrency: self.reg.max_concurrency,
            cpu_cores: self.reg.cpu_cores,
            cpu_percent: self.load.cpu_percent,
            memory_total_mb: self.reg.memory_total_mb,
            memory_free_mb: self.load.memory_free_mb,
            disk_total_mb: self.reg.disk_total_mb,
            disk_free_mb: self.load.disk_free_mb,
            running: self.load.running.iter().map(|(i, a)| (i.0, a.0)).collect(),
            last_seen_ms_ago: self.last_seen.elapsed().as_millis() as u64,
            connected: self.connected(),
        }
    }
}

/// Live workers by id.
#[derive(Default)]
pub struct Registry {
    workers: Mutex<HashMap<WorkerId, Worker>>,
    next_conn: AtomicU64,
    /// Bumped when a worker registers (a new stream or a new process) or is removed.
    changes: AtomicU64,
}

impl Registry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<WorkerId, Worker>) -> R) -> R {
        let mut g = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Registers (or re-registers) a worker on a new stream; returns the stream's id.
    /// A previous stream of the same worker id is dropped (its sender closes).
    pub fn register(&self, reg: Registration, tx: StreamTx) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let load = Load {
            running: reg.running.clone(),
            ..Load::default()
        };
        let replaced = self.with(|m| {
            let replaced = m.insert(
                reg.worker_id.clone(),
                Worker {
                    reg,
                    load,
                    last_seen: Instant::now(),
                    conn,
                    tx: Some(tx),
                },
            );
            // Under the lock, after the insert: a round that sees the new
            // count also sees the worker in its snapshot.
            self.changes.fetch_add(1, Ordering::Relaxed);
            replaced
        });
        drop(replaced);
        conn
    }

    /// Records a heartbeat on stream `conn`; ignored if the worker re-registered since.
    pub fn heartbeat(&self, worker_id: &WorkerId, conn: u64, load: Load) {
        self.with(|m| {
            if let Some(w) = m.get_mut(worker_id).filter(|w| w.conn == conn) {
                w.load = load;
                w.last_seen = Instant::now();
            }
        });
    }

    /// Marks any message on stream `conn` as a sign of life.
    pub fn touch(&self, worker_id: &WorkerId, conn: u64) {
        self.with(|m| {
            if let Some(w) = m.get_mut(worker_id).filter(|w| w.conn == conn) {
                w.last_seen = Instant::now();
            }
        });
    }

    /// The stream `conn` ended: keep the worker (it may reconnect) but stop sending to it.
    pub fn disconnected(&self, worker_id: &WorkerId, conn: u64) {
        self.with(|m| {
            if let Some(w) = m.get_mut(worker_id).filter(|w| w.conn == conn) {
                w.tx = None;
            }
        });
    }

    /// Sends to a worker's current stream; false if it has none or it is full/closed.
    pub fn send(&self, worker_id: &WorkerId, msg: ServerMessage) -> bool {
        self.send_on(worker_id, msg).is_some()
    }

    /// [`Registry::send`], telling which stream (`Worker::conn`) took the message.
    pub fn send_on(&self, worker_id: &WorkerId, msg: ServerMessage) -> Option<u64> {
        let (tx, conn) = self.with(|m| m.get(worker_id).and_then(|w| Some((w.tx.clone()?, w.conn))))?;
        tx.try_send(Ok(msg)).is_ok().then_some(conn)
    }

    /// Removes workers not heard from within `timeout`; returns their ids.
    pub fn expire(&self, timeout: Duration) -> Vec<WorkerId> {
        self.with(|m| {
            let dead: Vec<WorkerId> = m
                .values()
                .filter(|w| w.last_seen.elapsed() > timeout)
                .map(|w| w.reg.worker_id.clone())
                .collect();
            for id in &dead {
                m.remove(id);
            }
            if !dead.is_empty() {
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
            dead
        })
    }

    /// A copy of every worker (for the dispatcher's decisions and the API).
    pub fn snapshot(&self) -> Vec<Worker> {
        self.with(|m| m.values().cloned().collect())
    }

    /// Moves when a worker registered or was removed: which workers there
    /// are, or which process each is, may have changed.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub fn contains(&self, worker_id: &WorkerId) -> bool {
        self.with(|m| m.contains_key(worker_id))
    }

    /// Leadership ended: tell every worker (`msg`, usually NotLeader) and forget them all.
    pub fn close_all(&self, msg: ServerMessage) {
        let all: Vec<Worker> = self.with(|m| m.drain().map(|(_, w)| w).collect());
        self.changes.fetch_add(1, Ordering::Relaxed);
        for w in all {
            if let Some(tx) = w.tx {
                let _ = tx.try_send(Ok(msg.clone()));
            }
        }
    }
}

#[cfg(test)]
impl Registration {
    /// A worker of app "demo" with 4 slots, 2 cores, 1000 MB of memory and disk, for tests.
    pub fn for_test(worker_id: &str, incarnation: &str, tags: &[&str]) -> Registration {
        Registration {
            worker_id: WorkerId::new(worker_id),
            incarnation: incarnation.into(),
            app: "demo".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            max_concurrency: 4,
            cpu_cores: 2,
            memory_total_mb: 1000,
            disk_total_mb: 1000,
            running: BTreeSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reregistration_replaces_the_stream_and_old_heartbeats_are_ignored() {
        let r = Registry::default();
        let w = WorkerId::new("w");
        let (tx1, _rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let c1 = r.register(Registration::for_test("w", "i1", &[]), tx1);
        let c2 = r.register(Registration::for_test("w", "i1", &[]), tx2);
        assert_ne!(c1, c2);
        r.heartbeat(
            &w,
            c1,
            Load {
                cpu_percent: 99.0,
                ..Load::default()
            },
        );
        assert_eq!(
            r.snapshot()[0].load.cpu_percent,
            0.0,
            "stale stream's heartbeat ignored"
        );
        assert!(r.send(&w, ServerMessage::default()));
        assert!(rx2.try_recv().is_ok());
        r.disconnected(&w, c1);
        assert!(
            r.snapshot()[0].connected(),
            "an old stream's end does not disconnect the new one"
        );
        r.disconnected(&w, c2);
        assert!(!r.snapshot()[0].connected());
        assert!(!r.send(&w, ServerMessage::default()));
    }

    #[test]
    fn expire_removes_silent_workers() {
        let r = Registry::default();
        let w = WorkerId::new("w");
        let (tx, _rx) = mpsc::channel(4);
        r.register(Registration::for_test("w", "i1", &[]), tx);
        assert!(r.expire(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(r.expire(Duration::from_millis(1)), vec![w.clone()]);
        assert!(!r.contains(&w));
    }
}
