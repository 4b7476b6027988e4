//! The one interface every containment action implements, and its erased
//! form that the incident pipeline holds without knowing which action it is.
//!
//! An action is a unit struct in a file of its own implementing [`Action`]:
//! - `observe`: the reads its plan needs beyond the workload and its pods
//!   (ReplicaSets, a snapshot, a Secret, ...); most need none;
//! - `plan`: pure, from the workload as it is to the change to make (or a
//!   [`Refusal`] that says why not), with a line for the ledger;
//! - `apply`: the one write, for real or as a server-side dry run, marked
//!   with the incident and step that made it.
//!
//! It reaches the cluster and the network only through the [`Io`] it is
//! handed, never through the operator's context: whoever calls it decides
//! with whose authority it acts.

use std::{any::Any, fmt, future::Future, sync::Arc};

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde_json::{Value, json};

use super::errors::{ApplyError, Refusal};
use crate::authority::Grant;
use crate::{
    crd::{self, ActionKind, IncidentType, WorkloadKind},
    names::{INCIDENT_ANNOTATION, STEP_ANNOTATION},
    pod::PodFacts,
    workload::Workload,
};

/// What an action may use to read and write: handed in by the caller.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    /// The Kubernetes client the action reads and writes with.
    pub client: &'a Client,
    /// For calls to services (the `http` action).
    pub http: &'a reqwest::Client,
}

/// Who makes a change: written onto everything an action touches.
#[derive(Clone, Copy, Debug)]
pub struct Mark<'a> {
    /// The ledger id of the step.
    pub step: &'a str,
    /// The incident's name.
    pub incident: &'a str,
}

impl Mark<'_> {
    pub(super) fn annotations(&self) -> Value {
        json!({ STEP_ANNOTATION: self.step, INCIDENT_ANNOTATION: self.incident })
    }
}

/// What a plan is made from, beside the action's own inputs.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The rung: the action's kind and settings.
    pub action: &'a crd::Action,
    /// The target as it is now.
    pub workload: &'a Workload,
    pub mark: Mark<'a>,
    /// The clock, in whole seconds.
    pub now: Timestamp,
}

/// How far a step that replaces pods has come: when it was applied and the
/// uids of the pods it found then.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub started: Timestamp,
    pub replacing: &'a [String],
}

/// What a simulated world holds that a plan reads (`healing-guard-operator
/// test`): the world of a test case, described by its author, instead of
/// the reads `observe` makes of a live cluster.
#[derive(Clone, Debug, Default)]
pub struct Assumed {
    /// The workload's ReplicaSets, one per revision.
    pub replica_sets: Vec<k8s_openapi::api::apps::v1::ReplicaSet>,
    /// The revision last seen healthy.
    pub last_healthy: Option<i64>,
    /// ConfigMaps by name: whether a snapshot of it exists, and whether it
    /// differs from it now.
    pub config_maps: std::collections::BTreeMap<String, ConfigAssumed>,
}

/// A ConfigMap in a simulated world, against its last snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum ConfigAssumed {
    /// Snapshotted, and the same now.
    #[default]
    Unchanged,
    /// Snapshotted, and changed since.
    Changed,
    /// Never snapshotted.
    NoSnapshot,
}

/// A typed change and its line for the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan<C> {
    pub change: C,
    pub summary: String,
}

