//! The verifier on real vendor evidence: the SEV-SNP report and VCEK shipped in the `sev` crate's
//! package and the SGX and TDX quotes with collateral shipped in `dcap-qvl`'s, found through
//! `cargo metadata` (never copied into this repository), verified at a fixed time inside the
//! collateral's validity. Changing any byte of a report body, a signature or a certificate is
//! refused, and the refusal names the check that failed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sealroom_attest::verify::{Accepted, SnpTcb, verify};
use sealroom_attest::{Binding, Endorsements, Evidence, Platform, Policy, Verification};

/// Inside the sample collateral's validity (2025-07-08 18:40 UTC); the collateral expired since.
const DCAP_NOW: u64 = 1_752_000_000;
/// Inside the sample VCEK's validity (2023-04-03T19:23:43Z to 2030-04-03T19:23:43Z).
const SNP_NOW: u64 = 1_752_000_000;

/// Where the exact versions of the crates in Cargo.lock are unpacked.
fn package_dir(name: &str) -> PathBuf {
    static METADATA: OnceLock<serde_json::Value> = OnceLock::new();
    let metadata = METADATA.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--offline", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
            .output()
            .expect("cargo metadata runs");
        assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    });
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the dependency graph"));
    Path::new(package["manifest_path"].as_str().unwrap()).parent().unwrap().to_owned()
}

fn snp_sample() -> (Vec<u8>, Vec<u8>) {
    let dir = package_dir("sev").join("tests/certs_data");
    let text = std::fs::read_to_string(dir.join("report_milan.hex")).unwrap();
    (hex::decode(text.trim()).unwrap(), std::fs::read(dir.join("vcek_milan.der")).unwrap())
}

fn dcap_sample(name: &str) -> (Vec<u8>, serde_json::Value) {
    let dir = package_dir("dcap-qvl").join("sample");
    let quote = std::fs::read(dir.join(name)).unwrap();
    let collateral =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}_collateral.json"))).unwrap()).unwrap();
    (quote, collateral)
}

fn evidence(platform: Platform, report: Vec<u8>, endorsements: Endorsements) -> Evidence {
    Evidence { platform, report, public_key: String::new(), room_id: String::new(), nonce: String::new(), endorsements }
}

fn report_data_of(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(bytes);
    out
}

fn failed(v: &Verification) -> Vec<&str> {
    v.failures().map(|c| c.name.as_str()).collect()
}

/// SNP report offsets.
const REPORT_DATA: std::ops::Range<usize> = 0x50..0x90;
const MEASUREMENT: std::ops::Range<usize> = 0x90..0xC0;

fn snp_policy(report: &[u8]) -> Policy {
    Policy { measurements: vec![Accepted::new(Platform::SevSnp, report[MEASUREMENT].to_vec())], ..Policy::default() }
}

