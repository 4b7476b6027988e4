//! The committed CRD YAML must be what the code generates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn committed_crds_match_the_generated_ones() {
    let generated = healing_guard_operator::crd::to_yaml().unwrap();
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
