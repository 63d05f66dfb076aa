//! The simulated TEE: a statement ("this binary, this report data") signed with a local P-256 key.
//! It exercises every code path of attestation and proves nothing: whoever runs the process holds
//! the key. INSECURE, and accepted only where a room's contract allows it.

use std::path::Path;
use std::sync::OnceLock;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AttestError;

pub(crate) const FORMAT: &str = "sealroom-simulated-report/1";

/// What the simulated platform signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Statement {
    pub format: String,
    pub insecure: bool,
    /// SHA-256 of the running executable (hex).
    pub measurement: String,
    /// Hex of the 64 report-data bytes.
    pub report_data: String,
    pub debug: bool,
}

/// The signed envelope: the statement's exact JSON text and a P-256 signature over it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    statement: String,
    signature: String,
}

/// SHA-256 of the running executable, computed once per process.
pub(crate) fn executable_measurement() -> Result<[u8; 32], AttestError> {
    static MEASUREMENT: OnceLock<Result<[u8; 32], String>> = OnceLock::new();
    MEASUREMENT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
            let mut file =
                std::fs::File::open(&exe).map_err(|e| format!("cannot read {} to measure it: {e}", exe.display()))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)
                    .map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(h.finalize().into())
        })
        .clone()
        .map_err(AttestError::Unavailable)
}

/// The simulated platform's signing key.
pub(crate) struct PlatformKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKey").field("public_key", &hex::encode(self.public_key())).finish()
    }
}

impl PlatformKey {
    /// A fresh key, or the one kept in `path` (PKCS#8, created with mode 0600 when absent).
    pub(crate) fn load_or_create(path: Option<&Path>) -> Result<Self, AttestError> {
        let rng = SystemRandom::new();
        let generate = || {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| AttestError::Device("cannot generate the simulated platform key".into()))
        };
        let pkcs8 = match path {
            None => generate()?,
            Some(p) if p.exists() => std::fs::read(p).map_err(|e| {
                AttestError::Unavailable(format!("cannot read the simulated platform key {}: {e}", p.display()))
            })?,
            Some(p) => {
                let key = generate()?;
                write_private(p, &key)?;
                key
            }
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).map_err(|e| {
            AttestError::Malformed(format!("the simulated platform key is not a P-256 PKCS#8 key: {e}"))
        })?;
        Ok(Self { pair, rng })
    }

    pub(crate) fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// A signed statement for `report_data`.
    pub(crate) fn report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        let statement = Statement {
            format: FORMAT.into(),
            insecure: true,
            measurement: hex::encode(executable_measurement()?),
            report_data: hex::encode(report_data),
            debug: false,
        };
        let text = serde_json::to_string(&statement).map_err(|e| AttestError::Device(e.to_string()))?;
        let signature = self
            .pair
            .sign(&self.rng, text.as_bytes())
            .map_err(|_| AttestError::Device("the simulated platform key failed to sign".into()))?;
        let envelope = Envelope { statement: text, signature: hex::encode(signature.as_ref()) };
        serde_json::to_vec(&envelope).map_err(|e| AttestError::Device(e.to_string()))
    }
}

/// Writes a secret file readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AttestError> {
    crate::create_private(path, bytes).map_err(|e| AttestError::Unavailable(format!("{}: {e}", path.display())))
}

/// Parses a simulated report and checks its signature against `public_key`: the statement, or
/// why not.
pub(crate) fn open(report: &[u8], public_key: &[u8]) -> Result<Statement, String> {
    let envelope: Envelope =
        serde_json::from_slice(report).map_err(|e| format!("not a simulated report envelope: {e}"))?;
    let signature = hex::decode(&envelope.signature).map_err(|e| format!("the signature is not hex: {e}"))?;
    ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
        .verify(envelope.statement.as_bytes(), &signature)
        .map_err(|_| "the statement's signature does not verify with the simulated platform key".to_owned())?;
    let statement: Statement =
        serde_json::from_str(&envelope.statement).map_err(|e| format!("the signed statement is malformed: {e}"))?;
    if statement.format != FORMAT {
        return Err(format!("unknown statement format '{}' (expected {FORMAT})", statement.format));
    }
    Ok(statement)
}
