//! Instance logs: each attempt's output stream, appended in order.
//!
//! Owns `Command::AppendLog`. A batch is placed by its byte offset in its
//! attempt's stream, so a re-sent batch appends nothing and a gap is marked;
//! a later attempt's output starts under a header; the log stops at the
//! leader's cap, with a marker. Never touches an instance's status.

use super::instances::stale;
use super::State;
use crate::command::{CommandError, Reply};
use crate::instance::{bounded, InstanceId};
use crate::types::Attempt;

impl State {
    pub(super) fn append_log(
        &mut self,
        id: InstanceId,
        attempt: Attempt,
        offset: u64,
        data: &str,
        cap: u64,
    ) -> Result<Reply, CommandError> {
        let inst = self.instance(id)?;
        if attempt == Attempt(0) || attempt > inst.attempt {
            return Err(stale(&inst, attempt));
        }
        if inst.log_expired {
            // A late batch for a log the retention removed: do not start it again.
            return Ok(Reply::LogAppended { appended: false });
        }
        let mut log = self.log_meta(id).unwrap_or_default();
        let received = log.received.get(&attempt).copied().unwrap_or(0);
        let len = data.len() as u64;
        if offset.saturating_add(len) <= received {
            return Ok(Reply::LogAppended { appended: false });
        }
        let mut piece = String::new();
        if received == 0 && attempt > Attempt(1) {
            piece.push_str(&format!("--- attempt {attempt} ---\n"));
        }
        if offset > received {
            piece.push_str(&format!("[... {} bytes of output lost ...]\n", offset - received));
            piece.push_str(data);
        } else {
            // Overlap with what was already received: keep only the new tail.
            let skip = (received - offset) as usize;
            let mut start = skip.min(data.len());
            while !data.is_char_boundary(start) {
                start += 1;
            }
            piece.push_str(&data[start..]);
        }
        log.received.insert(attempt, offset.saturating_add(len));
        if log.truncated {
            self.put_log_meta(id, &log);
            return Ok(Reply::LogAppended { appended: false });
        }
        let room = (cap as usize).saturating_sub(log.len as usize);
        if piece.len() <= room {
            self.push_log_text(id, &mut log, &piece);
        } else {
            let mut cut = bounded(&piece, room);
            cut.push_str(&format!("\n[log truncated at {cap} bytes]\n"));
            self.push_log_text(id, &mut log, &cut);
            log.truncated = true;
        }
        self.put_log_meta(id, &log);
        Ok(Reply::LogAppended { appended: true })
    }
}
