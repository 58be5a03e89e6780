//! How Raft RPC payloads (`RaftPayload.data`) are encoded between nodes.
//!
//! Two encodings, told apart by the first byte, so a receiver reads both:
//! - **binary**: `encoding.rs`'s version byte, then MessagePack (what the log
//!   store writes). A snapshot chunk's bytes cost one to two bytes each, and
//!   an AppendEntries about half its JSON size;
//! - **JSON** (starts with `{`): what releases before it sent and read.
//!
//! A receiver answers in the encoding of the request. A sender starts with
//! binary; a peer of an earlier release refuses it with `InvalidArgument`
//! ("undecodable raft payload"), and the sender then sends that peer JSON
//! (retrying the call at once) until the peer is next unreachable (it may come
//! back upgraded). So a rolling upgrade mixes releases without a flag day.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use qron_raft_store::encoding;
use qron_raft_store::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a receiver that cannot decode a payload answers (InvalidArgument);
/// earlier releases answer a binary payload with it too.
pub const UNDECODABLE: &str = "undecodable raft payload";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Binary,
    Json,
}

impl Wire {
    /// The encoding `bytes` are in.
    pub fn of(bytes: &[u8]) -> Wire {
        if bytes.first() == Some(&b'{') {
            Wire::Json
        } else {
            Wire::Binary
        }
    }

    pub fn encode<T: Serialize + ?Sized>(self, v: &T) -> Result<Vec<u8>, String> {
        match self {
            Wire::Binary => encoding::encode(v).map_err(|e| e.to_string()),
            Wire::Json => serde_json::to_vec(v).map_err(|e| e.to_string()),
        }
    }
}

/// Decodes a payload in either encoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    encoding::decode(bytes).map_err(|e| e.to_string())
}

/// The peers known to read JSON only (earlier releases), shared by every
/// connection the network factory makes.
#[derive(Debug, Default, Clone)]
pub struct JsonPeers(Arc<Mutex<HashSet<NodeId>>>);

impl JsonPeers {
    fn with<R>(&self, f: impl FnOnce(&mut HashSet<NodeId>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The encoding to send `peer`.
    pub fn wire(&self, peer: NodeId) -> Wire {
        if self.with(|s| s.contains(&peer)) {
            Wire::Json
        } else {
            Wire::Binary
        }
    }

    /// `peer` refused a binary payload: send it JSON from now on.
    pub fn json_only(&self, peer: NodeId) -> bool {
        self.with(|s| s.insert(peer))
    }

    /// `peer` could not be reached: it may come back as another release; try binary again.
    pub fn forget(&self, peer: NodeId) {
        self.with(|s| s.remove(&peer));
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
    use qron_raft_store::{Command, Entry, TypeConfig};

    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(v: &T) -> (T, usize, usize) {
        let bin = Wire::Binary.encode(v).expect("binary");
        let json = Wire::Json.encode(v).expect("json");
        assert_eq!(Wire::of(&bin), Wire::Binary);
        assert_eq!(Wire::of(&json), Wire::Json);
        let from_json: T = decode(&json).expect("decode json");
        let from_bin: T = decode(&bin).expect("decode binary");
        // Both decode to the same value.
        assert_eq!(format!("{from_json:?}"), format!("{from_bin:?}"));
        (from_bin, bin.len(), json.len())
    }

    #[test]
    fn every_rpc_crosses_in_both_encodings_and_binary_is_smaller() {
        let entries = vec![
            Entry {
                log_id: log_id(7),
                payload: openraft::EntryPayload::Normal(Command::Expire {
                    instances: vec![],
                    logs: vec![],
                    now_ms: 1,
                }),
            },
            Entry {
                log_id: log_id(8),
                payload: openraft::EntryPayload::Blank,
            },
        ];
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(6)),
            entries,
            leader_commit: Some(log_id(6)),
        };
        let (back, bin, json) = round_trip(&append);
        assert_eq!(back.entries.len(), 2);
        assert!(bin < json, "binary {bin} bytes, JSON {json}");
        round_trip(&VoteRequest::new(Vote::new(4, 2), Some(log_id(9))));
        let chunk = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(9)),
                last_membership: StoredMembership::default(),
                snapshot_id: "snap-3-9-0".into(),
            },
            offset: 1 << 20,
            data: (0..=255u8).cycle().take(64 * 1024).collect(),
            done: false,
        };
        let (back, bin, json) = round_trip(&chunk);
        assert_eq!(back.data, chunk.data);
        // A chunk's bytes: at most two bytes each in binary, about 3.5 in JSON.
        assert!(
            bin < chunk.data.len() * 2 && json > chunk.data.len() * 3,
            "binary {bin}, JSON {json}"
        );
        // Replies, errors included.
        let r: Result<openraft::raft::VoteResponse<NodeId>, openraft::error::RaftError<NodeId>> =
            Err(openraft::error::RaftError::Fatal(openraft::error::Fatal::Stopped));
        let (back, _, _) = round_trip(&r);
        assert!(back.is_err());
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for bytes in [&b""[..], b"{", b"\x01\xff\xff", b"\x09abc"] {
            assert!(decode::<VoteRequest<NodeId>>(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn a_peer_that_refused_binary_gets_json_until_it_is_unreachable() {
        let p = JsonPeers::default();
        assert_eq!(p.wire(2), Wire::Binary);
        assert!(p.json_only(2));
        assert!(!p.json_only(2), "already known");
        assert_eq!((p.wire(2), p.wire(3)), (Wire::Json, Wire::Binary));
        p.forget(2);
        assert_eq!(p.wire(2), Wire::Binary);
    }
}
