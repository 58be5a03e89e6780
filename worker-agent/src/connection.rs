//! The session loop: find the leader, keep one stream to it, and follow it when it
//! changes.
//!
//! A session is one `Connect` stream to one leader: `Register` first, then every
//! unacknowledged report in order, then new reports as they are pushed, heartbeats and
//! pings; inbound dispatches, stops and acks go to the executor and the outbox. When
//! the stream breaks, the leader falls silent for longer than the ping timeout, or the
//! server says it is not the leader, the session ends and the loop finds the leader
//! again. This module never runs instances and never drops a report: a session ending
//! changes only where reports go next.
//!
//! It feeds the lease (rule 11, docs/rules.md): `Registered` grants it from when the
//! Register left, each `Pong` renews it from when its ping left. A registered session
//! whose lease is no longer in force ends before it handles another message, so a
//! worker that wakes from a freeze acts on nothing its old leader buffered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use qron_proto::worker::server_message::Msg as ServerMsg;
use qron_proto::worker::worker_message::Msg as WorkerMsg;
use qron_proto::worker::worker_service_client::WorkerServiceClient;
use qron_proto::worker::{
    AcquireRequest, AcquireResponse, Heartbeat, Ping, RefusedCode, Register, ServerMessage, WorkerMessage,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, info, warn};

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::executor::Executor;
use crate::fence::LeaderKey;
use crate::lease::{BootInstant, Lease};
use crate::load::{LoadSample, LoadSampler};
use crate::outbox::SharedOutbox;
use crate::util::{lock, now_ms};

/// Messages queued towards the server before the writer waits for the network.
const OUTBOUND_CAPACITY: usize = 256;

/// Reports taken from the outbox per step, so pings are never stuck behind a backlog.
const OUTBOX_PAGE: usize = 128;

/// NotLeader redirects followed in a row before pausing: two confused nodes must not
/// bounce the worker back and forth at full speed.
const MAX_REDIRECTS_IN_ROW: u32 = 3;

/// After losing a registered leader, retry at the initial back-off (no doubling) for
/// this long: an election takes well under it, and the worker should see the new
/// leader as soon as it exists.
const FAST_RETRY_WINDOW: Duration = Duration::from_secs(3);

/// Whether the agent currently has a leader. The connection is its only writer; the
/// agent hands out receivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Looking for the leader (at start, and after losing one).
    Searching,
    /// Registered with this leader.
    Registered {
        /// The leader's node id.
        leader_id: u64,
        /// Its Raft term.
        term: u64,
        /// The gRPC address the agent is connected to.
        address: String,
    },
}

/// A node to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    node_id: u64,
    addr: String,
}

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The agent is stopping.
    Stopped,
    /// The leader refused the registration: give up.
    Refused(String),
    /// The node is not the leader and named the one that is.
    Redirect { to: Target, registered: bool },
    /// The session failed or the node knows no leader: find the leader again.
    Lost { registered: bool, why: String },
}

/// The connection side of the agent; clones share everything.
#[derive(Clone)]
pub(crate) struct Connection {
    cfg: Arc<AgentConfig>,
    outbox: Arc<SharedOutbox>,
    executor: Executor,
    load: Arc<Mutex<LoadSampler>>,
    state: watch::Sender<ConnectionState>,
    lease: Arc<Lease>,
}

impl Connection {
    pub(crate) fn new(
        cfg: Arc<AgentConfig>,
        outbox: Arc<SharedOutbox>,
        executor: Executor,
        state: watch::Sender<ConnectionState>,
        lease: Arc<Lease>,
    ) -> Self {
        Connection {
            cfg,
            outbox,
            executor,
            load: Arc::new(Mutex::new(LoadSampler::new())),
            state,
            lease,
        }
    }

