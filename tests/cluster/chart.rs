//! The Helm chart as users install it: it lints, refuses wrong values with
//! their path, renders (with every optional part on) to manifests the API
//! server accepts with each object in the release's namespace, passes
//! scheduling and container settings through as given, and ships monitors
//! and alert rules that agree; its aggregated roles give Kubernetes' view,
//! edit and admin what they say; its CRDs upgrade by the command its README
//! gives.

use serde_json::{Value, json};

use crate::support::{client, eventually, namespace, run, run_status};

/// Everything optional on, and every setting a node of its own needs
/// (nodeSelector, tolerations, hostNetwork...), as a user's values file.
/// The monitors are left out: no Prometheus Operator CRDs here.
const ALL_ON: &str = r#"
image: {repository: registry.example/healing-guard-operator, tag: "1.2.3", pullPolicy: Never}
replicas: 2
hostNetwork: true
nodeSelector: {kubernetes.io/hostname: ops-node-1}
tolerations:
- {key: healing-guard.io/operator, operator: Exists, effect: NoSchedule}
# Maps merge with the chart's defaults: every key given, to compare.
podSecurityContext: {runAsNonRoot: true, runAsUser: 65000, runAsGroup: 65000, fsGroup: 65000, seccompProfile: {type: RuntimeDefault}}
securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
priorityClassName: system-cluster-critical
extraArgs: [--egress-deny, 192.168.0.0/16]
extraEnv:
- {name: HTTPS_PROXY, value: "http://proxy.example:3128"}
- {name: SSL_CERT_FILE, value: /etc/healing-guard/ca/ca-certificates.crt}
extraVolumes:
- {name: ca-bundle, configMap: {name: ca-bundle}}
extraVolumeMounts:
- {name: ca-bundle, mountPath: /etc/healing-guard/ca, readOnly: true}
topologySpreadConstraints:
- {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway}
grafanaDashboard: {enabled: true}
networkPolicy:
  enabled: true
  ingressFrom:
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
  apiServer: {to: [{ipBlock: {cidr: 10.0.0.1/32}}], ports: [6443]}
  extraEgress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.0.0/16]}}]
    ports: [{port: 443, protocol: TCP}]
alertmanagerWebhook: {tokenSecret: {name: alertmanager-token}}
evidence: {captureLogs: true}
"#;

/// Kinds without a namespace, of those the chart renders.
const CLUSTER_SCOPED: [&str; 4] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

#[tokio::test]
async fn the_chart_lints_and_its_manifests_pass_a_server_dry_run() {
    let client = client().await;
    let ns = namespace(&client, "chart").await;
    run(
        "helm",
        &["lint", "--strict", "charts/healing-guard-operator"],
        None,
    );
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(values.path(), ALL_ON).unwrap();
    let values = values.path().to_str().unwrap();
    // With watchNamespace, the operator's Roles and the remediator are there.
    let watched = namespace(&client, "chart-watched").await;
    let watch = format!("watchNamespace={watched}");
    for extra in [&[][..], &["-f", values], &["-f", values, "--set", &watch]] {
        let mut args = vec![
            "template",
            "hgo",
            "charts/healing-guard-operator",
            "--namespace",
            &ns,
        ];
        args.extend(extra);
        let rendered = run("helm", &args, None);
        let objects = documents(&rendered);
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            let namespace = &object["metadata"]["namespace"];
            if CLUSTER_SCOPED.contains(&kind) {
                assert!(namespace.is_null(), "{kind} is cluster-scoped: {namespace}");
            } else if namespace == watched.as_str() {
                // The operator's and the remediator's Roles, where it watches.
                assert!(
                    ["Role", "RoleBinding", "ServiceAccount"].contains(&kind),
                    "{kind} in {watched}"
                );
            } else {
                assert_eq!(
                    namespace.as_str(),
                    Some(ns.as_str()),
                    "{kind} {} not in the release's namespace",
                    object["metadata"]["name"]
                );
            }
        }
        let (ok, stdout, stderr) = run_status(
            "kubectl",
            &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(&rendered),
        );
        assert!(ok, "server dry-run failed ({extra:?}):\n{stderr}\n{stdout}");
        let accepted: Value = serde_json::from_str(&stdout).unwrap();
        let accepted = accepted["items"].as_array().unwrap();
        let kinds: Vec<&str> = accepted
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        // Watching one namespace, the operator's grant is a Role there.
        let binding = if extra.len() > 2 {
            "RoleBinding"
        } else {
            "ClusterRoleBinding"
        };
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            binding,
            "Deployment",
            "Service",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
        }
        if extra.is_empty() {
            continue;
        }
        for kind in ["NetworkPolicy", "PodDisruptionBudget", "ConfigMap"] {
            assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
        }
        // As the API server would store it: every setting as given.
        let deployment = accepted.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let given: Value = serde_yaml::from_str(ALL_ON).unwrap();
        passed_through(deployment, &given);
    }
}

