//! Workloads and actions shared by the action modules' tests.

use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet},
    jiff::Timestamp,
};
use serde_json::{Value, json};

use super::action::{Mark, Request};
use crate::{crd::Action, names::REVISION_ANNOTATION, workload::Workload};

pub fn deployment(revision: &str, replicas: i32) -> Workload {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "namespace": "hg", "uid": "d-1", "annotations": {REVISION_ANNOTATION: revision}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "app", "image": format!("api:{revision}")}]}}}
    }))
    .unwrap();
    d.into()
}

pub fn replica_set(revision: &str, image: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": format!("api-{revision}"), "annotations": {REVISION_ANNOTATION: revision},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d-1"}]},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api", "pod-template-hash": "abc"}},
            "spec": {"containers": [{"name": "app", "image": image}]}}}
    }))
    .unwrap()
}

pub fn action(value: Value) -> Action {
    serde_json::from_value(value).unwrap()
}

pub fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

pub const MARK: Mark<'static> = Mark {
    step: "s",
    incident: "i",
};

/// The plan's request for that action on that workload, marked with
/// [`MARK`] at [`now`].
pub fn request<'a>(action: &'a Action, workload: &'a Workload) -> Request<'a> {
    Request {
        action,
        workload,
        mark: MARK,
        now: now(),
    }
}

/// What action `A` plans from these inputs at [`now`].
pub fn plan_of<A: super::Action>(
    action: &Action,
    workload: &Workload,
    inputs: &A::Inputs,
    mark: Mark<'_>,
) -> Result<super::Plan<A::Change>, super::Refusal> {
    A::plan(
        &Request {
            action,
            workload,
            mark,
            now: now(),
        },
        A::required(action)?,
        inputs,
    )
}
