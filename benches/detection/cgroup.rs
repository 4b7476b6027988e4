//! What the kernel charges a container: its process found by the
//! container's ID in `/proc/*/cgroup` (the node runs on this host, so its
//! containers' processes are this kernel's), and its cgroup's memory and CPU
//! read from `/sys/fs/cgroup` (the CPU time is the process's, `cpu`), v1 (one hierarchy per controller) or v2.

use std::path::{Path, PathBuf};

use crate::Result;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directories a process is in: one for memory and one for the
/// CPU limit (the same directory on v2).
#[derive(Clone, Debug)]
pub struct Cgroup {
    memory: PathBuf,
    cpu: PathBuf,
    v2: bool,
}

/// A container's cgroup, read at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// What the cgroup is charged (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_bytes: u64,
    /// Usage less inactive file pages: what the kubelet calls the working set.
    pub working_set_bytes: u64,
    /// The highest charge so far (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub memory_peak_bytes: Option<u64>,
    /// The memory limit; None when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// OOM kills in the cgroup (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_kills: Option<u64>,
    /// CFS periods, those in which the cgroup was throttled, and the time
    /// it spent throttled (all 0 without a CPU limit).
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_s: f64,
    /// The CPU limit in cores; None when unlimited.
    pub cpu_limit_cores: Option<f64>,
}

/// The PID of the process in the container `container_id` (the container's
/// first process: its entrypoint, the operator).
pub fn container_pid(container_id: &str) -> Result<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while the directory is read.
        let Ok(cgroups) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if cgroups.contains(container_id) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    found
        .first()
        .copied()
        .ok_or_else(|| format!("no process in container {container_id} on this host").into())
}

impl Cgroup {
    /// The cgroups of process `pid`, from `/proc/PID/cgroup`.
    pub fn of(pid: u32) -> Result<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        // v1 lines are `ID:controllers:path`; v2's one line is `0::path`.
        let v1 = |wanted: &str| {
            text.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers.split(',').any(|c| c == wanted).then(|| {
                    Path::new(ROOT)
                        .join(controllers)
                        .join(path.trim_start_matches('/'))
                })
            })
        };
        if let (Some(memory), Some(cpu)) = (v1("memory"), v1("cpu")) {
            return Ok(Cgroup {
                memory,
                cpu,
                v2: false,
            });
        }
        let unified = text
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .ok_or_else(|| format!("no memory or unified cgroup in /proc/{pid}/cgroup:\n{text}"))?;
        let dir = Path::new(ROOT).join(unified.trim_start_matches('/'));
        Ok(Cgroup {
            memory: dir.clone(),
            cpu: dir,
            v2: true,
        })
    }

    pub fn usage(&self) -> Result<Usage> {
        if self.v2 {
            self.usage_v2()
        } else {
            self.usage_v1()
        }
    }

    fn usage_v1(&self) -> Result<Usage> {
        let memory_bytes = number(&self.memory.join("memory.usage_in_bytes"))?;
        let stat = keyed(&self.memory.join("memory.stat"))?;
        let inactive_file = stat.get("total_inactive_file").copied().unwrap_or_default();
        // v1 says "unlimited" with the largest page-aligned number.
        let limit = number(&self.memory.join("memory.limit_in_bytes"))?;
        let oom = keyed(&self.memory.join("memory.oom_control")).ok();
        let cpu = keyed(&self.cpu.join("cpu.stat"))?;
        let quota = signed(&self.cpu.join("cpu.cfs_quota_us"))?;
        let period = number(&self.cpu.join("cpu.cfs_period_us"))?;
        Ok(Usage {
            memory_bytes,
            working_set_bytes: memory_bytes.saturating_sub(inactive_file),
            memory_peak_bytes: number(&self.memory.join("memory.max_usage_in_bytes")).ok(),
            memory_limit_bytes: (limit < 1 << 62).then_some(limit),
            oom_kills: oom.and_then(|o| o.get("oom_kill").copied()),
            periods: cpu.get("nr_periods").copied().unwrap_or_default(),
            throttled_periods: cpu.get("nr_throttled").copied().unwrap_or_default(),
            throttled_s: cpu.get("throttled_time").copied().unwrap_or_default() as f64 / 1e9,
            cpu_limit_cores: (quota > 0 && period > 0).then(|| quota as f64 / period as f64),
        })
    }

    fn usage_v2(&self) -> Result<Usage> {
        let memory_bytes = number(&self.memory.join("memory.current"))?;
        let stat = keyed(&self.memory.join("memory.stat"))?;
        let inactive_file = stat.get("inactive_file").copied().unwrap_or_default();
        let events = keyed(&self.memory.join("memory.events")).ok();
        let cpu = keyed(&self.cpu.join("cpu.stat"))?;
        // `max 100000`, or `QUOTA PERIOD`.
        let cpu_max = std::fs::read_to_string(self.cpu.join("cpu.max"))?;
        let mut cpu_max = cpu_max.split_whitespace();
        let (quota, period) = (cpu_max.next(), cpu_max.next());
        let cpu_limit_cores = match (
            quota.and_then(|q| q.parse::<f64>().ok()),
            period.and_then(|p| p.parse::<f64>().ok()),
        ) {
            (Some(quota), Some(period)) if period > 0.0 => Some(quota / period),
            _ => None,
        };
        Ok(Usage {
            memory_bytes,
            working_set_bytes: memory_bytes.saturating_sub(inactive_file),
            memory_peak_bytes: number(&self.memory.join("memory.peak")).ok(),
            memory_limit_bytes: number(&self.memory.join("memory.max")).ok(),
            oom_kills: events.and_then(|e| e.get("oom_kill").copied()),
            periods: cpu.get("nr_periods").copied().unwrap_or_default(),
            throttled_periods: cpu.get("nr_throttled").copied().unwrap_or_default(),
            throttled_s: cpu.get("throttled_usec").copied().unwrap_or_default() as f64 / 1e6,
            cpu_limit_cores,
        })
    }
}

/// A file holding one number (`max`, v2's "unlimited", is an error).
fn number(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(text
        .trim()
        .parse::<u64>()
        .map_err(|error| format!("{}: {error} ({:?})", path.display(), text.trim()))?)
}

fn signed(path: &Path) -> Result<i64> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(text.trim().parse::<i64>()?)
}

/// A file of `key value` lines.
fn keyed(path: &Path) -> Result<std::collections::HashMap<String, u64>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}
