//! The verifier: runs every check on a piece of evidence and reports each with its verdict.
//!
//! Vendor checks first (format, certificate chain to the vendor's root, signature, TCB status),
//! then the room's policy (debug disallowed, measurement accepted, minimum TCB), then the binding
//! (the report data is SHA-256 of the enclave key, the room and the nonce; the room and nonce are
//! the ones the verifier expects). Evidence is accepted only if every check passes.

use std::fmt::Write as _;

use crate::evidence::{Endorsements, Evidence, Platform, report_data};
use crate::{SIMULATION_BANNER, dcap, simulated, snp};

/// Names of the checks that need the vendor's endorsements (certificate chains, revocation lists,
/// collateral): a verifier without them (an enclave checking itself) leaves them to clients.
pub mod endorsement_checks {
    pub const AMD_CHAIN: &str = "AMD certificate chain";
    pub const REPORT_SIGNATURE: &str = "report signature";
    pub const VCEK_VALIDITY: &str = "VCEK validity";
    pub const AMD_REVOCATION: &str = "AMD revocation list";
    pub const INTEL_CHAIN: &str = "Intel signature chain";
    pub const TCB_STATUS: &str = "TCB status";
    /// All of them.
    pub const ALL: [&str; 6] = [AMD_CHAIN, REPORT_SIGNATURE, VCEK_VALIDITY, AMD_REVOCATION, INTEL_CHAIN, TCB_STATUS];
}

/// A minimum SEV-SNP TCB (each component must be at least this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// The FMC component, which only Turin (and later) reports have: compared when the report has
    /// one; a report without it (Milan, Genoa) is not refused for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl std::fmt::Display for SnpTcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc {fmc}, ")?;
        }
        write!(f, "bootloader {}, tee {}, snp {}, microcode {}", self.bootloader, self.tee, self.snp, self.microcode)
    }
}

/// One accepted measurement of a room, with what must hold besides it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub platform: Platform,
    /// SEV-SNP launch measurement (48 bytes), TDX MRTD (48 bytes), SGX MRENCLAVE or MRSIGNER (32 bytes).
    pub value: Vec<u8>,
    /// TDX: RTMR0..RTMR3 that must match too (`None`: free).
    pub rtmrs: Vec<Option<Vec<u8>>>,
    /// SGX accepted by MRSIGNER: the product id and the lowest security version.
    pub isv_prod_id: u16,
    pub min_isv_svn: u16,
}

impl Accepted {
    /// `value` on `platform`, with nothing else required.
    pub fn new(platform: Platform, value: Vec<u8>) -> Self {
        Self { platform, value, rtmrs: Vec::new(), isv_prod_id: 0, min_isv_svn: 0 }
    }
}

/// What a room accepts (from its contract).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// INSECURE: accept the simulated TEE.
    pub allow_simulated: bool,
    /// Accepted measurements.
    pub measurements: Vec<Accepted>,
    /// Accept debug-mode TEEs (never in a real room: the host can read their memory).
    pub allow_debug: bool,
    pub snp_min_tcb: Option<SnpTcb>,
    /// DCAP TCB statuses accepted; empty means only `UpToDate`.
    pub tcb_statuses: Vec<String>,
}

impl Policy {
    /// The policy a room's contract states (its `attestation` section). Debug-mode TEEs are never
    /// accepted by a contract.
    pub fn from_contract(contract: &sealroom_proto::room::v1::RoomContract) -> Self {
        use sealroom_proto::room::v1::Platform as P;
        let Some(a) = &contract.attestation else {
            return Self::default();
        };
        let measurements = a
            .accepted_measurements
            .iter()
            .filter_map(|m| {
                let platform = match m.platform() {
                    P::AmdSevSnp => Platform::SevSnp,
                    P::IntelTdx => Platform::Tdx,
                    P::IntelSgx => Platform::Sgx,
                    P::Unspecified => return None,
                };
                // A register that does not decode drops the entry, as a measurement that does not
                // does: it must never read as "any value".
                let rtmrs = m
                    .rtmrs
                    .iter()
                    .map(|r| if r.is_empty() { Some(None) } else { hex::decode(r).ok().map(Some) })
                    .collect::<Option<Vec<_>>>()?;
                Some(Accepted {
                    platform,
                    value: hex::decode(&m.measurement).ok()?,
                    rtmrs,
                    isv_prod_id: u16::try_from(m.isv_prod_id).unwrap_or(u16::MAX),
                    min_isv_svn: u16::try_from(m.min_isv_svn).unwrap_or(u16::MAX),
                })
            })
            .collect();
        let level = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
        Self {
            allow_simulated: a.allow_simulated,
            measurements,
            allow_debug: false,
            snp_min_tcb: a.min_snp_tcb.as_ref().map(|t| SnpTcb {
                bootloader: level(t.bootloader),
                tee: level(t.tee),
                snp: level(t.snp),
                microcode: level(t.microcode),
                // 0: no minimum FMC.
                fmc: (t.fmc != 0).then(|| level(t.fmc)),
            }),
            tcb_statuses: a.accepted_tcb_statuses.clone(),
        }
    }

