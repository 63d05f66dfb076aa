//! Intel SGX and TDX: DCAP quotes, verified with `dcap-qvl` against supplied collateral and
//! Intel's SGX root CA (built into dcap-qvl).

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::{Quote, Report};

use crate::evidence::{Endorsements, Platform};
use crate::verify::endorsement_checks::{INTEL_CHAIN, TCB_STATUS};
use crate::verify::{Policy, Verification};

/// The header's TEE type of an SGX quote and of a TDX quote.
const TEE_TYPE_SGX: u32 = 0;
const TEE_TYPE_TDX: u32 = 0x81;

/// Verifies a quote that claims to come from `platform` (SGX or TDX) at time `now` (seconds since
/// the Unix epoch); returns its report data when it could be parsed.
pub(crate) fn verify(
    platform: Platform,
    raw: &[u8],
    endorsements: &Endorsements,
    policy: &Policy,
    now: u64,
    v: &mut Verification,
) -> Option<[u8; 64]> {
    let quote = match Quote::parse(raw) {
        Ok(q) => q,
        Err(e) => {
            v.check("quote format", false, format!("not a DCAP quote: {e:#}"));
            return None;
        }
    };
    let actual = match quote.header.tee_type {
        TEE_TYPE_SGX => Platform::Sgx,
        TEE_TYPE_TDX => Platform::Tdx,
        other => {
            v.check("quote format", false, format!("unknown TEE type {other:#x} in the quote header"));
            return None;
        }
    };
    if matches!(quote.report, Report::SgxEnclave(_)) != (actual == Platform::Sgx) {
        v.check("quote format", false, "the quote's header and body disagree on the TEE type");
        return None;
    }
    if actual != platform {
        v.check(
            "quote format",
            false,
            format!("the evidence says {} but the quote is from {}", platform.describe(), actual.describe()),
        );
        return None;
    }
    v.check("quote format", true, format!("DCAP quote version {} ({})", quote.header.version, actual.describe()));

    match endorsements {
        Endorsements::Collateral { collateral } => {
            match serde_json::from_value::<QuoteCollateralV3>(collateral.clone()) {
                Ok(c) => match dcap_qvl::verify::QuoteVerifier::new_prod()
                    .allow_debug(policy.allow_debug)
                    .verify(raw, &c, now)
                {
                    Ok(report) => {
                        v.check(
                        INTEL_CHAIN,
                        true,
                        "quote signed by the attestation key, certified by the QE and the PCK chain to Intel's root; \
                         TCB info, QE identity and CRLs valid and signed",
                    );
                        let accepted = policy.accepted_tcb_statuses();
                        let advisories = if report.advisory_ids.is_empty() {
                            String::new()
                        } else {
                            format!(" (advisories: {})", report.advisory_ids.join(", "))
                        };
                        v.detail(TCB_STATUS, format!("{}{advisories}", report.status));
                        v.check(
                            TCB_STATUS,
                            accepted.contains(&report.status),
                            format!("{}{advisories}; the room accepts {}", report.status, accepted.join(", ")),
                        );
                    }
                    Err(e) => v.check(INTEL_CHAIN, false, format!("{e:#}")),
                },
                Err(e) => v.check(INTEL_CHAIN, false, format!("the collateral is malformed: {e}")),
            }
        }
        _ => v.check(
            INTEL_CHAIN,
            false,
            "no collateral was supplied: fetch it from a PCCS or Intel's PCS for this quote and pass it with the \
             evidence or --collateral",
        ),
    }

    match &quote.report {
        Report::SgxEnclave(r) => {
            v.measurement = Some(hex::encode(r.mr_enclave));
            v.detail("MRSIGNER", hex::encode(r.mr_signer));
            v.detail("ISV product / SVN", format!("{} / {}", r.isv_prod_id, r.isv_svn));
            let debug = r.attributes[0] & 0x02 != 0;
            policy.check_debug(debug, DEBUG, v);
            let (enclave, signer) = (r.mr_enclave, r.mr_signer);
            let (product, svn) = (r.isv_prod_id, r.isv_svn);
            let also = |a: &crate::verify::Accepted, matched: &[u8]| {
                // An MRENCLAVE names one exact enclave; a signer signs many, told apart by product and version.
                if matched != signer.as_slice() || matched == enclave.as_slice() {
                    return Ok("by MRENCLAVE".to_owned());
                }
                if product != a.isv_prod_id {
                    return Err(format!(
                        "its signer accepts ISV product {} and this enclave is product {product}",
                        a.isv_prod_id
                    ));
                }
                if svn < a.min_isv_svn {
                    return Err(format!("ISV SVN {svn} is below the contract's minimum {}", a.min_isv_svn));
                }
                Ok(format!("by MRSIGNER, product {product}, ISV SVN {svn} ≥ {}", a.min_isv_svn))
            };
            policy.check_measurement(Platform::Sgx, &[&enclave[..], &signer[..]], also, v);
            Some(r.report_data)
        }
        other => {
            let Some(td) = other.as_td10() else {
                v.check("quote format", false, "the TDX quote carries no TD report");
                return None;
            };
            v.measurement = Some(hex::encode(td.mr_td));
            for (i, rtmr) in [&td.rt_mr0, &td.rt_mr1, &td.rt_mr2, &td.rt_mr3].iter().enumerate() {
                v.detail(&format!("RTMR{i}"), hex::encode(rtmr));
            }
            let debug = td.td_attributes[0] & 0x01 != 0;
            policy.check_debug(debug, DEBUG, v);
            let rtmrs = [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3];
            let also = |a: &crate::verify::Accepted, _: &[u8]| check_rtmrs(&a.rtmrs, &rtmrs);
            policy.check_measurement(Platform::Tdx, &[&td.mr_td[..]], also, v);
            Some(td.report_data)
        }
    }
}

