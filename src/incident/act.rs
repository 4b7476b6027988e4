//! Act: make the one change a decision asks for. Every write the incident
//! controller makes to the world goes through here.

use tracing::info;

use super::decision::Effect;
use crate::{
    context::Context,
    leader::Fenced,
    remediation::actions::{ApplyError, Io},
    workload::Workload,
};

/// How a dry run's hold line begins: kept in the ledger with the dry run's
/// own line (what a real run would also have held).
pub const WOULD_SUSPEND: &str = "dry run: would suspend ";

/// Whose hold a suspension is: the incident (`namespace/name`) and its step.
#[derive(Clone, Copy, Debug)]
pub struct HeldFor<'a> {
    pub holder: &'a str,
    pub step: &'a str,
}

/// Why the change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Fenced(#[from] Fenced),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Authority(#[from] crate::authority::AuthorityError),
}

/// Lifts the hold this incident has on `owner`, as the namespace's
/// remediator. Only a current leader does.
pub async fn resume(
    ctx: &Context,
    namespace: &str,
    account: Option<&str>,
    owner: &crate::crd::GitOpsOwner,
) -> Result<(), ActError> {
    ctx.may_write()?;
    let remediator = ctx.remediator(namespace, account)?;
    crate::gitops::client::resume(&remediator, owner)
        .await
        .map_err(|source| ApplyError::Hold {
            owner: owner.to_string(),
            source,
        })?;
    info!(%owner, "GitOps sync resumed");
    Ok(())
}

/// Pushes the revert branch of a hold, with the credentials of the
/// policy's Secret read as the namespace's remediator, through the
/// operator's guarded client. A failure is the outcome, not an error: it
/// is recorded, not retried.
pub async fn push_revert(
    ctx: &Context,
    namespace: &str,
    account: Option<&str>,
    plan: &crate::gitops::revert::RevertPlan,
) -> Result<Result<crate::gitops::revert::Pushed, String>, ActError> {
    ctx.may_write()?;
    let remediator = ctx.remediator(namespace, account)?;
    let basic_auth = match &plan.secret {
        Some(name) => {
            let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(remediator, namespace);
            match secrets.get_opt(name).await {
                Ok(Some(secret)) => {
                    let values = crate::k8s::secret_text(&secret);
                    match (values.get("username"), values.get("password")) {
                        (Some(user), Some(password)) => Some((user.clone(), password.clone())),
                        _ => {
                            return Ok(Err(format!(
                                "Secret {name} needs the keys username and password"
                            )));
                        }
                    }
                }
                Ok(None) => return Ok(Err(format!("Secret {name} not found"))),
                Err(error) => {
                    let why =
                        crate::authority::refusal(&error).unwrap_or_else(|| error.to_string());
                    return Ok(Err(format!("Secret {name} could not be read: {why}")));
                }
            }
        }
        None => None,
    };
    let remote = crate::gitops::smart_http::Remote {
        url: plan.url.clone(),
        basic_auth,
    };
    let pushed = crate::gitops::revert::push(&ctx.http, &remote, plan)
        .await
        .map_err(|error| error.to_string());
    match &pushed {
        Ok(done) => {
            info!(branch = %done.branch, commit = %done.commit, url = %plan.url, "revert branch pushed")
        }
        Err(error) => {
            tracing::warn!(branch = %plan.branch, url = %plan.url, %error, "revert branch not pushed")
        }
    }
    Ok(pushed)
}

/// Makes the change, as the namespace's remediator (`account`, else the
/// default one), and returns the extra lines it reports for the ledger.
/// Only a current leader makes it.
pub async fn act(
    ctx: &Context,
    account: Option<&str>,
    workload: &Workload,
    effect: &Effect,
    held_for: HeldFor<'_>,
) -> Result<Vec<String>, ActError> {
    ctx.may_write()?;
    let remediator = ctx.remediator(&workload.namespace(), account)?;
    let io = Io {
        client: &remediator,
        http: &ctx.http,
    };
    let mut lines = match &effect.hold {
        Some(hold) => suspend(&remediator, effect, hold, held_for).await?,
        None => Vec::new(),
    };
    lines.extend(effect.notes.iter().cloned());
    if effect.hold_only {
        return Ok(lines);
    }
    let changed = effect
        .planned
        .change
        .apply(io, workload, effect.dry_run)
        .await?;
    lines.extend(changed);
    info!(
        target = %workload.reference(),
        change = %effect.planned.summary,
        dry_run = effect.dry_run,
        "remediation change made"
    );
    if let Some(batch) = &effect.first_batch {
        // The step is applied either way: a first batch that fails is the
        // next follow-up's to make, and said in the log, not the ledger.
        match batch.change.apply(io, workload, effect.dry_run).await {
            Ok(made) => {
                lines.extend(made);
                info!(target = %workload.reference(), change = %batch.summary, "first batch made");
            }
            Err(error) => {
                tracing::warn!(target = %workload.reference(), change = %batch.summary, %error,
                    "first batch not made; the step's follow-up makes it")
            }
        }
    }
    Ok(lines)
}

/// Suspends the GitOps object that would undo the change, before it is
/// made; its line for the ledger, with the command that undoes it.
async fn suspend(
    remediator: &kube::Client,
    effect: &Effect,
    hold: &crate::gitops::SyncState,
    HeldFor { holder, step }: HeldFor<'_>,
) -> Result<Vec<String>, ApplyError> {
    crate::gitops::client::suspend(remediator, &hold.owner, holder, step, effect.dry_run)
        .await
        .map_err(|source| ApplyError::Hold {
            owner: hold.owner.to_string(),
            source,
        })?;
    info!(owner = %hold.owner, incident = %holder, dry_run = effect.dry_run, "GitOps sync held");
    let held = crate::gitops::sync::describe(hold);
    let undo = crate::gitops::client::undo_command(&hold.owner);
    // Argo CD is held by turning its self-heal off; Flux by suspending.
    let how = match hold.owner.kind {
        crate::crd::GitOpsKind::Application => " (self-heal off)",
        _ => "",
    };
    Ok(vec![if effect.dry_run {
        format!("{WOULD_SUSPEND}{held}{how} so that Git does not undo this step")
    } else {
        format!(
            "{}{held}{how} so that Git does not undo this step; undo: {undo}",
            crate::gitops::HOLD_LINE
        )
    }])
}
