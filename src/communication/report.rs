//! The post-incident report, as the runbook's "Post-Incident Actions" ask
//! for it (document the incident, its timeline, every action taken), in
//! Markdown: summary, impact, detection, the UTC timeline, every step with
//! its result, the durations, root cause and follow-ups, and who was told.
//! Pure: the Incident in, the text out.

use std::fmt::Write;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use crate::crd::duration::spoken as human;
use crate::crd::{Incident, IncidentSpec, IncidentStatus, SourceKind};

/// The name of an incident's report ConfigMap.
pub fn config_map_name(incident: &Incident) -> String {
    let name = incident.name_any();
    let suffix = "-report";
    let keep = 253usize.saturating_sub(suffix.len());
    format!("{}{suffix}", name.chars().take(keep).collect::<String>())
}

fn between(from: Option<Timestamp>, to: Option<Timestamp>) -> String {
    match (from, to) {
        (Some(from), Some(to)) => std::time::Duration::try_from(to.duration_since(from))
            .map(human)
            .unwrap_or_else(|_| "-".into()),
        _ => "-".into(),
    }
}

/// Markdown text of the report.
pub fn render(incident: &Incident) -> String {
    let spec = &incident.spec;
    let status = incident.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# Post-incident report: {}", spec.title);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- Incident: {}/{}\n- Severity: {} · Type: {} · Target: {}\n- Phase: {}",
        incident.namespace().unwrap_or_default(),
        incident.name_any(),
        spec.severity,
        spec.incident_type,
        spec.target,
        status
            .phase
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    summary(&mut out, spec, &status);
    impact(&mut out, spec, &status);
    detection(&mut out, spec, &status);
    timeline(&mut out, &status);
    actions(&mut out, &status);
    durations(&mut out, &status);
    root_cause(&mut out, spec);
    follow_ups(&mut out, spec);
    communication(&mut out, &status);
    out
}

/// What ended it: the resolution's summary, else the step that recovered the target.
fn summary(out: &mut String, spec: &IncidentSpec, status: &IncidentStatus) {
    let _ = writeln!(out, "\n## Summary\n");
    let summary = spec
        .resolution
        .as_ref()
        .map(|r| r.summary.clone())
        .or_else(|| {
            status
                .steps
                .iter()
                .rev()
                .find(|s| s.result == crate::crd::StepResult::Succeeded)
                .map(|s| {
                    format!(
                        "step {} ({}) recovered the target: {}",
                        s.name,
                        s.action,
                        s.changes.join("; ")
                    )
                })
        });
    let _ = writeln!(
        out,
        "{}",
        summary.unwrap_or_else(|| "Closed without a recorded fix.".into())
    );
}

/// What was hit: the description, and the pods affected.
fn impact(out: &mut String, spec: &IncidentSpec, status: &IncidentStatus) {
    let _ = writeln!(out, "\n## Impact\n");
    let _ = writeln!(
        out,
        "{}",
        spec.description
            .clone()
            .unwrap_or_else(|| spec.title.clone())
    );
    if let Some(detection) = &status.detection
        && !detection.affected_pods.is_empty()
    {
        let _ = writeln!(
            out,
            "\nAffected pods: {}{}",
            detection.affected_pods.join(", "),
            if detection.affected_pods_omitted > 0 {
                format!(" and {} more", detection.affected_pods_omitted)
            } else {
                String::new()
            }
        );
    }
}

/// How it was found: the rule that detected it, or a responder.
fn detection(out: &mut String, spec: &IncidentSpec, status: &IncidentStatus) {
    let _ = writeln!(out, "\n## Detection\n");
    match spec.source.kind {
        SourceKind::Detected => {
            let _ = writeln!(
                out,
                "Detected by rule {} of RemediationPolicy {}.",
                spec.source.rule.as_deref().unwrap_or("-"),
                spec.source.policy.as_deref().unwrap_or("-")
            );
            if let Some(detection) = &status.detection {
                let _ = writeln!(
                    out,
                    "Symptom {}, {} occurrence(s), {} reopen(s).",
                    detection
                        .symptom
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    detection.occurrences,
                    detection.reopens
                );
            }
        }
        SourceKind::Manual => {
            let _ = writeln!(out, "Declared by a responder.");
        }
    }
    if let Some(owner) = status.evidence.as_ref().and_then(|e| e.gitops.as_ref()) {
        let _ = writeln!(
            out,
            "The target is reconciled from Git by {owner}: the fix belongs in Git."
        );
    }
    gitops_holds(out, status);
}

