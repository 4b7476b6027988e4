//! The GitOps object that reconciles a target, as read: whether it is
//! suspended and by whom, what it applied, from which source, and whether
//! it really manages the target. Pure: the objects' JSON in, facts out.

use serde_json::Value;

use crate::crd::{GitOpsKind, GitOpsOwner, WorkloadRef};

/// Written on a GitOps object the operator suspended: the incident
/// (`namespace/name`) holding it. Only that incident lifts it.
pub const HELD_BY_ANNOTATION: &str = "healing-guard.io/sync-held-by";
/// Written beside it: the ledger id of the step the hold protects.
pub const HELD_FOR_STEP_ANNOTATION: &str = "healing-guard.io/sync-held-for-step";

/// What a read of the GitOps object found.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncRead {
    Read(Box<SyncState>),
    /// It does not exist (any more).
    Missing,
    /// The namespace's remediator may not read it (or its kind is not
    /// served here), in words.
    Refused(String),
}

/// The GitOps object and its source, as read.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncState {
    pub owner: GitOpsOwner,
    /// `spec.suspend`.
    pub suspended: bool,
    /// The incident that suspended it, from [`HELD_BY_ANNOTATION`].
    pub held_by: Option<String>,
    /// The revision it last applied.
    pub applied_revision: Option<String>,
    /// The revision it applied before that (its history).
    pub previous_revision: Option<String>,
    /// Whether it really manages the target: its inventory lists the
    /// workload (a Kustomization), or it installs into the workload's
    /// namespace (a HelmRelease). Labels can be written by anyone; this
    /// is what the GitOps controller itself recorded.
    pub manages_target: bool,
    pub source: Option<Source>,
    /// Why the source could not be read (where Git is now is unknown).
    pub source_unread: Option<String>,
    /// A reconcile is under way (Flux's `Reconciling` condition, an Argo CD
    /// sync operation running): suspending does not stop it, and it may
    /// still undo a change made now.
    pub busy: bool,
}

/// The source a GitOps object applies from.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Source {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub url: Option<String>,
    /// The revision of its latest artifact: where Git is now.
    pub revision: Option<String>,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The API version served for each kind (Flux v2.x).
pub fn api_version(kind: GitOpsKind) -> &'static str {
    match kind {
        GitOpsKind::Kustomization => "v1",
        GitOpsKind::HelmRelease => "v2",
        GitOpsKind::Application => "v1alpha1",
    }
}

/// The plural resource name of each kind.
pub fn plural(kind: GitOpsKind) -> &'static str {
    match kind {
        GitOpsKind::Kustomization => "kustomizations",
        GitOpsKind::HelmRelease => "helmreleases",
        GitOpsKind::Application => "applications",
    }
}

