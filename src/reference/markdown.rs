//! Markdown as the reference writes it: code spans, table cells, prose
//! lines, and heading anchors as GitHub makes them. Pure.

use std::collections::BTreeMap;

pub(super) fn decapitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub(super) fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A value as Markdown code: strings bare, the rest as compact JSON.
pub(super) fn value_cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => code_cell(s),
        other => code_cell(&other.to_string()),
    }
}

/// Inline code: fenced with two backticks when the text holds one.
pub(super) fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// Inline code in a table cell, where `|` must be escaped even in code.
pub(super) fn code_cell(text: &str) -> String {
    code(text).replace('|', "\\|")
}

/// A description as a paragraph: angle brackets outside code are shown,
/// not taken for HTML.
pub(super) fn prose(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                part.to_owned()
            } else {
                part.replace('<', "&lt;").replace('>', "&gt;")
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// A description on one line, as in a list item.
pub(super) fn line(text: &str) -> String {
    prose(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A description in a table cell: one line, paragraphs kept apart, `|`
/// escaped.
pub(super) fn cell(text: &str) -> String {
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(line)
        .filter(|p| !p.is_empty())
        .collect();
    paragraphs.join("<br><br>").replace('|', "\\|")
}

/// Heading anchors as GitHub makes them: lower case, punctuation dropped,
/// spaces as hyphens, a repeat numbered.
#[derive(Default)]
pub struct Slugger {
    seen: BTreeMap<String, usize>,
}

impl Slugger {
    /// The anchor of the next heading with this text.
    pub fn slug(&mut self, heading: &str) -> String {
        let base: String = heading
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c),
                _ => None,
            })
            .collect();
        let count = self.seen.entry(base.clone()).or_insert(0);
        let slug = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        slug
    }
}
