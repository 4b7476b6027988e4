//! The committed CRD YAML and field reference must be what the code generates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use healing_guard_operator::{crd, reference};

#[test]
fn committed_crds_match_the_generated_ones() {
    let generated = crd::to_yaml().unwrap();
    for path in [
        "crds/healing-guard.io.yaml",
        "charts/healing-guard-operator/crds/healing-guard.io.yaml",
    ] {
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date: run `cargo run -- crd > crds/healing-guard.io.yaml` and copy it into the chart"
        );
    }
}

#[test]
fn committed_reference_matches_the_generated_one() {
    let pages = reference::pages(&crd::all());
    let folder = std::path::Path::new(reference::DIRECTORY);
    for page in &pages {
        let path = folder.join(&page.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == page.markdown,
            "{} is out of date: run `make crds` (or `cargo run -- docs reference`)",
            path.display()
        );
    }
    // A page of a kind that is gone would be stale, and linked from nowhere.
    let expected: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
    for entry in std::fs::read_dir(folder).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            expected.contains(&name.as_str()),
            "{}/{name} is not generated from any kind: remove it",
            folder.display()
        );
    }
}

/// The README's first policy is what a stranger applies first: it must
/// decode as a RemediationPolicy and pass the controller's validation.
#[test]
fn the_readme_policy_is_valid() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.contains("kind: RemediationPolicy"))
        .collect();
    assert!(!blocks.is_empty(), "README.md shows no RemediationPolicy");
    for block in blocks {
        let policy: crd::RemediationPolicy = serde_yaml::from_str(block)
            .unwrap_or_else(|err| panic!("README.md's policy does not decode: {err}\n{block}"));
        let problems = healing_guard_operator::validation::policy(&policy.spec);
        assert!(
            problems.is_empty(),
            "README.md's policy is invalid: {}",
            healing_guard_operator::validation::summary(&problems)
        );
    }
}
