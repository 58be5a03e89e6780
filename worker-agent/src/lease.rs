//! The worker's lease (rule 11, docs/rules.md): how long this worker may go on
//! running attempts without hearing from a leader.
//!
//! The lease is granted by the leader's `Registered` answer and renewed by each
//! `Pong`, and it always counts from when the answered message was *sent*: a pong
//! that sat in a socket buffer while the worker was frozen cannot extend it past
//! what the leader could have known. The leader declares a silent worker's
//! attempts lost only after its worker timeout, of which the lease is 3/5, so a
//! worker cut off from every leader has killed its attempts before any retry
//! starts.
//!
//! Time is `CLOCK_BOOTTIME`: unlike `CLOCK_MONOTONIC` (Rust's `Instant`) it keeps
//! counting while the machine or VM is suspended, so a worker that wakes from a
//! suspend sees its lease as lapsed. This module owns the arithmetic only; the
//! connection feeds it and the executor acts on it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::util::lock;

/// The lease when a leader does not state one (an older server).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// Pings remembered while unanswered; older ones are forgotten (their pongs, if
/// they ever come, renew nothing).
const MAX_PENDING_PINGS: usize = 64;

/// A point on the boot-time clock, in nanoseconds since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootInstant(u128);

impl BootInstant {
    /// Now, on `CLOCK_BOOTTIME`.
    pub fn now() -> Self {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let secs = u128::try_from(t.tv_sec).unwrap_or(0);
        let nanos = u128::try_from(t.tv_nsec).unwrap_or(0);
        BootInstant(secs * 1_000_000_000 + nanos)
    }

    /// This instant plus `d`.
    pub fn plus(self, d: Duration) -> Self {
        BootInstant(self.0.saturating_add(d.as_nanos()))
    }

