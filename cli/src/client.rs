//! The HTTP client of the API: which node to ask, when to ask another, and how
//! an error answer becomes an error.
//!
//! Endpoints are tried in order. A node that cannot be reached is skipped and
//! the one that answered is remembered for the rest of the run. An error answer
//! is final (the cluster answered), except `503` (`no_leader`, `unavailable`):
//! a leader election may be in progress, so the other endpoints are tried and
//! then everything again, with a short backoff, for a few seconds.
//!
//! It must never send a request twice when the first may have taken effect: a
//! request that is not safe to repeat ([`Replay::Unsafe`]) is only sent to the
//! next node when the previous one could not even be connected to.

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

/// Whether a request may be sent again after a failure that may have happened
/// once the server had it (a timeout, a connection cut mid-answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Reads, and writes that give the same result when repeated.
    Safe,
    /// Writes that would act twice (create a second job) or answer misleadingly
    /// (`not_found` for a delete that worked) if repeated.
    Unsafe,
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// `bad_request`, `not_found`, `conflict`, `no_leader`, `unavailable`,
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
    replay: Replay,
}

/// A client of the API of a set of nodes; see the module doc for the failover rules.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    retry_budget: Duration,
}

impl Client {
    /// A client of `endpoints` (from [`parse_endpoints`]) giving up on a node after `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Client> {
        ensure!(!endpoints.is_empty(), "no endpoint given");
        // Connecting gets a shorter limit than the whole request, so that a node
        // that is down is told apart from one that is slow to answer (see `Replay`).
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
        })
    }

    /// `GET path?query`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        let call = Call {
            method: Method::GET,
            path,
            query,
            body: None,
            replay: Replay::Safe,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, replay: Replay) -> Result<T> {
        let call = Call {
            method: Method::POST,
            path,
            query: &[],
            body: Some(to_json(body)?),
            replay,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `POST path` without a body, decoded.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str, replay: Replay) -> Result<T> {
        let call = Call {
            method: Method::POST,
            path,
            query: &[],
            body: None,
            replay,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `PUT path` with a JSON body, decoded. A PUT is safe to repeat.
    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let call = Call {
            method: Method::PUT,
            path,
            query: &[],
            body: Some(to_json(body)?),
            replay: Replay::Safe,
        };
        decode(&call, &self.call(&call).await?)
    }

    /// `DELETE path`, decoded; `None` when the answer has no body (`204`).
    pub async fn delete<T: DeserializeOwned>(&self, path: &str, replay: Replay) -> Result<Option<T>> {
        let call = Call {
            method: Method::DELETE,
            path,
            query: &[],
            body: None,
            replay,
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
        loop {
            let first = self.preferred.load(Ordering::Relaxed);
            let mut unavailable: Option<ApiError> = None;
            let mut down: Vec<String> = Vec::new();
            for k in 0..self.endpoints.len() {
                let i = (first + k) % self.endpoints.len();
                let base = &self.endpoints[i];
                let url = request_url(base, call.path, call.query)?;
                match self.attempt(url, call).await {
                    Ok((status, body)) if status == StatusCode::SERVICE_UNAVAILABLE => {
                        unavailable = Some(ApiError::from_answer(status, &body));
                    }
                    Ok((status, body)) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        if status.is_success() {
                            return Ok(body);
                        }
                        return Err(ApiError::from_answer(status, &body).into());
                    }
                    Err(e) if call.replay == Replay::Safe || e.is_connect() => {
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
            match unavailable {
                // Some node is up but has no leader: an election may be under way.
                Some(_) if started.elapsed() + backoff <= self.retry_budget => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Some(error) => return Err(error.into()),
                None => return Err(Unreachable { nodes: down }.into()),
            }
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
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
        });
        (url, hits)
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
        let answer: Option<serde_json::Value> = client.delete("/api/v1/jobs/9", Replay::Unsafe).await.expect("deleted");
        assert_eq!(answer, None);
    }
}