/// Each sync the incident held: what to revert, and how the hold ended.
fn gitops_holds(out: &mut String, status: &IncidentStatus) {
    if status.sync_holds.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## GitOps\n");
    for hold in &status.sync_holds {
        let _ = writeln!(
            out,
            "- {}: {} suspended at {} (step {}).",
            crate::gitops::hold::what_to_revert(hold),
            hold.owner,
            hold.suspended_at.0,
            hold.step
        );
        match (&hold.resumed_at, &hold.verified_at, &hold.failed_at) {
            (None, ..) if status.phase.is_some_and(|p| p.is_closed()) => {
                let _ = writeln!(
                    out,
                    "  The incident ended while {} is still suspended: resume it once Git is \
                     fixed (`kubectl healing-guard resume-sync`).",
                    hold.owner
                );
            }
            (None, ..) => {
                let _ = writeln!(out, "  Still suspended.");
            }
            (Some(resumed), verified, failed) => {
                let _ = writeln!(
                    out,
                    "  Resumed at {}: {}. Release {}: {}.",
                    resumed.0,
                    hold.resumed_because.as_deref().unwrap_or("-"),
                    hold.release.as_deref().unwrap_or("-"),
                    match (verified, failed) {
                        (Some(at), _) => format!("verified at {}", at.0),
                        (_, Some(at)) =>
                            format!("did not bring recovery (at {}); the ladder ran again", at.0),
                        _ => "not verified".to_owned(),
                    }
                );
            }
        }
    }
}

/// Every timeline entry, in UTC.
fn timeline(out: &mut String, status: &IncidentStatus) {
    let _ = writeln!(out, "\n## Timeline (UTC)\n");
    for entry in &status.timeline {
        let _ = writeln!(out, "- {} {}: {}", entry.at.0, entry.reason, entry.message);
    }
    if status.timeline_dropped.unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "- ({} earlier entries not kept)",
            status.timeline_dropped.unwrap_or(0)
        );
    }
}

/// Every step with its result and changes.
fn actions(out: &mut String, status: &IncidentStatus) {
    let _ = writeln!(out, "\n## Actions\n");
    if status.steps.is_empty() {
        let _ = writeln!(out, "No remediation step was taken.");
    } else {
        let _ = writeln!(
            out,
            "| Step | Action | Result | Started | Finished | Changes |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for step in &status.steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                step.name,
                step.action,
                step.result,
                step.started_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "-".into()),
                step.finished_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "-".into()),
                step.changes.join("; ").replace('|', "/"),
            );
        }
    }
}

/// Time to acknowledge, mitigate and resolve, from detection.
fn durations(out: &mut String, status: &IncidentStatus) {
    let milestones = &status.milestones;
    let at = |t: &Option<Time>| t.as_ref().map(|t| t.0);
    let detected = at(&milestones.detected_at);
    let _ = writeln!(out, "\n## Durations\n");
    let _ = writeln!(
        out,
        "- Time to acknowledge: {}",
        between(detected, at(&milestones.acknowledged_at))
    );
    let _ = writeln!(
        out,
        "- Time to mitigate: {}",
        between(detected, at(&milestones.mitigated_at))
    );
    let _ = writeln!(
        out,
        "- Time to resolve: {}",
        between(detected, at(&milestones.resolved_at))
    );
}

/// The root cause the resolution gives, or why it was declined.
fn root_cause(out: &mut String, spec: &IncidentSpec) {
    let _ = writeln!(out, "\n## Root cause\n");
    let _ = writeln!(
        out,
        "{}",
        spec.resolution
            .as_ref()
            .map(|r| r.root_cause.clone())
            .or_else(|| spec
                .declined
                .as_ref()
                .map(|d| format!("Declined as not an incident: {}", d.reason)))
            .unwrap_or_else(|| "To be found in the post-mortem.".into())
    );
}

/// The resolution's follow-ups, or the post-mortem to schedule.
fn follow_ups(out: &mut String, spec: &IncidentSpec) {
    let _ = writeln!(out, "\n## Follow-ups\n");
    let follow_ups = spec
        .resolution
        .as_ref()
        .map(|r| r.follow_ups.clone())
        .unwrap_or_default();
    if follow_ups.is_empty() {
        let _ = writeln!(
            out,
            "- Schedule a blameless post-mortem and record its action items."
        );
    }
    for item in follow_ups {
        let _ = writeln!(out, "- {item}");
    }
}

