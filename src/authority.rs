//! Acting with the authority of whoever asked. The operator's own identity
//! reads what it watches and writes its own kinds; every change it makes in
//! a namespace, and every Secret or ConfigMap it reads there, goes through a
//! client that impersonates that namespace's remediator ServiceAccount. The
//! namespace's owner decides, by binding Roles to that account, what the
//! operator may do there; a namespace without one is watched and never
//! changed.
//!
//! Impersonation rather than minted tokens: nothing is stored or refreshed,
//! a credential cannot leak from the operator's memory, every request is
//! audited under both names, and the operator's grant to impersonate is
//! limited by name (`resourceNames`) to the remediator accounts.

use std::{collections::HashMap, sync::Mutex};

use kube::{Client, Config};

/// The remediator ServiceAccount a namespace grants, unless a policy names
/// another of its own namespace.
pub const DEFAULT_REMEDIATOR: &str = "healing-guard-remediator";

/// More clients than this (namespaces times accounts) and the cache starts
/// again: a client is cheap to build, a map that only grows is not.
const MAX_CLIENTS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("building a client acting as {account}: {source}")]
    Client {
        account: String,
        #[source]
        source: kube::Error,
    },
}

/// The clients that act as the remediators of namespaces.
pub struct Remediators {
    base: Config,
    default_account: String,
    clients: Mutex<HashMap<(String, String), Client>>,
}

impl Remediators {
    /// Clients built from the operator's own `base` configuration, each
    /// impersonating one namespace's remediator (`default_account` unless a
    /// policy names another).
    pub fn new(base: Config, default_account: impl Into<String>) -> Self {
        Remediators {
            base,
            default_account: default_account.into(),
            clients: Mutex::default(),
        }
    }

    /// The account the operator acts as in a namespace, when a policy names
    /// `named` (or none).
    pub fn account<'a>(&'a self, named: Option<&'a str>) -> &'a str {
        named
            .filter(|name| !name.is_empty())
            .unwrap_or(&self.default_account)
    }

    /// A client acting as `account` (the default remediator when `None`)
    /// of `namespace`, and only there: the account is a ServiceAccount of
    /// that namespace, never of another.
    pub fn client(&self, namespace: &str, account: Option<&str>) -> Result<Client, AuthorityError> {
        let account = self.account(account).to_owned();
        let key = (namespace.to_owned(), account.clone());
        if let Ok(clients) = self.clients.lock()
            && let Some(client) = clients.get(&key)
        {
            return Ok(client.clone());
        }
        let mut config = self.base.clone();
        config.auth_info.impersonate = Some(username(namespace, &account));
        // The API server adds the account's own groups.
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config).map_err(|source| AuthorityError::Client {
            account: username(namespace, &account),
            source,
        })?;
        if let Ok(mut clients) = self.clients.lock() {
            if clients.len() >= MAX_CLIENTS {
                clients.clear();
            }
            clients.insert(key, client.clone());
        }
        Ok(client)
    }
}

/// One permission a remediator needs: a verb on a resource of an API group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub group: String,
    /// Plural, with a subresource after a slash (`pods/eviction`).
    pub resource: String,
    pub verb: &'static str,
}

impl Grant {
    pub fn new(group: &str, resource: &str, verb: &'static str) -> Self {
        Grant {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb,
        }
    }

    /// Changing a workload of `kind` (a patch or server-side apply).
    pub fn patch_workload(kind: crate::crd::WorkloadKind) -> Self {
        let resource = match kind {
            crate::crd::WorkloadKind::Deployment => "deployments",
            crate::crd::WorkloadKind::StatefulSet => "statefulsets",
        };
        Grant::new("apps", resource, "patch")
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.group.as_str() {
            "" => write!(f, "{} {}", self.verb, self.resource),
            group => write!(f, "{} {}.{group}", self.verb, self.resource),
        }
    }
}

/// The user name the API server knows a ServiceAccount by.
pub fn username(namespace: &str, account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{account}")
}

/// The example Role (a ClusterRole the chart ships, bound per namespace)
/// that grants `verb` on `resource` of `group` to a remediator, if one does.
pub fn granting_role(group: &str, resource: &str) -> Option<&'static str> {
    match (group, resource) {
        ("apps", "deployments" | "statefulsets" | "replicasets")
        | ("", "pods" | "pods/eviction" | "configmaps") => {
            Some("healing-guard-remediator-workloads")
        }
        ("", "secrets") => Some("healing-guard-remediator-secrets"),
        ("batch", "jobs") => Some("healing-guard-remediator-jobs"),
        _ => None,
    }
}

/// Which Role grants it, in words.
pub fn role_hint(group: &str, resource: &str) -> String {
    if group.is_empty() && resource == "serviceaccounts" {
        return "the operator acts only as a namespace's remediator, or as an account \
                the namespace lets it impersonate with a Role of its own"
            .to_owned();
    }
    if matches!(
        group,
        "kustomize.toolkit.fluxcd.io" | "helm.toolkit.fluxcd.io" | "source.toolkit.fluxcd.io"
    ) {
        return "a Role in the GitOps object's namespace granting get and patch on it (and get on \
                its source), bound to this remediator, grants it: docs/security.md"
            .to_owned();
    }
    match granting_role(group, resource) {
        Some(role) => format!("the Role {role} grants it"),
        None => "the Role healing-guard-remediator-patch grants it once the chart's \
                 actions.patch lists the kind"
            .to_owned(),
    }
}

/// Words for a request the remediator was refused (403): who, what, and
/// which of the chart's Roles would grant it. `None` for any other error.
pub fn refusal(error: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    if status.code != 403 {
        return None;
    }
    let details = status.details.as_ref();
    let group = details.map(|d| d.group.as_str()).unwrap_or_default();
    let resource = details.map(|d| d.kind.as_str()).unwrap_or_default();
    Some(format!(
        "{} ({})",
        status.message,
        role_hint(group, resource)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_remediator_is_named_by_the_policy_or_by_default() {
        let remediators = Remediators::new(
            Config::new("https://127.0.0.1:6443".parse().unwrap()),
            DEFAULT_REMEDIATOR,
        );
        assert_eq!(remediators.account(None), DEFAULT_REMEDIATOR);
        assert_eq!(remediators.account(Some("")), DEFAULT_REMEDIATOR);
        assert_eq!(remediators.account(Some("fixer")), "fixer");
        assert_eq!(
            username("shop", "fixer"),
            "system:serviceaccount:shop:fixer"
        );
    }

    #[test]
    fn a_refusal_names_the_role_that_would_grant_it() {
        let status = kube::core::Status {
            code: 403,
            message: r#"jobs.batch "x" is forbidden: User "system:serviceaccount:shop:healing-guard-remediator" cannot create resource "jobs" in API group "batch" in the namespace "shop""#.into(),
            details: Some(kube::core::response::StatusDetails {
                name: "x".into(),
                group: "batch".into(),
                kind: "jobs".into(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            ..Default::default()
        };
        let words = refusal(&kube::Error::Api(Box::new(status))).unwrap();
        assert!(words.contains("cannot create resource \"jobs\""), "{words}");
        assert!(
            words.ends_with("(the Role healing-guard-remediator-jobs grants it)"),
            "{words}"
        );
        let conflict = kube::core::Status {
            code: 409,
            ..Default::default()
        };
        assert_eq!(refusal(&kube::Error::Api(Box::new(conflict))), None);
    }
}
