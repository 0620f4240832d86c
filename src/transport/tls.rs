//! TLS for SIP over rustls on the `ring` provider (RFC 3261 §26.3.1,
//! RFC 5922 §7): servers are verified against the SIP domain by default,
//! with the system roots plus `tls.ca_file`; `verify_server = false` is
//! allowed but warned about.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("tls: {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("tls: a TLS listener needs tls.certificate and tls.private_key")]
    MissingServerIdentity,
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::File {
            path: path.into(),
            reason: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::File {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Client side: one connector shared by every TLS flow.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl ClientTls {
    pub fn new(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = if cfg.verify_server {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if let Some(ca) = &cfg.ca_file {
                for cert in load_certs(ca)? {
                    roots.add(cert)?;
                }
            }
            tracing::debug!(system_roots = added, ca_file = ?cfg.ca_file, "TLS server verification on");
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            tracing::warn!("tls.verify_server = false: PBX certificates are NOT verified");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth()
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Handshakes over `tcp`, checking the certificate against `server_name`
    /// (a domain or an IP address literal).
    pub async fn connect(
        &self,
        server_name: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, super::Error> {
        let remote = tcp.peer_addr().map_err(|source| super::Error::Handshake {
            remote: ([0, 0, 0, 0], 0).into(),
            source,
        })?;
        let name = ServerName::try_from(
            server_name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|_| super::Error::ServerName(server_name.into()))?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|source| super::Error::Handshake { remote, source })
    }
}

/// Server side, for `tls:` listeners.
pub fn server_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.certificate, &cfg.private_key) else {
        return Err(TlsError::MissingServerIdentity);
    };
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.clone(),
        reason: e.to_string(),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts any certificate (but still checks handshake signatures), for
/// `tls.verify_server = false`.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