    /// Finds the leader and keeps a session with it until `stop` fires (Ok) or the
    /// leader refuses the registration (Err). Never gives up on unreachable servers.
    pub(crate) async fn run(self, stop: CancellationToken) -> Result<(), AgentError> {
        let mut backoff = Backoff::new(self.cfg.backoff_initial, self.cfg.backoff_max);
        let mut streak = FailureStreak::default();
        let mut learned: Vec<String> = Vec::new();
        let mut redirect: Option<Target> = None;
        let mut redirects_in_row = 0u32;
        let mut current = String::new();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let target = match redirect.take() {
                Some(t) => t,
                None => {
                    let found = tokio::select! {
                        r = self.acquire(&current, &mut learned) => r,
                        _ = stop.cancelled() => return Ok(()),
                    };
                    match found {
                        Ok(t) => t,
                        Err(why) => {
                            streak.fail(&why);
                            if pause(backoff.next_delay(), &stop).await {
                                return Ok(());
                            }
                            continue;
                        }
                    }
                }
            };
            current = target.addr.clone();
            let end = self.session(&target, &stop, &mut streak).await;
            if !matches!(end, SessionEnd::Redirect { .. }) {
                redirects_in_row = 0;
            }
            match end {
                SessionEnd::Stopped => return Ok(()),
                SessionEnd::Refused(reason) => {
                    error!(%reason, address = %target.addr, "registration refused by the leader; giving up");
                    self.state.send_replace(ConnectionState::Searching);
                    return Err(AgentError::Refused(reason));
                }
                SessionEnd::Redirect { to, registered } => {
                    if registered {
                        self.lost_leader(&target, &format!("it stepped down; the leader is now {}", to.addr));
                        // Following the redirect is the retry; the window only sets the pace.
                        backoff.leader_lost(FAST_RETRY_WINDOW);
                    } else {
                        debug!(from = %target.addr, to = %to.addr, "not the leader; following the redirect");
                    }
                    redirects_in_row += 1;
                    if redirects_in_row <= MAX_REDIRECTS_IN_ROW {
                        redirect = Some(to);
                    } else {
                        redirects_in_row = 0;
                        streak.fail("servers keep redirecting to each other");
                        if pause(backoff.next_delay(), &stop).await {
                            return Ok(());
                        }
                    }
                }
                SessionEnd::Lost { registered, why } => {
                    // Straight back to acquiring after losing a leader (the first try is
                    // free, once per window, so a server that registers and drops the
                    // worker at once cannot make it spin); otherwise pause.
                    let free_retry = if registered {
                        self.lost_leader(&target, &why);
                        backoff.leader_lost(FAST_RETRY_WINDOW)
                    } else {
                        streak.fail(&why);
                        false
                    };
                    if !free_retry && pause(backoff.next_delay(), &stop).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn lost_leader(&self, target: &Target, why: &str) {
        info!(leader_id = target.node_id, address = %target.addr, reason = %why, "lost the leader; failing over");
        self.state.send_replace(ConnectionState::Searching);
    }

    /// Asks every known server at once who leads; the first that knows wins. Members
    /// named in the answers are remembered, so the worker still finds the cluster when
    /// all of its seeds are gone.
    async fn acquire(&self, current: &str, learned: &mut Vec<String>) -> Result<Target, String> {
        let mut candidates: Vec<String> = Vec::new();
        for addr in self.cfg.seeds.iter().chain(learned.iter()) {
            let addr = addr.trim();
            if !addr.is_empty() && !candidates.iter().any(|c| c == addr) {
                candidates.push(addr.to_owned());
            }
        }
        let timeout = self.cfg.connect_timeout;
        let app = self.cfg.app.as_str();
        let mut calls: FuturesUnordered<_> = candidates
            .into_iter()
            .map(|addr| async move {
                let answer = acquire_one(&addr, app, current, timeout).await;
                (addr, answer)
            })
            .collect();
        let mut failures = Vec::new();
        while let Some((addr, answer)) = calls.next().await {
            match answer {
                Ok(a) => {
                    for m in &a.members {
                        let grpc = m.grpc_addr.trim();
                        if !grpc.is_empty()
                            && !self.cfg.seeds.iter().any(|s| s == grpc)
                            && !learned.iter().any(|l| l == grpc)
                        {
                            learned.push(grpc.to_owned());
                        }
                    }
                    if a.has_leader && !a.leader_grpc.trim().is_empty() {
                        debug!(asked = %addr, leader_id = a.leader_id, leader = %a.leader_grpc, term = a.term, "leader found");
                        return Ok(Target {
                            node_id: a.leader_id,
                            addr: a.leader_grpc.trim().to_owned(),
                        });
                    }
                    failures.push(format!("{addr} knows no leader yet"));
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Err("no server address to ask".to_owned())
        } else {
            Err(failures.join("; "))
        }
    }

    /// One stream to one node, from connect to its end.
    async fn session(&self, target: &Target, stop: &CancellationToken, streak: &mut FailureStreak) -> SessionEnd {
        let lost = |why: String| SessionEnd::Lost { registered: false, why };
        let channel = tokio::select! {
            c = connect(&target.addr, self.cfg.connect_timeout) => c,
            _ = stop.cancelled() => return SessionEnd::Stopped,
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => return lost(e.to_string()),
        };
        let mut client = WorkerServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<WorkerMessage>(OUTBOUND_CAPACITY);
        // Register goes into the stream before it opens: it must be the first message.
        // The lease its answer grants counts from here (no later than it leaves).
        let register_sent = BootInstant::now();
        if tx.send(self.register_message().await).await.is_err() {
            return lost("the outbound stream closed before it opened".to_owned());
        }
        let open_timeout = self.cfg.connect_timeout + self.cfg.ping_timeout;
        let opened = tokio::select! {
            r = tokio::time::timeout(open_timeout, client.connect(ReceiverStream::new(rx))) => r,
            _ = stop.cancelled() => return SessionEnd::Stopped,
        };
        let mut inbound = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                return lost(format!("{}: Connect failed: {}", target.addr, status.message()));
            }
            Err(_) => return lost(format!("{}: Connect not answered within {open_timeout:?}", target.addr)),
        };

        let (heartbeat_every, heartbeat_rx) = watch::channel(self.cfg.heartbeat_interval);
        let writer_stop = CancellationToken::new();
        // Whatever way this function returns, the writer stops with it.
        let _writer_guard = writer_stop.clone().drop_guard();
        let writer = tokio::spawn(self.clone().write(tx, heartbeat_rx, writer_stop.clone()));

        let mut registered = false;
        let mut last_heard = Instant::now();
        let mut check = tokio::time::interval(self.cfg.ping_interval);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break SessionEnd::Stopped,
                _ = check.tick() => {
                    if let Some(end) = self.lease_gone(registered) {
                        break end;
                    }
                    let silent = last_heard.elapsed();
                    if silent > self.cfg.ping_timeout {
                        break SessionEnd::Lost {
                            registered,
                            why: format!("no answer from {} for {} ms", target.addr, silent.as_millis()),
                        };
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        // Before anything the message says: a worker that woke from a
                        // freeze must not act on what its old leader buffered.
                        if let Some(end) = self.lease_gone(registered) {
                            break end;
                        }
                        last_heard = Instant::now();
                        if let Some(end) = self.handle(m, target, &mut registered, &heartbeat_every, streak, register_sent) {
                            break end;
                        }
                    }
                    Ok(None) => break SessionEnd::Lost {
                        registered,
                        why: format!("{} closed the stream", target.addr),
                    },
                    Err(status) => break SessionEnd::Lost {
                        registered,
                        why: format!("stream from {} broke: {}", target.addr, status.message()),
                    },
                },
            }
        };
        writer_stop.cancel();
        let _ = writer.await;
        end
    }

    /// Ends a registered session whose lease is no longer in force.
    fn lease_gone(&self, registered: bool) -> Option<SessionEnd> {
        (registered && !self.lease.valid()).then(|| SessionEnd::Lost {
            registered: true,
            why: format!(
                "no answer from the leader within the lease ({} ms)",
                self.lease.length().as_millis()
            ),
        })
    }

    /// Acts on one server message; `Some` ends the session.
    fn handle(
        &self,
        m: ServerMessage,
        target: &Target,
        registered: &mut bool,
        heartbeat_every: &watch::Sender<Duration>,
        streak: &mut FailureStreak,
        register_sent: BootInstant,
    ) -> Option<SessionEnd> {
        match m.msg? {
            ServerMsg::Registered(r) => {
                let leader = r.leader.as_ref().map(LeaderKey::from);
                if let Some(l) = leader {
                    if !self.executor.observe_leader(l) {
                        return Some(SessionEnd::Lost {
                            registered: false,
                            why: format!(
                                "{} answered as leader {l:?}, older than {:?}: a deposed leader",
                                target.addr,
                                self.executor.highest_leader()
                            ),
                        });
                    }
                }
                self.lease.set_length(Duration::from_millis(r.lease_ms));
                self.lease.granted(register_sent);
                *registered = true;
                if r.heartbeat_interval_ms > 0 {
                    heartbeat_every.send_replace(Duration::from_millis(r.heartbeat_interval_ms));
                }
                streak.recovered();
                let (leader_id, term) = leader.map_or((target.node_id, 0), |l| (l.node_id, l.term));
                info!(leader_id, term, address = %target.addr, "registered with the leader");
                self.state.send_replace(ConnectionState::Registered {
                    leader_id,
                    term,
                    address: target.addr.clone(),
                });
            }
            ServerMsg::Dispatch(d) => self.executor.dispatch(d),
            ServerMsg::Stop(s) => self.executor.stop(s),
            ServerMsg::Ack(a) => {
                let dropped = self.outbox.ack(a.seq);
                self.executor.on_ack(a.seq);
                debug!(seq = a.seq, dropped, "reports acknowledged");
            }
            ServerMsg::Pong(p) => self.lease.answered(p.nonce),
            ServerMsg::NotLeader(n) => {
                let to = n.leader_grpc.trim();
                return Some(if n.has_leader && !to.is_empty() && to != target.addr {
                    SessionEnd::Redirect {
                        to: Target {
                            node_id: n.leader_id,
                            addr: to.to_owned(),
                        },
                        registered: *registered,
                    }
                } else {
                    SessionEnd::Lost {
                        registered: *registered,
                        why: format!("{} is not the leader and knows none", target.addr),
                    }
                });
            }
            ServerMsg::Refused(r) => {
                return Some(match RefusedCode::try_from(r.code) {
                    // A new leader still catching up: retry at once (with the back-off).
                    Ok(RefusedCode::NotReady) => SessionEnd::Lost {
                        registered: false,
                        why: format!("{}: {}", target.addr, r.reason),
                    },
                    // The app may be created a moment later (compose, Kubernetes).
                    Ok(RefusedCode::UnknownApp) => SessionEnd::Lost {
                        registered: false,
                        why: format!("{} (retrying until it exists)", r.reason),
                    },
                    _ => SessionEnd::Refused(r.reason),
                });
            }
        }
        None
    }

    /// The outbound half of a session: pending reports, new reports, heartbeats, pings.
    /// Pings and heartbeats go first, so a long backlog of reports never makes a live
    /// leader look dead.
    async fn write(
        self,
        tx: mpsc::Sender<WorkerMessage>,
        mut heartbeat_every: watch::Receiver<Duration>,
        stop: CancellationToken,
    ) {
        let ticker = |every: Duration| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        let mut ping = ticker(self.cfg.ping_interval);
        let mut heartbeat = ticker(*heartbeat_every.borrow_and_update());
        let mut nonce = 0u64;
        let mut sent_upto = 0u64;
        // Start by sending every report still unacknowledged, from a previous leader too.
        let mut backlog = true;
        loop {
            let msg = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = ping.tick() => {
                    nonce += 1;
                    // Noted before it leaves: its pong renews the lease from here.
                    self.lease.ping_sent(nonce, BootInstant::now());
                    WorkerMessage { msg: Some(WorkerMsg::Ping(Ping { nonce })) }
                }
                _ = heartbeat.tick() => self.heartbeat_message().await,
                Ok(()) = heartbeat_every.changed() => {
                    heartbeat = ticker(*heartbeat_every.borrow_and_update());
                    continue;
                }
                _ = self.outbox.pushed(), if !backlog => {
                    backlog = true;
                    continue;
                }
                _ = std::future::ready(()), if backlog => {
                    let (page, more) = self.outbox.after(sent_upto, OUTBOX_PAGE);
                    backlog = more;
                    for (seq, msg) in page {
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                        sent_upto = seq;
                    }
                    continue;
                }
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }

    async fn register_message(&self) -> WorkerMessage {
        let load = self.sample_load().await;
        let cfg = &self.cfg;
        WorkerMessage {
            msg: Some(WorkerMsg::Register(Register {
                app: cfg.app.clone(),
                secret: cfg.secret.clone(),
                worker_id: cfg.worker_id.to_string(),
                tags: cfg.tags.clone(),
                max_concurrency: cfg.max_concurrency,
                cpu_cores: load.cpu_cores,
                memory_total_mb: load.memory_total_mb,
                disk_total_mb: load.disk_total_mb,
                running: self.executor.held(),
                highest_leader: self.executor.highest_leader().map(Into::into),
                incarnation: incarnation().to_owned(),
            })),
        }
    }

    async fn heartbeat_message(&self) -> WorkerMessage {
        let load = self.sample_load().await;
        WorkerMessage {
            msg: Some(WorkerMsg::Heartbeat(Heartbeat {
                cpu_percent: load.cpu_percent,
                memory_free_mb: load.memory_free_mb,
                disk_free_mb: load.disk_free_mb,
                running: self.executor.held(),
                at_ms: now_ms(),
            })),
        }
    }

    /// Reads the machine's load on a blocking thread (sysinfo reads files).
    async fn sample_load(&self) -> LoadSample {
        let load = Arc::clone(&self.load);
        tokio::task::spawn_blocking(move || lock(&load).sample())
            .await
            .unwrap_or_default()
    }
}

/// Opens a gRPC channel to `addr` (`host:port`, or a full `http://` URI).
async fn connect(addr: &str, timeout: Duration) -> Result<Channel, AgentError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|source| AgentError::Address {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    // connect_timeout covers TCP only; a stopped (SIGSTOP) server accepts TCP and then
    // never finishes the HTTP/2 handshake, so the whole connect gets a deadline too.
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(source)) => Err(AgentError::Connect {
            addr: addr.to_owned(),
            source,
        }),
        Err(_) => Err(AgentError::Timeout {
            what: format!("connecting to {addr}"),
            after: timeout,
        }),
    }
}

