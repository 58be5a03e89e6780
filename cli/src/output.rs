//! How answers are shown: `-o json` (the server's JSON, pretty-printed) or
//! `-o table` (aligned columns and short texts for people).
//!
//! Formatting is pure (answers in, text out) so it can be tested; the only I/O
//! is [`emit`], [`emit_raw`] and [`note`]. Text that came from the server has
//! its control characters replaced before it reaches a terminal, except an
//! instance's log, which is the job's own output and is printed as is.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::ValueEnum;
use qron_proto::api::{
    AppView, ClusterRetention, ClusterView, HistoryView, InstanceList, InstanceView, JobView, NodeRole, Processor,
    Schedule, WorkerView,
};
use serde::Serialize;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people
    Table,
    /// The server's JSON answer, pretty-printed, for scripts
    Json,
}

/// Columns of a table are separated by this many spaces.
const GAP: usize = 2;
/// An instance's result is cut to this many characters in `instance list`.
const MAX_RESULT_CELL: usize = 40;

/// The answer as pretty-printed JSON.
///
/// The answer was decoded into the API's own types, which serialize their
/// fields in the order the server sends them.
pub fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).context("cannot print the answer as JSON")
}

/// Writes `text` and a final newline to stdout. A closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    match write_text(&mut io::stdout().lock(), text) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Writes `text` to stdout as is (no newline added) and flushes it. Returns
/// false when stdout was closed (`| head`), so that a loop can stop.
pub fn emit_raw(text: &str) -> Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// Writes `note: text` to stderr, for what people should know but scripts
/// reading stdout must not get. Failing to write it is not an error.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "note: {text}");
}

fn write_text(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Aligns `rows` under `headers`: every column as wide as its widest cell, two
/// spaces between columns, no trailing spaces. Ends with a newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if !headers.is_empty() {
        lines.push(headers.iter().map(|h| clean(h)).collect());
    }
    lines.extend(rows.iter().map(|row| row.iter().map(|c| clean(c)).collect()));
    align(&lines)
}

/// `key:  value` lines with the values aligned. Ends with a newline.
pub fn pairs(rows: &[(&str, String)]) -> String {
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![format!("{}:", clean(k)), clean(v)])
        .collect();
    align(&lines)
}

fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = line.get(i).map(String::as_str).unwrap_or("");
            text.push_str(cell);
            if i + 1 < columns {
                let pad = width - cell.chars().count() + GAP;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Replaces control characters (newlines, tabs, terminal escapes) by spaces so
/// that a cell stays on its line and cannot drive the terminal.
fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A schedule in a few words: `cron */5 * * * * * UTC`, `fixed_rate 1000ms`.
pub fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Api => "api".to_owned(),
        Schedule::Cron { expression, time_zone } => format!("cron {expression} {time_zone}"),
        Schedule::FixedRate { interval_ms, .. } => format!("fixed_rate {interval_ms}ms"),
        Schedule::FixedDelay { delay_ms } => format!("fixed_delay {delay_ms}ms"),
        Schedule::Workflow => "workflow".to_owned(),
    }
}

/// The processor's type, as the API names it.
pub fn processor_type(processor: &Processor) -> &'static str {
    match processor {
        Processor::Shell { .. } => "shell",
        Processor::Http { .. } => "http",
        Processor::Custom { .. } => "custom",
    }
}

/// The processor with its main setting: `shell "echo hi"`, `http GET http://...`.
pub fn processor_text(processor: &Processor) -> String {
    match processor {
        // Debug quoting keeps a multi-line script on one line.
        Processor::Shell { script } => format!("shell {script:?}"),
        Processor::Http { method, url, .. } => format!("http {method} {url}"),
        Processor::Custom { name } => format!("custom {name}"),
    }
}

