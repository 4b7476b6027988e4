//! What a case expects, against what happened: each failure with the
//! expected and the actual side by side, in the same shape, showing only
//! the fields the case asked about.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde::Serialize;

use super::case::{ExpectedBlock, ExpectedIncident, ExpectedMessage, ExpectedPage, ExpectedStep};
use crate::{
    crd::{Incident, NotifyEvent},
    incident::decision::REMEDIATION_BLOCKED,
};

/// One expectation that did not hold.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Failure {
    /// The case's time, as written (`5m`); none for what is checked at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What was checked: an incident, the incidents, a channel, the pages.
    pub subject: String,
    pub expected: serde_json::Value,
    pub got: serde_json::Value,
}

/// A message a channel received.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sent {
    /// Seconds since the case began.
    pub at: u64,
    pub channel: String,
    pub incident: String,
    pub event: NotifyEvent,
    /// What it said (a page: who).
    pub text: String,
}

/// Checks the incidents that exist at one time.
pub fn incidents(at: &str, expected: &[ExpectedIncident], seen: &[&Incident]) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut want: Vec<&str> = expected.iter().map(|e| e.name.as_str()).collect();
    let mut have: Vec<String> = seen.iter().map(|i| i.name_any()).collect();
    want.sort_unstable();
    have.sort();
    if want != have {
        failures.push(Failure {
            at: Some(at.to_owned()),
            subject: "incidents".into(),
            expected: serde_json::json!(want),
            got: serde_json::json!(have),
        });
    }
    for expectation in expected {
        let Some(incident) = seen.iter().find(|i| i.name_any() == expectation.name) else {
            continue;
        };
        let got = as_expected(incident, expectation);
        if !matches(expectation, &got) {
            failures.push(Failure {
                at: Some(at.to_owned()),
                subject: format!("incident {}", expectation.name),
                expected: to_json(expectation),
                got: to_json(&got),
            });
        }
    }
    failures
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The incident, described with the fields the expectation gives.
fn as_expected(incident: &Incident, expected: &ExpectedIncident) -> ExpectedIncident {
    let spec = &incident.spec;
    let status = incident.status.as_ref();
    ExpectedIncident {
        name: incident.name_any(),
        rule: expected.rule.as_ref().map(|_| {
            spec.source
                .rule
                .clone()
                .or(spec.rule.clone())
                .unwrap_or_default()
        }),
        severity: expected.severity.map(|_| spec.severity),
        incident_type: expected.incident_type.map(|_| spec.incident_type),
        phase: expected.phase.and(status.and_then(|s| s.phase)),
        blocked: expected.blocked.as_ref().map(|asked| {
            let held = status.and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == REMEDIATION_BLOCKED && c.status == "True")
            });
            let reason = held.map_or_else(|| "None".to_owned(), |c| c.reason.clone());
            match asked {
                ExpectedBlock::Reason(_) => ExpectedBlock::Reason(reason),
                ExpectedBlock::Detailed { .. } => ExpectedBlock::Detailed {
                    reason: Some(reason),
                    message: Some(held.map(|c| c.message.clone()).unwrap_or_default()),
                },
            }
        }),
        steps: expected.steps.as_ref().map(|wanted| {
            status
                .map(|s| s.steps.as_slice())
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(index, step)| {
                    let asked = wanted.get(index);
                    // A step not asked about is shown whole.
                    let shown = |field: Option<bool>| asked.is_none() || field == Some(true);
                    ExpectedStep {
                        name: shown(asked.map(|a| a.name.is_some())).then(|| step.name.clone()),
                        action: shown(asked.map(|a| a.action.is_some())).then_some(step.action),
                        result: shown(asked.map(|a| a.result.is_some())).then_some(step.result),
                        message: asked
                            .and_then(|a| a.message.as_ref())
                            .map(|_| step.message.clone().unwrap_or_default()),
                        change: asked.and_then(|a| a.change.as_ref()).map(|words| {
                            step.changes
                                .iter()
                                .find(|line| line.contains(words.as_str()))
                                .or(step.changes.first())
                                .cloned()
                                .unwrap_or_default()
                        }),
                    }
                })
                .collect()
        }),
    }
}

