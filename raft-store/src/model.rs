//! The replicated domain records and the validation of what users send.
//!
//! Validation is deterministic (the cron parser and the time-zone table are
//! pure), so the API runs it before proposing (a clear 400 without a Raft round
//! trip) and `apply` runs it again, so no log entry can install a bad record.

use std::str::FromStr;

use qron_proto::api::{DailyWindow, ExecutionType, JobSpec, Lifecycle, Processor, Retention, Schedule};
use serde::{Deserialize, Serialize};

use crate::limits::{check_instant, check_span};
use crate::types::JobId;

/// Longest app or job name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Longest script, params or description accepted (bytes): the log is not a blob store.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Smallest fixed-rate interval: below this a job is a busy loop, not a schedule.
pub const MIN_FIXED_RATE_MS: u64 = 100;
pub use crate::limits::MAX_TIME_MS;

/// An application: a namespace of jobs and the secret its workers present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub secret: String,
    pub created_at_ms: i64,
    /// Overrides of the cluster's retention for this app's jobs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub retention: Retention,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// A job as the state machine holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Newest fire time recorded (rule 3 of docs/rules.md: a fire not newer than this is a no-op).
    pub last_fire_ms: Option<i64>,
    /// The instance of the newest fire (fixed delay chains from its end).
    #[serde(default)]
    pub last_fired_instance: Option<crate::instance::InstanceId>,
    /// How many of its instances expired under the retention policy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub expired: u64,
    /// The newest fire time among its expired instances: a fire at or before
    /// it may have no instance any more (the chaos checker accounts for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_fires_through_ms: Option<i64>,
}

impl Job {
    /// The API's view of this job.
    pub fn view(&self) -> qron_proto::api::JobView {
        qron_proto::api::JobView {
            id: self.id.0,
            spec: self.spec.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            last_fire_ms: self.last_fire_ms,
            expired_instances: self.expired,
            expired_fires_through_ms: self.expired_fires_through_ms,
        }
    }
}

/// Checks an app or job name: non-empty, bounded, printable, no `/`.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("{what} name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("{what} name is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(format!("{what} name {name:?} contains a control character or '/'"));
    }
    Ok(())
}

/// Checks an app creation request.
pub fn validate_app(name: &str, secret: &str) -> Result<(), String> {
    validate_name("app", name)?;
    if secret.is_empty() {
        return Err("app secret must not be empty: workers present it to register".into());
    }
    if secret.len() > MAX_NAME_LEN {
        return Err(format!("app secret is longer than {MAX_NAME_LEN} bytes"));
    }
    Ok(())
}

/// Parses a cron expression the way the scheduler will (seconds optional).
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(expression)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("bad cron expression {expression:?}: {e}"))
}

/// Parses an IANA time-zone name.
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name)
        .map_err(|_| format!("unknown time zone {name:?}: use an IANA name such as Europe/Paris"))
}

/// Seconds after midnight of `HH:MM` or `HH:MM:SS`.
pub(crate) fn parse_hms(text: &str) -> Result<u32, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || format!("bad time of day {text:?}: use HH:MM or HH:MM:SS");
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let mut secs = 0u32;
    for (i, limit) in [24u32, 60, 60].iter().enumerate().take(parts.len()) {
        let v: u32 = parts[i].parse().map_err(|_| bad())?;
        if v >= *limit {
            return Err(bad());
        }
        secs = secs * 60 + v;
    }
    if parts.len() == 2 {
        secs *= 60;
    }
    Ok(secs)
}

fn validate_window(w: &DailyWindow) -> Result<(), String> {
    let start = parse_hms(&w.start)?;
    let end = parse_hms(&w.end)?;
    if start == end {
        return Err("daily_window start and end must differ".into());
    }
    if let Some(d) = w.weekdays.iter().find(|d| !(1..=7).contains(*d)) {
        return Err(format!("daily_window weekday {d} is not 1 (Monday) ..= 7 (Sunday)"));
    }
    Ok(())
}

