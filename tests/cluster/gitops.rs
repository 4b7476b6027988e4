//! Targets that real Flux reconciles from Git (issue 24). Needs Flux
//! running against the control plane: `make test` starts it
//! (`cluster/flux.sh start`, which sets FLUX_GIT_URL in flux.env).

use healing_guard_operator::crd::{GitOpsKind, GitOpsOwner, Incident};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::remediation::{crash_policy, policy_with};
use crate::support::{
    Operator, REMEDIATOR, client, eventually, eventually_within, incident_where, namespace, repo,
    run,
};

/// The Flux-side names: a GitRepository and a Kustomization in flux-system
/// named after the test's namespace, and a bare repository of that name.
struct Flux {
    name: String,
    work: tempfile::TempDir,
}

impl Flux {
    /// A repository on the loopback Git server, cloned into a work tree.
    fn repository(name: &str) -> Flux {
        let cluster =
            std::env::var("HGO_CLUSTER_DIR").expect("HGO_CLUSTER_DIR (with-cluster.sh sets it)");
        assert!(
            std::env::var("FLUX_GIT_URL").is_ok(),
            "no Flux: run with `make test`, or `cluster/flux.sh start` and source $HGO_CLUSTER_DIR/flux.env"
        );
        let script = repo().join("cluster/flux.sh");
        let url = run(
            script.to_str().unwrap(),
            &["--dir", &cluster, "repo", name],
            None,
        );
        let work = tempfile::tempdir().unwrap();
        run(
            "git",
            &[
                "clone",
                "--quiet",
                url.trim(),
                work.path().join("repo").to_str().unwrap(),
            ],
            None,
        );
        Flux {
            name: name.to_owned(),
            work,
        }
    }

    fn tree(&self) -> std::path::PathBuf {
        self.work.path().join("repo")
    }

    fn git(&self, args: &[&str]) -> String {
        let tree = self.tree();
        let mut full = vec![
            "-C",
            tree.to_str().unwrap(),
            "-c",
            "user.name=healing-guard tests",
            "-c",
            "user.email=tests@healing-guard.invalid",
        ];
        full.extend_from_slice(args);
        run("git", &full, None)
    }

    /// Commits `files` (path, content) and pushes; the revision as Flux names it.
    fn push(&self, message: &str, files: &[(&str, String)]) -> String {
        for (path, content) in files {
            let path = self.tree().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["push", "--quiet", "origin", "HEAD:main"]);
        format!("main@sha1:{}", self.git(&["rev-parse", "HEAD"]).trim())
    }

    /// The GitRepository and the Kustomization that applies `./app` from it.
    fn sync(&self) {
        let url = format!(
            "{}/{}.git",
            std::env::var("FLUX_GIT_URL").unwrap(),
            self.name
        );
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
             "metadata": {"name": self.name, "namespace": "flux-system"},
             "spec": {"interval": "10s", "timeout": "20s", "url": url, "ref": {"branch": "main"}}},
            {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
             "metadata": {"name": self.name, "namespace": "flux-system"},
             "spec": {"interval": "10s", "retryInterval": "10s", "timeout": "1m", "prune": true, "wait": false,
                      "path": "./app", "sourceRef": {"kind": "GitRepository", "name": self.name}}}
        ]});
        run("kubectl", &["apply", "-f", "-"], Some(&objects.to_string()));
    }

    /// What the GitOps object's owner grants the test namespace's
    /// remediator in flux-system: get and patch on this one Kustomization,
    /// get on its GitRepository (docs/security.md shows the same Role).
    fn grant_hold(&self, ns: &str) {
        grant_remediator(
            ns,
            "flux-system",
            json!([
                {"apiGroups": ["kustomize.toolkit.fluxcd.io"], "resources": ["kustomizations"],
                 "resourceNames": [self.name], "verbs": ["get", "patch"]},
                {"apiGroups": ["source.toolkit.fluxcd.io"], "resources": ["gitrepositories"],
                 "resourceNames": [self.name], "verbs": ["get"]}
            ]),
        );
    }

    /// The Kustomization as JSON.
    fn kustomization(&self) -> serde_json::Value {
        let out = run(
            "kubectl",
            &[
                "-n",
                "flux-system",
                "get",
                "kustomization",
                &self.name,
                "-o",
                "json",
            ],
            None,
        );
        serde_json::from_str(&out).unwrap()
    }

    fn remove(&self) {
        for kind in ["kustomization", "gitrepository"] {
            run(
                "kubectl",
                &[
                    "-n",
                    "flux-system",
                    "delete",
                    kind,
                    &self.name,
                    "--wait=false",
                ],
                None,
            );
        }
    }
}

