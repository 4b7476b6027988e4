//! The world one reconcile reads and writes: the clock, the stores, the
//! API. The pipeline ([`super::observe`], [`super::reconcile`]) is written
//! against this trait only, so the same code runs on the live cluster
//! (the `Context`, in [`super::live`]) and on a virtual clock with a
//! simulated world (`crate::simulation`), with no second path through the
//! decisions.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;

use super::{act, decision::Decision, decision::Effect};
use crate::{
    crd::{Evidence, GitOpsOwner, Incident, IncidentStatus, RemediationPolicy, WorkloadKind},
    pod::PodFacts,
    reconcile::Error,
    remediation::{
        actions::{self, run_job::Outcome as JobOutcome},
        ladder::Rung,
    },
    signals::{prober::ProbeKey, tracker::Tracker},
    workload::Workload,
};

/// The GitOps revert branch pushed, or why not.
pub type RevertOutcome = Result<crate::gitops::revert::Pushed, String>;

/// What the incident pipeline reads and writes outside itself.
pub trait World: Send + Sync {
    /// The clock, in whole seconds (as the API server stores times).
    fn now(&self) -> Timestamp;

    // Reads.

    /// A RemediationPolicy, as the shared store holds it.
    fn policy(&self, namespace: &str, name: &str) -> Option<Arc<RemediationPolicy>>;
    /// The problems of a policy (none: it is valid), checked once per generation.
    fn policy_problems(&self, policy: &RemediationPolicy) -> Arc<Vec<crate::validation::Problem>>;
    /// A workload as the shared store holds it.
    fn stored_workload(&self, namespace: &str, kind: WorkloadKind, name: &str) -> Option<Workload>;
    /// A workload as it is now (a step is about to change it).
    fn read_workload(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
    ) -> impl Future<Output = Result<Option<Workload>, Error>> + Send;
    /// The workload's pods.
    fn pods_of(
        &self,
        workload: &Workload,
    ) -> impl Future<Output = Result<Vec<PodFacts>, Error>> + Send;
    /// The incidents of a namespace, as the shared store holds them.
    fn incidents_in(&self, namespace: &str) -> Vec<Arc<Incident>>;
    /// What the plan of `rung` reads, as the namespace's remediator.
    fn inputs(
        &self,
        account: Option<&str>,
        rung: &Rung,
        workload: &Workload,
    ) -> impl Future<Output = Result<actions::AnyInputs, Error>> + Send;
    /// The GitOps object that reconciles the target, as read now.
    fn sync(
        &self,
        namespace: &str,
        account: Option<&str>,
        owner: &GitOpsOwner,
        target: &crate::crd::WorkloadRef,
    ) -> impl Future<Output = Result<crate::gitops::SyncRead, Error>> + Send;
    /// The evidence captured when an incident opens, of the target as
    /// observed (`None`: it does not exist).
    fn evidence(
        &self,
        namespace: &str,
        target: &crate::crd::WorkloadRef,
        workload: Option<&Workload>,
        pods: &[PodFacts],
        affected: &[String],
        now: Timestamp,
    ) -> impl Future<Output = Evidence> + Send;
    /// How a probe stands, as the prober last saw it.
    fn probe(&self, key: &ProbeKey) -> Option<Tracker>;
    /// How the Job of a step stands, and its lines for the ledger.
    fn job_outcome(
        &self,
        namespace: &str,
        account: Option<&str>,
        step_id: &str,
    ) -> impl Future<Output = Result<(JobOutcome, Vec<String>), Error>> + Send;

    // The retry delays of a reconcile whose change failed.

    /// How long the object's backoff still runs.
    fn backoff_left(&self, key: &str) -> Option<Duration>;
    /// How many reconciles of it failed in a row.
    fn backoff_failures(&self, key: &str) -> u32;
    /// A reconcile of it went through.
    fn backoff_reset(&self, key: &str);

    // Writes.

    /// Makes the incident carry its writers-down finalizer, or not.
    fn hold_finalizer(
        &self,
        incident: &Arc<Incident>,
        hold: bool,
    ) -> impl Future<Output = Result<Arc<Incident>, Error>> + Send;
    /// Saves a status alone, before a change nothing will show is made.
    fn mark(
        &self,
        incident: &Incident,
        status: &IncidentStatus,
    ) -> impl Future<Output = Result<Arc<Incident>, Error>> + Send;
    /// Makes the decision's one change; its extra lines for the ledger.
    fn act(
        &self,
        account: Option<&str>,
        workload: &Workload,
        effect: &Effect,
        held_for: act::HeldFor<'_>,
    ) -> impl Future<Output = Result<Vec<String>, act::ActError>> + Send;
    /// Lifts the hold on a GitOps object.
    fn resume(
        &self,
        namespace: &str,
        account: Option<&str>,
        owner: &GitOpsOwner,
    ) -> impl Future<Output = Result<(), act::ActError>> + Send;
    /// Pushes a hold's revert branch.
    fn push_revert(
        &self,
        namespace: &str,
        account: Option<&str>,
        plan: &crate::gitops::revert::RevertPlan,
    ) -> impl Future<Output = Result<RevertOutcome, act::ActError>> + Send;
    /// Saves the decision's status, then announces and counts it.
    fn record(
        &self,
        incident: &Incident,
        workload: Option<&Workload>,
        decision: Decision,
        changed: bool,
    ) -> impl Future<Output = Result<Option<Arc<Incident>>, Error>> + Send;
    /// Where a test stops the process right after a change is made.
    fn after_apply(&self) -> impl Future<Output = ()> + Send;
}
