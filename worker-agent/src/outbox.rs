//! The worker's unacknowledged reports (rule 5 of docs/rules.md).
//!
//! Every status report and log batch gets a sequence number here and stays until the
//! leader acknowledges it (which it does only once the report is committed). After a
//! reconnect the whole outbox is sent again, in order, to whichever node leads now;
//! the server ignores what it already has (stale attempts, log offsets it holds).
//!
//! This module owns the numbering, the queue and the wire form of a report (typed
//! attempt keys become the protobuf's plain numbers here). It never sends anything and
//! never drops a report that was not acknowledged.

use std::collections::VecDeque;
use std::sync::Mutex;

use qron_proto::worker::{worker_message::Msg, InstanceStatus, LogBatch, StatusReport, WorkerMessage};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::ids::AttemptKey;
use crate::util::lock;

/// A report that must reach the leader, already in its wire form (its `seq` is
/// stamped when it is pushed).
#[derive(Debug, Clone)]
pub(crate) enum Report {
    Status(StatusReport),
    Logs(LogBatch),
}

impl Report {
    /// `key` reached `status` at `at_ms` (worker clock), with this result text.
    pub(crate) fn status(
        key: AttemptKey,
        status: InstanceStatus,
        result: String,
        at_ms: i64,
        exit_code: Option<i32>,
    ) -> Self {
        Report::Status(StatusReport {
            seq: 0,
            instance_id: key.instance_id.0,
            attempt: key.attempt.0,
            status: status as i32,
            result,
            at_ms,
            exit_code,
        })
    }

    /// The bytes of `key`'s log starting at byte `offset`.
    pub(crate) fn logs(key: AttemptKey, offset: u64, data: Vec<u8>) -> Self {
        Report::Logs(LogBatch {
            seq: 0,
            instance_id: key.instance_id.0,
            attempt: key.attempt.0,
            offset,
            data,
        })
    }
}

/// The queue of unacknowledged reports, in sequence order.
#[derive(Debug)]
pub(crate) struct Outbox {
    next_seq: u64,
    entries: VecDeque<(u64, WorkerMessage)>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// An empty outbox whose first report gets seq 1 (0 would read as "nothing acked").
    pub(crate) fn new() -> Self {
        Outbox {
            next_seq: 1,
            entries: VecDeque::new(),
        }
    }