/// What a GitOps object's owner grants the test namespace's remediator
/// in the object's namespace: a Role of `rules` (limited by name), bound to
/// it (docs/security.md shows the same).
fn grant_remediator(ns: &str, namespace: &str, rules: serde_json::Value) {
    let grant = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": format!("hold-{ns}"), "namespace": namespace},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": format!("hold-{ns}"), "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("hold-{ns}")},
         "subjects": [{"kind": "ServiceAccount", "name": REMEDIATOR, "namespace": ns}]}
    ]});
    run("kubectl", &["apply", "-f", "-"], Some(&grant.to_string()));
}

/// The app's manifests: a Deployment `api` of 2 in `ns`, guarded, at `image`;
/// `crashing` marks its pods for kwok's crash-loop stage.
fn app(ns: &str, image: &str, crashing: bool) -> Vec<(&'static str, String)> {
    let mut pod_labels = json!({"app": "api"});
    if crashing {
        pod_labels["healing-guard.io/inject"] = json!("crashloop");
    }
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": ns, "labels": {"guarded": "yes"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": pod_labels},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}
    });
    vec![
        ("app/deployment.yaml", deployment.to_string()),
        (
            "app/kustomization.yaml",
            "resources: [deployment.yaml]\n".to_owned(),
        ),
    ]
}

#[tokio::test]
async fn gitops_an_incident_on_a_flux_applied_target_names_its_kustomization() {
    let client = client().await;
    let ns = namespace(&client, "gitops").await;
    let _operator = Operator::start(&ns).await;
    // Dry run: this test is about what the incident records, not a change.
    policy_with(
        &client,
        &ns,
        crash_policy("DryRun", json!([{"action": "rollback"}]), "2m"),
    )
    .await;
    let flux = Flux::repository(&ns);
    flux.push("api 1", &app(&ns, "registry.local/api:1", false));
    flux.sync();

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let applied = eventually_within(
        "Flux to apply the Deployment",
        std::time::Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("api").await.ok()?;
                (deployment.status.as_ref()?.available_replicas == Some(2)).then_some(deployment)
            }
        },
    )
    .await;
    // Real Flux's marks, which the operator reads.
    assert_eq!(
        applied
            .labels()
            .get("kustomize.toolkit.fluxcd.io/name")
            .map(String::as_str),
        Some(ns.as_str())
    );

    let bad = flux.push(
        "api 2: crashes at start-up",
        &app(&ns, "registry.local/api:2", true),
    );
    let incident: Incident =
        incident_where(&client, &ns, "api-crashloop", "evidence captured", |i| {
            i.status
                .as_ref()
                .and_then(|s| s.evidence.as_ref())
                .is_some_and(|e| e.captured_at.is_some())
        })
        .await;
    let evidence = incident.status.unwrap().evidence.unwrap();
    let owner = GitOpsOwner {
        kind: GitOpsKind::Kustomization,
        name: ns.clone(),
        namespace: Some("flux-system".into()),
    };
    assert_eq!(evidence.gitops.as_ref(), Some(&owner), "{evidence:?}");
    assert!(
        evidence.notes.iter().any(|n| n.starts_with(&format!(
            "Deployment/api is reconciled from Git by Kustomization flux-system/{ns}:"
        ))),
        "{:?}",
        evidence.notes
    );
    // The bad release came from Git: Flux applied that very commit.
    eventually("the Kustomization to report the bad commit", || async {
        let revision = run(
            "kubectl",
            &[
                "-n",
                "flux-system",
                "get",
                "kustomization",
                &ns,
                "-o",
                "jsonpath={.status.lastAppliedRevision}",
            ],
            None,
        );
        (revision.trim() == bad).then_some(())
    })
    .await;
    flux.remove();
}

