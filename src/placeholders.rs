//! Placeholders, filled with minijinja: the one environment every template
//! of the operator renders in, and [`fill`], which puts a target's
//! namespace and name into what users write (probe URLs, Prometheus
//! queries, http action URLs and bodies, patch target names).
//!
//! What users write is minijinja's (Jinja's) syntax with two names:
//! `{{ namespace }}` and `{{ name }}`, spaces inside the braces optional,
//! e.g. `http://{{ name }}.{{ namespace }}.svc:8000/health`. Everything
//! else is kept as written, single braces too (a JSON body's `{` and `}`),
//! except `{{`, `{%` and `{#`, which open a placeholder, a statement or a
//! comment; to keep one as text, write `{{ '{{' }}` or wrap the text in
//! `{% raw %}...{% endraw %}`. Any other name, or text that does not
//! parse, is an error: a typo is reported, never filled with nothing.

use minijinja::{Environment, UndefinedBehavior, syntax::SyntaxConfig};

/// Template instructions one rendering may use, so that no template can
/// hang the operator.
pub const FUEL: u64 = 50_000;

/// The environment every template renders in: bounded by [`FUEL`], an
/// unknown name an error rather than empty text, and nothing escaped (what
/// comes out is a message, a URL or a JSON body, never HTML).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Why a text's placeholders could not be filled.
#[derive(Debug, thiserror::Error)]
#[error("{source}; the placeholders are {{{{ namespace }}}} and {{{{ name }}}}")]
pub struct FillError {
    #[source]
    source: minijinja::Error,
}

/// `template` with `{{ namespace }}` and `{{ name }}` filled in.
pub fn fill(template: &str, namespace: &str, name: &str) -> Result<String, FillError> {
    // Text without an opening delimiter renders as itself: no template to
    // compile (most URLs and bodies; validation fills each of them).
    if !["{{", "{%", "{#"]
        .iter()
        .any(|open| template.contains(open))
    {
        return Ok(template.to_owned());
    }
    let error = |source| FillError { source };
    let mut env = environment();
    // Jinja drops a last newline by default; a body's is part of it.
    let syntax = SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(error)?;
    env.set_syntax(syntax);
    env.render_str(template, minijinja::context! { namespace, name })
        .map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_placeholders_is_itself_and_a_stray_brace_is_kept() {
        for text in ["http://api/health", "{\"a\": 1}\n", "a } b { c", ""] {
            assert_eq!(fill(text, "hg", "api").unwrap(), text);
        }
        assert!(fill("{{ nope }}", "hg", "api").is_err(), "still strict");
    }

    #[test]
    fn the_target_is_filled_in_with_or_without_spaces() {
        for (template, filled) in [
            (
                "http://{{ name }}.{{ namespace }}.svc:8000/health",
                "http://api.hg.svc:8000/health",
            ),
            (
                "http://{{name}}.{{namespace}}.svc:8000/health",
                "http://api.hg.svc:8000/health",
            ),
            ("http://{{name}}/x", "http://api/x"),
            (
                "{{ name }}-{{ name }} in {{namespace}}/{{ namespace }}",
                "api-api in hg/hg",
            ),
            (
                "max(api_latency_seconds{namespace=\"{{ namespace }}\"})",
                "max(api_latency_seconds{namespace=\"hg\"})",
            ),
            ("{{ name }}-db", "api-db"),
            ("http://svc/health?a=1&b=<2>", "http://svc/health?a=1&b=<2>"),
            ("no placeholder at all", "no placeholder at all"),
            ("", ""),
        ] {
            assert_eq!(fill(template, "hg", "api").unwrap(), filled, "{template}");
        }
    }

    #[test]
    fn a_json_body_keeps_its_braces_and_its_last_newline() {
        let body = "{\"reason\": \"{{ name }} in {{ namespace }} leaks\", \"labels\": {\"app\": \"{{name}}\"}}\n";
        assert_eq!(
            fill(body, "hg", "api").unwrap(),
            "{\"reason\": \"api in hg leaks\", \"labels\": {\"app\": \"api\"}}\n"
        );
    }

    #[test]
    fn values_are_not_escaped() {
        assert_eq!(fill("{{ name }}", "hg", "<a&b>\"'").unwrap(), "<a&b>\"'");
    }

    #[test]
    fn double_braces_are_kept_as_text_only_when_asked() {
        assert_eq!(
            fill("{{ '{{' }} name }} is {{ name }}", "hg", "api").unwrap(),
            "{{ name }} is api"
        );
        assert_eq!(
            fill("{% raw %}{{ $labels.job }}{% endraw %}", "hg", "api").unwrap(),
            "{{ $labels.job }}"
        );
    }

    #[test]
    fn unknown_names_and_broken_templates_are_errors() {
        for template in [
            "http://{{ target }}/x",
            "http://{{ Name }}/x",
            "http://{{ name }/x",
            "{{ $labels.job }}",
            "q={%22a%22}",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        ] {
            let error = fill(template, "hg", "api").unwrap_err();
            assert!(
                error.to_string().contains("{{ namespace }} and {{ name }}"),
                "{template}: {error}"
            );
        }
    }

    #[test]
    fn a_template_cannot_grow_without_bound() {
        // A policy author's hostile template: repetition is paid for in
        // fuel by its size, so a gigabyte is refused, not allocated.
        for template in [
            "{{ 'x' * 1000000000 }}",
            "{{ ('x' * 40000) * 40000 }}",
            "{% set a = name * 40000 %}{% set b = a * 40000 %}{{ b }}",
        ] {
            assert!(fill(template, "hg", "api").is_err(), "{template}");
        }
        assert_eq!(fill("{{ name * 3 }}", "hg", "api").unwrap(), "apiapiapi");
    }
}