/// The Deployment the API server accepted carries the values `given` as
/// given.
fn passed_through(deployment: &Value, given: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], given["replicas"]);
    assert_eq!(
        container["image"],
        "registry.example/healing-guard-operator:1.2.3"
    );
    assert_eq!(container["imagePullPolicy"], "Never");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["nodeSelector"], given["nodeSelector"]);
    assert_eq!(pod["tolerations"], given["tolerations"]);
    assert_eq!(pod["securityContext"], given["podSecurityContext"]);
    assert_eq!(container["securityContext"], given["securityContext"]);
    assert_eq!(container["resources"], given["resources"]);
    assert_eq!(pod["priorityClassName"], given["priorityClassName"]);
    // After the chart's own arguments, environment and volumes.
    let args = container["args"].as_array().unwrap();
    assert_eq!(
        args[args.len() - 2..],
        given["extraArgs"].as_array().unwrap()[..]
    );
    assert_eq!(args[0], "run");
    let env = container["env"].as_array().unwrap();
    assert_eq!(
        env[env.len() - 2..],
        given["extraEnv"].as_array().unwrap()[..]
    );
    assert!(env.iter().any(|e| e["name"] == "RUST_LOG"));
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts[0]["mountPath"], "/tmp");
    assert_eq!(mounts[1], given["extraVolumeMounts"][0]);
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes[0]["name"], "tmp");
    assert_eq!(volumes[1]["name"], "ca-bundle");
    assert_eq!(volumes[1]["configMap"]["name"], "ca-bundle");
    // A constraint without a labelSelector spreads the operator's pods.
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// Every object of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| <Value as serde::Deserialize>::deserialize(document).unwrap())
        .filter(|object| !object.is_null())
        .collect()
}

/// `values.schema.json`: a value of the wrong type, a misspelt key or a
/// value outside its list is refused before anything is rendered, with its
/// path; the same values, right, render.
#[test]
fn wrong_values_are_refused_with_their_path() {
    let template = |set: &str| {
        run_status(
            "helm",
            &[
                "template",
                "hgo",
                "charts/healing-guard-operator",
                "--set",
                set,
            ],
            None,
        )
    };
    for (wrong, right, refusal) in [
        (
            "replicas=two",
            "replicas=2",
            "at '/replicas': got string, want integer",
        ),
        (
            "metrics.prot=9090",
            "metrics.port=9090",
            "at '/metrics': additional properties 'prot' not allowed",
        ),
        ("logFormat=xml", "logFormat=text", "at '/logFormat'"),
        (
            "image.pullPolicy=Sometimes",
            "image.pullPolicy=Always",
            "at '/image/pullPolicy'",
        ),
        (
            "remediator.grant={workloads,everything}",
            "remediator.grant={workloads,secrets}",
            "at '/remediator/grant/1'",
        ),
        (
            "leaderElection.leaseDurationSeconds=1",
            "leaderElection.leaseDurationSeconds=30",
            "at '/leaderElection/leaseDurationSeconds'",
        ),
        (
            "tolerations[0].efect=NoSchedule",
            "tolerations[0].effect=NoSchedule",
            "at '/tolerations/0': additional properties 'efect' not allowed",
        ),
        (
            "networkPolicy.apiServer.ports={https}",
            "networkPolicy.apiServer.ports={6443}",
            "at '/networkPolicy/apiServer/ports/0'",
        ),
        (
            "hostNetwork=yes please",
            "hostNetwork=true",
            "at '/hostNetwork'",
        ),
    ] {
        let (ok, _, stderr) = template(wrong);
        assert!(!ok, "{wrong} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(refusal),
            "{wrong}: the refusal does not say {refusal:?}:\n{stderr}"
        );
        let (ok, _, stderr) = template(right);
        assert!(ok, "{right} was refused:\n{stderr}");
    }
}