    pub(crate) fn accepted_tcb_statuses(&self) -> Vec<String> {
        if self.tcb_statuses.is_empty() { vec!["UpToDate".to_owned()] } else { self.tcb_statuses.clone() }
    }

    /// Passes unless the TEE is in debug mode (`why`: what that means on this platform) and the
    /// policy refuses debug.
    pub(crate) fn check_debug(&self, debug: bool, why: &str, v: &mut Verification) {
        v.check("debug disallowed", !debug || self.allow_debug, if debug { why } else { "not in debug mode" });
    }

    /// Passes when an accepted entry names one of `values` (the report's measurement, or for SGX
    /// also its signer) and `also` (what the entry requires besides: TDX RTMRs, SGX product and
    /// version) holds for it; otherwise says why the closest entry failed.
    pub(crate) fn check_measurement(
        &self,
        platform: Platform,
        values: &[&[u8]],
        also: impl Fn(&Accepted, &[u8]) -> Result<String, String>,
        v: &mut Verification,
    ) {
        let accepted: Vec<&Accepted> = self.measurements.iter().filter(|a| a.platform == platform).collect();
        let mut refusals = Vec::new();
        for a in &accepted {
            let Some(value) = values.iter().find(|m| a.value.as_slice() == **m) else { continue };
            match also(a, value) {
                Ok(extra) => {
                    let extra = if extra.is_empty() { String::new() } else { format!("; {extra}") };
                    return v.check(
                        "measurement accepted",
                        true,
                        format!("{} is in the contract's accepted measurements{extra}", hex::encode(value)),
                    );
                }
                Err(why) => refusals.push(why),
            }
        }
        let detail = if !refusals.is_empty() {
            format!("{} is accepted by the contract, but {}", hex::encode(values[0]), refusals.join("; and "))
        } else if accepted.is_empty() {
            format!("the contract accepts no {} measurement", platform.describe())
        } else {
            format!(
                "{} is not among the {} accepted {} measurements",
                hex::encode(values[0]),
                accepted.len(),
                platform.describe()
            )
        };
        v.check("measurement accepted", false, detail);
    }
}

/// What the report data must bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// SHA-256(evidence key ‖ evidence room ‖ evidence nonce), where the room (and the nonce and
    /// key, when given) are the ones the verifier expects.
    Evidence { room_id: String, nonce: Option<Vec<u8>>, public_key: Option<Vec<u8>> },
    /// Exactly these bytes (reports made outside sealroom, such as the vendors' samples).
    ReportData([u8; 64]),
}

/// One check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The outcome of verifying one piece of evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verification {
    pub platform: Platform,
    /// The launch measurement (SNP), MRTD (TDX) or MRENCLAVE (SGX), hex.
    pub measurement: Option<String>,
    /// Facts read from the report (TCB, signer, …), for the reader.
    pub details: Vec<(String, String)>,
    pub checks: Vec<Check>,
}

impl Verification {
    fn new(platform: Platform) -> Self {
        Self { platform, measurement: None, details: Vec::new(), checks: Vec::new() }
    }

    pub(crate) fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check { name: name.to_owned(), passed, detail: detail.into() });
    }

    pub(crate) fn detail(&mut self, name: &str, value: impl Into<String>) {
        self.details.push((name.to_owned(), value.into()));
    }

    /// Every check ran and passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The check named `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// `Ok` when every check passed; otherwise an error naming each failed check.
    pub fn into_result(self) -> Result<Self, String> {
        if self.passed() {
            return Ok(self);
        }
        let failed: Vec<String> = self.failures().map(|c| format!("{}: {}", c.name, c.detail)).collect();
        Err(format!("attestation refused ({}): {}", self.platform.describe(), failed.join("; ")))
    }

    /// A readable report: platform, measurement, facts, then each check with its verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "platform     {}", self.platform.describe());
        if self.platform.is_insecure() {
            let _ = writeln!(out, "             {SIMULATION_BANNER}");
        }
        let _ = writeln!(out, "measurement  {}", self.measurement.as_deref().unwrap_or("(unknown)"));
        for (k, v) in &self.details {
            let _ = writeln!(out, "{k:<12} {v}");
        }
        let _ = writeln!(out);
        for c in &self.checks {
            let _ = writeln!(out, "[{}] {:<24} {}", if c.passed { "pass" } else { "FAIL" }, c.name, c.detail);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "verdict      {}", if self.passed() { "ACCEPTED" } else { "REFUSED" });
        out
    }
}

/// Verifies `evidence` against `policy` and `binding` at `now` (seconds since the Unix epoch; DCAP
/// collateral and certificates and the SEV-SNP VCEK must be valid then). `endorsements` replaces
/// the evidence's own (a VCEK or collateral the verifier fetched itself).
pub fn verify(
    evidence: &Evidence,
    policy: &Policy,
    binding: &Binding,
    endorsements: Option<&Endorsements>,
    now: u64,
) -> Verification {
    verify_with_snp_roots(evidence, policy, binding, endorsements, now, snp::amd_roots)
}