#[test]
fn the_amd_sample_report_verifies_and_every_check_is_reported() {
    let (report, vcek) = snp_sample();
    let policy = snp_policy(&report);
    let binding = Binding::ReportData(report_data_of(&report[REPORT_DATA]));
    let e = evidence(Platform::SevSnp, report.clone(), Endorsements::Vcek { der: vcek.clone(), crl: None });
    let v = verify(&e, &policy, &binding, None, SNP_NOW);
    assert!(v.passed(), "{}", v.render());
    let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "report format",
            "AMD certificate chain",
            "VCEK validity",
            "AMD revocation list",
            "report signature",
            "VMPL 0",
            "debug disallowed",
            "migration agent disallowed",
            "measurement accepted",
            "minimum TCB",
            "report data binding"
        ]
    );
    assert!(v.get("AMD certificate chain").unwrap().detail.contains("Milan"));
    assert!(v.get("VCEK validity").unwrap().detail.contains("valid from 2023-04-03T19:23:43Z to 2030-04-03T19:23:43Z"));
    assert_eq!(
        v.get("AMD revocation list").unwrap().detail,
        "not checked: no revocation list was supplied (AMD's Milan CRL is at \
         https://kdsintf.amd.com/vcek/v1/Milan/crl; pass it with --amd-crl)"
    );
    assert_eq!(v.measurement.as_deref(), Some(hex::encode(&report[MEASUREMENT]).as_str()));
    let text = v.render();
    assert!(text.contains("bootloader 3, tee 0, snp 8, microcode 115") && text.contains("ACCEPTED"), "{text}");

    // The policy's own checks, each refused alone.
    let other_measurement =
        Policy { measurements: vec![Accepted::new(Platform::SevSnp, vec![0; 48])], ..policy.clone() };
    assert_eq!(failed(&verify(&e, &other_measurement, &binding, None, SNP_NOW)), ["measurement accepted"]);
    let strict_tcb = Policy {
        snp_min_tcb: Some(SnpTcb { bootloader: 3, tee: 0, snp: 9, microcode: 115, fmc: None }),
        ..policy.clone()
    };
    let v = verify(&e, &strict_tcb, &binding, None, SNP_NOW);
    assert_eq!(failed(&v), ["minimum TCB"]);
    assert!(v.get("minimum TCB").unwrap().detail.contains("snp 8 < 9"), "{}", v.render());
    let met = Policy {
        snp_min_tcb: Some(SnpTcb { bootloader: 3, tee: 0, snp: 8, microcode: 115, fmc: None }),
        ..policy.clone()
    };
    assert!(verify(&e, &met, &binding, None, SNP_NOW).passed());
    assert_eq!(failed(&verify(&e, &policy, &Binding::ReportData([7; 64]), None, SNP_NOW)), ["report data binding"]);
    // The VCEK's validity period: before it (the Unix epoch) and after it (2031).
    let v = verify(&e, &policy, &binding, None, 0);
    assert_eq!(failed(&v), ["VCEK validity"]);
    assert_eq!(
        v.get("VCEK validity").unwrap().detail,
        "the VCEK is not valid before 2023-04-03T19:23:43Z (verification time 1970-01-01T00:00:00Z)"
    );
    let v = verify(&e, &policy, &binding, None, 1_930_000_000);
    assert_eq!(failed(&v), ["VCEK validity"]);
    assert!(v.get("VCEK validity").unwrap().detail.starts_with("the VCEK expired on 2030-04-03T19:23:43Z"));

    // No VCEK, or the VCEK supplied by the verifier instead.
    let bare = evidence(Platform::SevSnp, report.clone(), Endorsements::None);
    let v = verify(&bare, &policy, &binding, None, SNP_NOW);
    assert_eq!(failed(&v), ["AMD certificate chain"]);
    assert!(v.get("AMD certificate chain").unwrap().detail.contains("KDS"), "{}", v.render());
    assert!(verify(&bare, &policy, &binding, Some(&Endorsements::Vcek { der: vcek, crl: None }), SNP_NOW).passed());

    // Wrong platform: an SNP report is no SGX quote.
    let v = verify(&evidence(Platform::Sgx, report, Endorsements::None), &policy, &binding, None, DCAP_NOW);
    assert_eq!(failed(&v), ["quote format"]);
}

/// A revocation list naming AMD's Milan ARK (or `issuer`) as its issuer, current at `SNP_NOW`,
/// listing nothing, signed with RSASSA-PSS (SHA-384, salt 48) by a key that is not AMD's.
fn forged_milan_crl(issuer: Option<&str>) -> Vec<u8> {
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
    use x509_cert::der::Encode as _;
    let ark = x509_cert::Certificate::from(sev::certs::snp::builtin::milan::ark().unwrap());
    let time = |secs: u64| {
        x509_cert::time::Time::try_from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).unwrap()
    };
    let tbs = x509_cert::crl::TbsCertList {
        version: x509_cert::Version::V2,
        // The ARK signs itself with AMD's algorithm: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.
        signature: ark.signature_algorithm.clone(),
        issuer: issuer.map_or(ark.tbs_certificate.subject.clone(), |name| name.parse().unwrap()),
        this_update: time(SNP_NOW - 86_400),
        next_update: Some(time(SNP_NOW + 86_400)),
        revoked_certificates: None,
        crl_extensions: None,
    };
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let signature = rsa::pss::SigningKey::<sha2_010::Sha384>::new(key)
        .sign_with_rng(&mut rsa::rand_core::OsRng, &tbs.to_der().unwrap());
    x509_cert::crl::CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: ark.signature_algorithm,
        signature: x509_cert::der::asn1::BitString::from_bytes(&signature.to_vec()).unwrap(),
    }
    .to_der()
    .unwrap()
}