/// With its values on, the chart ships the alert rules and the dashboard
/// exactly as the files `make test` checks (promtool, tests/observability.rs).
/// The files select the operator's targets as those of release
/// healing-guard-operator in healing-guard-system; that release gets them
/// unchanged.
#[test]
fn the_chart_ships_the_checked_rules_and_dashboard() {
    let rendered = run(
        "helm",
        &[
            "template",
            "healing-guard-operator",
            "charts/healing-guard-operator",
            "--namespace",
            "healing-guard-system",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.serviceAlerts=true",
            "--set",
            "prometheusRule.labels.release=prometheus",
            "--set",
            "grafanaDashboard.enabled=true",
        ],
        None,
    );
    let file = |path: &str| {
        std::fs::read_to_string(format!("charts/healing-guard-operator/{path}")).unwrap()
    };
    let as_yaml = |text: &str| serde_yaml::from_str::<Value>(text).unwrap();
    let mut rules = Vec::new();
    let mut dashboard = None;
    for document in serde_yaml::Deserializer::from_str(&rendered) {
        let object = <Value as serde::Deserialize>::deserialize(document).unwrap();
        match object["kind"].as_str() {
            Some("PrometheusRule") => {
                assert_eq!(object["metadata"]["labels"]["release"], "prometheus");
                rules.push(object["spec"].clone());
            }
            Some("ConfigMap")
                if object["metadata"]["name"] == "healing-guard-operator-dashboard" =>
            {
                assert_eq!(object["metadata"]["labels"]["grafana_dashboard"], "1");
                dashboard = Some(
                    object["data"]["healing-guard-operator.json"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        rules,
        [
            as_yaml(&file("rules/operator.rules.yaml")),
            as_yaml(&file("rules/service.rules.yaml"))
        ]
    );
    let shipped: Value = serde_json::from_str(&dashboard.unwrap()).unwrap();
    let checked: Value =
        serde_json::from_str(&file("dashboards/healing-guard-operator.json")).unwrap();
    assert_eq!(shipped, checked);
    // Off by default: nothing needs the Prometheus Operator's CRDs.
    let plain = run(
        "helm",
        &["template", "hgo", "charts/healing-guard-operator"],
        None,
    );
    assert!(!plain.contains("PrometheusRule") && !plain.contains("grafana_dashboard"));
}

/// Every object `helm template` renders with `values` (`--set`), for
/// release `release` in `namespace`.
fn render(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        release,
        "charts/healing-guard-operator",
        "--namespace",
        namespace,
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    documents(&run("helm", &args, None))
}

/// The one object of `kind` among `objects`.
fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}

/// Whether every label of `selector` (a `matchLabels`) is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(key, value)| labels[key] == *value)
}

/// The `expr` of the alert `name` in a rendered PrometheusRule.
fn alert_expr(rule: &Value, name: &str) -> String {
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"))["expr"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A ServiceMonitor or a PodMonitor scrapes the operator through the
/// Service's port or the container's, and either gives its targets the
/// job (the Service's name) and namespace the alert rules select; the
/// rules are otherwise the tested file. No Prometheus Operator runs here,
/// so the shapes are checked as the Prometheus Operator reads them.
#[test]
fn the_monitors_give_the_job_and_namespace_the_alert_rules_select() {
    let selector = r#"job="hgo-healing-guard-operator", namespace="team-a""#;
    let tested = std::fs::read_to_string("charts/healing-guard-operator/rules/operator.rules.yaml")
        .unwrap()
        .replace(
            r#"job="healing-guard-operator", namespace="healing-guard-system""#,
            selector,
        );
    let tested: Value = serde_yaml::from_str(&tested).unwrap();

    let objects = render(
        "hgo",
        "team-a",
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
            "prometheusRule.enabled=true",
        ],
    );
    let service = only(&objects, "Service");
    let monitor = only(&objects, "ServiceMonitor");
    let rule = only(&objects, "PrometheusRule");
    assert_eq!(service["metadata"]["name"], "hgo-healing-guard-operator");
    assert_eq!(monitor["metadata"]["namespace"], "team-a");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["team-a"])
    );
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor selects the Service:\n{monitor:#}"
    );
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| &port["name"])
        .collect();
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert!(ports.contains(&&endpoints[0]["port"]), "{ports:?}");
    assert_eq!(endpoints[0]["path"], "/metrics");
    assert_eq!(endpoints[0]["interval"], "30s");
    // No jobLabel, no relabeling: the job is the Service's name.
    assert!(monitor["spec"].get("jobLabel").is_none() && endpoints[0].get("relabelings").is_none());
    for alert in ["HealingGuardOperatorDown", "HealingGuardOperatorAbsent"] {
        assert!(
            alert_expr(rule, alert).contains(selector),
            "{alert}: {}",
            alert_expr(rule, alert)
        );
    }
    assert_eq!(rule["spec"], tested);

    let objects = render(
        "hgo",
        "team-a",
        &[
            "metrics.podMonitor.enabled=true",
            "prometheusRule.enabled=true",
        ],
    );
    let deployment = only(&objects, "Deployment");
    let monitor = only(&objects, "PodMonitor");
    assert!(objects.iter().all(|o| o["kind"] != "ServiceMonitor"));
    let pod = &deployment["spec"]["template"];
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &pod["metadata"]["labels"]
        ),
        "the PodMonitor selects the operator's pods:\n{monitor:#}"
    );
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let container_ports: Vec<&Value> = pod["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| &port["name"])
        .collect();
    assert!(
        container_ports.contains(&&endpoint["port"]),
        "{container_ports:?}"
    );
    // A PodMonitor's job would be "team-a/hgo-healing-guard-operator": set
    // to the Service's name, after the Prometheus Operator sets its own.
    assert_eq!(
        endpoint["relabelings"],
        json!([{"action": "replace", "targetLabel": "job", "replacement": "hgo-healing-guard-operator"}])
    );
    assert_eq!(only(&objects, "PrometheusRule")["spec"], tested);

    // A job of the user's own (scraped some other way).
    let objects = render(
        "hgo",
        "team-a",
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.job=operators",
        ],
    );
    let expr = alert_expr(
        only(&objects, "PrometheusRule"),
        "HealingGuardOperatorAbsent",
    );
    assert_eq!(
        expr,
        r#"absent(up{job="operators", namespace="team-a"} == 1)"#
    );

    // Both at once would scrape every replica twice.
    let (ok, _, stderr) = run_status(
        "helm",
        &[
            "template",
            "hgo",
            "charts/healing-guard-operator",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.podMonitor.enabled=true",
        ],
        None,
    );
    assert!(!ok && stderr.contains("enable one of the two"), "{stderr}");
    // Off by default: nothing needs the Prometheus Operator's CRDs.
    let plain = render("hgo", "team-a", &[]);
    assert!(
        plain
            .iter()
            .all(|o| o["apiVersion"] != "monitoring.coreos.com/v1"),
        "monitoring objects rendered by default"
    );
}

