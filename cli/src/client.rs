//! The HTTP client of the API: which node to ask, when to ask another, and how
//! an error answer becomes an error.
//!
//! Endpoints are tried in order. A node that cannot be reached is skipped and
//! the one that answered is remembered for the rest of the run. An error answer
//! is final (the cluster answered), except `503` (`no_leader`, `unavailable`):
//! a leader election may be in progress, so the other endpoints are tried and
//! then everything again, with a short backoff, for a few seconds.
//!
//! A write is sent under an `Idempotency-Key` ([`Write::Keyed`]): one fresh
//! key per command run (or the one given with `--idempotency-key`), the same on
//! every node it is sent to, so the cluster applies it at most once and a
//! repeat answers what the first answered (docs/api.md). Only such a write is
//! sent again after a failure that may have come once a node had it (a
//! timeout, a cut connection, a `503`). A write without a key
//! ([`Write::Once`]: cluster membership changes, which the cluster does not
//! record under keys) is sent to the next node only when the previous one could
//! not even be connected to.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use qron_proto::api::ErrorBody;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long `503` answers are retried, from the first attempt.
const RETRY_BUDGET: Duration = Duration::from_secs(5);
/// The first pause between rounds of `503` answers; doubled each round.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest time spent connecting to one node.
const MAX_CONNECT: Duration = Duration::from_secs(3);
/// Error messages that are not qron's JSON are cut to this many characters.
const MAX_RAW_MESSAGE: usize = 200;

/// Parses `--endpoints`: comma-separated URLs, `HOST:PORT` meaning `http://HOST:PORT`.
///
/// Returns the base URLs without a trailing slash.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>> {
    if list.trim().is_empty() {
        bail!("no endpoint given; expected URL[,URL...] such as http://127.0.0.1:7700");
    }
    list.split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                bail!("empty endpoint in {list:?}; expected URL[,URL...]");
            }
            parse_endpoint(item)
        })
        .collect()
}

fn parse_endpoint(item: &str) -> Result<String> {
    let with_scheme = if item.contains("://") {
        item.to_owned()
    } else {
        format!("http://{item}")
    };
    let url = Url::parse(&with_scheme).with_context(|| format!("endpoint {item:?} is not a valid URL"))?;
    match url.scheme() {
        "http" => {}
        "https" => bail!("endpoint {item:?}: https is not supported by qronctl (built without TLS); use http://"),
        other => bail!("endpoint {item:?}: unsupported scheme {other:?}; use http://HOST:PORT"),
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("endpoint {item:?} has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("endpoint {item:?} must not have a query or a fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// How a write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Under an idempotency key, the same on every node tried: applied at most
    /// once, so it is sent again after any failure.
    Keyed,
    /// Without a key (membership changes): sent to another node only when the
    /// previous one could not be connected to, since it may have taken effect.
    Once,
}

/// The HTTP header of a write's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A fresh idempotency key: 128 random bits, in hex.
pub fn new_key() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot make an idempotency key: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a key given with `--idempotency-key`, as the server does: 1 to 128
/// printable ASCII bytes.
pub fn check_key(key: &str) -> Result<()> {
    ensure!(
        !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| (b' '..=b'~').contains(&b)),
        "--idempotency-key must be 1 to 128 printable ASCII characters"
    );
    Ok(())
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// `bad_request`, `not_found`, `conflict`, `idempotency_key_reused`,
    /// `payload_too_large`, `no_leader`, `outcome_unknown`, `unavailable`,
    /// `internal`, or `unknown` when the body was not qron's error JSON.
    pub code: String,
    /// For people.
    pub message: String,
}

impl ApiError {
    fn from_answer(status: StatusCode, body: &[u8]) -> ApiError {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(body) {
            return ApiError {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            };
        }
        // Not qron's JSON: a proxy in the way, or not a qron node at all.
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("no message").to_owned()
        } else if text.chars().count() > MAX_RAW_MESSAGE {
            format!("{}...", text.chars().take(MAX_RAW_MESSAGE).collect::<String>())
        } else {
            text.to_owned()
        };
        ApiError {
            status: status.as_u16(),
            code: "unknown".to_owned(),
            message,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl StdError for ApiError {}

/// No node gave an answer: every endpoint was down, refused the connection or
/// timed out. Unlike an [`ApiError`], trying again later may work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// `URL: why`, one per endpoint tried.
    pub nodes: Vec<String>,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no qron node could be reached ({}); check --endpoints or QRON_ENDPOINTS",
            self.nodes.join("; ")
        )
    }
}

