//! The test runner tested: what fails, fails with the expected and the
//! actual side by side; what is written wrong is said, never passed.

use std::path::{Path, PathBuf};

use super::{Format, output::FileResult, run_file, test};

/// A test file in a scratch folder, beside a copy of the example policy.
fn scratch(test_file: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::copy(
        examples.join("policies/healing-guard.yaml"),
        dir.path().join("policy.yaml"),
    )
    .unwrap();
    let path = dir.path().join("test.yaml");
    std::fs::write(&path, test_file).unwrap();
    (dir, path)
}

const WORLD: &str = r#"
policies: [policy.yaml]
workloads:
- name: healing-guard
  labels: {healing-guard.io/guarded: "true"}
  replicas: 3
  revisions: ["api:1", "api:2"]
"#;

fn run(cases: &str) -> FileResult {
    let (_dir, path) = scratch(&format!("{WORLD}cases:\n{cases}"));
    run_file(&path, false)
}

#[test]
fn a_wrong_expectation_fails_with_what_was_expected_and_what_happened() {
    let result = run(r#"
- name: crash loop
  timeline:
  - {at: 0s, pods: {workload: healing-guard, state: CrashLoopBackOff, restarts: 3}}
  steps:
  - {step: rollback, outcome: Recovers}
  expect:
  - at: 5m
    incidents:
    - {name: healing-guard-crashloop, phase: Escalated, steps: [{action: rollback, result: Succeeded}]}
"#);
    assert!(!result.passed());
    let case = &result.cases[0];
    assert_eq!(case.failures.len(), 1, "{:#?}", case.failures);
    let failure = &case.failures[0];
    assert_eq!(failure.subject, "incident healing-guard-crashloop");
    assert_eq!(failure.expected["phase"], "Escalated");
    assert_eq!(failure.got["phase"], "Resolved");
    assert_eq!(
        failure.got["steps"][0]["result"], "Succeeded",
        "the fields asked about, as they are"
    );
    assert!(
        case.timeline
            .iter()
            .any(|l| l.contains("detector opened healing-guard-crashloop")),
        "a failing case says what happened: {:?}",
        case.timeline
    );
    let text = super::output::text(std::slice::from_ref(&result));
    assert!(text.contains("exp: {") && text.contains("got: {"), "{text}");
}

#[test]
fn the_same_case_passes_when_it_expects_what_happens() {
    let result = run(r#"
- name: crash loop
  timeline:
  - {at: 0s, pods: {workload: healing-guard, state: CrashLoopBackOff, restarts: 3}}
  steps:
  - {step: rollback, outcome: Recovers}
  expect:
  - at: 5m
    incidents:
    - {name: healing-guard-crashloop, phase: Resolved, steps: [{action: rollback, result: Succeeded}]}
"#);
    assert!(result.passed(), "{:#?}", result.cases);
}

#[test]
fn a_symptom_below_its_threshold_opens_nothing() {
    // minRestarts 3: two restarts are not yet a crash loop (and one pod of
    // three down leaves enough available).
    let result = run(r#"
- name: two restarts
  timeline:
  - {at: 0s, pods: {workload: healing-guard, state: CrashLoopBackOff, restarts: 2, count: 1}}
  expect:
  - {at: 10m, incidents: []}
"#);
    assert!(result.passed(), "{:#?}", result.cases);
}

#[test]
fn names_that_name_nothing_and_cases_that_check_nothing_fail() {
    let result = run(r#"
- name: typos
  until: 10m
  timeline:
  - {at: 0s, pods: {workload: healing-gaurd, state: CrashLoopBackOff, restarts: 3}}
  - {at: 0s, probes: [{name: helth, passing: false}]}
  steps:
  - {step: rolback, outcome: Recovers}
  expect:
  - {at: 11m, incidents: []}
- name: nothing expected
  timeline:
  - {at: 0s, pods: {workload: healing-guard, state: CrashLoopBackOff, restarts: 3}}
"#);
    let said: Vec<String> = result.cases[0]
        .failures
        .iter()
        .map(|f| f.got.to_string())
        .collect();
    for words in [
        "timeline[0].pods.workload: no workload healing-gaurd",
        "timeline[1].probes: no policy has a probe helth",
        "steps[0].step: no rule of the policies has a step rolback",
        "expect[0].at: 660s is after until",
    ] {
        assert!(
            said.iter().any(|s| s.contains(words)),
            "{words} in {said:#?}"
        );
    }
    assert!(
        result.cases[1].failures[0]
            .got
            .to_string()
            .contains("it expects nothing")
    );
    assert!(!result.passed());
}

#[test]
fn an_unknown_field_is_an_error_naming_it() {
    let result = run(r#"
- name: misspelt
  timeline:
  - {at: 0s, pod: {workload: healing-guard, state: CrashLoopBackOff}}
  expect:
  - {at: 1m, incidents: []}
"#);
    assert!(!result.passed());
    assert!(
        result.problems[0].contains("unknown field `pod`"),
        "{:?}",
        result.problems
    );
}

/// Each policy the controller refuses (examples/invalid/controller, whose
/// first line is the Ready condition a cluster test checks) is refused by
/// `test` with the same message, and its cases do not run.
#[test]
fn an_invalid_policy_is_reported_with_its_ready_conditions_message() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/invalid/controller");
    let mut checked = 0;
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("kind: RemediationPolicy") {
            continue;
        }
        let first = text.lines().next().unwrap();
        let Some(message) = first.strip_prefix("# expect-condition: Ready InvalidSpec ") else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&path, dir.path().join("policy.yaml")).unwrap();
        let test_file = dir.path().join("test.yaml");
        std::fs::write(
            &test_file,
            "policies: [policy.yaml]\ncases:\n- name: any\n  expect: [{at: 1m, incidents: []}]\n",
        )
        .unwrap();
        let result = run_file(&test_file, false);
        assert!(!result.passed());
        assert!(result.cases.is_empty(), "no case of an invalid policy runs");
        assert_eq!(result.problems.len(), 1, "{:?}", result.problems);
        let said = &result.problems[0];
        assert!(
            said.contains(message)
                && said.ends_with("the policy guards nothing until this is fixed"),
            "{}: {said}",
            path.display(),
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} invalid policies checked");
}

#[test]
fn the_report_is_json_with_each_case_on_request_and_says_what_failed() {
    let (_dir, path) = scratch(&format!(
        "{WORLD}cases:\n- name: quiet\n  expect: [{{at: 1m, incidents: [{{name: ghost}}]}}]\n"
    ));
    let report = test(&[path], Format::Json, false);
    assert!(!report.passed);
    let json: serde_json::Value = serde_json::from_str(&report.output).unwrap();
    assert_eq!(json[0]["cases"][0]["name"], "quiet");
    assert_eq!(json[0]["cases"][0]["passed"], false);
    assert_eq!(
        json[0]["cases"][0]["failures"][0]["expected"],
        serde_json::json!(["ghost"])
    );
    assert_eq!(
        json[0]["cases"][0]["failures"][0]["got"],
        serde_json::json!([])
    );
    assert!(
        report.summary.starts_with("1 cases in 1 files, 1 failed"),
        "{}",
        report.summary
    );
}

#[test]
fn every_example_policy_has_tests_and_they_pass() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let report = test(&files, Format::Text, false);
    assert!(report.passed, "{}", report.output);
    for policy in std::fs::read_dir(examples.join("policies")).unwrap() {
        let name = policy.unwrap().file_name();
        let test_file = files.iter().find(|f| f.file_name() == Some(&name));
        let Some(test_file) = test_file else {
            panic!(
                "examples/policies/{} has no examples/tests/ file of its name",
                name.to_string_lossy()
            );
        };
        // Each rule of the policy is the rule of an incident some case expects.
        let loaded = super::load::load(test_file).unwrap();
        let expected: std::collections::BTreeSet<&str> = loaded
            .file
            .cases
            .iter()
            .flat_map(|c| &c.expect)
            .flat_map(|e| &e.incidents)
            .filter_map(|i| i.rule.as_deref())
            .collect();
        let policy = loaded
            .policies
            .iter()
            .find(|p| {
                std::path::Path::new(&name).file_stem()
                    == Some(std::ffi::OsStr::new(&kube::ResourceExt::name_any(
                        p.as_ref(),
                    )))
            })
            .unwrap();
        for rule in &policy.spec.rules {
            assert!(
                expected.contains(rule.name.as_str()),
                "no case of {} expects an incident of rule {}",
                test_file.display(),
                rule.name
            );
        }
    }
}

/// A crash loop recorded (simulated here, as the operator would record it)
/// and replayed: against its own policy it goes the same way; against a
/// changed one, the review names what changes.
#[test]
fn a_recorded_incident_replays_the_same_and_a_changed_policy_shows_its_difference() {
    let (dir, path) = scratch(&format!(
        "{WORLD}cases:\n{}",
        r#"
- name: record
  timeline:
  - {at: 0s, configChanged: {workload: healing-guard, configMap: healing-guard-config}}
  - {at: 0s, pods: {workload: healing-guard, state: CrashLoopBackOff, restarts: 3}}
  steps:
  - {step: rollback, outcome: Fails}
  - {step: restoreConfig, outcome: Recovers}
  expect: [{at: 20m, incidents: [{name: healing-guard-crashloop}, {name: healing-guard-unavailable}]}]
"#
    ));
    let loaded = super::load::load(&path).unwrap();
    let simulated = super::engine::simulate(&loaded, &loaded.file.cases[0]);
    assert!(simulated.failures.is_empty(), "{:#?}", simulated.failures);
    let record = simulated
        .incidents
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some("healing-guard-crashloop"))
        .unwrap();
    let records = dir.path().join("records.yaml");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [record.as_ref()]});
    std::fs::write(&records, serde_yaml::to_string(&list).unwrap()).unwrap();

    let policy = dir.path().join("policy.yaml");
    let same = super::replay(&policy, std::slice::from_ref(&records), Format::Json);
    assert!(same.passed, "{}", same.summary);
    let replayed: serde_json::Value = serde_json::from_str(&same.output).unwrap();
    assert_eq!(
        replayed[0]["differences"],
        serde_json::json!([]),
        "{}",
        same.output
    );
    assert_eq!(
        replayed[0]["replayed"]["steps"],
        serde_json::json!([
            "rollback (rollback) Failed",
            "restoreConfig (restoreConfig) Succeeded"
        ])
    );

    // The pull request: crash loops are P1, and restoreConfig comes first.
    let text = std::fs::read_to_string(&policy).unwrap();
    let changed = text
        .replace(
            "    severity: P0\n    type: ServiceOutage\n    actions:\n    # Containment 1",
            "    severity: P1\n    type: ServiceOutage\n    actions:\n    # Containment 1",
        )
        .replace(
            "    - action: rollback\n      rollback:\n        to: Previous\n    # \"Configuration Corruption\"",
            "    # \"Configuration Corruption\"",
        );
    assert_ne!(changed, text, "the policy was changed");
    std::fs::write(&policy, changed).unwrap();
    let review = super::replay(&policy, &[records], Format::Json);
    let replayed: serde_json::Value = serde_json::from_str(&review.output).unwrap();
    assert_eq!(
        replayed[0]["differences"],
        serde_json::json!(["severity", "steps"]),
        "{}",
        review.output
    );
    assert_eq!(replayed[0]["replayed"]["severity"], "P1");
    assert_eq!(
        replayed[0]["replayed"]["steps"],
        serde_json::json!(["restoreConfig (restoreConfig) Succeeded"])
    );
}