/// The incident once its step is verified and it waits for Git to move on.
async fn waiting_on_git(client: &kube::Client, ns: &str) -> Incident {
    incident_where(
        client,
        ns,
        "api-crashloop",
        "rolled back and waiting on Git",
        |i| {
            i.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "GitOpsSuspended" && c.reason == "WaitingForGit")
            })
        },
    )
    .await
}

/// The incident once the release from Git that followed is verified.
async fn resolved_after_the_fix(client: &kube::Client, ns: &str) -> Incident {
    incident_where(client, ns, "api-crashloop", "resolved after the fix", |i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(healing_guard_operator::crd::Phase::Resolved))
    })
    .await
}

/// The Deployment's image and whether its pods are marked to crash.
async fn release_of(deployments: &Api<Deployment>) -> (String, bool) {
    let deployment = deployments.get("api").await.unwrap();
    let template = deployment.spec.unwrap().template;
    let image = template.spec.unwrap().containers[0].image.clone().unwrap();
    let crashing = template
        .metadata
        .and_then(|m| m.labels)
        .is_some_and(|l| l.contains_key("healing-guard.io/inject"));
    (image, crashing)
}

/// Flux applies `api:1`, healthy: the Deployment, the Flux objects.
async fn flux_applied_a_good_release(
    client: &kube::Client,
    ns: &str,
) -> (Flux, String, Api<Deployment>) {
    let flux = Flux::repository(ns);
    let good = flux.push("api 1", &app(ns, "registry.local/api:1", false));
    flux.sync();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually_within(
        "Flux to apply the Deployment",
        std::time::Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("api").await.ok()?;
                (deployment.status.as_ref()?.available_replicas == Some(2)).then_some(())
            }
        },
    )
    .await;
    (flux, good, deployments)
}

