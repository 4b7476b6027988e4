//! How messages read: the runbook's communication templates ("Initial
//! Incident Notification", "Status Updates", "Resolution Notification") are
//! the defaults, rendered with minijinja; a channel may replace any of them.
//! Rendering is bounded (fuel, and the length of what comes out), so a
//! template cannot hang or bloat the operator; the environment is the one
//! every template shares (`placeholders::environment`).

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::crd::{Incident, NotifyEvent, Phase, Templates};

/// The runbook's "Initial Incident Notification".
pub const OPENED: &str = "🚨 INCIDENT ALERT - {{ severity }}
Title: {{ title }}
Impact: {{ impact }}
Status: {{ status }}
ETA: {{ eta }}
Updates: {% if update_every %}Will update every {{ update_every }}{% else %}On each change{% endif %}
Incident Commander: {{ commander }}{% if gitops %}
GitOps: {{ gitops }}{% endif %}";

/// The runbook's "Status Updates".
pub const UPDATE: &str = "📊 INCIDENT UPDATE - {{ severity }}
Status: {{ status }}
Progress: {{ progress }}
Next Steps: {{ next_steps }}
ETA: {{ eta }}
Time to next update: {{ next_update }}{% if gitops %}
GitOps: {{ gitops }}{% endif %}";

/// The runbook's "Resolution Notification".
pub const RESOLVED: &str = "✅ INCIDENT RESOLVED - {{ severity }}
Resolution: {{ resolution }}
Root Cause: {{ root_cause }}
Prevention: {{ prevention }}
Duration: {{ duration }}
Post-Mortem: {{ report }}{% if gitops %}
GitOps: {{ gitops }}{% endif %}";

/// The longest message; longer ones are cut.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// What a template can say: the runbook's fields, filled from the incident.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fields {
    /// The Incident's name: the incident id.
    pub id: String,
    pub namespace: String,
    pub event: String,
    pub severity: String,
    pub incident_type: String,
    pub title: String,
    pub target: String,
    /// What is known of the impact (the description), or the title.
    pub impact: String,
    /// The runbook's status words: Investigating, Identified, Resolving, Resolved.
    pub status: String,
    /// The operator's phase.
    pub phase: String,
    /// The resolve deadline.
    pub eta: String,
    pub update_every: Option<String>,
    pub next_update: String,
    pub commander: String,
    /// What has been done: the applied steps, in order.
    pub progress: String,
    pub next_steps: String,
    pub resolution: String,
    pub root_cause: String,
    pub prevention: String,
    pub duration: String,
    pub report: String,
    /// Where the release came from when the target is reconciled from
    /// Git: the GitOps object, its source, the bad revision, the commits
    /// to revert, and whether the sync is held; empty otherwise.
    pub gitops: String,
}

impl Fields {
    /// Every field filled, as a channel's templates are checked against.
    pub fn example() -> Fields {
        let text = |value: &str| value.to_owned();
        Fields {
            id: text("api-outage"),
            namespace: text("healing-guard"),
            event: text("Opened"),
            severity: text("P0"),
            incident_type: text("ServiceOutage"),
            title: text("healing-guard API is down"),
            target: text("Deployment/healing-guard"),
            impact: text("every request answers 503"),
            status: text("Investigating"),
            phase: text("Triggered"),
            eta: text("2026-01-01T04:00:00Z"),
            update_every: Some(text("15 minutes")),
            next_update: text("2026-01-01T00:15:00Z"),
            commander: text("jane"),
            progress: text("rollback applied"),
            next_steps: text("verifying recovery"),
            resolution: text("rolled back"),
            root_cause: text("a bad release"),
            prevention: text("a smoke test in CI"),
            duration: text("42m"),
            report: text("ConfigMap api-outage-report"),
            gitops: text(
                "Kustomization flux-system/apps suspended; bad revision main@sha1:bbbb; revert aaaa..bbbb",
            ),
        }
    }
}

/// The runbook's status word for a phase.
pub fn status_word(phase: Option<Phase>) -> &'static str {
    match phase {
        None | Some(Phase::Triggered | Phase::Acknowledged) => "Investigating",
        Some(Phase::Mitigating | Phase::Escalated) => "Identified",
        Some(Phase::Monitoring) => "Resolving",
        Some(Phase::Resolved | Phase::Declined) => "Resolved",
    }
}