/// One `Acquire` call.
async fn acquire_one(addr: &str, app: &str, current: &str, timeout: Duration) -> Result<AcquireResponse, AgentError> {
    let mut client = WorkerServiceClient::new(connect(addr, timeout).await?);
    let request = AcquireRequest {
        app: app.to_owned(),
        current: current.to_owned(),
    };
    match tokio::time::timeout(timeout, client.acquire(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(AgentError::Rpc {
            addr: addr.to_owned(),
            status: Box::new(status),
        }),
        Err(_) => Err(AgentError::Timeout {
            what: format!("Acquire on {addr}"),
            after: timeout,
        }),
    }
}

/// Sleeps `d` unless `stop` fires first; returns true if it did.
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}

/// The pause between attempts to reach a leader: doubling from `initial` to `max`,
/// except during a fast-retry window after a registered leader was lost.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    fast_until: Option<Instant>,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
            fast_until: None,
        }
    }

    fn next_delay(&mut self) -> Duration {
        if self.fast_until.is_some_and(|t| Instant::now() < t) {
            return self.initial;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A registered session ended: start over, retrying fast for `window`. Returns
    /// whether an immediate retry is due (not if a leader was already lost within the
    /// previous window).
    fn leader_lost(&mut self, window: Duration) -> bool {
        let now = Instant::now();
        let free = self.fast_until.is_none_or(|t| now >= t);
        self.next = self.initial;
        self.fast_until = Some(now + window);
        free
    }
}

/// Failures since the worker last reached a leader: logged at warn once per streak,
/// then at debug, so a worker started before its servers does not flood its log.
#[derive(Debug, Default)]
struct FailureStreak {
    failures: u32,
    since: Option<Instant>,
}

impl FailureStreak {
    fn fail(&mut self, why: &str) {
        self.failures += 1;
        if self.failures == 1 {
            self.since = Some(Instant::now());
            warn!(reason = %why, "cannot reach the leader; retrying with back-off");
        } else {
            debug!(failures = self.failures, reason = %why, "still cannot reach the leader");
        }
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            let waited = self.since.map(|s| s.elapsed()).unwrap_or_default();
            info!(
                failures = self.failures,
                waited_ms = waited.as_millis() as u64,
                "reached the leader again"
            );
        }
        self.failures = 0;
        self.since = None;
    }
}

