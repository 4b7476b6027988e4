//! Where the operator under test runs (`HGO_BENCH_OPERATOR`): `host`, the
//! release binary as a process of this machine (the integration tests'
//! harness), or `pod`, the image installed by the chart on the real node
//! (`in_pod`). Either way its process is this kernel's: the same readings
//! of memory and CPU apply to both, and a pod adds its cgroup's.

use std::{path::PathBuf, time::Instant};

use kube::Client;

use crate::{
    Result,
    cgroup::Usage,
    cpu,
    in_pod::{InPod, Restarts},
    memory::{self, Memory},
    support::{Launch, Operator},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Host,
    Pod,
}

impl Mode {
    /// From `HGO_BENCH_OPERATOR` (default `host`); `make bench` runs one
    /// cluster for each.
    pub fn from_env() -> Result<Mode> {
        match std::env::var("HGO_BENCH_OPERATOR").as_deref() {
            Err(_) | Ok("" | "host") => Ok(Mode::Host),
            Ok("pod") => Ok(Mode::Pod),
            Ok(other) => Err(format!(
                "HGO_BENCH_OPERATOR={other}: the bench runs host or pod (make bench runs both, one cluster each)"
            )
            .into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Host => "host",
            Mode::Pod => "pod",
        }
    }
}

pub enum Running {
    Host(Operator),
    Pod(Box<InPod>),
}

/// The operator's process (and, in a pod, its cgroup) at one moment.
pub struct Reading {
    pub memory: Memory,
    pub cgroup: Option<Usage>,
    pub restarts: Option<Restarts>,
}

impl Running {
    /// Starts the operator cluster-wide, as in production, with its
    /// ServiceAccount in `namespace`.
    pub async fn start(mode: Mode, client: &Client, namespace: &str) -> Result<Running> {
        match mode {
            Mode::Host => Ok(Running::Host(
                Operator::launch(&Launch {
                    namespace,
                    namespaced: false,
                    extra: &[],
                    log_filter: "warn",
                    failpoints: "",
                    capture_logs: false,
                    chart_values: &[],
                })
                .await?,
            )),
            Mode::Pod => Ok(Running::Pod(Box::new(
                InPod::install(client, namespace).await?,
            ))),
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            Running::Host(_) => Mode::Host,
            Running::Pod(_) => Mode::Pod,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Running::Host(operator) => format!(
                "operator {} started (pid {}), log {}",
                env!("CARGO_BIN_EXE_healing-guard-operator"),
                operator.pid(),
                operator.log.display()
            ),
            Running::Pod(pod) => format!(
                "operator pod {} on {} (image {}, pid {}, resources {})",
                pod.pod,
                pod.node,
                pod.image,
                pod.pid(),
                pod.resources
            ),
        }
    }

    /// One line for the report's header.
    pub fn summary(&self) -> String {
        match self {
            Running::Host(operator) => format!("host process, pid {}", operator.pid()),
            Running::Pod(pod) => format!(
                "in its pod {} from {}, the chart's resources {}",
                pod.pod, pod.image, pod.resources
            ),
        }
    }

    pub async fn reading(&self) -> Result<Reading> {
        match self {
            Running::Host(operator) => Ok(Reading {
                memory: memory::read(operator.pid())?,
                cgroup: None,
                restarts: None,
            }),
            Running::Pod(pod) => {
                let (pid, cgroup) = pod.current().await?;
                Ok(Reading {
                    memory: memory::read(pid)?,
                    cgroup: Some(cgroup.usage()?),
                    restarts: Some(pod.restarts().await?),
                })
            }
        }
    }

    pub async fn cpu_sample(&self) -> Result<cpu::Sample> {
        let at = Instant::now();
        let (pid, throttling) = match self {
            Running::Host(operator) => (operator.pid(), None),
            Running::Pod(pod) => {
                let (pid, cgroup) = pod.current().await?;
                let usage = cgroup.usage()?;
                let throttling = (usage.periods, usage.throttled_periods, usage.throttled_s);
                (pid, Some(throttling))
            }
        };
        Ok(cpu::Sample {
            at,
            process_s: cpu::process_seconds(pid)?,
            throttling,
        })
    }

    /// Stops it (SIGTERM, or `helm uninstall`); where its log is.
    pub fn stop(self) -> Result<PathBuf> {
        match self {
            Running::Host(operator) => {
                let log = operator.log.clone();
                if !operator.terminate() {
                    eprintln!("[bench] the operator did not stop cleanly on SIGTERM");
                }
                Ok(log)
            }
            Running::Pod(pod) => pod.uninstall(),
        }
    }

    /// Where its log is (or will be, for a pod: kept when it stops).
    pub fn log(&self) -> PathBuf {
        match self {
            Running::Host(operator) => operator.log.clone(),
            Running::Pod(_) => crate::support::repo()
                .join("target")
                .join("bench")
                .join("pod-operator.log"),
        }
    }
}
