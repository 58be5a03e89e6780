//! An attempt's log on its way to the leader: lines buffered as a processor writes
//! them, cut into `LogBatch`es that carry their byte offset in the attempt's log.
//!
//! The offset is what makes re-sending safe: the server appends a batch only where it
//! continues the stream it holds, so a batch sent twice (after a failover) is a no-op.
//! This module owns the buffering, the offsets and the per-attempt cap. It never talks
//! to the network: batches go into the outbox like every other report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::ids::AttemptKey;
use crate::outbox::{Report, SharedOutbox};
use crate::util::lock;

/// The buffered, not yet batched part of one attempt's log, and where it starts.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    /// Bytes of this attempt's log already cut into batches: the next batch's offset.
    offset: u64,
    pending: Vec<u8>,
    /// Bytes accepted so far (batched + pending), for the cap.
    total: u64,
    cap: u64,
    truncated: bool,
}

impl LogBuffer {
    /// An empty log that accepts at most `cap` bytes before it marks a truncation.
    pub(crate) fn new(cap: u64) -> Self {
        LogBuffer {
            offset: 0,
            pending: Vec::new(),
            total: 0,
            cap,
            truncated: false,
        }
    }

    /// Appends one line (a trailing newline is added if missing).
    pub(crate) fn append(&mut self, line: &str) {
        if self.truncated {
            return;
        }
        let line = line.strip_suffix('\n').unwrap_or(line);
        let len = line.len() as u64 + 1;
        if self.total + len > self.cap {
            // Say once that lines were dropped, so a reader does not take the log as whole.
            let mark = format!("[qron-worker: log truncated after {} bytes]\n", self.total);
            self.total += mark.len() as u64;
            self.pending.extend_from_slice(mark.as_bytes());
            self.truncated = true;
            return;
        }
        self.total += len;
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
    }

    /// Bytes waiting to be batched.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Cuts the next batch of at most `max` bytes: its offset and data, or `None` when
    /// nothing is waiting. Consecutive batches continue each other's offsets.
    pub(crate) fn take_batch(&mut self, max: usize) -> Option<(u64, Vec<u8>)> {
        if self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len().min(max.max(1));
        let rest = self.pending.split_off(n);
        let data = std::mem::replace(&mut self.pending, rest);
        let offset = self.offset;
        self.offset += data.len() as u64;
        Some((offset, data))
    }

    /// Everything written so far and not yet batched, as text (for tests of processors).
    pub(crate) fn pending_text(&self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

/// One attempt's log shared between the processor (which writes) and its flusher.
#[derive(Debug)]
pub(crate) struct LogSink {
    buf: Mutex<LogBuffer>,
    full: Notify,
    max_batch: usize,
}

impl LogSink {
    pub(crate) fn new(cap: u64, max_batch: usize) -> Self {
        LogSink {
            buf: Mutex::new(LogBuffer::new(cap)),
            full: Notify::new(),
            max_batch: max_batch.max(1),
        }
    }

    /// Appends a line; wakes the flusher early once a full batch is waiting.
    pub(crate) fn append(&self, line: &str) {
        let full = {
            let mut b = lock(&self.buf);
            b.append(line);
            b.pending_len() >= self.max_batch
        };
        if full {
            self.full.notify_one();
        }
    }

    /// Moves every waiting byte into the outbox as batches of at most `max_batch` bytes.
    pub(crate) fn flush_into(&self, key: AttemptKey, outbox: &SharedOutbox) {
        loop {
            // Take one batch under the lock, push it outside: the two locks never nest.
            let batch = lock(&self.buf).take_batch(self.max_batch);
            let Some((offset, data)) = batch else { break };
            outbox.push(Report::logs(key, offset, data));
        }
    }

    /// See [`LogBuffer::pending_text`].
    pub(crate) fn pending_text(&self) -> String {
        lock(&self.buf).pending_text()
    }
}

/// Sends the attempt's log every `interval`, or sooner when a batch fills, until `done`
/// fires; then sends what is left. The executor awaits it before the final status, so
/// an attempt's logs always precede its result in the outbox.
pub(crate) async fn run_flusher(
    sink: Arc<LogSink>,
    key: AttemptKey,
    outbox: Arc<SharedOutbox>,
    interval: Duration,
    done: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tick.tick() => {}
            _ = sink.full.notified() => {}
        }
        sink.flush_into(key, &outbox);
    }
    sink.flush_into(key, &outbox);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Attempt, InstanceId};
    use qron_proto::worker::worker_message::Msg;

    #[test]
    fn consecutive_batches_continue_the_offset() {
        let mut b = LogBuffer::new(u64::MAX);
        b.append("a");
        b.append("bb\n");
        assert_eq!(b.take_batch(1024), Some((0, b"a\nbb\n".to_vec())));
        assert_eq!(b.take_batch(1024), None);
        b.append("ccc");
        assert_eq!(b.take_batch(1024), Some((5, b"ccc\n".to_vec())));
    }

    #[test]
    fn batches_never_exceed_the_maximum() {
        let mut b = LogBuffer::new(u64::MAX);
        b.append("0123456789");
        assert_eq!(b.take_batch(4), Some((0, b"0123".to_vec())));
        assert_eq!(b.take_batch(4), Some((4, b"4567".to_vec())));
        assert_eq!(b.take_batch(4), Some((8, b"89\n".to_vec())));
        assert_eq!(b.take_batch(4), None);
    }

    #[test]
    fn the_cap_marks_truncation_once() {
        let mut b = LogBuffer::new(8);
        b.append("1234"); // 5 bytes
        b.append("5678"); // would make 10 > 8
        b.append("more");
        let text = b.pending_text();
        assert!(text.starts_with("1234\n[qron-worker: log truncated"), "{text}");
        assert_eq!(text.matches("truncated").count(), 1);
    }

    #[test]
    fn sink_flushes_batches_with_offsets_into_the_outbox() {
        let sink = LogSink::new(u64::MAX, 6);
        let outbox = SharedOutbox::new();
        let key = AttemptKey::new(InstanceId(4), Attempt(2));
        sink.append("hello");
        sink.append("world");
        sink.flush_into(key, &outbox);
        sink.append("again");
        sink.flush_into(key, &outbox);
        let (msgs, _) = outbox.after(0, 100);
        let batches: Vec<(u64, u64, u32, Vec<u8>)> = msgs
            .into_iter()
            .map(|(_, m)| match m.msg {
                Some(Msg::Logs(l)) => (l.offset, l.instance_id, l.attempt, l.data),
                other => panic!("not logs: {other:?}"),
            })
            .collect();
        assert_eq!(
            batches,
            vec![
                (0, 4, 2, b"hello\n".to_vec()),
                (6, 4, 2, b"world\n".to_vec()),
                (12, 4, 2, b"again\n".to_vec()),
            ]
        );
    }
}
