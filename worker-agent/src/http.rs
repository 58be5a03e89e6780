//! The HTTP processor: one request per instance; success when the answer has the
//! expected status.
//!
//! This module owns the request and what is logged about it. It never retries (the
//! job's retry policy does, as a new attempt) and speaks plain HTTP only: the worker's
//! HTTP client is built without TLS.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

use crate::processor::{ProcessResult, TaskContext};

/// Per-call timeout when the instance has none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of the answer's body goes into the result text.
const RESULT_BODY_BYTES: usize = 1024;

/// An HTTP call, as the job's `Processor::Http` describes it.
#[derive(Debug, Clone)]
pub(crate) struct HttpCall {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
    pub(crate) expected_status: u16,
}

/// Makes the call, logging the request, the status and the body; the result text is
/// `HTTP <status>` and the start of the body.
pub(crate) async fn run_http(client: &reqwest::Client, call: HttpCall, ctx: &TaskContext) -> ProcessResult {
    let method = match Method::from_bytes(call.method.trim().to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return fail(ctx, format!("invalid HTTP method {:?}", call.method)),
    };
    let timeout = ctx.timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_TIMEOUT);
    ctx.logger.log(format!("{method} {}", call.url));
    let mut request = client.request(method, &call.url).timeout(timeout);
    for (name, value) in &call.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if !call.body.is_empty() {
        request = request.body(call.body);
    }

    let answer = tokio::select! {
        r = request.send() => r,
        _ = ctx.cancel.cancelled() => {
            let reason = ctx.cancel_reason().unwrap_or_else(|| "stopped".to_owned());
            return ProcessResult::failed(reason);
        }
    };
    let response = match answer {
        Ok(r) => r,
        Err(e) => return fail(ctx, format!("request failed: {}", error_chain(&e))),
    };
    let status = response.status().as_u16();
    let body = tokio::select! {
        b = response.bytes() => b,
        _ = ctx.cancel.cancelled() => {
            let reason = ctx.cancel_reason().unwrap_or_else(|| "stopped".to_owned());
            return ProcessResult::failed(reason);
        }
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return fail(
                ctx,
                format!("HTTP {status}, reading the body failed: {}", error_chain(&e)),
            )
        }
    };
    ctx.logger.log(format!("HTTP {status}, {} bytes", body.len()));
    let text = String::from_utf8_lossy(&body);
    for line in text.lines() {
        ctx.logger.log(line);
    }
    let message = if body.is_empty() {
        format!("HTTP {status}")
    } else {
        let head = String::from_utf8_lossy(&body[..body.len().min(RESULT_BODY_BYTES)]);
        format!("HTTP {status}: {head}")
    };
    if status == call.expected_status {
        ProcessResult::ok(message)
    } else {
        ProcessResult::failed(format!("{message} (expected {})", call.expected_status))
    }
}

fn fail(ctx: &TaskContext, message: String) -> ProcessResult {
    ctx.logger.log(&message);
    ProcessResult::failed(message)
}

/// reqwest's top-level error says little ("error sending request"); its sources say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot HTTP server answering `status` with `body`.
    async fn serve_once(status: u16, body: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{addr}/hook")
    }

    fn call(url: String, expected_status: u16) -> HttpCall {
        HttpCall {
            method: "post".into(),
            url,
            headers: BTreeMap::from([("x-test".to_owned(), "1".to_owned())]),
            body: "{}".into(),
            expected_status,
        }
    }

    #[tokio::test]
    async fn expected_status_succeeds_and_body_is_logged() {
        let url = serve_once(200, "line one\nline two").await;
        let ctx = TaskContext::detached("");
        let r = run_http(&reqwest::Client::new(), call(url, 200), &ctx).await;
        assert!(r.success, "{r:?}");
        assert_eq!(r.message, "HTTP 200: line one\nline two");
        let log = ctx.logger.unsent();
        assert!(log.contains("line two\n"), "{log}");
    }

    #[tokio::test]
    async fn other_status_fails() {
        let url = serve_once(500, "boom").await;
        let ctx = TaskContext::detached("");
        let r = run_http(&reqwest::Client::new(), call(url, 200), &ctx).await;
        assert!(!r.success);
        assert!(r.message.starts_with("HTTP 500: boom"), "{}", r.message);
    }
}
