//! Least privilege, checked: every verb the chart grants was used, and the
//! operator's own identity changes nothing but its own kinds. Run after the
//! integration tests, against the same control plane (`make test` does,
//! with `--ignored`): it reads the API server's audit log (cluster/up.sh
//! audits every request a ServiceAccount makes), keeps the requests of the
//! operators the tests ran (ServiceAccount `op-NS-healing-guard-operator` in
//! namespace NS, the chart's RBAC for release `op-NS`), split into those made
//! as the operator itself and those made as a namespace's remediator (which
//! it impersonates), renders the chart's RBAC as the tests install it, and
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

/// The grants of the Roles and ClusterRoles of one of the chart's templates.
fn granted(template: &str) -> BTreeSet<Grant> {
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
            template,
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

/// What the tests' operators called: as themselves, and as a remediator.
#[derive(Default)]
struct Calls {
    own: BTreeMap<Grant, usize>,
    as_remediator: BTreeMap<Grant, usize>,
    /// Remediators acted as, by user name.
    remediators: BTreeSet<String>,
    /// Requests refused (401, 403).
    refused: usize,
}

fn used(audit_log: &Path) -> Calls {
    let text = std::fs::read_to_string(audit_log)
        .unwrap_or_else(|error| panic!("{}: {error}", audit_log.display()));
    let mut calls = Calls::default();
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
        // A refused request used no grant (the tenancy tests' hostile
        // policy is refused the impersonation of another account).
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        if code == 401 || code == 403 {
            calls.refused += 1;
            continue;
        }
        let group = object["apiGroup"].as_str().unwrap_or_default().to_owned();
        let verb = event["verb"].as_str().unwrap_or_default().to_owned();
        match event["impersonatedUser"]["username"].as_str() {
            Some(remediator) => {
                calls.remediators.insert(remediator.to_owned());
                *calls
                    .as_remediator
                    .entry((group, resource, verb))
                    .or_default() += 1;
            }
            None => *calls.own.entry((group, resource, verb)).or_default() += 1,
        }
    }
    if !calls.remediators.is_empty() {
        *calls
            .own
            .entry((
                String::new(),
                "serviceaccounts".into(),
                "impersonate".into(),
            ))
            .or_default() += calls.as_remediator.values().sum::<usize>();
    }
    calls
}

/// Prints the grants with how often they were used; fails on one unused.
fn all_used(whose: &str, grants: &BTreeSet<Grant>, calls: &BTreeMap<Grant, usize>) {
    println!("RBAC granted to {whose}, and how often the tests' operators used it:");
    for grant @ (group, resource, verb) in grants {
        let group = if group.is_empty() { "core" } else { group };
        let count = calls.get(grant).copied().unwrap_or(0);
        println!("  {group:20} {resource:30} {verb:12} {count:>7}");
    }
    let unused: Vec<_> = grants.iter().filter(|g| !calls.contains_key(*g)).collect();
    assert!(
        unused.is_empty(),
        "granted to {whose} but never used (remove it, or test the code that needs it): {unused:?}"
    );
}

/// Verbs that change something, or lend authority.
const WRITES: [&str; 7] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
    "escalate",
];

/// Whether the operator's own identity may make this change: its own
/// kinds, Events, its Lease, and acting as a remediator.
fn own_change(group: &str, resource: &str, verb: &str) -> bool {
    group == "healing-guard.io"
        || (group == "events.k8s.io" && resource == "events")
        || (group == "coordination.k8s.io" && resource == "leases")
        || (group.is_empty() && resource == "serviceaccounts" && verb == "impersonate")
}

#[test]
#[ignore = "needs the audit log of a whole integration run: `make test` runs it"]
fn every_verb_the_chart_grants_was_used() {
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG: run this with `make test`");
    let audit_log = Path::new(&kubeconfig).with_file_name("audit.log");
    let calls = used(&audit_log);
    assert!(
        !calls.own.is_empty(),
        "no request of a test operator in {}",
        audit_log.display()
    );
    all_used("the operator", &granted("templates/rbac.yaml"), &calls.own);
    all_used(
        "a namespace's remediator",
        &granted("templates/remediator.yaml"),
        &calls.as_remediator,
    );
}

#[test]
#[ignore = "needs the audit log of a whole integration run: `make test` runs it"]
fn the_operator_changes_nothing_but_its_own_kinds_as_itself() {
    // Granted: no write verb outside its own kinds, Events, its Lease.
    let own_grants = granted("templates/rbac.yaml");
    let writes: Vec<_> = own_grants
        .iter()
        .filter(|(group, resource, verb)| {
            WRITES.contains(&verb.as_str()) && !own_change(group, resource, verb)
        })
        .collect();
    assert!(
        writes.is_empty(),
        "the operator's own grants write {writes:?}"
    );
    // Done: every change elsewhere was made as a namespace's remediator of
    // the namespace the test ran in.
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG: run this with `make test`");
    let calls = used(&Path::new(&kubeconfig).with_file_name("audit.log"));
    let own_writes: Vec<_> = calls
        .own
        .keys()
        .filter(|(group, resource, verb)| {
            WRITES.contains(&verb.as_str()) && !own_change(group, resource, verb)
        })
        .collect();
    assert!(
        own_writes.is_empty(),
        "changed as the operator itself: {own_writes:?}"
    );
    let remediator_writes: usize = calls
        .as_remediator
        .iter()
        .filter(|((_, _, verb), _)| WRITES.contains(&verb.as_str()))
        .map(|(_, count)| count)
        .sum();
    assert!(remediator_writes > 0, "no change made as a remediator");
    println!(
        "{remediator_writes} changes made as {} remediators; none as the operator itself; \
         {} requests refused",
        calls.remediators.len(),
        calls.refused
    );
    for remediator in &calls.remediators {
        assert!(
            remediator.starts_with("system:serviceaccount:")
                && remediator.ends_with(":healing-guard-remediator"),
            "acted as {remediator}"
        );
    }
}
