//! Targets that real Flux reconciles from Git (issue 24). Needs Flux
//! running against the control plane: `make test` starts it
//! (`cluster/flux.sh start`, which sets FLUX_GIT_URL in flux.env).

use healing_guard_operator::crd::{GitOpsKind, GitOpsOwner, Incident};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::remediation::{crash_policy, policy_with};
use crate::support::{
    Operator, client, eventually, eventually_within, incident_where, namespace, repo, run,
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