/// A time in milliseconds since the Unix epoch as RFC 3339 UTC, to the second.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard
/// Hinnant's `civil_from_days`, valid far beyond any time a job will see.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn yes_no(value: bool) -> String {
    String::from(if value { "yes" } else { "no" })
}

fn or_dash(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn time_or_dash(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), format_ms)
}

fn text_or_dash(text: &str) -> String {
    if text.trim().is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// `text` on one line, cut to `max` characters (the last three being `...`
/// when it was cut).
fn shorten(text: &str, max: usize) -> String {
    let text = clean(text);
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(3)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push_str("...");
    cut
}

/// `cluster status` (and the answer of `add-node`/`remove-node`): the node's
/// Raft state, then one line per member.
pub fn cluster(view: &ClusterView) -> String {
    let leader = view
        .leader_id
        .map_or_else(|| "none known".to_owned(), |id| id.to_string());
    let mut fields = vec![
        ("node", view.node_id.to_string()),
        ("state", view.state.clone()),
        ("leader", leader),
        ("term", view.term.to_string()),
        ("last log", or_dash(view.last_log_index)),
        ("commit", or_dash(view.commit_index)),
        ("applied", or_dash(view.applied_index)),
    ];
    if let Some(m) = &view.memory {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        fields.push((
            "memory",
            format!(
                "{} resident; RocksDB: {} block cache, {} memtables",
                m.rss_bytes.map_or_else(|| "-".to_owned(), mb),
                mb(m.block_cache_bytes),
                mb(m.memtable_bytes)
            ),
        ));
    }
    let mut out = pairs(&fields);
    out.push('\n');
    let mut nodes: Vec<_> = view.nodes.iter().collect();
    nodes.sort_by_key(|n| n.id);
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                match n.role {
                    NodeRole::Voter => "voter",
                    NodeRole::Learner => "learner",
                }
                .to_owned(),
                n.grpc_addr.clone(),
                n.http_addr.clone().unwrap_or_else(|| "-".to_owned()),
                yes_no(n.reachable),
                if view.leader_id == Some(n.id) { "*" } else { "" }.to_owned(),
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "ROLE", "GRPC", "HTTP", "REACHABLE", "LEADER"], &rows));
    out
}

/// `app list` and `app create`.
pub fn apps(apps: &[AppView]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| vec![a.name.clone(), format_ms(a.created_at_ms)])
        .collect();
    table(&["NAME", "CREATED"], &rows)
}

/// `job list`: one line per job.
pub fn jobs(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.spec.app.clone(),
                j.spec.name.clone(),
                schedule_text(&j.spec.schedule),
                processor_type(&j.spec.processor).to_owned(),
                yes_no(j.spec.enabled),
            ]
        })
        .collect();
    table(&["ID", "APP", "NAME", "SCHEDULE", "PROCESSOR", "ENABLED"], &rows)
}

/// `job get`, `job create`, `job update`: the main settings of one job
/// (`-o json` shows them all).
pub fn job(view: &JobView) -> String {
    let spec = &view.spec;
    let mut rows = vec![
        ("id", view.id.to_string()),
        ("app", spec.app.clone()),
        ("name", spec.name.clone()),
    ];
    if !spec.description.is_empty() {
        rows.push(("description", spec.description.clone()));
    }
    rows.push(("schedule", schedule_text(&spec.schedule)));
    if let Schedule::FixedRate {
        start_at_ms: Some(start),
        ..
    } = &spec.schedule
    {
        rows.push(("start at", format_ms(*start)));
    }
    rows.push(("processor", processor_text(&spec.processor)));
    if !spec.params.is_empty() {
        rows.push(("params", spec.params.clone()));
    }
    rows.push(("enabled", yes_no(spec.enabled)));
    let max_instances = match spec.max_instances {
        0 => "unlimited".to_owned(),
        n => n.to_string(),
    };
    rows.push(("max instances", max_instances));
    let timeout = match spec.instance_timeout_ms {
        0 => "none".to_owned(),
        ms => format!("{ms}ms"),
    };
    rows.push(("instance timeout", timeout));
    rows.push(("instance retries", spec.instance_retries.to_string()));
    rows.push(("created", format_ms(view.created_at_ms)));
    rows.push(("updated", format_ms(view.updated_at_ms)));
    rows.push((
        "last fire",
        view.last_fire_ms.map_or_else(|| "never".to_owned(), format_ms),
    ));
    pairs(&rows)
}

