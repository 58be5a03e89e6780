//! Bounds on the times and spans a user may name: the ground that validation
//! (`model`, `retention`) and the schedule's arithmetic share. Imports nothing.

/// Latest instant a job may name, and longest interval or delay: the end of
/// 9999-12-31 UTC, the last day RFC 3339 and the time-zone table cover. The
/// schedule's arithmetic stays far from `i64` and chrono's limits below it.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// An instant a job names: from 1970-01-01 to the end of 9999 (milliseconds since the epoch).
pub fn check_instant(field: &str, ms: i64) -> Result<(), String> {
    if (0..=MAX_TIME_MS).contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "{field} ({ms}) is out of range: use milliseconds since 1970-01-01 UTC, at most {MAX_TIME_MS} (9999-12-31)"
        ))
    }
}

/// A length of time a job names: at most [`MAX_TIME_MS`].
pub fn check_span(field: &str, ms: u64) -> Result<(), String> {
    if ms <= MAX_TIME_MS as u64 {
        Ok(())
    } else {
        Err(format!("{field} ({ms}) is out of range: at most {MAX_TIME_MS} ms"))
    }
}
