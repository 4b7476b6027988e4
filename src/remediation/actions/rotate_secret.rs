//! `rotateSecret`: a new random value for one key of a Secret (the
//! runbook's "rotate the JWT secret"), the previous value kept under a
//! second key where the application accepts two, then a rollout restart
//! of every Deployment and StatefulSet whose pod template reads the Secret
//! (found from the templates, not listed by hand). The value is made in
//! `apply` and goes only into the Secret: never into the plan, the ledger,
//! Events, logs or metrics. The Secret carries the step's mark, so a step
//! applied before a restart gives no second new value.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{PodSpec, Secret},
    },
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use rand::RngExt;
use serde_json::json;

use super::{
    action::{Action, Assumed, Io, Plan, Request},
    errors::{ApplyError, Refusal},
    write::patch_named,
};
use crate::authority::Grant;
use crate::{
    crd::{self, ActionKind, IncidentType, RotateSecretAction, SecretAlphabet, WorkloadKind},
    names::{
        FIELD_MANAGER, INCIDENT_ANNOTATION, PREVIOUS_UNTIL_ANNOTATION, ROTATED_AT_ANNOTATION,
        SECRET_ROTATED_ANNOTATION, STEP_ANNOTATION,
    },
    workload::Workload,
};

/// The length of a new value when the action does not say.
const DEFAULT_LENGTH: usize = 48;

/// The Secret as it is, and the workloads that read it.
#[derive(Clone, Default, PartialEq)]
pub struct Inputs {
    /// Only what the plan needs: which keys it has, its version, its mark.
    secret: Option<SecretFacts>,
    consumers: Vec<(WorkloadKind, String)>,
}

#[derive(Clone, Debug, PartialEq)]
struct SecretFacts {
    keys: Vec<String>,
    resource_version: Option<String>,
    rotated_by: Option<String>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("secret", &self.secret)
            .field("consumers", &self.consumers)
            .finish()
    }
}

/// What to change: no value in it, only where the new one goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    namespace: String,
    secret: String,
    key: String,
    previous_key: Option<String>,
    /// How long the previous value is kept, if not until the next rotation.
    grace: Option<std::time::Duration>,
    length: usize,
    alphabet: SecretAlphabet,
    /// The Secret's version the plan saw: a Secret changed since is not touched.
    resource_version: Option<String>,
    /// False when the Secret already carries this step's mark.
    rotate: bool,
    consumers: Vec<(WorkloadKind, String)>,
    step: String,
    incident: String,
}

/// Whether a pod spec reads the Secret `name` (env, envFrom, volumes).
fn reads(pod: &PodSpec, name: &str) -> bool {
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    let from_env = containers.clone().any(|c| {
        c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == name)
        }) || c
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == name))
    });
    let from_volume = pod.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(name))
            || v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name == name))
            })
    });
    from_env || from_volume
}

pub struct RotateSecret;

impl Action for RotateSecret {
    const KIND: ActionKind = ActionKind::RotateSecret;
    /// What it changes, and to what, is the policy's to choose: an
    /// Incident's author could otherwise change any object or Secret.
    const POLICY_ONLY: bool = true;
    type Settings = RotateSecretAction;
    type Inputs = Inputs;
    type Change = Change;

    fn settings(action: &crd::Action) -> Option<&RotateSecretAction> {
        action.rotate_secret.as_ref()
    }

    /// Reads the Secret and finds the workloads of its namespace that read it.
    /// The Secret exists with the keys the rung names, and the target reads it.
    fn assumed(settings: &RotateSecretAction, workload: &Workload, _: &Assumed) -> Inputs {
        Inputs {
            secret: Some(SecretFacts {
                keys: std::iter::once(settings.key.clone())
                    .chain(settings.previous_key.clone())
                    .collect(),
                resource_version: Some("1".into()),
                rotated_by: None,
            }),
            consumers: vec![(workload.kind(), workload.name())],
        }
    }

