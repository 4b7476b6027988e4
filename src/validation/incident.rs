//! Checks on an Incident's spec: its own ladder, like a policy rule's.

use super::{Problem, Problems, ladder::ladder};
use crate::crd::IncidentSpec;

/// Every problem found in the spec, in field order.
pub fn incident(spec: &IncidentSpec) -> Vec<Problem> {
    let mut problems = Problems::default();
    if let Some(actions) = &spec.actions {
        let kinds = [("spec.target.kind".to_owned(), spec.target.kind)];
        ladder("spec.actions", actions, &kinds, &mut problems);
    }
    problems.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Incident;

    fn spec(actions: &str, kind: &str) -> IncidentSpec {
        let yaml = format!(
            "apiVersion: healing-guard.io/v1alpha1\nkind: Incident\nmetadata: {{name: i}}\n\
             spec: {{title: t, severity: P1, type: ServiceOutage, target: {{kind: {kind}, name: db}}, actions: {actions}}}"
        );
        serde_yaml::from_str::<Incident>(&yaml).unwrap().spec
    }

    #[test]
    fn an_incidents_own_ladder_is_checked_like_a_policys() {
        assert!(incident(&spec("[{action: restart}]", "StatefulSet")).is_empty());
        let problems: Vec<String> = incident(&spec(
            "[{action: restart}, {action: restart}, {action: rollback}]",
            "StatefulSet",
        ))
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            problems,
            [
                "spec.actions[1].name: step name \"restart\" is used twice in this ladder; give each step a name",
                "spec.actions[2].action: rollback cannot apply to a StatefulSet (spec.target.kind)",
            ]
        );
    }

    #[test]
    fn a_scale_without_a_ceiling_or_beyond_bounds_is_refused() {
        let problems = incident(&spec(
            "[{action: scale, scale: {increment: 1000000000}}]",
            "Deployment",
        ));
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.actions[0].scale.increment",
                "spec.actions[0].scale.maxReplicas"
            ]
        );
    }
}