fn validate_schedule(s: &Schedule) -> Result<(), String> {
    match s {
        Schedule::Api | Schedule::Workflow => Ok(()),
        Schedule::Cron { expression, time_zone } => {
            parse_cron(expression)?;
            parse_time_zone(time_zone)?;
            Ok(())
        }
        Schedule::FixedRate {
            interval_ms,
            start_at_ms,
        } => {
            if *interval_ms < MIN_FIXED_RATE_MS {
                return Err(format!(
                    "fixed_rate interval_ms must be at least {MIN_FIXED_RATE_MS}, got {interval_ms}"
                ));
            }
            check_span("fixed_rate interval_ms", *interval_ms)?;
            if let Some(t) = start_at_ms {
                check_instant("fixed_rate start_at_ms", *t)?;
            }
            Ok(())
        }
        Schedule::FixedDelay { delay_ms } => {
            if *delay_ms == 0 {
                return Err("fixed_delay delay_ms must be at least 1".into());
            }
            check_span("fixed_delay delay_ms", *delay_ms)
        }
    }
}

fn validate_lifecycle(l: &Lifecycle) -> Result<(), String> {
    for (field, t) in [
        ("lifecycle not_before_ms", l.not_before_ms),
        ("lifecycle not_after_ms", l.not_after_ms),
    ] {
        if let Some(t) = t {
            check_instant(field, t)?;
        }
    }
    match (l.not_before_ms, l.not_after_ms) {
        (Some(a), Some(b)) if a >= b => Err(format!(
            "lifecycle not_before_ms ({a}) must be earlier than not_after_ms ({b})"
        )),
        _ => Ok(()),
    }
}

fn validate_processor(p: &Processor) -> Result<(), String> {
    match p {
        Processor::Shell { script } => {
            if script.trim().is_empty() {
                return Err("shell processor script must not be empty".into());
            }
            if script.len() > MAX_TEXT_LEN {
                return Err(format!("shell script is longer than {MAX_TEXT_LEN} bytes"));
            }
            Ok(())
        }
        Processor::Http {
            method,
            url,
            expected_status,
            body,
            ..
        } => {
            const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
            if !METHODS.contains(&method.as_str()) {
                return Err(format!("http processor method {method:?} is not one of {METHODS:?}"));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(format!(
                    "http processor url {url:?} must start with http:// or https://"
                ));
            }
            if !(100..=599).contains(expected_status) {
                return Err(format!(
                    "http processor expected_status {expected_status} is not an HTTP status"
                ));
            }
            if body.len() > MAX_TEXT_LEN {
                return Err(format!("http processor body is longer than {MAX_TEXT_LEN} bytes"));
            }
            Ok(())
        }
        Processor::Custom { name } => validate_name("custom processor", name),
    }
}

/// Checks everything a job spec says that can be checked without other records.
pub fn validate_job(spec: &JobSpec) -> Result<(), String> {
    validate_name("job", &spec.name)?;
    validate_name("app", &spec.app)?;
    validate_schedule(&spec.schedule)?;
    if let Some(w) = &spec.daily_window {
        validate_window(w)?;
    }
    validate_lifecycle(&spec.lifecycle)?;
    validate_processor(&spec.processor)?;
    if spec.params.len() > MAX_TEXT_LEN {
        return Err(format!("params is longer than {MAX_TEXT_LEN} bytes"));
    }
    if spec.description.len() > MAX_TEXT_LEN {
        return Err(format!("description is longer than {MAX_TEXT_LEN} bytes"));
    }
    if spec.concurrency == 0 {
        return Err("concurrency must be at least 1".into());
    }
    let b = &spec.retry_backoff;
    if b.multiplier == 0 {
        return Err("retry_backoff multiplier must be at least 1".into());
    }
    if b.initial_ms > b.max_ms {
        return Err(format!(
            "retry_backoff initial_ms ({}) must not exceed max_ms ({})",
            b.initial_ms, b.max_ms
        ));
    }
    check_span("retry_backoff max_ms", b.max_ms)?;
    check_span("instance_timeout_ms", spec.instance_timeout_ms)?;
    crate::retention::validate("retention", &spec.retention)?;
    if let Some(url) = &spec.alarm.webhook_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("alarm webhook_url {url:?} must start with http:// or https://"));
        }
    }
    Ok(())
}

