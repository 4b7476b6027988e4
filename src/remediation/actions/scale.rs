//! `scale`: raise replicas (set, or by an increment; never lowered, capped by
//! maxReplicas) and/or set a container's resource requests and limits.

use kube::api::Patch;
use serde_json::{Value, json};

use super::{
    action::{Action, Io, Plan, Request},
    errors::{ApplyError, Refusal},
    write::{apply_body, compact, patch_workload},
};
use crate::authority::Grant;
use crate::crd::WorkloadKind;
use crate::{
    crd::{self, ActionKind, ScaleAction},
    workload::Workload,
};

pub struct Scale;

/// A server-side apply of replicas and/or a container's resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub body: Value,
}

impl Action for Scale {
    const KIND: ActionKind = ActionKind::Scale;
    const UNDONE_BY_GIT: bool = true;
    type Settings = ScaleAction;
    type Inputs = ();
    type Change = Change;

    fn settings(action: &crd::Action) -> Option<&ScaleAction> {
        action.scale.as_ref()
    }

    fn plan(
        request: &Request<'_>,
        settings: &ScaleAction,
        _: &(),
    ) -> Result<Plan<Change>, Refusal> {
        plan(request, settings)
    }

    async fn apply(
        io: Io<'_>,
        workload: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        patch_workload(
            io.client,
            workload,
            &Patch::Apply(change.body.clone()),
            dry_run,
        )
        .await?;
        Ok(Vec::new())
    }

    /// A resources change replaces every pod; more replicas take none down.
    fn grants(_: &crd::Action, kind: WorkloadKind) -> Vec<Grant> {
        vec![Grant::patch_workload(kind)]
    }

    fn rolls_pods(action: &crd::Action) -> bool {
        Self::settings(action).is_some_and(|s| s.resources.is_some())
    }
}

fn plan(request: &Request<'_>, scale: &ScaleAction) -> Result<Plan<Change>, Refusal> {
    let (workload, mark) = (request.workload, request.mark);
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
    Ok(Plan {
        change: Change {
            body: apply_body(workload, mark, spec),
        },
        summary: summary.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn plan(
        action: &crd::Action,
        workload: &Workload,
        _: super::super::Mark<'_>,
    ) -> Result<Plan<Change>, Refusal> {
        Scale::plan(&request(action, workload), Scale::required(action)?, &())
    }

    fn body(planned: Plan<Change>) -> Value {
        planned.change.body
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
