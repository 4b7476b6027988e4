//! Who reconciles a workload from Git, read from the marks the GitOps
//! controllers leave on what they apply. Pure: labels and annotations in,
//! the owning object out.

use std::collections::BTreeMap;

use crate::crd::{GitOpsKind, GitOpsOwner};

/// Set by Flux's helm-controller on what a HelmRelease installs.
const HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
const HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// Set by Flux's kustomize-controller on what a Kustomization applies.
const KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
const KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// Argo CD's annotation tracking (`APP:GROUP/KIND:NAMESPACE/NAME`; APP is
/// `APP_NAMESPACE_NAME` for applications outside Argo CD's own namespace).
/// Its label tracking (`app.kubernetes.io/instance`) is not read: Helm sets
/// the same label on everything it installs.
const ARGO_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";

/// The GitOps object that applied a workload with these labels and
/// annotations, if one did. A HelmRelease comes before a Kustomization:
/// when a Kustomization applies a HelmRelease, the workload's own marks
/// are the HelmRelease's, and it is the HelmRelease that would undo a
/// change to it.
pub fn owner_of(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<GitOpsOwner> {
    let flux = |kind, name_label, namespace_label| {
        let name = labels.get(name_label).filter(|n| !n.is_empty())?;
        Some(GitOpsOwner {
            kind,
            name: name.clone(),
            namespace: labels
                .get(namespace_label)
                .filter(|n| !n.is_empty())
                .cloned(),
        })
    };
    flux(GitOpsKind::HelmRelease, HELM_NAME, HELM_NAMESPACE)
        .or_else(|| {
            flux(
                GitOpsKind::Kustomization,
                KUSTOMIZE_NAME,
                KUSTOMIZE_NAMESPACE,
            )
        })
        .or_else(|| argo_application(annotations.get(ARGO_TRACKING_ID)?))
}

/// Where Argo CD keeps its Applications unless the tracking id says
/// otherwise (applications in any namespace are tracked as NS_NAME).
pub const ARGOCD_NAMESPACE: &str = "argocd";

/// The Application of an Argo CD tracking id `APP:GROUP/KIND:NAMESPACE/NAME`.
fn argo_application(tracking_id: &str) -> Option<GitOpsOwner> {
    let (app, _resource) = tracking_id.split_once(':')?;
    if app.is_empty() {
        return None;
    }
    // Applications in any namespace are tracked as NAMESPACE_NAME; a
    // namespace cannot contain '_', a name can, so the first '_' splits.
    let (namespace, name) = match app.split_once('_') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            (Some(namespace.to_owned()), name.to_owned())
        }
        _ => (Some(ARGOCD_NAMESPACE.to_owned()), app.to_owned()),
    };
    Some(GitOpsOwner {
        kind: GitOpsKind::Application,
        name,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_flux_kustomization_is_read_from_its_labels() {
        let labels = map(&[
            ("app", "api"),
            (KUSTOMIZE_NAME, "healing-guard"),
            (KUSTOMIZE_NAMESPACE, "flux-system"),
        ]);
        assert_eq!(
            owner_of(&labels, &BTreeMap::new()),
            Some(GitOpsOwner {
                kind: GitOpsKind::Kustomization,
                name: "healing-guard".into(),
                namespace: Some("flux-system".into()),
            })
        );
    }

    #[test]
    fn a_helm_release_comes_before_the_kustomization_that_applied_it() {
        let labels = map(&[
            (KUSTOMIZE_NAME, "apps"),
            (KUSTOMIZE_NAMESPACE, "flux-system"),
            (HELM_NAME, "api"),
            (HELM_NAMESPACE, "shop"),
        ]);
        let owner = owner_of(&labels, &BTreeMap::new()).unwrap();
        assert_eq!(owner.kind, GitOpsKind::HelmRelease);
        assert_eq!(
            (owner.name.as_str(), owner.namespace.as_deref()),
            ("api", Some("shop"))
        );
    }

    #[test]
    fn argo_cd_is_read_from_its_tracking_annotation_not_the_instance_label() {
        let helm_installed = map(&[("app.kubernetes.io/instance", "api")]);
        assert_eq!(owner_of(&helm_installed, &BTreeMap::new()), None);

        let tracked = map(&[(ARGO_TRACKING_ID, "shop-api:apps/Deployment:shop/api")]);
        assert_eq!(
            owner_of(&BTreeMap::new(), &tracked),
            Some(GitOpsOwner {
                kind: GitOpsKind::Application,
                name: "shop-api".into(),
                namespace: Some(ARGOCD_NAMESPACE.into()),
            })
        );
        let any_namespace = map(&[(ARGO_TRACKING_ID, "team-a_shop_api:apps/Deployment:shop/api")]);
        let owner = owner_of(&BTreeMap::new(), &any_namespace).unwrap();
        assert_eq!(
            (owner.namespace.as_deref(), owner.name.as_str()),
            (Some("team-a"), "shop_api")
        );
    }

    #[test]
    fn empty_or_malformed_marks_name_no_owner() {
        assert_eq!(
            owner_of(&map(&[(KUSTOMIZE_NAME, "")]), &BTreeMap::new()),
            None
        );
        assert_eq!(
            owner_of(&BTreeMap::new(), &map(&[(ARGO_TRACKING_ID, "no-colon")])),
            None
        );
        assert_eq!(
            owner_of(
                &BTreeMap::new(),
                &map(&[(ARGO_TRACKING_ID, ":apps/Deployment:a/b")])
            ),
            None
        );
        assert_eq!(owner_of(&BTreeMap::new(), &BTreeMap::new()), None);
    }
}
