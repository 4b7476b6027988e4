//! The field reference in `docs/reference/`, generated from the CRDs as
//! `crds/` is: for every kind, every field with its type, whether it is
//! required, its default, allowed values and bounds, its description (the
//! doc comments of the Rust types) and the messages of its CEL rules.
//!
//! [`pages`] is pure, from CRDs to Markdown; [`write`] puts the pages in a
//! folder (`healing-guard-operator docs reference`, run by `make crds`),
//! and `tests/crd_drift.rs` fails when the committed pages differ.

mod field;
mod markdown;

pub use field::{facts, type_name};
pub use markdown::Slugger;

use field::*;
use markdown::*;
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionVersion,
    JSONSchemaProps,
};

/// Where the pages are committed, from the repository's root.
pub const DIRECTORY: &str = "docs/reference";

/// The index page's file name.
pub const INDEX: &str = "README.md";

/// The first line of every page: how it is made, and where to edit.
const GENERATED: &str = "<!-- Generated from the CRDs by `healing-guard-operator docs reference` \
(`make crds`): edit the doc comments in src/crd/, not this file. -->";

/// One page of the reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Its file name in [`DIRECTORY`].
    pub file_name: String,
    pub markdown: String,
}

/// Writing the pages failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot create {}: {source}", path.display())]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    WritePage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A page per kind and an index.
pub fn pages(crds: &[CustomResourceDefinition]) -> Vec<Page> {
    let mut pages: Vec<Page> = crds
        .iter()
        .map(|crd| Page {
            file_name: file_name(crd),
            markdown: page(crd),
        })
        .collect();
    pages.push(Page {
        file_name: INDEX.to_owned(),
        markdown: index(crds),
    });
    pages
}

/// Writes the pages into `directory` (made if missing); returns their paths.
pub fn write(directory: &Path, pages: &[Page]) -> Result<Vec<PathBuf>, WriteError> {
    std::fs::create_dir_all(directory).map_err(|source| WriteError::CreateDirectory {
        path: directory.to_owned(),
        source,
    })?;
    pages
        .iter()
        .map(|page| {
            let path = directory.join(&page.file_name);
            std::fs::write(&path, &page.markdown)
                .map_err(|source| WriteError::WritePage {
                    path: path.clone(),
                    source,
                })
                .map(|()| path)
        })
        .collect()
}

/// The page of one kind: `remediationpolicy.md` for RemediationPolicy.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.md", crd.spec.names.kind.to_lowercase())
}

