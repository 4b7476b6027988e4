//! `kubectl healing-guard`: what the responder at 3 a.m. types. Reads -
//! list, status (with `--watch`), timeline, report - and the runbook's
//! actions - declare, ack, approve, resolve, decline. Each concern has its
//! file; what decides what to show is pure and tested without a cluster,
//! what talks to the API server is kept thin.

pub mod act;
pub mod cli;
pub mod complete;
pub mod connect;
#[cfg(test)]
mod fixtures;
pub mod list;
pub mod output;
pub mod record;
pub mod status;
pub mod watch;

pub use act::{
    Declaration, ack, approve, declare, decline, parse_target, resolve, resume_sync, whoami,
};
pub use record::{report_text, timeline};

/// What a command can go wrong with.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{}", said(.0))]
    Kube(#[from] kube::Error),
    #[error("incident {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("no cluster to talk to: {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("context {context:?} is not in {file}; it has: {known}")]
    NoContext {
        context: String,
        file: String,
        known: String,
    },
    #[error("watching: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("the API server did not say who you are")]
    WhoAmI,
    #[error("--target must be Deployment/NAME or StatefulSet/NAME, not {0:?}")]
    Target(String),
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("encoding: {0}")]
    EncodeYaml(#[from] serde_yaml::Error),
    #[error("incident {0} holds no GitOps sync: nothing to resume")]
    NoHold(String),
}

/// What the API server said, as kubectl says it: kube's own text for a
/// refusal repeats the whole Status, which buries the message at 3 a.m.
fn said(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!(
            "from the API server ({}): {}",
            status.reason, status.message
        ),
        other => other.to_string(),
    }
}

/// The Incident `name`, with a not-found that names what was looked for.
pub async fn get(
    api: &kube::Api<crate::crd::Incident>,
    name: &str,
) -> Result<crate::crd::Incident, PluginError> {
    api.get_opt(name)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            name: name.to_owned(),
            namespace: api.namespace().unwrap_or_default().to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_kubectl_says_it() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "incidents.healing-guard.io \"api\" is forbidden: User \"bob\" cannot get resource \"incidents\"",
        }))
        .unwrap();
        let error = PluginError::from(kube::Error::Api(Box::new(status)));
        assert_eq!(
            error.to_string(),
            "from the API server (Forbidden): incidents.healing-guard.io \"api\" is forbidden: \
             User \"bob\" cannot get resource \"incidents\""
        );
    }
}