#[tokio::test]
async fn gitops_a_rollback_holds_flux_until_git_moves_on_then_the_fix_is_verified() {
    let client = client().await;
    let ns = namespace(&client, "gitops-hold").await;
    let _operator = Operator::start(&ns).await;
    // The default, onRollback Suspend; and a revert branch (the loopback
    // Git server takes anonymous pushes).
    let mut spec = crash_policy("Auto", json!([{"action": "rollback"}]), "90s");
    spec["gitops"] = json!({"revertBranch": {}});
    policy_with(&client, &ns, spec).await;
    let (flux, good, deployments) = flux_applied_a_good_release(&client, &ns).await;
    flux.grant_hold(&ns);

    let bad = flux.push(
        "api 2: crashes at start-up",
        &app(&ns, "registry.local/api:2", true),
    );
    let waiting: Incident = waiting_on_git(&client, &ns).await;
    let status = waiting.status.clone().unwrap();
    // One ledger entry: the hold and the rollback, with the undo command.
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    let step = &status.steps[0];
    assert_eq!(
        step.result,
        healing_guard_operator::crd::StepResult::Succeeded
    );
    let held_line =
        format!("suspended Kustomization flux-system/{ns} from GitRepository flux-system/{ns}");
    assert!(
        step.changes.iter().any(|c| c.starts_with(&held_line)
            && c.contains(&format!("applied revision {bad}"))
            && c.contains(&format!(
                "undo: kubectl -n flux-system patch kustomization {ns} --type=merge"
            ))),
        "{:?}",
        step.changes
    );
    let hold = status.sync_holds.last().unwrap();
    assert_eq!(hold.bad_revision.as_deref(), Some(bad.as_str()));
    assert_eq!(
        hold.good_revision.as_deref(),
        Some(good.as_str()),
        "{hold:?}"
    );
    assert_eq!(hold.step, step.id);
    assert_eq!(
        status
            .evidence
            .as_ref()
            .and_then(|e| e.gitops_revision.as_deref()),
        Some(bad.as_str())
    );
    let kustomization = flux.kustomization();
    assert_eq!(kustomization["spec"]["suspend"], json!(true));
    assert_eq!(
        kustomization["metadata"]["annotations"]["healing-guard.io/sync-held-by"],
        json!(format!("{ns}/api-crashloop"))
    );
    assert_eq!(
        waiting.status.as_ref().unwrap().phase,
        Some(healing_guard_operator::crd::Phase::Monitoring)
    );
    // The revert branch: one commit on top of the bad one, with the good tree.
    let revert = eventually("the revert branch pushed", || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let incident = incident_where(&client, &ns, "api-crashloop", "any", |_| true).await;
            incident.status?.sync_holds.last()?.revert.clone()?.commit
        }
    })
    .await;
    flux.git(&[
        "fetch",
        "--quiet",
        "origin",
        "healing-guard/revert-api-crashloop",
    ]);
    assert_eq!(flux.git(&["rev-parse", "FETCH_HEAD"]).trim(), revert);
    let sha = |revision: &str| revision.rsplit_once(':').unwrap().1.to_owned();
    assert_eq!(flux.git(&["rev-parse", "FETCH_HEAD^"]).trim(), sha(&bad));
    assert_eq!(
        flux.git(&["rev-parse", "FETCH_HEAD^{tree}"]),
        flux.git(&["rev-parse", &format!("{}^{{tree}}", sha(&good))])
    );

    // Three of Flux's sync intervals (10 s): the bad release does not come back.
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:1".to_owned(), false),
        "the rollback stands while Flux is held"
    );
    let still = incident_where(&client, &ns, "api-crashloop", "still waiting", |_| true).await;
    let still = still.status.unwrap();
    assert_eq!(still.steps.len(), 1, "no step ran again: {:?}", still.steps);
    assert_eq!(
        still.phase,
        Some(healing_guard_operator::crd::Phase::Monitoring)
    );

    // A fix lands in Git: the operator resumes Flux, which applies it; verified; resolved.
    let fix = flux.push("api 3: the fix", &app(&ns, "registry.local/api:3", false));
    let resolved = resolved_after_the_fix(&client, &ns).await;
    let status = resolved.status.unwrap();
    let hold = status.sync_holds.last().unwrap();
    assert_eq!(hold.release.as_deref(), Some(fix.as_str()), "{hold:?}");
    assert!(
        hold.resumed_because
            .as_deref()
            .unwrap()
            .contains("moved past"),
        "{hold:?}"
    );
    assert!(hold.verified_at.is_some(), "{hold:?}");
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:3".to_owned(), false)
    );
    let kustomization = flux.kustomization();
    assert_ne!(kustomization["spec"]["suspend"], json!(true));
    assert!(kustomization["metadata"]["annotations"]["healing-guard.io/sync-held-by"].is_null());
    // The messages and the report name the bad revision and the commits.
    let commits = format!(
        "{}..{}",
        good.rsplit_once(':').unwrap().1,
        bad.rsplit_once(':').unwrap().1
    );
    assert!(
        status.timeline.iter().any(|e| e.reason == "GitOpsSuspended"
            && e.message.contains(&bad)
            && e.message.contains(&commits)),
        "{:?}",
        status.timeline
    );
    assert!(
        status
            .timeline
            .iter()
            .any(|e| e.reason == "GitOpsRevertPushed"
                && e.message.contains("healing-guard/revert-api-crashloop")),
        "{:?}",
        status.timeline
    );
    let resolved = incident_where(&client, &ns, "api-crashloop", "resolved", |_| true).await;
    let message = healing_guard_operator::communication::templates::fields(
        &resolved,
        healing_guard_operator::crd::NotifyEvent::Resolved,
        None,
        None,
        k8s_openapi::jiff::Timestamp::now(),
    );
    assert!(
        message.gitops.contains(&bad) && message.gitops.contains(&commits),
        "{}",
        message.gitops
    );
    let report = healing_guard_operator::communication::report::render(&resolved);
    assert!(
        report.contains("## GitOps") && report.contains(&commits) && report.contains(&fix),
        "{report}"
    );
    flux.remove();
}

