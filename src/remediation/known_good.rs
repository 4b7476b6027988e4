//! What was known to be good, kept in the cluster so a restart forgets
//! nothing: copies of the ConfigMaps a guarded workload uses, taken once it
//! has been healthy for the policy's hold-down (bounded history, read back
//! by restoreConfig), and the revision each Deployment last ran healthy
//! (read back by a rollback to LastHealthy). The detector writes them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{ConfigMap, PodTemplateSpec},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use tracing::info;

use crate::names::{
    DETECTOR_FIELD_MANAGER, KNOWN_GOOD_CONFIG_MAP as KNOWN_GOOD, MANAGED_BY, MANAGED_BY_LABEL,
    SNAPSHOT_FIELD_MANAGER, SNAPSHOT_OF_LABEL as SNAPSHOT_OF,
    SNAPSHOT_WORKLOAD_ANNOTATION as WORKLOAD, TAKEN_AT_ANNOTATION as TAKEN_AT,
};

/// Snapshots kept per ConfigMap; older ones are deleted.
pub const MAX_SNAPSHOTS: usize = 5;

/// The key of a Deployment in the known-good ConfigMap.
pub fn known_good_key(deployment: &str) -> String {
    format!("deployment.{deployment}")
}

/// Records the revision a Deployment runs healthy (server-side apply, so
/// each key is owned on its own and nothing else in the ConfigMap moves).
pub async fn record_healthy_revision(
    client: &Client,
    namespace: &str,
    deployment: &str,
    revision: &str,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": KNOWN_GOOD, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "data": {known_good_key(deployment): revision},
    });
    let params = PatchParams::apply(DETECTOR_FIELD_MANAGER).force();
    api.patch(KNOWN_GOOD, &params, &Patch::Apply(&body)).await?;
    Ok(())
}

/// The revision a Deployment last ran healthy, if recorded - by the
/// detector: a value someone else wrote there is not trusted.
pub async fn last_healthy_revision(
    client: &Client,
    namespace: &str,
    deployment: &str,
) -> Result<Option<i64>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let known = api.get_opt(KNOWN_GOOD).await?;
    let key = known_good_key(deployment);
    Ok(known
        .filter(|cm| {
            owned_only_by(
                &cm.metadata,
                DETECTOR_FIELD_MANAGER,
                &["f:data", &format!("f:{key}")],
            )
        })
        .and_then(|cm| cm.data?.get(&key)?.parse().ok()))
}

/// Whether `manager` owns the field at `path` of an object's managedFields
/// and no other manager does.
pub fn owned_only_by(meta: &ObjectMeta, manager: &str, path: &[&str]) -> bool {
    let owners: Vec<&str> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            let mut fields = entry.fields_v1.as_ref().map(|f| &f.0);
            for step in path {
                fields = fields.and_then(|f| f.get(*step));
            }
            fields.is_some()
        })
        .map(|entry| entry.manager.as_deref().unwrap_or_default())
        .collect();
    !owners.is_empty() && owners.iter().all(|owner| *owner == manager)
}

/// Whether only `manager` ever wrote the object: nobody created it for us,
/// and nobody changed it since.
pub fn written_only_by(meta: &ObjectMeta, manager: &str) -> bool {
    let entries = meta.managed_fields.as_deref().unwrap_or_default();
    !entries.is_empty()
        && entries
            .iter()
            .all(|entry| entry.manager.as_deref() == Some(manager))
}

/// A ConfigMap's snapshots: those the operator took, newest first, and the
/// names of labelled look-alikes it did not write (never restored).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshots {
    pub trusted: Vec<ConfigMap>,
    pub ignored: Vec<String>,
}

