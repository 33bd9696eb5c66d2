//! TLS client configuration for `syslog+tls://` and `https://` drains: the webpki roots
//! plus `[drains] tls_ca_file`, with hostname verification; `#insecure` turns it off.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The two client configurations every TLS drain uses.
#[derive(Clone)]
pub struct Tls {
    pub verified: Arc<ClientConfig>,
    pub insecure: Arc<ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Tls> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read drains.tls_ca_file {}: {e}", path.display())
            })?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert
                    .map_err(|e| anyhow::anyhow!("drains.tls_ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("drains.tls_ca_file {}: {e}", path.display()))?;
                n += 1;
            }
            if n == 0 {
                anyhow::bail!(
                    "drains.tls_ca_file {} has no PEM certificate",
                    path.display()
                );
            }
        }
        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let insecure = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth();
        Ok(Tls {
            verified: Arc::new(verified),
            insecure: Arc::new(insecure),
        })
    }

    pub fn config(&self, insecure: bool) -> Arc<ClientConfig> {
        if insecure {
            self.insecure.clone()
        } else {
            self.verified.clone()
        }
    }
}

/// `#insecure`: accepts any certificate (signatures are still checked, so the session is
/// encrypted, but the peer is not authenticated).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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