#[tokio::test]
async fn gitops_with_on_rollback_ignore_flux_undoes_each_rollback_until_flapping_stops_it() {
    let client = client().await;
    let ns = namespace(&client, "gitops-ignore").await;
    let _operator = Operator::start(&ns).await;
    // Two rollbacks in the ladder: a fix that did not last is not repeated
    // in the next round, the next rung runs.
    let ladder = json!([{"action": "rollback"}, {"name": "rollback-again", "action": "rollback"}]);
    let mut spec = crash_policy("Auto", ladder, "90s");
    spec["gitops"] = json!({"onRollback": "Ignore"});
    spec["safety"] = json!({"cooldown": "5s"});
    spec["detection"] = json!({"flapThreshold": 2});
    policy_with(&client, &ns, spec).await;
    let (flux, _good, deployments) = flux_applied_a_good_release(&client, &ns).await;

    flux.push(
        "api 2: crashes at start-up",
        &app(&ns, "registry.local/api:2", true),
    );
    let flapping = incident_where(&client, &ns, "api-crashloop", "flapping, escalated", |i| {
        i.status.as_ref().is_some_and(|s| {
            s.phase == Some(healing_guard_operator::crd::Phase::Escalated)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Flapping" && c.status == "True")
        })
    })
    .await;
    let status = flapping.status.unwrap();
    // Each rollback held until Flux's next sync put the bad release back:
    // two rounds, then the flap threshold stopped it.
    let rollbacks: Vec<_> = status
        .steps
        .iter()
        .filter(|s| s.action == healing_guard_operator::crd::ActionKind::Rollback)
        .collect();
    assert_eq!(rollbacks.len(), 2, "{:?}", status.steps);
    assert!(
        rollbacks.iter().all(|s| s.relapsed_at.is_some()),
        "{:?}",
        status.steps
    );
    assert!(status.sync_holds.is_empty());
    assert_ne!(flux.kustomization()["spec"]["suspend"], json!(true));
    // Nothing more runs: Flux's release stays, for a person.
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    let after = incident_where(&client, &ns, "api-crashloop", "still escalated", |_| true).await;
    assert_eq!(after.status.unwrap().steps.len(), status.steps.len());
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:2".to_owned(), true)
    );
    flux.remove();
}

