//! Least privilege, checked: every verb the chart grants the operator was
//! used. Run after the integration tests, against the same control plane
//! (`make test` does, with `--ignored`): it reads the API server's audit log
//! (cluster/up.sh audits every request a ServiceAccount makes), keeps the
//! requests of the operators the tests ran (ServiceAccount
//! `op-NS-healing-guard-operator` in namespace NS, the chart's RBAC for
//! release `op-NS`), renders the chart's RBAC as the tests install it, and
//! fails on any (API group, resource, verb) granted that no operator used.
//! A request made but not granted would already have failed its test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;

type Grant = (String, String, String);

/// A Role or ClusterRole, as much of it as matters here.
#[derive(Deserialize)]
struct Role {
    kind: String,
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

fn granted() -> BTreeSet<Grant> {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/healing-guard-operator");
    let output = Command::new("helm")
        .args(["template", "op-x"])
        .arg(&chart)
        .args([
            "--namespace",
            "x",
            "--set",
            "watchNamespace=x",
            "--set",
            "evidence.captureLogs=true",
            // As tests/cluster/service_actions.rs installs it for its patch steps.
            "--set",
            "actions.patch[0].apiGroup=acid.zalan.do",
            "--set",
            "actions.patch[0].resources[0]=postgresqls",
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .expect("helm (run this with `make test`)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut grants = BTreeSet::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let Ok(role) = Role::deserialize(document) else {
            continue;
        };
        if role.kind != "Role" && role.kind != "ClusterRole" {
            continue;
        }
        for rule in role.rules {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        grants.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    grants
}

fn used(audit_log: &Path) -> BTreeMap<Grant, usize> {
    let text = std::fs::read_to_string(audit_log)
        .unwrap_or_else(|error| panic!("{}: {error}", audit_log.display()));
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let user = event["user"]["username"].as_str().unwrap_or_default();
        // system:serviceaccount:NS:op-NS-healing-guard-operator
        let Some((namespace, account)) = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        if account != format!("op-{namespace}-healing-guard-operator") {
            continue;
        }
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            continue;
        };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let group = object["apiGroup"].as_str().unwrap_or_default().to_owned();
        let verb = event["verb"].as_str().unwrap_or_default().to_owned();
        *calls.entry((group, resource, verb)).or_default() += 1;
    }
    calls
}

#[test]
#[ignore = "needs the audit log of a whole integration run: `make test` runs it"]
fn every_verb_the_chart_grants_was_used() {
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG: run this with `make test`");
    let audit_log = Path::new(&kubeconfig).with_file_name("audit.log");
    let (grants, calls) = (granted(), used(&audit_log));
    assert!(
        !calls.is_empty(),
        "no request of a test operator in {}",
        audit_log.display()
    );
    println!("RBAC granted to the operator, and how often the tests' operators used it:");
    for grant @ (group, resource, verb) in &grants {
        let group = if group.is_empty() { "core" } else { group };
        let count = calls.get(grant).copied().unwrap_or(0);
        println!("  {group:20} {resource:30} {verb:8} {count:>7}");
    }
    let unused: Vec<_> = grants.iter().filter(|g| !calls.contains_key(*g)).collect();
    assert!(
        unused.is_empty(),
        "granted but never used (remove it, or test the code that needs it): {unused:?}"
    );
}