/// An instance's attempt as `current/last allowed`.
fn attempt_text(view: &InstanceView) -> String {
    format!("{}/{}", view.attempt, view.max_attempt)
}

/// One line on an instance: `instance 12 of job 7: RUNNING`.
pub fn instance_headline(view: &InstanceView) -> String {
    format!("instance {} of job {}: {}", view.id, view.job_id, clean(&view.status))
}

/// `instance list`: one line per instance, the result cut short.
pub fn instances(instances: &[InstanceView]) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.job_id.to_string(),
                i.status.clone(),
                attempt_text(i),
                i.worker.clone().unwrap_or_else(|| "-".to_owned()),
                format_ms(i.created_at_ms),
                time_or_dash(i.finished_at_ms),
                shorten(&i.result, MAX_RESULT_CELL),
            ]
        })
        .collect();
    table(
        &[
            "ID", "JOB", "STATUS", "ATTEMPT", "WORKER", "CREATED", "FINISHED", "RESULT",
        ],
        &rows,
    )
}

/// `instance list`: the table, then how far back history goes.
pub fn instance_list(list: &InstanceList) -> String {
    let mut out = instances(&list.instances);
    if let Some(h) = &list.history {
        out.push('\n');
        out.push_str(&history_line(h));
    }
    out
}

/// "history from instance 41 (created ...); 40 older instances expired".
fn history_line(h: &HistoryView) -> String {
    let from = match (h.oldest_id, h.oldest_created_at_ms) {
        (Some(id), Some(t)) => format!("history from instance {id} (created {})", format_ms(t)),
        _ => "no instances kept".to_owned(),
    };
    match h.expired {
        0 => format!("{from}; none expired"),
        n => format!("{from}; {n} older instances expired under the retention policy (qronctl cluster retention)"),
    }
}

/// `cluster retention`.
pub fn retention(r: &ClusterRetention) -> String {
    pairs(&[
        ("max age", format!("{} ms", r.max_age_ms)),
        ("max count per job", r.max_count.to_string()),
        ("max log bytes", r.max_log_bytes.to_string()),
    ])
}

/// `instance get` (and the detail after the headline of `job run`, `instance
/// stop`, `cancel` and `retry`): every field of one instance.
pub fn instance(view: &InstanceView) -> String {
    let mut rows = vec![
        ("id", view.id.to_string()),
        ("job", view.job_id.to_string()),
        ("app", view.app.clone()),
        ("status", view.status.clone()),
        ("attempt", attempt_text(view)),
        ("worker", view.worker.clone().unwrap_or_else(|| "-".to_owned())),
    ];
    if !view.params.is_empty() {
        rows.push(("params", view.params.clone()));
    }
    rows.extend([
        ("created", format_ms(view.created_at_ms)),
        ("assigned", time_or_dash(view.assigned_at_ms)),
        ("started", time_or_dash(view.started_at_ms)),
        ("finished", time_or_dash(view.finished_at_ms)),
        (
            "exit code",
            view.exit_code.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        ),
        ("result", text_or_dash(&view.result)),
        ("reason", text_or_dash(&view.reason)),
    ]);
    pairs(&rows)
}

/// The headline of an instance, a blank line, then its detail: the answer of
/// `job run`, `instance stop`, `cancel` and `retry`.
pub fn instance_with_headline(view: &InstanceView) -> String {
    format!("{}\n\n{}", instance_headline(view), instance(view))
}