/// Words not asked about match anything; asked, they are in what was got.
fn contains(words: &Option<String>, got: &Option<String>) -> bool {
    words
        .as_ref()
        .is_none_or(|words| got.as_ref().is_some_and(|g| g.contains(words.as_str())))
}

/// Whether the hold is as asked: the same reason, and the words asked in
/// its message.
fn held_as_asked(asked: Option<&ExpectedBlock>, got: Option<&ExpectedBlock>) -> bool {
    match (asked, got) {
        (None, _) => true,
        (Some(ExpectedBlock::Reason(want)), Some(ExpectedBlock::Reason(have))) => want == have,
        (
            Some(ExpectedBlock::Detailed { reason, message }),
            Some(ExpectedBlock::Detailed {
                reason: have_reason,
                message: have_message,
            }),
        ) => same(reason, have_reason) && contains(message, have_message),
        _ => false,
    }
}

/// A field not asked about matches anything.
fn same<T: PartialEq>(asked: &Option<T>, got: &Option<T>) -> bool {
    asked.is_none() || asked == got
}

fn matches(expected: &ExpectedIncident, got: &ExpectedIncident) -> bool {
    same(&expected.rule, &got.rule)
        && same(&expected.severity, &got.severity)
        && same(&expected.incident_type, &got.incident_type)
        && same(&expected.phase, &got.phase)
        && held_as_asked(expected.blocked.as_ref(), got.blocked.as_ref())
        && match (&expected.steps, &got.steps) {
            (None, _) => true,
            (Some(want), Some(have)) => {
                want.len() == have.len()
                    && want.iter().zip(have).all(|(w, h)| {
                        same(&w.name, &h.name)
                            && same(&w.action, &h.action)
                            && same(&w.result, &h.result)
                            && contains(&w.message, &h.message)
                            && contains(&w.change, &h.change)
                    })
            }
            (Some(_), None) => false,
        }
}

/// Checks each channel's messages, in order, at the end of the case.
pub fn messages(expected: &BTreeMap<String, Vec<ExpectedMessage>>, sent: &[Sent]) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (channel, wanted) in expected {
        let received: Vec<&Sent> = sent.iter().filter(|s| &s.channel == channel).collect();
        let fits = wanted.len() == received.len()
            && wanted.iter().zip(&received).all(|(want, got)| match want {
                ExpectedMessage::Event(event) => *event == got.event,
                ExpectedMessage::Detailed {
                    event,
                    incident,
                    contains,
                } => {
                    *event == got.event
                        && incident.as_ref().is_none_or(|i| *i == got.incident)
                        && contains
                            .as_ref()
                            .is_none_or(|w| got.text.contains(w.as_str()))
                }
            });
        if !fits {
            let got: Vec<serde_json::Value> = received
                .iter()
                .zip(wanted.iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(got, want)| match want {
                    Some(ExpectedMessage::Detailed { .. }) => serde_json::json!({
                        "event": got.event, "incident": got.incident, "text": got.text}),
                    _ => serde_json::json!(got.event),
                })
                .collect();
            failures.push(Failure {
                at: None,
                subject: format!("messages to {channel}"),
                expected: to_json(wanted),
                got: serde_json::Value::Array(got),
            });
        }
    }
    failures
}

/// Checks who was paged, in order, at the end of the case.
pub fn pages(expected: &[ExpectedPage], sent: &[Sent]) -> Vec<Failure> {
    let paged: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.event == NotifyEvent::Paged)
        .collect();
    let fits = expected.len() == paged.len()
        && expected.iter().zip(&paged).all(|(want, got)| {
            want.person == got.text && want.incident.as_ref().is_none_or(|i| *i == got.incident)
        });
    if fits {
        return Vec::new();
    }
    let got: Vec<ExpectedPage> = paged
        .iter()
        .zip(expected.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(got, want)| ExpectedPage {
            person: got.text.clone(),
            incident: want
                .and_then(|w| w.incident.as_ref())
                .map(|_| got.incident.clone()),
        })
        .collect();
    vec![Failure {
        at: None,
        subject: "pages".into(),
        expected: to_json(&expected),
        got: to_json(&got),
    }]
}
