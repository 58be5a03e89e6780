//! Choosing a worker for an instance: the job's filter first, then its strategy.
//! Pure functions of the registry snapshot, so they are tested without a cluster.

use std::collections::HashMap;

use qron_proto::api::{DispatchStrategy, JobSpec};
use qron_raft_store::WorkerId;

use super::registry::Worker;

/// Why no worker was chosen, for the instance's reason.
pub fn no_worker_reason(job: &JobSpec, workers: &[Worker]) -> String {
    let of_app = workers.iter().filter(|w| w.reg.app == job.app).count();
    if of_app == 0 {
        format!("no live worker of app {:?}", job.app)
    } else {
        format!(
            "none of the {of_app} live workers of app {:?} passes the job's worker filter or has a free slot",
            job.app
        )
    }
}

/// Whether some live worker passes the job's filter, busy or not: if so, an
/// instance that found no free slot waits for one instead of failing.
pub fn any_matching(job: &JobSpec, workers: &[Worker]) -> bool {
    workers.iter().any(|w| matches_filter(job, w))
}

fn matches_filter(job: &JobSpec, w: &Worker) -> bool {
    let f = &job.worker_filter;
    w.reg.app == job.app
        && w.connected()
        && f.tags.iter().all(|t| w.reg.tags.contains(t))
        && w.reg.cpu_cores >= f.min_cpu_cores
        && (f.min_memory_mb == 0 || w.load.memory_free_mb >= f.min_memory_mb)
        && (f.min_disk_mb == 0 || w.load.disk_free_mb >= f.min_disk_mb)
        && (f.designated_workers.is_empty() || f.designated_workers.iter().any(|d| d == w.reg.worker_id.as_str()))
}

/// Whether `w` may run an instance of `job` now, given `pending` instances already
/// handed to it in this round.
pub fn eligible(job: &JobSpec, w: &Worker, pending: u32) -> bool {
    matches_filter(job, w) && (w.load.running.len() as u32).saturating_add(pending) < w.reg.max_concurrency.max(1)
}

/// Picks a worker per the job's strategy. `turn` drives round-robin and random
/// (the caller advances it), so the choice is reproducible in tests.
pub fn pick<'a>(
    job: &JobSpec,
    workers: &'a [Worker],
    pending: &HashMap<WorkerId, u32>,
    turn: u64,
) -> Option<&'a Worker> {
    let pending_of = |w: &Worker| pending.get(&w.reg.worker_id).copied().unwrap_or(0);
    let mut ok: Vec<&Worker> = workers.iter().filter(|w| eligible(job, w, pending_of(w))).collect();
    if ok.is_empty() {
        return None;
    }
    ok.sort_by(|a, b| a.reg.worker_id.cmp(&b.reg.worker_id));
    match job.dispatch_strategy {
        DispatchStrategy::HealthFirst => ok.into_iter().min_by(|a, b| {
            let load = |w: &Worker| {
                (w.load.running.len() as f64 + f64::from(pending_of(w))) / f64::from(w.reg.max_concurrency.max(1))
            };
            load(a)
                .total_cmp(&load(b))
                .then(a.load.cpu_percent.total_cmp(&b.load.cpu_percent))
                .then(b.load.memory_free_mb.cmp(&a.load.memory_free_mb))
        }),
        DispatchStrategy::RoundRobin => Some(ok[(turn % ok.len() as u64) as usize]),
        DispatchStrategy::Random => {
            // splitmix64 of the turn: spread without a random-number dependency.
            let mut z = turn.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            Some(ok[(z % ok.len() as u64) as usize])
        }
    }
}

#[cfg(test)]
mod tests {

    use tokio::sync::mpsc;

    use super::*;
    use crate::dispatch::registry::{Load, Registration, Registry};

    fn job(extra: serde_json::Value) -> JobSpec {
        let mut v = serde_json::json!({
            "app": "demo", "name": "j", "schedule": {"type": "api"},
            "processor": {"type": "shell", "script": "true"}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("job")
    }

    fn registry(
        workers: &[(&str, &[&str], usize, f64)],
    ) -> (
        Registry,
        Vec<mpsc::Receiver<Result<qron_proto::worker::ServerMessage, tonic::Status>>>,
    ) {
        let r = Registry::default();
        let mut rxs = vec![];
        for (id, tags, running, cpu) in workers {
            let (tx, rx) = mpsc::channel(4);
            rxs.push(rx);
            let conn = r.register(Registration::for_test(id, "i1", tags), tx);
            r.heartbeat(
                &WorkerId::new(*id),
                conn,
                Load {
                    cpu_percent: *cpu,
                    memory_free_mb: 500,
                    disk_free_mb: 500,
                    running: (0..*running as u64)
                        .map(|i| (qron_raft_store::InstanceId(i), qron_raft_store::Attempt(1)))
                        .collect(),
                },
            );
        }
        (r, rxs)
    }

    #[test]
    fn health_first_takes_the_least_loaded() {
        let (r, _rx) = registry(&[("a", &[], 2, 10.0), ("b", &[], 0, 90.0), ("c", &[], 0, 20.0)]);
        let ws = r.snapshot();
        let p = pick(&job(serde_json::json!({})), &ws, &HashMap::new(), 0).expect("a worker");
        assert_eq!(p.reg.worker_id.as_str(), "c");
        // Pending assignments of this round count as load.
        let pending = HashMap::from([(WorkerId::new("c"), 2u32)]);
        let p = pick(&job(serde_json::json!({})), &ws, &pending, 0).expect("a worker");
        assert_eq!(p.reg.worker_id.as_str(), "b");
    }

    #[test]
    fn filters_tags_designated_capacity_and_memory() {
        let (r, _rx) = registry(&[("a", &["gpu"], 0, 0.0), ("b", &[], 0, 0.0), ("full", &["gpu"], 4, 0.0)]);
        let ws = r.snapshot();
        let gpu = job(serde_json::json!({"worker_filter": {"tags": ["gpu"]}}));
        assert_eq!(
            pick(&gpu, &ws, &HashMap::new(), 0).map(|w| w.reg.worker_id.as_str()),
            Some("a")
        );
        let designated = job(serde_json::json!({"worker_filter": {"designated_workers": ["b"]}}));
        assert_eq!(
            pick(&designated, &ws, &HashMap::new(), 0).map(|w| w.reg.worker_id.as_str()),
            Some("b")
        );
        let big = job(serde_json::json!({"worker_filter": {"min_memory_mb": 600}}));
        assert!(pick(&big, &ws, &HashMap::new(), 0).is_none());
        let other_app = job(serde_json::json!({"app": "other"}));
        assert!(pick(&other_app, &ws, &HashMap::new(), 0).is_none());
        assert!(no_worker_reason(&other_app, &ws).contains("no live worker of app"));
        // A full worker that matches means "wait", not "fail".
        let only_full = job(serde_json::json!({"worker_filter": {"designated_workers": ["full"]}}));
        assert!(pick(&only_full, &ws, &HashMap::new(), 0).is_none());
        assert!(any_matching(&only_full, &ws));
        assert!(!any_matching(&other_app, &ws));
    }

    #[test]
    fn round_robin_cycles() {
        let (r, _rx) = registry(&[("a", &[], 0, 0.0), ("b", &[], 0, 0.0)]);
        let ws = r.snapshot();
        let rr = job(serde_json::json!({"dispatch_strategy": "round_robin"}));
        let picks: Vec<String> = (0..4)
            .map(|t| {
                pick(&rr, &ws, &HashMap::new(), t)
                    .map(|w| w.reg.worker_id.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }
}