#[test]
fn a_revocation_list_not_signed_by_amds_milan_ark_is_refused() {
    let (report, vcek) = snp_sample();
    let policy = snp_policy(&report);
    let binding = Binding::ReportData(report_data_of(&report[REPORT_DATA]));
    let with_crl = |crl: Vec<u8>| {
        let e = evidence(Platform::SevSnp, report.clone(), Endorsements::Vcek { der: vcek.clone(), crl: Some(crl) });
        let v = verify(&e, &policy, &binding, None, SNP_NOW);
        assert_eq!(failed(&v), ["AMD revocation list"], "{}", v.render());
        v.get("AMD revocation list").unwrap().detail.clone()
    };
    // Issued in the name of AMD's Milan ARK, whose key (4096-bit, built into `sev`) it is checked with.
    assert_eq!(
        with_crl(forged_milan_crl(None)),
        "the revocation list is not signed by AMD's Milan ARK: the signature does not verify"
    );
    // Genoa's list (by its issuer's name) for a Milan VCEK.
    let genoa = "CN=ARK-Genoa,O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,OU=Engineering";
    let detail = with_crl(forged_milan_crl(Some(genoa)));
    assert!(
        detail.starts_with(&format!("the revocation list is issued by {genoa}, not by AMD's Milan ARK (")),
        "{detail}"
    );
    assert!(detail.contains("CN=ARK-Milan"), "{detail}");
    // Not a CRL: the VCEK in its place.
    assert!(with_crl(vcek.clone()).starts_with("the revocation list is not a DER CRL"));
}

#[test]
fn changing_any_byte_of_the_amd_report_or_its_vcek_is_refused() {
    let (report, vcek) = snp_sample();
    let policy = snp_policy(&report);
    let binding = Binding::ReportData(report_data_of(&report[REPORT_DATA]));
    // Every byte of the report: body, reserved bytes, signature.
    for at in 0..report.len() {
        let mut bad = report.clone();
        bad[at] ^= 0x01;
        let e = evidence(Platform::SevSnp, bad, Endorsements::Vcek { der: vcek.clone(), crl: None });
        let v = verify(&e, &policy, &binding, None, SNP_NOW);
        assert!(!v.passed(), "flipping byte {at:#x} was accepted");
        let failures = failed(&v);
        assert!(
            failures.iter().any(|f| ["report format", "report signature"].contains(f)),
            "byte {at:#x}: refused for {failures:?}, not for the report itself"
        );
    }
    // The debug bit of the policy (bit 19): refused by the signature and by the policy check.
    let mut debug = report.clone();
    debug[0x08 + 2] |= 0x08;
    let v = verify(
        &evidence(Platform::SevSnp, debug, Endorsements::Vcek { der: vcek.clone(), crl: None }),
        &policy,
        &binding,
        None,
        SNP_NOW,
    );
    assert_eq!(failed(&v), ["report signature", "debug disallowed"], "{}", v.render());
    // The VCEK must be this chip's, at the reported TCB (the chain alone does not say so).
    for (at, says) in
        [(0x1A0, "another chip"), (0x186, "the VCEK is for snp 8 but the report's reported TCB has snp 9")]
    {
        let mut bad = report.clone();
        bad[at] ^= 0x01;
        let v = verify(
            &evidence(Platform::SevSnp, bad, Endorsements::Vcek { der: vcek.clone(), crl: None }),
            &policy,
            &binding,
            None,
            SNP_NOW,
        );
        assert!(v.get("AMD certificate chain").unwrap().detail.contains(says), "{}", v.render());
    }
    // A truncated report.
    let v = verify(
        &evidence(Platform::SevSnp, report[..1000].to_vec(), Endorsements::None),
        &policy,
        &binding,
        None,
        SNP_NOW,
    );
    assert_eq!(failed(&v), ["report format"]);
    assert!(v.get("report format").unwrap().detail.contains("1184 bytes"));
    // Every 16th byte of the VCEK (its signature by the ASK covers the whole TBS certificate).
    for at in (0..vcek.len()).step_by(16) {
        let mut bad = vcek.clone();
        bad[at] ^= 0x01;
        let e = evidence(Platform::SevSnp, report.clone(), Endorsements::Vcek { der: bad, crl: None });
        let v = verify(&e, &policy, &binding, None, SNP_NOW);
        assert!(
            failed(&v).contains(&"AMD certificate chain") || failed(&v).contains(&"report signature"),
            "VCEK byte {at}"
        );
    }
}

