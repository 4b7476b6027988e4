//! Tests against a real control plane (etcd, kube-apiserver with RBAC,
//! controller-manager, scheduler and kwok nodes), started by `make test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admission;
mod apiserver_restart;
mod authority;
mod bad_hour;
mod bounded;
mod channels;
mod chart;
mod communication;
mod control_plane;
mod detection;
mod faults;
mod gitops;
mod incident;
mod leader;
mod operations;
mod plugin;
mod policy;
mod policy_tests;
mod probes_tls;
mod real_node;
mod remediation;
mod service_actions;
mod signals;
mod tenancy;
mod validation;