/// Hostile use: a tenant writes Flux's labels on a workload of their own,
/// naming a Kustomization the remediator may patch, to have the operator
/// suspend it. Flux's inventory does not list that workload: the rollback
/// runs unheld, says why, and the Kustomization keeps syncing.
#[tokio::test]
async fn gitops_a_forged_flux_label_never_suspends_the_kustomization_it_names() {
    let client = client().await;
    let ns = namespace(&client, "gitops-forged").await;
    let _operator = Operator::start(&ns).await;
    policy_with(
        &client,
        &ns,
        crash_policy("Auto", json!([{"action": "rollback"}]), "90s"),
    )
    .await;
    let (flux, _good, _deployments) = flux_applied_a_good_release(&client, &ns).await;
    flux.grant_hold(&ns);

    let forged: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "forged", "labels": {
            "guarded": "yes",
            "kustomize.toolkit.fluxcd.io/name": ns,
            "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "forged"}},
                 "template": {"metadata": {"labels": {"app": "forged"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.local/forged:1"}]}}}
    }))
    .unwrap();
    forged
        .create(&kube::api::PostParams::default(), &deployment)
        .await
        .unwrap();
    eventually("forged revision 1 available", || {
        let forged = forged.clone();
        async move {
            (forged.get("forged").await.ok()?.status?.available_replicas == Some(2)).then_some(())
        }
    })
    .await;
    let bad = json!({"spec": {"template": {
        "metadata": {"labels": {"healing-guard.io/inject": "crashloop"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/forged:2"}]}}}});
    forged
        .patch(
            "forged",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&bad),
        )
        .await
        .unwrap();
    let resolved = incident_where(&client, &ns, "forged-crashloop", "resolved unheld", |i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(healing_guard_operator::crd::Phase::Resolved))
    })
    .await;
    let status = resolved.status.unwrap();
    assert!(status.sync_holds.is_empty(), "{:?}", status.sync_holds);
    assert!(
        status.steps[0].changes.iter().any(|c| c.starts_with(&format!(
            "not held: the target's labels name Kustomization flux-system/{ns}, whose inventory does not list the target"
        ))),
        "{:?}",
        status.steps[0].changes
    );
    let kustomization = flux.kustomization();
    assert_ne!(kustomization["spec"]["suspend"], json!(true));
    assert!(kustomization["metadata"]["annotations"]["healing-guard.io/sync-held-by"].is_null());
    flux.remove();
}

/// Argo CD's side: an Application (automated sync, self-heal) in the
/// `argocd` namespace, named after the test namespace, applying `./app`
/// from the same bare repository; and what the remediator is granted on it.
fn argo_application(flux: &Flux, ns: &str) {
    let url = format!(
        "{}/{}.git",
        std::env::var("ARGOCD_GIT_URL").expect("no Argo CD: run with `make test`, or `cluster/argocd.sh start` and source $HGO_CLUSTER_DIR/argocd.env"),
        flux.name
    );
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
         "metadata": {"name": ns, "namespace": "argocd"},
         "spec": {"project": "default",
                  // A plain directory (the repo-server here has no kustomize
                  // binary): the Deployment's file only.
                  "source": {"repoURL": url, "targetRevision": "main", "path": "app",
                             "directory": {"include": "deployment.yaml"}},
                  "destination": {"server": "https://kubernetes.default.svc", "namespace": ns},
                  "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}}
    ]});
    run("kubectl", &["apply", "-f", "-"], Some(&objects.to_string()));
    grant_remediator(
        ns,
        "argocd",
        json!([{"apiGroups": ["argoproj.io"], "resources": ["applications"],
                "resourceNames": [ns], "verbs": ["get", "patch"]}]),
    );
}

fn application(ns: &str) -> serde_json::Value {
    let out = run(
        "kubectl",
        &["-n", "argocd", "get", "application", ns, "-o", "json"],
        None,
    );
    serde_json::from_str(&out).unwrap()
}

/// The commit of a revision as Flux names it (`main@sha1:SHA`): Argo CD's form.
fn sha(revision: &str) -> String {
    revision
        .rsplit_once(':')
        .map_or(revision, |(_, sha)| sha)
        .to_owned()
}

#[tokio::test]
async fn gitops_argocd_a_rollback_turns_self_heal_off_until_git_moves_on() {
    let client = client().await;
    let ns = namespace(&client, "gitops-argo").await;
    let _operator = Operator::start(&ns).await;
    policy_with(
        &client,
        &ns,
        crash_policy("Auto", json!([{"action": "rollback"}]), "90s"),
    )
    .await;
    let repo = Flux::repository(&ns);
    let good = sha(&repo.push("api 1", &app(&ns, "registry.local/api:1", false)));
    argo_application(&repo, &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually_within(
        "Argo CD to apply the Deployment",
        std::time::Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("api").await.ok()?;
                (deployment.status.as_ref()?.available_replicas == Some(2)).then_some(())
            }
        },
    )
    .await;

    let bad = sha(&repo.push(
        "api 2: crashes at start-up",
        &app(&ns, "registry.local/api:2", true),
    ));
    let waiting: Incident = waiting_on_git(&client, &ns).await;
    let status = waiting.status.unwrap();
    let owner = GitOpsOwner {
        kind: GitOpsKind::Application,
        name: ns.clone(),
        namespace: Some("argocd".into()),
    };
    assert_eq!(
        status.evidence.as_ref().and_then(|e| e.gitops.as_ref()),
        Some(&owner)
    );
    let hold = status.sync_holds.last().unwrap();
    assert_eq!(hold.owner, owner);
    assert_eq!(hold.bad_revision.as_deref(), Some(bad.as_str()), "{hold:?}");
    assert_eq!(
        hold.good_revision.as_deref(),
        Some(good.as_str()),
        "{hold:?}"
    );
    assert!(
        status.steps[0].changes.iter().any(|c| c
            .starts_with(&format!("suspended Application argocd/{ns}"))
            && c.contains("(self-heal off)")
            && c.contains("\"selfHeal\":true")),
        "{:?}",
        status.steps[0].changes
    );
    let held = application(&ns);
    assert_eq!(
        held["spec"]["syncPolicy"]["automated"]["selfHeal"],
        json!(false)
    );
    assert_eq!(
        held["spec"]["syncPolicy"]["automated"]["prune"],
        json!(true),
        "the rest of the policy kept"
    );

    // Three of the controller's resync intervals (10 s): the rollback stands.
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:1".to_owned(), false)
    );

    // A fix lands: Argo CD syncs the new commit; the operator turns
    // self-heal back on and verifies the release.
    let fix = sha(&repo.push("api 3: the fix", &app(&ns, "registry.local/api:3", false)));
    let resolved = resolved_after_the_fix(&client, &ns).await;
    let status = resolved.status.unwrap();
    let hold = status.sync_holds.last().unwrap();
    assert_eq!(hold.release.as_deref(), Some(fix.as_str()), "{hold:?}");
    assert!(hold.verified_at.is_some(), "{hold:?}");
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:3".to_owned(), false)
    );
    let resumed = application(&ns);
    assert_eq!(
        resumed["spec"]["syncPolicy"]["automated"]["selfHeal"],
        json!(true)
    );
    assert!(resumed["metadata"]["annotations"]["healing-guard.io/sync-held-by"].is_null());
    run(
        "kubectl",
        &["-n", "argocd", "delete", "application", &ns, "--wait=false"],
        None,
    );
}

