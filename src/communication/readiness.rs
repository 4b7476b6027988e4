//! Whether a channel can send and an escalation policy can page, checked
//! before an incident needs them: a channel's Secret has the keys its kind
//! needs and its templates render; a policy's people, roles and steps refer
//! to what exists. Pure: the controller reads the Secret, the ConfigMap and
//! the watched channels, and reports what this finds as `Ready`.

use std::collections::BTreeSet;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{escalation, templates, webhook_body};
use crate::crd::{ChannelKind, EscalationPolicySpec, NotificationChannelSpec, OnCall, Templates};

/// The Secret keys a kind of channel cannot send without.
pub fn needed_keys(kind: ChannelKind) -> &'static [&'static str] {
    match kind {
        ChannelKind::Slack | ChannelKind::Webhook => &["url"],
        ChannelKind::PagerDuty => &["routingKey"],
        ChannelKind::StatusPage => &["apiKey", "pageId"],
        ChannelKind::Email => &["host"],
        ChannelKind::Teams => &["url"],
        ChannelKind::Opsgenie => &["apiKey"],
    }
}

/// What was found of a channel's Secret (its keys only: values are never
/// looked at here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSeen {
    Keys(BTreeSet<String>),
    Missing,
    Unreadable(String),
}

/// What keeps `channel` from sending, if anything. `templates` are the
/// channel's own merged with its ConfigMap's, or why the ConfigMap could
/// not be read.
pub fn channel_problems(
    channel: &NotificationChannelSpec,
    secret: &SecretSeen,
    templates: &Result<Templates, impl std::fmt::Display>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let name = &channel.secret_ref.name;
    match secret {
        SecretSeen::Missing => problems.push(format!("Secret {name} not found")),
        SecretSeen::Unreadable(why) => problems.push(format!("Secret {name}: {why}")),
        SecretSeen::Keys(keys) => {
            // Slack with a bot token posts with chat.postMessage instead
            // of an incoming webhook.
            let needed: &[&str] = if channel.kind == ChannelKind::Slack && keys.contains("token") {
                &["token", "channel"]
            } else {
                needed_keys(channel.kind)
            };
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|key| !keys.contains(*key))
                .collect();
            if !missing.is_empty() {
                let article = match channel.kind {
                    ChannelKind::Email | ChannelKind::Opsgenie => "an",
                    _ => "a",
                };
                problems.push(format!(
                    "Secret {name} has no key {} ({article} {} channel needs it)",
                    missing.join(", "),
                    channel.kind
                ));
            }
        }
    }
    if channel.kind == ChannelKind::Email {
        match &channel.email {
            None => problems.push("an Email channel needs email.from and email.to".into()),
            Some(email) => {
                let addresses = std::iter::once(("email.from", &email.from))
                    .chain(email.to.iter().map(|to| ("email.to", to)));
                for (field, address) in addresses {
                    if let Err(error) = address.parse::<lettre::message::Mailbox>() {
                        problems.push(format!("{field} {address:?}: {error}"));
                    }
                }
            }
        }
    }
    match templates {
        Err(why) => problems.push(why.to_string()),
        Ok(templates) => {
            let example = templates::Fields::example();
            let chosen = [
                ("opened", &templates.opened),
                ("update", &templates.update),
                ("resolved", &templates.resolved),
            ];
            for (name, source) in chosen {
                if let Some(source) = source
                    && let Err(error) = templates::render(name, source, &example)
                {
                    problems.push(error.to_string());
                }
            }
            if let Some(source) = &templates.body
                && let Err(error) = webhook_body::check(source)
            {
                problems.push(error.to_string());
            }
        }
    }
    let links = channel.teams.iter().flat_map(|teams| &teams.links);
    for link in links {
        if let Err(error) =
            templates::render("teams.links", &link.url, &templates::Fields::example())
        {
            problems.push(format!("link {:?}: {error}", link.title));
        }
    }
    problems
}

/// What keeps `policy` from paging anyone, if anything. `channel_exists`
/// says whether a NotificationChannel of that name is in its namespace.
pub fn escalation_problems(
    policy: &EscalationPolicySpec,
    channel_exists: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut people = BTreeSet::new();
    for person in &policy.people {
        if !people.insert(person.name.as_str()) {
            problems.push(format!("people: {} is listed twice", person.name));
        }
        if !channel_exists(&person.channel) {
            problems.push(format!(
                "people: {}'s channel {} does not exist",
                person.name, person.channel
            ));
        }
    }
    let mut roles = BTreeSet::new();
    for role in &policy.roles {
        if !roles.insert(role.name.as_str()) {
            problems.push(format!("roles: {} is defined twice", role.name));
        }
        for member in &role.rotation {
            if !people.contains(member.as_str()) {
                problems.push(format!(
                    "roles: {}'s rotation names {member}, who is not in people",
                    role.name
                ));
            }
        }
    }
    let steps = policy
        .steps
        .iter()
        .map(|s| ("steps", s))
        .chain(policy.security_steps.iter().map(|s| ("securitySteps", s)));
    for (field, step) in steps {
        if !roles.contains(step.role.as_str()) {
            problems.push(format!("{field}: role {} is not defined", step.role));
        }
    }
    problems
}

