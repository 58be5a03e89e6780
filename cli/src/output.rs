//! How answers are shown: `-o json` (the server's JSON, pretty-printed) or
//! `-o table` (aligned columns and short texts for people).
//!
//! Formatting is pure (answers in, text out) so it can be tested; the only I/O
//! is [`emit`]. Text that came from the server has its control characters
//! replaced before it reaches a terminal.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::ValueEnum;
use qron_proto::api::{AppView, ClusterView, JobView, NodeRole, Processor, Schedule};
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

/// `cluster status` (and the answer of `add-node`/`remove-node`): the node's
/// Raft state, then one line per member.
pub fn cluster(view: &ClusterView) -> String {
    let leader = view
        .leader_id
        .map_or_else(|| "none known".to_owned(), |id| id.to_string());
    let mut out = pairs(&[
        ("node", view.node_id.to_string()),
        ("state", view.state.clone()),
        ("leader", leader),
        ("term", view.term.to_string()),
        ("last log", or_dash(view.last_log_index)),
        ("commit", or_dash(view.commit_index)),
        ("applied", or_dash(view.applied_index)),
    ]);
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

#[cfg(test)]
mod tests {
    use qron_proto::api::NodeView;

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

ID  ROLE     GRPC           HTTP           REACHABLE  LEADER
1   voter    10.0.0.1:7800  10.0.0.1:7700  yes        *
2   voter    10.0.0.2:7800  10.0.0.2:7700  yes
3   learner  10.0.0.3:7800  -              no
";
        assert_eq!(text, expected);
    }
}
