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

/// Makes the change, as the namespace's remediator (`account`, else the
/// default one), and returns the extra lines it reports for the ledger.
/// Only a current leader makes it.
pub async fn act(
    ctx: &Context,
    account: Option<&str>,
    workload: &Workload,
    effect: &Effect,
) -> Result<Vec<String>, ActError> {
    ctx.may_write()?;
    let remediator = ctx.remediator(&workload.namespace(), account)?;
    let io = Io {
        client: &remediator,
        http: &ctx.http,
    };
    let lines = effect
        .planned
        .change
        .apply(io, workload, effect.dry_run)
        .await?;
    info!(
        target = %workload.reference(),
        change = %effect.planned.summary,
        dry_run = effect.dry_run,
        "remediation change made"
    );
    Ok(lines)
}
