//! The fencing decisions of rule 4 (docs/rules.md), as a pure struct: which leader's orders
//! this worker still obeys, and which `(instance_id, attempt)` it has already taken.
//!
//! This module owns the decision only. It never runs, spawns or sends anything. The
//! highest leader id only rises. An accepted attempt is refused again for as long
//! as it could be re-sent: while it is held, and for [`FORGET_AFTER`] after the
//! leader acknowledged its final report (rule 12: bounded like the history, at
//! most [`MAX_FINISHED`] finished attempts remembered). Forgetting then is safe: a
//! committed final report makes the attempt terminal, so no leader whose id this
//! worker has not already surpassed can dispatch it again (a later leader
//! dispatches only the current attempt of an unfinished instance; an earlier one
//! is refused as stale, since the ack came from a leader at least as high).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use qron_proto::worker::LeaderId;

use crate::ids::AttemptKey;

/// openraft's leader id, ordered as openraft orders it: by term, then node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderKey {
    /// Raft term.
    pub term: u64,
    /// The leader's node id.
    pub node_id: u64,
}

impl From<&LeaderId> for LeaderKey {
    fn from(l: &LeaderId) -> Self {
        LeaderKey {
            term: l.term,
            node_id: l.node_id,
        }
    }
}

impl From<LeaderKey> for LeaderId {
    fn from(l: LeaderKey) -> Self {
        LeaderId {
            term: l.term,
            node_id: l.node_id,
        }
    }
}

/// What to do with a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run it.
    Accept,
    /// It carries no leader id, so it cannot be fenced: refuse it.
    NoLeader,
    /// It comes from a leader lower than the highest seen: a deposed leader.
    StaleLeader { highest: LeaderKey },
    /// This attempt was accepted before (a re-sent dispatch): never run it twice.
    Duplicate,
}

/// How long an attempt is still refused after its final report was acknowledged.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Finished attempts remembered at most (the oldest are forgotten first).
pub(crate) const MAX_FINISHED: usize = 100_000;

/// The fencing state of one worker process.
#[derive(Debug, Default)]
pub(crate) struct Fence {
    highest: Option<LeaderKey>,
    /// Every attempt taken and not yet forgotten.
    accepted: HashSet<AttemptKey>,
    /// Attempts whose final report was acknowledged, oldest first, with when.
    finished: VecDeque<(Instant, AttemptKey)>,
    /// Attempts in `finished` (an attempt is finished once).
    finished_set: HashMap<AttemptKey, Instant>,
}

impl Fence {
    /// The highest leader id seen so far.
    pub(crate) fn highest(&self) -> Option<LeaderKey> {
        self.highest
    }

    /// Notes a leader id; returns false (and changes nothing) if it is lower than the
    /// highest seen, i.e. it belongs to a deposed leader.
    pub(crate) fn observe(&mut self, leader: LeaderKey) -> bool {
        match self.highest {
            Some(h) if leader < h => false,
            _ => {
                self.highest = Some(leader);
                true
            }
        }
    }

    /// Decides on a dispatch; on `Accept` the attempt is recorded and the leader id raised.
    pub(crate) fn admit_dispatch(&mut self, leader: Option<LeaderKey>, key: AttemptKey) -> Admission {
        let Some(leader) = leader else {
            return Admission::NoLeader;
        };
        if let Some(highest) = self.highest.filter(|h| leader < *h) {
            return Admission::StaleLeader { highest };
        }
        if !self.accepted.insert(key) {
            return Admission::Duplicate;
        }
        self.highest = Some(leader);
        Admission::Accept
    }

    /// Records `key` as taken without running it (a stop arrived before its dispatch):
    /// a later dispatch of it is a `Duplicate`. False if it was taken already.
    pub(crate) fn tombstone(&mut self, key: AttemptKey) -> bool {
        self.accepted.insert(key)
    }

    /// The leader acknowledged `key`'s final report at `now`: it is forgotten
    /// [`FORGET_AFTER`] later, or sooner when more than [`MAX_FINISHED`] are remembered.
    pub(crate) fn finished(&mut self, key: AttemptKey, now: Instant) {
        if self.accepted.contains(&key) && self.finished_set.insert(key, now).is_none() {
            self.finished.push_back((now, key));
        }
        self.forget(now);
    }

    /// Forgets finished attempts past their time or beyond the count.
    pub(crate) fn forget(&mut self, now: Instant) {
        while let Some((at, key)) = self.finished.front().copied() {
            let expired = now.saturating_duration_since(at) >= FORGET_AFTER;
            if !expired && self.finished.len() <= MAX_FINISHED {
                break;
            }
            self.finished.pop_front();
            self.finished_set.remove(&key);
            self.accepted.remove(&key);
        }
    }

