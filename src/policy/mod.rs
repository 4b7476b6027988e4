//! The RemediationPolicy controller: validates what the schema cannot and
//! reports `Ready`, the number of matched targets and observedGeneration.

mod grace;
pub mod grants;
pub mod overlap;
pub mod retention;

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt, api::PatchParams, runtime::controller::Action};
use tracing::{info, instrument};

use crate::reconcile::{Error, retry};
use crate::{
    conditions::{ConditionUpdate, is_true, set_condition},
    context::{Context, PlannedEvent, Watches},
    crd::{CircuitBreakerStatus, Incident, RemediationPolicy, RemediationPolicyStatus, Target},
    k8s::status_patch,
    names::{FIELD_MANAGER, POLICY_LABEL},
    remediation::safety,
    validation,
    workload::Workload,
};

/// The message of the `Ready` condition of a policy with these problems
/// (None when it has none): also what `healing-guard-operator test` says.
pub fn invalid_message(problems: &[validation::Problem]) -> Option<String> {
    (!problems.is_empty()).then(|| {
        format!(
            "{}; the policy guards nothing until this is fixed",
            validation::summary(problems)
        )
    })
}

/// Name used in metrics and logs.
pub const CONTROLLER: &str = "remediationpolicy";
/// The condition that says whether a policy is in force.
pub const READY: &str = "Ready";
/// The condition that says whether another policy selects the same workloads.
pub const OVERLAPPING: &str = "Overlapping";

/// Reconciles one policy.
#[instrument(skip_all, fields(policy = %policy.name_any(), namespace = policy.namespace().unwrap_or_default()))]
pub async fn reconcile(policy: Arc<RemediationPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.count_and_time(CONTROLLER);
    let namespace = policy
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let generation = policy.metadata.generation;

    let problems = ctx.checked.policy(&policy);
    let (last_triggered, circuit_breaker) = from_incidents(&ctx.watches, &policy, &namespace);
    ctx.metrics
        .set_circuit_breaker(&namespace, &name, circuit_breaker.open);
    let selected = selected_workloads(&ctx.watches, &namespace, &policy.spec.targets);
    let matched = i32::try_from(selected.len()).unwrap_or(i32::MAX);
    let neighbours = ctx
        .watches
        .policies
        .store()
        .state_filter(|p| p.namespace().as_deref() == Some(namespace.as_str()));
    let others: Vec<(String, &RemediationPolicy)> = neighbours
        .iter()
        .map(|p| (p.name_any(), p.as_ref()))
        .collect();
    let overlaps = overlap::overlaps(&policy, &name, &others, &selected);

    // Checked again every minute while something is missing: the
    // namespace's owner may grant it any time.
    let mut lacks_grants = false;
    let update = if let Some(message) = invalid_message(&problems) {
        ConditionUpdate {
            type_: READY,
            status: false,
            reason: "InvalidSpec",
            message,
        }
    } else if matched == 0 {
        let kinds = policy
            .spec
            .targets
            .iter()
            .map(|t| t.kind.to_string())
            .collect::<BTreeSet<_>>();
        let message = format!(
            "no {} in namespace {namespace} matches spec.targets; the policy guards nothing",
            kinds.into_iter().collect::<Vec<_>>().join(" or ")
        );
        ConditionUpdate {
            type_: READY,
            status: false,
            reason: "NoMatchingTargets",
            message,
        }
    } else {
        let guards = format!(
            "guards {matched} workload(s) with {} rule(s)",
            policy.spec.rules.len()
        );
        match authority(&ctx, &policy, &namespace).await? {
            None => ConditionUpdate {
                type_: READY,
                status: true,
                reason: "Valid",
                message: guards,
            },
            Some((reason, lacking)) => {
                lacks_grants = true;
                ConditionUpdate {
                    type_: READY,
                    status: false,
                    reason,
                    message: format!("{guards}, but {lacking}"),
                }
            }
        }
    };

    let old_status = policy.status.clone().unwrap_or_default();
    let was_ready = is_true(&old_status.conditions, READY);
    let had_ready = old_status.conditions.iter().any(|c| c.type_ == READY);
    let mut status = RemediationPolicyStatus {
        observed_generation: generation,
        matched_targets: Some(matched),
        last_triggered,
        circuit_breaker: Some(circuit_breaker),
        ..old_status.clone()
    };
    let event = if update.status {
        (!was_ready).then(|| PlannedEvent::normal("Ready", "Validate", update.message.clone()))
    } else {
        (was_ready || !had_ready || !same_reason(&old_status, update.reason))
            .then(|| PlannedEvent::warning(update.reason, "Validate", update.message.clone()))
    };
    let ready = update.status;
    let now = Time(Timestamp::now());
    set_condition(&mut status.conditions, update, generation, &now);
    let overlap_event = overlapping(&mut status, &policy, &overlaps, generation, &now);

    if status != old_status {
        ctx.may_write()?;
        let api: Api<RemediationPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &status_patch::<RemediationPolicy>(&status, None).map_err(Error::Serialize)?,
        )
        .await?;
        info!(ready, matched, "policy status updated");
    }
    for event in event.into_iter().chain(overlap_event) {
        ctx.publish(policy.as_ref(), event.into_event()).await;
    }
    let look_again = prune(&ctx, &policy, &namespace).await?;
    let grace_ends = grace::expire_previous_values(&ctx, &policy, &namespace).await?;
    let look_again = [
        look_again,
        grace_ends,
        lacks_grants.then_some(GRANTS_RECHECK),
    ]
    .into_iter()
    .flatten()
    .min();
    ctx.backoffs
        .reset(&retry::backoff_key(CONTROLLER, policy.as_ref()));
    // Workload and incident changes trigger a new reconcile (see the
    // controller's watches); time alone ends reopen windows and grace periods.
    Ok(match look_again {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// How often a policy whose remediator lacks a grant looks again.
const GRANTS_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the namespace's remediator may do all the policy's ladders and
/// probes need: `None` if so, else the condition's reason and what lacks.
async fn authority(
    ctx: &Context,
    policy: &RemediationPolicy,
    namespace: &str,
) -> Result<Option<(&'static str, String)>, Error> {
    let named = policy.spec.service_account_name.as_deref();
    let account = format!("{namespace}/{}", ctx.remediators.account(named));
    let remediator = ctx.remediator(namespace, named)?;
    match grants::missing(&remediator, namespace, &grants::needed(&policy.spec)).await {
        Ok(lacking) if lacking.is_empty() => Ok(None),
        Ok(lacking) => Ok(Some((
            "MissingGrants",
            grants::describe(&account, &lacking),
        ))),
        // The operator was not let act as that account.
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Some((
            "CannotActAs",
            format!(
                "the operator may not act as ServiceAccount {account}: {}; nothing is changed \
                 until the namespace lets it (docs/security.md)",
                status.message
            ),
        ))),
        Err(error) => Err(error.into()),
    }
}

fn same_reason(status: &RemediationPolicyStatus, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.reason == reason)
}

