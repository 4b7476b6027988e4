//! Reading a test file and the manifests it names, and validating the
//! policies first: an invalid policy is reported with the very message its
//! `Ready` condition would carry, and its cases do not run.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use kube::ResourceExt;
use serde::Deserialize;

use super::case::TestFile;
use crate::crd::{EscalationPolicy, NotificationChannel, RemediationPolicy};

/// Why a test file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error(
        "{path}: document {index} is a {kind}; a test reads RemediationPolicy, NotificationChannel and EscalationPolicy"
    )]
    Kind {
        path: String,
        index: usize,
        kind: String,
    },
    #[error("{path}: names no RemediationPolicy")]
    NoPolicy { path: String },
    #[error("{path}: has no cases: it would check nothing")]
    NoCases { path: String },
}

/// A test file with what it names, read.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub file: TestFile,
    pub policies: Vec<Arc<RemediationPolicy>>,
    pub channels: Vec<Arc<NotificationChannel>>,
    pub escalations: Vec<Arc<EscalationPolicy>>,
    /// Each invalid policy and its `Ready` condition's message.
    pub invalid: Vec<(String, String)>,
    /// The policies' problems, remembered for every case of the file.
    pub checked: Arc<crate::validation::Checked>,
}

/// The namespace an object without one is read into.
const DEFAULT_NAMESPACE: &str = "default";

/// Reads a test file and the manifests it names (relative to it).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = read(path)?;
    let file: TestFile = serde_yaml::from_str(&text).map_err(|source| LoadError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    if file.cases.is_empty() {
        return Err(LoadError::NoCases {
            path: path.display().to_string(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut manifests = Manifests::default();
    for name in file.policies.iter().chain(&file.communication) {
        manifests.read(&dir.join(name))?;
    }
    if manifests.policies.is_empty() {
        return Err(LoadError::NoPolicy {
            path: path.display().to_string(),
        });
    }
    Ok(loaded(path, file, manifests))
}

/// The file with its manifests, each policy's problems found.
fn loaded(path: &Path, file: TestFile, manifests: Manifests) -> Loaded {
    let checked = Arc::<crate::validation::Checked>::default();
    Loaded {
        path: path.to_owned(),
        invalid: invalid(&manifests.policies, &checked),
        checked,
        file,
        policies: manifests.policies,
        channels: manifests.channels,
        escalations: manifests.escalations,
    }
}

/// A file of policies alone (a replay's), validated like a test file's.
pub fn load_policies(path: &Path) -> Result<Loaded, LoadError> {
    let mut manifests = Manifests::default();
    manifests.read(path)?;
    if manifests.policies.is_empty() {
        return Err(LoadError::NoPolicy {
            path: path.display().to_string(),
        });
    }
    let file = TestFile {
        policies: Vec::new(),
        communication: Vec::new(),
        workloads: Vec::new(),
        cases: Vec::new(),
    };
    Ok(loaded(path, file, manifests))
}

/// Each invalid policy, and its `Ready` condition's message.
fn invalid(
    policies: &[Arc<RemediationPolicy>],
    checked: &crate::validation::Checked,
) -> Vec<(String, String)> {
    policies
        .iter()
        .filter_map(|policy| {
            let message = crate::policy::invalid_message(&checked.policy(policy))?;
            Some((
                format!(
                    "{}/{}",
                    policy.namespace().unwrap_or_default(),
                    policy.name_any()
                ),
                message,
            ))
        })
        .collect()
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The objects of the manifests read so far.
#[derive(Default)]
struct Manifests {
    policies: Vec<Arc<RemediationPolicy>>,
    channels: Vec<Arc<NotificationChannel>>,
    escalations: Vec<Arc<EscalationPolicy>>,
}

impl Manifests {
    fn read(&mut self, path: &Path) -> Result<(), LoadError> {
        let shown = path.display().to_string();
        let text = read(path)?;
        let parse = |source| LoadError::Parse {
            path: shown.clone(),
            source,
        };
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(document).map_err(parse)?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match kind.as_str() {
                "RemediationPolicy" => {
                    let policy = serde_yaml::from_value(value).map_err(parse)?;
                    self.policies.push(Arc::new(namespaced(policy)));
                }
                "NotificationChannel" => {
                    let channel = serde_yaml::from_value(value).map_err(parse)?;
                    self.channels.push(Arc::new(namespaced(channel)));
                }
                "EscalationPolicy" => {
                    let escalation = serde_yaml::from_value(value).map_err(parse)?;
                    self.escalations.push(Arc::new(namespaced(escalation)));
                }
                _ => {
                    return Err(LoadError::Kind {
                        path: shown,
                        index: index + 1,
                        kind: if kind.is_empty() {
                            "document without a kind".into()
                        } else {
                            kind
                        },
                    });
                }
            }
        }
        Ok(())
    }
}

/// The object as the API server would hold it: in a namespace, with a
/// uid and a first generation (what checks are remembered by).
fn namespaced<K: kube::Resource>(mut object: K) -> K {
    let meta = object.meta_mut();
    if meta.namespace.is_none() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    if meta.uid.is_none() {
        meta.uid = Some(format!(
            "test-{}-{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        ));
    }
    meta.generation.get_or_insert(1);
    object
}