/// The fields of `incident` for a message about `event` at `now`.
pub fn fields(
    incident: &Incident,
    event: NotifyEvent,
    update_every: Option<std::time::Duration>,
    next_update: Option<Timestamp>,
    now: Timestamp,
) -> Fields {
    let spec = &incident.spec;
    let status = incident.status.clone().unwrap_or_default();
    let applied: Vec<String> = status
        .steps
        .iter()
        .filter(|s| !s.changes.is_empty())
        .map(|s| format!("{} ({}): {}", s.name, s.result, s.changes.join("; ")))
        .collect();
    let opened = status.milestones.detected_at.as_ref().map(|t| t.0);
    let ended = status.milestones.resolved_at.as_ref().map_or(now, |t| t.0);
    let duration = opened
        .map(|o| std::time::Duration::try_from(ended.duration_since(o)).unwrap_or_default())
        .map(crate::crd::duration::spoken)
        .unwrap_or_default();
    let next_steps = match status.phase {
        Some(Phase::Escalated) => "automatic remediation is exhausted; a human must act".to_owned(),
        Some(Phase::Monitoring) => "verifying that the recovery holds".to_owned(),
        Some(Phase::Mitigating) => "applying the next remediation step".to_owned(),
        Some(Phase::Resolved | Phase::Declined) => "none".to_owned(),
        _ => "classifying and choosing the first remediation step".to_owned(),
    };
    let resolution = spec.resolution.as_ref();
    let gitops = gitops_line(&status);
    let held = status.sync_holds.last().filter(|h| h.is_held());
    let next_steps = match held {
        Some(hold) if !matches!(status.phase, Some(Phase::Resolved | Phase::Declined)) => format!(
            "{} stays suspended until Git moves past the bad revision: fix or revert it in Git",
            hold.owner
        ),
        _ => next_steps,
    };
    Fields {
        id: kube::ResourceExt::name_any(incident),
        namespace: incident.metadata.namespace.clone().unwrap_or_default(),
        event: event.to_string(),
        severity: spec.severity.to_string(),
        incident_type: spec.incident_type.to_string(),
        title: spec.title.clone(),
        target: spec.target.to_string(),
        impact: spec
            .description
            .clone()
            .unwrap_or_else(|| spec.title.clone()),
        status: status_word(status.phase).to_owned(),
        phase: status.phase.map(|p| p.to_string()).unwrap_or_default(),
        eta: status
            .sla
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |sla| sla.resolve_by.0.to_string()),
        update_every: update_every.map(crate::crd::duration::spoken),
        next_update: next_update.map_or_else(|| "on the next change".to_owned(), |t| t.to_string()),
        commander: spec
            .acknowledged
            .as_ref()
            .map_or_else(|| "unassigned".to_owned(), |a| a.by.clone()),
        progress: if applied.is_empty() {
            "no remediation step applied yet".to_owned()
        } else {
            applied.join(" | ")
        },
        next_steps,
        resolution: resolution.map_or_else(
            || {
                applied
                    .last()
                    .cloned()
                    .unwrap_or_else(|| "recovered".to_owned())
            },
            |r| r.summary.clone(),
        ),
        root_cause: resolution.map_or_else(
            || "under investigation".to_owned(),
            |r| r.root_cause.clone(),
        ),
        prevention: resolution
            .map(|r| r.follow_ups.join("; "))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "to be decided in the post-mortem".to_owned()),
        duration,
        report: incident
            .communication()
            .and_then(|c| c.report.clone())
            .map_or_else(|| "to follow".to_owned(), |r| format!("ConfigMap {r}")),
        gitops,
    }
}

