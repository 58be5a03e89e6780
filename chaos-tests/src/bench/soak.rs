//! `qron-bench soak`: N fixed-rate 1 s jobs (no-op processor, two workers)
//! for M minutes with the cluster's retention set to a few minutes. Every
//! minute: each server's resident memory and data dir size, instances made and
//! expired. At the end: minute 10 against the last minute (flat means within
//! 10%), and the chaos checker's fire invariant over the whole run (every fire
//! time of every job has exactly one instance, or its instance expired and the
//! job's expiry record accounts for it).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use qron_chaos_tests::chaos::{check_fires, expected_fires, Report};
use qron_chaos_tests::epoch_ms;
use qron_proto::api::{InstanceList, InstanceView, JobView};
use serde_json::json;

/// One minute's figures: per server (rss, disk), and instances made and expired.
struct Mark {
    minute: u64,
    servers: Vec<(u64, u64, u64)>,
    newest: u64,
    expired: u64,
}

pub async fn run(
    jobs: usize,
    minutes: u64,
    retention_ms: u64,
    snapshot_logs: u64,
    server_args: Vec<String>,
) -> anyhow::Result<()> {
    let (c, _) = super::worker_cluster_with(qron_chaos_tests::ClusterOptions {
        snapshot_logs,
        server_args,
        ..Default::default()
    })
    .await?;
    let leader = c.wait_leader(Duration::from_secs(20)).await?;
    let (status, body) = c
        .send(
            leader,
            reqwest::Method::PUT,
            "/api/v1/cluster/retention",
            Some(&json!({"max_age_ms": retention_ms})),
        )
        .await?;
    anyhow::ensure!(status == 200, "set retention: {status} {body}");
    let t0 = (epoch_ms() / 1000 + 10 + jobs as i64 / 500) * 1000;
    let t_end = t0 + minutes as i64 * 60_000;
    let made: Vec<anyhow::Result<serde_json::Value>> = stream::iter(0..jobs)
        .map(|i| {
            let c = &c;
            async move {
                c.post_ok(
                    leader,
                    "/api/v1/jobs",
                    &json!({"app": "bench", "name": format!("soak-{i}"),
                            "schedule": {"type": "fixed_rate", "interval_ms": 1000, "start_at_ms": t0},
                            "lifecycle": {"not_after_ms": t_end},
                            "processor": {"type": "custom", "name": "noop"}}),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ids: Vec<u64> = made
        .into_iter()
        .map(|r| r.map(|v| v["id"].as_u64().unwrap_or(0)))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "soak: {} jobs, t0 in {} s, {minutes} min, retention {retention_ms} ms",
        ids.len(),
        (t0 - epoch_ms()) / 1000
    );
    tokio::time::sleep(Duration::from_millis((t0 - epoch_ms()).max(0) as u64)).await;
    let start = Instant::now();
    let mut marks = Vec::new();
    // The leader's term at each minute: a leader change between two marks shows.
    let mut terms: Vec<u64> = Vec::new();
    for minute in 1..=minutes {
        let due = Duration::from_secs(minute * 60);
        tokio::time::sleep(due.saturating_sub(start.elapsed())).await;
        let mut servers = Vec::new();
        let mut rocks = Vec::new();
        for id in c.running() {
            let s = c.server(id)?;
            let rss = s.pid().map(|p| super::rss_bytes(p).unwrap_or(0)).unwrap_or(0);
            servers.push((id, rss, super::dir_bytes(&s.data_dir)));
            // What of the resident memory is RocksDB's (bounded) cache and memtables.
            rocks.push(
                c.cluster_view(id)
                    .await
                    .and_then(|v| v.memory)
                    .map(|m| (m.block_cache_bytes, m.memtable_bytes)),
            );
        }
        let l = c.wait_leader(Duration::from_secs(20)).await?;
        let term = c.cluster_view(l).await.map_or(0, |v| v.term);
        terms.push(term);
        let v: InstanceList = c.get(l, "/api/v1/instances?limit=1&stale=true").await?;
        let newest = v.instances.first().map_or(0, |i| i.id);
        let expired = v.history.map_or(0, |h| h.expired);
        let row: Vec<String> = servers
            .iter()
            .zip(&rocks)
            .map(|((id, rss, disk), rocks)| {
                let (cache, memtables) = rocks.map_or(("-".to_owned(), "-".to_owned()), |(c, m)| {
                    (format!("{:.0}", c as f64 / 1e6), format!("{:.0}", m as f64 / 1e6))
                });
                format!(
                    "node{id} rss_mb={:.0} cache_mb={cache} memtables_mb={memtables} disk_mb={:.0}",
                    *rss as f64 / 1e6,
                    *disk as f64 / 1e6
                )
            })
            .collect();
        println!(
            "soak minute {minute}: instances={newest} expired={expired} held={} leader=node{l} term={term} {}",
            newest - expired,
            row.join(" ")
        );
        marks.push(Mark {
            minute,
            servers,
            newest,
            expired,
        });
    }
    // Flat: minute 10 (or the middle of a shorter run) against the last minute.
    let at = marks
        .iter()
        .find(|m| m.minute == 10.min(minutes / 2).max(1))
        .context("a mark")?;
    let last = marks.last().context("a mark")?;
    for ((id, rss0, disk0), (_, rss1, disk1)) in at.servers.iter().zip(&last.servers) {
        let pct = |a: u64, b: u64| (b as f64 - a as f64) * 100.0 / a.max(1) as f64;
        println!(
            "soak node{id}: minute {} -> {}: rss {:+.1}% disk {:+.1}%",
            at.minute,
            last.minute,
            pct(*rss0, *rss1),
            pct(*disk0, *disk1)
        );
    }
    // Disk moves in steps (a compaction, a snapshot file written beside the
    // last, the log purged behind it): the median of three minutes around each
    // mark is judged as well as the single minutes.
    let window = |mid: u64| -> Vec<&Mark> {
        marks
            .iter()
            .filter(|m| m.minute + 1 >= mid && m.minute <= mid + 1)
            .collect()
    };
    let (early, late) = (window(at.minute), window(last.minute.saturating_sub(1)));
    if early.len() == 3 && late.len() == 3 {
        for (i, (id, _, _)) in at.servers.iter().enumerate() {
            let median = |w: &[&Mark]| {
                let mut d: Vec<u64> = w.iter().filter_map(|m| m.servers.get(i).map(|s| s.2)).collect();
                d.sort_unstable();
                d.get(1).copied().unwrap_or(0)
            };
            let (a, b) = (median(&early), median(&late));
            println!(
                "soak node{id}: disk median of minutes {}-{} -> {}-{}: {:.0} -> {:.0} MB ({:+.1}%)",
                at.minute - 1,
                at.minute + 1,
                last.minute - 2,
                last.minute,
                a as f64 / 1e6,
                b as f64 / 1e6,
                (b as f64 - a as f64) * 100.0 / a.max(1) as f64
            );
        }
    }
    println!(
        "soak leadership: term {} at minute 1, {} at minute {minutes}",
        terms.first().copied().unwrap_or(0),
        terms.last().copied().unwrap_or(0)
    );
    println!(
        "soak instances: made={} expired={} held at the end={}",
        last.newest,
        last.expired,
        last.newest - last.expired
    );
    // The fire invariant over the whole run, expiry accounted.
    let l = c.wait_leader(Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut all: Vec<InstanceView> = Vec::new();
    let mut after = 0;
    loop {
        let page: InstanceList = c
            .get(l, &format!("/api/v1/instances?after_id={after}&limit=10000&stale=true"))
            .await?;
        let Some(last) = page.instances.last() else { break };
        after = last.id;
        all.extend(page.instances);
    }
    // Reads of one node's applied state (`stale`): it only moves forward, so
    // every read sees at least what the ones before it saw, and a read never
    // waits for a leadership confirmation that a loaded machine answers late.
    // The jobs after the instances: expiry goes on while the pages are read,
    // and a fire missing from them expired before its page was read, so
    // before its job's expiry record is read here.
    let mut views = Vec::new();
    for id in &ids {
        views.push(c.get::<JobView>(l, &format!("/api/v1/jobs/{id}?stale=true")).await?);
    }
    let started: BTreeSet<u64> = all.iter().filter(|i| i.started_at_ms.is_some()).map(|i| i.id).collect();
    let mut report = Report {
        jobs: ids.len(),
        instances: all.len(),
        ..Report::default()
    };
    check_fires(&views, &expected_fires(t0, t_end), &all, &started, &[], &mut report);
    println!("{}", report.summary().lines().nth(1).unwrap_or_default());
    for p in report.problems.iter().take(10) {
        println!("soak problem: {p}");
    }
    Ok(())
}