/// Who holds each role at `now`, and until when.
pub fn on_call_now(policy: &EscalationPolicySpec, now: Timestamp) -> Vec<OnCall> {
    policy
        .roles
        .iter()
        .filter_map(|role| {
            let (person, until) = escalation::holder(policy, &role.name, now)?;
            Some(OnCall {
                role: role.name.clone(),
                person: person.to_owned(),
                until: Some(Time(until)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> SecretSeen {
        SecretSeen::Keys(names.iter().map(|k| (*k).to_owned()).collect())
    }

    #[test]
    fn a_channel_is_ready_when_its_secret_has_its_keys_and_its_templates_render() {
        let slack: NotificationChannelSpec =
            serde_yaml::from_str("kind: Slack\nsecretRef: {name: slack}\n").unwrap();
        let none: Result<_, String> = Ok(Templates::default());
        assert!(channel_problems(&slack, &keys(&["url"]), &none).is_empty());
        assert_eq!(
            channel_problems(&slack, &SecretSeen::Missing, &none),
            ["Secret slack not found"]
        );
        let page: NotificationChannelSpec =
            serde_yaml::from_str("kind: StatusPage\nsecretRef: {name: sp}\n").unwrap();
        assert_eq!(
            channel_problems(&page, &keys(&["apiKey"]), &none),
            ["Secret sp has no key pageId (a StatusPage channel needs it)"]
        );
        let broken: Result<_, String> = Ok(Templates {
            update: Some("{{ no_such_field }}".into()),
            resolved: Some("{% if %}".into()),
            ..Templates::default()
        });
        let problems = channel_problems(&slack, &keys(&["url"]), &broken);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("template update"), "{problems:?}");
        assert!(problems[1].contains("template resolved"), "{problems:?}");
        let gone = Err("ConfigMap texts (templates) not found".to_owned());
        assert_eq!(
            channel_problems(&slack, &keys(&["url"]), &gone),
            ["ConfigMap texts (templates) not found"]
        );
        let email: NotificationChannelSpec = serde_yaml::from_str(
            "kind: Email\nsecretRef: {name: smtp}\nemail: {from: 'oncall@example.com', to: ['not an address']}\n",
        )
        .unwrap();
        let problems = channel_problems(&email, &keys(&["host"]), &none);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("email.to \"not an address\""));
    }

    #[test]
    fn teams_opsgenie_and_a_shaped_webhook_say_what_they_lack() {
        let none: Result<_, String> = Ok(Templates::default());
        let opsgenie: NotificationChannelSpec =
            serde_yaml::from_str("kind: Opsgenie\nsecretRef: {name: og}\n").unwrap();
        assert_eq!(
            channel_problems(&opsgenie, &keys(&["url"]), &none),
            ["Secret og has no key apiKey (an Opsgenie channel needs it)"]
        );
        assert!(channel_problems(&opsgenie, &keys(&["apiKey"]), &none).is_empty());
        let teams: NotificationChannelSpec = serde_yaml::from_str(
            "kind: Teams\nsecretRef: {name: teams}\nteams: {links: [{title: Logs, url: 'https://logs/{{ nope }}'}]}\n",
        )
        .unwrap();
        let problems = channel_problems(&teams, &keys(&[]), &none);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[0],
            "Secret teams has no key url (a Teams channel needs it)"
        );
        assert!(problems[1].starts_with("link \"Logs\": template teams.links"));
        let webhook: NotificationChannelSpec =
            serde_yaml::from_str("kind: Webhook\nsecretRef: {name: hook}\n").unwrap();
        let unquoted: Result<_, String> = Ok(Templates {
            body: Some(r#"{"text": "{{ text }}"}"#.into()),
            ..Templates::default()
        });
        let problems = channel_problems(&webhook, &keys(&["url", "signingKey"]), &unquoted);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("template body does not render JSON"));
    }

    #[test]
    fn an_escalation_policy_names_only_what_exists() {
        let policy: EscalationPolicySpec = serde_yaml::from_str(
            r#"
people:
- {name: john, channel: pager-john}
- {name: jane, channel: pager-gone}
roles:
- {name: primary, rotation: [john, bob]}
steps:
- {role: primary}
- {role: secondary}
securitySteps:
- {role: security-lead}
"#,
        )
        .unwrap();
        let problems = escalation_problems(&policy, |name| name == "pager-john");
        assert_eq!(
            problems,
            [
                "people: jane's channel pager-gone does not exist",
                "roles: primary's rotation names bob, who is not in people",
                "steps: role secondary is not defined",
                "securitySteps: role security-lead is not defined",
            ]
        );
        let now: Timestamp = "2026-01-03T00:00:00Z".parse().unwrap();
        let on_call = on_call_now(&policy, now);
        assert_eq!(on_call.len(), 1);
        assert_eq!(on_call[0].person, "john");
        assert_eq!(
            on_call[0].until,
            Some(Time("2026-01-05T00:00:00Z".parse().unwrap())),
            "weekly turns hand off on Mondays"
        );
    }
}
