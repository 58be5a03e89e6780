//! When a job fires: pure functions of its spec and instants, shared by the
//! leader's time wheel and the `next-fires` API. No clock is read here.
//!
//! Daylight saving (docs/scheduler.md, "Daylight saving"): a cron time inside a skipped hour
//! fires once, at the first instant after the gap; in a repeated hour a job whose
//! hour field is fixed fires once (the first occurrence), while a job whose hour
//! field is `*` or a step fires at every real instant it names (both passes).
//!
//! Cron arithmetic is done on naive local times (croner over a UTC carrier, so it
//! never adjusts anything itself); the mapping of each naive match to real
//! instants is done here, where the rules above are applied.

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use qron_proto::api::{DailyWindow, JobSpec, Schedule};

use crate::model::{parse_cron, parse_hms, parse_time_zone};

/// Searches give up after this many candidates (a window or lifecycle that never matches).
const MAX_CANDIDATES: usize = 100_000;

/// Instants beyond this distance from the epoch are not converted to local
/// time: chrono panics when a local time leaves its range (about year
/// 262,000), and a stored job never comes near it (validation stops at year
/// 9999, `MAX_TIME_MS`). Ten times that leaves room for offsets and shifts.
const CALENDAR_LIMIT_MS: i64 = 10 * crate::model::MAX_TIME_MS;

fn calendar_safe(ms: i64) -> bool {
    (-CALENDAR_LIMIT_MS..=CALENDAR_LIMIT_MS).contains(&ms)
}

/// A parsed time expression, ready to compute fire times.
#[derive(Debug, Clone)]
pub enum Timer {
    Cron {
        cron: Box<croner::Cron>,
        tz: Tz,
        /// The hour field names fixed hours (no `*`, no step): fire once in a repeated hour.
        hour_fixed: bool,
    },
    FixedRate {
        start_ms: i64,
        interval_ms: i64,
    },
    /// Fired `delay` after the previous instance finished (the scheduler chains it).
    FixedDelay {
        delay_ms: i64,
    },
    /// Never fired by time (API, workflow).
    Never,
}

/// A job's complete timing: its timer plus the lifecycle and the daily window.
#[derive(Debug, Clone)]
pub struct Plan {
    pub timer: Timer,
    not_before_ms: Option<i64>,
    not_after_ms: Option<i64>,
    window: Option<(u32, u32, Vec<u8>)>,
    window_tz: Tz,
}

fn hour_field(expression: &str) -> Option<&str> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.len() {
        5 => fields.get(1).copied(),
        6 | 7 => fields.get(2).copied(),
        _ => None,
    }
}

fn parse_window(w: &DailyWindow) -> Option<(u32, u32, Vec<u8>)> {
    Some((parse_hms(&w.start).ok()?, parse_hms(&w.end).ok()?, w.weekdays.clone()))
}

impl Plan {
    /// Builds the plan of a job created at `created_at_ms`. Errors are the
    /// validation messages (a stored job always validates).
    pub fn new(spec: &JobSpec, created_at_ms: i64) -> Result<Plan, String> {
        let (timer, window_tz) = match &spec.schedule {
            Schedule::Cron { expression, time_zone } => {
                let tz = parse_time_zone(time_zone)?;
                let hour_fixed = hour_field(expression).is_some_and(|h| !h.contains('*') && !h.contains('/'));
                (
                    Timer::Cron {
                        cron: Box::new(parse_cron(expression)?),
                        tz,
                        hour_fixed,
                    },
                    tz,
                )
            }
            Schedule::FixedRate {
                interval_ms,
                start_at_ms,
            } => (
                Timer::FixedRate {
                    start_ms: start_at_ms.unwrap_or(created_at_ms),
                    interval_ms: (*interval_ms).clamp(1, i64::MAX as u64) as i64,
                },
                Tz::UTC,
            ),
            Schedule::FixedDelay { delay_ms } => (
                Timer::FixedDelay {
                    delay_ms: (*delay_ms).min(i64::MAX as u64) as i64,
                },
                Tz::UTC,
            ),
            Schedule::Api | Schedule::Workflow => (Timer::Never, Tz::UTC),
        };
        Ok(Plan {
            timer,
            not_before_ms: spec.lifecycle.not_before_ms,
            not_after_ms: spec.lifecycle.not_after_ms,
            window: spec.daily_window.as_ref().and_then(parse_window),
            window_tz,
        })
    }

