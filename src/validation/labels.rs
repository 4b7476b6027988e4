//! Label keys, values and selectors as the API server reads them, so a
//! selector it would refuse is reported with its field instead of failing
//! every list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Problems;

const MAX_NAME: usize = 63;
const MAX_PREFIX: usize = 253;

fn is_name_part(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= MAX_PREFIX
        && text.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && bytes.len() <= MAX_NAME
                && bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

/// Whether `key` is a valid label key: `[prefix/]name`, the prefix a DNS
/// subdomain, the name up to 63 alphanumerics, `-`, `_` or `.`.
pub fn qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    }
}

/// Whether `value` is a valid label value (empty, or a name part).
fn label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

/// Every problem of a label selector, under `field`.
pub fn label_selector(field: &str, selector: &LabelSelector, problems: &mut Problems) {
    for (key, value) in selector.match_labels.iter().flatten() {
        if !qualified_name(key) {
            problems.add(
                format!("{field}.matchLabels"),
                format!("{key:?} is not a valid label key"),
            );
        }
        if !label_value(value) {
            problems.add(
                format!("{field}.matchLabels.{key}"),
                format!("{value:?} is not a valid label value"),
            );
        }
    }
    for (e, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let here = format!("{field}.matchExpressions[{e}]");
        if !qualified_name(&expression.key) {
            problems.add(
                format!("{here}.key"),
                format!("{:?} is not a valid label key", expression.key),
            );
        }
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => problems.add(
                format!("{here}.values"),
                format!("{} needs at least one value", expression.operator),
            ),
            "In" | "NotIn" => {
                for (v, value) in values.iter().enumerate() {
                    if !label_value(value) {
                        problems.add(
                            format!("{here}.values[{v}]"),
                            format!("{value:?} is not a valid label value"),
                        );
                    }
                }
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => problems.add(
                format!("{here}.values"),
                format!("{} takes no values", expression.operator),
            ),
            "Exists" | "DoesNotExist" => {}
            other => problems.add(
                format!("{here}.operator"),
                format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_as_the_api_server_reads_them() {
        for good in [
            "app",
            "app.kubernetes.io/name",
            "a_b-c.d",
            "x",
            "example.com/A1",
        ] {
            assert!(qualified_name(good), "{good}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "-app",
            "app-",
            "a/b/c",
            "Bad_Prefix/x",
            "/x",
            "x/",
            "a b",
            long.as_str(),
        ] {
            assert!(!qualified_name(bad), "{bad}");
        }
    }

    fn problems_of(yaml: &str) -> Vec<String> {
        let selector: LabelSelector = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        label_selector("spec.targets[0].selector", &selector, &mut problems);
        problems
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn selectors_the_api_server_would_refuse_are_named_by_field() {
        assert!(problems_of("{matchLabels: {app: api}, matchExpressions: [{key: tier, operator: In, values: [web]}]}").is_empty());
        assert_eq!(
            problems_of("{matchLabels: {'bad key!': x}}"),
            ["spec.targets[0].selector.matchLabels: \"bad key!\" is not a valid label key"]
        );
        assert_eq!(
            problems_of("{matchExpressions: [{key: tier, operator: In, values: []}]}"),
            ["spec.targets[0].selector.matchExpressions[0].values: In needs at least one value"]
        );
        assert_eq!(
            problems_of("{matchExpressions: [{key: tier, operator: Exists, values: [x]}]}"),
            ["spec.targets[0].selector.matchExpressions[0].values: Exists takes no values"]
        );
        assert_eq!(
            problems_of("{matchExpressions: [{key: tier, operator: Near}]}"),
            [
                "spec.targets[0].selector.matchExpressions[0].operator: \"Near\" is not one of In, NotIn, Exists, DoesNotExist"
            ]
        );
        assert_eq!(
            problems_of("{matchLabels: {app: 'no spaces'}}"),
            ["spec.targets[0].selector.matchLabels.app: \"no spaces\" is not a valid label value"]
        );
    }
}