/// The GitOps line of a message: the latest hold (what to revert, and how
/// it stands), else what the evidence says reconciles the target.
pub fn gitops_line(status: &crate::crd::IncidentStatus) -> String {
    if let Some(hold) = status.sync_holds.last() {
        let standing = if hold.is_held() {
            format!("{} is suspended by this incident", hold.owner)
        } else if let Some(at) = &hold.verified_at {
            format!(
                "{} resumed ({}); the release at {} verified at {}",
                hold.owner,
                hold.resumed_because.as_deref().unwrap_or_default(),
                hold.release.as_deref().unwrap_or("its latest revision"),
                at.0
            )
        } else {
            format!(
                "{} resumed ({})",
                hold.owner,
                hold.resumed_because.as_deref().unwrap_or_default()
            )
        };
        return format!("{}; {standing}", crate::gitops::hold::what_to_revert(hold));
    }
    let Some(evidence) = &status.evidence else {
        return String::new();
    };
    match (&evidence.gitops, &evidence.gitops_revision) {
        (Some(owner), Some(revision)) => {
            format!("reconciled from Git by {owner}, at revision {revision}")
        }
        (Some(owner), None) => format!("reconciled from Git by {owner}"),
        _ => String::new(),
    }
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {source}")]
pub struct TemplateError {
    name: &'static str,
    #[source]
    source: minijinja::Error,
}

/// A channel's own templates completed from its ConfigMap's `data` (keys
/// `opened`, `update`, `resolved`, `body`): inline text wins.
pub fn with_config_map(
    own: &Templates,
    data: &std::collections::BTreeMap<String, String>,
) -> Templates {
    let from_map = |key: &str| data.get(key).cloned();
    Templates {
        opened: own.opened.clone().or_else(|| from_map("opened")),
        update: own.update.clone().or_else(|| from_map("update")),
        resolved: own.resolved.clone().or_else(|| from_map("resolved")),
        body: own.body.clone().or_else(|| from_map("body")),
        config_map: own.config_map.clone(),
    }
}

/// Which template a moment uses: the first message, the last, or an update.
pub fn template_for(event: NotifyEvent, templates: &Templates) -> (&'static str, String) {
    match event {
        NotifyEvent::Opened | NotifyEvent::Paged => (
            "opened",
            templates
                .opened
                .clone()
                .unwrap_or_else(|| OPENED.to_owned()),
        ),
        NotifyEvent::Resolved => (
            "resolved",
            templates
                .resolved
                .clone()
                .unwrap_or_else(|| RESOLVED.to_owned()),
        ),
        _ => (
            "update",
            templates
                .update
                .clone()
                .unwrap_or_else(|| UPDATE.to_owned()),
        ),
    }
}

/// How the values a template shows are escaped for the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As they are (plain text, JSON strings, email).
    None,
    /// Slack's control characters `&`, `<`, `>` as entities, so that text
    /// from an Incident or a pod (`<!channel>`, `<https://x|click>`) reads
    /// as written and never pings or links. The template's own text (a
    /// link its author wrote) and values marked `|safe` are kept.
    Slack,
    /// Each value as a JSON value (a string quoted and escaped), so text
    /// from an Incident cannot end a string and add fields of its own.
    Json,
}

