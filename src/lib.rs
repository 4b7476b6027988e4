//! healing-guard-operator: watches guarded workloads, opens Incidents when
//! they fail, and runs the containment steps a RemediationPolicy prescribes.
#![forbid(unsafe_code)]

pub mod authority;
pub mod communication;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod detector;
pub mod egress;
pub mod failpoint;
pub mod gitops;
pub mod incident;
pub mod k8s;
pub mod leader;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod notifier;
pub mod placeholders;
pub mod plugin;
pub mod pod;
pub mod policy;
pub mod reconcile;
pub mod reference;
pub mod remediation;
pub mod server;
pub mod signals;
pub mod simulation;
pub mod telemetry;
pub mod validation;
pub mod warnings;
pub mod workload;
