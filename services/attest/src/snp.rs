//! AMD SEV-SNP: reports from `/dev/sev-guest`, and their verification against AMD's roots.

use sev::certs::snp::{Certificate, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use crate::evidence::{Endorsements, Platform};
use crate::verify::endorsement_checks::{AMD_CHAIN, AMD_REVOCATION as REVOCATION, REPORT_SIGNATURE, VCEK_VALIDITY};
use crate::verify::{Policy, Verification};

#[cfg(test)]
mod tests;

/// A built-in AMD root or signing key.
type CertFn = fn() -> std::io::Result<Certificate>;

/// An AMD root key (ARK) and the AMD signing key (ASK) it certified, for one product line.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub(crate) product: &'static str,
    pub(crate) chain: ca::Chain,
}

/// The roots a VCEK must chain to: AMD's Milan, Genoa and Turin ARK and ASK built into `sev`.
/// Verification never takes roots from anywhere else (only this crate's unit tests substitute
/// generated ones, through the crate-private `verify::verify_with_snp_roots`).
pub(crate) fn amd_roots() -> Vec<Root> {
    let builtin: [(&'static str, CertFn, CertFn); 3] = [
        ("Milan", builtin::milan::ark, builtin::milan::ask),
        ("Genoa", builtin::genoa::ark, builtin::genoa::ask),
        ("Turin", builtin::turin::ark, builtin::turin::ask),
    ];
    builtin
        .into_iter()
        .filter_map(|(product, ark, ask)| {
            Some(Root { product, chain: ca::Chain { ark: ark().ok()?, ask: ask().ok()? } })
        })
        .collect()
}

/// Size of an SNP attestation report.
pub(crate) const REPORT_LEN: usize = 1184;

/// Parses a report and refuses any byte the parser would not read back: reserved bytes, unused
/// TCB bytes and the unused high bytes of the signature must be zero, so a report verifies only
/// in the exact form the firmware signed.
fn parse_canonical(raw: &[u8]) -> Result<AttestationReport, String> {
    if raw.len() != REPORT_LEN {
        return Err(format!("an SEV-SNP report is {REPORT_LEN} bytes; this one is {}", raw.len()));
    }
    let report = AttestationReport::from_bytes(raw).map_err(|e| format!("not an SEV-SNP report: {e}"))?;
    let encoded = report.to_bytes().map_err(|e| format!("cannot re-encode the report: {e}"))?;
    // Signature r and s are 72-byte little-endian fields of which P-384 uses the low 48 bytes.
    let high_zero = raw[0x2D0..0x2E8].iter().chain(&raw[0x318..0x330]).all(|b| *b == 0);
    if encoded.as_slice() != raw || !high_zero {
        return Err("the report has bytes outside its fields set (reserved or unused bytes must be zero)".into());
    }
    Ok(report)
}

fn tcb_text(t: &sev::firmware::host::TcbVersion) -> String {
    crate::verify::SnpTcb { bootloader: t.bootloader, tee: t.tee, snp: t.snp, microcode: t.microcode, fmc: t.fmc }
        .to_string()
}

/// Verifies an SNP report at `now` (seconds since the Unix epoch: the VCEK must be valid then)
/// with a VCEK that must chain to one of the `roots` ([`amd_roots`] outside this crate's tests);
/// returns its report data when it could be parsed.
pub(crate) fn verify(
    raw: &[u8],
    endorsements: &Endorsements,
    policy: &Policy,
    now: u64,
    roots: impl FnOnce() -> Vec<Root>,
    v: &mut Verification,
) -> Option<[u8; 64]> {
    let report = match parse_canonical(raw) {
        Ok(r) => {
            v.check("report format", true, format!("SEV-SNP attestation report version {}", r.version));
            r
        }
        Err(e) => {
            v.check("report format", false, e);
            return None;
        }
    };
    v.measurement = Some(hex::encode(report.measurement));
    v.detail("reported TCB", tcb_text(&report.reported_tcb));
    v.detail("VMPL", report.vmpl.to_string());
    v.detail("chip id", hex::encode(&report.chip_id[..8]) + "…");
    v.detail("guest policy", format!("{:#x}", report.policy.0));
    // SMT is shown, not refused: most hosts run with it on, and a guest policy that forbids it
    // cannot launch there. A sibling hyperthread shares the core's caches (a side channel).
    v.detail(
        "SMT",
        if report.policy.smt_allowed() {
            "allowed by the guest policy (the host may run other code on the core's sibling thread)"
        } else {
            "disallowed by the guest policy"
        },
    );

    match endorsements {
        Endorsements::Vcek { der, crl } => check_chain(der, crl.as_deref(), &report, now, &roots(), v),
        _ => v.check(
            AMD_CHAIN,
            false,
            "no VCEK was supplied: fetch the chip's VCEK from AMD's KDS (chip id and reported TCB above) and \
             pass it with the evidence or --vcek",
        ),
    }

    v.check(
        "VMPL 0",
        report.vmpl == 0,
        if report.vmpl == 0 {
            "requested at VMPL 0 (the guest's most privileged level)".to_owned()
        } else {
            format!("requested at VMPL {}: a less privileged layer could have asked for it", report.vmpl)
        },
    );
    policy.check_debug(
        report.policy.debug_allowed(),
        "the guest policy allows debugging: the host can read the guest's memory",
        v,
    );
    let migration_agent = report.policy.migrate_ma_allowed();
    v.check(
        "migration agent disallowed",
        !migration_agent,
        if migration_agent {
            "the guest policy allows a migration agent (MIGRATE_MA, bit 18): an agent the host associates with \
             the guest can export its memory and state, and the agent's own measurement is not in this report"
        } else {
            "the guest policy disallows a migration agent (MIGRATE_MA = 0)"
        },
    );
    policy.check_measurement(Platform::SevSnp, &[&report.measurement[..]], |_, _| Ok(String::new()), v);
    match &policy.snp_min_tcb {
        None => v.check("minimum TCB", true, "the room sets no minimum SEV-SNP TCB"),
        Some(min) => {
            let t = &report.reported_tcb;
            // The FMC component exists on Turin reports only; a minimum FMC does not apply to
            // Milan and Genoa reports (their firmware has no separate FMC).
            let (fmc, unmet_fmc) = match (min.fmc, t.fmc) {
                (Some(want), Some(have)) => (Some(("fmc", have, want)), None),
                (Some(want), None) => (
                    None,
                    Some(format!(
                        "the contract's minimum fmc {want} does not apply: this report has no FMC component \
                         (only Turin reports have one)"
                    )),
                ),
                (None, _) => (None, None),
            };
            let low: Vec<String> = fmc
                .into_iter()
                .chain([
                    ("bootloader", t.bootloader, min.bootloader),
                    ("tee", t.tee, min.tee),
                    ("snp", t.snp, min.snp),
                    ("microcode", t.microcode, min.microcode),
                ])
                .filter(|(_, have, want)| have < want)
                .map(|(n, have, want)| format!("{n} {have} < {want}"))
                .collect();
            let mut compared = *min;
            compared.fmc = compared.fmc.filter(|_| t.fmc.is_some());
            let mut detail = if low.is_empty() {
                format!("reported TCB meets {compared}")
            } else {
                format!("below the minimum: {}", low.join(", "))
            };
            if let Some(note) = unmet_fmc {
                detail = format!("{detail}; {note}");
            }
            v.check("minimum TCB", low.is_empty(), detail);
        }
    }
    Some(report.report_data)
}

/// The VCEK chains to one of `roots`, is this chip's at the reported TCB, is valid at `now`, is
/// not revoked by AMD's `crl` (when given), and signed the report.
fn check_chain(
    der: &[u8],
    crl: Option<&[u8]>,
    report: &AttestationReport,
    now: u64,
    roots: &[Root],
    v: &mut Verification,
) {
    let vek = match Certificate::from_der(der) {
        Ok(c) => c,
        Err(e) => return v.check(AMD_CHAIN, false, format!("the VCEK is not a DER certificate: {e}")),
    };
    // What `Chain::verify` does (ARK → ASK, ASK → VCEK), by reference: nothing cloned per root.
    let root = roots.iter().find(|root| (&root.chain).verify().and_then(|ask| (ask, &vek).verify()).is_ok());
    let Some(root) = root else {
        let names: Vec<&str> = roots.iter().map(|r| r.product).collect();
        return v.check(
            AMD_CHAIN,
            false,
            format!("the VCEK is not signed by the ASK of AMD's {} root (ARK)", one_of(&names)),
        );
    };
    let product = root.product;
    let cert = x509_cert::Certificate::from(vek.clone());
    match vcek_matches(&cert, report) {
        Ok(()) => v.check(
            AMD_CHAIN,
            true,
            format!("AMD {product} ARK → ASK → VCEK (roots built in); the VCEK is this chip's at the reported TCB"),
        ),
        Err(e) => v.check(AMD_CHAIN, false, e),
    }
    check_validity(&cert, now, v);
    check_revocation(crl, root, &cert, now, v);
    // The chain is verified: only the VCEK's signature over the report is left.
    let signed = (&vek, report).verify();
    v.check(
        REPORT_SIGNATURE,
        signed.is_ok(),
        match signed {
            Ok(()) => "ECDSA P-384 signature by the VCEK".to_owned(),
            Err(e) => format!("the report is not signed by this VCEK: {e}"),
        },
    );
}

/// "a", "a or b", "a, b or c".
fn one_of(names: &[&str]) -> String {
    match names {
        [] => "(none)".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The VCEK is valid at `now`: notBefore ≤ now ≤ notAfter (RFC 5280 §4.1.2.5). AMD's KDS issues
/// VCEKs valid for seven years.
fn check_validity(cert: &x509_cert::Certificate, now: u64, v: &mut Verification) {
    let validity = &cert.tbs_certificate.validity;
    let (from, until) = (validity.not_before, validity.not_after);
    let at = time_text(now);
    let (valid, detail) = if now < from.to_unix_duration().as_secs() {
        (false, format!("the VCEK is not valid before {from} (verification time {at})"))
    } else if now > until.to_unix_duration().as_secs() {
        (false, format!("the VCEK expired on {until} (verification time {at})"))
    } else {
        (true, format!("valid from {from} to {until}; verified at {at}"))
    };
    v.check(VCEK_VALIDITY, valid, detail);
}

/// AMD's revocation list for the product (the KDS's `vcek/v1/{product}/crl`), when supplied: it
/// must be issued and signed by the ARK the chain verified against and current at `now`, and must
/// list neither the ASK nor the VCEK. Without one the check passes and says revocation was not
/// checked.
fn check_revocation(crl: Option<&[u8]>, root: &Root, vcek: &x509_cert::Certificate, now: u64, v: &mut Verification) {
    let Some(crl) = crl else {
        let product = root.product;
        return v.check(
            REVOCATION,
            true,
            format!(
                "not checked: no revocation list was supplied (AMD's {product} CRL is at \
                 https://kdsintf.amd.com/vcek/v1/{product}/crl; pass it with --amd-crl)"
            ),
        );
    };
    match revocation(crl, root, vcek, now) {
        Ok(detail) => v.check(REVOCATION, true, detail),
        Err(e) => v.check(REVOCATION, false, e),
    }
}

fn revocation(der: &[u8], root: &Root, vcek: &x509_cert::Certificate, now: u64) -> Result<String, String> {
    use x509_cert::der::Decode as _;
    let product = root.product;
    let crl = x509_cert::crl::CertificateList::from_der(der)
        .map_err(|e| format!("the revocation list is not a DER CRL: {e}"))?;
    let ark = x509_cert::Certificate::from(root.chain.ark.clone());
    let ask = x509_cert::Certificate::from(root.chain.ask.clone());
    let list = &crl.tbs_cert_list;
    let ark_name = &ark.tbs_certificate.subject;
    if list.issuer != *ark_name {
        return Err(format!(
            "the revocation list is issued by {}, not by AMD's {product} ARK ({ark_name}): is it another product's?",
            list.issuer
        ));
    }
    check_crl_signature(der, &crl, &ark)
        .map_err(|e| format!("the revocation list is not signed by AMD's {product} ARK: {e}"))?;
    let at = time_text(now);
    let this_update = list.this_update;
    let Some(next_update) = list.next_update else {
        return Err("the revocation list has no nextUpdate: there is no telling whether it is current".into());
    };
    if now < this_update.to_unix_duration().as_secs() {
        return Err(format!("the revocation list is not valid before {this_update} (verification time {at})"));
    }
    if now > next_update.to_unix_duration().as_secs() {
        return Err(format!(
            "the revocation list expired on {next_update} (verification time {at}): fetch a current one from \
             https://kdsintf.amd.com/vcek/v1/{product}/crl"
        ));
    }
    let revoked = list.revoked_certificates.as_deref().unwrap_or_default();
    let listed = |serial: &x509_cert::serial_number::SerialNumber| {
        revoked.iter().find(|r| same_serial(r.serial_number.as_bytes(), serial.as_bytes()))
    };
    let ask_serial = &ask.tbs_certificate.serial_number;
    let vcek_serial = &vcek.tbs_certificate.serial_number;
    if let Some(entry) = listed(ask_serial) {
        return Err(format!(
            "AMD's {product} ARK revoked the ASK (serial {ask_serial}) on {}: no VCEK it signed is trusted",
            entry.revocation_date
        ));
    }
    if let Some(entry) = listed(vcek_serial) {
        return Err(format!(
            "AMD's {product} ARK revoked the VCEK (serial {vcek_serial}) on {}",
            entry.revocation_date
        ));
    }
    Ok(format!(
        "neither the ASK (serial {ask_serial}) nor the VCEK (serial {vcek_serial}) is among the {} certificates \
         AMD's {product} ARK revoked (list of {this_update}, next update {next_update}; verified at {at})",
        revoked.len()
    ))
}

/// Two serial numbers (big-endian INTEGER contents) are the same number.
fn same_serial(a: &[u8], b: &[u8]) -> bool {
    fn strip(s: &[u8]) -> &[u8] {
        s.iter().position(|b| *b != 0).map_or(&[], |i| &s[i..])
    }
    strip(a) == strip(b)
}

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";

/// The CRL's signature is the ARK's: RSASSA-PSS with SHA-384 and MGF1-SHA-384 (AMD's algorithm,
/// named alike inside and outside the signed part) over the signed bytes as they are in `der`.
fn check_crl_signature(
    der: &[u8],
    crl: &x509_cert::crl::CertificateList,
    ark: &x509_cert::Certificate,
) -> Result<(), String> {
    use rsa::pkcs1::RsaPssParams;
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    use x509_cert::der::{Decode as _, Encode as _, Reader as _};

    let algorithm = &crl.signature_algorithm;
    if *algorithm != crl.tbs_cert_list.signature {
        return Err("its outer signature algorithm differs from the signed one".into());
    }
    if algorithm.oid.to_string() != OID_RSASSA_PSS {
        return Err(format!("it is signed with {}, not RSASSA-PSS", algorithm.oid));
    }
    let params = algorithm.parameters.as_ref().ok_or("its RSASSA-PSS parameters are missing")?;
    let params = params.to_der().map_err(|e| format!("its RSASSA-PSS parameters are malformed: {e}"))?;
    let pss = RsaPssParams::from_der(&params).map_err(|e| format!("its RSASSA-PSS parameters are malformed: {e}"))?;
    let mgf_hash = pss.mask_gen.parameters.map(|h| h.oid.to_string());
    if pss.hash.oid.to_string() != OID_SHA384
        || pss.mask_gen.oid.to_string() != OID_MGF1
        || mgf_hash.as_deref() != Some(OID_SHA384)
    {
        return Err("it is not signed with SHA-384 and MGF1-SHA-384 (AMD's RSASSA-PSS parameters)".into());
    }
    let spki = ark.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("the ARK's key is not RSA: {e}"))?;
    // The signed bytes as the CRL carries them: the first element of the outer SEQUENCE.
    let mut reader = x509_cert::der::SliceReader::new(der).map_err(|e| e.to_string())?;
    let signed = x509_cert::der::Header::decode(&mut reader)
        .and_then(|_| reader.tlv_bytes())
        .map_err(|e| format!("the signed part cannot be read: {e}"))?;
    let signature = crl.signature.as_bytes().ok_or("the signature is not a whole number of bytes")?;
    let signature = rsa::pss::Signature::try_from(signature).map_err(|e| format!("malformed signature: {e}"))?;
    rsa::pss::VerifyingKey::<sha2_010::Sha384>::new_with_salt_len(key, usize::from(pss.salt_len))
        .verify(signed, &signature)
        .map_err(|_| "the signature does not verify".to_owned())
}

/// A time in seconds since the Unix epoch as an RFC 3339 UTC date.
fn time_text(secs: u64) -> String {
    x509_cert::der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_or_else(|_| format!("{secs} s after the Unix epoch"), |t| t.to_string())
}

/// AMD's VCEK extensions: the chip id and the TCB the key was derived for (the FMC component on
/// Turin only).
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_BOOTLOADER: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_MICROCODE: &str = "1.3.6.1.4.1.3704.1.3.8";

/// Checks what the signature chain does not: the outer signature algorithm is the signed one
/// (RFC 5280 §4.1.1.2), and the VCEK was issued for this chip and this reported TCB.
fn vcek_matches(cert: &x509_cert::Certificate, report: &AttestationReport) -> Result<(), String> {
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err("the VCEK's outer signature algorithm differs from the signed one".into());
    }
    let extensions = cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let value = |oid: &str| extensions.iter().find(|e| e.extn_id.to_string() == oid).map(|e| e.extn_value.as_bytes());
    // The hwID is the chip id as raw bytes: all 64 (Milan, Genoa) or the first 8 (Turin).
    let hwid = value(OID_HWID).ok_or("the VCEK has no hwID extension (a VLEK is not supported)")?;
    let same_chip = match hwid.len() {
        64 => hwid == report.chip_id,
        8 => hwid == &report.chip_id[..8],
        _ => false,
    };
    if !same_chip {
        return Err("the VCEK was issued for another chip (its hwID is not the report's chip id)".into());
    }
    let reported = &report.reported_tcb;
    let components = [
        (OID_FMC, "fmc", reported.fmc),
        (OID_BOOTLOADER, "bootloader", Some(reported.bootloader)),
        (OID_TEE, "tee", Some(reported.tee)),
        (OID_SNP, "snp", Some(reported.snp)),
        (OID_MICROCODE, "microcode", Some(reported.microcode)),
    ];
    for (oid, name, have) in components {
        let Some(v) = value(oid) else { continue };
        // DER INTEGER: 02 len value (small unsigned values).
        let want = match v {
            [0x02, 1, x] | [0x02, 2, 0, x] => *x,
            _ => return Err(format!("the VCEK's {name} TCB extension is malformed")),
        };
        match have {
            Some(have) if have == want => {}
            Some(have) => {
                return Err(format!("the VCEK is for {name} {want} but the report's reported TCB has {name} {have}"));
            }
            None => {
                return Err(format!(
                    "the VCEK is for {name} {want} (a Turin VCEK) but the report's reported TCB has no {name} \
                     component (not a Turin report)"
                ));
            }
        }
    }
    Ok(())
}

/// A report from the SNP firmware for `report_data`, with the VCEK when the host supplies it in
/// the extended report's certificate table.
#[cfg(target_os = "linux")]
pub(crate) fn request(report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), crate::AttestError> {
    use sev::firmware::guest::Firmware;
    let mut fw = Firmware::open().map_err(|e| {
        crate::AttestError::Unavailable(format!("cannot open /dev/sev-guest (is this an SEV-SNP guest?): {e}"))
    })?;
    let (report, certs) = fw
        .get_ext_report(None, Some(*report_data), Some(0))
        .map_err(|e| crate::AttestError::Device(format!("the SEV-SNP firmware refused a report: {e}")))?;
    let vcek = certs.into_iter().flatten().find(|c| c.cert_type == sev::firmware::host::CertType::VCEK);
    let endorsements = vcek.map_or(Endorsements::None, |c| Endorsements::Vcek { der: c.data().to_vec(), crl: None });
    Ok((report, endorsements))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn request(_report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), crate::AttestError> {
    Err(crate::AttestError::Unavailable("SEV-SNP guests are supported on Linux only".into()))
}

/// The guest's sealing key: the SNP firmware's key derived from the chip's VCEK, mixing in the launch
/// measurement and the guest policy (so another image or policy derives another key) at VMPL 0.
/// The TCB is not mixed in, so a firmware update keeps the data readable (the contract's minimum TCB
/// is enforced by attestation instead).
#[cfg(target_os = "linux")]
pub(crate) fn sealing_key() -> Result<[u8; 32], crate::AttestError> {
    use sev::firmware::guest::{DerivedKey, Firmware, GuestFieldSelect};
    let mut fw = Firmware::open().map_err(|e| {
        crate::AttestError::Unavailable(format!("cannot open /dev/sev-guest (is this an SEV-SNP guest?): {e}"))
    })?;
    let mut fields = GuestFieldSelect::default();
    fields.set_guest_policy(true);
    fields.set_measurement(true);
    // Message version 1: no launch mitigation vector (firmware before 1.58 knows no other).
    fw.get_derived_key(Some(1), DerivedKey::new(false, fields, 0, 0, 0, None))
        .map_err(|e| crate::AttestError::Device(format!("the SEV-SNP firmware refused a derived key: {e}")))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn sealing_key() -> Result<[u8; 32], crate::AttestError> {
    Err(crate::AttestError::Unavailable("SEV-SNP guests are supported on Linux only".into()))
}