#[test]
fn a_workload_too_big_to_simulate_is_refused_before_anything_is_built() {
    let (_dir, path) = scratch(
        "policies: [policy.yaml]\nworkloads:\n- {name: healing-guard, replicas: 2000000000}\n\
         cases:\n- name: huge\n  expect: [{at: 1m, incidents: []}]\n",
    );
    let result = run_file(&path, false);
    assert!(!result.passed());
    let said = result.cases[0].failures[0].got.to_string();
    assert!(
        said.contains("the file's workloads[0].replicas: 2000000000 is not between 0 and 1000"),
        "{said}"
    );
    assert!(result.cases[0].timeline.is_empty(), "the case did not run");
}

#[test]
fn replay_says_what_it_cannot_read_and_what_a_policy_no_longer_opens() {
    let (dir, path) = scratch(&format!(
        "{WORLD}cases:\n{}",
        r#"
- name: record
  timeline:
  - {at: 0s, pods: {workload: healing-guard, state: OOMKilled, restarts: 2}}
  steps:
  - {step: raise-limits, outcome: Recovers}
  expect: [{at: 10m, incidents: [{name: healing-guard-oomkilled, phase: Resolved}]}]
"#
    ));
    let loaded = super::load::load(&path).unwrap();
    let simulated = super::engine::simulate(&loaded, &loaded.file.cases[0]);
    assert!(simulated.failures.is_empty(), "{:#?}", simulated.failures);
    let records = dir.path().join("records.yaml");
    let docs: Vec<String> = simulated
        .incidents
        .iter()
        .map(|i| serde_yaml::to_string(i.as_ref()).unwrap())
        .collect();
    // Several documents, as well as a List.
    std::fs::write(&records, docs.join("---\n")).unwrap();

    // Not an Incident: said, with the file.
    let policy = dir.path().join("policy.yaml");
    let wrong = super::replay(&policy, std::slice::from_ref(&policy), Format::Text);
    assert!(!wrong.passed);
    assert!(
        wrong
            .summary
            .contains("policy.yaml: a RemediationPolicy is not an Incident"),
        "{}",
        wrong.summary
    );

    // The new policy has no rule for OOM kills any more: the container
    // that was OOM-killed also crash-loops, and the crash-loop rule takes it.
    let text = std::fs::read_to_string(&policy).unwrap();
    let start = text.find("  - name: oom-killed").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    std::fs::write(&policy, format!("{}{}", &text[..start], &text[end + 1..])).unwrap();
    let review = super::replay(&policy, &[records], Format::Json);
    assert!(review.passed, "{}", review.summary);
    let replayed: serde_json::Value = serde_json::from_str(&review.output).unwrap();
    let oom = replayed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["incident"] == "healing-guard-oomkilled")
        .unwrap();
    assert_eq!(oom["replayed_as"], "healing-guard-crashloop", "{oom}");
    assert_eq!(
        oom["differences"],
        serde_json::json!(["incident", "rule", "severity", "type", "steps", "refusals"])
    );
    assert_eq!(oom["replayed"]["rule"], "crash-loop");

    // Without the crash-loop rule too, no replica is ready for three
    // minutes: the replicas rule takes it, as another incident.
    let text = std::fs::read_to_string(&policy).unwrap();
    let start = text.find("  - name: crash-loop").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    std::fs::write(&policy, format!("{}{}", &text[..start], &text[end + 1..])).unwrap();
    let records = dir.path().join("records.yaml");
    let review = super::replay(&policy, &[records], Format::Text);
    assert!(
        review.output.contains(
            "Incident healing-guard-oomkilled: DIFFERENT\n *incident   opened as healing-guard-unavailable\n *rule       oom-killed\n             -> replicas-unavailable\n"
        ),
        "{}",
        review.output
    );
}

