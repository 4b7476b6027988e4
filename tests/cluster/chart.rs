//! The Helm chart lints and renders to manifests the API server accepts.

use crate::support::{client, namespace, run, run_status};

#[tokio::test]
async fn the_chart_lints_and_its_manifests_pass_a_server_dry_run() {
    let client = client().await;
    let ns = namespace(&client, "chart").await;
    run("helm", &["lint", "charts/healing-guard-operator"], None);
    let rendered = run(
        "helm",
        &[
            "template",
            "hgo",
            "charts/healing-guard-operator",
            "--namespace",
            &ns,
        ],
        None,
    );
    let (ok, stdout, stderr) = run_status(
        "kubectl",
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(&rendered),
    );
    assert!(ok, "server dry-run failed:\n{stderr}\n{stdout}");
    for kind in [
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "deployment",
        "service",
    ] {
        assert!(
            stdout.contains(&format!("{kind}.")) || stdout.contains(&format!("{kind}/")),
            "{kind} missing:\n{stdout}"
        );
    }
}
