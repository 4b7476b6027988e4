//! The heap one guarded pod costs the operator, without a cluster: 10,000
//! pods as the detection bench makes them (200 Deployments of 50, kwok's
//! status), read as the pod watch reads them, filed in a namespace's store
//! and indexed by each Deployment's selector. Live bytes are counted by
//! dhat's allocator; `make bench` runs it first, in a
//! second. The cluster bench's VmRSS adds the allocator's own overhead and
//! what the rest of the operator holds.
//!
//! Under `cargo test` (which runs benches without `--bench`) it does nothing.

use std::collections::BTreeMap;

use healing_guard_operator::pod::{GuardedPods, PodFacts, PodSelector, facts_event};
use k8s_openapi::api::core::v1::Pod;
use kube::{core::Selector, runtime::watcher};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const NAMESPACE: &str = "hgo-bench-x7k2p";
const DEPLOYMENTS: usize = 200;
const REPLICAS: usize = 50;

/// A pod as kwok leaves it running, of the bench's Deployment `deployment`.
fn pod(deployment: &str, index: usize) -> Pod {
    let hash = "7c9f8d6b5";
    let name = format!("{deployment}-{hash}-{index:05x}");
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": NAMESPACE, "generateName": format!("{deployment}-{hash}-"),
            "uid": format!("0b7c6f9e-1d2a-4c3b-9e8f-{index:012}"), "resourceVersion": "123456",
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "labels": {"app": deployment, "healing-guard.io/bench-role": "big", "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deployment}-{hash}"),
                "uid": "5d0e9c1a-7b6f-4e2d-8a3c-000000000001", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"nodeName": "kwok-node-1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": format!("registry.local/{deployment}:1")}]},
        "status": {
            "phase": "Running", "podIP": "10.0.0.1", "hostIP": "10.0.0.1", "startTime": "2026-12-07T10:00:01Z",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-07T10:00:01Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-07T10:00:02Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-07T10:00:02Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-07T10:00:00Z"}
            ],
            "containerStatuses": [{"name": "app", "image": format!("registry.local/{deployment}:1"), "imageID": "",
                "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2026-12-07T10:00:02Z"}}}]
        }
    }))
    .unwrap_or_default()
}

/// Heap bytes allocated and not yet freed.
fn live() -> isize {
    isize::try_from(dhat::HeapStats::get().curr_bytes).unwrap_or(isize::MAX)
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("pod memory bench: skipped (run it with `make bench`)");
        return;
    }
    // Counting only: testing mode writes no profile.
    let _profiler = dhat::Profiler::builder().testing().build();
    let deployments: Vec<String> = (0..DEPLOYMENTS).map(|i| format!("big-{i:03}")).collect();
    let pods = GuardedPods::default();
    let keys: BTreeMap<PodSelector, Selector> = deployments
        .iter()
        .map(|name| {
            let key = PodSelector {
                namespace: NAMESPACE.to_owned(),
                selector: format!("app={name}"),
            };
            (key, Selector::from_iter([("app".to_owned(), name.clone())]))
        })
        .collect();
    let mut filler = pods.register(NAMESPACE);
    pods.select(&keys);
    let empty = live();

    let count = DEPLOYMENTS * REPLICAS;
    let mut facts_alone = Vec::with_capacity(count);
    let before_facts = live();
    for (index, deployment) in deployments.iter().cycle().take(count).enumerate() {
        facts_alone.push(PodFacts::from(pod(deployment, index)));
    }
    let facts_bytes = live() - before_facts;
    drop(facts_alone);

    let before = live();
    filler.apply(watcher::Event::Init);
    for (index, deployment) in deployments.iter().cycle().take(count).enumerate() {
        filler.apply(facts_event(watcher::Event::InitApply(pod(
            deployment, index,
        ))));
    }
    filler.apply(watcher::Event::InitDone);
    let filed = live() - before;
    let selected: usize = keys
        .keys()
        .map(|key| pods.pods(key, |_| true).map_or(0, |found| found.len()))
        .sum();

    let per_pod = |bytes: isize| bytes as f64 / count as f64;
    println!("Pod store memory, {count} pods of {DEPLOYMENTS} Deployments, each selected by one");
    println!(
        "  empty store with {} selectors: {} bytes",
        keys.len(),
        empty
    );
    println!(
        "  the facts alone (a Vec of PodFacts): {:.0} bytes a pod (PodFacts itself {} bytes)",
        per_pod(facts_bytes),
        std::mem::size_of::<PodFacts>()
    );
    println!(
        "  filed in the store and indexed: {:.0} bytes a pod, {:.1} MiB in all ({selected} found by their selectors)",
        per_pod(filed),
        filed as f64 / 1024.0 / 1024.0
    );
}