/// Whether `user` may `verb` `resource` in `namespace`, as the API server
/// answers (a SubjectAccessReview, through `kubectl auth can-i --as`).
fn can(user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let mut args = vec![
        "auth", "can-i", verb, resource, "-n", namespace, "--as", user,
    ];
    if !subresource.is_empty() {
        args.extend(["--subresource", subresource]);
    }
    let (yes, stdout, stderr) = run_status("kubectl", &args, None);
    assert!(
        yes || stdout.trim().starts_with("no"),
        "kubectl {}: {stdout}{stderr}",
        args.join(" ")
    );
    yes
}

/// With the chart's aggregated ClusterRoles, Kubernetes' own view, edit
/// and admin roles cover the four kinds: view reads them; edit and admin
/// also write policies, channels and escalation policies and declare and
/// change Incidents, but write no status (the operator's record) and
/// delete no Incident (the record of what happened).
#[tokio::test]
async fn kubernetes_view_edit_and_admin_roles_cover_the_four_kinds() {
    let client = client().await;
    let ns = namespace(&client, "aggregate").await;
    let release = format!("agg-{ns}");
    let roles = run(
        "helm",
        &[
            "template",
            &release,
            "charts/healing-guard-operator",
            "--namespace",
            &ns,
            "--show-only",
            "templates/aggregate-roles.yaml",
        ],
        None,
    );
    let viewer = format!("viewer-{ns}");
    let editor = format!("editor-{ns}");
    let admin = format!("admin-{ns}");
    let bindings: String = [("view", &viewer), ("edit", &editor), ("admin", &admin)]
        .iter()
        .map(|(role, user)| {
            format!(
                "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
                 metadata: {{name: {role}, namespace: {ns}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n\
                 subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
            )
        })
        .collect();
    run("kubectl", &["apply", "-f", "-"], Some(&bindings));

    run("kubectl", &["apply", "-f", "-"], Some(&roles));
    // The controller manager aggregates them into view, edit and admin.
    eventually("view, edit and admin to take in the chart's rules", || {
        let ns = ns.clone();
        let (viewer, admin) = (viewer.clone(), admin.clone());
        async move {
            (can(&viewer, "list", "incidents.healing-guard.io", &ns)
                && can(
                    &admin,
                    "create",
                    "remediationpolicies.healing-guard.io",
                    &ns,
                ))
            .then_some(())
        }
    })
    .await;

    let kinds = [
        "remediationpolicies",
        "incidents",
        "notificationchannels",
        "escalationpolicies",
    ];
    for kind in kinds {
        let resource = format!("{kind}.healing-guard.io");
        for user in [&viewer, &editor, &admin] {
            for verb in ["get", "list", "watch"] {
                assert!(
                    can(user, verb, &resource, &ns),
                    "{user} cannot {verb} {kind}"
                );
            }
            // Status is the operator's record, whoever holds a role here.
            for verb in ["update", "patch"] {
                let status = format!("{resource}/status");
                assert!(
                    !can(user, verb, &status, &ns),
                    "{user} may {verb} {kind}/status"
                );
            }
        }
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(
                !can(&viewer, verb, &resource, &ns),
                "viewer may {verb} {kind}"
            );
            let expected = kind != "incidents" || !verb.starts_with("delete");
            for user in [&editor, &admin] {
                assert_eq!(
                    can(user, verb, &resource, &ns),
                    expected,
                    "{user} {verb} {kind}"
                );
            }
        }
    }
    // Only there: nothing in another namespace.
    let elsewhere = namespace(&client, "aggregate-elsewhere").await;
    assert!(!can(
        &viewer,
        "list",
        "incidents.healing-guard.io",
        &elsewhere
    ));

    run("kubectl", &["delete", "-f", "-"], Some(&roles));
    run(
        "kubectl",
        &["delete", "namespace", &ns, &elsewhere, "--wait=false"],
        None,
    );
}

/// The CRDs as the chart ships them, in a group and under names of their
/// own (`upgrade-test.healing-guard.io`, kinds `UpgradeTest<Kind>`), so
/// that changing them touches nothing the other tests use.
fn in_a_group_of_their_own(crds: &str) -> Vec<Value> {
    const GROUP: &str = "upgrade-test.healing-guard.io";
    documents(crds)
        .into_iter()
        .map(|mut crd| {
            let names = &mut crd["spec"]["names"];
            let kind = format!("UpgradeTest{}", names["kind"].as_str().unwrap());
            let plural = format!("upgradetest{}", names["plural"].as_str().unwrap());
            let singular = kind.to_lowercase();
            *names = json!({"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": singular});
            crd["spec"]["group"] = json!(GROUP);
            crd["metadata"]["name"] = json!(format!("{plural}.{GROUP}"));
            crd
        })
        .collect()
}

/// Objects as a multi-document YAML text (JSON is YAML).
fn as_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|object| format!("---\n{object}\n"))
        .collect()
}