    /// Whether fires are computed from the clock (cron, fixed rate).
    pub fn is_periodic(&self) -> bool {
        matches!(self.timer, Timer::Cron { .. } | Timer::FixedRate { .. })
    }

    /// The first fire strictly after `after_ms` that the lifecycle and window allow.
    /// For fixed delay, `after_ms` is the previous instance's end (or the job's
    /// creation), and the answer is that plus the delay.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut after = after_ms;
        if let Some(nb) = self.not_before_ms {
            after = after.max(nb.saturating_sub(1));
        }
        for _ in 0..MAX_CANDIDATES {
            let t = self.raw_next(after)?;
            if self.not_after_ms.is_some_and(|na| t > na) {
                return None;
            }
            if self.in_window(t) {
                return Some(t);
            }
            after = t;
        }
        None
    }

    /// The next `count` fires after `after_ms`.
    pub fn next_fires(&self, after_ms: i64, count: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(count);
        let mut after = after_ms;
        while out.len() < count {
            match self.next_after(after) {
                Some(t) if !matches!(self.timer, Timer::FixedDelay { .. }) || out.is_empty() => {
                    out.push(t);
                    after = t;
                }
                _ => break,
            }
        }
        out
    }

    fn in_window(&self, t_ms: i64) -> bool {
        let Some((start, end, weekdays)) = &self.window else {
            return true;
        };
        if !calendar_safe(t_ms) {
            return false;
        }
        let Some(utc) = DateTime::<Utc>::from_timestamp_millis(t_ms) else {
            return false;
        };
        let local = utc.with_timezone(&self.window_tz);
        let secs = local.num_seconds_from_midnight();
        use chrono::Datelike;
        let weekday = local.weekday().number_from_monday() as u8;
        if !weekdays.is_empty() && !weekdays.contains(&weekday) {
            return false;
        }
        if start < end {
            secs >= *start && secs < *end
        } else {
            secs >= *start || secs < *end
        }
    }

    fn raw_next(&self, after_ms: i64) -> Option<i64> {
        match &self.timer {
            Timer::Never => None,
            Timer::FixedDelay { delay_ms } => after_ms.checked_add(*delay_ms),
            Timer::FixedRate { start_ms, interval_ms } => {
                if after_ms < *start_ms {
                    return Some(*start_ms);
                }
                // Checked throughout: a stored job may name any i64 (its validation
                // bounds times, but the schedule must not panic on what it is handed).
                let k = after_ms
                    .checked_sub(*start_ms)?
                    .checked_div(*interval_ms)?
                    .checked_add(1)?;
                start_ms.checked_add(k.checked_mul(*interval_ms)?)
            }
            Timer::Cron { cron, tz, hour_fixed } => cron_next(cron, tz, *hour_fixed, after_ms),
        }
    }
}