    async fn observe(
        io: Io<'_>,
        settings: &RotateSecretAction,
        workload: &Workload,
    ) -> Result<Inputs, kube::Error> {
        let client = io.client;
        let namespace = workload.namespace();
        let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
            .get_opt(&settings.secret)
            .await?
            .map(|secret| SecretFacts {
                keys: secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, _)| k.clone())
                    .chain(secret.string_data.iter().flatten().map(|(k, _)| k.clone()))
                    .collect(),
                resource_version: secret.resource_version(),
                rotated_by: secret.annotations().get(STEP_ANNOTATION).cloned(),
            });
        let mut consumers = Vec::new();
        for deployment in Api::<Deployment>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await?
        {
            let pod = deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref());
            if pod.is_some_and(|pod| reads(pod, &settings.secret)) {
                consumers.push((WorkloadKind::Deployment, deployment.name_any()));
            }
        }
        for set in Api::<StatefulSet>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await?
        {
            let pod = set.spec.as_ref().and_then(|s| s.template.spec.as_ref());
            if pod.is_some_and(|pod| reads(pod, &settings.secret)) {
                consumers.push((WorkloadKind::StatefulSet, set.name_any()));
            }
        }
        consumers.sort();
        Ok(Inputs { secret, consumers })
    }

    /// Where the new value goes and what restarts. Pure.
    fn plan(
        request: &Request<'_>,
        settings: &RotateSecretAction,
        inputs: &Inputs,
    ) -> Result<Plan<Change>, Refusal> {
        let (workload, mark) = (request.workload, request.mark);
        let Some(secret) = &inputs.secret else {
            return Err(Refusal::Unusable(format!(
                "Secret {} not found",
                settings.secret
            )));
        };
        if !secret.keys.contains(&settings.key) {
            return Err(Refusal::Unusable(format!(
                "Secret {} has no key {}: nothing to rotate",
                settings.secret, settings.key
            )));
        }
        let rotate = secret.rotated_by.as_deref() != Some(mark.step);
        let length = settings
            .length
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(DEFAULT_LENGTH);
        let restarts = if inputs.consumers.is_empty() {
            "nothing reads it to restart".to_owned()
        } else {
            let names: Vec<String> = inputs
                .consumers
                .iter()
                .map(|(kind, name)| format!("{kind}/{name}"))
                .collect();
            format!("rollout restart of {}", names.join(", "))
        };
        let kept = settings
            .previous_key
            .as_ref()
            .map(|k| format!("; the previous value kept under {k}"))
            .unwrap_or_default();
        let summary = if rotate {
            format!(
                "Secret {} key {}: a new value ({length} characters, {}){kept}; {restarts}",
                settings.secret, settings.key, settings.alphabet
            )
        } else {
            format!(
                "Secret {} key {} already has this step's new value (rotated before a restart); {restarts}",
                settings.secret, settings.key
            )
        };
        Ok(Plan {
            change: Change {
                namespace: workload.namespace(),
                secret: settings.secret.clone(),
                key: settings.key.clone(),
                previous_key: settings.previous_key.clone(),
                grace: settings
                    .grace_period
                    .filter(|_| settings.previous_key.is_some())
                    .map(|g| g.as_std()),
                length,
                alphabet: settings.alphabet,
                resource_version: secret.resource_version.clone(),
                rotate,
                consumers: inputs.consumers.clone(),
                step: mark.step.to_owned(),
                incident: mark.incident.to_owned(),
            },
            summary,
        })
    }

    /// Writes the new value (conditional on the version planned from), then
    /// restarts the consumers. A dry run checks both with the API server.
    async fn apply(
        io: Io<'_>,
        _: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        let client = io.client;
        let secrets = Api::<Secret>::namespaced(client.clone(), &change.namespace);
        let mut lines = Vec::new();
        if change.rotate {
            let current = secrets.get(&change.secret).await?;
            let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
            let previous = current
                .data
                .as_ref()
                .and_then(|d| d.get(&change.key))
                .cloned()
                .or_else(|| {
                    current
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(&change.key))
                        .map(|v| ByteString(v.clone().into_bytes()))
                });
            if let (Some(previous_key), Some(previous)) = (&change.previous_key, previous) {
                data.insert(previous_key.clone(), previous);
            }
            data.insert(
                change.key.clone(),
                ByteString(new_value(change.length, change.alphabet).into_bytes()),
            );
            let now = crate::k8s::now_whole_seconds();
            // Until when the previous value stays (removed by the policy
            // controller then); null clears an earlier rotation's deadline.
            let until = change
                .grace
                .and_then(|grace| now.checked_add(grace).ok())
                .map(|t| t.to_string());
            let patch = json!({
                "metadata": {
                    "resourceVersion": change.resource_version,
                    "annotations": {
                        STEP_ANNOTATION: change.step,
                        INCIDENT_ANNOTATION: change.incident,
                        ROTATED_AT_ANNOTATION: now.to_string(),
                        PREVIOUS_UNTIL_ANNOTATION: until,
                    }
                },
                "data": data,
            });
            let params = PatchParams {
                dry_run,
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            secrets
                .patch(&change.secret, &params, &Patch::Merge(&patch))
                .await?;
        }
        // Restarted by a template annotation naming the step: the same step
        // again changes nothing, so nothing restarts twice.
        let restart = json!({
            "metadata": {"annotations": {STEP_ANNOTATION: change.step, INCIDENT_ANNOTATION: change.incident}},
            "spec": {"template": {"metadata": {"annotations": {SECRET_ROTATED_ANNOTATION: change.step}}}}
        });
        let params = PatchParams {
            dry_run,
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for (kind, name) in &change.consumers {
            let result = patch_named(
                client,
                (&change.namespace, *kind, name),
                &params,
                &Patch::Merge(restart.clone()),
            )
            .await;
            match result {
                Ok(()) => lines.push(format!("{kind}/{name} restarted to read the new value")),
                // Deleted since it was found: nothing left to restart.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    lines.push(format!("{kind}/{name} is gone; not restarted"));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(lines)
    }

    /// The target usually reads the Secret, and restarts with the rest.
    fn grants(_: &crd::Action, _: WorkloadKind) -> Vec<Grant> {
        // The Secret, and the workloads that read it (restarted onto it).
        vec![
            Grant::new("", "secrets", "get"),
            Grant::new("", "secrets", "patch"),
            Grant::new("apps", "deployments", "list"),
            Grant::new("apps", "statefulsets", "list"),
            Grant::new("apps", "deployments", "patch"),
        ]
    }

    fn rolls_pods(_: &crd::Action) -> bool {
        true
    }

    /// In a security incident new credentials lock people out too: a
    /// rotation waits for a human unless its step says otherwise.
    fn needs_approval(action: &crd::Action, incident: IncidentType) -> bool {
        action.mode.is_none() && incident == IncidentType::SecurityIncident
    }
}

/// A new value from the operating system's random source.
fn new_value(length: usize, alphabet: SecretAlphabet) -> String {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const HEX: &[u8] = b"0123456789abcdef";
    const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let characters = match alphabet {
        SecretAlphabet::Alphanumeric => ALPHANUMERIC,
        SecretAlphabet::Hex => HEX,
        SecretAlphabet::Base64Url => BASE64URL,
    };
    let mut random = rand::rng();
    (0..length)
        .map(|_| char::from(characters[random.random_range(0..characters.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    fn rotation() -> crd::Action {
        action(json!({"action": "rotateSecret", "rotateSecret": {
            "secret": "healing-guard-secrets", "key": "jwt-secret", "previousKey": "jwt-secret-previous"}}))
    }

    fn inputs(rotated_by: Option<&str>) -> Inputs {
        Inputs {
            secret: Some(SecretFacts {
                keys: vec!["jwt-secret".into(), "database-password".into()],
                resource_version: Some("7".into()),
                rotated_by: rotated_by.map(str::to_owned),
            }),
            consumers: vec![
                (WorkloadKind::Deployment, "api".into()),
                (WorkloadKind::Deployment, "webhook-worker".into()),
            ],
        }
    }

    #[test]
    fn a_rotation_names_where_the_value_goes_and_what_restarts_but_no_value() {
        let planned =
            plan_of::<RotateSecret>(&rotation(), &deployment("1", 3), &inputs(None), MARK).unwrap();
        assert_eq!(
            planned.summary,
            "Secret healing-guard-secrets key jwt-secret: a new value (48 characters, Alphanumeric); \
             the previous value kept under jwt-secret-previous; rollout restart of Deployment/api, Deployment/webhook-worker"
        );
        let change = &planned.change;
        assert!(change.rotate);
        // Applied before a restart: the Secret carries the step; no second value.
        let again = plan_of::<RotateSecret>(
            &rotation(),
            &deployment("1", 3),
            &inputs(Some(MARK.step)),
            MARK,
        )
        .unwrap();
        let change = &again.change;
        assert!(!change.rotate, "{}", again.summary);
    }

    #[test]
    fn a_missing_secret_or_key_is_refused_with_the_reason() {
        let none = Inputs::default();
        assert_eq!(
            plan_of::<RotateSecret>(&rotation(), &deployment("1", 3), &none, MARK),
            Err(Refusal::Unusable(
                "Secret healing-guard-secrets not found".into()
            ))
        );
        let mut no_key = inputs(None);
        if let Some(secret) = &mut no_key.secret {
            secret.keys = vec!["other".into()];
        }
        assert!(matches!(
            plan_of::<RotateSecret>(&rotation(), &deployment("1", 3), &no_key, MARK),
            Err(Refusal::Unusable(why)) if why.contains("has no key jwt-secret")
        ));
    }

    #[test]
    fn new_values_are_random_and_of_their_alphabet() {
        let a = new_value(48, SecretAlphabet::Alphanumeric);
        let b = new_value(48, SecretAlphabet::Alphanumeric);
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
        assert!(
            new_value(64, SecretAlphabet::Hex)
                .chars()
                .all(|c| c.is_ascii_hexdigit())
        );
        assert!(
            new_value(64, SecretAlphabet::Base64Url)
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn consumers_are_found_from_env_env_from_and_volumes() {
        let pod = |spec: serde_json::Value| -> PodSpec { serde_json::from_value(spec).unwrap() };
        let name = "healing-guard-secrets";
        assert!(reads(
            &pod(json!({"containers": [{"name": "a", "env": [{"name": "JWT",
            "valueFrom": {"secretKeyRef": {"name": name, "key": "jwt-secret"}}}]}]})),
            name
        ));
        assert!(reads(
            &pod(
                json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": name}}]}]})
            ),
            name
        ));
        assert!(reads(
            &pod(json!({"containers": [{"name": "a"}],
            "volumes": [{"name": "s", "secret": {"secretName": name}}]})),
            name
        ));
        assert!(reads(
            &pod(json!({"containers": [{"name": "a"}],
            "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": name}}]}}]})),
            name
        ));
        assert!(!reads(
            &pod(
                json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "other"}}]}]})
            ),
            name
        ));
    }
}
