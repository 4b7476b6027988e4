//! How reads are printed: the human text, or the objects as JSON or YAML
//! (as `kubectl get -o` prints them: managed fields left out, a list as a
//! `List`); tables in kubectl's layout, and times as kubectl says them.

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::PluginError;
use crate::crd::Incident;

/// `-o`: what a read prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: a table, or the responder's view.
    #[default]
    Text,
    Json,
    Yaml,
}

/// One Incident as JSON or YAML (the text views are their own modules').
pub fn document(incident: &Incident, format: Format) -> Result<String, PluginError> {
    encode(
        &serde_json::to_value(without_managed_fields(incident))?,
        format,
    )
}

/// Incidents as one `List`, in the order given.
pub fn list_document(incidents: &[Incident], format: Format) -> Result<String, PluginError> {
    let items: Vec<Incident> = incidents.iter().map(without_managed_fields).collect();
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    });
    encode(&list, format)
}

fn encode(value: &serde_json::Value, format: Format) -> Result<String, PluginError> {
    Ok(match format {
        Format::Yaml => serde_yaml::to_string(value)?,
        Format::Json | Format::Text => serde_json::to_string_pretty(value)? + "\n",
    })
}

// Who wrote which field is noise at a read; kubectl hides it too.
fn without_managed_fields(incident: &Incident) -> Incident {
    let mut incident = incident.clone();
    incident.metadata.managed_fields = None;
    incident
}

/// Rows in columns as kubectl aligns them: left-aligned, three spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `at` was, as kubectl's AGE column says it (`45s`, `5m30s`,
/// `2h10m`, `3d4h`); a time in the future reads as `0s`.
pub fn age(at: Timestamp, now: Timestamp) -> String {
    short(now.as_second().saturating_sub(at.as_second()).max(0))
}

/// A deadline or a due time, seen from `now`: `in 5m`, `3m ago`.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let seconds = at.as_second().saturating_sub(now.as_second());
    if seconds >= 0 {
        format!("in {}", short(seconds))
    } else {
        format!("{} ago", short(seconds.saturating_neg()))
    }
}

// kubectl's HumanDuration: more precision while the number is small.
fn short(seconds: i64) -> String {
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{minutes}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{minutes}m"),
        s if s < 8 * 3600 => format!("{hours}h{}m", minutes % 60),
        s if s < 48 * 3600 => format!("{hours}h"),
        s if s < 8 * 86_400 => match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        },
        s if s < 2 * 365 * 86_400 => format!("{days}d"),
        _ => format!("{}y", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let now = at(0);
        let ago = |seconds: i64| age(at(-seconds), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(119), "119s");
        assert_eq!(ago(330), "5m30s");
        assert_eq!(ago(3600), "60m");
        assert_eq!(ago(4 * 3600 + 600), "4h10m");
        assert_eq!(ago(30 * 3600), "30h");
        assert_eq!(ago(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(ago(3 * 86_400), "3d");
        assert_eq!(ago(40 * 86_400), "40d");
        assert_eq!(ago(3 * 365 * 86_400), "3y");
        // A clock a little behind the API server's.
        assert_eq!(age(at(5), now), "0s");
    }

    #[test]
    fn deadlines_say_which_side_of_now_they_are() {
        assert_eq!(relative(at(300), at(0)), "in 5m0s");
        assert_eq!(relative(at(90), at(0)), "in 90s");
        assert_eq!(relative(at(0), at(0)), "in 0s");
        assert_eq!(relative(at(-900), at(0)), "15m ago");
    }

    #[test]
    fn tables_align_on_the_widest_cell() {
        let rows = vec![
            vec!["api-outage".to_owned(), "P0".to_owned(), "-".to_owned()],
            vec!["x".to_owned(), "P3".to_owned(), "scale/Failed".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "SEVERITY", "STEP"], &rows),
            "NAME         SEVERITY   STEP\n\
             api-outage   P0         -\n\
             x            P3         scale/Failed\n"
        );
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;
    use crate::plugin::fixtures::in_phase;

    #[test]
    fn documents_read_back_as_the_incident_without_managed_fields() {
        let mut incident = in_phase("shop", "api", "P1", 60, "Triggered");
        incident.metadata.managed_fields = Some(vec![Default::default()]);
        let json = document(&incident, Format::Json).unwrap();
        let back: Incident = serde_json::from_str(&json).unwrap();
        assert_eq!(back.metadata.managed_fields, None);
        assert_eq!(back.spec, incident.spec);
        assert_eq!(back.status, incident.status);
        assert!(json.contains("\"kind\": \"Incident\""), "{json}");
        let yaml = document(&incident, Format::Yaml).unwrap();
        assert!(
            yaml.starts_with("apiVersion: healing-guard.io/v1alpha1\nkind: Incident\n"),
            "{yaml}"
        );
        let back: Incident = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back.spec, incident.spec);
    }

    #[test]
    fn a_list_is_a_kubectl_list_in_the_order_given() {
        let incidents = [
            in_phase("a", "second", "P1", 60, "Triggered"),
            in_phase("a", "first", "P0", 60, "Triggered"),
        ];
        let list: serde_json::Value =
            serde_json::from_str(&list_document(&incidents, Format::Json).unwrap()).unwrap();
        assert_eq!(list["kind"], "List");
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["second", "first"]);
    }
}
