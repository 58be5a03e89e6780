//! Idempotency keys of client writes: what the state machine remembers of
//! each (rule 13, docs/rules.md; the HTTP side is in docs/api.md). `apply`'s
//! use of them is in `state/keys.rs`.
//!
//! Expiry uses only the commands' own `now_ms` (rule 1): a record lives
//! [`KEY_TTL_MS`] from the `now_ms` of the command that made it; past that, the
//! key is free again. Expired records are removed at most
//! [`PRUNE_PER_APPLY`] at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, Reply};

/// How long a key is remembered after the command that recorded it: 24 hours
/// of the proposers' clocks.
pub const KEY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// Most expired records one keyed command removes. More than one, so the
/// expired backlog shrinks while keys keep arriving.
pub const PRUNE_PER_APPLY: usize = 64;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// Longest request digest, in bytes (a SHA-256 in hex is 64).
pub const MAX_DIGEST_LEN: usize = 128;

/// Checks an idempotency key: 1 to [`MAX_KEY_LEN`] printable ASCII bytes
/// (space to `~`). The HTTP API checks the header with this too.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "an Idempotency-Key must be 1 to {MAX_KEY_LEN} bytes long, this one has {}",
            key.len()
        ));
    }
    if let Some(b) = key.bytes().find(|b| !(b' '..=b'~').contains(b)) {
        return Err(format!(
            "an Idempotency-Key must be printable ASCII (space to '~'); byte 0x{b:02x} is not"
        ));
    }
    Ok(())
}

/// What the first command under a key answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The digest of the request (route and body) the key was first used for.
    pub request_digest: String,
    /// From this `now_ms` on, the key is free again.
    pub expires_at_ms: i64,
    /// The first command's response, returned to every later use of the key.
    pub response: Result<Reply, CommandError>,
}

/// The idempotency keys as the JSON state of earlier releases held them:
/// read only by the migration of such a state (`crate::legacy`); the state
/// machine keeps each key as its own record (`state/records.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyKeys {
    records: BTreeMap<String, KeyRecord>,
}

impl IdempotencyKeys {
    /// Every record, by key.
    pub(crate) fn records(&self) -> &BTreeMap<String, KeyRecord> {
        &self.records
    }
}