/// A containment action. Stateless: its methods read what they are given.
pub trait Action: Send + Sync + 'static {
    /// The value of a rung's `action` field that names it.
    const KIND: ActionKind;
    /// Nothing in the cluster shows afterwards that the change was made (a
    /// call to a service): it is marked in the ledger just before it is
    /// made, so that a restart knows it may have happened.
    const MARKED_BEFORE: bool = false;
    /// It acts on a Deployment's rollout history or template only.
    const DEPLOYMENTS_ONLY: bool = false;
    /// What it calls or runs is the policy's to choose: an Incident may not
    /// bring it in its own `spec.actions`, whatever the policy allows.
    const POLICY_ONLY: bool = false;
    /// What it changes is what a GitOps controller applies from Git (a
    /// template, replicas, a patched field, a ConfigMap): Git would undo
    /// it at the next sync, unless that sync is held.
    const UNDONE_BY_GIT: bool = false;

    /// Its settings in a rung (`scale:`, `http:`, ...).
    type Settings;
    /// What its plan reads beyond the workload and its pods.
    type Inputs: Default + fmt::Debug + Send + Sync + 'static;
    /// What it sends.
    type Change: fmt::Debug + PartialEq + Send + Sync + 'static;

    /// Its settings in the rung, if the rung has them (an action whose
    /// settings are all optional answers its defaults).
    fn settings(action: &crd::Action) -> Option<&Self::Settings>;

    /// Its settings, or the refusal that says they are missing.
    fn required(action: &crd::Action) -> Result<&Self::Settings, Refusal> {
        Self::settings(action).ok_or(Refusal::MissingSettings(Self::KIND))
    }

    /// Reads what the plan needs, given the rung's settings (a rung
    /// without them reads nothing). A missing object the plan should
    /// report is an input, not an error: errors are retried.
    fn observe(
        _io: Io<'_>,
        _settings: &Self::Settings,
        _workload: &Workload,
    ) -> impl Future<Output = Result<Self::Inputs, kube::Error>> + Send {
        async { Ok(Self::Inputs::default()) }
    }

    /// What `observe` would read in a simulated world. Most actions read
    /// nothing a test needs to describe.
    fn assumed(_settings: &Self::Settings, _workload: &Workload, _world: &Assumed) -> Self::Inputs {
        Self::Inputs::default()
    }

    /// The change to make, or why not, given the rung's settings (a rung
    /// without them is refused before). Pure.
    fn plan(
        request: &Request<'_>,
        settings: &Self::Settings,
        inputs: &Self::Inputs,
    ) -> Result<Plan<Self::Change>, Refusal>;

    /// Makes the change. Returns extra lines for the ledger.
    fn apply(
        io: Io<'_>,
        workload: &Workload,
        change: &Self::Change,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<String>, ApplyError>> + Send;

    /// More to do while the step verifies (the next batch of a pod-by-pod
    /// restart), decided from the pods as they are now. Pure.
    fn follow_up(
        _action: &crd::Action,
        _pods: &[PodFacts],
        _progress: Progress<'_>,
        _min_ready: i32,
    ) -> Option<Plan<Self::Change>> {
        None
    }

    /// The uids of the pods the step is to replace, recorded when it is
    /// applied, so a pod made in the same second is told from its
    /// replacement.
    fn replacing(_action: &crd::Action, _pods: &[PodFacts]) -> Option<Vec<String>> {
        None
    }

    /// Whether it takes the target's own pods down (a rollout), and so
    /// answers to the policy's floor of ready replicas.
    fn rolls_pods(action: &crd::Action) -> bool;

    /// What the namespace's remediator must be granted to take it on a
    /// workload of `kind`: checked when the policy is read, so that a
    /// missing grant is known before an incident needs it.
    fn grants(action: &crd::Action, kind: WorkloadKind) -> Vec<Grant>;

    /// Whether a change begun and never recorded may be made again.
    fn repeatable(_action: &crd::Action) -> bool {
        true
    }

    /// Whether a named person must approve it whatever the policy's mode.
    fn needs_approval(_action: &crd::Action, _incident: IncidentType) -> bool {
        false
    }

    /// Whether its verification waits for a Job named after the step.
    fn verified_by_job() -> bool {
        false
    }
}

/// An action whose type is known only as the program runs: what the
/// pipeline holds. Every [`Action`] is one.
pub trait AnyAction: Send + Sync {
    fn kind(&self) -> ActionKind;
    /// Whether it can act on a workload of that kind.
    fn applies_to(&self, kind: WorkloadKind) -> bool;
    /// See [`Action::POLICY_ONLY`].
    fn policy_only(&self) -> bool;
    /// See [`Action::UNDONE_BY_GIT`].
    fn undone_by_git(&self) -> bool;
    fn observe<'a>(
        &'a self,
        io: Io<'a>,
        action: &'a crd::Action,
        workload: &'a Workload,
    ) -> BoxFuture<'a, Result<AnyInputs, kube::Error>>;
    /// What `observe` would read in a simulated world.
    fn assumed(&self, action: &crd::Action, workload: &Workload, world: &Assumed) -> AnyInputs;
    fn plan(&self, request: &Request<'_>, inputs: &AnyInputs) -> Result<Planned, Refusal>;
    fn follow_up(
        &self,
        action: &crd::Action,
        pods: &[PodFacts],
        progress: Progress<'_>,
        min_ready: i32,
    ) -> Option<Planned>;
    fn replacing(&self, action: &crd::Action, pods: &[PodFacts]) -> Option<Vec<String>>;
    fn rolls_pods(&self, action: &crd::Action) -> bool;
    fn grants(&self, action: &crd::Action, kind: WorkloadKind) -> Vec<Grant>;
    fn repeatable(&self, action: &crd::Action) -> bool;
    fn needs_approval(&self, action: &crd::Action, incident: IncidentType) -> bool;
    fn verified_by_job(&self) -> bool;
}