/// The contract's RTMRs (`None`: free) against the quote's.
fn check_rtmrs(wanted: &[Option<Vec<u8>>], have: &[[u8; 48]; 4]) -> Result<String, String> {
    let mut pinned = Vec::new();
    for (i, want) in wanted.iter().enumerate() {
        let Some(want) = want else { continue };
        let Some(actual) = have.get(i) else {
            return Err(format!("the contract names RTMR{i}, which a TD does not have"));
        };
        if want.as_slice() != actual.as_slice() {
            return Err(format!(
                "RTMR{i} is {} where the contract requires {}",
                hex::encode(actual),
                hex::encode(want)
            ));
        }
        pinned.push(format!("RTMR{i}"));
    }
    Ok(if pinned.is_empty() {
        "the contract constrains no RTMR: any guest booted by this TD firmware passes".to_owned()
    } else {
        format!("{} match the contract", pinned.join(", "))
    })
}

/// Serializes requests to the TDX and SGX quote interfaces, whose steps share state.
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What a debug-mode quote means.
const DEBUG: &str = "the quote comes from a debug-mode TEE: its memory is readable";

/// A TDX quote for `report_data` through the kernel's configfs-tsm interface.
pub(crate) fn request_tdx(report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), crate::AttestError> {
    use crate::AttestError;
    // One configfs entry per process, written then read: one request at a time.
    let _one_at_a_time = DEVICE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let base = std::path::Path::new(TSM_REPORT);
    let provider = std::fs::read_to_string(base.join("provider")).unwrap_or_default();
    let entry = base.join(format!("sealroom-{}", std::process::id()));
    std::fs::create_dir(&entry).map_err(|e| {
        AttestError::Unavailable(format!(
            "cannot create {} (is this a TDX guest with configfs-tsm?): {e}",
            entry.display()
        ))
    })?;
    let result = (|| {
        let provider = std::fs::read_to_string(entry.join("provider")).unwrap_or(provider);
        if provider.trim() != "tdx_guest" {
            return Err(AttestError::Unavailable(format!(
                "configfs-tsm's provider is '{}', not tdx_guest",
                provider.trim()
            )));
        }
        std::fs::write(entry.join("inblob"), report_data)
            .map_err(|e| AttestError::Device(format!("cannot write the TDX report data: {e}")))?;
        std::fs::read(entry.join("outblob")).map_err(|e| AttestError::Device(format!("the TDX quote failed: {e}")))
    })();
    // The entry is the kernel's, not a file: removing it releases the report slot.
    let _ = std::fs::remove_dir(&entry);
    Ok((result?, Endorsements::None))
}

/// Where configfs-tsm lives.
pub(crate) const TSM_REPORT: &str = "/sys/kernel/config/tsm/report";

/// An SGX quote for `report_data` through Gramine's `/dev/attestation` pseudo-files.
pub(crate) fn request_sgx(report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), crate::AttestError> {
    use crate::AttestError;
    // Gramine's `user_report_data` then `quote` is two steps on shared files: one request at a time.
    let _one_at_a_time = DEVICE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let kind = std::fs::read_to_string(format!("{GRAMINE}/attestation_type")).map_err(|e| {
        AttestError::Unavailable(format!(
            "cannot read {GRAMINE}/attestation_type (is this a Gramine SGX enclave?): {e}"
        ))
    })?;
    if kind.trim() != "dcap" {
        return Err(AttestError::Unavailable(format!(
            "Gramine's attestation type is '{}'; sealroom needs DCAP (sgx.remote_attestation = \"dcap\")",
            kind.trim()
        )));
    }
    std::fs::write(format!("{GRAMINE}/user_report_data"), report_data)
        .map_err(|e| AttestError::Device(format!("cannot write the SGX report data: {e}")))?;
    let quote = std::fs::read(format!("{GRAMINE}/quote"))
        .map_err(|e| AttestError::Device(format!("the SGX quote failed: {e}")))?;
    Ok((quote, Endorsements::None))
}

/// Gramine's attestation pseudo-filesystem.
pub(crate) const GRAMINE: &str = "/dev/attestation";

/// The SGX sealing key of this enclave (Gramine's `_sgx_mrenclave` key: bound to MRENCLAVE, so only
/// this exact enclave on this CPU derives it), stretched to 32 bytes with HKDF-SHA256.
pub(crate) fn sgx_sealing_key() -> Result<[u8; 32], crate::AttestError> {
    let path = format!("{GRAMINE}/keys/_sgx_mrenclave");
    let raw = std::fs::read(&path).map_err(|e| {
        crate::AttestError::Unavailable(format!("cannot read the SGX sealing key {path} (Gramine ≥ 1.2?): {e}"))
    })?;
    if raw.len() < 16 {
        return Err(crate::AttestError::Device(format!(
            "the SGX sealing key has {} bytes; at least 16 expected",
            raw.len()
        )));
    }
    // HKDF-SHA256 to 32 bytes (the length of its own output).
    use ring::hkdf;
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sealroom").extract(&raw);
    let info = [b"sealroom sgx sealing key".as_slice()];
    let okm =
        prk.expand(&info, hkdf::HKDF_SHA256).map_err(|_| crate::AttestError::Device("HKDF expand failed".into()))?;
    let mut key = [0u8; 32];
    okm.fill(&mut key).map_err(|_| crate::AttestError::Device("HKDF fill failed".into()))?;
    Ok(key)
}
