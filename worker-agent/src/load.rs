//! The machine's load as the heartbeat reports it: CPU use, memory and disk.
//!
//! This module is the only one that touches `sysinfo`. It reads the system at most
//! once per call and is called at most once per heartbeat; it never blocks on anything
//! but local `/proc`-style reads (the connection calls it on a blocking thread).

use std::path::PathBuf;

use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

const MB: u64 = 1024 * 1024;

/// One reading of the machine's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LoadSample {
    pub(crate) cpu_cores: u32,
    /// 0..100 across all cores (since the previous reading).
    pub(crate) cpu_percent: f64,
    pub(crate) memory_total_mb: u64,
    pub(crate) memory_free_mb: u64,
    pub(crate) disk_total_mb: u64,
    pub(crate) disk_free_mb: u64,
}

/// Keeps the `sysinfo` handles between readings (CPU use is a difference of two).
pub(crate) struct LoadSampler {
    sys: System,
    disks: Disks,
    dir: Option<PathBuf>,
}

impl LoadSampler {
    pub(crate) fn new() -> Self {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        LoadSampler {
            sys,
            disks: Disks::new_with_refreshed_list(),
            dir: std::env::current_dir().ok(),
        }
    }

    /// Reads the system now.
    pub(crate) fn sample(&mut self) -> LoadSample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        // `true`: forget disks that were unmounted since the last reading.
        self.disks.refresh(true);
        let cpu_cores = match self.sys.cpus().len() {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (disk_total, disk_free) = self.disk_space();
        LoadSample {
            cpu_cores: u32::try_from(cpu_cores).unwrap_or(u32::MAX),
            cpu_percent: f64::from(self.sys.global_cpu_usage()).clamp(0.0, 100.0),
            memory_total_mb: self.sys.total_memory() / MB,
            memory_free_mb: self.sys.available_memory() / MB,
            disk_total_mb: disk_total / MB,
            disk_free_mb: disk_free / MB,
        }
    }

    /// Space of the filesystem holding the working directory (where scripts write), or
    /// the sum over all disks when that one cannot be told.
    fn disk_space(&self) -> (u64, u64) {
        let list = self.disks.list();
        let holding = self.dir.as_ref().and_then(|dir| {
            list.iter()
                .filter(|d| dir.starts_with(d.mount_point()))
                .max_by_key(|d| d.mount_point().as_os_str().len())
        });
        match holding {
            Some(d) => (d.total_space(), d.available_space()),
            None => list
                .iter()
                .fold((0, 0), |(t, f), d| (t + d.total_space(), f + d.available_space())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_plausible() {
        let mut s = LoadSampler::new();
        let a = s.sample();
        assert!(a.cpu_cores >= 1);
        assert!(a.memory_total_mb > 0);
        assert!(a.memory_free_mb <= a.memory_total_mb);
        assert!((0.0..=100.0).contains(&a.cpu_percent));
        assert!(a.disk_free_mb <= a.disk_total_mb);
    }
}
