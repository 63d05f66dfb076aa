//! Remote attestation for sealroom: evidence that the engine runs inside a hardware enclave, bound
//! to the key the enclave generated, and the offline verification every participant runs before it
//! sends a byte.
//!
//! - [`evidence`]: the [`evidence::Evidence`] a server hands out, and the report-data binding
//!   `SHA-256(public key ‖ room id ‖ nonce)`;
//! - [`attester`]: the [`attester::Attester`] backends — AMD SEV-SNP (`/dev/sev-guest`), Intel TDX
//!   (configfs-tsm), Intel SGX (Gramine's `/dev/attestation`) and the **INSECURE** simulated TEE —
//!   found by probing the machine or forced by configuration;
//! - [`verify`]: the verifier: vendor signatures and certificate chains (AMD's ARK/ASK built into
//!   `sev`; Intel's root built into `dcap-qvl`), then the room's policy (accepted measurements,
//!   no debug, minimum TCB, accepted TCB statuses) and the binding; every check is reported with
//!   its verdict, so a refusal says exactly which check failed.
//!
//! - [`token`]: participant tokens (JWT, ES256) signed by issuer keys the contract names: the room's
//!   authentication root, with no shared secret in the room file;
//!
//! The simulated TEE signs a statement with a local key: it proves nothing about the machine and
//! is labelled INSECURE wherever it appears; only rooms whose contract allows it accept it.

pub mod attester;
pub mod evidence;
pub mod identity;
pub mod tls;
pub mod token;
pub mod verify;

mod dcap;
mod simulated;
mod snp;

pub use attester::{Attester, Backend};
pub use evidence::{Endorsements, Evidence, Platform};
pub use identity::EnclaveIdentity;
pub use verify::{Binding, Check, Policy, Verification};

/// Writes `bytes` to a new file at `path` (creating its directory) that only its owner can read
/// (mode 0600 on Unix) and syncs it; fails if the file exists. Keys are written this way: never overwritten, never readable
/// by others.
pub fn create_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// This machine has no such TEE (or it is not reachable from here).
    #[error("{0}")]
    Unavailable(String),
    /// The TEE device answered with an error.
    #[error("{0}")]
    Device(String),
    /// Evidence or a key file is malformed.
    #[error("{0}")]
    Malformed(String),
}

/// The banner shown wherever the simulated TEE is in use.
pub const SIMULATION_BANNER: &str = "INSECURE SIMULATION: no hardware enclave protects this data; the operator can read \
     everything. Use only for development and tests.";