/// Every message recorded and every person paged.
fn communication(out: &mut String, status: &IncidentStatus) {
    if let Some(communication) = &status.communication {
        let _ = writeln!(out, "\n## Communication\n");
        for delivery in &communication.outbox {
            let _ = writeln!(
                out,
                "- {} {} to {}: {}",
                delivery.recorded_at.0, delivery.key, delivery.channel, delivery.state
            );
        }
        if let Some(escalation) = &communication.escalation {
            for page in &escalation.notified {
                let _ = writeln!(out, "- {} paged {} ({})", page.at.0, page.person, page.role);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_follows_the_runbooks_post_incident_section() {
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "healing-guard-crashloop", "namespace": "healing-guard"},
            "spec": {"title": "CrashLoopBackOff on Deployment/healing-guard", "severity": "P0",
                     "type": "ServiceOutage", "target": {"kind": "Deployment", "name": "healing-guard"},
                     "source": {"kind": "Detected", "policy": "healing-guard", "rule": "crash-loop",
                                "dedupKey": "Deployment/healing-guard/CrashLoopBackOff"},
                     "acknowledged": {"by": "jane"},
                     "resolution": {"by": "jane", "rootCause": "the 1.4.2 release failed at start-up",
                                    "summary": "rolled back to revision 1",
                                    "followUps": ["a start-up smoke test in CI"]}},
            "status": {"phase": "Resolved",
                "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:03:00Z",
                               "mitigatedAt": "2026-01-01T00:07:30Z", "resolvedAt": "2026-01-01T00:08:00Z"},
                "evidence": {"gitops": {"kind": "Kustomization", "name": "healing-guard", "namespace": "flux-system"},
                             "gitopsRevision": "main@sha1:bbbb"},
                "syncHolds": [
                    {"owner": {"kind": "Kustomization", "name": "healing-guard", "namespace": "flux-system"},
                     "source": "GitRepository flux-system/healing-guard", "url": "https://git.example/shop.git",
                     "badRevision": "main@sha1:bbbb", "goodRevision": "main@sha1:aaaa", "step": "s-0",
                     "suspendedAt": "2026-01-01T00:04:00Z", "resumedAt": "2026-01-01T00:05:00Z",
                     "resumedBecause": "Git moved past the bad revision: GitRepository flux-system/healing-guard is at main@sha1:cccc",
                     "release": "main@sha1:cccc", "failedAt": "2026-01-01T00:06:00Z"},
                    {"owner": {"kind": "Kustomization", "name": "healing-guard", "namespace": "flux-system"},
                     "source": "GitRepository flux-system/healing-guard", "url": "https://git.example/shop.git",
                     "badRevision": "main@sha1:cccc", "goodRevision": "main@sha1:bbbb", "step": "s-1",
                     "suspendedAt": "2026-01-01T00:06:30Z"}],
                "detection": {"symptom": "CrashLoopBackOff", "occurrences": 6, "reopens": 0,
                              "affectedPods": ["healing-guard-7d9-a", "healing-guard-7d9-b"], "affectedPodsOmitted": 1},
                "timeline": [
                    {"at": "2026-01-01T00:00:00Z", "reason": "Triggered", "message": "P0 ServiceOutage incident opened"},
                    {"at": "2026-01-01T00:03:00Z", "reason": "Acknowledged", "message": "acknowledged by jane"},
                    {"at": "2026-01-01T00:08:00Z", "reason": "Resolved", "message": "resolved by jane"}],
                "steps": [{"id": "s-0", "name": "rollback", "action": "rollback", "attempt": 1, "result": "Succeeded",
                           "startedAt": "2026-01-01T00:04:00Z", "finishedAt": "2026-01-01T00:07:30Z",
                           "changes": ["Deployment/healing-guard rolled back from revision 2 to revision 1"]}],
                "communication": {"outbox": [{"channel": "slack", "event": "Opened", "key": "Opened", "state": "Sent",
                                              "attempts": 1, "recordedAt": "2026-01-01T00:00:01Z"}],
                                  "escalation": {"step": 0, "pass": 0, "notified": [
                                      {"person": "john", "role": "primary", "step": 0, "pass": 0, "at": "2026-01-01T00:00:01Z"}],
                                      "stopped": "acknowledged by jane"}}}
        }))
        .unwrap();
        assert_eq!(config_map_name(&incident), "healing-guard-crashloop-report");
        let text = render(&incident);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/report.md");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text, expected,
            "report.md changed; UPDATE_GOLDEN=1 rewrites it"
        );
    }
}
