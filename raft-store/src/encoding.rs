//! The byte encoding of stored records and log entries.
//!
//! Every value starts with a version byte. Version 1 is MessagePack with
//! named fields (`rmp_serde::to_vec_named`): a published, stable format,
//! self-describing (so `#[serde(default)]`, optional fields and tagged enums
//! keep working as records gain fields), about half the size of JSON. A later
//! encoding takes the next version byte, and a node reads every version it
//! knows, so a change rolls out node by node.
//!
//! Data written before this encoding (log entries and snapshot files of the
//! first releases) is JSON, which starts with `{`: it is read as such.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte of MessagePack records.
pub const V1_MSGPACK: u8 = 1;

/// Why bytes could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EncodingError {
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode a version {version} record: {reason}")]
    Decode { version: u8, reason: String },
    #[error("unknown record version {0} (written by a newer qron? upgrade this node)")]
    UnknownVersion(u8),
    #[error("empty record")]
    Empty,
}

/// Encodes `value` in the current version.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodingError> {
    let mut out = vec![V1_MSGPACK];
    rmp_serde::encode::write_named(&mut out, value).map_err(|e| EncodingError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a value written by [`encode`] in any known version, or legacy JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EncodingError> {
    match bytes.first() {
        None => Err(EncodingError::Empty),
        Some(&V1_MSGPACK) => rmp_serde::from_slice(&bytes[1..]).map_err(|e| EncodingError::Decode {
            version: V1_MSGPACK,
            reason: e.to_string(),
        }),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| EncodingError::Decode {
            version: b'{',
            reason: format!("legacy JSON: {e}"),
        }),
        Some(&v) => Err(EncodingError::UnknownVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Shape {
        Circle { r: u32 },
        Named { name: String },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        shape: Shape,
        by: BTreeMap<u32, u64>,
    }

    fn rec() -> Rec {
        Rec {
            id: 7,
            note: None,
            shape: Shape::Named { name: "x".into() },
            by: [(1, 10), (2, 20)].into(),
        }
    }

    #[test]
    fn round_trips_with_skipped_fields_and_tagged_enums() {
        let bytes = encode(&rec()).expect("encode");
        assert_eq!(bytes[0], V1_MSGPACK);
        assert_eq!(decode::<Rec>(&bytes).expect("decode"), rec());
    }

    #[test]
    fn reads_legacy_json() {
        let json = r#"{"id":7,"shape":{"type":"named","name":"x"},"by":{"1":10,"2":20}}"#;
        assert_eq!(decode::<Rec>(json.as_bytes()).expect("decode"), rec());
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert!(matches!(
            decode::<Rec>(&[9, 1, 2]),
            Err(EncodingError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<Rec>(&[]), Err(EncodingError::Empty)));
        assert!(matches!(
            decode::<Rec>(&[V1_MSGPACK, 0xc1]),
            Err(EncodingError::Decode { .. })
        ));
    }

    #[test]
    fn is_smaller_than_json() {
        let json = serde_json::to_vec(&rec()).expect("json");
        assert!(encode(&rec()).expect("encode").len() < json.len());
    }
}
