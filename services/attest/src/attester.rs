//! Attesters: the TEE backends that produce evidence, found by probing the machine or forced by
//! configuration.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::evidence::{Endorsements, Evidence, Platform, report_data};
use crate::simulated::PlatformKey;
use crate::{AttestError, dcap, snp};

/// Which TEE to use (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Probe the machine: SEV-SNP, then TDX, then SGX; none found is an error (the simulated TEE
    /// is never chosen by probing).
    #[default]
    Auto,
    SevSnp,
    Tdx,
    Sgx,
    /// INSECURE: a local signing key instead of hardware.
    Simulated,
}

/// Produces evidence on one TEE.
pub trait Attester: Send + Sync + std::fmt::Debug {
    fn platform(&self) -> Platform;

    /// The raw report (or quote, or signed statement) for `report_data`, and any endorsements the
    /// platform hands out with it.
    fn report(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), AttestError>;

    /// The TEE's sealing key for this enclave (bound to its measurement), or `None` when the TEE
    /// has none (the simulated TEE: the engine keeps a key file).
    fn sealing_key(&self) -> Result<Option<[u8; 32]>, AttestError> {
        Ok(None)
    }

    /// Evidence that `public_key` (SPKI DER) is held by this TEE for `room_id`, fresh for `nonce`.
    fn attest(&self, public_key: &[u8], room_id: &str, nonce: &[u8]) -> Result<Evidence, AttestError> {
        let (report, endorsements) = self.report(&report_data(public_key, room_id, nonce))?;
        Ok(Evidence {
            platform: self.platform(),
            report,
            public_key: hex::encode(public_key),
            room_id: room_id.to_owned(),
            nonce: hex::encode(nonce),
            endorsements,
        })
    }
}

/// A hardware TEE: SEV-SNP through `/dev/sev-guest`, TDX through configfs-tsm, SGX through
/// Gramine's `/dev/attestation`.
#[derive(Debug)]
pub struct Hardware(Platform);

impl Attester for Hardware {
    fn platform(&self) -> Platform {
        self.0
    }
    fn report(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), AttestError> {
        match self.0 {
            Platform::SevSnp => snp::request(report_data),
            Platform::Tdx => dcap::request_tdx(report_data),
            Platform::Sgx => dcap::request_sgx(report_data),
            Platform::Simulated => Err(AttestError::Unavailable("the simulated TEE is not hardware".into())),
        }
    }
    fn sealing_key(&self) -> Result<Option<[u8; 32]>, AttestError> {
        match self.0 {
            Platform::SevSnp => snp::sealing_key().map(Some),
            Platform::Sgx => dcap::sgx_sealing_key().map(Some),
            Platform::Tdx => Err(AttestError::Unavailable(
                "Intel TDX has no sealing key: set `sealing_key_file` to a key on storage only this TD can read \
                 (for example released by a key broker after attestation)"
                    .into(),
            )),
            Platform::Simulated => Ok(None),
        }
    }
}

/// The INSECURE simulated TEE.
#[derive(Debug)]
pub struct Simulated {
    key: PlatformKey,
}

impl Simulated {
    /// With the platform key kept in `key_file` (created, mode 0600, when absent), or a fresh
    /// key for this process.
    pub fn new(key_file: Option<&Path>) -> Result<Self, AttestError> {
        Ok(Self { key: PlatformKey::load_or_create(key_file)? })
    }
}

impl Attester for Simulated {
    fn platform(&self) -> Platform {
        Platform::Simulated
    }
    fn report(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), AttestError> {
        let report = self.key.report(report_data)?;
        Ok((report, Endorsements::SimulatedKey { public_key: hex::encode(self.key.public_key()) }))
    }
}

/// Device paths that reveal a TEE (overridable for tests).
#[derive(Debug, Clone)]
pub struct Probe {
    pub sev_guest: PathBuf,
    pub tsm_report: PathBuf,
    pub gramine: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Self { sev_guest: "/dev/sev-guest".into(), tsm_report: dcap::TSM_REPORT.into(), gramine: dcap::GRAMINE.into() }
    }
}

impl Probe {
    /// The hardware TEE this machine offers, if any.
    pub fn find(&self) -> Option<Platform> {
        if self.sev_guest.exists() {
            return Some(Platform::SevSnp);
        }
        // TDX guests expose /dev/tdx_guest; configfs-tsm is where quotes come from.
        if self.tsm_report.exists() && Path::new("/dev/tdx_guest").exists() {
            return Some(Platform::Tdx);
        }
        if self.gramine.join("quote").exists() {
            return Some(Platform::Sgx);
        }
        None
    }
}