/// The index: the kinds, and how to read their pages.
pub fn index(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{GENERATED}\n");
    let _ = writeln!(out, "# Field reference\n");
    let _ = writeln!(
        out,
        "Every field of the custom resources, generated from their CustomResourceDefinitions \
         (`crds/`), which are generated from the Rust types in `src/crd/`. \
         `kubectl explain` shows the same descriptions in a cluster.\n"
    );
    let _ = writeln!(out, "| Kind | Short names | What it is |");
    let _ = writeln!(out, "|---|---|---|");
    for crd in crds {
        let names = &crd.spec.names;
        let short = names
            .short_names
            .iter()
            .flatten()
            .map(|s| code(s))
            .collect::<Vec<_>>()
            .join(", ");
        let what = crd
            .spec
            .versions
            .first()
            .and_then(root_schema)
            .and_then(|s| s.description.as_deref())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| [{}]({}) | {short} | {} |",
            names.kind,
            file_name(crd),
            cell(what)
        );
    }
    let _ = writeln!(out, "\nHow to read a page:\n");
    for line in [
        "- Each object has a section, named by its path from the resource's root: \
         `spec.rules[]` is an item of the list `spec.rules`, `spec.x.*` a value of the map `spec.x`.",
        "- **Type**: `[]T` is a list of T, `map[string]T` a map from names to T; \
         a link leads to the object's own section.",
        "- **Required**: the API server refuses the object without it.",
        "- **Default**: what the API server fills in when the field is left out.",
        "- **Rule**: a CEL rule (`x-kubernetes-validations`) the API server checks; \
         its message is what `kubectl apply` answers when it fails. An object's rules \
         are listed under its section's **Rules**.",
        "- Durations are strings in Go's syntax (`90s`, `5m`, `1h30m`): the pattern \
         and the rule of each duration field say so, and give its bounds.",
        "- What the schema cannot check, the controllers check and report in the \
         resource's `Ready` condition.",
    ] {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The page of one kind.
pub fn page(crd: &CustomResourceDefinition) -> String {
    let names = &crd.spec.names;
    let mut out = String::new();
    let mut slugs = Slugger::default();
    let _ = writeln!(out, "{GENERATED}\n");
    let _ = writeln!(out, "# {}\n", names.kind);
    slugs.slug(&names.kind);
    let first = crd.spec.versions.first();
    if let Some(description) = first
        .and_then(root_schema)
        .and_then(|s| s.description.as_deref())
    {
        let _ = writeln!(out, "{}.\n", prose(description).trim_end_matches('.'));
    }
    let _ = writeln!(
        out,
        "`kubectl explain {}.spec` shows the same descriptions in a cluster; \
         [all kinds](README.md).\n",
        names.singular.as_deref().unwrap_or(&names.plural)
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let versions = crd
        .spec
        .versions
        .iter()
        .map(|v| code(&format!("{}/{}", crd.spec.group, v.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(out, "| API version | {versions} |");
    let _ = writeln!(out, "| Scope | {} |", crd.spec.scope);
    let mut aliases = vec![code(&names.plural)];
    aliases.extend(names.short_names.iter().flatten().map(|s| code(s)));
    let _ = writeln!(out, "| Plural, short names | {} |", aliases.join(", "));
    if let Some(categories) = names.categories.as_ref().filter(|c| !c.is_empty()) {
        let categories: Vec<String> = categories.iter().map(|c| code(c)).collect();
        let _ = writeln!(out, "| Categories | {} |", categories.join(", "));
    }
    let subresources = first
        .and_then(|v| v.subresources.as_ref())
        .map(|s| {
            let mut names = Vec::new();
            if s.status.is_some() {
                names.push(code("status"));
            }
            if s.scale.is_some() {
                names.push(code("scale"));
            }
            names
        })
        .unwrap_or_default();
    if !subresources.is_empty() {
        let _ = writeln!(out, "| Subresources | {} |", subresources.join(", "));
    }
    let several = crd.spec.versions.len() > 1;
    for version in &crd.spec.versions {
        if several {
            let heading = format!("Version {}", version.name);
            slugs.slug(&heading);
            let _ = writeln!(out, "\n## {heading}");
        }
        version_sections(&mut out, &mut slugs, version, names, several);
    }
    out
}

/// The printer columns and every object's section, of one version.
fn version_sections(
    out: &mut String,
    slugs: &mut Slugger,
    version: &CustomResourceDefinitionVersion,
    names: &CustomResourceDefinitionNames,
    several: bool,
) {
    let level = if several { "###" } else { "##" };
    let section_level = if several { "####" } else { "###" };
    let prefix = if several {
        format!("{} ", version.name)
    } else {
        String::new()
    };
    if let Some(columns) = version
        .additional_printer_columns
        .as_ref()
        .filter(|c| !c.is_empty())
    {
        let heading = format!("{prefix}Columns");
        slugs.slug(&heading);
        let _ = writeln!(out, "\n{level} {heading}\n");
        let _ = writeln!(out, "What `kubectl get {}` shows:\n", names.plural);
        let _ = writeln!(out, "| Column | Type | From |\n|---|---|---|");
        for column in columns {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&column.name),
                column.type_,
                code_cell(&column.json_path)
            );
        }
    }
    let Some(root) = root_schema(version) else {
        return;
    };
    let heading = format!("{prefix}Fields");
    slugs.slug(&heading);
    let _ = writeln!(out, "\n{level} {heading}");
    let mut sections = Vec::new();
    for (name, field) in root.properties.iter().flatten() {
        if let Some((path, object)) = nested(name, field) {
            collect(&path, object, &mut sections);
        }
    }
    // Slugs first, so a table links to a section written after it.
    let anchors: BTreeMap<String, String> = sections
        .iter()
        .map(|(path, _)| (path.clone(), slugs.slug(&format!("{prefix}{path}"))))
        .collect();
    for (path, object) in &sections {
        let _ = writeln!(
            out,
            "\n{section_level} {}\n",
            code(&format!("{prefix}{path}"))
        );
        if let Some(description) = object.description.as_deref() {
            let _ = writeln!(out, "{}\n", prose(description));
        }
        let rules = rules(object, false);
        if !rules.is_empty() {
            let _ = writeln!(out, "Rules:\n");
            for rule in rules {
                let _ = writeln!(out, "- {rule}");
            }
            let _ = writeln!(out);
        }
        table(out, path, object, &anchors);
    }
}

/// The schema at the root of a version (its `spec` and `status`).
fn root_schema(version: &CustomResourceDefinitionVersion) -> Option<&JSONSchemaProps> {
    version.schema.as_ref()?.open_api_v3_schema.as_ref()
}

/// Every object under `path`, depth first: the order of the page.
fn collect<'a>(
    path: &str,
    object: &'a JSONSchemaProps,
    sections: &mut Vec<(String, &'a JSONSchemaProps)>,
) {
    sections.push((path.to_owned(), object));
    for (name, field) in object.properties.iter().flatten() {
        if let Some((child, nested)) = nested(&format!("{path}.{name}"), field) {
            collect(&child, nested, sections);
        }
    }
}

/// The table of an object's fields.
fn table(
    out: &mut String,
    path: &str,
    object: &JSONSchemaProps,
    anchors: &BTreeMap<String, String>,
) {
    let Some(fields) = object.properties.as_ref().filter(|p| !p.is_empty()) else {
        return;
    };
    let required: BTreeSet<&str> = object
        .required
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let _ = writeln!(out, "| Field | Type | Required | Description |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (name, field) in fields {
        let child = format!("{path}.{name}");
        let type_name = type_name(field);
        let type_cell = match nested(&child, field).and_then(|(p, _)| anchors.get(&p)) {
            Some(anchor) => format!("[{}](#{anchor})", cell(&type_name)),
            None => cell(&type_name),
        };
        let mut description = field.description.as_deref().map(cell).unwrap_or_default();
        let facts = facts(field);
        if !facts.is_empty() {
            if !description.is_empty() {
                description.push_str("<br>");
            }
            description.push_str(&facts.join(" "));
        }
        let _ = writeln!(
            out,
            "| {} | {type_cell} | {} | {description} |",
            code_cell(name),
            if required.contains(name.as_str()) {
                "yes"
            } else {
                ""
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small CRD with one of each thing a page shows.
    fn widget() -> CustomResourceDefinition {
        serde_yaml::from_str(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.io}
spec:
  group: example.io
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        description: A thing that widgets
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            properties:
              size:
                type: integer
                format: int32
                description: "How big.
In
units."
                minimum: 1.0
                maximum: 10.0
              mode:
                type: string
                default: DryRun
                enum: [Auto, DryRun]
                description: How it runs.
              name:
                type: string
                pattern: ^(a|b)$
                minLength: 1
                maxLength: 40
                description: Its `<name>`, never <name>.
              parts:
                type: array
                maxItems: 3
                items:
                  type: object
                  description: One part.
                  properties:
                    label: {type: string}
                  x-kubernetes-validations:
                  - {rule: "self.label != ''", message: a part needs a label}
              tags:
                type: array
                items: {type: string, enum: [x, y]}
                x-kubernetes-validations:
                - {rule: "self.size() <= 2 || false", message: two tags at most}
              limits:
                type: object
                additionalProperties: {x-kubernetes-int-or-string: true, maxLength: 32}
              job: {type: object, x-kubernetes-preserve-unknown-fields: true}
              owner:
                type: object
                properties:
                  name: {type: string}
                x-kubernetes-validations:
                - {rule: self == oldSelf, message: owner is immutable}
          status:
            type: object
            properties:
              at: {type: string, format: date-time}
"#,
        )
        .unwrap()
    }

    fn row<'a>(page: &'a str, field: &str) -> &'a str {
        let start = format!("| `{field}` |");
        page.lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("no row for {field} in\n{page}"))
    }

    #[test]
    fn a_page_shows_each_fact_of_a_field() {
        let page = page(&widget());
        assert!(page.starts_with(GENERATED));
        assert!(page.contains("# Widget\n\nA thing that widgets.\n"));
        assert!(page.contains("| API version | `example.io/v1` |"));
        assert!(page.contains("| Plural, short names | `widgets`, `wd` |"));
        assert!(page.contains("| Subresources | `status` |"));
        assert!(
            page.contains("| Ready | string | `.status.conditions[?(@.type==\"Ready\")].status` |")
        );
        assert!(page.contains("### `spec`\n\nWhat the widget should be.\n"));
        assert_eq!(
            row(&page, "size"),
            "| `size` | integer (int32) | yes | How big. In units.<br>At least 1 and at most 10. |"
        );
        assert_eq!(
            row(&page, "mode"),
            "| `mode` | string |  | How it runs.<br>Default: `DryRun`. One of `Auto`, `DryRun`. |"
        );
        assert_eq!(
            row(&page, "name"),
            "| `name` | string |  | Its `<name>`, never &lt;name&gt;.<br>1 to 40 characters. Pattern `^(a\\|b)$`. |"
        );
        assert_eq!(
            row(&page, "parts"),
            "| `parts` | [[]object](#specparts) |  | At most 3 items. |"
        );
        assert_eq!(
            row(&page, "tags"),
            "| `tags` | []string |  | Rule: two tags at most: `self.size() <= 2 \\|\\| false`. Each item: one of `x`, `y`. |"
        );
        assert_eq!(
            row(&page, "limits"),
            "| `limits` | map[string]int or string |  | Each value: at most 32 characters. |"
        );
        assert_eq!(row(&page, "job"), "| `job` | object (any fields) |  |  |");
        assert_eq!(row(&page, "at"), "| `at` | string (date-time) |  |  |");
        assert!(page.contains(
            "### `spec.parts[]`\n\nOne part.\n\nRules:\n\n- a part needs a label: `self.label != ''`.\n"
        ));
        assert!(page.contains("### `status`\n"));
        // An object's rules are in its section, not twice.
        assert_eq!(
            row(&page, "owner"),
            "| `owner` | [object](#specowner) |  |  |"
        );
        assert!(
            page.contains(
                "### `spec.owner`\n\nRules:\n\n- owner is immutable: `self == oldSelf`.\n"
            )
        );
    }

    #[test]
    fn the_index_links_every_kind() {
        let index = index(&[widget()]);
        assert!(index.contains("| [Widget](widget.md) | `wd` | A thing that widgets |"));
        let names: Vec<String> = pages(&[widget()])
            .into_iter()
            .map(|p| p.file_name)
            .collect();
        assert_eq!(names, ["widget.md", "README.md"]);
    }

    #[test]
    fn anchors_are_githubs() {
        let mut slugs = Slugger::default();
        assert_eq!(slugs.slug("`spec.rules[].actions[]`"), "specrulesactions");
        assert_eq!(slugs.slug("Columns"), "columns");
        assert_eq!(slugs.slug("Version v1 Fields"), "version-v1-fields");
        assert_eq!(slugs.slug("Columns"), "columns-1");
        assert_eq!(slugs.slug("`spec.x.*`"), "specx");
    }

    /// Every field path of every kind, as `(section, field)`.
    fn fields(path: &str, object: &JSONSchemaProps, out: &mut Vec<(String, String)>) {
        for (name, field) in object.properties.iter().flatten() {
            out.push((path.to_owned(), name.clone()));
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if let Some((child, nested)) = nested(&child, field) {
                fields(&child, nested, out);
            }
        }
    }

    #[test]
    fn every_field_of_the_operators_kinds_has_its_row() {
        for crd in crate::crd::all() {
            let page = page(&crd);
            let root = crd.spec.versions.first().and_then(root_schema).unwrap();
            let mut all = Vec::new();
            fields("", root, &mut all);
            assert!(
                all.len() > 20,
                "{} has only {} fields",
                crd.spec.names.kind,
                all.len()
            );
            for (section, field) in all.iter().filter(|(s, _)| !s.is_empty()) {
                let heading = format!("\n### `{section}`\n");
                let at = page
                    .find(&heading)
                    .unwrap_or_else(|| panic!("{}: no section {section}", crd.spec.names.kind));
                let rest = &page[at + heading.len()..];
                let table = rest.split("\n### ").next().unwrap_or_default();
                assert!(
                    table.contains(&format!("| `{field}` |")),
                    "{}: no row for {section}.{field}",
                    crd.spec.names.kind
                );
            }
        }
    }

    #[test]
    fn every_link_in_a_page_has_its_heading() {
        for crd in crate::crd::all() {
            let page = page(&crd);
            let mut slugs = Slugger::default();
            let anchors: BTreeSet<String> = page
                .lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|l| slugs.slug(l.trim_start_matches('#').trim()))
                .collect();
            let links: Vec<&str> = page
                .split("](#")
                .skip(1)
                .filter_map(|rest| rest.split(')').next())
                .collect();
            assert!(!links.is_empty());
            for link in links {
                assert!(
                    anchors.contains(link),
                    "{}: #{link} leads nowhere",
                    crd.spec.names.kind
                );
            }
        }
    }

    #[test]
    fn the_rules_and_descriptions_of_the_kinds_reach_their_pages() {
        let pages = pages(&crate::crd::all());
        let all: String = pages.iter().map(|p| p.markdown.as_str()).collect();
        // A CEL rule's message, a doc comment, a default and an enum.
        assert!(all.contains("a probe has exactly one of http, redis, postgres, prometheus"));
        assert!(all.contains("Failed checks in a row before the probe counts as failing."));
        assert!(all.contains("Default: `DryRun`."));
        assert!(all.contains("One of `Deployment`, `StatefulSet`."));
        assert_eq!(pages.len(), 5);
    }

    #[test]
    fn write_puts_each_page_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("reference");
        let written = write(&folder, &pages(&[widget()])).unwrap();
        assert_eq!(written.len(), 2);
        let widget_page = std::fs::read_to_string(folder.join("widget.md")).unwrap();
        assert_eq!(widget_page, page(&widget()));
    }
}
