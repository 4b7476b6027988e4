//! Paging as the runbook's escalation path: the first step's role is paged
//! when the incident opens; while nobody acknowledges, each step's wait
//! (by default the severity's response time) passes and the next role is
//! paged; after the last step the steps run again, `repeat` times in all.
//! An acknowledgement or the incident's end stops it; an acknowledgement
//! not followed by progress within the policy's `acknowledgementTimeout`
//! expires, and paging starts over. Pure: the state in
//! the Incident plus the clock decide, so a restart neither re-pages nor
//! skips a step.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::crd::{
    EscalationPolicySpec, EscalationState, EscalationStep, Incident, IncidentType, Paged, Phase,
};

/// How far ahead of the operator's clock a responder's may run: an
/// acknowledgement dated further ahead is not trusted.
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(60);
/// Someone to page now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub person: String,
    pub role: String,
    pub channel: String,
    pub step: i32,
    pub pass: i32,
    /// How many times paging started over before this page.
    pub round: i32,
}

impl Page {
    /// The outbox key of this page: unique per step, pass, round and person.
    pub fn key(&self) -> String {
        if self.round == 0 {
            format!("Page/{}/{}/{}", self.pass, self.step, self.person)
        } else {
            format!(
                "Page/r{}/{}/{}/{}",
                self.round, self.pass, self.step, self.person
            )
        }
    }
}

/// What paging does now: the state to record and the pages to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// None until paging starts (the incident is not opened yet).
    pub state: Option<EscalationState>,
    pub pages: Vec<Page>,
    /// Problems in the policy that keep a step from paging anyone.
    pub problems: Vec<String>,
}

/// A Monday, 00:00 UTC: rotations without a start hand off on Mondays.
const ROTATION_EPOCH: &str = "2024-01-01T00:00:00Z";

/// Who holds `role` at `at`.
pub fn on_call<'a>(policy: &'a EscalationPolicySpec, role: &str, at: Timestamp) -> Option<&'a str> {
    holder(policy, role, at).map(|(person, _)| person)
}

/// Who holds `role` at `at`, and when their turn ends.
pub fn holder<'a>(
    policy: &'a EscalationPolicySpec,
    role: &str,
    at: Timestamp,
) -> Option<(&'a str, Timestamp)> {
    let role = policy.roles.iter().find(|r| r.name == role)?;
    let start = role
        .handoff_start
        .as_ref()
        .map(|t| t.0)
        .or_else(|| ROTATION_EPOCH.parse().ok())?;
    let turn = i64::try_from(role.turn.as_std().as_secs()).ok()?.max(1);
    let elapsed = at.duration_since(start).as_secs();
    let turns = elapsed.div_euclid(turn);
    let len = i64::try_from(role.rotation.len()).ok()?;
    if len == 0 {
        return None;
    }
    let index = usize::try_from(turns.rem_euclid(len)).ok()?;
    let ends = turns
        .checked_add(1)
        .and_then(|t| t.checked_mul(turn))
        .and_then(|seconds| {
            start
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
                .ok()
        })?;
    role.rotation
        .get(index)
        .map(|person| (person.as_str(), ends))
}

fn steps<'a>(policy: &'a EscalationPolicySpec, incident: &Incident) -> &'a [EscalationStep] {
    if incident.spec.incident_type == IncidentType::SecurityIncident
        && !policy.security_steps.is_empty()
    {
        &policy.security_steps
    } else {
        &policy.steps
    }
}

/// Whether the incident moved on since `since`: a remediation step
/// recorded, or a phase past Acknowledged that means work (Mitigating,
/// Monitoring). Escalated is not progress: it asks for people.
fn progressed(incident: &Incident, since: Timestamp) -> bool {
    let Some(status) = incident.status.as_ref() else {
        return false;
    };
    matches!(status.phase, Some(Phase::Mitigating | Phase::Monitoring))
        || status
            .steps
            .iter()
            .any(|step| step.started_at.as_ref().is_some_and(|at| at.0 > since))
}