#[test]
fn a_policy_file_that_cannot_be_read_is_named() {
    let (_dir, path) = scratch("policies: [policy.yaml]\ncases: []\n");
    let result = run_file(&path, false);
    assert!(
        result.problems[0].ends_with("has no cases: it would check nothing"),
        "{:?}",
        result.problems
    );
    let (_dir, path) = scratch(
        "policies: [nowhere.yaml]\ncases:\n- name: any\n  expect: [{at: 1m, incidents: []}]\n",
    );
    let result = run_file(&path, false);
    assert!(!result.passed());
    assert!(
        result.problems[0].contains("nowhere.yaml") && result.problems[0].contains("No such file"),
        "{:?}",
        result.problems
    );
}

/// The safety limits a case can expect, beyond those of the examples: the
/// budget of actions per window, and the floor of ready replicas.
#[test]
fn a_case_can_expect_the_budget_and_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |max_actions: i32, min_ready: i32| {
        format!(
            r#"
apiVersion: healing-guard.io/v1alpha1
kind: RemediationPolicy
metadata: {{name: limits, namespace: shop}}
spec:
  mode: Auto
  targets: [{{kind: Deployment, names: [api]}}]
  rules:
  - name: oom
    when: {{symptom: OOMKilled}}
    severity: P2
    type: ResourceExhaustion
    actions: [{{action: restart}}]
    verify: {{timeout: 1m, holdDown: 10s}}
  - name: crash
    when: {{symptom: CrashLoopBackOff, minRestarts: 1}}
    severity: P1
    type: ServiceOutage
    actions: [{{action: rollback}}]
    verify: {{timeout: 1m, holdDown: 10s}}
  safety: {{cooldown: 1s, maxActions: {max_actions}, window: 1h, minReadyReplicas: {min_ready}}}
"#
        )
    };
    std::fs::write(dir.path().join("budget.yaml"), policy(1, 0)).unwrap();
    std::fs::write(dir.path().join("floor.yaml"), policy(5, 3)).unwrap();
    // Four replicas: a rollout takes a quarter of them (one) down at once.
    let world = "workloads: [{name: api, replicas: 4, revisions: [\"api:1\", \"api:2\"]}]\n";
    let budget = dir.path().join("budget-test.yaml");
    std::fs::write(
        &budget,
        format!(
            "policies: [budget.yaml]\n{world}{}",
            r#"cases:
- name: one action an hour
  timeline:
  - {at: 0s, pods: {workload: api, state: OOMKilled, restarts: 1, count: 1}}
  - {at: 5m, pods: {workload: api, state: CrashLoopBackOff, restarts: 2, count: 1}}
  steps: [{step: restart, outcome: Recovers}]
  expect:
  - at: 6m
    incidents:
    - {name: api-oomkilled, phase: Resolved}
    - name: api-crashloop
      blocked: {reason: SafetyLimit, message: "1 actions on the target within 1 hour, the most allowed"}
      steps: []
"#
        ),
    )
    .unwrap();
    let floor = dir.path().join("floor-test.yaml");
    std::fs::write(
        &floor,
        format!(
            "policies: [floor.yaml]\n{world}{}",
            r#"cases:
- name: never below three ready
  timeline:
  - {at: 0s, pods: {workload: api, state: OOMKilled, restarts: 1, count: 1}}
  expect:
  - at: 1m
    incidents:
    - name: api-oomkilled
      steps:
      - {action: restart, message: "it could leave fewer than 3 ready replicas: 3 ready, up to 1 taken down at once"}
"#
        ),
    )
    .unwrap();
    let report = test(&[budget, floor], Format::Text, false);
    assert!(report.passed, "{}", report.output);
}
