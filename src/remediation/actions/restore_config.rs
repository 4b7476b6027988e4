//! `restoreConfig`: put a ConfigMap's newest known-good snapshot back, then
//! (by default) rollout-restart the workload so it reads it.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, Patch, PostParams},
};
use serde_json::{Value, json};

use super::{
    action::{Action, Assumed, ConfigAssumed, Io, Plan, Request},
    errors::{ApplyError, Refusal},
    write::{apply_body, patch_workload},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, RestoreConfigAction},
    names::{
        FIELD_MANAGER, INCIDENT_ANNOTATION, RESTARTED_AT_ANNOTATION, RESTORED_FROM_ANNOTATION,
    },
    remediation::known_good,
    workload::Workload,
};

/// What a restore reads: the ConfigMap as it is and its newest snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub current: Option<ConfigMap>,
    pub snapshot: Option<ConfigMap>,
    /// Labelled as snapshots, but not written by the operator.
    pub ignored: Vec<String>,
}

/// The restore: the ConfigMap with the snapshot's content, then an apply
/// of the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Replaced as a whole; it carries the resourceVersion it was read at,
    /// so a ConfigMap changed since is not overwritten. Without one it was
    /// missing, and is created.
    pub config_map: Box<ConfigMap>,
    pub workload: Value,
    /// What the restore did, for the ledger.
    pub detail: String,
}

pub struct RestoreConfig;

impl Action for RestoreConfig {
    const KIND: ActionKind = ActionKind::RestoreConfig;
    const DEPLOYMENTS_ONLY: bool = true;
    const UNDONE_BY_GIT: bool = true;
    type Settings = RestoreConfigAction;
    type Inputs = Inputs;
    type Change = Change;

    fn settings(action: &crd::Action) -> Option<&RestoreConfigAction> {
        action.restore_config.as_ref()
    }

    /// A snapshot taken an hour before the world's clock began, and the
    /// ConfigMap as the case says it is against it.
    fn assumed(settings: &RestoreConfigAction, workload: &Workload, world: &Assumed) -> Inputs {
        let name = &settings.config_map;
        let state = world.config_maps.get(name).copied().unwrap_or_default();
        let config_map = |object: &str, value: &str, snapshot: bool| ConfigMap {
            metadata: ObjectMeta {
                name: Some(object.to_owned()),
                namespace: Some(workload.namespace()),
                resource_version: Some("1".into()),
                annotations: snapshot.then(|| {
                    std::collections::BTreeMap::from([(
                        crate::names::TAKEN_AT_ANNOTATION.to_owned(),
                        "2026-01-01T00:00:00Z".to_owned(),
                    )])
                }),
                ..ObjectMeta::default()
            },
            data: Some(std::collections::BTreeMap::from([(
                "config".to_owned(),
                value.to_owned(),
            )])),
            ..ConfigMap::default()
        };
        let now = match state {
            ConfigAssumed::Changed => "changed",
            _ => "known-good",
        };
        Inputs {
            current: Some(config_map(name, now, false)),
            snapshot: (state != ConfigAssumed::NoSnapshot)
                .then(|| config_map(&format!("{name}-snapshot"), "known-good", true)),
            ignored: Vec::new(),
        }
    }

    async fn observe(
        io: Io<'_>,
        settings: &RestoreConfigAction,
        workload: &Workload,
    ) -> Result<Inputs, kube::Error> {
        let client = io.client;
        let namespace = workload.namespace();
        let snapshots = known_good::snapshots_of(client, &namespace, &settings.config_map).await?;
        let current = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
            .get_opt(&settings.config_map)
            .await?;
        Ok(Inputs {
            current,
            snapshot: snapshots.trusted.into_iter().next(),
            ignored: snapshots.ignored,
        })
    }

