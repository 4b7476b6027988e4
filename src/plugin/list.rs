//! `kubectl healing-guard list`: the incidents, the ones that need someone
//! first. Fetching is one list call; ordering and the table are pure.

use std::cmp::Reverse;

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::{
    PluginError,
    output::{age, table},
    status::{current_step, due, phase, waiting},
};
use crate::crd::Incident;

/// Which incidents to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// One namespace, or all of them (`-A`).
    pub namespace: Option<String>,
    /// Only those not resolved or declined.
    pub open_only: bool,
}

/// The incidents in scope, in the order [`order`] gives.
pub async fn fetch(client: &Client, scope: &Scope) -> Result<Vec<Incident>, PluginError> {
    let api: Api<Incident> = match &scope.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let mut incidents = api.list(&ListParams::default()).await?.items;
    if scope.open_only {
        incidents.retain(Incident::is_open);
    }
    order(&mut incidents);
    Ok(incidents)
}

/// Open before closed, then the most severe, then the newest; by
/// namespace and name last, so the order is the same from one call to the next.
pub fn order(incidents: &mut [Incident]) {
    incidents.sort_by_cached_key(|incident| {
        (
            !incident.is_open(),
            incident.spec.severity,
            Reverse(
                incident
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            ),
            incident.namespace(),
            incident.name_any(),
        )
    });
}

/// The table, with a NAMESPACE column when listing across namespaces.
pub fn render(incidents: &[Incident], with_namespace: bool, now: Timestamp) -> String {
    if incidents.is_empty() {
        return "No incidents found.\n".to_owned();
    }
    let mut header = vec![
        "NAME", "SEVERITY", "PHASE", "TYPE", "TARGET", "STEP", "WAITING", "DUE", "AGE",
    ];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|incident| {
            let mut row = row(incident, now);
            if with_namespace {
                row.insert(0, incident.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&header, &rows)
}

fn row(incident: &Incident, now: Timestamp) -> Vec<String> {
    let dash = || "-".to_owned();
    let waiting: Vec<String> = waiting(incident).iter().map(|w| w.to_string()).collect();
    vec![
        incident.name_any(),
        incident.spec.severity.to_string(),
        phase(incident),
        incident.spec.incident_type.to_string(),
        incident.spec.target.to_string(),
        current_step(incident).map_or_else(dash, |s| format!("{}/{}", s.name, s.result)),
        if waiting.is_empty() {
            dash()
        } else {
            waiting.join(",")
        },
        due(incident, now).unwrap_or_else(dash),
        incident
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(dash, |t| age(t.0, now)),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plugin::fixtures::{at, in_phase, incident, now};

    fn names(incidents: &[Incident]) -> Vec<String> {
        incidents.iter().map(|i| i.name_any()).collect()
    }

    #[test]
    fn open_incidents_come_first_then_the_most_severe_then_the_newest() {
        let mut incidents = vec![
            in_phase("a", "old-p0-resolved", "P0", 900, "Resolved"),
            in_phase("a", "p2-new", "P2", 60, "Triggered"),
            in_phase("a", "p0-old", "P0", 3600, "Mitigating"),
            in_phase("a", "p3-declined", "P3", 30, "Declined"),
            in_phase("a", "p0-new", "P0", 120, "Escalated"),
            incident("a", "p1-unseen", "P1", 10, serde_json::Value::Null),
            in_phase("b", "p0-new", "P0", 120, "Acknowledged"),
        ];
        order(&mut incidents);
        assert_eq!(
            names(&incidents),
            [
                "p0-new",
                "p0-new",
                "p0-old",
                "p1-unseen",
                "p2-new",
                "old-p0-resolved",
                "p3-declined"
            ]
        );
        // The same age and severity: by namespace, the same every time.
        assert_eq!(incidents[0].namespace().as_deref(), Some("a"));
        assert_eq!(incidents[1].namespace().as_deref(), Some("b"));
    }

    #[test]
    fn the_table_says_what_waits_on_a_person_and_when_it_is_due() {
        let held = incident(
            "shop",
            "api-outage",
            "P0",
            600,
            json!({
                "phase": "Mitigating",
                "sla": {"acknowledgeBy": at(300), "resolveBy": at(13_800)},
                "steps": [{"id": "x-rollback-1", "name": "rollback", "action": "rollback",
                           "attempt": 1, "result": "AwaitingApproval", "startedAt": at(-120)}],
            }),
        );
        let mut late = in_phase("web", "slow-checkout", "P2", 7200, "Escalated");
        late.spec.acknowledged = Some(crate::crd::Acknowledgement {
            by: "alice".into(),
            at: None,
            note: None,
        });
        late.status = Some(
            serde_json::from_value(json!({
                "phase": "Escalated",
                "sla": {"acknowledgeBy": at(-3600), "resolveBy": at(-600)},
                "conditions": [{"type": "NeedsHuman", "status": "True", "reason": "LadderExhausted",
                                "message": "", "lastTransitionTime": at(-60)}],
                "steps": [{"id": "y", "name": "scale", "action": "scale", "attempt": 1,
                           "result": "Failed"}],
            }))
            .unwrap(),
        );
        let done = in_phase("shop", "cache-miss", "P3", 86_400 * 3, "Resolved");
        let mut incidents = vec![done, late, held];
        order(&mut incidents);
        assert_eq!(
            render(&incidents, true, now()),
            "NAMESPACE   NAME            SEVERITY   PHASE        TYPE            TARGET           STEP                        WAITING                 DUE                   AGE\n\
             shop        api-outage      P0         Mitigating   ServiceOutage   Deployment/api   rollback/AwaitingApproval   ack,approval:rollback   ack in 5m0s           10m\n\
             web         slow-checkout   P2         Escalated    ServiceOutage   Deployment/api   scale/Failed                human                   resolve overdue 10m   120m\n\
             shop        cache-miss      P3         Resolved     ServiceOutage   Deployment/api   -                           -                       -                     3d\n"
        );
        // In one namespace, no NAMESPACE column.
        let one = render(&incidents[..1], false, now());
        assert!(one.starts_with("NAME         SEVERITY"), "{one}");
        assert_eq!(render(&[], false, now()), "No incidents found.\n");
    }
}
