//! `kubectl healing-guard`, as responders type it, through kubectl's own
//! plugin lookup: the on-call responder declares and acknowledges, the
//! commander approves the step the policy holds for approval, the responder
//! may not approve, and the timeline and report read back - each as the
//! user the API server knows, checked by the chart's admission policy.
//! Then the reads: list (open first, `-A`), status and its `--watch` to the
//! incident's close, `-o json|yaml`, `--context`/`--kubeconfig`, and
//! kubectl's completion through `kubectl_complete-healing_guard`.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use healing_guard_operator::crd::{Incident, Phase, StepResult};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    admission::install_admission,
    remediation::{label_pods, policy_with},
    support::{
        Operator, client, eventually, incident_where, namespace, phase_of, repo, user_kubeconfig,
    },
};

/// kubectl with the plugin (and its completion hook) on PATH, as `kubeconfig`'s user.
fn kubectl(kubeconfig: &Path) -> Command {
    let binary = Path::new(env!("CARGO_BIN_EXE_kubectl-healing_guard"));
    let path = format!(
        "{}:{}:{}",
        binary.parent().unwrap().display(),
        repo().join("plugin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("kubectl");
    command.env("PATH", path).env("KUBECONFIG", kubeconfig);
    command
}

/// `kubectl healing-guard ARGS` with `kubeconfig`: (success, stdout, stderr).
fn plugin_with(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let output = kubectl(kubeconfig)
        .arg("healing-guard")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `kubectl healing-guard ARGS` as `user` in `ns`.
fn plugin(user: &str, ns: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--namespace", ns];
    all.extend(args);
    plugin_with(&user_kubeconfig(user), &all)
}

/// The admin's kubeconfig.
fn admin() -> PathBuf {
    PathBuf::from(std::env::var("KUBECONFIG").unwrap())
}

/// As [`plugin`], as the admin, expecting success; stdout.
fn admin_plugin(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["--namespace", ns];
    all.extend(args);
    let (ok, out, err) = plugin_with(&admin(), &all);
    assert!(ok, "kubectl healing-guard {all:?} failed:\n{out}{err}");
    out
}

#[tokio::test]
async fn responders_act_through_kubectl_as_themselves() {
    let client = client().await;
    let ns = namespace(&client, "plugin").await;
    install_admission(&ns);
    let _operator = Operator::start(&ns).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // Steps wait for a commander's approval.
    policy_with(
        &client,
        &ns,
        json!({"mode": "RequireApproval",
               "targets": [{"kind": "Deployment", "names": ["api"]}],
               "rules": [{"name": "slow", "when": {"symptom": "CrashLoopBackOff"},
                          "severity": "P1", "type": "PerformanceDegradation",
                          "actions": [{"action": "scale", "scale": {"replicas": 3, "maxReplicas": 3}}],
                          "verify": {"timeout": "1m", "holdDown": "2s"}}]}),
    )
    .await;

    let (ok, out, err) = plugin(
        "responder",
        &ns,
        &[
            "declare",
            "slow-api",
            "--title",
            "p95 above 2 s",
            "--severity",
            "p1",
            "--type",
            "PerformanceDegradation",
            "--target",
            "deploy/api",
            "--policy",
            "guard",
            "--rule",
            "slow",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "incident slow-api declared");
    let (ok, out, err) = plugin("responder", &ns, &["ack", "slow-api", "--note", "looking"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "incident slow-api acknowledged by responder");
    // The API's pods are failing: the rule's step is proposed, and held.
    label_pods(&client, &ns, "app=api", 2, "crashloop").await;
    incident_where(&client, &ns, "slow-api", "waiting for approval", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| s.result == StepResult::AwaitingApproval)
    })
    .await;

    // Completion offers the step held, to whoever approves it.
    let offered = kubectl(&user_kubeconfig("commander"))
        .args([
            "__complete",
            "healing-guard",
            "-n",
            &ns,
            "approve",
            "slow-api",
            "",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&offered.stdout),
        "scale\tscale, round 1\n:4\n"
    );

    // The responder may not approve; the commander may, as themselves.
    let (ok, _, err) = plugin("responder", &ns, &["approve", "slow-api", "scale"]);
    assert!(!ok);
    assert!(err.contains("spec.approvals"), "{err}");
    let (ok, out, err) = plugin("commander", &ns, &["approve", "slow-api", "scale"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "step scale of incident slow-api approved by commander"
    );
    let done = incident_where(&client, &ns, "slow-api", "the scale applied", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.steps.first())
            .is_some_and(|s| !s.changes.is_empty())
    })
    .await;
    assert_eq!(done.spec.approvals[0].by, "commander");

    let (ok, out, err) = plugin("responder", &ns, &["timeline", "slow-api"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Acknowledged") && out.contains("scale"),
        "{out}"
    );
    let (ok, out, err) = plugin(
        "commander",
        &ns,
        &[
            "resolve",
            "slow-api",
            "--root-cause",
            "too few replicas for the load",
            "--summary",
            "scaled to 3",
            "--follow-up",
            "autoscale the API",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "incident slow-api resolved by commander");
    incident_where(&client, &ns, "slow-api", "resolved", |i| {
        phase_of(i) == Some(Phase::Resolved)
    })
    .await;
    let (ok, out, err) = plugin("responder", &ns, &["report", "slow-api"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("# Post-incident report: p95 above 2 s"),
        "{out}"
    );
    assert!(out.contains("- autoscale the API"), "{out}");
    // A mistyped target is refused before anything is sent.
    let (ok, _, err) = plugin(
        "responder",
        &ns,
        &[
            "declare",
            "x",
            "--title",
            "t",
            "--severity",
            "P2",
            "--type",
            "ServiceOutage",
            "--target",
            "api",
        ],
    );
    assert!(!ok && err.contains("--target must be"), "{err}");
}

/// Declares `name` in `ns` as the admin, on Deployment/api.
fn declare(ns: &str, name: &str, severity: &str) {
    let out = admin_plugin(
        ns,
        &[
            "declare",
            name,
            "--title",
            &format!("{name} down"),
            "--severity",
            severity,
            "--type",
            "ServiceOutage",
            "--target",
            "deploy/api",
        ],
    );
    assert_eq!(out.trim(), format!("incident {name} declared"));
}

async fn api_deployment(client: &kube::Client, ns: &str) {
    crate::support::create_deployment(
        client,
        ns,
        json!({
            "metadata": {"name": "api"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                     "template": {"metadata": {"labels": {"app": "api"}},
                                  "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}
        }),
    )
    .await;
}

/// The table's rows (header left out), as their whitespace-separated words.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn incidents_are_listed_open_first_across_namespaces_and_read_back() {
    let client = client().await;
    let ns = namespace(&client, "plugin-list").await;
    let other = namespace(&client, "plugin-list").await;
    api_deployment(&client, &ns).await;
    let _operator = Operator::start(&ns).await;
    // The P0 is the oldest, yet comes first; the declined one comes last.
    declare(&ns, "api-outage", "P0");
    declare(&ns, "cosmetic", "P3");
    declare(&ns, "load-test", "P1");
    declare(&other, "elsewhere", "P2");
    admin_plugin(&ns, &["decline", "load-test", "--reason", "a load test"]);
    for (name, phase) in [
        ("api-outage", Phase::Triggered),
        ("cosmetic", Phase::Triggered),
        ("load-test", Phase::Declined),
    ] {
        incident_where(&client, &ns, name, &format!("{phase}"), |i| {
            phase_of(i) == Some(phase)
        })
        .await;
    }

    let listed = admin_plugin(&ns, &["list"]);
    assert!(
        listed.starts_with(
            "NAME         SEVERITY   PHASE       TYPE            TARGET           STEP   WAITING   DUE"
        ),
        "{listed}"
    );
    let first_columns: Vec<Vec<String>> =
        rows(&listed).into_iter().map(|r| r[..7].to_vec()).collect();
    let expected = |name: &str, severity: &str, phase: &str, waiting: &str| {
        [
            name,
            severity,
            phase,
            "ServiceOutage",
            "Deployment/api",
            "-",
            waiting,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    assert_eq!(
        first_columns,
        [
            expected("api-outage", "P0", "Triggered", "ack"),
            expected("cosmetic", "P3", "Triggered", "ack"),
            expected("load-test", "P1", "Declined", "-"),
        ],
        "{listed}"
    );
    // The next deadline of an open incident: its acknowledgement, in under 15 minutes.
    let outage = &rows(&listed)[0];
    assert_eq!(outage[7..9], ["ack", "in"], "{listed}");
    let open = admin_plugin(&ns, &["ls", "--open"]);
    let names: Vec<String> = rows(&open).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, ["api-outage", "cosmetic"], "{open}");

    // Across namespaces, with the namespace; other tests' incidents between ours.
    let everywhere = admin_plugin(&ns, &["list", "-A"]);
    assert!(everywhere.starts_with("NAMESPACE "), "{everywhere}");
    let ours: Vec<(String, String, String)> = rows(&everywhere)
        .into_iter()
        .filter(|r| r[0] == ns || r[0] == other)
        .map(|r| (r[0].clone(), r[1].clone(), r[3].clone()))
        .collect();
    let row = |namespace: &str, name: &str, phase: &str| {
        (namespace.to_owned(), name.to_owned(), phase.to_owned())
    };
    assert_eq!(
        ours,
        [
            row(&ns, "api-outage", "Triggered"),
            // No operator watches there: never looked at.
            row(&other, "elsewhere", "New"),
            row(&ns, "cosmetic", "Triggered"),
            row(&ns, "load-test", "Declined"),
        ],
        "{everywhere}"
    );

    // -o json and yaml read back as the Incidents the API server has.
    let api: Api<Incident> = Api::namespaced(client.clone(), &ns);
    let stored = api.get("api-outage").await.unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&admin_plugin(&ns, &["list", "-o", "json"])).unwrap();
    assert_eq!(list["kind"], "List");
    let items: Vec<Incident> = serde_json::from_value(list["items"].clone()).unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|i| i.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["api-outage", "cosmetic", "load-test"]);
    assert_eq!(items[0].spec, stored.spec);
    assert_eq!(items[0].metadata.uid, stored.metadata.uid);
    assert_eq!(items[0].metadata.managed_fields, None);
    let json: Incident =
        serde_json::from_str(&admin_plugin(&ns, &["get", "api-outage", "-o", "json"])).unwrap();
    assert_eq!(
        (json.spec, json.metadata.uid),
        (stored.spec.clone(), stored.metadata.uid.clone())
    );
    let yaml: Incident =
        serde_yaml::from_str(&admin_plugin(&ns, &["status", "api-outage", "-o", "yaml"])).unwrap();
    assert_eq!(
        (yaml.spec, yaml.metadata.uid),
        (stored.spec.clone(), stored.metadata.uid.clone())
    );

    // The responder's view: what it is, and what it waits for.
    let view = admin_plugin(&ns, &["status", "api-outage"]);
    let sla = stored.status.as_ref().and_then(|s| s.sla.clone()).unwrap();
    for line in [
        "Name:         api-outage".to_owned(),
        format!("Namespace:    {ns}"),
        "Severity:     P0 (ServiceOutage)".to_owned(),
        "Phase:        Triggered".to_owned(),
        "Target:       Deployment/api".to_owned(),
        "Source:       declared by a person".to_owned(),
        "Acknowledged: no".to_owned(),
        "Current step: none yet".to_owned(),
        format!("  acknowledge:  kubectl healing-guard ack api-outage -n {ns}"),
    ] {
        assert!(view.lines().any(|l| l == line), "{line:?} not in:\n{view}");
    }
    let deadline = format!("Deadlines:    acknowledge by {} (in ", sla.acknowledge_by.0);
    assert!(
        view.lines().any(|l| l.starts_with(&deadline)),
        "{deadline:?} not in:\n{view}"
    );

    let (ok, out, err) = plugin_with(&admin(), &["-n", &ns, "get", "nope"]);
    assert!(!ok, "{out}");
    assert_eq!(
        err,
        format!("error: incident \"nope\" not found in namespace \"{ns}\"\n")
    );
}

/// Everything a child process printed so far, read on a thread of its own.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let printed = Arc::new(Mutex::new(String::new()));
    let sink = printed.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    printed
}

/// How `child` exited, waiting at most `limit`; None (and killed) past that.
async fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn status_watch_prints_each_change_and_ends_when_the_incident_resolves() {
    let client = client().await;
    let ns = namespace(&client, "plugin-watch").await;
    api_deployment(&client, &ns).await;
    let _operator = Operator::start(&ns).await;
    declare(&ns, "api-outage", "P1");
    incident_where(&client, &ns, "api-outage", "Triggered", |i| {
        phase_of(i) == Some(Phase::Triggered)
    })
    .await;

    let mut watch = kubectl(&admin())
        .args([
            "healing-guard",
            "-n",
            &ns,
            "status",
            "api-outage",
            "--watch",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = collect(watch.stdout.take().unwrap());
    let errors = collect(watch.stderr.take().unwrap());
    let seen = |text: &'static str| {
        let printed = printed.clone();
        async move { printed.lock().unwrap().contains(text).then_some(()) }
    };
    eventually("the watch's first view", || seen("Phase:        Triggered")).await;

    // A second watch, stopped with Ctrl-C: 130, which a script tells from
    // a watch that saw the incident close (kubectl execs the plugin, so the
    // signal reaches it).
    let mut stopped = kubectl(&admin())
        .args(["healing-guard", "-n", &ns, "get", "api-outage", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let first = collect(stopped.stdout.take().unwrap());
    eventually("the second watch's first view", || {
        let first = first.clone();
        async move { first.lock().unwrap().contains("Phase:").then_some(()) }
    })
    .await;
    let killed = Command::new("kill")
        .args(["-INT", &stopped.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let interrupted = exit_within(&mut stopped, Duration::from_secs(20))
        .await
        .expect("the watch ends within 20 s of Ctrl-C");
    assert_eq!(interrupted.code(), Some(130), "{interrupted}");

    admin_plugin(&ns, &["ack", "api-outage", "--note", "on it"]);
    eventually("the watch to print the acknowledgement", || {
        seen("Phase:        Acknowledged")
    })
    .await;
    admin_plugin(
        &ns,
        &[
            "resolve",
            "api-outage",
            "--root-cause",
            "a bad release",
            "--summary",
            "rolled back",
        ],
    );

    // It ends by itself once the incident is closed.
    let Some(status) = exit_within(&mut watch, Duration::from_secs(60)).await else {
        panic!(
            "the watch did not end within 60 s of the resolution:\n{}",
            printed.lock().unwrap()
        );
    };
    // The reader threads get what was left in the pipes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let printed = printed.lock().unwrap().clone();
    assert!(
        status.success(),
        "{status}: {}\n{printed}",
        errors.lock().unwrap()
    );
    let mut phases: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("Phase:"))
        .map(str::trim)
        .collect();
    phases.dedup();
    assert_eq!(
        phases,
        ["Triggered", "Acknowledged", "Resolved"],
        "{printed}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l == "Resolved:     by admin: a bad release"),
        "{printed}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("Acknowledged: by admin ") && l.ends_with(" ago: \"on it\"")),
        "{printed}"
    );
}

#[tokio::test]
async fn context_and_kubeconfig_flags_choose_the_cluster_and_name_a_wrong_context() {
    let client = client().await;
    let ns = namespace(&client, "plugin-context").await;
    declare(&ns, "ctx-check", "P2");

    // A copy of the admin's kubeconfig whose current context leads nowhere.
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin()).unwrap()).unwrap();
    config["contexts"][0]["name"] = "on-call".into();
    let nowhere: serde_yaml::Value = serde_yaml::from_str(
        "{name: nowhere, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}",
    )
    .unwrap();
    config["clusters"].as_sequence_mut().unwrap().push(nowhere);
    let context: serde_yaml::Value =
        serde_yaml::from_str("{name: nowhere, context: {cluster: nowhere, user: admin}}").unwrap();
    config["contexts"].as_sequence_mut().unwrap().push(context);
    config["current-context"] = "nowhere".into();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kubeconfig");
    std::fs::write(&copy, serde_yaml::to_string(&config).unwrap()).unwrap();
    let copy_arg = copy.to_str().unwrap();

    // KUBECONFIG names a user who may read nothing: --kubeconfig wins over it.
    let tester = user_kubeconfig("tester");
    let (ok, out, err) = plugin_with(
        &tester,
        &[
            "--kubeconfig",
            copy_arg,
            "--context",
            "on-call",
            "-n",
            &ns,
            "list",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(rows(&out)[0][..3], ["ctx-check", "P2", "New"], "{out}");
    // --context alone picks from KUBECONFIG's file.
    let (ok, out, err) = plugin_with(
        &copy,
        &["--context", "on-call", "-n", &ns, "get", "ctx-check"],
    );
    assert!(
        ok && out.starts_with("Name:         ctx-check\n"),
        "{out}{err}"
    );
    // Without --context, the current one: nowhere.
    let (ok, out, _) = plugin_with(&tester, &["--kubeconfig", copy_arg, "-n", &ns, "list"]);
    assert!(!ok && !out.contains("ctx-check"), "{out}");

    let (ok, out, err) = plugin_with(
        &tester,
        &[
            "--kubeconfig",
            copy_arg,
            "--context",
            "staging",
            "-n",
            &ns,
            "list",
        ],
    );
    assert!(!ok, "{out}");
    assert_eq!(
        err,
        format!("error: context \"staging\" is not in {copy_arg}; it has: on-call, nowhere\n")
    );
}

#[tokio::test]
async fn kubectl_completes_the_plugin_s_commands_and_incident_names() {
    let client = client().await;
    let ns = namespace(&client, "plugin-complete").await;
    declare(&ns, "api-outage", "P0");
    let complete = |args: &[&str]| {
        let output = kubectl(&admin())
            .args(["__complete", "healing-guard"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        complete(&["ap"]),
        "approve\tApprove a step waiting for approval, as yourself\n:4\n"
    );
    assert_eq!(
        complete(&["-n", &ns, "status", ""]),
        "api-outage\tP0 New api-outage down\n:4\n"
    );
    assert_eq!(complete(&["list", "-o", "j"]), "json\n:4\n");
}