/// Helm creates the CRDs on install and never changes them again; the
/// chart README's upgrade, `helm show crds CHART | kubectl apply
/// --server-side --force-conflicts -f -`, takes them over from Helm and
/// brings a field an older CRD lacked. Done once, on a copy in a group of
/// its own: the older CRD installed by Helm from a chart of its own, an
/// object made, the upgrade applied; the object is still there and the
/// new field is kept.
#[tokio::test]
async fn the_crds_upgrade_as_the_chart_readme_says() {
    let client = client().await;
    let ns = namespace(&client, "crd-upgrade").await;
    let shipped = run(
        "helm",
        &["show", "crds", "charts/healing-guard-operator"],
        None,
    );
    let new = in_a_group_of_their_own(&shipped);
    assert_eq!(new.len(), 4, "four CRDs");
    let channels = "upgradetestnotificationchannels.upgrade-test.healing-guard.io";
    // The older version: a NotificationChannel without spec.perMinute.
    let mut old = new.clone();
    let channel = old
        .iter_mut()
        .find(|crd| crd["metadata"]["name"] == channels)
        .unwrap();
    let spec = &mut channel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert!(spec.as_object_mut().unwrap().remove("perMinute").is_some());

    // Installed by Helm, as a first install does (crds/ of a chart).
    let chart = tempfile::tempdir().unwrap();
    std::fs::create_dir(chart.path().join("crds")).unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: upgrade-test\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.path().join("crds/crds.yaml"), as_stream(&old)).unwrap();
    let release = format!("upgrade-test-{ns}");
    run(
        "helm",
        &[
            "install",
            &release,
            chart.path().to_str().unwrap(),
            "--namespace",
            &ns,
        ],
        None,
    );
    let names: Vec<String> = new
        .iter()
        .map(|crd| format!("crd/{}", crd["metadata"]["name"].as_str().unwrap()))
        .collect();
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(names.iter().map(String::as_str));
    run("kubectl", &wait, None);

    let channel = |name: &str, per_minute: Option<u32>| {
        let mut object = json!({
            "apiVersion": "upgrade-test.healing-guard.io/v1alpha1",
            "kind": "UpgradeTestNotificationChannel",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"kind": "Slack", "secretRef": {"name": "slack"}}
        });
        if let Some(per_minute) = per_minute {
            object["spec"]["perMinute"] = json!(per_minute);
        }
        object.to_string()
    };
    run(
        "kubectl",
        &["create", "-f", "-"],
        Some(&channel("before", None)),
    );
    // The older schema does not know the field: refused (kubectl validates strictly).
    let (ok, _, stderr) = run_status(
        "kubectl",
        &["create", "--dry-run=server", "-f", "-"],
        Some(&channel("early", Some(5))),
    );
    assert!(
        !ok && stderr.contains("perMinute"),
        "the older CRD took spec.perMinute: {stderr}"
    );

    // The upgrade, as the README gives it (the copy renamed on the way).
    let upgraded = run(
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&as_stream(&in_a_group_of_their_own(&run(
            "helm",
            &["show", "crds", "charts/healing-guard-operator"],
            None,
        )))),
    );
    assert_eq!(
        upgraded.matches("serverside-applied").count(),
        4,
        "{upgraded}"
    );
    run("kubectl", &wait, None);

    let stored: Value = serde_json::from_str(&run(
        "kubectl",
        &[
            "get",
            &format!("crd/{channels}"),
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    ))
    .unwrap();
    let properties = &stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert_eq!(properties["perMinute"]["maximum"], 600.0, "{properties:#}");
    // Managed from now on by kubectl's server-side apply, not by Helm.
    let managers: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["operation"] == "Apply")
        .map(|entry| entry["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    run(
        "kubectl",
        &["create", "-f", "-"],
        Some(&channel("after", Some(5))),
    );
    let resource = "upgradetestnotificationchannels.upgrade-test.healing-guard.io";
    let after: Value = serde_json::from_str(&run(
        "kubectl",
        &["get", resource, "after", "-n", &ns, "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(after["spec"]["perMinute"], 5);
    // The object made before is still there, now with the new field's default.
    let before: Value = serde_json::from_str(&run(
        "kubectl",
        &["get", resource, "before", "-n", &ns, "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(before["spec"]["perMinute"], 30);

    run("helm", &["uninstall", &release, "--namespace", &ns], None);
    let mut delete = vec!["delete", "--wait=false"];
    delete.extend(names.iter().map(String::as_str));
    run("kubectl", &delete, None);
    run(
        "kubectl",
        &["delete", "namespace", &ns, "--wait=false"],
        None,
    );
}
