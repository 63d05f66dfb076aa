//! Attested TLS: the servers present the enclave's certificate; clients accept exactly the
//! certificate whose key they verified in attestation evidence (pinning), whatever its names.
//!
//! A client first connects with [`PinnedCert::capture`], which accepts any certificate and records
//! it, and sends nothing but a request for evidence with a fresh nonce. Only when the evidence
//! verifies and binds that certificate's key does it pin the certificate ([`PinnedCert::expect`])
//! and send credentials or data. The TLS handshake signatures are checked in both modes, so the
//! peer holds the certificate's private key.

use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::AttestError;
use crate::identity::EnclaveIdentity;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS server configuration for the enclave identity (`alpn`: protocols offered, e.g. `h2`
/// and `http/1.1`).
pub fn server_config(identity: &EnclaveIdentity, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, AttestError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.private_key_der().to_vec()));
    let chain = vec![CertificateDer::from(identity.certificate_der().to_vec())];
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AttestError::Device(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| AttestError::Device(format!("the enclave certificate is not usable for TLS: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The client-side verifier: either records whatever certificate the server presents (to attest
/// it), or accepts only the pinned one.
#[derive(Debug)]
pub struct PinnedCert {
    expected: Option<Vec<u8>>,
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCert {
    /// Accepts any certificate and records it: only for fetching attestation evidence.
    pub fn capture() -> Arc<Self> {
        Arc::new(Self { expected: None, seen: Mutex::new(None), provider: provider() })
    }

    /// Accepts only this certificate (DER), the one whose key attestation verified.
    pub fn expect(certificate_der: Vec<u8>) -> Arc<Self> {
        Arc::new(Self { expected: Some(certificate_der), seen: Mutex::new(None), provider: provider() })
    }

    /// The certificate the server presented last (DER).
    pub fn seen(&self) -> Option<Vec<u8>> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }

    /// A client configuration that verifies with `self` and offers `alpn`.
    pub fn client_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, AttestError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| AttestError::Device(format!("TLS configuration: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.to_vec());
        }
        match &self.expected {
            Some(expected) if expected.as_slice() != end_entity.as_ref() => Err(rustls::Error::General(
                "the server's TLS certificate is not the attested enclave's: the server restarted (a new enclave \
                 key) or is not the enclave you attested; run `sealroom attest` again"
                    .into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