/// Decides paging for `incident` at `now` from its recorded state.
pub fn plan(incident: &Incident, policy: &EscalationPolicySpec, now: Timestamp) -> Plan {
    let recorded = incident.communication().and_then(|c| c.escalation.clone());
    let mut plan = Plan {
        state: recorded.clone(),
        pages: Vec::new(),
        problems: Vec::new(),
    };
    let status = incident.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    if phase.is_some_and(Phase::is_closed) {
        if recorded.as_ref().is_none_or(|s| s.stopped.is_none()) {
            let state = plan.state.get_or_insert_with(EscalationState::default);
            state.stopped = Some("the incident is closed".to_owned());
            state.next_at = None;
            state.acknowledgement_expires_at = None;
        }
        return plan;
    }
    if let Some(ack) = &incident.spec.acknowledged {
        // A time to come is not trusted (an acknowledgement dated 2099
        // would never expire): then the time the operator saw it counts.
        // A client's clock may run a little ahead of the operator's.
        let trusted_until = now.checked_add(CLOCK_SKEW).unwrap_or(now);
        let acked_at = ack
            .at
            .as_ref()
            .filter(|at| at.0 <= trusted_until)
            .or_else(|| status.and_then(|s| s.milestones.acknowledged_at.as_ref()))
            .map(|t| crate::k8s::whole_seconds(t.0));
        let expired = recorded
            .as_ref()
            .and_then(|s| s.expired_acknowledgement.as_ref())
            .map(|t| t.0);
        // An acknowledgement that expired holds no more; a later one does.
        let in_force = match (acked_at, expired) {
            (Some(acked), Some(expired)) => acked > expired,
            (None, Some(_)) => false,
            (_, None) => true,
        };
        if in_force {
            let expires = policy
                .acknowledgement_timeout
                .zip(acked_at)
                .filter(|(_, acked)| !progressed(incident, *acked))
                .and_then(|(timeout, acked)| {
                    Some((acked, acked.checked_add(timeout.as_std()).ok()?))
                });
            let state = plan.state.get_or_insert_with(EscalationState::default);
            match expires {
                Some((acked, at)) if at <= now => {
                    state.expired_acknowledgement = Some(Time(acked));
                    state.acknowledgement_expires_at = None;
                    state.stopped = None;
                    state.round = state.round.saturating_add(1);
                    let round = state.round;
                    page_step(&mut plan, incident, policy, (0, 0, round), now);
                    return plan;
                }
                _ => {
                    state.stopped = Some(format!("acknowledged by {}", ack.by));
                    state.next_at = None;
                    state.acknowledgement_expires_at = expires.map(|(_, at)| Time(at));
                    return plan;
                }
            }
        }
    }
    if recorded.as_ref().is_some_and(|s| s.stopped.is_some()) || phase.is_none() {
        return plan;
    }
    let steps = steps(policy, incident);
    let round = recorded.as_ref().map_or(0, |s| s.round);
    let (step, pass) = match &recorded {
        None => (0, 0),
        Some(state) if state.next_at.as_ref().is_some_and(|at| at.0 <= now) => {
            let next = state.step.saturating_add(1);
            if usize::try_from(next).is_ok_and(|n| n >= steps.len()) {
                (0, state.pass.saturating_add(1))
            } else {
                (next, state.pass)
            }
        }
        // Waiting for the current step's time to pass.
        Some(_) => return plan,
    };
    if pass >= policy.repeat {
        let state = plan.state.get_or_insert_with(EscalationState::default);
        state.stopped = Some(format!(
            "nobody acknowledged after {} pass(es) through the steps",
            policy.repeat
        ));
        state.next_at = None;
        return plan;
    }
    page_step(&mut plan, incident, policy, (step, pass, round), now);
    plan
}