/// `text` with Slack's control characters escaped, as Slack asks:
/// <https://api.slack.com/reference/surfaces/formatting#escaping>.
pub fn slack_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Renders the template for `fields.event` (or any fields a template of
/// the channel's is given), bounded in work and length.
pub fn render(
    name: &'static str,
    source: &str,
    fields: &impl Serialize,
) -> Result<String, TemplateError> {
    render_escaped(name, source, fields, Escape::None)
}

/// [`render`], with the values it shows escaped for the receiver.
pub fn render_escaped(
    name: &'static str,
    source: &str,
    fields: &impl Serialize,
    escape: Escape,
) -> Result<String, TemplateError> {
    let error = |source| TemplateError { name, source };
    let mut env = crate::placeholders::environment();
    if escape == Escape::Json {
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Json);
    }
    if escape == Escape::Slack {
        env.set_formatter(|out, _state, value| {
            let shown = if value.is_safe() {
                value.to_string()
            } else {
                slack_escaped(&value.to_string())
            };
            out.write_str(&shown)?;
            Ok(())
        });
    }
    let template = env.template_from_str(source).map_err(error)?;
    let mut text = template
        .render(minijinja::value::Serde(fields))
        .map_err(error)?;
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(status: serde_json::Value, extra: serde_json::Value) -> Incident {
        let mut spec = serde_json::json!({
            "title": "healing-guard API is down", "severity": "P0", "type": "ServiceOutage",
            "target": {"kind": "Deployment", "name": "healing-guard"},
            "description": "every request answers 503"
        });
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
            "metadata": {"name": "api-outage", "namespace": "healing-guard"},
            "spec": spec, "status": status
        }))
        .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn slack_sees_the_values_as_written_and_the_templates_own_links_as_links() {
        let mut fields = Fields::example();
        fields.title = "<!channel> API down & <https://evil.example|click here>".into();
        let source = "{{ title }} <https://runbook.example|Runbook> {{ title|safe }}";
        let slack = render_escaped("opened", source, &fields, Escape::Slack).unwrap();
        assert_eq!(
            slack,
            "&lt;!channel&gt; API down &amp; &lt;https://evil.example|click here&gt; \
             <https://runbook.example|Runbook> \
             <!channel> API down & <https://evil.example|click here>"
        );
        // Other receivers get the text as it is.
        let plain = render("opened", "{{ title }}", &fields).unwrap();
        assert_eq!(plain, fields.title);
    }

    #[test]
    fn inline_templates_win_over_the_config_maps() {
        let own = Templates {
            opened: Some("inline".into()),
            config_map: Some("texts".into()),
            ..Templates::default()
        };
        let data = std::collections::BTreeMap::from([
            ("opened".to_owned(), "from the map".to_owned()),
            ("resolved".to_owned(), "over".to_owned()),
        ]);
        let merged = with_config_map(&own, &data);
        assert_eq!(merged.opened.as_deref(), Some("inline"));
        assert_eq!(merged.update, None);
        assert_eq!(merged.resolved.as_deref(), Some("over"));
        assert_eq!(merged.config_map.as_deref(), Some("texts"));
    }

    const FIFTEEN: std::time::Duration = std::time::Duration::from_secs(900);

    fn golden(name: &str, rendered: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(
            rendered, expected,
            "{name} changed; UPDATE_GOLDEN=1 rewrites it"
        );
    }

    #[test]
    fn the_runbooks_templates_render_as_the_runbook_shows_them() {
        let open = incident(
            serde_json::json!({"phase": "Acknowledged",
                "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:04:00Z"},
                "sla": {"acknowledgeBy": "2026-01-01T00:15:00Z", "resolveBy": "2026-01-01T04:00:00Z"}}),
            serde_json::json!({"acknowledged": {"by": "jane"}}),
        );
        let now = at("2026-01-01T00:05:00Z");
        let next = at("2026-01-01T00:15:00Z");
        let opened = fields(&open, NotifyEvent::Opened, Some(FIFTEEN), Some(next), now);
        golden("opened.txt", &render("opened", OPENED, &opened).unwrap());

        let mitigating = incident(
            serde_json::json!({"phase": "Monitoring",
                "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "acknowledgedAt": "2026-01-01T00:04:00Z"},
                "sla": {"acknowledgeBy": "2026-01-01T00:15:00Z", "resolveBy": "2026-01-01T04:00:00Z"},
                "steps": [{"id": "s-0", "name": "rollback", "action": "rollback", "attempt": 1,
                           "result": "Verifying", "startedAt": "2026-01-01T00:06:00Z",
                           "changes": ["Deployment/healing-guard rolled back from revision 2 to revision 1"]}]}),
            serde_json::json!({"acknowledged": {"by": "jane"}}),
        );
        let update = fields(
            &mitigating,
            NotifyEvent::Update,
            Some(FIFTEEN),
            Some(next),
            now,
        );
        golden("update.txt", &render("update", UPDATE, &update).unwrap());

        let resolved = incident(
            serde_json::json!({"phase": "Resolved",
                "milestones": {"detectedAt": "2026-01-01T00:00:00Z", "resolvedAt": "2026-01-01T01:05:00Z"},
                "communication": {"report": "api-outage-report"}}),
            serde_json::json!({"resolution": {"by": "jane", "rootCause": "the 1.4.2 release broke start-up",
                "summary": "rolled back to 1.4.1", "followUps": ["a start-up smoke test in CI", "canary releases"]}}),
        );
        let done = fields(&resolved, NotifyEvent::Resolved, None, None, now);
        golden(
            "resolved.txt",
            &render("resolved", RESOLVED, &done).unwrap(),
        );
    }

    #[test]
    fn a_template_is_bounded_and_its_mistakes_are_errors() {
        let open = incident(
            serde_json::json!({"phase": "Triggered"}),
            serde_json::json!({}),
        );
        let fields = fields(
            &open,
            NotifyEvent::Opened,
            None,
            None,
            at("2026-01-01T00:00:00Z"),
        );
        let endless =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(render("opened", endless, &fields).is_err(), "out of fuel");
        let unknown = render("opened", "{{ no_such_field }}", &fields).unwrap_err();
        assert!(unknown.to_string().contains("template opened"), "{unknown}");
        let long = render(
            "opened",
            "{% for i in range(20000) %}ab{% endfor %}",
            &fields,
        );
        assert!(long.is_err() || long.unwrap().len() <= MAX_MESSAGE);
        assert_eq!(
            render(
                "opened",
                "{{ severity }} {{ target }}: {{ status }}",
                &fields
            )
            .unwrap(),
            "P0 Deployment/healing-guard: Investigating"
        );
    }
}
