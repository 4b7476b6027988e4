//! `kubectl healing-guard status NAME`: one incident as the responder needs
//! it at a glance - where it stands, what waits on a person (and the command
//! that gives it), when the next page and the deadlines fall, the last steps
//! and timeline entries, the conditions. Pure: the incident and the time in,
//! the text out.

use std::fmt::{self, Write};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::output::{age, relative, table};
use crate::{
    crd::{Incident, SourceKind, StepRecord, StepResult},
    incident::lifecycle::NEEDS_HUMAN,
};

/// How many steps and timeline entries the view shows (the timeline
/// command shows them all).
const LAST: usize = 5;

/// What an open incident waits for from a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The operator ran out of things to do (`NeedsHuman`).
    Human,
    /// Nobody owns it: never acknowledged, or the acknowledgement expired.
    Acknowledgement,
    /// A step held for approval in its round, not approved yet.
    Approval(String),
    /// The incident holds its target's GitOps sync (named) until Git moves
    /// past the bad revision; listed even once the incident is over.
    Git(String),
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Human => f.write_str("human"),
            Waiting::Acknowledgement => f.write_str("ack"),
            Waiting::Approval(step) => write!(f, "approval:{step}"),
            Waiting::Git(owner) => write!(f, "git:{owner}"),
        }
    }
}

/// What waits on a person, most pressing first; nothing once it is closed.
pub fn waiting(incident: &Incident) -> Vec<Waiting> {
    let status = incident.status.clone().unwrap_or_default();
    let held = status
        .sync_holds
        .last()
        .filter(|hold| hold.is_held())
        .map(|hold| {
            let owner = &hold.owner;
            let namespace = owner.namespace.as_deref().unwrap_or("-");
            Waiting::Git(format!("{:?}/{namespace}/{}", owner.kind, owner.name))
        });
    if !incident.is_open() {
        return held.into_iter().collect();
    }
    let mut found = Vec::new();
    if crate::conditions::is_true(&status.conditions, NEEDS_HUMAN) {
        found.push(Waiting::Human);
    }
    if !acknowledged(incident) {
        found.push(Waiting::Acknowledgement);
    }
    for step in awaiting_approval(incident) {
        found.push(Waiting::Approval(step.name.clone()));
    }
    found.extend(held);
    found
}

/// Steps held for approval that no approval of their round covers yet
/// (one that has one is about to run).
pub fn awaiting_approval(incident: &Incident) -> Vec<&StepRecord> {
    let Some(status) = &incident.status else {
        return Vec::new();
    };
    status
        .steps
        .iter()
        .filter(|step| step.result == StepResult::AwaitingApproval)
        .filter(|step| {
            !incident
                .spec
                .approvals
                .iter()
                .any(|a| a.step == step.name && a.round.unwrap_or(1) == step.attempt)
        })
        .collect()
}

/// Whether an acknowledgement is in force: given, and later than the one
/// the notifier recorded as expired (as the escalation reads it).
pub fn acknowledged(incident: &Incident) -> bool {
    let Some(ack) = &incident.spec.acknowledged else {
        return false;
    };
    let at = ack.at.as_ref().map(|t| t.0).or_else(|| {
        incident
            .status
            .as_ref()
            .and_then(|s| s.milestones.acknowledged_at.as_ref())
            .map(|t| t.0)
    });
    let expired = incident
        .communication()
        .and_then(|c| c.escalation.as_ref())
        .and_then(|e| e.expired_acknowledgement.as_ref())
        .map(|t| t.0);
    match (at, expired) {
        (Some(at), Some(expired)) => at.as_second() > expired.as_second(),
        (None, Some(_)) => false,
        (_, None) => true,
    }
}

/// The ledger's newest step: the one running, held, or last concluded.
pub fn current_step(incident: &Incident) -> Option<&StepRecord> {
    incident.status.as_ref()?.steps.last()
}

