//! The enclave identity: an ECDSA P-256 key pair generated inside the TEE when the server starts
//! (it is never written anywhere, so a restarted server has a new one and must be attested again),
//! the self-signed TLS certificate of that key, and signatures by it (audit log entries).
//!
//! Attestation evidence binds the key's SubjectPublicKeyInfo; a client that verified the evidence
//! pins the certificate, so it talks only to the enclave that holds the key.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use x509_cert::der::{Decode, Encode};

use crate::AttestError;

/// The enclave's key pair and certificate.
pub struct EnclaveIdentity {
    pkcs8: Vec<u8>,
    public_key: Vec<u8>,
    certificate_der: Vec<u8>,
    certificate_pem: String,
    signer: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for EnclaveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveIdentity").field("public_key", &hex::encode(&self.public_key)).finish_non_exhaustive()
    }
}

impl EnclaveIdentity {
    /// A fresh key and a self-signed certificate for it, valid for the host `names` (DNS names or
    /// IP addresses). Clients pin the certificate itself, so the names only matter to clients that
    /// check them (pyarrow, curl with `--cacert`).
    pub fn generate(names: &[String]) -> Result<Self, AttestError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AttestError::Device(format!("cannot generate the enclave key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| AttestError::Malformed(format!("bad TLS host name in {names:?}: {e}")))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "sealroom enclave");
        let certificate = params
            .self_signed(&key)
            .map_err(|e| AttestError::Device(format!("cannot make the enclave certificate: {e}")))?;
        let pkcs8 = key.serialize_der();
        let rng = SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| AttestError::Device(format!("the enclave key does not load: {e}")))?;
        let certificate_der = certificate.der().to_vec();
        let public_key = certificate_public_key(&certificate_der).map_err(AttestError::Device)?;
        Ok(Self { pkcs8, public_key, certificate_der, certificate_pem: certificate.pem(), signer, rng })
    }

    /// The key's SubjectPublicKeyInfo (DER): what attestation evidence binds.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Lowercase hex SHA-256 of [`Self::public_key`], a short name for the key in logs and views.
    pub fn fingerprint(&self) -> String {
        crate::token::key_id(&self.public_key)
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The private key, PKCS#8 DER (for the TLS servers; it stays in the enclave's memory).
    pub fn private_key_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key as PEM (tonic's TLS identity takes PEM).
    pub fn private_key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// An ECDSA P-256 / SHA-256 signature (64 bytes, r ‖ s) over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AttestError> {
        self.signer
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| AttestError::Device("the enclave key failed to sign".into()))
    }
}

/// Checks a signature by [`EnclaveIdentity::sign`] against the key's SubjectPublicKeyInfo.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), String> {
    let point =
        sealroom_proto::p256_spki_point(public_key).ok_or("the enclave key is not a P-256 SubjectPublicKeyInfo")?;
    ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(message, signature)
        .map_err(|_| "the signature does not verify with the enclave key".to_owned())
}

/// The SubjectPublicKeyInfo (DER) of an X.509 certificate.
pub fn certificate_public_key(certificate_der: &[u8]) -> Result<Vec<u8>, String> {
    let certificate = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| format!("the TLS certificate is not X.509 DER: {e}"))?;
    certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("the TLS certificate's public key does not encode: {e}"))
}

/// A certificate as PEM text.
pub fn certificate_to_pem(certificate_der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", certificate_der.to_vec()))
}

/// The first certificate of a PEM text.
pub fn certificate_from_pem(text: &[u8]) -> Result<Vec<u8>, String> {
    pem::parse_many(text)
        .map_err(|e| format!("not PEM: {e}"))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .ok_or_else(|| "no CERTIFICATE block in the PEM text".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_key_and_signatures_verify_only_with_it() {
        let id = EnclaveIdentity::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(certificate_public_key(id.certificate_der()).unwrap(), id.public_key());
        assert_eq!(certificate_from_pem(id.certificate_pem().as_bytes()).unwrap(), id.certificate_der());
        assert_eq!(
            certificate_from_pem(certificate_to_pem(id.certificate_der()).as_bytes()).unwrap(),
            id.certificate_der()
        );
        assert!(id.public_key().starts_with(&sealroom_proto::P256_SPKI_PREFIX));

        let signature = id.sign(b"entry").unwrap();
        verify_signature(id.public_key(), b"entry", &signature).unwrap();
        assert!(verify_signature(id.public_key(), b"entrx", &signature).is_err());
        let other = EnclaveIdentity::generate(&["localhost".into()]).unwrap();
        assert_ne!(other.public_key(), id.public_key(), "each start has its own key");
        let err = verify_signature(other.public_key(), b"entry", &signature).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        assert!(verify_signature(&id.public_key()[1..], b"entry", &signature).unwrap_err().contains("P-256"));
    }

    #[test]
    fn bad_names_and_bad_pem_are_refused() {
        let err = EnclaveIdentity::generate(&["h\u{f6}st".into()]).unwrap_err().to_string();
        assert!(err.contains("bad TLS host name"), "{err}");
        assert!(certificate_from_pem(b"hello").is_err());
        assert!(certificate_public_key(b"\x30\x03\x02\x01\x00").is_err());
    }
}
