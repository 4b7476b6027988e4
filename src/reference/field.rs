//! What the reference says of one field: its type, its facts (required,
//! default, allowed values, bounds) and the messages of its CEL rules. Pure.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

use super::markdown::*;

/// A field's type as people write it: `string`, `[]object`, `map[string]string`.
pub fn type_name(field: &JSONSchemaProps) -> String {
    if field.x_kubernetes_int_or_string == Some(true) {
        return "int or string".to_owned();
    }
    let free = field.x_kubernetes_preserve_unknown_fields == Some(true);
    match field.type_.as_deref() {
        Some("array") => match single_items(field) {
            Some(items) => format!("[]{}", type_name(items)),
            None => "[]any".to_owned(),
        },
        Some("object") => match map_values(field) {
            Some(values) => format!("map[string]{}", type_name(values)),
            None if free && field.properties.is_none() => "object (any fields)".to_owned(),
            None => "object".to_owned(),
        },
        Some(scalar) => match field.format.as_deref() {
            Some(format) => format!("{scalar} ({format})"),
            None => scalar.to_owned(),
        },
        None => "any".to_owned(),
    }
}

/// What the schema says of a field besides its description: default,
/// allowed values, bounds, rules; for a list or map of plain values, of
/// each item too.
pub fn facts(field: &JSONSchemaProps) -> Vec<String> {
    let mut facts = Vec::new();
    if let Some(default) = &field.default {
        facts.push(format!("Default: {}.", value_cell(&default.0)));
    }
    facts.extend(bounds(field));
    if field.x_kubernetes_list_type.as_deref() == Some("map") {
        let keys: Vec<String> = field
            .x_kubernetes_list_map_keys
            .iter()
            .flatten()
            .map(|k| code_cell(k))
            .collect();
        facts.push(format!("A list keyed by {}.", keys.join(", ")));
    }
    if field.x_kubernetes_list_type.as_deref() == Some("set") {
        facts.push("No item twice.".to_owned());
    }
    // An object's own rules are listed in its section.
    if field.properties.as_ref().is_none_or(|p| p.is_empty()) {
        facts.extend(rules(field, true));
    }
    let plain = |inner: &JSONSchemaProps| nested("", inner).is_none();
    if let Some(items) = single_items(field).filter(|i| plain(i)) {
        let each = bounds(items)
            .into_iter()
            .chain(rules(items, true))
            .collect::<Vec<_>>();
        if !each.is_empty() {
            facts.push(format!("Each item: {}", decapitalized(&each.join(" "))));
        }
    }
    if let Some(values) = map_values(field).filter(|v| plain(v)) {
        let each = bounds(values)
            .into_iter()
            .chain(rules(values, true))
            .collect::<Vec<_>>();
        if !each.is_empty() {
            facts.push(format!("Each value: {}", decapitalized(&each.join(" "))));
        }
    }
    facts
}

/// Allowed values, lengths, ranges, sizes and pattern.
pub(super) fn bounds(field: &JSONSchemaProps) -> Vec<String> {
    let mut bounds = Vec::new();
    if let Some(values) = field.enum_.as_ref().filter(|v| !v.is_empty()) {
        let values: Vec<String> = values.iter().map(|v| value_cell(&v.0)).collect();
        bounds.push(format!("One of {}.", values.join(", ")));
    }
    if let Some(range) = range(field.min_length, field.max_length, "character") {
        bounds.push(range);
    }
    if let Some(range) = range(field.min_items, field.max_items, "item") {
        bounds.push(range);
    }
    if let Some(range) = range(field.min_properties, field.max_properties, "entry") {
        bounds.push(range);
    }
    let low = field.minimum.map(|m| {
        let word = if field.exclusive_minimum == Some(true) {
            "more than"
        } else {
            "at least"
        };
        format!("{word} {m}")
    });
    let high = field.maximum.map(|m| {
        let word = if field.exclusive_maximum == Some(true) {
            "less than"
        } else {
            "at most"
        };
        format!("{word} {m}")
    });
    match (low, high) {
        (Some(low), Some(high)) => bounds.push(format!("{} and {high}.", capitalized(&low))),
        (Some(one), None) | (None, Some(one)) => bounds.push(format!("{}.", capitalized(&one))),
        (None, None) => {}
    }
    if let Some(pattern) = &field.pattern {
        bounds.push(format!("Pattern {}.", code_cell(pattern)));
    }
    bounds
}

/// "1 to 40 characters", "at most 20 items".
pub(super) fn range(min: Option<i64>, max: Option<i64>, unit: &str) -> Option<String> {
    let plural = |n: i64| {
        if n == 1 {
            unit.to_owned()
        } else if let Some(stem) = unit.strip_suffix('y') {
            format!("{stem}ies")
        } else {
            format!("{unit}s")
        }
    };
    match (min.filter(|m| *m > 0), max) {
        (Some(min), Some(max)) if min == max => Some(format!("Exactly {max} {}.", plural(max))),
        (Some(min), Some(max)) => Some(format!("{min} to {max} {}.", plural(max))),
        (Some(min), None) => Some(format!("At least {min} {}.", plural(min))),
        (None, Some(max)) => Some(format!("At most {max} {}.", plural(max))),
        (None, None) => None,
    }
}

/// How text is made safe where it goes: a table cell, or a list.
type Escape = fn(&str) -> String;

/// The CEL rules of a schema node: the message the API server answers,
/// and the rule; escaped for a table cell or for a list.
pub(super) fn rules(node: &JSONSchemaProps, in_table: bool) -> Vec<String> {
    let (text, code): (Escape, Escape) = if in_table {
        (cell, code_cell)
    } else {
        (line, code)
    };
    node.x_kubernetes_validations
        .iter()
        .flatten()
        .map(|rule| {
            let says = match (&rule.message, &rule.message_expression) {
                (Some(message), _) => text(message),
                (None, Some(expression)) => format!("the message of {}", code(expression)),
                (None, None) => "refused".to_owned(),
            };
            let field = rule
                .field_path
                .as_deref()
                .map(|p| format!(" (at {})", code(p)))
                .unwrap_or_default();
            let rule = code(&rule.rule);
            if in_table {
                format!("Rule: {says}{field}: {rule}.")
            } else {
                format!("{says}{field}: {rule}.")
            }
        })
        .collect()
}

/// The object a field holds, through lists and maps, with its path:
/// `spec.rules` holds the objects `spec.rules[]`.
pub(super) fn nested<'a>(
    path: &str,
    field: &'a JSONSchemaProps,
) -> Option<(String, &'a JSONSchemaProps)> {
    if field.properties.as_ref().is_some_and(|p| !p.is_empty()) {
        return Some((path.to_owned(), field));
    }
    if let Some(items) = single_items(field) {
        return nested(&format!("{path}[]"), items);
    }
    if let Some(values) = map_values(field) {
        return nested(&format!("{path}.*"), values);
    }
    None
}

pub(super) fn single_items(field: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match field.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(items) => Some(items),
        JSONSchemaPropsOrArray::Schemas(_) => None,
    }
}

pub(super) fn map_values(field: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match field.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(values) => Some(values),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}