/// The phase as shown; `New` before the operator has looked at it.
pub fn phase(incident: &Incident) -> String {
    incident
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| "New".to_owned(), |p| p.to_string())
}

/// The next deadline of an open incident: `ack in 12m`, `resolve overdue 2h`.
pub fn due(incident: &Incident, now: Timestamp) -> Option<String> {
    if !incident.is_open() {
        return None;
    }
    let sla = incident.status.as_ref()?.sla.as_ref()?;
    let (what, at) = if acknowledged(incident) {
        ("resolve", sla.resolve_by.0)
    } else {
        ("ack", sla.acknowledge_by.0)
    };
    Some(if at >= now {
        format!("{what} in {}", age(now, at))
    } else {
        format!("{what} overdue {}", age(at, now))
    })
}

/// The responder's view of one incident at `now`.
pub fn render(incident: &Incident, now: Timestamp) -> String {
    let mut out = String::new();
    let name = incident.name_any();
    let namespace = incident.namespace().unwrap_or_default();
    let spec = &incident.spec;
    let status = incident.status.clone().unwrap_or_default();
    // A label, or none on a value's second line.
    let mut field = |label: &str, value: String| {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!("{label}:")
        };
        let _ = writeln!(out, "{label:<14}{value}");
    };
    field("Name", name.clone());
    field("Namespace", namespace.clone());
    field("Title", spec.title.clone());
    field(
        "Severity",
        format!("{} ({})", spec.severity, spec.incident_type),
    );
    field("Phase", phase(incident));
    field("Target", spec.target.to_string());
    field("Source", source(incident));
    if let Some(created) = &incident.metadata.creation_timestamp {
        field("Age", age(created.0, now));
    }
    if let Some(signal) = status.detection.as_ref().and_then(|d| d.message.clone()) {
        field("Signal", signal);
    }
    field("Acknowledged", acknowledgement(incident, now));
    if let Some(resolution) = &spec.resolution {
        field(
            "Resolved",
            format!("by {}: {}", resolution.by, resolution.root_cause),
        );
    }
    if let Some(declined) = &spec.declined {
        field(
            "Declined",
            format!("by {}: {}", declined.by, declined.reason),
        );
    }
    for (i, line) in deadlines(incident, now).into_iter().enumerate() {
        field(if i == 0 { "Deadlines" } else { "" }, line);
    }
    field("Paging", paging(incident, now));
    match current_step(incident) {
        Some(step) => {
            let since = step
                .started_at
                .as_ref()
                .map(|t| format!(" for {}", age(t.0, now)))
                .unwrap_or_default();
            field(
                "Current step",
                format!(
                    "{} ({}, round {}): {}{since}",
                    step.name, step.action, step.attempt, step.result
                ),
            );
            if let Some(message) = &step.message {
                field("", message.clone());
            }
        }
        None => field("Current step", "none yet".to_owned()),
    }

    let waiting = waiting(incident);
    if !waiting.is_empty() {
        let _ = writeln!(out, "\nWaiting for you:");
        let lines: Vec<(String, String)> = waiting
            .iter()
            .map(|wait| match wait {
                Waiting::Human => (
                    "a human".to_owned(),
                    condition_message(&status.conditions, NEEDS_HUMAN),
                ),
                Waiting::Acknowledgement => (
                    "acknowledge".to_owned(),
                    format!("kubectl healing-guard ack {name} -n {namespace}"),
                ),
                Waiting::Approval(step) => (
                    format!("approve {step}"),
                    format!("kubectl healing-guard approve {name} {step} -n {namespace}"),
                ),
                Waiting::Git(owner) => (
                    format!("a fix in Git ({owner} held)"),
                    format!(
                        "{}; or lift it now: kubectl healing-guard resume-sync {name} -n {namespace}",
                        status
                            .sync_holds
                            .last()
                            .map(crate::gitops::hold::what_to_revert)
                            .unwrap_or_default()
                    ),
                ),
            })
            .collect();
        let width = lines.iter().map(|(what, _)| what.len()).max().unwrap_or(0) + 1;
        for (what, how) in lines {
            let _ = writeln!(out, "  {:<width$}  {how}", format!("{what}:"));
        }
    }

    if !status.conditions.is_empty() {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    age(c.last_transition_time.0, now),
                    c.message.clone(),
                ]
            })
            .collect();
        let _ = writeln!(out, "\nConditions:");
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            &rows,
        )));
    }

    if !status.steps.is_empty() {
        let rows: Vec<Vec<String>> = last(&status.steps)
            .iter()
            .map(|step| {
                vec![
                    step.name.clone(),
                    step.action.to_string(),
                    step.attempt.to_string(),
                    step.result.to_string(),
                    step.started_at
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |t| age(t.0, now)),
                    if step.changes.is_empty() {
                        step.message.clone().unwrap_or_default()
                    } else {
                        step.changes.join("; ")
                    },
                ]
            })
            .collect();
        let _ = writeln!(out, "\nSteps{}:", of_how_many(status.steps.len()));
        out.push_str(&indent(&table(
            &["NAME", "ACTION", "ROUND", "RESULT", "AGE", "WHAT"],
            &rows,
        )));
    }

    if !status.timeline.is_empty() {
        let rows: Vec<Vec<String>> = last(&status.timeline)
            .iter()
            .map(|entry| {
                vec![
                    age(entry.at.0, now),
                    entry.reason.clone(),
                    entry.message.clone(),
                ]
            })
            .collect();
        let _ = writeln!(out, "\nTimeline{}:", of_how_many(status.timeline.len()));
        out.push_str(&indent(&table(&["AGE", "REASON", "MESSAGE"], &rows)));
        if status.timeline.len() > LAST {
            let _ = writeln!(
                out,
                "  (all of it: kubectl healing-guard timeline {name} -n {namespace})"
            );
        }
    }
    out
}