impl StdError for Unreachable {}

/// One API request, as sent to each endpoint in turn.
struct Call<'a> {
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    body: Option<Vec<u8>>,
    /// A write's idempotency key, sent with every attempt.
    key: Option<String>,
}

impl Call<'_> {
    /// Whether it may be sent again after it may have reached a node: reads,
    /// and writes under a key (the only writes that are).
    fn may_resend(&self) -> bool {
        self.method == Method::GET || self.key.is_some()
    }

    /// `error`, with what to do when this write may have been applied.
    fn unknown_outcome(&self, error: anyhow::Error) -> anyhow::Error {
        match &self.key {
            Some(key) => error.context(format!(
                "{} {} may or may not have been applied; run the same command again with                  --idempotency-key {key} to apply it at most once and see its answer",
                self.method.as_str(),
                self.path
            )),
            None => error,
        }
    }
}

/// A client of the API of a set of nodes; see the module doc for the failover rules.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    retry_budget: Duration,
    /// The key of this run's write, if given (`--idempotency-key`); else each write makes one.
    key: Option<String>,
}

impl Client {
    /// A client of `endpoints` (from [`parse_endpoints`]) giving up on a node after `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Client> {
        ensure!(!endpoints.is_empty(), "no endpoint given");
        // Connecting gets a shorter limit than the whole request, so that a node
        // that is down is told apart from one that is slow to answer (see `Write`).
        let connect = (timeout * 3 / 4).clamp(Duration::from_millis(1), MAX_CONNECT);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect)
            .user_agent(concat!("qronctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            retry_budget: RETRY_BUDGET,
            key: None,
        })
    }

    /// Sends keyed writes under `key` instead of a fresh key each (to repeat a
    /// write whose outcome is unknown).
    pub fn with_key(mut self, key: String) -> Result<Client> {
        check_key(&key)?;
        self.key = Some(key);
        Ok(self)
    }

    fn key_for(&self, write: Write) -> Result<Option<String>> {
        match (write, &self.key) {
            (Write::Once, _) => Ok(None),
            (Write::Keyed, Some(key)) => Ok(Some(key.clone())),
            (Write::Keyed, None) => new_key().map(Some),
        }
    }

    /// `GET path?query`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let call = Call {
            method: Method::GET,
            path,
            query,
            body: None,
            key: None,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, write: Write) -> Result<T> {
        let call = Call {
            method: Method::POST,
            path,
            query: &[],
            body: Some(to_json(body)?),
            key: self.key_for(write)?,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `POST path` without a body, decoded; under a key.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let call = Call {
            method: Method::POST,
            path,
            query: &[],
            body: None,
            key: self.key_for(Write::Keyed)?,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `PUT path` with a JSON body, decoded; under a key.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let call = Call {
            method: Method::PUT,
            path,
            query: &[],
            body: Some(to_json(body)?),
            key: self.key_for(Write::Keyed)?,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `DELETE path`, decoded; `None` when the answer has no body (`204`).
    pub async fn delete<T: DeserializeOwned>(&self, path: &str, write: Write) -> Result<Option<T>> {
        let call = Call {
            method: Method::DELETE,
            path,
            query: &[],
            body: None,
            key: self.key_for(write)?,
        };
        let body = self.call(&call).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        decode(&call, &body).map(Some)
    }

    /// Sends `call` until a node gives an answer other than `503`; returns the
    /// body of a success, or the error.
    async fn call(&self, call: &Call<'_>) -> Result<Vec<u8>> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        // Whether a node may have received the request (a write then may have been applied).
        let mut maybe_received = false;
        loop {
            let first = self.preferred.load(Ordering::Relaxed);
            let mut unavailable: Option<ApiError> = None;
            let mut down: Vec<String> = Vec::new();
            for k in 0..self.endpoints.len() {
                let i = (first + k) % self.endpoints.len();
                let base = &self.endpoints[i];
                let url = request_url(base, call.path, call.query)?;
                match self.attempt(url, call).await {
                    Ok((status, body)) if status == StatusCode::SERVICE_UNAVAILABLE && call.may_resend() => {
                        let error = ApiError::from_answer(status, &body);
                        // `no_leader` says the write was not applied; `outcome_unknown` and the rest do not.
                        maybe_received |= error.code != "no_leader";
                        unavailable = Some(error);
                    }
                    Ok((status, body)) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        if status.is_success() {
                            return Ok(body);
                        }
                        return Err(ApiError::from_answer(status, &body).into());
                    }
                    Err(e) if call.may_resend() || e.is_connect() => {
                        maybe_received |= !e.is_connect();
                        down.push(format!("{base}: {}", describe(&e)));
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!(
                            "{} {} on {base} failed after the node may have received it; it was not sent \
                             again because it may already have taken effect: check before retrying",
                            call.method.as_str(),
                            call.path
                        )));
                    }
                }
            }
            let error: anyhow::Error = match unavailable {
                // Some node is up but has no leader: an election may be under way.
                Some(_) if started.elapsed() + backoff <= self.retry_budget => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Some(error) => error.into(),
                None => Unreachable { nodes: down }.into(),
            };
            return Err(if maybe_received {
                call.unknown_outcome(error)
            } else {
                error
            });
        }
    }

    /// One request to one node: the status and body, or why there is none.
    async fn attempt(&self, url: Url, call: &Call<'_>) -> Result<(StatusCode, Vec<u8>), reqwest::Error> {
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.clone());
        }
        if let Some(key) = &call.key {
            request = request.header(IDEMPOTENCY_HEADER, key);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok((status, body.to_vec()))
    }
}