/// This process's incarnation: pid and start time, fixed for the process's life.
pub(crate) fn incarnation() -> &'static str {
    static INCARNATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INCARNATION.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{nanos}", std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_fast_after_a_loss() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(2000));
        let seq: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert!(b.leader_lost(Duration::from_secs(60)), "the first loss retries at once");
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.next_delay(), ms(100));
        assert!(!b.leader_lost(Duration::ZERO), "a second loss within the window pauses");
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.next_delay(), ms(200));
        assert!(b.leader_lost(Duration::ZERO), "the zero window has passed");
    }

    #[test]
    fn failure_streak_counts_until_recovered() {
        let mut s = FailureStreak::default();
        s.fail("a");
        s.fail("b");
        assert_eq!(s.failures, 2);
        s.recovered();
        assert_eq!(s.failures, 0);
        assert!(s.since.is_none());
    }

    #[tokio::test]
    async fn acquire_with_no_server_fails_with_reasons() {
        let mut cfg = AgentConfig::new(vec!["127.0.0.1:1".into()], "demo", "s");
        cfg.connect_timeout = Duration::from_millis(300);
        let cfg = Arc::new(cfg);
        let outbox = Arc::new(SharedOutbox::new());
        let env = crate::executor::Env {
            http: reqwest::Client::new(),
            outbox: outbox.clone(),
            lease: Arc::new(Lease::default()),
            state_dir: None,
            incarnation: "test".into(),
        };
        let exec = Executor::new(cfg.clone(), Default::default(), env);
        let (state, _) = watch::channel(ConnectionState::Searching);
        let conn = Connection::new(cfg, outbox, exec, state, Arc::new(Lease::default()));
        let mut learned = Vec::new();
        let err = conn
            .acquire("", &mut learned)
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.contains("127.0.0.1:1"), "{err}");
    }
}
