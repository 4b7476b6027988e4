//! Errors of a reconcile, and what the error policy (`super::retry`) needs
//! to know of them.

use crate::remediation::actions::ApplyError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached; retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// A status could not be serialized; a bug, logged and retried slowly.
    #[error("serializing status: {0}")]
    Serialize(#[source] serde_json::Error),
    /// This replica may not write now: its lease's renewal is not yet
    /// confirmed, or it has lost the lease (and is stopping).
    #[error(transparent)]
    Fenced(#[from] crate::leader::Fenced),
    /// A service an action called answered otherwise than expected.
    #[error(transparent)]
    Call(#[from] crate::remediation::actions::CallError),
    /// What an action would take as its own was made by someone else.
    #[error("{0}")]
    Foreign(String),
    /// No client could be built to act as a namespace's remediator.
    #[error(transparent)]
    Authority(#[from] crate::authority::AuthorityError),
    /// The object has no name or namespace; it cannot be reconciled.
    #[error("object without {0}")]
    MissingMetadata(&'static str),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

impl From<ApplyError> for Error {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Kube(error) | ApplyError::Hold { source: error, .. } => Error::Kube(error),
            ApplyError::Encode(error) => Error::Serialize(error),
            ApplyError::Call(error) => Error::Call(error),
            ApplyError::Foreign(why) => Error::Foreign(why),
        }
    }
}

impl Error {
    /// Whether a write lost a race (409): decide again from a fresh read, soon.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(error) if crate::k8s::is_conflict(error))
    }

    /// Whether the write was held back by the lease's fence: look again
    /// soon (a replica that lost the lease stops before then).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced(_))
    }

    /// Whether retrying cannot help until the object changes.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::MissingMetadata(_))
    }

    /// A short, bounded label for the errors metric.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(status)) => format!("api_{}", status.code),
            Error::Kube(_) => "kube".into(),
            Error::Serialize(_) => "serialize".into(),
            Error::Call(_) => "service".into(),
            Error::Foreign(_) => "foreign".into(),
            Error::Authority(_) => "authority".into(),
            Error::MissingMetadata(_) => "missing_metadata".into(),
            Error::Fenced(_) => "fenced".into(),
        }
    }
}