    /// How long from `earlier` to this instant (zero if `earlier` is later).
    pub fn since(self, earlier: BootInstant) -> Duration {
        let nanos = self.0.saturating_sub(earlier.0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[derive(Debug)]
struct State {
    /// TEST ONLY: a lease that never lapses (the chaos checker proves it can see
    /// what that breaks).
    disabled: bool,
    length: Duration,
    /// Until when attempts may run; `None` before the first grant.
    valid_until: Option<BootInstant>,
    /// Sent pings not yet answered: (nonce, when sent).
    pings: VecDeque<(u64, BootInstant)>,
}

/// The lease, shared by the connection (which renews it) and the executor (which
/// stops everything when it lapses).
#[derive(Debug)]
pub struct Lease {
    state: Mutex<State>,
}

impl Default for Lease {
    fn default() -> Self {
        Lease::new(DEFAULT_LEASE)
    }
}

impl Lease {
    /// A lease of `length`, not granted yet.
    pub fn new(length: Duration) -> Self {
        Lease {
            state: Mutex::new(State {
                disabled: false,
                length,
                valid_until: None,
                pings: VecDeque::new(),
            }),
        }
    }

    /// TEST ONLY: a lease that is always in force, never lapses. Breaks rule 11 on
    /// purpose, for the chaos checker's own test.
    pub fn disabled() -> Self {
        let l = Lease::default();
        lock(&l.state).disabled = true;
        l
    }

    /// The length the leader stated (`Registered.lease_ms`); zero keeps the default.
    pub fn set_length(&self, length: Duration) {
        if !length.is_zero() {
            lock(&self.state).length = length;
        }
    }

    /// The current length.
    pub fn length(&self) -> Duration {
        lock(&self.state).length
    }

    /// A leader answered a message this worker sent at `sent`: valid until `sent + length`.
    pub fn granted(&self, sent: BootInstant) {
        let mut st = lock(&self.state);
        let until = sent.plus(st.length);
        if st.valid_until.is_none_or(|v| until > v) {
            st.valid_until = Some(until);
        }
    }

    /// A ping with `nonce` leaves now.
    pub fn ping_sent(&self, nonce: u64, at: BootInstant) {
        let mut st = lock(&self.state);
        if st.pings.len() >= MAX_PENDING_PINGS {
            st.pings.pop_front();
        }
        st.pings.push_back((nonce, at));
    }

    /// The pong for `nonce` arrived: renews from when that ping was sent.
    pub fn answered(&self, nonce: u64) {
        let sent = {
            let mut st = lock(&self.state);
            let Some(pos) = st.pings.iter().position(|(n, _)| *n == nonce) else {
                return;
            };
            let sent = st.pings[pos].1;
            // Earlier pings can only renew less: forget them with this one.
            st.pings.drain(..=pos);
            sent
        };
        self.granted(sent);
    }

    /// Whether the lease was granted and has run out at `now`.
    pub fn lapsed_at(&self, now: BootInstant) -> bool {
        let st = lock(&self.state);
        !st.disabled && st.valid_until.is_some_and(|v| now >= v)
    }

    /// Whether the lease has run out now.
    pub fn lapsed(&self) -> bool {
        self.lapsed_at(BootInstant::now())
    }

    /// Forgets the grant: used after the executor acted on a lapse, so the next
    /// `Registered` starts a fresh lease (and until then, nothing is granted).
    pub fn revoke(&self) {
        let mut st = lock(&self.state);
        st.valid_until = None;
        st.pings.clear();
    }

    /// Whether a grant is in force now (granted and not lapsed).
    pub fn valid(&self) -> bool {
        let now = BootInstant::now();
        let st = lock(&self.state);
        st.disabled || st.valid_until.is_some_and(|v| now < v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u128 = 1_000_000_000;

    #[test]
    fn a_grant_counts_from_when_the_answered_message_was_sent() {
        let l = Lease::new(Duration::from_secs(3));
        assert!(!l.lapsed_at(BootInstant(100 * S)), "not granted: nothing to lapse");
        l.granted(BootInstant(10 * S));
        assert!(!l.lapsed_at(BootInstant(12 * S)));
        assert!(l.lapsed_at(BootInstant(13 * S)), "3 s after the Register left");
    }

    #[test]
    fn a_late_pong_renews_only_from_its_ping() {
        let l = Lease::new(Duration::from_secs(3));
        l.granted(BootInstant(10 * S));
        l.ping_sent(1, BootInstant(11 * S));
        l.ping_sent(2, BootInstant(12 * S));
        // The worker was frozen; on waking it reads the buffered pong of ping 1.
        l.answered(1);
        assert!(
            l.lapsed_at(BootInstant(14 * S)),
            "ping 1 left at 11 s: valid until 14 s only"
        );
        l.answered(2);
        assert!(!l.lapsed_at(BootInstant(14 * S)));
        assert!(l.lapsed_at(BootInstant(15 * S)));
        l.answered(1);
        assert!(
            l.lapsed_at(BootInstant(15 * S)),
            "a repeated or unknown pong renews nothing"
        );
    }

    #[test]
    fn a_grant_never_shortens_the_lease_and_revoke_forgets_it() {
        let l = Lease::new(Duration::from_secs(3));
        l.granted(BootInstant(20 * S));
        l.granted(BootInstant(10 * S));
        assert!(!l.lapsed_at(BootInstant(22 * S)));
        l.revoke();
        assert!(
            !l.lapsed_at(BootInstant(100 * S)),
            "revoked: nothing granted, nothing lapsed"
        );
        assert!(!l.valid());
    }

    #[test]
    fn the_leader_sets_the_length_and_zero_keeps_it() {
        let l = Lease::new(Duration::from_secs(3));
        l.set_length(Duration::ZERO);
        assert_eq!(l.length(), Duration::from_secs(3));
        l.set_length(Duration::from_millis(900));
        l.granted(BootInstant(10 * S));
        assert!(l.lapsed_at(BootInstant(10 * S + 900_000_000)));
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = BootInstant::now();
        let b = BootInstant::now();
        assert!(b >= a);
        assert!(b.since(a) < Duration::from_secs(1));
        assert_eq!(a.since(b.plus(Duration::from_secs(1))), Duration::ZERO);
    }
}
