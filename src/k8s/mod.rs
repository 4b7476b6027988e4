//! Low-level Kubernetes helpers every part uses: where the operator looks
//! (`Scope`), the bound for namespaced kinds, status patches, the shared
//! watches (`shared`) and per-object retry delays (`backoff`).

pub mod backoff;
pub mod shared;

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource, api::Patch};
use serde::Serialize;

/// A namespaced kind the typed API can read and list.
pub trait NamespacedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> NamespacedKind for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Where the operator looks.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Watch only this namespace; all namespaces when None.
    pub namespace: Option<String>,
}

impl Scope {
    /// An Api for a namespaced kind within the scope.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
}

/// A server-side apply patch that sets an object's status. With a
/// `resource_version`, the write is conditional: the API server refuses it
/// (409 Conflict) if the object changed since it was read at that version.
pub fn status_patch<K>(
    status: &impl Serialize,
    resource_version: Option<&str>,
) -> Result<Patch<serde_json::Value>, serde_json::Error>
where
    K: Resource<DynamicType = ()>,
{
    let status = serde_json::to_value(status)?;
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    Ok(Patch::Apply(body))
}

/// A Secret's values as text, trimmed (a value that is not UTF-8 is left
/// out): what channels and probes read their URLs and credentials from.
pub fn secret_text(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> std::collections::BTreeMap<String, String> {
    let mut values = std::collections::BTreeMap::new();
    for (key, value) in secret.data.iter().flatten() {
        if let Ok(text) = String::from_utf8(value.0.clone()) {
            values.insert(key.clone(), text.trim().to_owned());
        }
    }
    for (key, value) in secret.string_data.iter().flatten() {
        values.insert(key.clone(), value.trim().to_owned());
    }
    values
}

/// Now, in whole seconds: the API server stores times at that precision, so
/// a status compared against a round-tripped one must not differ by nanos.
pub fn now_whole_seconds() -> k8s_openapi::jiff::Timestamp {
    whole_seconds(k8s_openapi::jiff::Timestamp::now())
}

/// `at` without its fraction of a second, as a `Time` in status keeps it:
/// a time computed from one a person wrote (`2026-01-01T00:00:00.5Z`)
/// compares equal to itself after a round trip through the API server.
pub fn whole_seconds(at: k8s_openapi::jiff::Timestamp) -> k8s_openapi::jiff::Timestamp {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(at.as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The latest moment a time kept in whole seconds may stand for: the end
/// of its second. A moment the controllers record (their clock keeps whole
/// seconds, as `Time` does) may have been up to a second after it, so a
/// hold-down or a cooldown counted from it counts from here, and never
/// ends early.
pub fn end_of_second(at: k8s_openapi::jiff::Timestamp) -> k8s_openapi::jiff::Timestamp {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(at.as_second().saturating_add(1)).unwrap_or(Timestamp::MAX)
}

/// Whether the API server refused a write because the object changed since
/// it was read (or an optimistic lock failed): read again and decide again.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
