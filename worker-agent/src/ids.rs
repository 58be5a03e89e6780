//! The typed ids the agent passes around: which instance, which attempt of it, and
//! which worker. A function that takes an [`Attempt`] cannot be handed an instance id.
//!
//! This module owns the types and their conversion to and from the wire, where the
//! protobuf messages keep plain `u64`/`u32`/`String`. It imports nothing from the
//! crate and never decides anything about the ids it carries.

use std::fmt;

use qron_proto::worker::{Dispatch, InstanceAttempt, Stop};

/// An instance's id, as the leader's state machine assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which attempt of an instance (retries raise it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One attempt of one instance: the unit a worker runs at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptKey {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its attempt number.
    pub attempt: Attempt,
}

impl AttemptKey {
    /// The key of `attempt` of `instance_id`.
    pub fn new(instance_id: InstanceId, attempt: Attempt) -> Self {
        AttemptKey { instance_id, attempt }
    }
}

impl From<&Dispatch> for AttemptKey {
    fn from(d: &Dispatch) -> Self {
        AttemptKey::new(InstanceId(d.instance_id), Attempt(d.attempt))
    }
}

impl From<&Stop> for AttemptKey {
    fn from(s: &Stop) -> Self {
        AttemptKey::new(InstanceId(s.instance_id), Attempt(s.attempt))
    }
}

impl From<AttemptKey> for InstanceAttempt {
    fn from(k: AttemptKey) -> Self {
        InstanceAttempt {
            instance_id: k.instance_id.0,
            attempt: k.attempt.0,
        }
    }
}

/// A worker's name, unique among the live workers of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(String);

impl WorkerId {
    /// A worker id with this name (checked for emptiness by `AgentConfig::validate`).
    pub fn new(name: impl Into<String>) -> Self {
        WorkerId(name.into())
    }

    /// The name, as the wire carries it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for WorkerId {
    fn from(name: String) -> Self {
        WorkerId(name)
    }
}

impl From<&str> for WorkerId {
    fn from(name: &str) -> Self {
        WorkerId(name.to_owned())
    }
}

impl From<WorkerId> for String {
    fn from(id: WorkerId) -> Self {
        id.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_keys_order_by_instance_then_attempt() {
        let k = |i, a| AttemptKey::new(InstanceId(i), Attempt(a));
        assert!(k(1, 9) < k(2, 1) && k(2, 1) < k(2, 2));
    }

    #[test]
    fn keys_convert_to_and_from_the_wire() {
        let d = Dispatch {
            instance_id: 7,
            attempt: 3,
            ..Default::default()
        };
        let key = AttemptKey::from(&d);
        assert_eq!(key, AttemptKey::new(InstanceId(7), Attempt(3)));
        assert_eq!(
            InstanceAttempt::from(key),
            InstanceAttempt {
                instance_id: 7,
                attempt: 3
            }
        );
    }
}