/// The ConfigMaps a pod template reads: volumes, envFrom and env references.
pub fn config_maps_used(template: &PodTemplateSpec) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(spec) = &template.spec else {
        return names;
    };
    for volume in spec.volumes.iter().flatten() {
        if let Some(config_map) = &volume.config_map {
            names.insert(config_map.name.clone());
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(config_map) = &source.config_map {
                names.insert(config_map.name.clone());
            }
        }
    }
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for from in container.env_from.iter().flatten() {
            if let Some(config_map) = &from.config_map_ref {
                names.insert(config_map.name.clone());
            }
        }
        for var in container.env.iter().flatten() {
            if let Some(key) = var
                .value_from
                .as_ref()
                .and_then(|v| v.config_map_key_ref.as_ref())
            {
                names.insert(key.name.clone());
            }
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

/// The snapshots of a ConfigMap.
pub async fn snapshots_of(
    client: &Client,
    namespace: &str,
    config_map: &str,
) -> Result<Snapshots, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let labelled = api
        .list(&ListParams::default().labels(&format!("{SNAPSHOT_OF}={config_map}")))
        .await?
        .items;
    Ok(sort_snapshots(labelled))
}

/// Trusted snapshots newest first; the others by name.
pub fn sort_snapshots(labelled: Vec<ConfigMap>) -> Snapshots {
    let (mut trusted, others): (Vec<ConfigMap>, Vec<ConfigMap>) = labelled
        .into_iter()
        .partition(|s| written_only_by(&s.metadata, SNAPSHOT_FIELD_MANAGER));
    trusted.sort_by_key(|s| std::cmp::Reverse(taken_at(s)));
    let mut ignored: Vec<String> = others.iter().map(ResourceExt::name_any).collect();
    ignored.sort();
    Snapshots { trusted, ignored }
}

/// When a snapshot was taken.
pub fn taken_at(snapshot: &ConfigMap) -> Option<Timestamp> {
    snapshot.annotations().get(TAKEN_AT)?.parse().ok()
}