/// [`verify`], with `snp_roots` giving the roots an SEV-SNP VCEK must chain to: always AMD's
/// built-in ones ([`snp::amd_roots`]) except in this crate's unit tests, which substitute
/// generated ones. Crate-private: no public API can change the roots.
pub(crate) fn verify_with_snp_roots(
    evidence: &Evidence,
    policy: &Policy,
    binding: &Binding,
    endorsements: Option<&Endorsements>,
    now: u64,
    snp_roots: impl FnOnce() -> Vec<snp::Root>,
) -> Verification {
    let mut v = Verification::new(evidence.platform);
    let endorsements = endorsements.unwrap_or(&evidence.endorsements);
    let data = match evidence.platform {
        Platform::SevSnp => snp::verify(&evidence.report, endorsements, policy, now, snp_roots, &mut v),
        Platform::Sgx | Platform::Tdx => {
            dcap::verify(evidence.platform, &evidence.report, endorsements, policy, now, &mut v)
        }
        Platform::Simulated => verify_simulated(&evidence.report, endorsements, policy, &mut v),
    };
    if let Some(data) = data {
        check_binding(evidence, binding, &data, &mut v);
    }
    v
}

fn verify_simulated(
    report: &[u8],
    endorsements: &Endorsements,
    policy: &Policy,
    v: &mut Verification,
) -> Option<[u8; 64]> {
    v.check(
        "simulated TEE allowed",
        policy.allow_simulated,
        if policy.allow_simulated {
            "INSECURE: the contract allows the simulated TEE (development only)"
        } else {
            "the contract does not allow the simulated TEE (attestation.allow_simulated): only hardware evidence is accepted"
        },
    );
    let Endorsements::SimulatedKey { public_key } = endorsements else {
        v.check("statement signature", false, "no simulated platform key came with the evidence");
        return None;
    };
    let statement = hex::decode(public_key)
        .map_err(|e| format!("the simulated platform key is not hex: {e}"))
        .and_then(|key| simulated::open(report, &key));
    let statement = match statement {
        Ok(s) => {
            v.check("statement signature", true, "signed by the simulated platform key (which proves nothing)");
            s
        }
        Err(e) => {
            v.check("statement signature", false, e);
            return None;
        }
    };
    v.measurement = Some(statement.measurement.clone());
    v.detail("measures", "SHA-256 of the server executable");
    policy.check_debug(statement.debug, "the statement says debug", v);
    let mut data = [0u8; 64];
    match hex::decode(&statement.report_data) {
        Ok(bytes) if bytes.len() == 64 => data.copy_from_slice(&bytes),
        _ => {
            v.check("report data binding", false, "the statement's report data is not 64 hex bytes");
            return None;
        }
    }
    Some(data)
}

fn check_binding(evidence: &Evidence, binding: &Binding, data: &[u8; 64], v: &mut Verification) {
    match binding {
        Binding::ReportData(expected) => {
            let ok = expected == data;
            v.check(
                "report data binding",
                ok,
                if ok {
                    "the report data is the expected value".to_owned()
                } else {
                    format!(
                        "the report data is {}…, not the expected {}…",
                        hex::encode(&data[..16]),
                        hex::encode(&expected[..16])
                    )
                },
            );
        }
        Binding::Evidence { room_id, nonce, public_key } => {
            let (key, evidence_nonce) = match (evidence.public_key_bytes(), evidence.nonce_bytes()) {
                (Ok(k), Ok(n)) => (k, n),
                (Err(e), _) | (_, Err(e)) => {
                    v.check("report data binding", false, e.to_string());
                    return;
                }
            };
            if let Err(e) = crate::evidence::check_binding_parts(&key, &evidence.room_id) {
                v.check("report data binding", false, e);
                return;
            }
            let ok = report_data(&key, &evidence.room_id, &evidence_nonce) == *data;
            v.check(
                "report data binding",
                ok,
                if ok {
                    "report data = SHA-256(enclave key ‖ room id ‖ nonce)"
                } else {
                    "the report data does not bind the evidence's key, room and nonce: the key was not made in this TEE"
                },
            );
            let room_ok = evidence.room_id == *room_id;
            v.check(
                "room",
                room_ok,
                if room_ok {
                    format!("room {room_id}")
                } else {
                    format!("the evidence is for room {}, not {room_id}", evidence.room_id)
                },
            );
            if let Some(nonce) = nonce {
                let fresh = *nonce == evidence_nonce;
                v.check(
                    "nonce (freshness)",
                    fresh,
                    if fresh {
                        "the evidence answers this verifier's nonce"
                    } else {
                        "the evidence answers another nonce: it may be a replay"
                    },
                );
            }
            if let Some(expected) = public_key {
                let same = *expected == key;
                v.check(
                    "enclave key",
                    same,
                    if same {
                        "the key the server presented is the attested key"
                    } else {
                        "the key the server presented (TLS or audit) is not the attested key"
                    },
                );
            }
        }
    }
}
