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
