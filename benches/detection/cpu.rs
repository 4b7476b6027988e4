//! The operator's CPU: its process's time (`/proc/PID/stat`, the same for
//! the host process and the one in its pod), sampled once a second through
//! the run, and what each phase used of it: CPU seconds, mean cores, the
//! busiest second, and, in a pod, the CFS periods it was throttled.

use std::{
    convert::Infallible,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use crate::{Result, operator::Running};

/// How often the sampler reads.
const EVERY: Duration = Duration::from_secs(1);

/// One reading.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// The process's user and system time so far, in seconds.
    pub process_s: f64,
    /// In a pod: the cgroup's CFS periods, throttled periods and throttled time.
    pub throttling: Option<(u64, u64, f64)>,
}

/// CPU used over a stretch of the run.
#[derive(Clone, Copy, Default)]
pub struct Use {
    pub cpu_s: f64,
    pub mean_cores: f64,
    /// The most used between two readings (about a second), in cores.
    pub busiest_cores: f64,
    /// In a pod: CFS periods in the stretch, throttled ones, time throttled.
    pub throttling: Option<(u64, u64, f64)>,
}

/// User plus system time of process `pid`, in seconds.
pub fn process_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: count after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("/proc/{pid}/stat: no command name"))?;
    // After the name: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> Result<f64> {
        let field = fields
            .get(index - 3)
            .ok_or_else(|| format!("/proc/{pid}/stat: no field {index}"))?;
        Ok(field.parse::<u64>()? as f64)
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux almost always).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The readings of one run.
#[derive(Default)]
pub struct Sampler {
    samples: Mutex<Vec<Sample>>,
}

impl Sampler {
    /// Reads every second, for as long as it is polled (drop it to stop).
    pub async fn run(&self, operator: &Running) -> Infallible {
        loop {
            // A missed reading (the pod's container restarting) leaves a gap.
            if let Ok(sample) = operator.cpu_sample().await
                && let Ok(mut samples) = self.samples.lock()
            {
                samples.push(sample);
            }
            tokio::time::sleep(EVERY).await;
        }
    }

    /// What the operator used between `from` and `to` (the readings
    /// nearest inside them); None with fewer than two readings there.
    pub fn between(&self, from: Instant, to: Instant) -> Option<Use> {
        let samples = self.samples.lock().ok()?;
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| from <= s.at && s.at <= to)
            .collect();
        let (first, last) = (inside.first()?, inside.last()?);
        let mut cpu_s = 0.0;
        let mut busiest: f64 = 0.0;
        for pair in inside.windows(2) {
            let used = pair[1].process_s - pair[0].process_s;
            // A restarted container's process counts from zero again.
            if used < 0.0 {
                continue;
            }
            cpu_s += used;
            let length = pair[1].at.duration_since(pair[0].at).as_secs_f64();
            if length > 0.0 {
                busiest = busiest.max(used / length);
            }
        }
        let length = last.at.duration_since(first.at).as_secs_f64();
        if length <= 0.0 {
            return None;
        }
        let throttling = match (first.throttling, last.throttling) {
            (Some(a), Some(b)) => Some((
                b.0.saturating_sub(a.0),
                b.1.saturating_sub(a.1),
                (b.2 - a.2).max(0.0),
            )),
            _ => None,
        };
        Some(Use {
            cpu_s,
            mean_cores: cpu_s / length,
            busiest_cores: busiest,
            throttling,
        })
    }
}
