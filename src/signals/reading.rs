//! What a probe's check reads (its Secrets, its CA) and what it finds:
//! shared by the checks of one file each (HTTP and Prometheus in `check`,
//! Redis and PostgreSQL in `stores`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::tls::{self, TlsError};
use crate::{
    crd::{ProbeTls, SecretKeyRef, SecretRef},
    placeholders::FillError,
};

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum Misconfigured {
    #[error("Secret {0} not found")]
    SecretMissing(String),
    #[error("Secret {secret} has no key {key}")]
    KeyMissing { secret: String, key: String },
    #[error("reading Secret {secret}: {source}")]
    SecretUnreadable {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("{field}: {source}")]
    Placeholders {
        field: &'static str,
        #[source]
        source: FillError,
    },
    #[error("{field}: {source}")]
    Tls {
        field: &'static str,
        #[source]
        source: TlsError,
    },
    #[error("Secret {secret}: url: {source}")]
    SslMode {
        secret: String,
        #[source]
        source: TlsError,
    },
    #[error("{field}: {source}")]
    CaSecret {
        field: &'static str,
        #[source]
        source: Box<Misconfigured>,
    },
    #[error("{field}: Secret {secret} key {key} {source}")]
    Ca {
        field: &'static str,
        secret: String,
        key: String,
        #[source]
        source: TlsError,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What a check found.
pub(super) struct Measured {
    pub(super) passed: bool,
    pub(super) inconclusive: bool,
    pub(super) value: Option<f64>,
    pub(super) detail: String,
}

impl Measured {
    pub(super) fn failed(detail: String) -> Measured {
        Measured {
            passed: false,
            inconclusive: false,
            value: None,
            detail,
        }
    }
}

pub(super) async fn secret_values(
    client: &Client,
    namespace: &str,
    secret: &SecretRef,
) -> Result<BTreeMap<String, String>, Misconfigured> {
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&secret.name)
        .await
        .map_err(|source| Misconfigured::SecretUnreadable {
            secret: secret.name.clone(),
            source,
        })?
        .ok_or_else(|| Misconfigured::SecretMissing(secret.name.clone()))?;
    Ok(crate::k8s::secret_text(&found))
}

pub(super) async fn secret_key(
    client: &Client,
    namespace: &str,
    secret: &SecretRef,
    key: &'static str,
) -> Result<String, Misconfigured> {
    secret_values(client, namespace, secret)
        .await?
        .remove(key)
        .ok_or_else(|| Misconfigured::KeyMissing {
            secret: secret.name.clone(),
            key: key.to_owned(),
        })
}

/// The CA a probe's `tls` names, checked to hold PEM certificates: a CA
/// that cannot be read is the probe's misconfiguration, never the
/// service's failure. `field` is the probe's `tls.caSecretRef`.
pub(super) async fn ca_pem(
    client: &Client,
    namespace: &str,
    tls: &ProbeTls,
    field: &'static str,
) -> Result<(String, rustls::RootCertStore), Misconfigured> {
    let SecretKeyRef { name, key } = &tls.ca_secret_ref;
    let unreadable = |source| Misconfigured::CaSecret {
        field,
        source: Box::new(source),
    };
    let pem = secret_values(client, namespace, &SecretRef { name: name.clone() })
        .await
        .map_err(unreadable)?
        .remove(key)
        .ok_or_else(|| {
            unreadable(Misconfigured::KeyMissing {
                secret: name.clone(),
                key: key.clone(),
            })
        })?;
    let roots = tls::ca_roots(pem.as_bytes()).map_err(|source| Misconfigured::Ca {
        field,
        secret: name.clone(),
        key: key.clone(),
        source,
    })?;
    Ok((pem, roots))
}
