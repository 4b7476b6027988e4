//! A generic webhook's body shaped by its channel (`templates.body`), for
//! receivers that expect their own JSON: rendered like the messages, with
//! the message itself among the fields, and refused unless it reads as
//! JSON, so a receiver never gets half a document.

use serde::Serialize;
use serde_json::Value;

use super::templates::{self, Fields, TemplateError};

/// What a body template can say: the messages' fields, and the message.
#[derive(Serialize)]
struct BodyFields<'a> {
    #[serde(flatten)]
    fields: &'a Fields,
    /// The message, rendered from the channel's template for the moment.
    text: &'a str,
    /// The message's key (`Opened`, `Update/3`), unique per channel.
    key: &'a str,
    /// The Incident's uid.
    uid: &'a str,
}

/// Why a body template gave no body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Render(#[from] TemplateError),
    #[error(
        "template body does not render JSON ({source}); each {{{{ value }}}} is written as JSON (a string with its quotes): do not quote it again, join text with `~`"
    )]
    NotJson {
        #[source]
        source: serde_json::Error,
    },
}

/// The body `source` renders for one message.
pub fn render(
    source: &str,
    fields: &Fields,
    text: &str,
    key: &str,
    uid: &str,
) -> Result<Value, BodyError> {
    let context = BodyFields {
        fields,
        text,
        key,
        uid,
    };
    let rendered = templates::render_escaped("body", source, &context, templates::Escape::Json)?;
    serde_json::from_str(&rendered).map_err(|source| BodyError::NotJson { source })
}

/// Whether `source` renders JSON for a typical message (a channel's
/// readiness); a message whose text breaks it is still refused when sent.
pub fn check(source: &str) -> Result<(), BodyError> {
    let example = Fields::example();
    let text = "🚨 INCIDENT ALERT - P0\nTitle: \"quoted\" and \\ escaped";
    render(source, &example, text, "Opened", "0f0e-uid").map(drop)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SHAPED: &str = r#"{"summary": {{ severity ~ " " ~ title }},
 "body": {{ text | tojson }}, "ref": {{ uid ~ "/" ~ key }},
 "labels": {"namespace": {{ namespace }}, "event": {{ event }}}}"#;

    #[test]
    fn a_body_template_renders_the_receivers_json() {
        let fields = Fields::example();
        let body = render(SHAPED, &fields, "line one\n\"two\"", "Update/3", "u-1").unwrap();
        assert_eq!(
            body,
            json!({
                "summary": "P0 healing-guard API is down",
                "body": "line one\n\"two\"",
                "ref": "u-1/Update/3",
                "labels": {"namespace": "healing-guard", "event": "Opened"}
            })
        );
        assert!(check(SHAPED).is_ok());
    }

    #[test]
    fn text_from_an_incident_cannot_add_fields_to_the_body() {
        let mut fields = Fields::example();
        fields.title = r#"x", "approved": true, "y": "z"#.into();
        let body = render(SHAPED, &fields, "t", "Opened", "u-1").unwrap();
        assert_eq!(body["summary"], format!("P0 {}", fields.title));
        assert!(body.get("approved").is_none(), "{body}");
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_with_the_reason() {
        // A value quoted again is a string ending where its own begins.
        let careless = r#"{"text": "{{ text }}"}"#;
        let error = check(careless).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("template body does not render JSON"),
            "{error}"
        );
        let undefined = check(r#"{"x": "{{ nothing }}"}"#).unwrap_err();
        assert!(
            undefined.to_string().contains("template body"),
            "{undefined}"
        );
    }
}