    /// Attempts remembered (for tests and the bound).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.accepted.len()
    }

    /// Whether a stop from `leader` is obeyed (raising the highest leader id if so).
    pub(crate) fn admit_stop(&mut self, leader: Option<LeaderKey>) -> bool {
        match leader {
            Some(l) => self.observe(l),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, InstanceId};

    fn leader(term: u64, node_id: u64) -> Option<LeaderKey> {
        Some(LeaderKey { term, node_id })
    }

    #[test]
    fn a_finished_attempt_is_refused_until_forgotten_and_the_set_stays_bounded() {
        let mut f = Fence::default();
        let t0 = Instant::now();
        assert_eq!(f.admit_dispatch(leader(1, 1), key(1, 1)), Admission::Accept);
        f.finished(key(1, 1), t0);
        // Re-sent within the window: still a duplicate.
        f.forget(t0 + FORGET_AFTER - Duration::from_secs(1));
        assert_eq!(f.admit_dispatch(leader(1, 1), key(1, 1)), Admission::Duplicate);
        f.forget(t0 + FORGET_AFTER);
        assert_eq!(f.remembered(), 0);
        // A held (unfinished) attempt is never forgotten, however old.
        assert_eq!(f.admit_dispatch(leader(1, 1), key(2, 1)), Admission::Accept);
        f.forget(t0 + FORGET_AFTER * 10);
        assert_eq!(f.admit_dispatch(leader(1, 1), key(2, 1)), Admission::Duplicate);
        // By count: only the newest MAX_FINISHED finished attempts are remembered.
        for i in 0..(MAX_FINISHED as u64 + 10) {
            let k = key(100 + i, 1);
            assert_eq!(f.admit_dispatch(leader(1, 1), k), Admission::Accept);
            f.finished(k, t0);
        }
        assert_eq!(f.remembered(), MAX_FINISHED + 1, "the bound plus the held attempt");
        assert_eq!(
            f.admit_dispatch(leader(1, 1), key(100 + MAX_FINISHED as u64 + 9, 1)),
            Admission::Duplicate
        );
    }

    fn key(instance_id: u64, attempt: u32) -> AttemptKey {
        AttemptKey::new(InstanceId(instance_id), Attempt(attempt))
    }

    #[test]
    fn leader_ids_order_by_term_then_node() {
        let a = LeaderKey { term: 2, node_id: 9 };
        let b = LeaderKey { term: 3, node_id: 1 };
        let c = LeaderKey { term: 3, node_id: 2 };
        assert!(a < b && b < c);
    }

    #[test]
    fn lower_leader_is_refused_equal_and_higher_accepted() {
        let mut f = Fence::default();
        assert_eq!(f.admit_dispatch(leader(3, 2), key(1, 1)), Admission::Accept);
        // Same term, lower node id: a different (older) leader in openraft's advanced mode.
        assert_eq!(
            f.admit_dispatch(leader(3, 1), key(2, 1)),
            Admission::StaleLeader {
                highest: LeaderKey { term: 3, node_id: 2 }
            }
        );
        assert_eq!(
            f.admit_dispatch(leader(2, 9), key(2, 1)),
            Admission::StaleLeader {
                highest: LeaderKey { term: 3, node_id: 2 }
            }
        );
        assert_eq!(f.admit_dispatch(leader(3, 2), key(2, 1)), Admission::Accept);
        assert_eq!(f.admit_dispatch(leader(4, 1), key(3, 1)), Admission::Accept);
        assert_eq!(f.highest(), Some(LeaderKey { term: 4, node_id: 1 }));
        // A stale dispatch must not have been recorded as accepted: the same attempt
        // from a current leader still runs.
        assert_eq!(f.admit_dispatch(leader(4, 1), key(9, 1)), Admission::Accept);
    }

    #[test]
    fn an_attempt_runs_once_even_from_a_newer_leader() {
        let mut f = Fence::default();
        assert_eq!(f.admit_dispatch(leader(1, 1), key(7, 1)), Admission::Accept);
        assert_eq!(f.admit_dispatch(leader(1, 1), key(7, 1)), Admission::Duplicate);
        assert_eq!(f.admit_dispatch(leader(5, 3), key(7, 1)), Admission::Duplicate);
        // A new attempt of the same instance is a different unit of work.
        assert_eq!(f.admit_dispatch(leader(5, 3), key(7, 2)), Admission::Accept);
    }

    #[test]
    fn dispatch_without_leader_is_refused_and_not_recorded() {
        let mut f = Fence::default();
        assert_eq!(f.admit_dispatch(None, key(1, 1)), Admission::NoLeader);
        assert_eq!(f.admit_dispatch(leader(1, 1), key(1, 1)), Admission::Accept);
    }

    #[test]
    fn observe_and_stop_follow_the_same_order() {
        let mut f = Fence::default();
        assert!(f.observe(LeaderKey { term: 5, node_id: 1 }));
        assert!(!f.observe(LeaderKey { term: 4, node_id: 3 }));
        assert!(!f.admit_stop(leader(4, 9)));
        assert!(!f.admit_stop(None));
        assert!(f.admit_stop(leader(5, 1)));
        assert!(f.admit_stop(leader(6, 1)));
        assert_eq!(f.highest(), Some(LeaderKey { term: 6, node_id: 1 }));
    }
}
