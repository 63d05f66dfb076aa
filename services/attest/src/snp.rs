//! AMD SEV-SNP: reports from `/dev/sev-guest`, and their verification against AMD's roots.

use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use crate::evidence::{Endorsements, Platform};
use crate::verify::{Policy, Verification};

/// A built-in AMD root or signing key.
type CertFn = fn() -> std::io::Result<Certificate>;

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
    let fmc = t.fmc.map(|f| format!("fmc {f}, ")).unwrap_or_default();
    format!("{fmc}bootloader {}, tee {}, snp {}, microcode {}", t.bootloader, t.tee, t.snp, t.microcode)
}

/// Verifies an SNP report; returns its report data when it could be parsed.
pub(crate) fn verify(
    raw: &[u8],
    endorsements: &Endorsements,
    policy: &Policy,
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

    match endorsements {
        Endorsements::Vcek { der } => check_chain(der, &report, v),
        _ => v.check(
            "AMD certificate chain",
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
    policy.check_measurement(Platform::SevSnp, &[&report.measurement[..]], v);
    match &policy.snp_min_tcb {
        None => v.check("minimum TCB", true, "the room sets no minimum SEV-SNP TCB"),
        Some(min) => {
            let t = &report.reported_tcb;
            let low: Vec<String> = [
                ("bootloader", t.bootloader, min.bootloader),
                ("tee", t.tee, min.tee),
                ("snp", t.snp, min.snp),
                ("microcode", t.microcode, min.microcode),
            ]
            .iter()
            .filter(|(_, have, want)| have < want)
            .map(|(n, have, want)| format!("{n} {have} < {want}"))
            .collect();
            v.check(
                "minimum TCB",
                low.is_empty(),
                if low.is_empty() {
                    format!("reported TCB meets {min}")
                } else {
                    format!("below the minimum: {}", low.join(", "))
                },
            );
        }
    }
    Some(report.report_data)
}

/// The VCEK chains to one of AMD's built-in roots, is this chip's at the reported TCB, and signed
/// the report.
fn check_chain(der: &[u8], report: &AttestationReport, v: &mut Verification) {
    let vek = match Certificate::from_der(der) {
        Ok(c) => c,
        Err(e) => return v.check("AMD certificate chain", false, format!("the VCEK is not a DER certificate: {e}")),
    };
    let roots: [(&str, CertFn, CertFn); 3] = [
        ("Milan", builtin::milan::ark, builtin::milan::ask),
        ("Genoa", builtin::genoa::ark, builtin::genoa::ask),
        ("Turin", builtin::turin::ark, builtin::turin::ask),
    ];
    let product = roots.iter().find_map(|(name, ark, ask)| {
        let chain = Chain { ca: ca::Chain { ark: ark().ok()?, ask: ask().ok()? }, vek: vek.clone() };
        chain.verify().is_ok().then_some(*name)
    });
    let Some(product) = product else {
        return v.check(
            "AMD certificate chain",
            false,
            "the VCEK is not signed by the ASK of AMD's Milan, Genoa or Turin root (ARK)",
        );
    };
    match vcek_matches(der, report) {
        Ok(()) => v.check(
            "AMD certificate chain",
            true,
            format!("AMD {product} ARK → ASK → VCEK (roots built in); the VCEK is this chip's at the reported TCB"),
        ),
        Err(e) => v.check("AMD certificate chain", false, e),
    }
    // The chain is verified: only the VCEK's signature over the report is left.
    let signed = (&vek, report).verify();
    v.check(
        "report signature",
        signed.is_ok(),
        match signed {
            Ok(()) => "ECDSA P-384 signature by the VCEK".to_owned(),
            Err(e) => format!("the report is not signed by this VCEK: {e}"),
        },
    );
}

/// AMD's VCEK extensions: the chip id and the TCB the key was derived for.
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_TCB: [(&str, &str); 4] = [
    ("1.3.6.1.4.1.3704.1.3.1", "bootloader"),
    ("1.3.6.1.4.1.3704.1.3.2", "tee"),
    ("1.3.6.1.4.1.3704.1.3.3", "snp"),
    ("1.3.6.1.4.1.3704.1.3.8", "microcode"),
];

/// Checks what the signature chain does not: the outer signature algorithm is the signed one
/// (RFC 5280 §4.1.1.2), and the VCEK was issued for this chip and this reported TCB.
fn vcek_matches(der: &[u8], report: &AttestationReport) -> Result<(), String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("the VCEK is not a DER certificate: {e}"))?;
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err("the VCEK's outer signature algorithm differs from the signed one".into());
    }
    let extensions = cert.tbs_certificate.extensions.unwrap_or_default();
    let value =
        |oid: &str| extensions.iter().find(|e| e.extn_id.to_string() == oid).map(|e| e.extn_value.as_bytes().to_vec());
    // The hwID is the chip id as raw bytes: all 64 (Milan, Genoa) or the first 8 (Turin).
    let hwid = value(OID_HWID).ok_or("the VCEK has no hwID extension (a VLEK is not supported)")?;
    let same_chip = match hwid.len() {
        64 => hwid == report.chip_id,
        8 => hwid == report.chip_id[..8],
        _ => false,
    };
    if !same_chip {
        return Err("the VCEK was issued for another chip (its hwID is not the report's chip id)".into());
    }
    let reported = &report.reported_tcb;
    let have = [reported.bootloader, reported.tee, reported.snp, reported.microcode];
    for ((oid, name), have) in OID_TCB.iter().zip(have) {
        let Some(v) = value(oid) else { continue };
        // DER INTEGER: 02 len value (small unsigned values).
        let want = match v.as_slice() {
            [0x02, 1, x] => u32::from(*x),
            [0x02, 2, 0, x] => u32::from(*x),
            _ => return Err(format!("the VCEK's {name} TCB extension is malformed")),
        };
        if want != u32::from(have) {
            return Err(format!("the VCEK is for {name} {want} but the report's reported TCB has {name} {have}"));
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
    let endorsements = vcek.map_or(Endorsements::None, |c| Endorsements::Vcek { der: c.data().to_vec() });
    Ok((report, endorsements))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn request(_report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), crate::AttestError> {
    Err(crate::AttestError::Unavailable("SEV-SNP guests are supported on Linux only".into()))
}