/// A chart in Git at `./chart`: the Deployment `api` of 2, guarded, at
/// `image`; `crashing` marks its pods for kwok's crash-loop stage.
fn chart(image: &str, crashing: bool) -> Vec<(&'static str, String)> {
    let template = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {guarded: "yes"}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata:
      labels:
        app: api
        {{- if .Values.crashing }}
        healing-guard.io/inject: crashloop
        {{- end }}
    spec:
      containers:
      - name: app
        image: {{ .Values.image | quote }}
"#;
    vec![
        (
            "chart/Chart.yaml",
            "apiVersion: v2\nname: api\nversion: 0.1.0\n".to_owned(),
        ),
        (
            "chart/values.yaml",
            format!("image: {image}\ncrashing: {crashing}\n"),
        ),
        ("chart/templates/deployment.yaml", template.to_owned()),
    ]
}

impl Flux {
    /// A GitRepository and a HelmRelease installing `./chart` into `ns`,
    /// with drift detection on (Flux then undoes a change to what it
    /// installed at its next reconcile, like a Kustomization); and the
    /// remediator's grant on that HelmRelease.
    fn helm_release(&self, ns: &str) {
        let url = format!(
            "{}/{}.git",
            std::env::var("FLUX_GIT_URL").unwrap(),
            self.name
        );
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
             "metadata": {"name": self.name, "namespace": "flux-system"},
             "spec": {"interval": "10s", "timeout": "20s", "url": url, "ref": {"branch": "main"}}},
            {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
             "metadata": {"name": self.name, "namespace": "flux-system"},
             "spec": {"interval": "10s", "timeout": "1m", "targetNamespace": ns,
                      "driftDetection": {"mode": "enabled"},
                      "chart": {"spec": {"chart": "./chart", "interval": "10s", "reconcileStrategy": "Revision",
                                         "sourceRef": {"kind": "GitRepository", "name": self.name}}}}}
        ]});
        run("kubectl", &["apply", "-f", "-"], Some(&objects.to_string()));
        grant_remediator(
            ns,
            "flux-system",
            json!([
                {"apiGroups": ["helm.toolkit.fluxcd.io"], "resources": ["helmreleases"],
                 "resourceNames": [self.name], "verbs": ["get", "patch"]},
                {"apiGroups": ["source.toolkit.fluxcd.io"], "resources": ["gitrepositories"],
                 "resourceNames": [self.name], "verbs": ["get"]}
            ]),
        );
    }

    fn helm_release_json(&self) -> serde_json::Value {
        let out = run(
            "kubectl",
            &[
                "-n",
                "flux-system",
                "get",
                "helmrelease",
                &self.name,
                "-o",
                "json",
            ],
            None,
        );
        serde_json::from_str(&out).unwrap()
    }
}

