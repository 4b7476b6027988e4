//! Why an action does not apply (a refusal, decided before anything is
//! sent) and why a change it sent was not made.

use crate::crd::ActionKind;

/// Why an action cannot apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The namespace's remediator may not read what the step needs.
    #[error("403 {0}")]
    NotGranted(String),
    #[error("no earlier revision to roll back to (current revision {0})")]
    NoEarlierRevision(String),
    #[error(
        "no revision of this Deployment was seen healthy yet, so there is no LastHealthy to roll back to"
    )]
    LastHealthyUnknown,
    #[error("the last healthy revision {0} is no longer in the rollout history")]
    HealthyRevisionGone(i64),
    #[error("{0} applies to Deployments only")]
    DeploymentOnly(ActionKind),
    #[error("scale would not raise replicas: already {current} (target {target})")]
    NothingToScale { current: i32, target: i32 },
    #[error("the action has no settings for {0}")]
    MissingSettings(ActionKind),
    #[error("container {0:?} not found")]
    NoSuchContainer(String),
    #[error("no known-good snapshot of ConfigMap {0} yet")]
    NoSnapshot(String),
    #[error(
        "no known-good snapshot of ConfigMap {0} that the operator took; ignored {1}, labelled as snapshots but written by someone else"
    )]
    UntrustedSnapshots(String, String),
    #[error("{0}")]
    Unusable(String),
    #[error(
        "a call was begun at {0} and how it went was never recorded (the operator stopped); it is not made again because the action is not idempotent: check the service by hand"
    )]
    OutcomeUnknown(String),
    #[error("{0} is already as the patch says; nothing to patch")]
    NothingToPatch(String),
    #[error("ConfigMap {0} already matches its last known-good snapshot; nothing to restore")]
    NothingToRestore(String),
    /// The Deployment controller has not yet seen the Deployment's latest
    /// spec, so its revision and history are not settled: waited for.
    #[error(
        "the Deployment controller has not yet seen generation {generation} (it last saw {observed}), so the rollout history is not settled"
    )]
    HistoryUnsettled { generation: i64, observed: i64 },
    #[error(
        "it could leave fewer than {min_ready} ready replicas: {ready} ready, up to {max_unavailable} taken down at once"
    )]
    BelowReadyFloor {
        ready: i32,
        max_unavailable: i32,
        min_ready: i32,
    },
}

impl Refusal {
    /// Whether the step is skipped rather than failed: nothing was wrong
    /// with it, there was just nothing for it to do, so the ladder moves on
    /// and no action is counted against the safety limits.
    pub fn is_moot(&self) -> bool {
        matches!(
            self,
            Refusal::NothingToRestore(_) | Refusal::NothingToPatch(_)
        )
    }

    /// Whether the step waits and plans again shortly: what it would read
    /// is about to change by itself. It fails after `UNSETTLED_LIMIT`.
    pub fn is_passing(&self) -> bool {
        matches!(self, Refusal::HistoryUnsettled { .. })
    }
}

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The planned change could not be encoded; a bug.
    #[error("encoding the change: {0}")]
    Encode(#[from] serde_json::Error),
    /// A service answered otherwise than expected, or not at all.
    #[error(transparent)]
    Call(#[from] CallError),
    /// What the step would take as its own was made by someone else.
    #[error("{0}")]
    Foreign(String),
    /// Holding the GitOps object first failed: the change is not made
    /// without it.
    #[error("suspending {owner} first (so that Git does not undo the step): {source}")]
    Hold {
        owner: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Whether the change lost a race (409): decide again from a fresh read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApplyError::Kube(error) | ApplyError::Hold { source: error, .. } if crate::k8s::is_conflict(error))
    }

    /// What went wrong, for the ledger, naming who answered: the API
    /// server, the service a step called, or the operator itself.
    pub fn failure(&self, dry_run: bool) -> String {
        let change = if dry_run { "dry run" } else { "change" };
        match self {
            ApplyError::Kube(_) => format!("the API server refused the {change}"),
            ApplyError::Hold { .. } => {
                format!("the API server refused the hold before the {change}")
            }
            ApplyError::Call(_) => "the call to the service failed".to_owned(),
            ApplyError::Encode(_) | ApplyError::Foreign(_) => {
                format!("the operator refused the {change}")
            }
        }
    }

    /// A remediator's missing grant (403), in words naming the Role that
    /// would grant it.
    fn forbidden(&self) -> Option<String> {
        match self {
            ApplyError::Kube(error) => {
                crate::authority::refusal(error).map(|why| format!("403 {why}"))
            }
            _ => None,
        }
    }

    /// The API server's message when it refused the change for good: the
    /// same write would be refused again (an invalid value, a forbidden
    /// write, an admission webhook's denial). None for what a retry may
    /// cure: a conflict, throttling, a vanished object, a lost connection.
    pub fn refusal(&self) -> Option<String> {
        match self {
            ApplyError::Kube(kube::Error::Api(status))
                if (400..500).contains(&status.code)
                    && !matches!(status.code, 404 | 408 | 409 | 429) =>
            {
                Some(
                    self.forbidden()
                        .unwrap_or_else(|| format!("{} {}", status.code, status.message)),
                )
            }
            ApplyError::Encode(error) => Some(error.to_string()),
            ApplyError::Call(error) => Some(error.to_string()),
            ApplyError::Foreign(why) => Some(why.clone()),
            ApplyError::Hold { owner, source } => match source {
                kube::Error::Api(status)
                    if (400..500).contains(&status.code)
                        && !matches!(status.code, 404 | 408 | 409 | 429) =>
                {
                    let why = crate::authority::refusal(source)
                        .map(|why| format!("403 {why}"))
                        .unwrap_or_else(|| format!("{} {}", status.code, status.message));
                    Some(format!("suspending {owner} was refused: {why}"))
                }
                _ => None,
            },
            ApplyError::Kube(_) => None,
        }
    }
}

/// Why a call did not get the answer it expected.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer after {tries} tries: {error}")]
    NoAnswerAfterTries { tries: u32, error: String },
    #[error(
        "no answer: {0}; the call may have been made, and it is not made again (not idempotent)"
    )]
    NoAnswer(String),
    #[error("answered {code}, not what was expected: {excerpt}")]
    Unexpected { code: i32, excerpt: String },
}
