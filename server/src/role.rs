//! What this node is, decided in one pure function ([`role`]) from openraft's
//! metrics, the node's id and the leader lease. The leadership watcher
//! (`leadership.rs`) publishes the result on a watch channel; the API, `Acquire`,
//! `Connect` and `/cluster` all read that channel and never look at the metrics
//! to decide leadership themselves.
//!
//! Why a lease (rule 8, docs/rules.md): openraft 0.9 keeps saying Leader when a
//! leader is cut off from its quorum. A leader whose last quorum ack is older
//! than the lease (`election_timeout_max`) is not the leader for anyone here.

use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use qron_proto::worker::LeaderId;
use qron_raft_store::{NodeId, QronNode};

/// This node's role, as every subsystem sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This node leads, and a quorum acked it within the lease.
    Leader(LeaderId),
    /// Another node leads, as far as this node knows.
    Follower { leader: NodeId, node: QronNode },
    /// No leader is known: an election, a learner that has not heard from one,
    /// or (`cut_off`) this node is openraft's leader but has no quorum ack within the lease.
    Unknown { cut_off: bool },
}

impl Role {
    /// The leader's id, whoever it is.
    pub fn leader_id(&self, me: NodeId) -> Option<NodeId> {
        match self {
            Role::Leader(_) => Some(me),
            Role::Follower { leader, .. } => Some(*leader),
            Role::Unknown { .. } => None,
        }
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }
}

/// Decides the role from one metrics reading.
pub fn role(m: &RaftMetrics<NodeId, QronNode>, me: NodeId, lease: Duration) -> Role {
    match m.current_leader {
        Some(id) if id == me => {
            let fresh = m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= lease.as_millis() as u64);
            if m.state == ServerState::Leader && fresh {
                let lid = m.vote.leader_id();
                Role::Leader(LeaderId {
                    term: lid.term,
                    node_id: lid.node_id,
                })
            } else {
                Role::Unknown {
                    cut_off: m.state == ServerState::Leader,
                }
            }
        }
        Some(id) => match m.membership_config.membership().get_node(&id) {
            Some(node) => Role::Follower {
                leader: id,
                node: node.clone(),
            },
            None => Role::Unknown { cut_off: false },
        },
        None => Role::Unknown { cut_off: false },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::{LogId, Membership, StoredMembership, Vote};

    use super::*;

    const LEASE: Duration = Duration::from_millis(500);

    fn metrics(
        me: NodeId,
        state: ServerState,
        leader: Option<NodeId>,
        ack_ms: Option<u64>,
    ) -> RaftMetrics<NodeId, QronNode> {
        let nodes: BTreeMap<NodeId, QronNode> = (1..=3)
            .map(|i| {
                (
                    i,
                    QronNode {
                        grpc_addr: format!("127.0.0.1:{}", 7700 + i),
                    },
                )
            })
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        let mut m = RaftMetrics::new_initial(me);
        m.state = state;
        m.current_leader = leader;
        m.current_term = 4;
        m.vote = Vote::new_committed(4, leader.unwrap_or(me));
        m.millis_since_quorum_ack = ack_ms;
        m.membership_config = Arc::new(StoredMembership::new(
            Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 1)),
            membership,
        ));
        m
    }

    #[test]
    fn a_leader_with_a_fresh_quorum_ack_leads() {
        let r = role(&metrics(1, ServerState::Leader, Some(1), Some(10)), 1, LEASE);
        assert_eq!(r, Role::Leader(LeaderId { term: 4, node_id: 1 }));
        assert_eq!(r.leader_id(1), Some(1));
    }

    #[test]
    fn a_leader_past_its_lease_is_cut_off_and_names_no_leader() {
        let r = role(&metrics(1, ServerState::Leader, Some(1), Some(501)), 1, LEASE);
        assert_eq!(r, Role::Unknown { cut_off: true });
        assert_eq!(r.leader_id(1), None);
        let never_acked = role(&metrics(1, ServerState::Leader, Some(1), None), 1, LEASE);
        assert_eq!(never_acked, Role::Unknown { cut_off: true });
    }

    #[test]
    fn a_follower_names_the_leader_with_its_address() {
        let r = role(&metrics(2, ServerState::Follower, Some(3), None), 2, LEASE);
        assert_eq!(
            r,
            Role::Follower {
                leader: 3,
                node: QronNode {
                    grpc_addr: "127.0.0.1:7703".into()
                }
            }
        );
        assert!(!r.is_leader());
    }

    #[test]
    fn no_leader_or_an_unknown_one_is_unknown() {
        assert_eq!(
            role(&metrics(2, ServerState::Candidate, None, None), 2, LEASE),
            Role::Unknown { cut_off: false }
        );
        // A leader id outside the membership (a removed node) has no address to give.
        assert_eq!(
            role(&metrics(2, ServerState::Follower, Some(9), None), 2, LEASE),
            Role::Unknown { cut_off: false }
        );
        // Metrics saying "leader is me" while a follower (stale) is not leading.
        assert_eq!(
            role(&metrics(1, ServerState::Follower, Some(1), Some(1)), 1, LEASE),
            Role::Unknown { cut_off: false }
        );
    }
}