fn to_json<B: Serialize>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).context("cannot encode the request as JSON")
}

fn decode<T: DeserializeOwned>(call: &Call<'_>, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).with_context(|| {
        format!(
            "the answer to {} {} is not what this qronctl expects (a server of another version?)",
            call.method.as_str(),
            call.path
        )
    })
}

fn request_url(base: &str, path: &str, query: &[(&str, &str)]) -> Result<Url> {
    let mut url = Url::parse(&format!("{base}{path}")).with_context(|| format!("bad URL {base}{path}"))?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in query {
            pairs.append_pair(key, value);
        }
    }
    Ok(url)
}

/// Why a node gave no answer, in a few words: `timed out`, or the innermost
/// cause (`Connection refused (os error 111)`).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn StdError = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(
            parse_endpoints("127.0.0.1:7700").expect("valid"),
            vec!["http://127.0.0.1:7700"]
        );
        assert_eq!(
            parse_endpoints("http://node-1:7700/, node-2:7701 ,http://10.0.0.3:80/qron/").expect("valid"),
            vec!["http://node-1:7700", "http://node-2:7701", "http://10.0.0.3/qron"]
        );
    }

    #[test]
    fn empty_and_bad_endpoints_are_refused() {
        for bad in [
            "",
            "  ",
            "a:1,,b:2",
            "a:1,",
            "https://secure:443",
            "ftp://x:21",
            "host:99999",
            "http://",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad:?} was accepted");
        }
        let err = parse_endpoints("https://secure:443").expect_err("no TLS");
        assert!(err.to_string().contains("https is not supported"), "{err}");
        let err = parse_endpoints("").expect_err("empty");
        assert!(err.to_string().contains("no endpoint given"), "{err}");
    }

    #[test]
    fn error_answers_read_the_json_body() {
        let body = br#"{"error":{"code":"not_found","message":"job 9 not found"}}"#;
        let err = ApiError::from_answer(StatusCode::NOT_FOUND, body);
        assert_eq!(err.to_string(), "job 9 not found (not_found, HTTP 404)");
        let err = ApiError::from_answer(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(err.to_string(), "Bad Gateway (unknown, HTTP 502)");
    }

    #[test]
    fn query_values_are_encoded() {
        let url = request_url("http://h:1", "/api/v1/jobs", &[("app", "a b&c"), ("stale", "true")]).expect("url");
        assert_eq!(url.as_str(), "http://h:1/api/v1/jobs?app=a+b%26c&stale=true");
    }

    /// A one-request-per-connection HTTP server answering `answers` in turn,
    /// then closing; returns its URL and how many requests it got.
    async fn fake_node(answers: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
        let (url, hits, _) = recording_node(answers).await;
        (url, hits)
    }

    /// The `Idempotency-Key` of each request a node got (`None`: it had none).
    type Keys = Arc<std::sync::Mutex<Vec<Option<String>>>>;

    /// [`fake_node`], also recording each request's idempotency key. A status
    /// of 0 means: read the request and never answer.
    async fn recording_node(answers: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>, Keys) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let keys: Keys = Arc::default();
        let seen = keys.clone();
        tokio::spawn(async move {
            let mut silent = Vec::new();
            for (status, body) in answers {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut request: Vec<u8> = Vec::new();
                let mut chunk = [0_u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("idempotency-key:"))
                    .map(|k| k.trim().to_owned());
                seen.lock().expect("keys").push(key);
                if status == 0 {
                    // Keep the connection open: the client times out.
                    silent.push(socket);
                    continue;
                }
                // A 204 has no body and must not announce one.
                let length = if status == 204 {
                    String::new()
                } else {
                    format!("content-length: {}\r\n", body.len())
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{length}\
                     connection: close\r\n\r\n{body}"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
            if !silent.is_empty() {
                // Hold the unanswered connections open until the test ends.
                std::future::pending::<()>().await;
            }
        });
        (url, hits, keys)
    }

    /// An address nothing listens on.
    fn dead_node() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        url
    }

    const APPS: &str = r#"{"apps":[]}"#;
    const NO_LEADER: &str = r#"{"error":{"code":"no_leader","message":"no leader is known right now"}}"#;

    #[tokio::test]
    async fn a_dead_node_is_skipped_and_the_live_one_remembered() {
        let (live, hits) = fake_node(vec![(200, APPS), (200, APPS)]).await;
        let client = Client::new(vec![dead_node(), live], Duration::from_secs(5)).expect("client");
        let list: qron_proto::api::AppList = client.get("/api/v1/apps", &[]).await.expect("answer");
        assert!(list.apps.is_empty());
        assert_eq!(client.preferred.load(Ordering::SeqCst), 1);
        let _: qron_proto::api::AppList = client.get("/api/v1/apps", &[]).await.expect("answer");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_node_reachable_names_them() {
        let dead = dead_node();
        let client = Client::new(vec![dead.clone()], Duration::from_secs(5)).expect("client");
        let err = client
            .get::<serde_json::Value>("/api/v1/apps", &[])
            .await
            .expect_err("down");
        let text = format!("{err:#}");
        assert!(
            text.contains("no qron node could be reached") && text.contains(&dead),
            "{text}"
        );
        assert!(
            err.downcast_ref::<Unreachable>().is_some(),
            "typed so callers can retry later"
        );
    }

    #[tokio::test]
    async fn no_leader_is_retried_until_a_leader_answers() {
        let (node, hits) = fake_node(vec![(503, NO_LEADER), (503, NO_LEADER), (200, APPS)]).await;
        let client = Client::new(vec![node], Duration::from_secs(5)).expect("client");
        let _: qron_proto::api::AppList = client.get("/api/v1/apps", &[]).await.expect("answer");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_leader_for_too_long_is_the_error() {
        let (node, hits) = fake_node(vec![(503, NO_LEADER); 50]).await;
        let mut client = Client::new(vec![node], Duration::from_secs(5)).expect("client");
        client.retry_budget = Duration::from_millis(250);
        let err = client
            .get::<serde_json::Value>("/api/v1/apps", &[])
            .await
            .expect_err("no leader");
        let api = err.downcast_ref::<ApiError>().expect("an API error");
        assert_eq!(api.status, 503);
        assert_eq!(api.code, "no_leader");
        assert!(hits.load(Ordering::SeqCst) >= 2, "retried");
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let not_found = r#"{"error":{"code":"not_found","message":"job 9 not found"}}"#;
        let (first, first_hits) = fake_node(vec![(404, not_found)]).await;
        let (second, second_hits) = fake_node(vec![(200, "{}")]).await;
        let client = Client::new(vec![first, second], Duration::from_secs(5)).expect("client");
        let err = client
            .get::<serde_json::Value>("/api/v1/jobs/9", &[])
            .await
            .expect_err("not found");
        assert_eq!(err.to_string(), "job 9 not found (not_found, HTTP 404)");
        assert_eq!(first_hits.load(Ordering::SeqCst), 1);
        assert_eq!(second_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_empty_delete_answer_is_none() {
        let (node, _) = fake_node(vec![(204, "")]).await;
        let client = Client::new(vec![node], Duration::from_secs(5)).expect("client");
        let answer: Option<serde_json::Value> = client.delete("/api/v1/jobs/9", Write::Keyed).await.expect("deleted");
        assert_eq!(answer, None);
    }

    const CREATED: &str = r#"{"name":"demo","created_at_ms":1}"#;

    fn keys_of(keys: &Keys) -> Vec<Option<String>> {
        keys.lock().expect("keys").clone()
    }

    #[tokio::test]
    async fn a_write_is_sent_again_after_a_503_under_the_same_key() {
        let (first, _, first_keys) = recording_node(vec![(503, NO_LEADER)]).await;
        let (second, _, second_keys) = recording_node(vec![(201, CREATED)]).await;
        let client = Client::new(vec![first, second], Duration::from_secs(5)).expect("client");
        let _: serde_json::Value = client
            .post("/api/v1/apps", &serde_json::json!({"name": "demo"}), Write::Keyed)
            .await
            .expect("created on the second node");
        let (a, b) = (keys_of(&first_keys), keys_of(&second_keys));
        assert_eq!(a.len(), 1);
        let key = a[0].clone().expect("the write carries a key");
        assert_eq!(key.len(), 32);
        assert_eq!(b, vec![Some(key)], "the same key on the next node");
    }

    #[tokio::test]
    async fn a_write_that_timed_out_goes_to_the_next_node_under_the_same_key() {
        let (silent, _, silent_keys) = recording_node(vec![(0, "")]).await;
        let (live, _, live_keys) = recording_node(vec![(201, CREATED)]).await;
        let client = Client::new(vec![silent, live], Duration::from_millis(300)).expect("client");
        let _: serde_json::Value = client
            .post("/api/v1/jobs/1/run", &serde_json::json!({}), Write::Keyed)
            .await
            .expect("answered by the second node");
        let key = keys_of(&silent_keys)[0].clone().expect("a key");
        assert_eq!(keys_of(&live_keys), vec![Some(key)]);
    }

    #[tokio::test]
    async fn every_write_has_its_own_key_unless_one_is_given() {
        let (node, _, keys) = recording_node(vec![(201, CREATED); 4]).await;
        let client = Client::new(vec![node.clone()], Duration::from_secs(5)).expect("client");
        for _ in 0..2 {
            let _: serde_json::Value = client.post_empty("/api/v1/jobs/1/run").await.expect("ok");
        }
        let seen = keys_of(&keys);
        assert!(seen[0].is_some() && seen[1].is_some() && seen[0] != seen[1], "{seen:?}");
        let given = Client::new(vec![node], Duration::from_secs(5))
            .expect("client")
            .with_key("retry-of-run-7".into())
            .expect("a valid key");
        let _: serde_json::Value = given.post_empty("/api/v1/jobs/1/run").await.expect("ok");
        let _: serde_json::Value = given.get("/api/v1/apps", &[]).await.expect("ok");
        assert_eq!(
            keys_of(&keys)[2..],
            [Some("retry-of-run-7".to_owned()), None],
            "reads carry none"
        );
        assert!(Client::new(vec![dead_node()], Duration::from_secs(1))
            .expect("client")
            .with_key("é".into())
            .is_err());
    }

    #[tokio::test]
    async fn a_write_without_a_key_is_not_sent_again_after_a_503() {
        let (first, _, first_keys) = recording_node(vec![(503, NO_LEADER)]).await;
        let (second, second_hits) = fake_node(vec![(200, "{}")]).await;
        let client = Client::new(vec![first, second], Duration::from_secs(5)).expect("client");
        let err = client
            .post::<_, serde_json::Value>("/api/v1/cluster/nodes", &serde_json::json!({"id": 4}), Write::Once)
            .await
            .expect_err("the 503 is the answer");
        assert_eq!(err.downcast_ref::<ApiError>().map(|e| e.status), Some(503), "{err:#}");
        assert_eq!(keys_of(&first_keys), vec![None]);
        assert_eq!(second_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_unknown_outcome_names_the_key_to_send_it_again_with() {
        let unknown = r#"{"error":{"code":"outcome_unknown","message":"no answer in time","idempotency_key":"k"}}"#;
        let (node, hits, keys) = recording_node(vec![(503, unknown); 20]).await;
        let mut client = Client::new(vec![node], Duration::from_secs(5)).expect("client");
        client.retry_budget = Duration::from_millis(250);
        let err = client
            .post::<_, serde_json::Value>("/api/v1/jobs/1/run", &serde_json::json!({}), Write::Keyed)
            .await
            .expect_err("never answered");
        assert!(hits.load(Ordering::SeqCst) >= 2, "sent again");
        let seen = keys_of(&keys);
        let key = seen[0].clone().expect("a key");
        assert!(seen.iter().all(|k| k.as_deref() == Some(key.as_str())), "{seen:?}");
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("--idempotency-key {key}")) && text.contains("may or may not have been applied"),
            "{text}"
        );
    }
}