/// Refuses what a job spec may say but qron does not do yet (rule 13 of
/// docs/rules.md: a field is honoured or refused, never accepted and ignored).
///
/// The API runs this before proposing; `apply` does not, on purpose: these
/// features arrive in later versions, and a log written then must replay the
/// same on every node, whichever version wrote it. Names the field and says
/// what to do instead.
pub fn refuse_unbuilt(spec: &JobSpec) -> Result<(), String> {
    let not_yet = |what: &str, instead: &str| Err(format!("{what} is not supported yet; {instead}"));
    if spec.execution != ExecutionType::Standalone {
        let name = serde_json::to_value(spec.execution)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        return not_yet(
            &format!("execution {name:?}"),
            "use \"standalone\" (one worker runs each instance)",
        );
    }
    if matches!(spec.schedule, Schedule::Workflow) {
        return not_yet(
            "schedule type \"workflow\" (workflows)",
            "use \"api\" for a job that only runs when asked",
        );
    }
    if spec.concurrency != 1 {
        return not_yet(
            "concurrency (tasks of one instance per worker, for map/reduce)",
            "leave it at 1",
        );
    }
    if spec.task_retries != 0 {
        return not_yet(
            "task_retries (retries of map/reduce tasks)",
            "leave it at 0; instance_retries retries a whole instance",
        );
    }
    if spec.worker_filter.max_worker_count != 0 {
        return not_yet(
            "worker_filter.max_worker_count (for broadcast and map/reduce)",
            "leave it at 0",
        );
    }
    if spec.alarm.webhook_url.is_some() || !spec.alarm.emails.is_empty() {
        return not_yet(
            "alarm (webhook and email on failure)",
            "leave alarm empty and watch for FAILED instances (qronctl instance list --status FAILED)",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: &str) -> JobSpec {
        serde_json::from_str(&format!(
            r#"{{"app":"demo","name":"j","schedule":{schedule},
                "processor":{{"type":"shell","script":"true"}}}}"#
        ))
        .expect("test spec parses")
    }

    #[test]
    fn accepts_good_schedules() {
        for s in [
            r#"{"type":"api"}"#,
            r#"{"type":"cron","expression":"*/5 * * * * *"}"#,
            r#"{"type":"cron","expression":"0 30 2 * * *","time_zone":"Europe/Paris"}"#,
            r#"{"type":"cron","expression":"0 9 * * MON-FRI"}"#,
            r#"{"type":"fixed_rate","interval_ms":1000}"#,
            r#"{"type":"fixed_delay","delay_ms":5}"#,
        ] {
            validate_job(&spec(s)).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn refuses_bad_schedules_with_the_reason() {
        for (s, needle) in [
            (r#"{"type":"cron","expression":"61 * * * * *"}"#, "bad cron expression"),
            (r#"{"type":"cron","expression":"not cron"}"#, "bad cron expression"),
            (
                r#"{"type":"cron","expression":"* * * * *","time_zone":"Mars/Base"}"#,
                "unknown time zone",
            ),
            (r#"{"type":"fixed_rate","interval_ms":5}"#, "at least 100"),
            (r#"{"type":"fixed_delay","delay_ms":0}"#, "at least 1"),
        ] {
            let err = validate_job(&spec(s)).expect_err(s);
            assert!(err.contains(needle), "{s}: {err}");
        }
    }

    #[test]
    fn refuses_times_out_of_range_with_the_field() {
        let late = MAX_TIME_MS + 1;
        for (s, needle) in [
            (
                format!(r#"{{"type":"fixed_rate","interval_ms":1000,"start_at_ms":{late}}}"#),
                "fixed_rate start_at_ms",
            ),
            (
                r#"{"type":"fixed_rate","interval_ms":1000,"start_at_ms":-1}"#.to_owned(),
                "fixed_rate start_at_ms",
            ),
            (
                format!(r#"{{"type":"fixed_rate","interval_ms":{}}}"#, u64::MAX),
                "fixed_rate interval_ms",
            ),
            (
                format!(r#"{{"type":"fixed_delay","delay_ms":{}}}"#, u64::MAX),
                "fixed_delay delay_ms",
            ),
        ] {
            let err = validate_job(&spec(&s)).expect_err(&s);
            assert!(err.contains(needle) && err.contains("out of range"), "{s}: {err}");
        }
        // The lifecycle that made every leader's wheel panic (issue 10): near chrono's last date.
        let mut j = spec(r#"{"type":"cron","expression":"* * * * * *"}"#);
        j.lifecycle.not_before_ms = Some(8_210_298_412_799_999);
        let err = validate_job(&j).unwrap_err();
        assert!(
            err.contains("lifecycle not_before_ms") && err.contains("out of range"),
            "{err}"
        );
        let mut j = spec(r#"{"type":"api"}"#);
        j.lifecycle.not_after_ms = Some(i64::MIN);
        assert!(validate_job(&j).unwrap_err().contains("lifecycle not_after_ms"));
        let mut j = spec(r#"{"type":"api"}"#);
        j.retry_backoff.max_ms = u64::MAX;
        assert!(validate_job(&j).unwrap_err().contains("retry_backoff max_ms"));
        let mut j = spec(r#"{"type":"api"}"#);
        j.instance_timeout_ms = u64::MAX;
        assert!(validate_job(&j).unwrap_err().contains("instance_timeout_ms"));
        // The bounds themselves are accepted.
        let mut j = spec(&format!(
            r#"{{"type":"fixed_rate","interval_ms":{MAX_TIME_MS},"start_at_ms":{MAX_TIME_MS}}}"#
        ));
        j.lifecycle.not_before_ms = Some(0);
        j.lifecycle.not_after_ms = Some(MAX_TIME_MS);
        validate_job(&j).expect("the range's ends are valid");
    }

    #[test]
    fn refuses_what_is_not_built_naming_the_field() {
        let base = spec(r#"{"type":"api"}"#);
        refuse_unbuilt(&base).expect("a plain standalone job is built");
        type Change = fn(&mut JobSpec);
        let cases: Vec<(Change, &str)> = vec![
            (|j| j.execution = ExecutionType::MapReduce, "execution \"map_reduce\""),
            (|j| j.execution = ExecutionType::Broadcast, "execution \"broadcast\""),
            (|j| j.execution = ExecutionType::Map, "execution \"map\""),
            (|j| j.schedule = Schedule::Workflow, "workflow"),
            (|j| j.concurrency = 4, "concurrency"),
            (|j| j.task_retries = 2, "task_retries"),
            (|j| j.worker_filter.max_worker_count = 3, "max_worker_count"),
            (
                |j| j.alarm.webhook_url = Some("http://example.com/hook".into()),
                "alarm",
            ),
            (|j| j.alarm.emails = vec!["ops@example.com".into()], "alarm"),
        ];
        for (change, needle) in cases {
            let mut j = base.clone();
            change(&mut j);
            let err = refuse_unbuilt(&j).expect_err(needle);
            assert!(
                err.contains(needle) && err.contains("not supported yet"),
                "{needle}: {err}"
            );
            // apply still accepts it (see the function's doc): validation alone does not refuse it.
            validate_job(&j).unwrap_or_else(|e| panic!("{needle}: validate_job refused: {e}"));
        }
    }

    #[test]
    fn refuses_empty_names_and_bad_windows() {
        let mut j = spec(r#"{"type":"api"}"#);
        j.name = "  ".into();
        assert!(validate_job(&j).unwrap_err().contains("must not be empty"));
        let mut j = spec(r#"{"type":"api"}"#);
        j.daily_window = Some(DailyWindow {
            start: "25:00".into(),
            end: "26:00".into(),
            weekdays: vec![],
        });
        assert!(validate_job(&j).unwrap_err().contains("bad time of day"));
        let mut j = spec(r#"{"type":"api"}"#);
        j.lifecycle = Lifecycle {
            not_before_ms: Some(10),
            not_after_ms: Some(5),
        };
        assert!(validate_job(&j).unwrap_err().contains("earlier than"));
    }

    #[test]
    fn hms_parses() {
        assert_eq!(parse_hms("00:00"), Ok(0));
        assert_eq!(parse_hms("01:02:03"), Ok(3723));
        assert_eq!(parse_hms("23:59"), Ok(86340));
        assert!(parse_hms("1").is_err());
        assert!(parse_hms("12:60").is_err());
    }
}