/// `worker list`: one line per worker, by app then id.
/// `job next-fires`: one fire time per line, in the schedule's zone.
pub fn next_fires(view: &qron_proto::api::NextFires) -> String {
    let mut out = format!("next fires of job {} ({}):\n", view.job_id, view.time_zone);
    for f in &view.fires {
        out.push_str(&format!("  {}\n", f.at));
    }
    if let Some(note) = &view.note {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

pub fn workers(workers: &[WorkerView]) -> String {
    let mut sorted: Vec<&WorkerView> = workers.iter().collect();
    sorted.sort_by(|a, b| (&a.app, &a.worker_id).cmp(&(&b.app, &b.worker_id)));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.app.clone(),
                if w.tags.is_empty() {
                    "-".to_owned()
                } else {
                    w.tags.join(",")
                },
                format!("{:.1}", w.cpu_percent),
                format!("{}/{}", w.memory_free_mb, w.memory_total_mb),
                format!("{}/{}", w.disk_free_mb, w.disk_total_mb),
                w.running.len().to_string(),
                format!("{}ms ago", w.last_seen_ms_ago),
                yes_no(w.connected),
            ]
        })
        .collect();
    table(
        &[
            "WORKER",
            "APP",
            "TAGS",
            "CPU%",
            "MEM FREE/TOTAL MB",
            "DISK FREE/TOTAL MB",
            "RUNNING",
            "LAST SEEN",
            "CONNECTED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use qron_proto::api::{MemoryView, NodeView};

    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn table_pads_every_column_to_its_widest_cell() {
        let text = table(
            &["ID", "NAME", "ENABLED"],
            &[row(&["7", "nightly-invoices", "yes"]), row(&["1234", "x", "no"])],
        );
        assert_eq!(
            text,
            "ID    NAME              ENABLED\n\
             7     nightly-invoices  yes\n\
             1234  x                 no\n"
        );
    }

    #[test]
    fn table_counts_characters_not_bytes_and_has_no_trailing_spaces() {
        let text = table(&["NAME", "X"], &[row(&["été", ""]), row(&["a", "b"])]);
        assert_eq!(text, "NAME  X\nété\na     b\n");
    }

    #[test]
    fn table_keeps_a_cell_with_a_newline_on_its_line() {
        let text = table(&["A", "B"], &[row(&["one\ntwo", "x"])]);
        assert_eq!(text, "A        B\none two  x\n");
    }

    #[test]
    fn table_with_short_rows_and_no_rows() {
        assert_eq!(table(&["ID", "NAME"], &[]), "ID  NAME\n");
        assert_eq!(table(&["ID", "NAME", "X"], &[row(&["1"])]), "ID  NAME  X\n1\n");
    }

    #[test]
    fn pairs_align_values() {
        let text = pairs(&[("node", "1".to_owned()), ("last log", "42".to_owned())]);
        assert_eq!(text, "node:      1\nlast log:  42\n");
    }

    #[test]
    fn schedule_short_texts() {
        let cron = Schedule::Cron {
            expression: "*/5 * * * * *".to_owned(),
            time_zone: "UTC".to_owned(),
        };
        assert_eq!(schedule_text(&cron), "cron */5 * * * * * UTC");
        let rate = Schedule::FixedRate {
            interval_ms: 1000,
            start_at_ms: Some(5),
        };
        assert_eq!(schedule_text(&rate), "fixed_rate 1000ms");
        assert_eq!(
            schedule_text(&Schedule::FixedDelay { delay_ms: 250 }),
            "fixed_delay 250ms"
        );
        assert_eq!(schedule_text(&Schedule::Api), "api");
        assert_eq!(schedule_text(&Schedule::Workflow), "workflow");
    }

    #[test]
    fn processor_texts() {
        let shell = Processor::Shell {
            script: "echo hi\nexit 1".to_owned(),
        };
        assert_eq!(processor_type(&shell), "shell");
        assert_eq!(processor_text(&shell), r#"shell "echo hi\nexit 1""#);
        let custom = Processor::Custom {
            name: "resize".to_owned(),
        };
        assert_eq!(processor_type(&custom), "custom");
        assert_eq!(processor_text(&custom), "custom resize");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_ms(253_402_300_799_000), "9999-12-31T23:59:59Z");
    }

    fn instance_view(id: u64) -> InstanceView {
        InstanceView {
            id,
            job_id: 7,
            app: "billing".to_owned(),
            status: "RUNNING".to_owned(),
            attempt: 1,
            max_attempt: 3,
            worker: Some("w-1".to_owned()),
            params: String::new(),
            fire_time_ms: None,
            created_at_ms: 1_700_000_000_123,
            assigned_at_ms: Some(1_700_000_001_000),
            started_at_ms: Some(1_700_000_002_000),
            finished_at_ms: None,
            result: String::new(),
            exit_code: None,
            reason: String::new(),
        }
    }

    #[test]
    fn instances_table_shows_attempts_times_and_a_short_result() {
        let running = instance_view(12);
        let failed = InstanceView {
            status: "FAILED".to_owned(),
            attempt: 3,
            worker: None,
            finished_at_ms: Some(1_700_000_060_000),
            result: "exit status 2: cannot open /var/data/invoices.csv\nsecond line".to_owned(),
            exit_code: Some(2),
            ..instance_view(9)
        };
        let text = instances(&[running, failed]);
        let expected = "\
ID  JOB  STATUS   ATTEMPT  WORKER  CREATED               FINISHED              RESULT
12  7    RUNNING  1/3      w-1     2023-11-14T22:13:20Z  -
9   7    FAILED   3/3      -       2023-11-14T22:13:20Z  2023-11-14T22:14:20Z  exit status 2: cannot open /var/data/...
";
        assert_eq!(text, expected);
        let result_cell = text.lines().nth(2).expect("row").split("  ").last().expect("cell");
        assert_eq!(result_cell.chars().count(), MAX_RESULT_CELL);
    }

    #[test]
    fn shorten_cuts_long_text_and_keeps_short_text() {
        assert_eq!(shorten("ok", 40), "ok");
        assert_eq!(shorten("  done\n", 40), "done");
        assert_eq!(shorten("abcdefghij", 10), "abcdefghij");
        assert_eq!(shorten("abcdefghijk", 10), "abcdefg...");
        // A cut that would end in a space drops it, so the dots follow a word.
        assert_eq!(shorten("abcdef ghijk", 10), "abcdef...");
        // Characters, not bytes: no panic in the middle of a multi-byte one.
        assert_eq!(shorten("ééééééééééé", 10), "ééééééé...");
        assert_eq!(shorten("a\nb", 10), "a b");
    }

    #[test]
    fn instance_detail_has_every_field() {
        let view = InstanceView {
            status: "FAILED".to_owned(),
            params: "--day 2023-11-14".to_owned(),
            finished_at_ms: Some(1_700_000_060_000),
            result: "exit status 2".to_owned(),
            exit_code: Some(2),
            reason: "the process exited with status 2; no retry left".to_owned(),
            ..instance_view(12)
        };
        let expected = "\
id:         12
job:        7
app:        billing
status:     FAILED
attempt:    1/3
worker:     w-1
params:     --day 2023-11-14
created:    2023-11-14T22:13:20Z
assigned:   2023-11-14T22:13:21Z
started:    2023-11-14T22:13:22Z
finished:   2023-11-14T22:14:20Z
exit code:  2
result:     exit status 2
reason:     the process exited with status 2; no retry left
";
        assert_eq!(instance(&view), expected);
    }

    #[test]
    fn a_waiting_instance_shows_dashes_and_a_headline() {
        let view = InstanceView {
            status: "WAITING_DISPATCH".to_owned(),
            attempt: 0,
            worker: None,
            assigned_at_ms: None,
            started_at_ms: None,
            ..instance_view(13)
        };
        let text = instance_with_headline(&view);
        assert!(
            text.starts_with("instance 13 of job 7: WAITING_DISPATCH\n\nid:"),
            "{text}"
        );
        for line in [
            "attempt:    0/3",
            "worker:     -",
            "assigned:   -",
            "started:    -",
            "finished:   -",
            "exit code:  -",
            "result:     -",
            "reason:     -",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("params:"), "empty params are left out:\n{text}");
    }

    #[test]
    fn workers_table_sorts_by_app_then_id_and_counts_running() {
        let worker = |id: &str, app: &str| WorkerView {
            worker_id: id.to_owned(),
            app: app.to_owned(),
            tags: Vec::new(),
            max_concurrency: 4,
            cpu_cores: 8,
            cpu_percent: 12.345,
            memory_total_mb: 16_000,
            memory_free_mb: 9_500,
            disk_total_mb: 100_000,
            disk_free_mb: 40_000,
            running: Vec::new(),
            last_seen_ms_ago: 850,
            connected: true,
        };
        let busy = WorkerView {
            tags: vec!["gpu".to_owned(), "eu".to_owned()],
            cpu_percent: 99.96,
            running: vec![(12, 1), (13, 2)],
            last_seen_ms_ago: 12_000,
            connected: false,
            ..worker("w-2", "billing")
        };
        let text = workers(&[worker("w-9", "reports"), busy, worker("w-1", "billing")]);
        let expected = "\
WORKER  APP      TAGS    CPU%   MEM FREE/TOTAL MB  DISK FREE/TOTAL MB  RUNNING  LAST SEEN    CONNECTED
w-1     billing  -       12.3   9500/16000         40000/100000        0        850ms ago    yes
w-2     billing  gpu,eu  100.0  9500/16000         40000/100000        2        12000ms ago  no
w-9     reports  -       12.3   9500/16000         40000/100000        0        850ms ago    yes
";
        assert_eq!(text, expected);
        // With no rows the columns are as wide as their headers.
        assert_eq!(
            workers(&[]),
            "WORKER  APP  TAGS  CPU%  MEM FREE/TOTAL MB  DISK FREE/TOTAL MB  RUNNING  LAST SEEN  CONNECTED\n"
        );
    }

    #[test]
    fn cluster_table_marks_the_leader() {
        let node = |id: u64, role: NodeRole, reachable: bool| NodeView {
            id,
            grpc_addr: format!("10.0.0.{id}:7800"),
            http_addr: (id != 3).then(|| format!("10.0.0.{id}:7700")),
            role,
            reachable,
        };
        let view = ClusterView {
            node_id: 2,
            state: "follower".to_owned(),
            leader_id: Some(1),
            term: 4,
            last_log_index: Some(42),
            commit_index: Some(41),
            applied_index: None,
            snapshot_index: None,
            purged_index: None,
            nodes: vec![
                node(3, NodeRole::Learner, false),
                node(1, NodeRole::Voter, true),
                node(2, NodeRole::Voter, true),
            ],
            memory: Some(MemoryView {
                rss_bytes: Some(190_400_000),
                block_cache_bytes: 60_000_000,
                memtable_bytes: 12_340_000,
            }),
        };
        let text = cluster(&view);
        let expected = "\
node:      2
state:     follower
leader:    1
term:      4
last log:  42
commit:    41
applied:   -
memory:    190.4 MB resident; RocksDB: 60.0 MB block cache, 12.3 MB memtables

ID  ROLE     GRPC           HTTP           REACHABLE  LEADER
1   voter    10.0.0.1:7800  10.0.0.1:7700  yes        *
2   voter    10.0.0.2:7800  10.0.0.2:7700  yes
3   learner  10.0.0.3:7800  -              no
";
        assert_eq!(text, expected);
    }
}