impl<A: Action> AnyAction for A {
    fn kind(&self) -> ActionKind {
        A::KIND
    }

    fn applies_to(&self, kind: WorkloadKind) -> bool {
        !A::DEPLOYMENTS_ONLY || kind == WorkloadKind::Deployment
    }

    fn policy_only(&self) -> bool {
        A::POLICY_ONLY
    }

    fn undone_by_git(&self) -> bool {
        A::UNDONE_BY_GIT
    }

    fn observe<'a>(
        &'a self,
        io: Io<'a>,
        action: &'a crd::Action,
        workload: &'a Workload,
    ) -> BoxFuture<'a, Result<AnyInputs, kube::Error>> {
        Box::pin(async move {
            let read = match A::settings(action) {
                Some(settings) => A::observe(io, settings, workload).await,
                None => Ok(A::Inputs::default()),
            };
            match read {
                Ok(inputs) => Ok(AnyInputs::of(inputs)),
                // The namespace did not grant a read the step needs: the
                // step fails with that, rather than retrying for ever.
                Err(error) => match crate::authority::refusal(&error) {
                    Some(words) => Ok(AnyInputs::of(NotGranted(words))),
                    None => Err(error),
                },
            }
        })
    }

    fn assumed(&self, action: &crd::Action, workload: &Workload, world: &Assumed) -> AnyInputs {
        match A::settings(action) {
            Some(settings) => AnyInputs::of(A::assumed(settings, workload, world)),
            None => AnyInputs::default(),
        }
    }

    fn plan(&self, request: &Request<'_>, inputs: &AnyInputs) -> Result<Planned, Refusal> {
        if let Some(NotGranted(words)) = inputs.get() {
            return Err(Refusal::NotGranted(words.clone()));
        }
        // Inputs read for another step (or none read) plan as nothing read.
        let fallback;
        let inputs = match inputs.get::<A::Inputs>() {
            Some(inputs) => inputs,
            None => {
                fallback = A::Inputs::default();
                &fallback
            }
        };
        let settings = A::required(request.action)?;
        A::plan(request, settings, inputs).map(Planned::new::<A>)
    }

    fn follow_up(
        &self,
        action: &crd::Action,
        pods: &[PodFacts],
        progress: Progress<'_>,
        min_ready: i32,
    ) -> Option<Planned> {
        A::follow_up(action, pods, progress, min_ready).map(Planned::new::<A>)
    }

    fn replacing(&self, action: &crd::Action, pods: &[PodFacts]) -> Option<Vec<String>> {
        A::replacing(action, pods)
    }

    fn rolls_pods(&self, action: &crd::Action) -> bool {
        A::rolls_pods(action)
    }

    fn grants(&self, action: &crd::Action, kind: WorkloadKind) -> Vec<Grant> {
        A::grants(action, kind)
    }

    fn repeatable(&self, action: &crd::Action) -> bool {
        A::repeatable(action)
    }

    fn needs_approval(&self, action: &crd::Action, incident: IncidentType) -> bool {
        A::needs_approval(action, incident)
    }

    fn verified_by_job(&self) -> bool {
        A::verified_by_job()
    }
}

/// A read the namespace's remediator was refused, in words.
#[derive(Debug)]
struct NotGranted(String);

/// What an action read before planning, of that action's own type.
#[derive(Clone, Default)]
pub struct AnyInputs(Option<Arc<dyn ReadValue>>);

trait ReadValue: Any + fmt::Debug + Send + Sync {}
impl<T: Any + fmt::Debug + Send + Sync> ReadValue for T {}

impl AnyInputs {
    pub fn of<T: fmt::Debug + Send + Sync + 'static>(inputs: T) -> Self {
        AnyInputs(Some(Arc::new(inputs)))
    }

    /// The inputs, if they are of that type.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let value: &dyn Any = self.0.as_deref()?;
        value.downcast_ref()
    }
}

impl fmt::Debug for AnyInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(inputs) => inputs.fmt(f),
            None => f.write_str("None"),
        }
    }
}

/// A planned change, of whichever action, and its line for the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub change: AnyChange,
    pub summary: String,
}

