//! Serving HTTPS: the certificate chain and key (PEM) and an optional
//! client CA become a rustls `ServerConfig` (TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`). The files are read again when they change or on
//! SIGHUP; a new connection takes the config current at its accept, so
//! open connections keep theirs, and a set of files that does not load is
//! logged while the old config stays in use. Also: the user a verified
//! client certificate stands for (its subject common name), and the TLS
//! config Wharf uses as a client.

use crate::config::TlsFiles;
use crate::watch::Watched;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Config(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Every certificate in a PEM file (a chain, or a CA bundle).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server config from the files as they are now.
fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                // A client without a certificate is served as anonymous
                // (or logs in with a password).
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The current TLS config, and where it comes from.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    watched: Watched,
}

impl Tls {
    /// Loads the files; at start-up a failure stops Wharf.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let config = build(files)?;
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        paths.extend(files.client_ca.clone());
        Ok(Tls {
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
            watched: Watched::new(paths),
        })
    }

    /// The config a new connection uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the files again if any changed.
    pub fn reload_if_changed(&self) {
        if self.watched.changed() {
            self.reload();
        }
    }

    /// Loads the files again; on failure the current config stays.
    pub fn reload(&self) {
        match build(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate loaded");
            }
            Err(e) => tracing::error!(
                error = %e,
                "the new TLS certificate or key does not load; still serving the previous one"
            ),
        }
    }

    /// Whether clients may present certificates.
    pub fn asks_client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// The user a (verified) client certificate stands for: its subject's
/// common name, if it is a usable user name.
pub fn client_user(chain: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    crate::auth::policy::valid_user_name(cn).then(|| cn.to_string())
}

/// TLS for Wharf as a client (of upstreams, and of a running Wharf from
/// the command line): the web PKI roots, plus the certificates of
/// `ca_file` (a private registry's own CA, or Wharf's).
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in read_certs(path).map_err(|e| format!("ca_file {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