fn source(incident: &Incident) -> String {
    let source = &incident.spec.source;
    match source.kind {
        SourceKind::Manual => "declared by a person".to_owned(),
        SourceKind::Detected => {
            let mut text = format!(
                "detected by policy {}, rule {}",
                source.policy.as_deref().unwrap_or("?"),
                source.rule.as_deref().unwrap_or("?")
            );
            let occurrences = incident
                .status
                .as_ref()
                .and_then(|s| s.detection.as_ref())
                .map_or(0, |d| d.occurrences);
            if occurrences > 1 {
                let _ = write!(text, " ({occurrences} occurrences)");
            }
            text
        }
    }
}

fn acknowledgement(incident: &Incident, now: Timestamp) -> String {
    let Some(ack) = &incident.spec.acknowledged else {
        return "no".to_owned();
    };
    let mut text = format!("by {}", ack.by);
    if let Some(at) = &ack.at {
        let _ = write!(text, " {} ago", age(at.0, now));
    }
    if let Some(note) = &ack.note {
        let _ = write!(text, ": {note:?}");
    }
    if !acknowledged(incident) {
        text.push_str(" (expired without progress: paging started over)");
    }
    text
}

fn deadlines(incident: &Incident, now: Timestamp) -> Vec<String> {
    let Some(status) = &incident.status else {
        return vec!["not set yet".to_owned()];
    };
    let Some(sla) = &status.sla else {
        return vec!["not set yet".to_owned()];
    };
    let closed = !incident.is_open();
    let verdict = |breached: bool, met: bool| {
        if breached {
            " - BREACHED"
        } else if met {
            " - met"
        } else {
            ""
        }
    };
    let acked = status.milestones.acknowledged_at.is_some() || closed;
    vec![
        format!(
            "acknowledge by {} ({}){}",
            sla.acknowledge_by.0,
            relative(sla.acknowledge_by.0, now),
            verdict(sla.acknowledge_breached, acked)
        ),
        format!(
            "resolve by {} ({}){}",
            sla.resolve_by.0,
            relative(sla.resolve_by.0, now),
            verdict(sla.resolve_breached, closed)
        ),
    ]
}

