//! The operator's memory, from /proc/PID/status (in a pod, its cgroup's
//! too: `cgroup`).

use std::time::Duration;

use crate::{Result, cgroup, in_pod::Restarts};

#[derive(Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    /// VmHWM: the highest RSS so far.
    pub peak_kib: u64,
}

/// Memory at one point of the run.
pub struct MemoryPoint {
    pub label: String,
    pub pods_in_cluster: usize,
    pub guarded_pods: usize,
    pub memory: Memory,
    /// In a pod: its container's cgroup, and its restarts so far.
    pub cgroup: Option<cgroup::Usage>,
    pub restarts: Option<Restarts>,
    /// How long it took to bring the cluster to this point (settling excluded).
    pub took: Duration,
}

/// VmRSS and VmHWM of process `pid`.
pub fn read(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse::<u64>()?)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}
