//! Every label, annotation and field-manager name the operator reads or
//! writes, in one place, so two modules never spell one name two ways.

/// Field manager of the controllers' writes (server-side apply).
pub const FIELD_MANAGER: &str = "healing-guard-operator";
/// Field manager of the detector's writes: it owns `status.detection` only.
pub const DETECTOR_FIELD_MANAGER: &str = "healing-guard-operator-detector";
/// Field manager of the leader-election Lease.
pub const LEADER_FIELD_MANAGER: &str = "healing-guard-operator-leader";
/// Field manager of `status.communication` on Incidents: the notifier's.
pub const NOTIFIER_FIELD_MANAGER: &str = "healing-guard-operator-notifier";
/// On a post-incident report ConfigMap: the Incident it reports on.
pub const REPORT_OF_LABEL: &str = "healing-guard.io/report-of";
/// Field manager of the config snapshots: a snapshot is trusted only if it
/// alone ever wrote it.
pub const SNAPSHOT_FIELD_MANAGER: &str = "healing-guard-operator-snapshot";

/// `app.kubernetes.io/managed-by` and its value on everything the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "healing-guard-operator";

/// Label on a detected Incident naming the policy whose rule opened it.
pub const POLICY_LABEL: &str = "healing-guard.io/policy";
/// Label on a detected Incident naming its symptom.
pub const SYMPTOM_LABEL: &str = "healing-guard.io/symptom";
/// Label on a detected Incident naming its target workload.
pub const TARGET_LABEL: &str = "healing-guard.io/target";

/// Annotation on a workload naming the incident step that last changed it;
/// also how a step applied just before a crash is recognised.
pub const STEP_ANNOTATION: &str = "healing-guard.io/remediation-step";
/// Annotation on a workload or ConfigMap naming the incident that last changed it.
pub const INCIDENT_ANNOTATION: &str = "healing-guard.io/incident";
/// Annotation on a restored ConfigMap naming the snapshot it came from.
pub const RESTORED_FROM_ANNOTATION: &str = "healing-guard.io/restored-from";
/// Annotation on a RemediationPolicy that closes its circuit breaker: failures
/// finished before this RFC 3339 time no longer count.
pub const BREAKER_RESET_ANNOTATION: &str = "healing-guard.io/circuit-breaker-reset";

/// Label on a config snapshot naming the ConfigMap it copies.
pub const SNAPSHOT_OF_LABEL: &str = "healing-guard.io/snapshot-of";
/// Annotation on a config snapshot: when it was taken (RFC 3339).
pub const TAKEN_AT_ANNOTATION: &str = "healing-guard.io/taken-at";
/// Annotation on a config snapshot: the workload that was healthy with it.
pub const SNAPSHOT_WORKLOAD_ANNOTATION: &str = "healing-guard.io/workload";
/// The ConfigMap (one per namespace) holding the revision each guarded
/// Deployment last ran healthy, for rollbacks to LastHealthy.
pub const KNOWN_GOOD_CONFIG_MAP: &str = "healing-guard-known-good";

/// Kubernetes' own names the operator reads or writes.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// On a pod template: the step that rotated a Secret it reads. A new value
/// rolls the pods (they read Secrets at start); the same value again does
/// not, so a step applied twice restarts nothing twice.
pub const SECRET_ROTATED_ANNOTATION: &str = "healing-guard.io/secret-rotated";
/// On a rotated Secret: when its key got its new value.
pub const ROTATED_AT_ANNOTATION: &str = "healing-guard.io/rotated-at";
/// On a rotated Secret: until when its previous value is kept (the
/// rotation's grace period); the policy controller removes it after.
pub const PREVIOUS_UNTIL_ANNOTATION: &str = "healing-guard.io/previous-value-until";