fn paging(incident: &Incident, now: Timestamp) -> String {
    let Some(escalation) = incident.communication().and_then(|c| c.escalation.as_ref()) else {
        return "nobody paged (no escalation policy, or not yet)".to_owned();
    };
    let mut parts = Vec::new();
    if let Some(stopped) = &escalation.stopped {
        parts.push(format!("stopped: {stopped}"));
    } else if let Some(next) = &escalation.next_at {
        parts.push(format!("next page {} ({})", relative(next.0, now), next.0));
    }
    if let Some(page) = escalation.notified.last() {
        parts.push(format!(
            "last paged {} ({}) {} ago",
            page.person,
            page.role,
            age(page.at.0, now)
        ));
    }
    if parts.is_empty() {
        "nobody paged yet".to_owned()
    } else {
        parts.join("; ")
    }
}

fn condition_message(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

fn last<T>(items: &[T]) -> &[T] {
    &items[items.len().saturating_sub(LAST)..]
}

fn of_how_many(total: usize) -> String {
    if total > LAST {
        format!(" (last {LAST} of {total})")
    } else {
        String::new()
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::{Acknowledgement, Approval};
    use crate::plugin::fixtures::{at, in_phase, incident, now};

    fn step(name: &str, attempt: i32, result: &str) -> serde_json::Value {
        json!({"id": format!("u-{name}-{attempt}"), "name": name, "action": name,
               "attempt": attempt, "result": result, "startedAt": at(-60)})
    }

    fn ack(by: &str, seconds: i64) -> Option<Acknowledgement> {
        Some(Acknowledgement {
            by: by.into(),
            at: Some(serde_json::from_value(json!(at(seconds))).unwrap()),
            note: None,
        })
    }

    #[test]
    fn an_approval_counts_for_its_step_and_round_only() {
        let mut held = incident(
            "shop",
            "api",
            "P1",
            60,
            json!({"phase": "Mitigating", "reopensHandled": 1,
                   "steps": [step("rollback", 1, "Succeeded"), step("rollback", 2, "AwaitingApproval")]}),
        );
        held.spec.acknowledged = ack("alice", -30);
        let approve = |round: Option<i32>| Approval {
            step: "rollback".into(),
            by: "bob".into(),
            round,
        };
        assert_eq!(waiting(&held), [Waiting::Approval("rollback".into())]);
        // Last round's approval does not hold for this one.
        held.spec.approvals = vec![approve(None)];
        assert_eq!(waiting(&held), [Waiting::Approval("rollback".into())]);
        held.spec.approvals.push(approve(Some(2)));
        assert_eq!(waiting(&held), []);
    }

    #[test]
    fn a_new_incident_says_what_is_not_known_yet() {
        let view = render(
            &incident("shop", "api", "P2", 5, serde_json::Value::Null),
            now(),
        );
        assert_eq!(
            view,
            "Name:         api\n\
             Namespace:    shop\n\
             Title:        api is down\n\
             Severity:     P2 (ServiceOutage)\n\
             Phase:        New\n\
             Target:       Deployment/api\n\
             Source:       declared by a person\n\
             Age:          5s\n\
             Acknowledged: no\n\
             Deadlines:    not set yet\n\
             Paging:       nobody paged (no escalation policy, or not yet)\n\
             Current step: none yet\n\
             \n\
             Waiting for you:\n  \
             acknowledge:  kubectl healing-guard ack api -n shop\n"
        );
    }

    #[test]
    fn each_thing_waiting_comes_with_its_command_aligned() {
        let held = incident(
            "shop",
            "slow-api",
            "P1",
            60,
            json!({"phase": "Triggered", "steps": [step("scale", 1, "AwaitingApproval")],
                   "conditions": [{"type": "NeedsHuman", "status": "True", "reason": "LadderExhausted",
                                   "message": "every step failed", "lastTransitionTime": at(-5)}]}),
        );
        let view = render(&held, now());
        let waiting = view.split("\nWaiting for you:\n").nth(1).unwrap();
        let waiting: Vec<&str> = waiting.lines().take_while(|l| !l.is_empty()).collect();
        assert_eq!(
            waiting,
            [
                "  a human:        LadderExhausted: every step failed",
                "  acknowledge:    kubectl healing-guard ack slow-api -n shop",
                "  approve scale:  kubectl healing-guard approve slow-api scale -n shop",
            ]
        );
    }

    #[test]
    fn a_long_record_shows_its_last_entries_and_where_the_rest_is() {
        let timeline: Vec<_> = (0..7)
            .map(|i| json!({"at": at(-100 + i), "reason": format!("R{i}"), "message": "m"}))
            .collect();
        let steps: Vec<_> = (1..=6).map(|i| step("restart", i, "Failed")).collect();
        let view = render(
            &incident(
                "shop",
                "api",
                "P2",
                500,
                json!({"phase": "Escalated", "timeline": timeline, "steps": steps}),
            ),
            now(),
        );
        assert!(view.contains("\nSteps (last 5 of 6):\n"), "{view}");
        let rounds: Vec<&str> = view
            .lines()
            .filter(|line| line.starts_with("  restart "))
            .filter_map(|line| line.split_whitespace().nth(2))
            .collect();
        assert_eq!(rounds, ["2", "3", "4", "5", "6"], "{view}");
        assert!(view.contains("\nTimeline (last 5 of 7):\n"), "{view}");
        assert!(!view.contains(" R1 "), "{view}");
        assert!(view.contains(" R6 "), "{view}");
        assert!(
            view.ends_with("  (all of it: kubectl healing-guard timeline api -n shop)\n"),
            "{view}"
        );
    }

    #[test]
    fn an_expired_acknowledgement_waits_for_a_new_one() {
        let mut paged = incident(
            "shop",
            "api",
            "P0",
            600,
            json!({"phase": "Acknowledged",
                   "communication": {"escalation": {"step": 0, "pass": 0,
                                                    "expiredAcknowledgement": at(-300)}}}),
        );
        paged.spec.acknowledged = ack("alice", -300);
        assert!(!acknowledged(&paged));
        assert_eq!(waiting(&paged), [Waiting::Acknowledgement]);
        paged.spec.acknowledged = ack("alice", -10);
        assert!(acknowledged(&paged));
        assert_eq!(waiting(&paged), []);
        // Closed, nothing waits.
        let mut closed = in_phase("shop", "api", "P0", 600, "Resolved");
        closed.spec.acknowledged = None;
        assert_eq!(waiting(&closed), []);
        assert_eq!(due(&closed, now()), None);
    }

    #[test]
    fn the_responder_sees_what_waits_on_them_and_the_command_that_gives_it() {
        let mut incident = incident(
            "shop",
            "api-outage",
            "P0",
            900,
            json!({
                "phase": "Mitigating",
                "sla": {"acknowledgeBy": at(-60), "resolveBy": at(13_500),
                        "acknowledgeBreached": true},
                "milestones": {"detectedAt": at(-900), "acknowledgedAt": at(-30)},
                "detection": {"symptom": "CrashLoopBackOff", "occurrences": 4,
                              "message": "2 pods restarting (5 restarts)"},
                "conditions": [{"type": "AckSLABreached", "status": "True", "reason": "NotAcknowledged",
                                "message": "not acknowledged within 15 minutes",
                                "lastTransitionTime": at(-60)}],
                "communication": {"escalation": {"step": 1, "pass": 0, "nextAt": at(240),
                    "notified": [{"person": "bob", "role": "secondary", "step": 1, "pass": 0, "at": at(-660)}]}},
                "steps": [
                    {"id": "u-rollback-1", "name": "rollback", "action": "rollback", "attempt": 1,
                     "result": "Failed", "startedAt": at(-600),
                     "changes": ["Deployment/api revision 7 -> 6"]},
                    {"id": "u-restart-1", "name": "restart", "action": "restart", "attempt": 1,
                     "result": "AwaitingApproval", "startedAt": at(-120),
                     "message": "restart holds for approval (policy mode RequireApproval)"},
                ],
                "timeline": [
                    {"at": at(-900), "reason": "Detected", "message": "CrashLoopBackOff on Deployment/api"},
                    {"at": at(-600), "reason": "StepApplied", "message": "rollback applied"},
                    {"at": at(-130), "reason": "StepFailed", "message": "rollback did not recover the workload"},
                ],
            }),
        );
        incident.spec.source.kind = crate::crd::SourceKind::Detected;
        incident.spec.source.policy = Some("guard".into());
        incident.spec.source.rule = Some("crashloop".into());
        incident.spec.acknowledged = Some(Acknowledgement {
            by: "alice".into(),
            at: Some(serde_json::from_value(json!(at(-30))).unwrap()),
            note: Some("bridge open".into()),
        });
        assert_eq!(
            render(&incident, now()),
            r#"Name:         api-outage
Namespace:    shop
Title:        api-outage is down
Severity:     P0 (ServiceOutage)
Phase:        Mitigating
Target:       Deployment/api
Source:       detected by policy guard, rule crashloop (4 occurrences)
Age:          15m
Signal:       2 pods restarting (5 restarts)
Acknowledged: by alice 30s ago: "bridge open"
Deadlines:    acknowledge by 2026-12-07T02:59:00Z (60s ago) - BREACHED
              resolve by 2026-12-07T06:45:00Z (in 3h45m)
Paging:       next page in 4m0s (2026-12-07T03:04:00Z); last paged bob (secondary) 11m ago
Current step: restart (restart, round 1): AwaitingApproval for 2m0s
              restart holds for approval (policy mode RequireApproval)

Waiting for you:
  approve restart:  kubectl healing-guard approve api-outage restart -n shop

Conditions:
  TYPE             STATUS   REASON            AGE   MESSAGE
  AckSLABreached   True     NotAcknowledged   60s   not acknowledged within 15 minutes

Steps:
  NAME       ACTION     ROUND   RESULT             AGE    WHAT
  rollback   rollback   1       Failed             10m    Deployment/api revision 7 -> 6
  restart    restart    1       AwaitingApproval   2m0s   restart holds for approval (policy mode RequireApproval)

Timeline:
  AGE     REASON        MESSAGE
  15m     Detected      CrashLoopBackOff on Deployment/api
  10m     StepApplied   rollback applied
  2m10s   StepFailed    rollback did not recover the workload
"#
        );
    }

    #[test]
    fn a_held_sync_waits_on_git_even_once_the_incident_is_over() {
        let hold = json!({"owner": {"kind": "Kustomization", "name": "shop", "namespace": "flux-system"},
                          "badRevision": "main@sha1:bbbb", "step": "s-0",
                          "suspendedAt": at(-60)});
        let resolved = incident(
            "a",
            "api",
            "P1",
            60,
            json!({"phase": "Resolved", "syncHolds": [hold.clone()]}),
        );
        assert_eq!(
            waiting(&resolved),
            [Waiting::Git("Kustomization/flux-system/shop".into())]
        );
        assert_eq!(
            Waiting::Git("Kustomization/flux-system/shop".into()).to_string(),
            "git:Kustomization/flux-system/shop"
        );
        let mut lifted = hold;
        lifted["resumedAt"] = json!(at(-10));
        let over = incident(
            "a",
            "api",
            "P1",
            60,
            json!({"phase": "Resolved", "syncHolds": [lifted]}),
        );
        assert!(waiting(&over).is_empty());
        let text = crate::plugin::list::render(&[resolved], false, now());
        assert!(
            text.contains("git:Kustomization/flux-system/shop"),
            "{text}"
        );
    }
}
