//! Which cluster, as whom: the kubeconfig and context a command names
//! (`--kubeconfig`, `--context`), else what kubectl would use (KUBECONFIG,
//! `~/.kube/config`, or the pod's own account in a cluster).

use std::path::Path;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::PluginError;

/// A client for the cluster the flags name, and the namespace the chosen
/// context defaults to.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, PluginError> {
    let config = match (kubeconfig, context) {
        (None, None) => Config::infer().await?,
        (path, context) => {
            let file = match path {
                Some(path) => Kubeconfig::read_from(path)?,
                None => Kubeconfig::read()?,
            };
            if let Some(context) = context {
                has_context(&file, context, path)?;
            }
            let options = KubeConfigOptions {
                context: context.map(str::to_owned),
                ..KubeConfigOptions::default()
            };
            Config::from_custom_kubeconfig(file, &options).await?
        }
    };
    Ok(Client::try_from(config)?)
}

/// Whether `file` has the context; if not, an error that names it and the
/// contexts there are (kube's own says only "failed to load current
/// context", which reads as if the current one were broken).
pub fn has_context(
    file: &Kubeconfig,
    context: &str,
    path: Option<&Path>,
) -> Result<(), PluginError> {
    if file.contexts.iter().any(|c| c.name == context) {
        return Ok(());
    }
    let known: Vec<&str> = file.contexts.iter().map(|c| c.name.as_str()).collect();
    Err(PluginError::NoContext {
        context: context.to_owned(),
        file: path.map_or_else(
            || "the kubeconfig (KUBECONFIG or ~/.kube/config)".to_owned(),
            |p| p.display().to_string(),
        ),
        known: if known.is_empty() {
            "no contexts".to_owned()
        } else {
            known.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = "
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]
users: [{name: u, user: {token: t}}]
contexts:
- {name: admin@hgo, context: {cluster: c, user: u}}
- {name: prod, context: {cluster: c, user: u, namespace: healing-guard}}
current-context: admin@hgo
";

    #[test]
    fn an_unknown_context_is_named_with_those_there_are() {
        let file = Kubeconfig::from_yaml(TWO_CONTEXTS).unwrap();
        assert!(has_context(&file, "prod", None).is_ok());
        let error = has_context(&file, "staging", Some(Path::new("/tmp/kc")))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "context \"staging\" is not in /tmp/kc; it has: admin@hgo, prod"
        );
    }

    #[tokio::test]
    async fn the_named_context_sets_the_default_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, TWO_CONTEXTS).unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = client(Some(&path), Some("prod")).await.unwrap();
        assert_eq!(client.default_namespace(), "healing-guard");
        let client = client_for_current(&path).await;
        assert_eq!(client.default_namespace(), "default");
    }

    async fn client_for_current(path: &Path) -> Client {
        client(Some(path), None).await.unwrap()
    }
}