/// Deletes the closed incidents the policy no longer keeps; says when to
/// look again for those still inside their reopen window.
async fn prune(
    ctx: &Context,
    policy: &RemediationPolicy,
    namespace: &str,
) -> Result<Option<std::time::Duration>, Error> {
    let name = policy.name_any();
    let mine = ctx.watches.incidents.store().state_filter(|i| {
        i.namespace().as_deref() == Some(namespace) && i.spec.source.policy.as_ref() == Some(&name)
    });
    let settings = &policy.spec.detection;
    let now = Timestamp::now();
    let look_again = retention::next_look(&mine, settings, now).map(|at| {
        std::time::Duration::try_from(at.duration_since(now)).unwrap_or_default()
            + std::time::Duration::from_secs(1)
    });
    let stale = retention::to_prune(&mine, settings, now);
    let api: Api<Incident> = Api::namespaced(ctx.client.clone(), namespace);
    for incident in &stale {
        ctx.may_write()?;
        match api.delete(incident, &Default::default()).await {
            Ok(_) => info!(%incident, keep = settings.keep_closed, "closed incident pruned"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(look_again)
}

/// Sets the Overlapping condition (once there has been an overlap, it stays
/// and says when it is gone); returns the Event for a new overlap.
fn overlapping(
    status: &mut RemediationPolicyStatus,
    policy: &RemediationPolicy,
    overlaps: &[overlap::Overlap],
    generation: Option<i64>,
    now: &Time,
) -> Option<PlannedEvent> {
    let had = status.conditions.iter().any(|c| c.type_ == OVERLAPPING);
    if overlaps.is_empty() && !had {
        return None;
    }
    let update = if overlaps.is_empty() {
        ConditionUpdate {
            type_: OVERLAPPING,
            status: false,
            reason: "NoOverlap",
            message: "no other policy selects these workloads".into(),
        }
    } else {
        let shadowed = overlaps.iter().any(|o| !o.this_guards);
        ConditionUpdate {
            type_: OVERLAPPING,
            status: true,
            reason: if shadowed { "Shadowed" } else { "Shadowing" },
            message: overlap::describe(overlaps, policy),
        }
    };
    let warn = update.status;
    let (reason, message) = (update.reason, update.message.clone());
    (set_condition(&mut status.conditions, update, generation, now) && warn)
        .then(|| PlannedEvent::warning(reason, "Validate", message))
}

/// What the policy's incidents say about it: when its rules last opened one
/// (derived, so the detector never writes the policy) and its circuit breaker.
fn from_incidents(
    watches: &Watches,
    policy: &RemediationPolicy,
    namespace: &str,
) -> (Option<Time>, CircuitBreakerStatus) {
    let name = policy.name_any();
    let mine = watches.incidents.store().state_filter(|i| {
        i.namespace().as_deref() == Some(namespace) && i.policy_name() == Some(&name)
    });
    let last_triggered = mine
        .iter()
        .filter(|i| i.labels().get(POLICY_LABEL) == Some(&name))
        .filter_map(|i| i.metadata.creation_timestamp.clone())
        .max_by_key(|t| t.0);
    let reset_at = policy
        .annotations()
        .get(safety::BREAKER_RESET_ANNOTATION)
        .and_then(|t| t.parse().ok());
    let steps = safety::applied_steps(mine.iter().map(AsRef::as_ref));
    let breaker = safety::breaker(
        &steps,
        policy.spec.safety.circuit_breaker_threshold,
        reset_at,
    );
    (
        last_triggered,
        CircuitBreakerStatus {
            open: breaker.open,
            consecutive_failures: breaker.consecutive_failures,
        },
    )
}

/// The distinct workloads the targets select, from the shared watches.
fn selected_workloads(watches: &Watches, namespace: &str, targets: &[Target]) -> Vec<Workload> {
    let workloads = watches.workloads(Some(namespace)).into_iter();
    let mut selected: Vec<Workload> = workloads
        .filter(|workload| targets.iter().any(|t| workload.is_selected_by(t)))
        .collect();
    selected.sort_by_key(|w| (w.kind(), w.name()));
    selected
}

/// Retries a failed reconcile with the policy's own backoff, reset when
/// `reconcile` succeeds.
pub fn error_policy(policy: Arc<RemediationPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    retry::error_policy(CONTROLLER, policy.as_ref(), error, &ctx)
}