    /// Queues a report, stamping it with the next sequence number, which it returns.
    pub(crate) fn push(&mut self, report: Report) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let msg = match report {
            Report::Status(mut s) => {
                s.seq = seq;
                Msg::Status(s)
            }
            Report::Logs(mut l) => {
                l.seq = seq;
                Msg::Logs(l)
            }
        };
        self.entries.push_back((seq, WorkerMessage { msg: Some(msg) }));
        seq
    }

    /// Drops every report with a sequence number up to and including `seq`; returns
    /// how many were dropped.
    pub(crate) fn ack(&mut self, seq: u64) -> usize {
        let mut dropped = 0;
        while self.entries.front().is_some_and(|(s, _)| *s <= seq) {
            self.entries.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Every unacknowledged report, oldest first (the sender pages with [`Outbox::after`]).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> Vec<WorkerMessage> {
        self.entries.iter().map(|(_, m)| m.clone()).collect()
    }

    /// Up to `max` reports with a sequence number above `seq`, oldest first, and
    /// whether more follow them.
    pub(crate) fn after(&self, seq: u64, max: usize) -> (Vec<(u64, WorkerMessage)>, bool) {
        let start = self.entries.partition_point(|(s, _)| *s <= seq);
        let out: Vec<_> = self.entries.iter().skip(start).take(max).cloned().collect();
        let more = self.entries.len() - start > out.len();
        (out, more)
    }

    /// Number of unacknowledged reports.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every report was acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The outbox shared by the executor (which pushes) and the connection (which sends
/// and acknowledges), with a wake-up for the sender.
#[derive(Debug, Default)]
pub(crate) struct SharedOutbox {
    inner: Mutex<Outbox>,
    pushed: Notify,
}

impl SharedOutbox {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Queues a report and wakes the sender; returns its sequence number.
    pub(crate) fn push(&self, report: Report) -> u64 {
        let seq = lock(&self.inner).push(report);
        // notify_one keeps a permit when nobody waits, so a push between the sender's
        // read of the queue and its next wait is not missed.
        self.pushed.notify_one();
        seq
    }

    /// See [`Outbox::ack`].
    pub(crate) fn ack(&self, seq: u64) -> usize {
        lock(&self.inner).ack(seq)
    }

    /// See [`Outbox::after`].
    pub(crate) fn after(&self, seq: u64, max: usize) -> (Vec<(u64, WorkerMessage)>, bool) {
        lock(&self.inner).after(seq, max)
    }

    /// See [`Outbox::len`].
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// See [`Outbox::is_empty`].
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.inner).is_empty()
    }

    /// Completes when a report was pushed since the last wake-up.
    pub(crate) fn pushed(&self) -> Notified<'_> {
        self.pushed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, InstanceId};

    fn key(instance_id: u64) -> AttemptKey {
        AttemptKey::new(InstanceId(instance_id), Attempt(1))
    }

    fn status(instance_id: u64) -> Report {
        Report::status(key(instance_id), InstanceStatus::Unspecified, String::new(), 0, None)
    }

    fn logs(instance_id: u64, offset: u64) -> Report {
        Report::logs(key(instance_id), offset, b"x\n".to_vec())
    }

    fn seq_of(m: &WorkerMessage) -> u64 {
        match &m.msg {
            Some(Msg::Status(s)) => s.seq,
            Some(Msg::Logs(l)) => l.seq,
            other => panic!("not a report: {other:?}"),
        }
    }

    #[test]
    fn sequence_numbers_start_at_one_and_are_stamped() {
        let mut o = Outbox::new();
        assert_eq!(o.push(status(1)), 1);
        assert_eq!(o.push(logs(1, 0)), 2);
        assert_eq!(o.push(status(1)), 3);
        let seqs: Vec<u64> = o.pending().iter().map(seq_of).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn ack_drops_everything_up_to_and_including_seq() {
        let mut o = Outbox::new();
        for i in 0..5 {
            o.push(status(i));
        }
        assert_eq!(o.ack(0), 0);
        assert_eq!(o.ack(2), 2);
        assert_eq!(o.pending().iter().map(seq_of).collect::<Vec<_>>(), vec![3, 4, 5]);
        // A stale or repeated ack changes nothing.
        assert_eq!(o.ack(1), 0);
        assert_eq!(o.len(), 3);
        assert_eq!(o.ack(100), 3);
        assert!(o.is_empty());
        // Numbering goes on after the queue emptied: seqs are never reused.
        assert_eq!(o.push(status(9)), 6);
    }

    #[test]
    fn pending_keeps_order_for_resending() {
        let mut o = Outbox::new();
        o.push(status(1));
        o.push(logs(1, 0));
        o.push(logs(1, 2));
        o.push(status(1));
        o.ack(1);
        let kinds: Vec<&str> = o
            .pending()
            .iter()
            .map(|m| match &m.msg {
                Some(Msg::Status(_)) => "status",
                Some(Msg::Logs(_)) => "logs",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, vec!["logs", "logs", "status"]);
    }

    #[test]
    fn after_pages_through_unsent_reports() {
        let mut o = Outbox::new();
        for i in 0..5 {
            o.push(status(i));
        }
        let (page, more) = o.after(0, 2);
        assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2]);
        assert!(more);
        let (page, more) = o.after(2, 10);
        assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(!more);
        o.ack(4);
        let (page, more) = o.after(0, 10);
        assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![5]);
        assert!(!more);
        let (page, more) = o.after(5, 10);
        assert!(page.is_empty() && !more);
    }

    #[tokio::test]
    async fn push_wakes_a_sender_that_waits_later() {
        let o = SharedOutbox::new();
        o.push(status(1));
        // The permit left by the push completes the wait at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), o.pushed())
            .await
            .expect("a push before the wait is not lost");
    }
}
