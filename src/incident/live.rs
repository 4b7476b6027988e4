//! The live world: the operator's [`Context`] as the incident pipeline's
//! [`World`], its shared stores, the API as the namespace's remediator,
//! and the writes past the leader's fence.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::Pod,
    },
    jiff::Timestamp,
};
use kube::{Api, api::ListParams, runtime::reflector::ObjectRef};

use super::{
    act,
    decision::{Decision, Effect},
    evidence, finalizer, record,
    world::{RevertOutcome, World},
};
use crate::{
    context::Context,
    crd::{Evidence, GitOpsOwner, Incident, IncidentStatus, RemediationPolicy, WorkloadKind},
    pod::PodFacts,
    reconcile::Error,
    remediation::{
        actions::{self, run_job::Outcome as JobOutcome},
        ladder::Rung,
    },
    signals::{prober::ProbeKey, tracker::Tracker},
    workload::{Workload, deployment_ref, statefulset_ref},
};

impl World for Context {
    fn now(&self) -> Timestamp {
        crate::k8s::now_whole_seconds()
    }

    fn policy(&self, namespace: &str, name: &str) -> Option<Arc<RemediationPolicy>> {
        self.watches
            .policies
            .store()
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn policy_problems(&self, policy: &RemediationPolicy) -> Arc<Vec<crate::validation::Problem>> {
        self.checked.policy(policy)
    }

    fn stored_workload(&self, namespace: &str, kind: WorkloadKind, name: &str) -> Option<Workload> {
        match kind {
            WorkloadKind::Deployment => self
                .watches
                .deployments
                .store()
                .get(&deployment_ref(namespace, name))
                .map(Workload::Deployment),
            WorkloadKind::StatefulSet => self
                .watches
                .statefulsets
                .store()
                .get(&statefulset_ref(namespace, name))
                .map(Workload::StatefulSet),
        }
    }

    async fn read_workload(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
    ) -> Result<Option<Workload>, Error> {
        Ok(match kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .get_opt(name)
                    .await?
                    .map(Workload::from)
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client.clone(), namespace)
                    .get_opt(name)
                    .await?
                    .map(Workload::from)
            }
        })
    }

    /// A guarded workload's pods are in the detector's store; only a target
    /// no policy guards (a declared incident's) is listed.
    async fn pods_of(&self, workload: &Workload) -> Result<Vec<PodFacts>, Error> {
        let Some(selector) = workload.selector() else {
            return Ok(Vec::new());
        };
        if let Some(key) = workload.pod_selector()
            && let Some(pods) = self.pods.pods(&key, |pod| workload.owns(pod))
        {
            return Ok(pods.iter().map(|pod| PodFacts::clone(pod)).collect());
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), &workload.namespace())
            .list(&ListParams::default().labels_from(&selector))
            .await?
            .items;
        Ok(pods
            .into_iter()
            .map(PodFacts::from)
            .filter(|pod| workload.owns(pod))
            .collect())
    }

    fn incidents_in(&self, namespace: &str) -> Vec<Arc<Incident>> {
        self.watches
            .incidents
            .store()
            .state_filter(|other| other.metadata.namespace.as_deref() == Some(namespace))
    }

    async fn inputs(
        &self,
        account: Option<&str>,
        rung: &Rung,
        workload: &Workload,
    ) -> Result<actions::AnyInputs, Error> {
        let remediator = self.remediator(&workload.namespace(), account)?;
        let io = actions::Io {
            client: &remediator,
            http: &self.http,
        };
        Ok(rung.act().observe(io, &rung.action, workload).await?)
    }

    async fn sync(
        &self,
        namespace: &str,
        account: Option<&str>,
        owner: &GitOpsOwner,
        target: &crate::crd::WorkloadRef,
    ) -> Result<crate::gitops::SyncRead, Error> {
        let remediator = self.remediator(namespace, account)?;
        Ok(crate::gitops::client::read(&remediator, owner, namespace, target).await?)
    }

    async fn evidence(
        &self,
        _namespace: &str,
        target: &crate::crd::WorkloadRef,
        workload: Option<&Workload>,
        pods: &[PodFacts],
        affected: &[String],
        now: Timestamp,
    ) -> Evidence {
        let sources = evidence::Sources {
            client: &self.client,
            warnings: &self.warnings,
            capture_logs: self.settings.capture_logs,
        };
        evidence::capture(&sources, target, workload, pods, affected, now).await
    }

    fn probe(&self, key: &ProbeKey) -> Option<Tracker> {
        self.probes.get(key)
    }

    async fn job_outcome(
        &self,
        namespace: &str,
        account: Option<&str>,
        step_id: &str,
    ) -> Result<(JobOutcome, Vec<String>), Error> {
        let remediator = self.remediator(namespace, account)?;
        Ok(actions::run_job::observe_outcome(
            &remediator,
            self.settings.capture_logs.then_some(&self.client),
            namespace,
            step_id,
        )
        .await?)
    }

    fn backoff_left(&self, key: &str) -> Option<Duration> {
        self.backoffs.wait_left(key)
    }

    fn backoff_failures(&self, key: &str) -> u32 {
        self.backoffs.failures(key)
    }

    fn backoff_reset(&self, key: &str) {
        self.backoffs.reset(key);
    }

    async fn hold_finalizer(
        &self,
        incident: &Arc<Incident>,
        hold: bool,
    ) -> Result<Arc<Incident>, Error> {
        finalizer::hold(self, incident, hold).await
    }

    async fn mark(
        &self,
        incident: &Incident,
        status: &IncidentStatus,
    ) -> Result<Arc<Incident>, Error> {
        record::mark(self, incident, status).await
    }

    async fn act(
        &self,
        account: Option<&str>,
        workload: &Workload,
        effect: &Effect,
        held_for: act::HeldFor<'_>,
    ) -> Result<Vec<String>, act::ActError> {
        act::act(self, account, workload, effect, held_for).await
    }

    async fn resume(
        &self,
        namespace: &str,
        account: Option<&str>,
        owner: &GitOpsOwner,
    ) -> Result<(), act::ActError> {
        act::resume(self, namespace, account, owner).await
    }

    async fn push_revert(
        &self,
        namespace: &str,
        account: Option<&str>,
        plan: &crate::gitops::revert::RevertPlan,
    ) -> Result<RevertOutcome, act::ActError> {
        act::push_revert(self, namespace, account, plan).await
    }

    async fn record(
        &self,
        incident: &Incident,
        workload: Option<&Workload>,
        decision: Decision,
        changed: bool,
    ) -> Result<Option<Arc<Incident>>, Error> {
        record::record(self, incident, workload, decision, changed).await
    }

    async fn after_apply(&self) {
        crate::failpoint::reached(crate::failpoint::AFTER_APPLY).await;
    }
}
