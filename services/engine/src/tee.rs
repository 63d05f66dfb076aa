//! The trusted execution environment the engine runs in.
//!
//! Hardware backends (AMD SEV-SNP, Intel TDX, Intel SGX) produce attestation evidence that binds the
//! engine's code to the enclave key generated at start. The simulated TEE produces none of that
//! guarantee: it exists so the whole system can run on a laptop and in CI, and it is labelled
//! INSECURE SIMULATION everywhere it appears. A room must opt into it in its contract
//! (`attestation.allow_simulated: true`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealroom_attest::{Attester, Binding, EnclaveIdentity, Policy};
pub use sealroom_attest::{Evidence, Platform, SIMULATION_BANNER};
use sealroom_proto::room::v1::RoomContract;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::seal::MasterKey;

/// Which TEE the engine runs in (as stated in results, views and the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeeMode(pub Platform);

impl TeeMode {
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    pub fn is_insecure(self) -> bool {
        self.0.is_insecure()
    }

    /// How the TEE is described in results and room views.
    pub fn describe(self) -> Value {
        if self.is_insecure() {
            json!({ "mode": self.name(), "insecure": true, "notice": SIMULATION_BANNER })
        } else {
            json!({ "mode": self.name(), "insecure": false, "platform": self.0.describe() })
        }
    }
}

/// The enclave: the TEE's attester and the key pair generated in it at start (the TLS key, which
/// also signs the audit log).
#[derive(Debug, Clone)]
pub struct Enclave {
    attester: Arc<dyn Attester>,
    identity: Arc<EnclaveIdentity>,
    sealing_key_file: Option<PathBuf>,
}

/// The simulated TEE's sealing key file inside the data directory, unless configured elsewhere.
pub const SIMULATED_SEALING_KEY_FILE: &str = "sealing.key";

impl Enclave {
    pub fn new(attester: Box<dyn Attester>, identity: EnclaveIdentity) -> Self {
        Self { attester: Arc::from(attester), identity: Arc::new(identity), sealing_key_file: None }
    }

    /// Seals storage under the key in `path` instead of the TEE's own sealing key: required on Intel
    /// TDX (which has none; the file must be on storage only the TD can read), optional for the
    /// simulated TEE (default `<data dir>/sealing.key`).
    pub fn with_sealing_key_file(mut self, path: PathBuf) -> Self {
        self.sealing_key_file = Some(path);
        self
    }

    /// The master key of sealed storage ([`crate::seal`]): the TEE's sealing key, or a key file for
    /// the simulated TEE (and TDX, when configured).
    pub fn master_key(&self, data_dir: &Path) -> Result<MasterKey> {
        let platform = self.attester.platform();
        if let Some(path) = &self.sealing_key_file {
            if !platform.is_insecure() {
                tracing::warn!(
                    path = %path.display(),
                    "sealing storage under a key file instead of the TEE's key: it must be on storage only this \
                     enclave can read"
                );
            }
            return MasterKey::from_key_file(path);
        }
        match self.attester.sealing_key() {
            Ok(Some(key)) => Ok(MasterKey::from_bytes(key)),
            Ok(None) if platform.is_insecure() => MasterKey::from_key_file(&data_dir.join(SIMULATED_SEALING_KEY_FILE)),
            Ok(None) => Err(Error::Contract(format!(
                "{} gives no sealing key; set `sealing_key_file` to a key on storage only this enclave can read",
                platform.describe()
            ))),
            Err(e) => Err(Error::Contract(format!("cannot get the TEE's sealing key: {e}"))),
        }
    }

    /// INSECURE: the simulated TEE with a fresh platform key and enclave key (tests and the demo).
    pub fn insecure_simulated() -> Result<Self> {
        let attester = sealroom_attest::attester::Simulated::new(None)
            .map_err(|e| Error::Computation(format!("simulated TEE: {e}")))?;
        let identity = EnclaveIdentity::generate(&["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| Error::Computation(format!("enclave key: {e}")))?;
        Ok(Self::new(Box::new(attester), identity))
    }

    pub fn mode(&self) -> TeeMode {
        TeeMode(self.attester.platform())
    }

    pub fn identity(&self) -> &Arc<EnclaveIdentity> {
        &self.identity
    }

    /// Checks, before hosting a room, that this enclave's own evidence meets the room's attestation
    /// policy: the checks every client runs, except those that need endorsements a server may not
    /// have (the VCEK chain, DCAP collateral and what depends on them). A room whose measurement,
    /// debug, VMPL, migration or TCB rules this enclave cannot meet is refused at start, naming the
    /// checks, instead of starting and being refused by every client. Talks to the TEE device.
    pub fn self_check(&self, contract: &RoomContract) -> Result<()> {
        let room_id = contract.room_id();
        let mut nonce = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| Error::Computation("no randomness for a nonce".into()))?;
        let evidence = self.attest(room_id.as_str(), &nonce)?;
        let binding = Binding::Evidence {
            room_id: room_id.to_string(),
            nonce: Some(nonce.to_vec()),
            public_key: Some(self.identity.public_key().to_vec()),
        };
        let now = sealroom_attest::token::unix_now();
        let verification =
            sealroom_attest::verify::verify(&evidence, &Policy::from_contract(contract), &binding, None, now);
        let failures: Vec<String> = verification
            .failures()
            .filter(|c| !sealroom_attest::verify::endorsement_checks::ALL.contains(&c.name.as_str()))
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        Err(Error::Contract(format!(
            "room '{}' ({room_id}) does not accept this enclave ({}); every participant would refuse it:\n  - {}\n\
             Run the image whose measurement the room accepts, or change the room's attestation policy",
            contract.name,
            self.attester.platform().describe(),
            failures.join("\n  - ")
        )))
    }

    /// Evidence that the enclave key is held by this TEE for `room_id`, fresh for `nonce`. Talks to
    /// the TEE device: call it off the async workers.
    pub fn attest(&self, room_id: &str, nonce: &[u8]) -> Result<Evidence> {
        self.attester
            .attest(self.identity.public_key(), room_id, nonce)
            .map_err(|e| Error::Computation(format!("attestation failed: {e}")))
    }
}