fn sgx_policy(quote: &[u8], statuses: &[&str]) -> Policy {
    // MRENCLAVE sits at offset 48 + 64 of an SGX quote (header, then the report body).
    Policy {
        measurements: vec![Accepted::new(Platform::Sgx, quote[112..144].to_vec())],
        tcb_statuses: statuses.iter().map(|s| (*s).to_owned()).collect(),
        ..Policy::default()
    }
}

#[test]
fn the_intel_samples_verify_at_a_time_their_collateral_was_valid() {
    let (quote, collateral) = dcap_sample("sgx_quote");
    let e = evidence(Platform::Sgx, quote.clone(), Endorsements::Collateral { collateral: collateral.clone() });
    let mut hello = [0u8; 64];
    hello[..13].copy_from_slice(b"Hello, world!");
    let binding = Binding::ReportData(hello);
    let status = "ConfigurationAndSWHardeningNeeded";
    let v = verify(&e, &sgx_policy(&quote, &[status]), &binding, None, DCAP_NOW);
    assert!(v.passed(), "{}", v.render());
    assert_eq!(v.measurement.as_deref(), Some("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"));
    assert!(v.render().contains("INTEL-SA-00289"), "{}", v.render());
    // The default policy accepts only UpToDate.
    let v = verify(&e, &sgx_policy(&quote, &[]), &binding, None, DCAP_NOW);
    assert_eq!(failed(&v), ["TCB status"]);
    assert!(v.get("TCB status").unwrap().detail.contains("the room accepts UpToDate"));
    // MRSIGNER is accepted in place of MRENCLAVE.
    let by_signer = Policy {
        measurements: vec![Accepted::new(Platform::Sgx, quote[176..208].to_vec())],
        ..sgx_policy(&quote, &[status])
    };
    assert!(verify(&e, &by_signer, &binding, None, DCAP_NOW).passed());
    // By MRSIGNER, the product id must be the contract's and the version at least its minimum.
    // ISVPRODID and ISVSVN follow MRSIGNER (32), 96 reserved bytes: offsets 304 and 306.
    let product = u16::from_le_bytes([quote[304], quote[305]]);
    let svn = u16::from_le_bytes([quote[306], quote[307]]);
    let signer = |isv_prod_id: u16, min_isv_svn: u16| Policy {
        measurements: vec![Accepted {
            isv_prod_id,
            min_isv_svn,
            ..Accepted::new(Platform::Sgx, quote[176..208].to_vec())
        }],
        ..sgx_policy(&quote, &[status])
    };
    let v = verify(&e, &signer(product, svn), &binding, None, DCAP_NOW);
    assert!(v.passed(), "{}", v.render());
    assert!(v.get("measurement accepted").unwrap().detail.contains(&format!("by MRSIGNER, product {product}")));
    let v = verify(&e, &signer(product.wrapping_add(1), 0), &binding, None, DCAP_NOW);
    assert_eq!(failed(&v), ["measurement accepted"]);
    assert!(v.get("measurement accepted").unwrap().detail.contains("and this enclave is product"), "{}", v.render());
    let v = verify(&e, &signer(product, svn + 1), &binding, None, DCAP_NOW);
    assert_eq!(failed(&v), ["measurement accepted"]);
    let detail = &v.get("measurement accepted").unwrap().detail;
    assert!(detail.contains(&format!("ISV SVN {svn} is below the contract's minimum {}", svn + 1)), "{detail}");
    // By MRENCLAVE, product and version do not matter (the enclave is named exactly).
    let exact = Policy {
        measurements: vec![Accepted {
            isv_prod_id: 999,
            min_isv_svn: 999,
            ..Accepted::new(Platform::Sgx, quote[112..144].to_vec())
        }],
        ..sgx_policy(&quote, &[status])
    };
    assert!(verify(&e, &exact, &binding, None, DCAP_NOW).passed());
    // Expired collateral: the same quote a year later.
    let v = verify(&e, &sgx_policy(&quote, &[status]), &binding, None, DCAP_NOW + 365 * 86_400);
    assert_eq!(failed(&v), ["Intel signature chain"]);
    assert!(v.get("Intel signature chain").unwrap().detail.to_lowercase().contains("expired"), "{}", v.render());
    // No collateral.
    let v = verify(
        &evidence(Platform::Sgx, quote.clone(), Endorsements::None),
        &sgx_policy(&quote, &[status]),
        &binding,
        None,
        DCAP_NOW,
    );
    assert_eq!(failed(&v), ["Intel signature chain"]);
    // Wrong platform claimed.
    let v = verify(&evidence(Platform::Tdx, quote, Endorsements::None), &Policy::default(), &binding, None, DCAP_NOW);
    assert_eq!(failed(&v), ["quote format"]);
    assert!(v.get("quote format").unwrap().detail.contains("is from Intel SGX"));

    let (quote, collateral) = dcap_sample("tdx_quote");
    let e = evidence(Platform::Tdx, quote.clone(), Endorsements::Collateral { collateral });
    // MRTD: header (48) + TEE TCB SVN (16) + MRSEAM (48) + MRSIGNERSEAM (48) + SEAM attributes (8)
    // + TD attributes (8) + XFAM (8).
    let mr_td = quote[184..232].to_vec();
    assert!(hex::encode(&mr_td).starts_with("91eb2b44d141d4ec"));
    let report_data = report_data_of(&quote[568..632]);
    let policy = Policy { measurements: vec![Accepted::new(Platform::Tdx, mr_td.clone())], ..Policy::default() };
    let v = verify(&e, &policy, &Binding::ReportData(report_data), None, DCAP_NOW);
    assert!(v.passed(), "{}", v.render());
    assert!(v.render().contains("RTMR3"));
    assert!(v.get("measurement accepted").unwrap().detail.contains("constrains no RTMR"), "{}", v.render());
    // RTMR0..3 follow MRTD, MRCONFIGID, MROWNER and MROWNERCONFIG: offsets 376, 424, 472, 520.
    let rtmr = |i: usize| quote[376 + 48 * i..424 + 48 * i].to_vec();
    let with_rtmrs = |rtmrs: Vec<Option<Vec<u8>>>| Policy {
        measurements: vec![Accepted { rtmrs, ..Accepted::new(Platform::Tdx, mr_td.clone()) }],
        ..Policy::default()
    };
    let pinned = with_rtmrs(vec![Some(rtmr(0)), None, Some(rtmr(2)), Some(rtmr(3))]);
    let v = verify(&e, &pinned, &Binding::ReportData(report_data), None, DCAP_NOW);
    assert!(v.passed(), "{}", v.render());
    assert!(v.get("measurement accepted").unwrap().detail.contains("RTMR0, RTMR2, RTMR3 match"), "{}", v.render());
    let mut other_kernel = rtmr(1);
    other_kernel[0] ^= 1;
    let v = verify(&e, &with_rtmrs(vec![None, Some(other_kernel)]), &Binding::ReportData(report_data), None, DCAP_NOW);
    assert_eq!(failed(&v), ["measurement accepted"]);
    let detail = &v.get("measurement accepted").unwrap().detail;
    assert!(detail.contains(&format!("RTMR1 is {} where the contract requires", hex::encode(rtmr(1)))), "{detail}");
    assert_eq!(
        failed(&verify(&e, &Policy::default(), &Binding::ReportData(report_data), None, DCAP_NOW)),
        ["measurement accepted"]
    );
    // Every fifth byte of the TDX quote's header and TD report, which its signature covers.
    let Endorsements::Collateral { collateral } = &e.endorsements else { unreachable!() };
    for at in (0..632).step_by(5) {
        let mut bad = quote.clone();
        bad[at] ^= 0x01;
        let v = verify(
            &evidence(Platform::Tdx, bad, Endorsements::Collateral { collateral: collateral.clone() }),
            &policy,
            &Binding::ReportData(report_data),
            None,
            DCAP_NOW,
        );
        assert!(
            failed(&v).iter().any(|f| ["quote format", "Intel signature chain"].contains(f)),
            "TDX byte {at}: {:?}",
            failed(&v)
        );
    }
}