#[tokio::test]
async fn gitops_helm_release_a_rollback_suspends_the_helm_release_until_git_moves_on() {
    let client = client().await;
    let ns = namespace(&client, "gitops-helm").await;
    let _operator = Operator::start(&ns).await;
    policy_with(
        &client,
        &ns,
        crash_policy("Auto", json!([{"action": "rollback"}]), "90s"),
    )
    .await;
    let flux = Flux::repository(&ns);
    let good = flux.push("api 1", &chart("registry.local/api:1", false));
    flux.helm_release(&ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually_within(
        "helm-controller to install the chart",
        std::time::Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("api").await.ok()?;
                (deployment.status.as_ref()?.available_replicas == Some(2)).then_some(())
            }
        },
    )
    .await;

    let bad = flux.push(
        "api 2: crashes at start-up",
        &chart("registry.local/api:2", true),
    );
    let waiting = waiting_on_git(&client, &ns).await;
    let status = waiting.status.unwrap();
    let owner = GitOpsOwner {
        kind: GitOpsKind::HelmRelease,
        name: ns.clone(),
        namespace: Some("flux-system".into()),
    };
    let hold = status.sync_holds.last().unwrap();
    assert_eq!(hold.owner, owner);
    // The chart version names the commit; the hold names Git's revision.
    assert_eq!(hold.bad_revision.as_deref(), Some(bad.as_str()), "{hold:?}");
    let good_commit = good.rsplit_once(':').unwrap().1;
    assert!(
        hold.good_revision
            .as_deref()
            .is_some_and(|r| good_commit.starts_with(r.rsplit_once('+').unwrap().1)),
        "{hold:?}"
    );
    assert!(
        status.steps[0]
            .changes
            .iter()
            .any(|c| c.starts_with(&format!(
                "suspended HelmRelease flux-system/{ns} from GitRepository flux-system/{ns}"
            ))),
        "{:?}",
        status.steps[0].changes
    );
    assert_eq!(flux.helm_release_json()["spec"]["suspend"], json!(true));

    // Three intervals (10 s) with drift detection on: the rollback stands.
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:1".to_owned(), false)
    );

    let fix = flux.push("api 3: the fix", &chart("registry.local/api:3", false));
    let resolved = resolved_after_the_fix(&client, &ns).await;
    let status = resolved.status.unwrap();
    let hold = status.sync_holds.last().unwrap();
    assert_eq!(hold.release.as_deref(), Some(fix.as_str()), "{hold:?}");
    assert!(hold.verified_at.is_some(), "{hold:?}");
    assert_eq!(status.steps.len(), 1, "{:?}", status.steps);
    assert_eq!(
        release_of(&deployments).await,
        ("registry.local/api:3".to_owned(), false)
    );
    assert_ne!(flux.helm_release_json()["spec"]["suspend"], json!(true));
    for kind in ["helmrelease", "gitrepository"] {
        run(
            "kubectl",
            &["-n", "flux-system", "delete", kind, &ns, "--wait=false"],
            None,
        );
    }
}
