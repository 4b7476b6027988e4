//! Signals beyond pod status: alerts Alertmanager delivers (`alerts`), and
//! probes the operator runs itself against
//! services (HTTP, Redis, PostgreSQL). `check` runs one check (`stores` the
//! Redis and PostgreSQL ones, `tls` their TLS), `tracker`
//! decides from a probe's results whether it is failing (thresholds and
//! hysteresis, pure), and `prober` schedules every policy's probes and
//! hands their results to the detector, which opens and clears incidents
//! from them as it does from pod symptoms.

pub mod alerts;
pub mod check;
pub mod prober;
mod reading;
mod stores;
pub mod tls;
pub mod tracker;