    fn plan(
        request: &Request<'_>,
        settings: &RestoreConfigAction,
        inputs: &Inputs,
    ) -> Result<Plan<Change>, Refusal> {
        let (workload, mark, now) = (request.workload, request.mark, request.now);
        let name = &settings.config_map;
        let snapshot = match (&inputs.snapshot, inputs.ignored.is_empty()) {
            (Some(snapshot), _) => snapshot,
            (None, true) => return Err(Refusal::NoSnapshot(name.clone())),
            (None, false) => {
                return Err(Refusal::UntrustedSnapshots(
                    name.clone(),
                    inputs.ignored.join(", "),
                ));
            }
        };
        let snapshot_name = snapshot.name_any();
        let taken = known_good::taken_at(snapshot)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let (config_map, detail) = match &inputs.current {
            Some(current)
                if current.data == snapshot.data && current.binary_data == snapshot.binary_data =>
            {
                return Err(Refusal::NothingToRestore(name.clone()));
            }
            // Replaced as read: its resourceVersion makes the write conditional.
            Some(current) => (
                current.clone(),
                format!("ConfigMap/{name} content from snapshot {snapshot_name} taken {taken}"),
            ),
            // Deleted (the pods that read it cannot start): created again, a
            // create being conditional on nobody having done so meanwhile.
            None => (
                ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(workload.namespace()),
                        ..ObjectMeta::default()
                    },
                    ..ConfigMap::default()
                },
                format!(
                    "ConfigMap/{name} was missing: created again from snapshot {snapshot_name} taken {taken}"
                ),
            ),
        };
        let config_map = {
            let mut restored = config_map;
            restored.data = snapshot.data.clone();
            restored.binary_data = snapshot.binary_data.clone();
            let annotations = restored
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(INCIDENT_ANNOTATION.into(), mark.incident.into());
            annotations.insert(RESTORED_FROM_ANNOTATION.into(), snapshot_name.clone());
            Box::new(restored)
        };
        // Without a restart the annotations still mark the step as applied.
        let (spec, restart) = if settings.restart {
            let stamp = now.to_string();
            (
                json!({"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}}),
                format!("; {}/{} rollout restart", workload.kind(), workload.name()),
            )
        } else {
            (json!({}), String::new())
        };
        Ok(Plan {
            change: Change {
                config_map,
                workload: apply_body(workload, mark, spec),
                detail,
            },
            summary: format!(
                "ConfigMap/{name} restored from its last known-good snapshot{restart}"
            ),
        })
    }

    /// Two writes. A restore interrupted between them finds the ConfigMap
    /// matching next time: the step is then skipped as having nothing to do
    /// (the workload's pods read the restored content once restarted, by the
    /// next step or by hand).
    async fn apply(
        io: Io<'_>,
        workload: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        let client = io.client;
        let params = PostParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        let config_map = &change.config_map;
        let api = Api::<ConfigMap>::namespaced(client.clone(), &workload.namespace());
        if config_map.metadata.resource_version.is_some() {
            api.replace(&config_map.name_any(), &params, config_map)
                .await?;
        } else {
            api.create(&params, config_map).await?;
        }
        patch_workload(
            client,
            workload,
            &Patch::Apply(change.workload.clone()),
            dry_run,
        )
        .await?;
        Ok(vec![change.detail.clone()])
    }

    /// The restart that follows rolls every pod.
    fn grants(_: &crd::Action, kind: WorkloadKind) -> Vec<Grant> {
        vec![
            Grant::new("", "configmaps", "get"),
            Grant::new("", "configmaps", "list"),
            Grant::new("", "configmaps", "update"),
            Grant::patch_workload(kind),
        ]
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        true
    }
}