/// The next real instant after `after_ms` named by `cron` in `tz`, per the DST rules above.
fn cron_next(cron: &croner::Cron, tz: &Tz, hour_fixed: bool, after_ms: i64) -> Option<i64> {
    if !calendar_safe(after_ms) {
        return None;
    }
    let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
    let mut naive = after.with_timezone(tz).naive_local();
    // Near a fall-back transition, the second pass of the repeated hour has naive
    // times *earlier* than `after`'s: start the naive search before it.
    let shift = ChronoDuration::hours(3);
    let offset = |t: DateTime<Utc>| t.with_timezone(tz).naive_local() - t.naive_utc();
    let near_transition = offset(after.checked_sub_signed(shift)?) != offset(after)
        || offset(after.checked_add_signed(shift)?) != offset(after);
    if near_transition {
        naive = naive.checked_sub_signed(shift)?;
    }
    // croner counts "after" from whole seconds: step back to the second boundary.
    naive = naive.with_nanosecond(0)?;
    // Near a transition, naive order is not real-time order (the second pass of a
    // repeated hour): keep the earliest candidate until the naive search is past it.
    let mut best: Option<i64> = None;
    let mut stop_at: Option<NaiveDateTime> = None;
    for _ in 0..MAX_CANDIDATES {
        let carrier = Utc.from_utc_datetime(&naive);
        let m: NaiveDateTime = cron.find_next_occurrence(&carrier, false).ok()?.naive_utc();
        if !calendar_safe(m.and_utc().timestamp_millis()) {
            break;
        }
        if stop_at.is_some_and(|s| m > s) {
            break;
        }
        let found = match tz.from_local_datetime(&m) {
            LocalResult::Single(dt) => first_after(&[dt], after),
            LocalResult::Ambiguous(first, second) => {
                if hour_fixed {
                    first_after(&[first], after)
                } else {
                    first_after(&[first, second], after)
                }
            }
            LocalResult::None => gap_end(tz, m).and_then(|dt| first_after(&[dt], after)),
        };
        if let Some(t) = found {
            if !near_transition {
                return Some(t);
            }
            best = Some(best.map_or(t, |b| b.min(t)));
            if stop_at.is_none() {
                stop_at = Some(m.checked_add_signed(shift)?);
            }
        }
        naive = m;
    }
    best
}

fn first_after(candidates: &[DateTime<Tz>], after: DateTime<Utc>) -> Option<i64> {
    candidates
        .iter()
        .map(|c| c.with_timezone(&Utc))
        .find(|c| *c > after)
        .map(|c| c.timestamp_millis())
}

