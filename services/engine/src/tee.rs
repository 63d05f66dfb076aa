//! The trusted execution environment the engine runs in.
//!
//! Hardware backends (AMD SEV-SNP, Intel TDX, Intel SGX) produce attestation evidence that binds the
//! engine's code to its keys. The simulated TEE produces none of that guarantee: it exists so the
//! whole system can run on a laptop and in CI, and it is labelled INSECURE SIMULATION everywhere it
//! appears. A room must opt into it in its contract (`attestation.allow_simulated: true`).

use serde_json::{Value, json};

/// The banner shown wherever the simulated TEE is in use.
pub const SIMULATION_BANNER: &str = "INSECURE SIMULATION: no hardware enclave protects this data; the operator can read \
     everything. Use only for development and tests.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeeMode {
    /// No hardware protection. Accepted only by rooms whose contract allows it.
    Simulated,
}

impl TeeMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Simulated => "simulated",
        }
    }

    pub fn is_insecure(self) -> bool {
        match self {
            Self::Simulated => true,
        }
    }

    /// How the TEE is described in results and room views.
    pub fn describe(self) -> Value {
        match self {
            Self::Simulated => {
                json!({ "mode": "simulated", "insecure": true, "notice": SIMULATION_BANNER })
            }
        }
    }
}