/// The attester for `backend` (`simulated_key`: where the simulated platform key is kept).
pub fn open(backend: Backend, probe: &Probe, simulated_key: Option<&Path>) -> Result<Box<dyn Attester>, AttestError> {
    let platform = match backend {
        Backend::Auto => probe.find().ok_or_else(|| {
            AttestError::Unavailable(
                "no TEE found (looked for /dev/sev-guest, /dev/tdx_guest with configfs-tsm, and Gramine's \
                 /dev/attestation): run inside an SEV-SNP or TDX guest or an SGX enclave, or set `tee: simulated` \
                 for INSECURE development use"
                    .into(),
            )
        })?,
        Backend::SevSnp => Platform::SevSnp,
        Backend::Tdx => Platform::Tdx,
        Backend::Sgx => Platform::Sgx,
        Backend::Simulated => Platform::Simulated,
    };
    Ok(match platform {
        Platform::Simulated => Box::new(Simulated::new(simulated_key)?),
        hardware => Box::new(Hardware(hardware)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Binding, Policy, verify};

    /// Shaped like SubjectPublicKeyInfo DER (one SEQUENCE), which the binding requires.
    const ENCLAVE_KEY: &[u8] = &[0x30, 3, 1, 2, 3];
    const OTHER_KEY: &[u8] = &[0x30, 3, 1, 2, 4];

    fn no_tee(dir: &Path) -> Probe {
        Probe { sev_guest: dir.join("sev-guest"), tsm_report: dir.join("tsm"), gramine: dir.join("attestation") }
    }

    #[test]
    fn probing_finds_the_device_that_exists_and_never_picks_the_simulation() {
        let dir = tempfile::tempdir().unwrap();
        let probe = no_tee(dir.path());
        assert_eq!(probe.find(), None);
        let err = open(Backend::Auto, &probe, None).unwrap_err().to_string();
        assert!(err.contains("no TEE found") && err.contains("tee: simulated"), "{err}");
        std::fs::create_dir_all(dir.path().join("attestation")).unwrap();
        std::fs::write(dir.path().join("attestation/quote"), b"").unwrap();
        assert_eq!(probe.find(), Some(Platform::Sgx));
        std::fs::write(dir.path().join("sev-guest"), b"").unwrap();
        assert_eq!(probe.find(), Some(Platform::SevSnp));
    }

    #[test]
    fn a_forced_hardware_backend_without_its_device_says_so() {
        // This machine is no SEV-SNP guest: the backend can be chosen, its report cannot be made.
        if Path::new("/dev/sev-guest").exists() {
            return;
        }
        let a = open(Backend::SevSnp, &Probe::default(), None).unwrap();
        let err = a.attest(b"key", &"0".repeat(64), b"n").unwrap_err().to_string();
        assert!(err.contains("/dev/sev-guest"), "{err}");
    }

    #[test]
    fn simulated_evidence_verifies_only_where_allowed_and_binds_key_room_and_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("keys/simulated.pk8");
        let a = Simulated::new(Some(&key_file)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let room = "ab".repeat(32);
        let e = a.attest(ENCLAVE_KEY, &room, b"nonce-1").unwrap();
        // The same key file gives the same platform key.
        let again = Simulated::new(Some(&key_file)).unwrap().attest(ENCLAVE_KEY, &room, b"nonce-1").unwrap();
        assert_eq!(again.endorsements, e.endorsements);

        let allow = Policy { allow_simulated: true, ..Policy::default() };
        let expect = |nonce: &[u8]| Binding::Evidence {
            room_id: room.clone(),
            nonce: Some(nonce.to_vec()),
            public_key: Some(ENCLAVE_KEY.to_vec()),
        };
        let ok = verify(&e, &allow, &expect(b"nonce-1"), None, 0);
        assert!(ok.passed(), "{}", ok.render());
        assert!(ok.render().contains("INSECURE"));
        assert_eq!(ok.measurement.as_deref().map(str::len), Some(64));

        let refused = verify(&e, &Policy::default(), &expect(b"nonce-1"), None, 0);
        assert!(!refused.passed());
        assert_eq!(refused.failures().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["simulated TEE allowed"]);

        let replay = verify(&e, &allow, &expect(b"nonce-2"), None, 0);
        assert_eq!(replay.failures().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["nonce (freshness)"]);

        // A swapped key: the report data no longer binds it.
        let mut swapped = e.clone();
        swapped.public_key = hex::encode(OTHER_KEY);
        let v = verify(&swapped, &allow, &expect(b"nonce-1"), None, 0);
        let failed: Vec<&str> = v.failures().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, ["report data binding", "enclave key"], "{}", v.render());

        // Another room's evidence.
        let other = Binding::Evidence { room_id: "cd".repeat(32), nonce: None, public_key: None };
        assert_eq!(
            verify(&e, &allow, &other, None, 0).failures().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["room"]
        );

        // The parts of the binding must split one way only.
        let mut trailing = a.attest(&[0x30, 1, 1, 0xff], &room, b"nonce-1").unwrap();
        let v = verify(
            &trailing,
            &allow,
            &Binding::Evidence { room_id: room.clone(), nonce: None, public_key: None },
            None,
            0,
        );
        assert!(v.get("report data binding").unwrap().detail.contains("exactly one DER"), "{}", v.render());
        trailing = a.attest(ENCLAVE_KEY, "not-a-room", b"nonce-1").unwrap();
        let v = verify(
            &trailing,
            &allow,
            &Binding::Evidence { room_id: "not-a-room".into(), nonce: None, public_key: None },
            None,
            0,
        );
        assert!(v.get("report data binding").unwrap().detail.contains("64 lowercase hex"), "{}", v.render());

        // Any change to the signed statement breaks its signature.
        let mut tampered = e.clone();
        let at = tampered.report.iter().position(|b| *b == b'0').unwrap();
        tampered.report[at] = b'1';
        let v = verify(&tampered, &allow, &expect(b"nonce-1"), None, 0);
        assert!(!v.get("statement signature").unwrap().passed, "{}", v.render());
        assert!(v.into_result().unwrap_err().contains("statement signature"));
    }
}