/// Pages the role of step `step` in pass `pass` of round `round`, and
/// records when the next step is due.
fn page_step(
    plan: &mut Plan,
    incident: &Incident,
    policy: &EscalationPolicySpec,
    (step, pass, round): (i32, i32, i32),
    now: Timestamp,
) {
    let steps = steps(policy, incident);
    let Some(current) = usize::try_from(step).ok().and_then(|s| steps.get(s)) else {
        plan.problems
            .push("the escalation policy has no steps".into());
        return;
    };
    let wait = current
        .wait
        .map_or(incident.spec.severity.acknowledge_within(), |w| w.as_std());
    let state = plan.state.get_or_insert_with(EscalationState::default);
    state.step = step;
    state.pass = pass;
    state.next_at = now.checked_add(wait).ok().map(Time);
    match on_call(policy, &current.role, now) {
        Some(person) => match policy.people.iter().find(|p| p.name == person) {
            Some(found) => {
                state.notified.push(Paged {
                    person: person.to_owned(),
                    role: current.role.clone(),
                    step,
                    pass,
                    at: Time(now),
                });
                plan.pages.push(Page {
                    person: person.to_owned(),
                    role: current.role.clone(),
                    channel: found.channel.clone(),
                    step,
                    pass,
                    round,
                });
            }
            None => plan.problems.push(format!(
                "role {} names {person}, who is not in people",
                current.role
            )),
        },
        None => plan.problems.push(format!(
            "step {step} pages role {}, which is not defined",
            current.role
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EscalationPolicySpec {
        serde_yaml::from_str(
            r#"
people:
- {name: john, channel: pager-john}
- {name: jane, channel: pager-jane}
- {name: alice, channel: pager-alice}
- {name: charlie, channel: pager-charlie}
roles:
- {name: primary, rotation: [john, jane], handoffStart: "2026-01-05T09:00:00Z"}
- {name: secondary, rotation: [jane, john], handoffStart: "2026-01-05T09:00:00Z"}
- {name: engineering-lead, rotation: [alice]}
- {name: security-lead, rotation: [charlie]}
steps:
- {role: primary}
- {role: secondary, wait: 30m}
- {role: engineering-lead}
securitySteps:
- {role: security-lead}
repeat: 2
"#,
        )
        .unwrap()
    }

    fn incident(kind: &str, escalation: Option<&EscalationState>) -> Incident {
        let mut incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-down", "namespace": "hg"},
            "spec": {"title": "API down", "severity": "P0", "type": kind,
                     "target": {"kind": "Deployment", "name": "api"}},
            "status": {"phase": "Triggered", "milestones": {"detectedAt": "2026-01-06T10:00:00Z"}}
        }))
        .unwrap();
        let status = incident.status.as_mut().unwrap();
        status.communication = Some(crate::crd::CommunicationStatus {
            escalation: escalation.cloned(),
            ..Default::default()
        });
        incident
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn rotations_hand_off_each_turn() {
        let policy = policy();
        assert_eq!(
            on_call(&policy, "primary", at("2026-01-06T10:00:00Z")),
            Some("john")
        );
        assert_eq!(
            on_call(&policy, "primary", at("2026-01-12T09:00:00Z")),
            Some("jane")
        );
        assert_eq!(
            on_call(&policy, "primary", at("2026-01-19T09:00:00Z")),
            Some("john")
        );
        assert_eq!(
            on_call(&policy, "primary", at("2026-01-05T08:59:59Z")),
            Some("jane"),
            "before the start, counted back"
        );
        assert_eq!(on_call(&policy, "nobody", at("2026-01-06T10:00:00Z")), None);
    }

    #[test]
    fn nobody_acknowledges_so_each_step_pages_in_turn_then_it_stops() {
        let policy = policy();
        let mut state: Option<EscalationState> = None;
        let mut paged = Vec::new();
        // Walk the clock minute by minute for three hours.
        let mut now = at("2026-01-06T10:00:00Z");
        for _ in 0..180 {
            let planned = plan(&incident("ServiceOutage", state.as_ref()), &policy, now);
            assert!(planned.problems.is_empty(), "{:?}", planned.problems);
            paged.extend(
                planned
                    .pages
                    .iter()
                    .map(|p| (now.to_string(), p.person.clone(), p.key())),
            );
            state = planned.state;
            now = now.checked_add(std::time::Duration::from_secs(60)).unwrap();
        }
        let expected = [
            ("2026-01-06T10:00:00Z", "john", "Page/0/0/john"),
            // P0: the primary has 15 minutes; the secondary's step says 30.
            ("2026-01-06T10:15:00Z", "jane", "Page/0/1/jane"),
            ("2026-01-06T10:45:00Z", "alice", "Page/0/2/alice"),
            ("2026-01-06T11:00:00Z", "john", "Page/1/0/john"),
            ("2026-01-06T11:15:00Z", "jane", "Page/1/1/jane"),
            ("2026-01-06T11:45:00Z", "alice", "Page/1/2/alice"),
        ];
        let got: Vec<(&str, &str, &str)> = paged
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(got, expected);
        let state = state.unwrap();
        assert!(
            state
                .stopped
                .as_deref()
                .unwrap()
                .starts_with("nobody acknowledged after 2")
        );
        assert_eq!(state.notified.len(), 6);
    }

    #[test]
    fn an_acknowledgement_stops_paging_and_security_takes_its_own_path() {
        let policy = policy();
        let first = plan(
            &incident("SecurityIncident", None),
            &policy,
            at("2026-01-06T10:00:00Z"),
        );
        assert_eq!(first.pages[0].person, "charlie", "the security lead first");
        let mut acked = incident("SecurityIncident", first.state.as_ref());
        acked.spec.acknowledged = Some(crate::crd::Acknowledgement {
            by: "charlie".into(),
            note: None,
            at: None,
        });
        let later = plan(&acked, &policy, at("2026-01-06T11:00:00Z"));
        assert!(later.pages.is_empty());
        assert_eq!(
            later.state.unwrap().stopped.as_deref(),
            Some("acknowledged by charlie")
        );
        // Recorded state is the memory: the same moment planned twice pages once.
        let again = plan(
            &incident("ServiceOutage", first.state.as_ref()),
            &policy,
            at("2026-01-06T10:00:30Z"),
        );
        assert!(again.pages.is_empty());
    }

    #[test]
    fn a_plan_written_to_status_and_read_back_is_what_is_planned_again() {
        // A person may write the acknowledgement's time with a fraction of
        // a second; status keeps whole seconds. The plan must not differ
        // from its own record, or the notifier writes it forever.
        let mut policy = policy();
        policy.acknowledgement_timeout = Some(crate::crd::Duration::from_secs(60));
        let mut acked = incident("ServiceOutage", None);
        acked.spec.acknowledged = serde_json::from_value(
            serde_json::json!({"by": "john", "at": "2026-01-06T10:05:00.123456Z"}),
        )
        .unwrap();
        acked.status.as_mut().unwrap().phase = Some(Phase::Acknowledged);
        let now = at("2026-01-06T10:05:10Z");
        let planned = plan(&acked, &policy, now).state;
        let round_trip: Option<EscalationState> =
            serde_json::from_value(serde_json::to_value(&planned).unwrap()).unwrap();
        acked.status.as_mut().unwrap().communication = Some(crate::crd::CommunicationStatus {
            escalation: round_trip.clone(),
            ..Default::default()
        });
        assert_eq!(plan(&acked, &policy, now).state, round_trip);
    }

    #[test]
    fn an_acknowledgement_without_progress_expires_and_paging_starts_over_until_acked_again() {
        let mut policy = policy();
        policy.acknowledgement_timeout = Some(crate::crd::Duration::from_secs(30 * 60));
        let first = plan(
            &incident("ServiceOutage", None),
            &policy,
            at("2026-01-06T10:00:00Z"),
        );
        let mut acked = incident("ServiceOutage", first.state.as_ref());
        acked.spec.acknowledged = Some(crate::crd::Acknowledgement {
            by: "john".into(),
            note: None,
            at: Some(Time(at("2026-01-06T10:05:00Z"))),
        });
        acked.status.as_mut().unwrap().phase = Some(Phase::Acknowledged);
        let held = plan(&acked, &policy, at("2026-01-06T10:20:00Z"));
        assert!(held.pages.is_empty());
        let state = held.state.unwrap();
        assert_eq!(state.stopped.as_deref(), Some("acknowledged by john"));
        assert_eq!(
            state.acknowledgement_expires_at,
            Some(Time(at("2026-01-06T10:35:00Z")))
        );

        // Progress keeps the acknowledgement in force.
        let mut working = acked.clone();
        working.status.as_mut().unwrap().phase = Some(Phase::Mitigating);
        let calm = plan(&working, &policy, at("2026-01-06T11:00:00Z"));
        assert!(calm.pages.is_empty());
        assert_eq!(calm.state.unwrap().acknowledgement_expires_at, None);

        // Nothing happened in 30 minutes: the primary is paged again.
        acked.status.as_mut().unwrap().communication = Some(crate::crd::CommunicationStatus {
            escalation: Some(state),
            ..Default::default()
        });
        let expired = plan(&acked, &policy, at("2026-01-06T10:35:00Z"));
        let keys: Vec<String> = expired.pages.iter().map(Page::key).collect();
        assert_eq!(
            keys,
            ["Page/r1/0/0/john"],
            "a new round, from the first step"
        );
        let state = expired.state.unwrap();
        assert_eq!(state.stopped, None);
        assert_eq!(
            state.expired_acknowledgement,
            Some(Time(at("2026-01-06T10:05:00Z")))
        );
        // The same expired acknowledgement no longer stops paging: the next step comes.
        acked.status.as_mut().unwrap().communication = Some(crate::crd::CommunicationStatus {
            escalation: Some(state),
            ..Default::default()
        });
        let next = plan(&acked, &policy, at("2026-01-06T10:50:00Z"));
        let keys: Vec<String> = next.pages.iter().map(Page::key).collect();
        assert_eq!(keys, ["Page/r1/0/1/jane"]);
        // Acknowledged again: it holds.
        acked.status.as_mut().unwrap().communication = Some(crate::crd::CommunicationStatus {
            escalation: next.state,
            ..Default::default()
        });
        acked.spec.acknowledged.as_mut().unwrap().at = Some(Time(at("2026-01-06T10:52:00Z")));
        let again = plan(&acked, &policy, at("2026-01-06T10:53:00Z"));
        assert!(again.pages.is_empty());
        assert_eq!(
            again.state.unwrap().stopped.as_deref(),
            Some("acknowledged by john")
        );
    }

    #[test]
    fn an_acknowledgement_dated_in_the_future_expires_from_when_it_was_seen() {
        let mut policy = policy();
        policy.acknowledgement_timeout = Some(crate::crd::Duration::from_secs(30 * 60));
        let first = plan(
            &incident("ServiceOutage", None),
            &policy,
            at("2026-01-06T10:00:00Z"),
        );
        let mut acked = incident("ServiceOutage", first.state.as_ref());
        acked.spec.acknowledged = Some(crate::crd::Acknowledgement {
            by: "mallory".into(),
            note: None,
            at: Some(Time(at("2099-01-01T00:00:00Z"))),
        });
        let status = acked.status.as_mut().unwrap();
        status.phase = Some(Phase::Acknowledged);
        status.milestones.acknowledged_at = Some(Time(at("2026-01-06T10:05:00Z")));
        let held = plan(&acked, &policy, at("2026-01-06T10:20:00Z"));
        assert!(held.pages.is_empty());
        let state = held.state.unwrap();
        assert_eq!(
            state.acknowledgement_expires_at,
            Some(Time(at("2026-01-06T10:35:00Z"))),
            "from when the operator saw it, not from 2099"
        );
        acked.status.as_mut().unwrap().communication = Some(crate::crd::CommunicationStatus {
            escalation: Some(state),
            ..Default::default()
        });
        let expired = plan(&acked, &policy, at("2026-01-06T10:35:00Z"));
        let keys: Vec<String> = expired.pages.iter().map(Page::key).collect();
        assert_eq!(keys, ["Page/r1/0/0/john"], "paging starts over");

        // A responder's clock a little ahead of the operator's is trusted.
        let mut ahead = incident("ServiceOutage", first.state.as_ref());
        ahead.spec.acknowledged = Some(crate::crd::Acknowledgement {
            by: "john".into(),
            note: None,
            at: Some(Time(at("2026-01-06T10:20:30Z"))),
        });
        ahead.status.as_mut().unwrap().phase = Some(Phase::Acknowledged);
        let held = plan(&ahead, &policy, at("2026-01-06T10:20:00Z"));
        assert_eq!(
            held.state.unwrap().acknowledgement_expires_at,
            Some(Time(at("2026-01-06T10:50:30Z")))
        );
    }
}