impl Planned {
    pub fn new<A: Action>(plan: Plan<A::Change>) -> Self {
        Planned {
            change: AnyChange(Arc::new(Typed::<A>(plan.change))),
            summary: plan.summary,
        }
    }
}

/// A change of whichever action; it knows how it is applied.
#[derive(Clone)]
pub struct AnyChange(Arc<dyn Apply>);

impl AnyChange {
    /// Makes the change. Returns extra lines for the ledger.
    pub async fn apply(
        &self,
        io: Io<'_>,
        workload: &Workload,
        dry_run: bool,
    ) -> Result<Vec<String>, ApplyError> {
        self.0.apply(io, workload, dry_run).await
    }

    /// See [`Action::MARKED_BEFORE`].
    pub fn marked_before(&self) -> bool {
        self.0.marked_before()
    }

    /// The change, if it is one of that action's.
    pub fn get<A: Action>(&self) -> Option<&A::Change> {
        let typed: &dyn Any = self.0.as_ref();
        typed.downcast_ref::<Typed<A>>().map(|typed| &typed.0)
    }
}

impl fmt::Debug for AnyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for AnyChange {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_as(other.0.as_ref())
    }
}

/// A typed change with its action's apply.
trait Apply: Any + fmt::Debug + Send + Sync {
    fn apply<'a>(
        &'a self,
        io: Io<'a>,
        workload: &'a Workload,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, ApplyError>>;
    fn marked_before(&self) -> bool;
    fn same_as(&self, other: &dyn Apply) -> bool;
}

struct Typed<A: Action>(A::Change);

impl<A: Action> fmt::Debug for Typed<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:?}", A::KIND, self.0)
    }
}

impl<A: Action> Apply for Typed<A> {
    fn apply<'a>(
        &'a self,
        io: Io<'a>,
        workload: &'a Workload,
        dry_run: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, ApplyError>> {
        Box::pin(A::apply(io, workload, &self.0, dry_run))
    }

    fn marked_before(&self) -> bool {
        A::MARKED_BEFORE
    }

    fn same_as(&self, other: &dyn Apply) -> bool {
        let other: &dyn Any = other;
        other
            .downcast_ref::<Self>()
            .is_some_and(|other| other.0 == self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{fixtures::*, resolve, restore_config, rollback::Rollback, scale::Scale};
    use super::*;

    #[test]
    fn inputs_read_for_another_action_plan_as_nothing_read() {
        let workload = deployment("2", 3);
        let undo = action(json!({"action": "rollback"}));
        let history = AnyInputs::of(super::super::rollback::Inputs {
            replica_sets: vec![replica_set("1", "api:1"), replica_set("2", "api:2")],
            last_healthy: None,
        });
        let elsewhere = AnyInputs::of(restore_config::Inputs::default());
        let rollback = resolve(ActionKind::Rollback);
        assert!(rollback.plan(&request(&undo, &workload), &history).is_ok());
        for (case, inputs) in [
            ("none read", AnyInputs::default()),
            ("another's", elsewhere),
        ] {
            assert_eq!(
                rollback.plan(&request(&undo, &workload), &inputs),
                Err(Refusal::NoEarlierRevision("2".into())),
                "{case}"
            );
        }
    }

    #[test]
    fn a_change_knows_its_action_and_equals_only_the_same_change_of_it() {
        let workload = deployment("1", 2);
        let more = action(json!({"action": "scale", "scale": {"replicas": 4}}));
        let planned = resolve(ActionKind::Scale)
            .plan(&request(&more, &workload), &AnyInputs::default())
            .unwrap();
        assert_eq!(
            planned.change.get::<Scale>().unwrap().body["spec"]["replicas"],
            4
        );
        assert!(planned.change.get::<Rollback>().is_none());
        assert!(!planned.change.marked_before());
        assert_eq!(planned.clone(), planned);
        let fewer = action(json!({"action": "scale", "scale": {"replicas": 3}}));
        let other = resolve(ActionKind::Scale)
            .plan(&request(&fewer, &workload), &AnyInputs::default())
            .unwrap();
        assert_ne!(planned.change, other.change);
        let same_body_other_action = Planned::new::<Rollback>(Plan {
            change: super::super::rollback::Change {
                operations: planned.change.get::<Scale>().unwrap().body.clone(),
                revision: 1,
            },
            summary: planned.summary.clone(),
        });
        assert_ne!(planned, same_body_other_action);
    }
}
