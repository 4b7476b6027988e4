//! GitOps in the resources: who reconciles a target from Git, and what a
//! policy does about it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind of object that reconciles a workload from Git.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GitOpsKind {
    /// A Flux Kustomization (kustomize.toolkit.fluxcd.io).
    Kustomization,
    /// A Flux HelmRelease (helm.toolkit.fluxcd.io).
    HelmRelease,
    /// An Argo CD Application (argoproj.io).
    Application,
}

impl GitOpsKind {
    /// The API group of the kind.
    pub fn group(self) -> &'static str {
        match self {
            GitOpsKind::Kustomization => "kustomize.toolkit.fluxcd.io",
            GitOpsKind::HelmRelease => "helm.toolkit.fluxcd.io",
            GitOpsKind::Application => "argoproj.io",
        }
    }
}

/// The object that reconciles a workload from Git.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsOwner {
    pub kind: GitOpsKind,
    pub name: String,
    /// Absent where the marks do not say (an Argo CD Application in Argo
    /// CD's own namespace, which the operator does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Display for GitOpsOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{:?} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// What a policy does when its target is reconciled from Git.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOps {
    /// Before a change Git would undo (rollback, scale, patch, config
    /// restore), hold the object that reconciles the target (Suspend, the
    /// default), or change the target anyway (Ignore: the GitOps
    /// controller puts the bad release back at its next sync).
    #[serde(default)]
    pub on_rollback: OnRollback,
    /// Opt in to a revert branch: when a hold begins, push
    /// `healing-guard/revert-<incident>` to the source's URL, one commit on
    /// top of the bad revision restoring the last good one's tree, for a
    /// person to merge. Flux GitRepositories over HTTP(S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_branch: Option<RevertBranch>,
}

/// How to push the revert branch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertBranch {
    /// A Secret of this namespace with `username` and `password` (a
    /// token) to push with, read as the namespace's remediator; none for
    /// a server that takes anonymous pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<super::refs::SecretRef>,
}

/// The revert branch pushed for a hold, or why none was.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertOutcome {
    #[schemars(length(max = 256))]
    pub branch: String,
    /// The revert commit, once pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub commit: Option<String>,
    /// Why it was not pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub error: Option<String>,
    pub at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// Whether to hold the GitOps object while remediating.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnRollback {
    /// Suspend that one object's sync, in the same ledger entry as the change.
    #[default]
    Suspend,
    /// Leave the GitOps controller alone.
    Ignore,
}

/// A responder lifting an incident's hold on its target's sync before Git
/// has moved on (`kubectl healing-guard resume-sync`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeSync {
    /// Who asked.
    #[schemars(length(min = 1, max = 256))]
    pub by: String,
    /// When (the plugin sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// A GitOps object an incident suspended so that Git would not undo its
/// step, and how the hold ended: Git moved past the bad revision (or a
/// responder lifted it), and the release that followed was verified, or
/// failed and the ladder ran again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncHold {
    /// The object suspended.
    pub owner: GitOpsOwner,
    /// Its source, e.g. `GitRepository flux-system/apps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub source: Option<String>,
    /// The source's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// The revision it had applied when suspended: the bad one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub bad_revision: Option<String>,
    /// The revision it applied before that, from its history: the commits
    /// after it up to the bad revision brought the bad release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub good_revision: Option<String>,
    /// The ledger id of the step the hold protects.
    #[schemars(length(max = 256))]
    pub step: String,
    pub suspended_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// When the operator lifted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why it was lifted, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub resumed_because: Option<String>,
    /// The source's revision when it was lifted: the release that follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub release: Option<String>,
    /// Since when that release has run healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When that release was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When that release was found not to bring recovery: the ladder runs
    /// again (a new round), within the safety limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The revert branch pushed for it (policy opt-in), or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertOutcome>,
}

impl SyncHold {
    /// Still suspended by the operator.
    pub fn is_held(&self) -> bool {
        self.resumed_at.is_none()
    }

    /// Lifted, and the release that followed not yet judged.
    pub fn is_verifying(&self) -> bool {
        self.resumed_at.is_some() && self.verified_at.is_none() && self.failed_at.is_none()
    }

    /// The commits that brought the bad release, as `git log` takes them.
    pub fn commits(&self) -> Option<String> {
        let bad = commit_of(self.bad_revision.as_deref()?)?;
        Some(match self.good_revision.as_deref().and_then(commit_of) {
            Some(good) if good != bad => format!("{good}..{bad}"),
            _ => bad.to_owned(),
        })
    }
}

/// The commit of a revision: Flux's `main@sha1:abc...`, a HelmRelease's
/// chart version from Git `0.1.0+abc...` (12 digits), or a bare sha.
pub fn commit_of(revision: &str) -> Option<&str> {
    let sha = revision
        .rsplit_once([':', '+'])
        .map_or(revision, |(_, sha)| sha);
    (!sha.is_empty() && sha.chars().all(|c| c.is_ascii_hexdigit())).then_some(sha)
}
