//! `scale`: raise replicas (set, or by an increment; never lowered, capped by
//! maxReplicas) and/or set a container's resource requests and limits.

use kube::{Client, api::Patch};
use serde_json::{Value, json};

use super::{
    ApplyError, Change as AnyChange, Mark, Planned, Refusal, apply_body, compact, patch_workload,
};
use crate::{
    crd::{Action, ActionKind},
    workload::Workload,
};

/// A server-side apply of replicas and/or a container's resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub body: Value,
}

/// Whether the scale rolls pods (a resources change replaces every pod).
pub fn rolls(action: &Action) -> bool {
    action.scale.as_ref().is_some_and(|s| s.resources.is_some())
}

pub fn plan(action: &Action, workload: &Workload, mark: Mark<'_>) -> Result<Planned, Refusal> {
    let scale = action
        .scale
        .as_ref()
        .ok_or(Refusal::MissingSettings(ActionKind::Scale))?;
    let (kind, name) = (workload.kind(), workload.name());
    let mut spec = json!({});
    let mut summary = Vec::new();
    let current = workload.desired_replicas();
    if scale.replicas.is_some() || scale.increment.is_some() {
        let wanted = scale
            .replicas
            .unwrap_or(current.saturating_add(scale.increment.unwrap_or(0)));
        let bounded = scale.max_replicas.map_or(wanted, |max| wanted.min(max));
        if bounded <= current && scale.resources.is_none() {
            return Err(Refusal::NothingToScale {
                current,
                target: bounded,
            });
        }
        if bounded > current {
            spec["replicas"] = bounded.into();
            summary.push(format!("{kind}/{name} replicas {current} -> {bounded}"));
        }
    }
    if let Some(resources) = &scale.resources {
        let containers = workload
            .template()
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let container = match &resources.container {
            Some(wanted) => containers
                .iter()
                .find(|c| c.name == *wanted)
                .ok_or_else(|| Refusal::NoSuchContainer(wanted.clone()))?,
            None => containers
                .first()
                .ok_or_else(|| Refusal::NoSuchContainer(String::new()))?,
        };
        let mut set = json!({});
        if let Some(limits) = &resources.limits {
            set["limits"] = json!(limits);
        }
        if let Some(requests) = &resources.requests {
            set["requests"] = json!(requests);
        }
        spec["template"] =
            json!({"spec": {"containers": [{"name": container.name, "resources": set}]}});
        summary.push(format!(
            "{kind}/{name} container {} resources {}",
            container.name,
            compact(&set)
        ));
    }
    Ok(Planned {
        change: AnyChange::Scale(Change {
            body: apply_body(workload, mark, spec),
        }),
        summary: summary.join("; "),
    })
}

pub async fn apply(
    client: &Client,
    workload: &Workload,
    change: &Change,
    dry_run: bool,
) -> Result<Vec<String>, ApplyError> {
    patch_workload(
        client,
        workload,
        &Patch::Apply(change.body.clone()),
        dry_run,
    )
    .await?;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn body(planned: Planned) -> Value {
        match planned.change {
            AnyChange::Scale(change) => change.body,
            other => panic!("scale applies, got {other:?}"),
        }
    }

    #[test]
    fn stays_within_bounds_and_never_lowers() {
        let target = deployment("1", 3);
        let cases = [
            (
                json!({"replicas": 6, "maxReplicas": 8}),
                Ok("Deployment/api replicas 3 -> 6"),
            ),
            (
                json!({"increment": 10, "maxReplicas": 5}),
                Ok("Deployment/api replicas 3 -> 5"),
            ),
            (
                json!({"replicas": 2}),
                Err(Refusal::NothingToScale {
                    current: 3,
                    target: 2,
                }),
            ),
            (
                json!({"increment": 1, "maxReplicas": 3}),
                Err(Refusal::NothingToScale {
                    current: 3,
                    target: 3,
                }),
            ),
        ];
        for (settings, expected) in cases {
            let planned = plan(
                &action(json!({"action": "scale", "scale": settings})),
                &target,
                MARK,
            );
            assert_eq!(
                planned.map(|p| p.summary),
                expected.map(str::to_owned),
                "{settings}"
            );
        }
    }

    #[test]
    fn sets_container_resources() {
        let target = deployment("1", 3);
        let planned = plan(
            &action(json!({"action": "scale", "scale": {"resources": {"container": "app", "limits": {"memory": "2Gi", "cpu": "1000m"}}}})),
            &target,
            MARK,
        )
        .unwrap();
        let body = body(planned);
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "2Gi"
        );
        assert!(body["spec"].get("replicas").is_none());
        let missing = plan(
            &action(
                json!({"action": "scale", "scale": {"resources": {"container": "nope", "limits": {"cpu": "1"}}}}),
            ),
            &target,
            MARK,
        );
        assert_eq!(missing, Err(Refusal::NoSuchContainer("nope".into())));
    }
}