/// The state of the GitOps object `object` (its JSON) reconciling `target`
/// in `namespace`; its source's fields are filled in by [`with_source`].
pub fn state_of(
    owner: &GitOpsOwner,
    object: &Value,
    namespace: &str,
    target: &WorkloadRef,
) -> SyncState {
    if owner.kind == GitOpsKind::Application {
        return application_state(owner, object, namespace, target);
    }
    let spec = &object["spec"];
    let status = &object["status"];
    let text = |value: &Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let applied_revision = match owner.kind {
        GitOpsKind::HelmRelease => text(&status["lastAttemptedRevision"]),
        _ => text(&status["lastAppliedRevision"]),
    };
    let previous_revision = match owner.kind {
        // A HelmRelease's history is of Helm releases, newest first.
        GitOpsKind::HelmRelease => status["history"].as_array().and_then(|history| {
            history
                .iter()
                .filter_map(|release| release["chartVersion"].as_str())
                .find(|version| Some(*version) != applied_revision.as_deref())
                .map(str::to_owned)
        }),
        _ => previous_revision(&status["history"], applied_revision.as_deref()),
    };
    let manages_target = match owner.kind {
        GitOpsKind::Kustomization => in_inventory(&status["inventory"], namespace, target),
        GitOpsKind::HelmRelease => {
            let own = object["metadata"]["namespace"].as_str().unwrap_or_default();
            let installs_into = spec["targetNamespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(own);
            installs_into == namespace
        }
        GitOpsKind::Application => false,
    };
    let source_ref = match owner.kind {
        GitOpsKind::HelmRelease if spec["chartRef"].is_object() => &spec["chartRef"],
        GitOpsKind::HelmRelease => &spec["chart"]["spec"]["sourceRef"],
        _ => &spec["sourceRef"],
    };
    let source = text(&source_ref["name"]).map(|name| Source {
        kind: text(&source_ref["kind"]).unwrap_or_else(|| "GitRepository".into()),
        name,
        namespace: text(&source_ref["namespace"])
            .or_else(|| text(&object["metadata"]["namespace"]))
            .unwrap_or_default(),
        url: None,
        revision: None,
    });
    SyncState {
        owner: owner.clone(),
        suspended: spec["suspend"].as_bool().unwrap_or(false),
        held_by: text(&object["metadata"]["annotations"][HELD_BY_ANNOTATION]),
        applied_revision,
        previous_revision,
        manages_target,
        source,
        source_unread: None,
        busy: condition_true(status, "Reconciling"),
    }
}

/// Whether a Flux object's condition of that type is True.
fn condition_true(status: &Value, kind: &str) -> bool {
    status["conditions"].as_array().is_some_and(|conditions| {
        conditions
            .iter()
            .any(|c| c["type"].as_str() == Some(kind) && c["status"].as_str() == Some("True"))
    })
}

/// The plural resource name of a Flux source kind (`GitRepository` ->
/// `gitrepositories`, `OCIRepository` -> `ocirepositories`, `Bucket` ->
/// `buckets`).
pub fn source_plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// An Argo CD Application: "suspended" is self-heal off (Argo CD then
/// leaves live changes alone, and still syncs new commits); what it
/// applied and where Git is are in its status; it manages what its
/// `status.resources` lists.
fn application_state(
    owner: &GitOpsOwner,
    object: &Value,
    namespace: &str,
    target: &WorkloadRef,
) -> SyncState {
    let text = |value: &Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let status = &object["status"];
    let kind = target.kind.to_string();
    let manages_target = status["resources"].as_array().is_some_and(|resources| {
        resources.iter().any(|r| {
            r["group"].as_str() == Some("apps")
                && r["kind"].as_str() == Some(kind.as_str())
                && r["namespace"].as_str() == Some(namespace)
                && r["name"].as_str() == Some(target.name.as_str())
        })
    });
    let applied_revision = text(&status["operationState"]["syncResult"]["revision"])
        .or_else(|| text(&status["sync"]["revision"]));
    // Argo CD's history is oldest first.
    let previous_revision = status["history"].as_array().and_then(|history| {
        history
            .iter()
            .rev()
            .filter_map(|entry| entry["revision"].as_str())
            .find(|revision| !revision.is_empty() && Some(*revision) != applied_revision.as_deref())
            .map(str::to_owned)
    });
    let source = text(&object["spec"]["source"]["repoURL"]).map(|url| Source {
        kind: "Git repository".into(),
        name: url,
        namespace: String::new(),
        url: None,
        revision: text(&status["sync"]["revision"]),
    });
    SyncState {
        owner: owner.clone(),
        suspended: object["spec"]["syncPolicy"]["automated"]["selfHeal"].as_bool() != Some(true),
        held_by: text(&object["metadata"]["annotations"][HELD_BY_ANNOTATION]),
        applied_revision,
        previous_revision,
        manages_target,
        source,
        source_unread: None,
        busy: status["operationState"]["phase"].as_str() == Some("Running"),
    }
}

/// Fills in the source's URL and current revision from its JSON. A
/// HelmRelease's chart from Git is versioned `VERSION+COMMIT` (its first
/// 12 digits): the release of the source's own revision reads as that
/// revision, so Git moving on is seen the same way as for a Kustomization.
pub fn with_source(mut state: SyncState, source: &Value) -> SyncState {
    let text = |value: &Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let revision = text(&source["status"]["artifact"]["revision"]);
    if let Some(found) = state.source.as_mut() {
        found.url = text(&source["spec"]["url"]);
        found.revision = revision.clone();
    }
    if state.owner.kind == GitOpsKind::HelmRelease
        && let (Some(applied), Some(revision)) = (&state.applied_revision, &revision)
        && let (Some(chart), Some(commit)) = (
            applied.rsplit_once('+').map(|(_, c)| c),
            crate::crd::commit_of(revision),
        )
        && chart.len() >= 7
        && commit.starts_with(chart)
    {
        state.applied_revision = Some(revision.clone());
    }
    state
}

/// Whether a Kustomization's inventory lists the workload. Its entries'
/// ids are `NAMESPACE_NAME_GROUP_KIND`.
fn in_inventory(inventory: &Value, namespace: &str, target: &WorkloadRef) -> bool {
    let id = format!("{namespace}_{}_apps_{}", target.name, target.kind);
    inventory["entries"].as_array().is_some_and(|entries| {
        entries
            .iter()
            .any(|e| e["id"].as_str() == Some(id.as_str()))
    })
}

/// The newest revision in a Flux history (newest first) other than the one
/// applied now.
fn previous_revision(history: &Value, applied: Option<&str>) -> Option<String> {
    history
        .as_array()?
        .iter()
        .filter_map(|snapshot| snapshot["metadata"]["revision"].as_str())
        .find(|revision| !revision.is_empty() && Some(*revision) != applied)
        .map(str::to_owned)
}

/// How a hold reads in one line: the object, its source and what it applied.
pub fn describe(state: &SyncState) -> String {
    let mut line = state.owner.to_string();
    if let Some(source) = &state.source {
        line.push_str(&format!(" from {source}"));
        if let Some(url) = &source.url {
            line.push_str(&format!(" ({url})"));
        }
    }
    if let Some(revision) = &state.applied_revision {
        line.push_str(&format!(", applied revision {revision}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::WorkloadKind;

    fn owner() -> GitOpsOwner {
        GitOpsOwner {
            kind: GitOpsKind::Kustomization,
            name: "apps".into(),
            namespace: Some("flux-system".into()),
        }
    }

    fn api() -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
        }
    }

    fn kustomization() -> Value {
        json!({
            "metadata": {"name": "apps", "namespace": "flux-system",
                         "annotations": {HELD_BY_ANNOTATION: "shop/api-crashloop"}},
            "spec": {"suspend": true, "sourceRef": {"kind": "GitRepository", "name": "apps"}},
            "status": {
                "lastAppliedRevision": "main@sha1:bbbb",
                "inventory": {"entries": [
                    {"id": "shop_api_apps_Deployment", "v": "v1"},
                    {"id": "shop_api__Service", "v": "v1"}
                ]},
                "history": [
                    {"digest": "sha256:2", "metadata": {"revision": "main@sha1:bbbb"}},
                    {"digest": "sha256:1", "metadata": {"revision": "main@sha1:aaaa"}}
                ]
            }
        })
    }

    #[test]
    fn a_kustomization_reads_as_suspended_by_its_incident_with_its_revisions() {
        let state = state_of(&owner(), &kustomization(), "shop", &api());
        assert!(state.suspended);
        assert_eq!(state.held_by.as_deref(), Some("shop/api-crashloop"));
        assert_eq!(state.applied_revision.as_deref(), Some("main@sha1:bbbb"));
        assert_eq!(state.previous_revision.as_deref(), Some("main@sha1:aaaa"));
        assert!(state.manages_target);
        let source = state.source.clone().unwrap();
        assert_eq!(source.to_string(), "GitRepository flux-system/apps");
        let state = with_source(
            state,
            &json!({"spec": {"url": "http://git/apps.git"},
                    "status": {"artifact": {"revision": "main@sha1:cccc"}}}),
        );
        let source = state.source.as_ref().unwrap();
        assert_eq!(source.revision.as_deref(), Some("main@sha1:cccc"));
        assert_eq!(
            describe(&state),
            "Kustomization flux-system/apps from GitRepository flux-system/apps (http://git/apps.git), applied revision main@sha1:bbbb"
        );
    }

    #[test]
    fn an_argo_cd_application_reads_self_heal_as_its_hold_and_its_status_as_its_revisions() {
        let owner = GitOpsOwner {
            kind: GitOpsKind::Application,
            name: "shop".into(),
            namespace: Some("argocd".into()),
        };
        let application = json!({
            "metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {"source": {"repoURL": "http://git/shop.git"},
                     "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}},
            "status": {
                "sync": {"revision": "cccc"},
                "operationState": {"syncResult": {"revision": "bbbb"}},
                "history": [{"revision": "aaaa"}, {"revision": "bbbb"}],
                "resources": [{"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "api"}]
            }
        });
        let state = state_of(&owner, &application, "shop", &api());
        assert!(!state.suspended && state.manages_target);
        assert_eq!(state.applied_revision.as_deref(), Some("bbbb"));
        assert_eq!(state.previous_revision.as_deref(), Some("aaaa"));
        let source = state.source.unwrap();
        assert_eq!(source.revision.as_deref(), Some("cccc"));
        assert_eq!(source.to_string(), "Git repository http://git/shop.git");
        assert!(!state_of(&owner, &application, "other", &api()).manages_target);
        let mut held = application.clone();
        held["spec"]["syncPolicy"]["automated"]["selfHeal"] = json!(false);
        assert!(state_of(&owner, &held, "shop", &api()).suspended);
    }

    #[test]
    fn source_kinds_have_their_plurals() {
        assert_eq!(source_plural("GitRepository"), "gitrepositories");
        assert_eq!(source_plural("OCIRepository"), "ocirepositories");
        assert_eq!(source_plural("Bucket"), "buckets");
        assert_eq!(source_plural("HelmChart"), "helmcharts");
    }

    #[test]
    fn a_label_naming_a_kustomization_that_does_not_list_the_target_is_not_believed() {
        for (namespace, name) in [("other", "api"), ("shop", "web")] {
            let target = WorkloadRef {
                kind: WorkloadKind::Deployment,
                name: name.into(),
            };
            assert!(!state_of(&owner(), &kustomization(), namespace, &target).manages_target);
        }
        let empty = json!({"metadata": {}, "spec": {}, "status": {}});
        let state = state_of(&owner(), &empty, "shop", &api());
        assert!(!state.manages_target && !state.suspended);
        assert_eq!(
            (
                state.applied_revision,
                state.previous_revision,
                state.source
            ),
            (None, None, None)
        );
    }

    #[test]
    fn a_helm_release_manages_what_it_installs_into_its_target_namespace() {
        let owner = GitOpsOwner {
            kind: GitOpsKind::HelmRelease,
            name: "api".into(),
            namespace: Some("flux-system".into()),
        };
        let release = json!({
            "metadata": {"name": "api", "namespace": "flux-system"},
            "spec": {"targetNamespace": "shop",
                     "chart": {"spec": {"sourceRef": {"kind": "HelmRepository", "name": "charts"}}}},
            "status": {"lastAttemptedRevision": "1.4.0"}
        });
        let state = state_of(&owner, &release, "shop", &api());
        assert!(state.manages_target);
        assert_eq!(state.applied_revision.as_deref(), Some("1.4.0"));
        // A chart from Git: its version names the commit.
        let from_git = json!({
            "metadata": {"name": "api", "namespace": "flux-system"},
            "spec": {"targetNamespace": "shop",
                     "chart": {"spec": {"sourceRef": {"kind": "GitRepository", "name": "apps"}}}},
            "status": {"lastAttemptedRevision": "0.1.0+bbbbbbbbbbbb",
                       "history": [{"chartVersion": "0.1.0+bbbbbbbbbbbb"}, {"chartVersion": "0.1.0+aaaaaaaaaaaa"}]}
        });
        let sourced = with_source(
            state_of(&owner, &from_git, "shop", &api()),
            &json!({"status": {"artifact": {"revision": format!("main@sha1:{}", "b".repeat(40))}}}),
        );
        assert_eq!(
            sourced.applied_revision,
            Some(format!("main@sha1:{}", "b".repeat(40)))
        );
        assert_eq!(
            sourced.previous_revision.as_deref(),
            Some("0.1.0+aaaaaaaaaaaa")
        );
        assert_eq!(
            crate::crd::commit_of("0.1.0+aaaaaaaaaaaa"),
            Some("aaaaaaaaaaaa")
        );
        assert_eq!(
            state.source.unwrap().to_string(),
            "HelmRepository flux-system/charts"
        );
        assert!(!state_of(&owner, &release, "flux-system", &api()).manages_target);
    }
}
