//! TLS for SIP over rustls on the `ring` provider (RFC 3261 §26.3.1,
//! RFC 5922 §7): servers are verified against the SIP domain by default,
//! with the system roots plus `tls.ca_file`; `verify_server = false` is
//! allowed but warned about.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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

/// Client side: one connector shared by every TLS flow. With verification
/// on, the system roots are read when the first TLS flow needs them, not at
/// start-up (reading /etc/ssl/certs was a twentieth of starting 10,000 UDP
/// connections); `tls.ca_file` is read at once, so that its errors still
/// stop the start.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<ClientInner>,
}

type WantsVerifier = rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>;

struct ClientInner {
    /// Verification on: the builder and the `ca_file` roots, waiting for
    /// the system roots.
    verify: Option<(WantsVerifier, rustls::RootCertStore)>,
    connector: OnceLock<TlsConnector>,
}

impl ClientTls {
    pub fn new(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let connector = OnceLock::new();
        let verify = if cfg.verify_server {
            let mut roots = rustls::RootCertStore::empty();
            if let Some(ca) = &cfg.ca_file {
                for cert in load_certs(ca)? {
                    roots.add(cert)?;
                }
            }
            Some((builder, roots))
        } else {
            tracing::warn!("tls.verify_server = false: PBX certificates are NOT verified");
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth();
            let _ = connector.set(TlsConnector::from(Arc::new(config)));
            None
        };
        Ok(ClientTls {
            inner: Arc::new(ClientInner { verify, connector }),
        })
    }

    fn connector(&self) -> &TlsConnector {
        self.inner.connector.get_or_init(|| {
            let Some((builder, ca)) = self.inner.verify.clone() else {
                unreachable!("set in new() when verification is off")
            };
            let mut roots = ca;
            let from_ca = roots.len();
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(
                system_roots = added,
                ca_file_roots = from_ca,
                "TLS server verification on"
            );
            TlsConnector::from(Arc::new(
                builder.with_root_certificates(roots).with_no_client_auth(),
            ))
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
        self.connector()
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
