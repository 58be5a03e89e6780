//! The `Idempotency-Key` header of the API's writes (docs/api.md).
//!
//! [`layer`] checks the header of every write under `/api/v1` (400 unless it is
//! 1 to 128 printable ASCII bytes) and, when there is one, puts the key and the
//! digest of the request (method, path and query, body) in the request's
//! extensions as a [`RequestKey`]. Every handler that proposes a client's write
//! takes the [`Idem`] extractor and hands it to `ApiState::propose`, which
//! wraps the command in `Command::Keyed`; the state machine does the rest
//! (raft-store's `state/keys.rs`). The forwarding middleware makes a key
//! ([`new_key`]) for a write that comes without one, so that it can send it
//! to the leader again without applying it twice.
//!
//! Never reads the replicated state: whether a key was seen is decided only in
//! `apply`, where every node decides it the same way.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri};
use qron_raft_store::idempotency::validate_key;
use qron_raft_store::Command;
use sha2::{Digest, Sha256};

use super::error::ApiError;
pub use crate::raft::IDEMPOTENCY_HEADER;

/// A write's idempotency key and the digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub key: String,
    /// [`request_digest`] of the request.
    pub digest: String,
}

/// Whether `method` writes (and so may carry a key).
pub fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// The request's key: `None` without the header, an error for a bad one or for several.
pub fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    let key = std::str::from_utf8(value.as_bytes())
        .map_err(|_| ApiError::BadRequest("an Idempotency-Key must be printable ASCII".into()))?;
    validate_key(key).map_err(ApiError::BadRequest)?;
    Ok(Some(key.to_owned()))
}

/// The path and query of `uri`, as the digest and the forwarder see it.
pub fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |p| p.as_str())
}

/// SHA-256 (hex) of the method, the path and query, and the body: what a key
/// is bound to. A retry sends the same bytes; another request under the same
/// key is refused (`idempotency_key_reused`).
pub fn request_digest(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b" ");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// A fresh key: 128 random bits from the operating system, in hex.
pub fn new_key() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("cannot make an idempotency key (no randomness): {e}")))?;
    Ok(hex::encode(bytes))
}

/// Checks the key of a write under `/api/v1` and records it with the
/// request's digest (see the module doc). `max_body` bounds the body read.
pub async fn layer(State(max_body): State<usize>, req: Request, next: Next) -> Response {
    if !(is_write(req.method()) && req.uri().path().starts_with("/api/v1/")) {
        return next.run(req).await;
    }
    let key = match header_key(req.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    let (mut parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(e) => return body_error(max_body, e).into_response(),
    };
    let digest = request_digest(&parts.method, path_and_query(&parts.uri), &body);
    parts.extensions.insert(RequestKey { key, digest });
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// The answer to a body that could not be read whole.
pub fn body_error(max_body: usize, e: axum::Error) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "cannot read the request body (at most {} MiB): {e}",
        max_body / (1024 * 1024)
    ))
}

/// Extractor: the write's [`RequestKey`], if it came with one.
#[derive(Debug, Clone, Default)]
pub struct Idem(pub Option<RequestKey>);

impl Idem {
    /// `cmd`, under this request's key if it has one, proposed at `now_ms`.
    pub fn wrap(&self, cmd: Command, now_ms: i64) -> Command {
        match &self.0 {
            None => cmd,
            Some(k) => Command::Keyed {
                key: k.key.clone(),
                request_digest: k.digest.clone(),
                now_ms,
                command: Box::new(cmd),
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Idem {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Idem(parts.extensions.get::<RequestKey>().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IDEMPOTENCY_HEADER, HeaderValue::from_bytes(v).expect("header value"));
        }
        h
    }

    #[test]
    fn the_header_is_optional_checked_and_single() {
        assert_eq!(header_key(&headers(&[])).expect("none"), None);
        assert_eq!(
            header_key(&headers(&[b"run 42 #1"])).expect("fine"),
            Some("run 42 #1".to_owned())
        );
        for bad in [&b"\xc3\xa9t\xc3\xa9"[..], &b"tab\there"[..], &[b'k'; 129][..]] {
            let e = header_key(&headers(&[bad])).expect_err("refused");
            assert!(matches!(e, ApiError::BadRequest(_)), "{e:?}");
            assert!(e.to_string().contains("Idempotency-Key"), "{e}");
        }
        let e = header_key(&headers(&[b"a", b"b"])).expect_err("two");
        assert!(e.to_string().contains("not several"), "{e}");
    }

    #[test]
    fn the_digest_binds_method_route_and_body() {
        let d = request_digest(&Method::POST, "/api/v1/jobs/1/run", b"{}");
        assert_eq!(d.len(), 64);
        assert_eq!(d, request_digest(&Method::POST, "/api/v1/jobs/1/run", b"{}"));
        assert_ne!(d, request_digest(&Method::POST, "/api/v1/jobs/2/run", b"{}"));
        assert_ne!(d, request_digest(&Method::POST, "/api/v1/jobs/1/run", b"{ }"));
        assert_ne!(d, request_digest(&Method::PUT, "/api/v1/jobs/1/run", b"{}"));
    }

    #[test]
    fn new_keys_are_valid_and_differ() {
        let (a, b) = (new_key().expect("key"), new_key().expect("key"));
        assert_eq!(a.len(), 32);
        assert!(validate_key(&a).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn a_keyed_request_wraps_its_command() {
        let cmd = Command::DeleteJob {
            id: qron_raft_store::JobId(3),
        };
        assert_eq!(Idem(None).wrap(cmd.clone(), 5), cmd);
        let k = Idem(Some(RequestKey {
            key: "k".into(),
            digest: "d".into(),
        }));
        assert_eq!(
            k.wrap(cmd.clone(), 5),
            Command::Keyed {
                key: "k".into(),
                request_digest: "d".into(),
                now_ms: 5,
                command: Box::new(cmd)
            }
        );
    }
}