/// The ConfigMap a restore's ledger line says it restored (its lines
/// begin `ConfigMap/NAME `): a replay reads that it had changed.
pub fn restored_config_map(line: &str) -> Option<&str> {
    line.strip_prefix("ConfigMap/")?.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::super::Mark;
    use super::super::fixtures::*;
    use super::*;

    fn plan(
        action: &crd::Action,
        workload: &Workload,
        inputs: &Inputs,
        mark: Mark<'_>,
        now: Timestamp,
    ) -> Result<Plan<Change>, Refusal> {
        RestoreConfig::plan(
            &Request {
                action,
                workload,
                mark,
                now,
            },
            RestoreConfig::required(action)?,
            inputs,
        )
    }
    use crate::names::TAKEN_AT_ANNOTATION;

    fn config_map(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "resourceVersion": "7",
            "annotations": {TAKEN_AT_ANNOTATION: "2026-01-01T00:00:00Z"}}, "data": {"mode": value}}))
        .unwrap()
    }

    fn restore(restart: bool) -> crd::Action {
        action(
            json!({"action": "restoreConfig", "restoreConfig": {"configMap": "cfg", "restart": restart}}),
        )
    }

    #[test]
    fn puts_the_snapshot_back_conditionally_and_restarts() {
        let inputs = Inputs {
            current: Some(config_map("cfg", "broken")),
            snapshot: Some(config_map("hg-snapshot-cfg-1", "good")),
            ignored: Vec::new(),
        };
        let planned = plan(&restore(true), &deployment("1", 2), &inputs, MARK, now()).unwrap();
        assert_eq!(
            planned.summary,
            "ConfigMap/cfg restored from its last known-good snapshot; Deployment/api rollout restart"
        );
        let change = planned.change;
        let restored = change.config_map;
        assert_eq!(restored.data.unwrap()["mode"], "good");
        assert_eq!(
            restored.metadata.resource_version.as_deref(),
            Some("7"),
            "the replace is conditional on what was read"
        );
        assert!(
            change.workload["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION]
                .is_string()
        );
    }

    #[test]
    fn a_matching_config_map_is_skipped_and_missing_inputs_refuse() {
        let same = Inputs {
            current: Some(config_map("cfg", "good")),
            snapshot: Some(config_map("hg-snapshot-cfg-1", "good")),
            ignored: Vec::new(),
        };
        let moot = plan(&restore(true), &deployment("1", 2), &same, MARK, now());
        assert_eq!(moot, Err(Refusal::NothingToRestore("cfg".into())));
        assert!(moot.unwrap_err().is_moot(), "skipped, not failed");
        let different = Inputs {
            current: Some(config_map("cfg", "broken")),
            ..same
        };
        let planned = plan(
            &restore(false),
            &deployment("1", 2),
            &different,
            MARK,
            now(),
        )
        .unwrap();
        let change = planned.change;
        assert_eq!(change.workload["spec"], json!({}), "no restart asked");

        let no_snapshot = Inputs {
            current: Some(config_map("cfg", "x")),
            snapshot: None,
            ignored: Vec::new(),
        };
        let planted = Inputs {
            ignored: vec!["hg-snapshot-cfg-9".into()],
            ..no_snapshot.clone()
        };
        assert_eq!(
            plan(&restore(true), &deployment("1", 2), &planted, MARK, now()),
            Err(Refusal::UntrustedSnapshots(
                "cfg".into(),
                "hg-snapshot-cfg-9".into()
            )),
            "a look-alike nobody can vouch for is never restored"
        );
        assert_eq!(
            plan(
                &restore(true),
                &deployment("1", 2),
                &no_snapshot,
                MARK,
                now()
            ),
            Err(Refusal::NoSnapshot("cfg".into()))
        );
        let deleted = Inputs {
            current: None,
            snapshot: Some(config_map("hg-snapshot-cfg-1", "good")),
            ignored: Vec::new(),
        };
        let planned = plan(&restore(true), &deployment("1", 2), &deleted, MARK, now()).unwrap();
        let change = planned.change;
        assert_eq!(change.config_map.name_any(), "cfg");
        assert_eq!(
            change.config_map.metadata.resource_version, None,
            "a deleted ConfigMap is created again"
        );
        assert_eq!(change.config_map.data.clone().unwrap()["mode"], "good");
        assert!(
            change.detail.starts_with(
                "ConfigMap/cfg was missing: created again from snapshot hg-snapshot-cfg-1"
            ),
            "{}",
            change.detail
        );
    }
}