#[test]
fn changing_any_signed_byte_of_an_intel_quote_or_its_collateral_is_refused() {
    let (quote, collateral) = dcap_sample("sgx_quote");
    let status = "ConfigurationAndSWHardeningNeeded";
    let policy = sgx_policy(&quote, &[status]);
    let binding = Binding::ReportData(report_data_of(&quote[368..432]));
    let check = |q: Vec<u8>, c: serde_json::Value| {
        let v = verify(
            &evidence(Platform::Sgx, q, Endorsements::Collateral { collateral: c }),
            &policy,
            &binding,
            None,
            DCAP_NOW,
        );
        assert!(!v.passed());
        v
    };
    assert!(
        verify(
            &evidence(Platform::Sgx, quote.clone(), Endorsements::Collateral { collateral: collateral.clone() }),
            &policy,
            &binding,
            None,
            DCAP_NOW
        )
        .passed()
    );
    // Header and report body, the ISV signature, the attestation key, the QE report, its
    // signature and the QE authentication data: every third byte of the signed region.
    for at in (0..1046).step_by(3) {
        let mut bad = quote.clone();
        bad[at] ^= 0x01;
        let v = check(bad, collateral.clone());
        assert!(
            failed(&v).iter().any(|f| ["quote format", "Intel signature chain"].contains(f)),
            "byte {at}: {:?}",
            failed(&v)
        );
    }
    // The collateral: the TCB info and QE identity JSON and their signatures.
    for field in ["tcb_info", "qe_identity"] {
        let mut bad = collateral.clone();
        let text = bad[field].as_str().unwrap().replacen("\"version\":", "\"version\": ", 1);
        bad[field] = text.into();
        assert_eq!(failed(&check(quote.clone(), bad)), ["Intel signature chain"], "{field}");
    }
    for field in ["tcb_info_signature", "qe_identity_signature"] {
        let mut bad = collateral.clone();
        let mut sig = hex::decode(bad[field].as_str().unwrap()).unwrap();
        sig[10] ^= 0x01;
        bad[field] = hex::encode(sig).into();
        assert_eq!(failed(&check(quote.clone(), bad)), ["Intel signature chain"], "{field}");
    }
    // The certificate chain that signs the TCB info.
    let mut bad = collateral.clone();
    let pem = bad["tcb_info_issuer_chain"].as_str().unwrap().to_owned();
    let at = pem.find("MII").unwrap() + 200;
    let flipped = if pem.as_bytes()[at] == b'A' { 'B' } else { 'A' };
    bad["tcb_info_issuer_chain"] = format!("{}{flipped}{}", &pem[..at], &pem[at + 1..]).into();
    assert_eq!(failed(&check(quote.clone(), bad)), ["Intel signature chain"]);
    // A truncated quote.
    assert_eq!(failed(&check(quote[..600].to_vec(), collateral)), ["quote format"]);
}