/// Copies each ConfigMap whose content differs from its newest snapshot, and
/// prunes the history. Returns the snapshots made.
pub async fn take(
    client: &Client,
    namespace: &str,
    workload: &str,
    config_maps: &BTreeSet<String>,
    now: Timestamp,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut made = Vec::new();
    for name in config_maps {
        // Label values stop at 63 characters; such ConfigMaps are not snapshotted.
        if name.len() > 63 {
            continue;
        }
        let Some(current) = api.get_opt(name).await? else {
            continue;
        };
        let snapshots = snapshots_of(client, namespace, name).await?.trusted;
        let unchanged = snapshots.first().is_some_and(|latest| {
            latest.data == current.data && latest.binary_data == current.binary_data
        });
        if !unchanged {
            let snapshot_name = snapshot_name(name, now);
            let mut labels = BTreeMap::new();
            labels.insert(SNAPSHOT_OF.to_owned(), name.clone());
            labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
            let mut annotations = BTreeMap::new();
            annotations.insert(TAKEN_AT.to_owned(), now.to_string());
            annotations.insert(WORKLOAD.to_owned(), workload.to_owned());
            let snapshot = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(snapshot_name.clone()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                data: current.data.clone(),
                binary_data: current.binary_data.clone(),
                immutable: Some(true),
            };
            let params = PostParams {
                dry_run: false,
                field_manager: Some(SNAPSHOT_FIELD_MANAGER.into()),
            };
            match api.create(&params, &snapshot).await {
                Ok(_) => {
                    info!(config_map = %name, snapshot = %snapshot_name, %workload, "known-good config snapshot taken");
                    made.push(snapshot_name);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        // Only its own history is pruned; look-alikes are someone else's.
        let all = snapshots_of(client, namespace, name).await?.trusted;
        for old in all.iter().skip(MAX_SNAPSHOTS) {
            let _ = api.delete(&old.name_any(), &DeleteParams::default()).await;
        }
    }
    Ok(made)
}

fn snapshot_name(config_map: &str, now: Timestamp) -> String {
    let suffix = format!("-{}", now.as_second());
    let base: String = format!("hg-snapshot-{config_map}")
        .chars()
        .take(253 - suffix.len())
        .collect();
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_way_a_template_reads_a_config_map() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {
                "volumes": [{"name": "v", "configMap": {"name": "from-volume"}},
                            {"name": "p", "projected": {"sources": [{"configMap": {"name": "from-projected"}}]}}],
                "containers": [{"name": "app",
                    "envFrom": [{"configMapRef": {"name": "from-env-from"}}],
                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "from-key", "key": "k"}}}]}]
            }
        }))
        .unwrap();
        let names: Vec<_> = config_maps_used(&template).into_iter().collect();
        assert_eq!(
            names,
            ["from-env-from", "from-key", "from-projected", "from-volume"]
        );
        assert!(config_maps_used(&PodTemplateSpec::default()).is_empty());
    }

    #[test]
    fn snapshot_names_are_bounded() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            snapshot_name("healing-guard-config", now),
            "hg-snapshot-healing-guard-config-1767225600"
        );
        assert!(snapshot_name(&"c".repeat(300), now).len() <= 253);
    }

    fn written_by(name: &str, managers: &[(&str, serde_json::Value)]) -> ConfigMap {
        let entries: Vec<serde_json::Value> = managers
            .iter()
            .map(|(manager, fields)| {
                serde_json::json!({"manager": manager, "operation": "Update",
                                   "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": fields})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "managedFields": entries,
                         "annotations": {TAKEN_AT: format!("2026-01-0{}T00:00:00Z", name.len() % 9 + 1)}},
            "data": {"mode": "x"}
        }))
        .unwrap()
    }

    #[test]
    fn only_snapshots_the_operator_alone_wrote_are_trusted() {
        let data = serde_json::json!({"f:data": {"f:mode": {}}});
        let ours = written_by(
            "hg-snapshot-cfg-1",
            &[(SNAPSHOT_FIELD_MANAGER, data.clone())],
        );
        let planted = written_by("hg-snapshot-cfg-22", &[("kubectl-create", data.clone())]);
        let relabelled = written_by(
            "hg-snapshot-cfg-333",
            &[
                (SNAPSHOT_FIELD_MANAGER, data.clone()),
                ("kubectl-label", serde_json::json!({"f:metadata": {}})),
            ],
        );
        let unknown = written_by("hg-snapshot-cfg-4444", &[]);
        let sorted = sort_snapshots(vec![planted, relabelled, ours, unknown]);
        let trusted: Vec<String> = sorted.trusted.iter().map(ResourceExt::name_any).collect();
        assert_eq!(trusted, ["hg-snapshot-cfg-1"]);
        assert_eq!(
            sorted.ignored,
            [
                "hg-snapshot-cfg-22",
                "hg-snapshot-cfg-333",
                "hg-snapshot-cfg-4444"
            ]
        );
    }

    #[test]
    fn a_healthy_revision_counts_only_if_the_detector_alone_owns_it() {
        let path = ["f:data", "f:deployment.api"];
        let ours = serde_json::json!({"f:data": {"f:deployment.api": {}}});
        let mine = written_by("known", &[(DETECTOR_FIELD_MANAGER, ours.clone())]);
        assert!(owned_only_by(&mine.metadata, DETECTOR_FIELD_MANAGER, &path));
        let shared = written_by(
            "known",
            &[
                (DETECTOR_FIELD_MANAGER, ours.clone()),
                ("kubectl-edit", ours),
            ],
        );
        assert!(!owned_only_by(
            &shared.metadata,
            DETECTOR_FIELD_MANAGER,
            &path
        ));
        let other_key = written_by(
            "known",
            &[(
                DETECTOR_FIELD_MANAGER,
                serde_json::json!({"f:data": {"f:deployment.web": {}}}),
            )],
        );
        assert!(!owned_only_by(
            &other_key.metadata,
            DETECTOR_FIELD_MANAGER,
            &path
        ));
    }
}
