//! Every relative link in the README, docs/ and the chart's README leads
//! somewhere: the file exists and, for `#anchor` into Markdown, a heading
//! with that anchor (as GitHub makes it) exists. So does every alert's
//! `runbook_url` in the chart's rules, into docs/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    let root = repo();
    let mut files = vec![
        root.join("README.md"),
        root.join("cluster/README.md"),
        root.join("charts/healing-guard-operator/README.md"),
    ];
    walk(&root.join("docs"), &mut files);
    files.sort();
    files
}

/// GitHub's anchor of a heading: lower case, spaces to hyphens, only
/// letters, digits, `-` and `_` kept; repeats get `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { level, .. }) if level <= HeadingLevel::H6 => {
                heading = Some(String::new())
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let text = heading.take().unwrap_or_default();
                let slug: String = text
                    .trim()
                    .to_lowercase()
                    .replace(' ', "-")
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                let n = seen.entry(slug.clone()).or_insert(0);
                anchors.insert(if *n == 0 {
                    slug.clone()
                } else {
                    format!("{slug}-{n}")
                });
                *n += 1;
            }
            _ => {}
        }
    }
    anchors
}

fn links(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    let mut count = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            count += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let full = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = file.strip_prefix(repo()).unwrap().display().to_string();
            if !full.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
                continue;
            }
            if !anchor.is_empty()
                && full.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&full).unwrap()).contains(anchor)
            {
                broken.push(format!("{shown}: {target} (no such heading)"));
            }
        }
    }
    assert!(
        count > 100,
        "only {count} links found: is the parser reading the files?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let made = anchors("# Real nodes (`--real-nodes N`)\n## Upgrade\n## Upgrade\n");
    assert!(made.contains("real-nodes---real-nodes-n"), "{made:?}");
    assert!(
        made.contains("upgrade") && made.contains("upgrade-1"),
        "{made:?}"
    );
}

/// Every alert rule's `runbook_url` is under the chart's default
/// `prometheusRule.runbookBaseUrl` (the repository's docs/ on GitHub, which
/// the template replaces with the value given) and leads to a heading of
/// the file it names there.
#[test]
fn every_alerts_runbook_url_leads_to_its_section_of_the_docs() {
    let chart = repo().join("charts/healing-guard-operator");
    let yaml = |path: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(chart.join(path)).unwrap()).unwrap()
    };
    let home = yaml("Chart.yaml")["home"].as_str().unwrap().to_owned();
    let base = yaml("values.yaml")["prometheusRule"]["runbookBaseUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(base, format!("{home}/blob/main/docs"), "values.yaml");
    let template = std::fs::read_to_string(chart.join("templates/prometheusrule.yaml")).unwrap();
    assert!(
        template.contains(&format!("\"{base}/\"")),
        "templates/prometheusrule.yaml replaces {base}/ in the rules"
    );

    let mut broken = Vec::new();
    let mut count = 0;
    for file in ["rules/operator.rules.yaml", "rules/service.rules.yaml"] {
        let rules = yaml(file);
        for rule in rules["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|group| group["rules"].as_sequence().unwrap())
            .filter(|rule| rule["alert"].is_string())
        {
            let alert = rule["alert"].as_str().unwrap();
            let Some(url) = rule["annotations"]["runbook_url"].as_str() else {
                broken.push(format!("{file}: {alert} has no runbook_url"));
                continue;
            };
            count += 1;
            let Some(relative) = url.strip_prefix(&format!("{base}/")) else {
                broken.push(format!("{file}: {alert}: {url} is not under {base}"));
                continue;
            };
            let (path, anchor) = relative.split_once('#').unwrap_or((relative, ""));
            let doc = repo().join("docs").join(path);
            if anchor.is_empty() || !doc.exists() {
                broken.push(format!(
                    "{file}: {alert}: {url} (no such file, or no #section)"
                ));
            } else if !anchors(&std::fs::read_to_string(&doc).unwrap()).contains(anchor) {
                broken.push(format!(
                    "{file}: {alert}: {url} (no such heading in docs/{path})"
                ));
            }
        }
    }
    assert!(count >= 12, "only {count} runbook_urls found");
    assert!(
        broken.is_empty(),
        "broken runbook_urls:\n{}",
        broken.join("\n")
    );
}
