//! Who acknowledged and who approved is who sent the request: the chart's
//! ValidatingAdmissionPolicy, tried by two real users of the API server,
//! the commander (group healing-guard:approvers) and an on-call responder.

use healing_guard_operator::crd::Incident;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{client, client_as, eventually, namespace, run};

/// Installs the chart's admission policy (bound to `ns` only, as with
/// `watchNamespace`) and its responder role, bound to both users in `ns`.
pub(crate) fn install_admission(ns: &str) {
    let manifests = run(
        "helm",
        &[
            "template",
            &format!("adm-{ns}"),
            "charts/healing-guard-operator",
            "--namespace",
            ns,
            "--set",
            &format!("watchNamespace={ns}"),
            // The account the tests' operator in `ns` runs as: the one
            // that may write status.
            "--set",
            &format!("serviceAccount.name=op-{ns}-healing-guard-operator"),
            "--show-only",
            "templates/admission.yaml",
            "--show-only",
            "templates/responder-role.yaml",
        ],
        None,
    );
    run("kubectl", &["apply", "-f", "-"], Some(&manifests));
    let binding = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: responders, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: adm-{ns}-healing-guard-operator-responder}}\n\
         subjects:\n- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: commander}}\n\
         - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: responder}}\n"
    );
    run("kubectl", &["apply", "-f", "-"], Some(&binding));
}

async fn patch(client: &Client, ns: &str, body: Value) -> Result<Incident, String> {
    Api::<Incident>::namespaced(client.clone(), ns)
        .patch("outage", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|error| error.to_string())
}

/// As [`patch`], as a server-side dry run: admission judges it and nothing
/// is stored (a lie let through before a policy is in force would
/// otherwise stay, and an unchanged field is not judged again).
async fn dry_run(client: &Client, ns: &str, body: Value) -> Result<Incident, String> {
    Api::<Incident>::namespaced(client.clone(), ns)
        .patch(
            "outage",
            &PatchParams::default().dry_run(),
            &Patch::Merge(&body),
        )
        .await
        .map_err(|error| error.to_string())
}

#[tokio::test]
async fn acknowledgements_and_approvals_name_the_user_who_sent_them() {
    let admin = client().await;
    let ns = namespace(&admin, "admission").await;
    install_admission(&ns);
    let commander = client_as("commander").await;
    let responder = client_as("responder").await;

    // The responder declares an incident.
    let incident: Incident = serde_json::from_value(json!({
        "apiVersion": "healing-guard.io/v1alpha1", "kind": "Incident",
        "metadata": {"name": "outage"},
        "spec": {"title": "API down", "severity": "P0", "type": "ServiceOutage",
                 "target": {"kind": "Deployment", "name": "api"}}
    }))
    .unwrap();
    Api::<Incident>::namespaced(responder.clone(), &ns)
        .create(&PostParams::default(), &incident)
        .await
        .unwrap();

    // Acknowledging in someone else's name is refused, once the policy is in force.
    let lie = json!({"spec": {"acknowledged": {"by": "commander"}}});
    let refused = eventually("the admission policy in force", || {
        let (responder, ns, lie) = (responder.clone(), ns.clone(), lie.clone());
        async move { dry_run(&responder, &ns, lie).await.err() }
    })
    .await;
    assert_eq!(
        patch(&responder, &ns, lie).await.err(),
        Some(refused.clone()),
        "the real request is refused as its dry run was"
    );
    assert!(
        refused.contains("spec.acknowledged.by: must be the user who acknowledges (responder)"),
        "{refused}"
    );
    patch(
        &responder,
        &ns,
        json!({"spec": {"acknowledged": {"by": "responder"}}}),
    )
    .await
    .unwrap();

    // The responder may not approve at all, in any name.
    for by in ["responder", "commander"] {
        let approve = json!({"spec": {"approvals": [{"step": "rollback", "by": by}]}});
        let error = patch(&responder, &ns, approve).await.unwrap_err();
        assert!(
            error.contains(
                "spec.approvals: a new approval must be by the user who approves (responder)"
            ),
            "{error}"
        );
    }
    // The commander may, in their own name only.
    let forged = json!({"spec": {"approvals": [{"step": "rollback", "by": "jane"}]}});
    assert!(patch(&commander, &ns, forged).await.is_err());
    let approved = patch(
        &commander,
        &ns,
        json!({"spec": {"approvals": [{"step": "rollback", "by": "commander"}]}}),
    )
    .await
    .unwrap();
    assert_eq!(approved.spec.approvals.len(), 1);

    // Approvals already given stay valid when others edit the incident.
    patch(
        &responder,
        &ns,
        json!({"spec": {"description": "rollback approved; watching"}}),
    )
    .await
    .unwrap();
    // Not even a cluster admin can approve in another's name.
    let error = patch(
        &admin,
        &ns,
        json!({"spec": {"approvals": [{"step": "rollback", "by": "commander"},
                                      {"step": "restart", "by": "commander"}]}}),
    )
    .await
    .unwrap_err();
    assert!(error.contains("spec.approvals"), "{error}");

    // Lifting a GitOps hold early is an approver's call, in their own name.
    for (client, by) in [(&responder, "responder"), (&commander, "jane")] {
        let error = patch(client, &ns, json!({"spec": {"resumeSync": {"by": by}}}))
            .await
            .unwrap_err();
        assert!(
            error.contains("spec.resumeSync: must be by the user who asks"),
            "{error}"
        );
    }
    let lifted = patch(
        &commander,
        &ns,
        json!({"spec": {"resumeSync": {"by": "commander"}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        lifted.spec.resume_sync.map(|r| r.by).as_deref(),
        Some("commander")
    );

    // Resolving names the resolver.
    let error = patch(
        &responder,
        &ns,
        json!({"spec": {"resolution": {"by": "commander", "rootCause": "bad release", "summary": "rolled back"}}}),
    )
    .await
    .unwrap_err();
    assert!(error.contains("spec.resolution.by"), "{error}");
    patch(
        &responder,
        &ns,
        json!({"spec": {"resolution": {"by": "responder", "rootCause": "bad release", "summary": "rolled back"}}}),
    )
    .await
    .unwrap();

    // Status is the operator's record: not even a cluster admin writes it
    // (a step AwaitingApproval edited to Pending would run unapproved).
    let forged = json!({"status": {"phase": "Resolved", "steps": [{
        "id": "x", "name": "rollback", "action": "rollback", "result": "Pending", "attempt": 1}]}});
    let incidents = Api::<Incident>::namespaced(admin.clone(), &ns);
    let error = eventually("the status policy in force", || {
        let (incidents, forged) = (incidents.clone(), forged.clone());
        async move {
            incidents
                .patch_status(
                    "outage",
                    &PatchParams::default().dry_run(),
                    &Patch::Merge(&forged),
                )
                .await
                .err()
                .map(|error| error.to_string())
        }
    })
    .await;
    assert!(
        error.contains("status: written only by the operator (system:serviceaccount:")
            && error.contains(&format!(":op-{ns}-healing-guard-operator), not by ")),
        "{error}"
    );
    let unchanged = incidents.get("outage").await.unwrap();
    assert!(unchanged.status.is_none_or(|s| s.steps.is_empty()));
}