/// The first real instant after a naive time that falls in a DST gap.
fn gap_end(tz: &Tz, naive: NaiveDateTime) -> Option<DateTime<Tz>> {
    let mut t = naive;
    for _ in 0..(4 * 60) {
        t = t.checked_add_signed(ChronoDuration::minutes(1))?;
        // Round down to the minute boundary the gap ends on (gaps end on whole minutes).
        let probe = t.with_second(0)?;
        if let LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) = tz.from_local_datetime(&probe) {
            return Some(dt);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: serde_json::Value, extra: serde_json::Value) -> JobSpec {
        let mut v = serde_json::json!({
            "app": "a", "name": "j", "schedule": schedule,
            "processor": {"type": "shell", "script": "true"}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("spec")
    }

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).expect("time").timestamp_millis()
    }

    fn fmt(t: i64, tz: Tz) -> String {
        DateTime::<Utc>::from_timestamp_millis(t)
            .expect("t")
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    fn cron_fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let plan = Plan::new(
            &spec(
                serde_json::json!({"type": "cron", "expression": expr, "time_zone": tz}),
                serde_json::json!({}),
            ),
            0,
        )
        .expect("plan");
        let tz: Tz = tz.parse().expect("tz");
        plan.next_fires(ms(after), n).into_iter().map(|t| fmt(t, tz)).collect()
    }

    #[test]
    fn cron_with_seconds_in_a_time_zone() {
        assert_eq!(
            cron_fires("*/20 * * * * *", "Asia/Tokyo", "2026-01-01T00:00:05Z", 3),
            [
                "2026-01-01 09:00:20 JST",
                "2026-01-01 09:00:40 JST",
                "2026-01-01 09:01:00 JST"
            ]
        );
        // 5 fields: second 0.
        assert_eq!(
            cron_fires("30 9 * * MON", "Europe/Paris", "2026-06-01T12:00:00Z", 2),
            ["2026-06-08 09:30:00 CEST", "2026-06-15 09:30:00 CEST"]
        );
    }

    #[test]
    fn spring_forward_gap_fires_once_at_the_first_instant_after() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            cron_fires("0 30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08 03:00:00 EDT",
                "2026-03-09 02:30:00 EDT",
                "2026-03-10 02:30:00 EDT"
            ]
        );
        assert_eq!(
            cron_fires("0 */30 * * * *", "America/New_York", "2026-03-08T06:15:00Z", 4),
            [
                "2026-03-08 01:30:00 EST",
                "2026-03-08 03:00:00 EDT",
                "2026-03-08 03:30:00 EDT",
                "2026-03-08 04:00:00 EDT"
            ]
        );
    }

    #[test]
    fn fall_back_fixed_hour_fires_once_repeating_fires_both_passes() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST.
        assert_eq!(
            cron_fires("0 30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01 01:30:00 EDT", "2026-11-02 01:30:00 EST"]
        );
        assert_eq!(
            cron_fires("0 */30 * * * *", "America/New_York", "2026-11-01T04:10:00Z", 6),
            [
                "2026-11-01 00:30:00 EDT",
                "2026-11-01 01:00:00 EDT",
                "2026-11-01 01:30:00 EDT",
                "2026-11-01 01:00:00 EST",
                "2026-11-01 01:30:00 EST",
                "2026-11-01 02:00:00 EST"
            ]
        );
        // Asked from inside the second pass, it goes on from there.
        assert_eq!(
            cron_fires("0 */30 * * * *", "America/New_York", "2026-11-01T06:10:00Z", 2),
            ["2026-11-01 01:30:00 EST", "2026-11-01 02:00:00 EST"]
        );
    }

    #[test]
    fn fixed_rate_stays_aligned_to_its_start() {
        let plan = Plan::new(
            &spec(
                serde_json::json!({"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": 10_500}),
                serde_json::json!({}),
            ),
            0,
        )
        .expect("plan");
        assert_eq!(plan.next_after(0), Some(10_500));
        assert_eq!(plan.next_after(10_500), Some(11_500));
        // A new leader computing from the last recorded fire lands on the same grid,
        // however late it is.
        assert_eq!(plan.next_after(57_321), Some(57_500));
        assert_eq!(plan.next_fires(11_499, 3), [11_500, 12_500, 13_500]);
    }

    #[test]
    fn fixed_delay_chains_from_the_previous_end() {
        let plan = Plan::new(
            &spec(
                serde_json::json!({"type": "fixed_delay", "delay_ms": 250}),
                serde_json::json!({}),
            ),
            0,
        )
        .expect("plan");
        assert_eq!(plan.next_after(1_000), Some(1_250));
        assert_eq!(
            plan.next_fires(1_000, 5),
            [1_250],
            "later fires depend on when instances end"
        );
        assert!(!plan.is_periodic());
    }

    #[test]
    fn lifecycle_bounds_fires() {
        let plan = Plan::new(
            &spec(
                serde_json::json!({"type": "fixed_rate", "interval_ms": 100, "start_at_ms": 0}),
                serde_json::json!({"lifecycle": {"not_before_ms": 1_000, "not_after_ms": 1_250}}),
            ),
            0,
        )
        .expect("plan");
        assert_eq!(plan.next_fires(0, 10), [1_000, 1_100, 1_200]);
        assert_eq!(plan.next_after(1_200), None);
    }

    #[test]
    fn daily_window_and_weekdays_filter_fires() {
        let plan = Plan::new(
            &spec(
                serde_json::json!({"type": "cron", "expression": "0 0 * * * *", "time_zone": "UTC"}),
                serde_json::json!({"daily_window": {"start": "22:00", "end": "02:00", "weekdays": [6]}}),
            ),
            0,
        )
        .expect("plan");
        // 2026-11-27 is a Friday; the window opens Saturday 22:00 and spans midnight
        // (Sunday's early hours are outside: only Saturday counts).
        let fires: Vec<String> = plan
            .next_fires(ms("2026-11-27T00:00:00Z"), 4)
            .into_iter()
            .map(|t| fmt(t, Tz::UTC))
            .collect();
        assert_eq!(
            fires,
            [
                "2026-11-28 00:00:00 UTC",
                "2026-11-28 01:00:00 UTC",
                "2026-11-28 22:00:00 UTC",
                "2026-11-28 23:00:00 UTC"
            ]
        );
    }

    #[test]
    fn api_jobs_never_fire() {
        let plan = Plan::new(&spec(serde_json::json!({"type": "api"}), serde_json::json!({})), 0).expect("plan");
        assert_eq!(plan.next_after(0), None);
        assert!(plan.next_fires(0, 5).is_empty());
    }
}
