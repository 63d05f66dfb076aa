//! The SEV-SNP verifier on chains generated at test time with AMD's structure: an ARK (self-signed)
//! and an ASK (signed by the ARK), RSA keys signing with RSASSA-PSS and SHA-384 as AMD's do, and a
//! VCEK (ECDSA P-384) issued by the ASK with AMD's extensions (hwID, TCB components as DER
//! INTEGERs), which signs 1184-byte reports in AMD's format (r and s little-endian in 72-byte
//! fields). No key is committed: the RSA keys are made once per test binary.
//!
//! The generated root is handed to the verifier through the crate-private
//! `verify_with_snp_roots`; the public `verify` uses AMD's built-in roots only (the last test).
//! Every refusal below is of a report whose signature and chain are valid (the positive tests show
//! the same construction passes every check), so each one fails exactly the check it names.
//!
//! AMD's revocation list (CRL) is generated the same way: signed by the ARK with RSASSA-PSS and
//! SHA-384, listing serial numbers of the ASK or the VCEK (which have distinct serials here).

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use p384::ecdsa::signature::Signer as _;
use p384::pkcs8::EncodePublicKey as _;
use rsa::RsaPrivateKey;
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use sev::certs::snp::ecdsa::Signature as ReportSignature;
use sev::firmware::guest::GuestPolicy;
use sev::firmware::host::TcbVersion;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::der::asn1::{BitString, Ia5StringRef, OctetString};
use x509_cert::der::{Any, Decode as _, Encode as _};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{TbsCertificate, Version};

use super::*;
use crate::evidence::{Evidence, report_data};
use crate::verify::{Accepted, Binding, SnpTcb, verify_with_snp_roots};

/// RSA-2048 keeps key generation fast; `sev` verifies RSA-PSS with any key size up to 4096 bits
/// (AMD's own ARK and ASK are 4096-bit).
const RSA_BITS: usize = 2048;
/// The verification time: 2025-07-08T18:40:00Z.
const NOW: u64 = 1_752_000_000;
const DAY: u64 = 86_400;
const YEAR: u64 = 365 * DAY;

const MEASUREMENT: [u8; 48] = [0x4d; 48];
/// Serial numbers: the ASK's and the VCEK's differ, so a CRL can list one and not the other.
const ARK_SERIAL: &[u8] = &[0x01];
const ASK_SERIAL: &[u8] = &[0x0a, 0x5c];
const VCEK_SERIAL: &[u8] = &[0x7c, 0xe4];
const NONCE: &[u8] = b"the verifier's fresh nonce";

/// RSASSA-PSS parameters as AMD's certificates carry them: SHA-384, MGF1 with SHA-384, salt 48.
const PSS_SHA384: [u8; 54] = [
    0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30,
];

fn pss_sha384(salt: u8) -> AlgorithmIdentifierOwned {
    let mut params = PSS_SHA384;
    params[53] = salt;
    AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10"),
        parameters: Some(Any::from_der(&params).unwrap()),
    }
}

/// The RSA keys: AMD's ARK and ASK, and a foreign root (someone else's ARK, or an ASK of their own).
struct Keys {
    ark: RsaPrivateKey,
    ask: RsaPrivateKey,
    foreign: RsaPrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || RsaPrivateKey::new(&mut OsRng, RSA_BITS).unwrap();
        std::thread::scope(|s| {
            let (ark, ask, foreign) = (s.spawn(generate), s.spawn(generate), s.spawn(generate));
            Keys { ark: ark.join().unwrap(), ask: ask.join().unwrap(), foreign: foreign.join().unwrap() }
        })
    })
}

/// The VCEK's key (the chip's, derived by the firmware at the reported TCB) and the enclave key
/// the report data binds.
fn vcek_key() -> &'static p384::ecdsa::SigningKey {
    static KEY: OnceLock<p384::ecdsa::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| p384::ecdsa::SigningKey::random(&mut OsRng))
}

fn enclave_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = p384::ecdsa::SigningKey::random(&mut OsRng);
        key.verifying_key().to_public_key_der().unwrap().as_bytes().to_vec()
    })
}

fn room_id() -> String {
    "5e".repeat(32)
}

fn time(secs: u64) -> Time {
    Time::try_from(UNIX_EPOCH + Duration::from_secs(secs)).unwrap()
}

fn amd_name(cn: &str) -> Name {
    format!("CN={cn},O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,OU=Engineering").parse().unwrap()
}

/// A certificate signed by `issuer` with RSASSA-PSS (SHA-384, salt 48); its outer signature
/// algorithm is `outer` (AMD's: the signed one).
#[allow(clippy::too_many_arguments)]
fn certificate(
    serial: &[u8],
    issuer: &RsaPrivateKey,
    issuer_name: &str,
    subject_name: &str,
    spki: &[u8],
    validity: (u64, u64),
    extensions: Option<Vec<Extension>>,
    outer: AlgorithmIdentifierOwned,
) -> x509_cert::Certificate {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(serial).unwrap(),
        signature: pss_sha384(48),
        issuer: amd_name(issuer_name),
        validity: Validity { not_before: time(validity.0), not_after: time(validity.1) },
        subject: amd_name(subject_name),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki).unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions,
    };
    let signer = rsa::pss::SigningKey::<sha2_010::Sha384>::new(issuer.clone());
    let signature = signer.sign_with_rng(&mut OsRng, &tbs.to_der().unwrap());
    x509_cert::Certificate {
        tbs_certificate: tbs,
        signature_algorithm: outer,
        signature: BitString::from_bytes(&signature.to_vec()).unwrap(),
    }
}

fn rsa_spki(key: &RsaPrivateKey) -> Vec<u8> {
    rsa::pkcs8::EncodePublicKey::to_public_key_der(&key.to_public_key()).unwrap().as_bytes().to_vec()
}

/// A root CA certificate (ARK) or signing key certificate (ASK), valid 2020 to 2045 like AMD's.
fn ca_certificate(
    serial: &[u8],
    issuer: &RsaPrivateKey,
    issuer_name: &str,
    subject: &RsaPrivateKey,
    name: &str,
) -> Certificate {
    let validity = (1_600_000_000, 2_400_000_000);
    Certificate::from(certificate(
        serial,
        issuer,
        issuer_name,
        name,
        &rsa_spki(subject),
        validity,
        None,
        pss_sha384(48),
    ))
}

/// The generated AMD root: its ARK and ASK, and a foreign root.
struct Pki {
    ark: Certificate,
    ask: Certificate,
    foreign_ark: Certificate,
    ask_by_foreign_ark: Certificate,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let k = keys();
        Pki {
            ark: ca_certificate(ARK_SERIAL, &k.ark, "ARK-Test", &k.ark, "ARK-Test"),
            ask: ca_certificate(ASK_SERIAL, &k.ark, "ARK-Test", &k.ask, "SEV-Test"),
            foreign_ark: ca_certificate(ARK_SERIAL, &k.foreign, "ARK-Test", &k.foreign, "ARK-Test"),
            ask_by_foreign_ark: ca_certificate(ASK_SERIAL, &k.foreign, "ARK-Test", &k.ask, "SEV-Test"),
        }
    })
}

/// The root set the tests trust in place of AMD's: the generated ARK and ASK.
fn test_roots() -> Vec<Root> {
    vec![Root { product: "Test", chain: ca::Chain { ark: pki().ark.clone(), ask: pki().ask.clone() } }]
}

/// Who signs the VCEK.
#[derive(Clone, Copy)]
enum Issuer {
    Ask,
    Ark,
    Foreign,
}

/// A VCEK to issue: AMD's extensions for a chip id and a TCB.
#[derive(Clone)]
struct Vcek {
    /// The hwID extension (None: no extension, as on a VLEK).
    hwid: Option<Vec<u8>>,
    /// The TCB extensions; the FMC one is present when `tcb.fmc` is (Turin).
    tcb: TcbVersion,
    validity: (u64, u64),
    issuer: Issuer,
    /// The salt length the outer signature algorithm names (AMD's: 48, the signed one).
    outer_salt: u8,
}

fn extension(oid: &str, value: &[u8]) -> Extension {
    Extension {
        extn_id: ObjectIdentifier::new_unwrap(oid),
        critical: false,
        extn_value: OctetString::new(value).unwrap(),
    }
}

impl Vcek {
    /// The VCEK the KDS issues for the chip and reported TCB of `report`.
    fn for_report(report: &AttestationReport) -> Self {
        let turin = report.reported_tcb.fmc.is_some();
        let hwid = if turin { report.chip_id[..8].to_vec() } else { report.chip_id.to_vec() };
        Self {
            hwid: Some(hwid),
            tcb: report.reported_tcb,
            validity: (NOW - YEAR, NOW + 6 * YEAR),
            issuer: Issuer::Ask,
            outer_salt: 48,
        }
    }

    /// DER of the VCEK certifying `key`, with AMD's extensions in AMD's order and encoding.
    fn issue(&self, key: &p384::ecdsa::VerifyingKey) -> Vec<u8> {
        let turin = self.tcb.fmc.is_some();
        let int = |x: u8| x.to_der().unwrap();
        let product = if turin { "Turin" } else { "Milan-B0" };
        let mut extensions = vec![
            extension("1.3.6.1.4.1.3704.1.1", &int(u8::from(turin))),
            extension("1.3.6.1.4.1.3704.1.2", &Ia5StringRef::new(product).unwrap().to_der().unwrap()),
        ];
        if let Some(fmc) = self.tcb.fmc {
            extensions.push(extension(OID_FMC, &int(fmc)));
        }
        extensions.extend([
            extension(OID_BOOTLOADER, &int(self.tcb.bootloader)),
            extension(OID_TEE, &int(self.tcb.tee)),
            extension(OID_SNP, &int(self.tcb.snp)),
            extension("1.3.6.1.4.1.3704.1.3.5", &int(0)),
            extension("1.3.6.1.4.1.3704.1.3.6", &int(0)),
            extension("1.3.6.1.4.1.3704.1.3.7", &int(0)),
            extension(OID_MICROCODE, &int(self.tcb.microcode)),
        ]);
        if let Some(hwid) = &self.hwid {
            extensions.push(extension(OID_HWID, hwid));
        }
        let k = keys();
        let (issuer, issuer_name) = match self.issuer {
            Issuer::Ask => (&k.ask, "SEV-Test"),
            Issuer::Ark => (&k.ark, "ARK-Test"),
            Issuer::Foreign => (&k.foreign, "SEV-Test"),
        };
        let spki = key.to_public_key_der().unwrap();
        let cert = certificate(
            VCEK_SERIAL,
            issuer,
            issuer_name,
            "SEV-VCEK",
            spki.as_bytes(),
            self.validity,
            Some(extensions),
            pss_sha384(self.outer_salt),
        );
        cert.to_der().unwrap()
    }
}

/// Who signs a revocation list.
#[derive(Clone, Copy)]
enum CrlSigner {
    /// The trusted ARK, as AMD does.
    Ark,
    /// A foreign root key that names itself like the trusted ARK.
    Foreign,
}

/// AMD's revocation list for the product, as the KDS serves it: issued and signed by the ARK
/// (RSASSA-PSS, SHA-384, salt 48), current for a week around the verification time.
#[derive(Clone)]
struct Crl {
    signer: CrlSigner,
    issuer: String,
    this_update: u64,
    next_update: Option<u64>,
    /// Serial numbers revoked (each on `REVOKED_ON`).
    revoked: Vec<&'static [u8]>,
    /// The salt length the outer signature algorithm names (AMD's: 48, the signed one).
    outer_salt: u8,
}

/// The date the generated CRLs revoke their entries: 2025-06-08T18:40:00Z.
const REVOKED_ON: u64 = NOW - 30 * DAY;

impl Crl {
    /// A current CRL of the trusted ARK revoking `revoked`.
    fn listing(revoked: &[&'static [u8]]) -> Self {
        Self {
            signer: CrlSigner::Ark,
            issuer: "ARK-Test".into(),
            this_update: NOW - 3 * DAY,
            next_update: Some(NOW + 4 * DAY),
            revoked: revoked.to_vec(),
            outer_salt: 48,
        }
    }

    fn issue(&self) -> Vec<u8> {
        let revoked = self
            .revoked
            .iter()
            .map(|serial| RevokedCert {
                serial_number: SerialNumber::new(serial).unwrap(),
                revocation_date: time(REVOKED_ON),
                crl_entry_extensions: None,
            })
            .collect::<Vec<_>>();
        let tbs = TbsCertList {
            version: Version::V2,
            signature: pss_sha384(48),
            issuer: amd_name(&self.issuer),
            this_update: time(self.this_update),
            next_update: self.next_update.map(time),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: None,
        };
        let key = match self.signer {
            CrlSigner::Ark => &keys().ark,
            CrlSigner::Foreign => &keys().foreign,
        };
        let signer = rsa::pss::SigningKey::<sha2_010::Sha384>::new(key.clone());
        let signature = signer.sign_with_rng(&mut OsRng, &tbs.to_der().unwrap());
        let crl = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: pss_sha384(self.outer_salt),
            signature: BitString::from_bytes(&signature.to_vec()).unwrap(),
        };
        crl.to_der().unwrap()
    }
}

/// A report as the firmware makes it (unsigned): Milan (report version 3) or Turin (version 5, an
/// 8-byte chip id and an FMC TCB component), at VMPL 0, with the policy most guests launch with
/// (ABI 0.0, SMT allowed, bit 17 set, no debug, no migration agent).
fn report(turin: bool) -> AttestationReport {
    let tcb = if turin { TcbVersion::new(Some(2), 1, 0, 5, 0x4c) } else { TcbVersion::new(None, 4, 0, 23, 219) };
    let mut chip_id = [0u8; 64];
    for (i, b) in chip_id.iter_mut().enumerate().take(if turin { 8 } else { 64 }) {
        *b = 0xc0 ^ u8::try_from(i).unwrap();
    }
    AttestationReport {
        version: if turin { 5 } else { 3 },
        guest_svn: 1,
        policy: GuestPolicy::from(0x3_0000),
        sig_algo: 1,
        current_tcb: tcb,
        reported_tcb: tcb,
        committed_tcb: tcb,
        launch_tcb: tcb,
        measurement: MEASUREMENT,
        report_id: [0x11; 32],
        cpuid_fam_id: Some(if turin { 0x1a } else { 0x19 }),
        cpuid_mod_id: Some(if turin { 0x02 } else { 0x01 }),
        cpuid_step: Some(if turin { 0 } else { 1 }),
        chip_id,
        current: sev::firmware::guest::Version::new(1, 55, 21),
        committed: sev::firmware::guest::Version::new(1, 55, 21),
        launch_mit_vector: turin.then_some(0),
        current_mit_vector: turin.then_some(0),
        ..AttestationReport::default()
    }
}

/// The report's raw bytes signed by `key`: ECDSA P-384 with SHA-384 over bytes 0..0x2A0, r and s
/// little-endian in the low 48 bytes of their 72-byte fields.
fn sign(mut report: AttestationReport, key: &p384::ecdsa::SigningKey) -> Vec<u8> {
    report.signature = ReportSignature::default();
    let body = report.to_bytes().unwrap();
    let signature: p384::ecdsa::Signature = key.sign(&body[..0x2A0]);
    let (r, s) = signature.split_bytes();
    let little_endian = |big: &[u8]| {
        let mut field = [0u8; 72];
        field.iter_mut().zip(big.iter().rev()).for_each(|(f, b)| *f = *b);
        field
    };
    report.signature = ReportSignature::new(little_endian(&r[..]), little_endian(&s[..]));
    report.to_bytes().unwrap().to_vec()
}

/// One verification: a report, the VCEK that comes with it, the key that signs the report, the
/// room's policy, the time and the roots.
struct Case {
    report: AttestationReport,
    vcek: Vcek,
    signer: p384::ecdsa::SigningKey,
    policy: Policy,
    now: u64,
    roots: fn() -> Vec<Root>,
    /// AMD's revocation list sent with the VCEK (DER), if any.
    crl: Option<Vec<u8>>,
}

impl Case {
    /// A valid Milan or Turin report with its VCEK, under a policy that accepts its measurement
    /// and whose minimum TCB is exactly the reported one.
    fn new(turin: bool) -> Self {
        let report = report(turin);
        let t = report.reported_tcb;
        Self {
            vcek: Vcek::for_report(&report),
            report,
            signer: vcek_key().clone(),
            policy: Policy {
                measurements: vec![Accepted::new(Platform::SevSnp, MEASUREMENT.to_vec())],
                snp_min_tcb: Some(SnpTcb {
                    bootloader: t.bootloader,
                    tee: t.tee,
                    snp: t.snp,
                    microcode: t.microcode,
                    fmc: t.fmc,
                }),
                ..Policy::default()
            },
            now: NOW,
            roots: test_roots,
            crl: None,
        }
    }

    fn milan() -> Self {
        Self::new(false)
    }

    fn turin() -> Self {
        Self::new(true)
    }

    /// Evidence bound to the enclave key, the room and the nonce, verified as a client does.
    fn evidence(&self) -> (Evidence, Binding) {
        let mut report = self.report;
        report.report_data = report_data(enclave_key(), &room_id(), NONCE);
        let evidence = Evidence {
            platform: Platform::SevSnp,
            report: sign(report, &self.signer),
            public_key: hex::encode(enclave_key()),
            room_id: room_id(),
            nonce: hex::encode(NONCE),
            endorsements: Endorsements::Vcek {
                der: self.vcek.issue(vcek_key().verifying_key()),
                crl: self.crl.clone(),
            },
        };
        let binding = Binding::Evidence {
            room_id: room_id(),
            nonce: Some(NONCE.to_vec()),
            public_key: Some(enclave_key().to_vec()),
        };
        (evidence, binding)
    }

    fn run(&self) -> Verification {
        let (evidence, binding) = self.evidence();
        verify_with_snp_roots(&evidence, &self.policy, &binding, None, self.now, self.roots)
    }

    /// Verifies, and asserts that the verification fails on `check` alone and that its detail
    /// says `says`.
    fn refused_by(&self, check: &str, says: &str) -> Verification {
        let v = self.run();
        assert!(!v.passed(), "accepted:\n{}", v.render());
        assert_eq!(failed(&v), [check], "\n{}", v.render());
        let detail = &v.get(check).unwrap().detail;
        assert!(detail.contains(says), "{check}: {detail:?} does not say {says:?}");
        assert!(v.clone().into_result().unwrap_err().contains(check));
        v
    }
}

fn failed(v: &Verification) -> Vec<&str> {
    v.failures().map(|c| c.name.as_str()).collect()
}

fn detail<'a>(v: &'a Verification, name: &str) -> &'a str {
    v.details.iter().find(|(k, _)| k == name).map(|(_, d)| d.as_str()).unwrap()
}

const ALL_CHECKS: [&str; 14] = [
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
    "report data binding",
    "room",
    "nonce (freshness)",
    "enclave key",
];

#[test]
fn a_generated_milan_report_passes_every_check() {
    let case = Case::milan();
    let v = case.run();
    assert!(v.passed(), "{}", v.render());
    let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ALL_CHECKS);
    assert!(v.get("AMD certificate chain").unwrap().detail.contains("AMD Test ARK → ASK → VCEK"));
    assert_eq!(
        v.get("VCEK validity").unwrap().detail,
        "valid from 2024-07-08T18:40:00Z to 2031-07-07T18:40:00Z; verified at 2025-07-08T18:40:00Z"
    );
    assert_eq!(
        v.get("AMD revocation list").unwrap().detail,
        "not checked: no revocation list was supplied (AMD's Test CRL is at \
         https://kdsintf.amd.com/vcek/v1/Test/crl; pass it with --amd-crl)"
    );
    assert_eq!(v.get("minimum TCB").unwrap().detail, "reported TCB meets bootloader 4, tee 0, snp 23, microcode 219");
    assert_eq!(v.measurement.as_deref(), Some(hex::encode(MEASUREMENT).as_str()));
    assert_eq!(detail(&v, "reported TCB"), "bootloader 4, tee 0, snp 23, microcode 219");
    assert_eq!(detail(&v, "guest policy"), "0x30000");
    assert!(detail(&v, "SMT").starts_with("allowed"));
    assert!(v.render().contains("ACCEPTED"));
    // The report is canonical (it re-encodes to the same bytes) and verifies as the firmware's.
    let (evidence, _) = case.evidence();
    assert_eq!(evidence.report.len(), REPORT_LEN);
    assert_eq!(parse_canonical(&evidence.report).unwrap().to_bytes().unwrap().as_slice(), evidence.report);
}

#[test]
fn a_generated_turin_report_with_its_fmc_passes_every_check() {
    let v = Case::turin().run();
    assert!(v.passed(), "{}", v.render());
    let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ALL_CHECKS);
    assert_eq!(detail(&v, "reported TCB"), "fmc 2, bootloader 1, tee 0, snp 5, microcode 76");
    // The contract's minimum includes the FMC, met exactly.
    assert_eq!(
        v.get("minimum TCB").unwrap().detail,
        "reported TCB meets fmc 2, bootloader 1, tee 0, snp 5, microcode 76"
    );
    assert_eq!(detail(&v, "chip id"), "c0c1c2c3c4c5c6c7…");
}

#[test]
fn a_debug_policy_is_refused_though_validly_signed() {
    let mut case = Case::milan();
    case.report.policy.set_debug_allowed(true);
    case.refused_by("debug disallowed", "the host can read the guest's memory");
}

#[test]
fn a_policy_allowing_a_migration_agent_is_refused() {
    let mut case = Case::milan();
    case.report.policy.set_migrate_ma_allowed(true);
    let v = case.refused_by("migration agent disallowed", "MIGRATE_MA");
    assert!(v.get("migration agent disallowed").unwrap().detail.contains("allows a migration agent"));
    assert_eq!(detail(&v, "guest policy"), "0x70000");
}

#[test]
fn smt_is_reported_and_not_refused() {
    let mut case = Case::milan();
    case.report.policy.set_smt_allowed(false);
    let v = case.run();
    assert!(v.passed(), "{}", v.render());
    assert_eq!(detail(&v, "SMT"), "disallowed by the guest policy");
    assert_eq!(detail(&v, "guest policy"), "0x20000");
    let v = Case::milan().run();
    assert!(v.passed() && detail(&v, "SMT").starts_with("allowed by the guest policy"), "{}", v.render());
}

#[test]
fn a_tcb_below_the_contracts_minimum_is_refused() {
    for (component, says) in [
        ("bootloader", "bootloader 4 < 5"),
        ("tee", "tee 0 < 1"),
        ("snp", "snp 23 < 24"),
        ("microcode", "microcode 219 < 220"),
    ] {
        let mut case = Case::milan();
        let min = case.policy.snp_min_tcb.as_mut().unwrap();
        match component {
            "bootloader" => min.bootloader += 1,
            "tee" => min.tee += 1,
            "snp" => min.snp += 1,
            _ => min.microcode += 1,
        }
        case.refused_by("minimum TCB", says);
    }
    // A firmware rolled back below the minimum: the report and its VCEK agree on the lower TCB.
    let mut case = Case::milan();
    case.report.reported_tcb.snp = 22;
    case.vcek = Vcek::for_report(&case.report);
    case.refused_by("minimum TCB", "below the minimum: snp 22 < 23");
}

#[test]
fn a_measurement_the_contract_does_not_accept_is_refused() {
    let mut case = Case::milan();
    case.report.measurement[0] ^= 1;
    case.refused_by("measurement accepted", "is not among the 1 accepted AMD SEV-SNP measurements");
    let mut case = Case::milan();
    case.policy.measurements.clear();
    case.refused_by("measurement accepted", "the contract accepts no AMD SEV-SNP measurement");
}

#[test]
fn a_report_requested_below_vmpl_0_is_refused() {
    let mut case = Case::milan();
    case.report.vmpl = 1;
    case.refused_by("VMPL 0", "requested at VMPL 1");
}

#[test]
fn a_vcek_for_another_chip_is_refused() {
    let mut case = Case::milan();
    case.vcek.hwid.as_mut().unwrap()[63] ^= 1;
    case.refused_by("AMD certificate chain", "issued for another chip");
    // Turin: the hwID is the chip id's first 8 bytes.
    let mut case = Case::turin();
    case.vcek.hwid.as_mut().unwrap()[0] ^= 1;
    case.refused_by("AMD certificate chain", "issued for another chip");
    // A hwID of neither length.
    let mut case = Case::milan();
    case.vcek.hwid.as_mut().unwrap().truncate(32);
    case.refused_by("AMD certificate chain", "issued for another chip");
    // No hwID at all (a VLEK names its cloud provider instead).
    let mut case = Case::milan();
    case.vcek.hwid = None;
    case.refused_by("AMD certificate chain", "no hwID extension");
}

#[test]
fn a_vcek_for_another_tcb_is_refused() {
    for (component, says) in [
        ("bootloader", "the VCEK is for bootloader 5 but the report's reported TCB has bootloader 4"),
        ("tee", "the VCEK is for tee 1 but the report's reported TCB has tee 0"),
        ("snp", "the VCEK is for snp 24 but the report's reported TCB has snp 23"),
        ("microcode", "the VCEK is for microcode 220 but the report's reported TCB has microcode 219"),
    ] {
        let mut case = Case::milan();
        let tcb = &mut case.vcek.tcb;
        match component {
            "bootloader" => tcb.bootloader += 1,
            "tee" => tcb.tee += 1,
            "snp" => tcb.snp += 1,
            _ => tcb.microcode += 1,
        }
        case.refused_by("AMD certificate chain", says);
    }
    // The current TCB is not what the VCEK certifies: only the reported one is compared.
    let mut case = Case::milan();
    case.report.current_tcb.snp += 1;
    assert!(case.run().passed());
}

#[test]
fn a_vcek_for_another_fmc_is_refused() {
    let mut case = Case::turin();
    case.vcek.tcb.fmc = Some(3);
    case.refused_by("AMD certificate chain", "the VCEK is for fmc 3 but the report's reported TCB has fmc 2");
    let mut case = Case::turin();
    case.report.reported_tcb.fmc = Some(1);
    // (The contract's minimum FMC, 2, would refuse the report too: leave it out.)
    case.policy.snp_min_tcb.as_mut().unwrap().fmc = None;
    case.refused_by("AMD certificate chain", "the VCEK is for fmc 2 but the report's reported TCB has fmc 1");
    // A Turin VCEK (it has an FMC extension) for a Milan report (no FMC component).
    let mut case = Case::milan();
    case.vcek.tcb.fmc = Some(0);
    case.refused_by("AMD certificate chain", "the report's reported TCB has no fmc component");
}

#[test]
fn a_vcek_outside_its_validity_is_refused() {
    let mut case = Case::milan();
    case.vcek.validity = (NOW - 7 * YEAR, NOW - DAY);
    case.refused_by(
        "VCEK validity",
        "the VCEK expired on 2025-07-07T18:40:00Z (verification time 2025-07-08T18:40:00Z)",
    );
    let mut case = Case::milan();
    case.vcek.validity = (NOW + DAY, NOW + 7 * YEAR);
    case.refused_by(
        "VCEK validity",
        "the VCEK is not valid before 2025-07-09T18:40:00Z (verification time 2025-07-08T18:40:00Z)",
    );
    // The same VCEK seven years later.
    let mut case = Case::milan();
    case.now = NOW + 7 * YEAR;
    case.refused_by("VCEK validity", "the VCEK expired on 2031-07-07T18:40:00Z");
    // Both bounds are inclusive.
    for bound in [NOW - YEAR, NOW + 6 * YEAR] {
        let mut case = Case::milan();
        case.now = bound;
        assert!(case.run().passed(), "at {bound}");
    }
}

#[test]
fn a_vcek_not_signed_by_the_trusted_ask_is_refused() {
    // Someone's own complete chain: their ASK (here their root key) issued the VCEK.
    let mut case = Case::milan();
    case.vcek.issuer = Issuer::Foreign;
    case.refused_by("AMD certificate chain", "the VCEK is not signed by the ASK of AMD's Test root (ARK)");
    // The same evidence passes when its own root is the trusted one: only the root set refused it.
    case.roots = || {
        let foreign = pki().foreign_ark.clone();
        vec![Root { product: "Foreign", chain: ca::Chain { ark: foreign.clone(), ask: foreign } }]
    };
    assert!(case.run().passed());
    // Signed by the ARK directly, skipping the ASK.
    let mut case = Case::milan();
    case.vcek.issuer = Issuer::Ark;
    case.refused_by("AMD certificate chain", "not signed by the ASK");
    // The ASK (and so the VCEK) is genuine, but the ASK's certificate is signed by a foreign ARK.
    let mut case = Case::milan();
    case.roots = || {
        vec![Root {
            product: "Test",
            chain: ca::Chain { ark: pki().ark.clone(), ask: pki().ask_by_foreign_ark.clone() },
        }]
    };
    case.refused_by("AMD certificate chain", "not signed by the ASK");
    // A foreign ARK that certified the genuine ASK key is not the trusted ARK either.
    let mut case = Case::milan();
    case.roots =
        || vec![Root { product: "Test", chain: ca::Chain { ark: pki().foreign_ark.clone(), ask: pki().ask.clone() } }];
    case.refused_by("AMD certificate chain", "not signed by the ASK");
}

#[test]
fn a_vcek_whose_outer_signature_algorithm_differs_from_the_signed_one_is_refused() {
    // The RSA-PSS signature still verifies (the salt is recovered), but the certificate names
    // another algorithm outside the signed part than inside.
    let mut case = Case::milan();
    case.vcek.outer_salt = 32;
    case.refused_by("AMD certificate chain", "outer signature algorithm differs from the signed one");
}

#[test]
fn a_report_signed_by_another_key_is_refused() {
    let mut case = Case::milan();
    case.signer = p384::ecdsa::SigningKey::random(&mut OsRng);
    case.refused_by("report signature", "the report is not signed by this VCEK");
}

#[test]
fn a_changed_report_is_refused_by_its_signature() {
    let case = Case::milan();
    let (evidence, binding) = case.evidence();
    // Fields the policy does not look at, but the signature covers.
    for at in [0x04, 0x10, 0x40, 0xC0, 0x150, 0x180, 0x1E8, 0x1F0] {
        let mut changed = evidence.clone();
        changed.report[at] ^= 0x01;
        let v = verify_with_snp_roots(&changed, &case.policy, &binding, None, NOW, test_roots);
        assert!(!v.passed());
        assert!(failed(&v).contains(&"report signature"), "byte {at:#x}: {:?}", failed(&v));
    }
}

#[test]
fn the_public_verifier_trusts_only_amds_roots() {
    // The generated chain is valid under its own root, and refused under AMD's built-in ones.
    let case = Case::milan();
    let (evidence, binding) = case.evidence();
    let v = crate::verify::verify(&evidence, &case.policy, &binding, None, NOW);
    assert_eq!(failed(&v), ["AMD certificate chain"], "{}", v.render());
    assert!(
        v.get("AMD certificate chain")
            .unwrap()
            .detail
            .contains("not signed by the ASK of AMD's Milan, Genoa or Turin root (ARK)"),
        "{}",
        v.render()
    );
    let products: Vec<&str> = amd_roots().iter().map(|r| r.product).collect();
    assert_eq!(products, ["Milan", "Genoa", "Turin"]);
}

// AMD's revocation list.

/// The detail of a CRL that revokes neither key, current at `NOW`.
const NOT_REVOKED: &str = "neither the ASK (serial 0A:5C) nor the VCEK (serial 7C:E4) is among the {n} certificates \
                           AMD's Test ARK revoked (list of 2025-07-05T18:40:00Z, next update 2025-07-12T18:40:00Z; \
                           verified at 2025-07-08T18:40:00Z)";

#[test]
fn a_current_crl_of_the_ark_listing_neither_key_passes() {
    for (revoked, n) in [(vec![], 0), (vec![&[0x0a][..], &[0x5c, 0x0a], &[0x7c, 0xe5]], 3)] {
        for mut case in [Case::milan(), Case::turin()] {
            case.crl = Some(Crl::listing(&revoked).issue());
            let v = case.run();
            assert!(v.passed(), "{}", v.render());
            let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ALL_CHECKS);
            assert_eq!(v.get("AMD revocation list").unwrap().detail, NOT_REVOKED.replace("{n}", &n.to_string()));
        }
    }
    // Both bounds of the list's validity are inclusive.
    for bound in [NOW - 3 * DAY, NOW + 4 * DAY] {
        let mut case = Case::milan();
        case.crl = Some(Crl::listing(&[]).issue());
        case.now = bound;
        assert!(case.run().passed(), "at {bound}");
    }
}

#[test]
fn a_crl_revoking_the_ask_is_refused() {
    let mut case = Case::milan();
    case.crl = Some(Crl::listing(&[&[0x33], ASK_SERIAL]).issue());
    case.refused_by(
        "AMD revocation list",
        "AMD's Test ARK revoked the ASK (serial 0A:5C) on 2025-06-08T18:40:00Z: no VCEK it signed is trusted",
    );
}

#[test]
fn a_crl_revoking_the_vcek_is_refused() {
    for mut case in [Case::milan(), Case::turin()] {
        case.crl = Some(Crl::listing(&[VCEK_SERIAL]).issue());
        case.refused_by(
            "AMD revocation list",
            "AMD's Test ARK revoked the VCEK (serial 7C:E4) on 2025-06-08T18:40:00Z",
        );
    }
}

#[test]
fn a_crl_signed_by_a_foreign_ark_is_refused() {
    // It names the trusted ARK as its issuer, and lists nothing.
    let mut case = Case::milan();
    case.crl = Some(Crl { signer: CrlSigner::Foreign, ..Crl::listing(&[]) }.issue());
    let v = case.refused_by(
        "AMD revocation list",
        "the revocation list is not signed by AMD's Test ARK: the signature does not verify",
    );
    assert!(v.into_result().unwrap_err().contains("AMD revocation list: the revocation list is not signed"));
    // Nor is a list issued under another name (another product's ARK).
    let mut case = Case::milan();
    case.crl = Some(Crl { issuer: "ARK-Genoa".into(), ..Crl::listing(&[]) }.issue());
    case.refused_by(
        "AMD revocation list",
        "the revocation list is issued by CN=ARK-Genoa,O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,\
         OU=Engineering, not by AMD's Test ARK (CN=ARK-Test,O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,\
         OU=Engineering): is it another product's?",
    );
}

#[test]
fn an_expired_or_future_crl_is_refused() {
    let mut case = Case::milan();
    case.crl = Some(Crl { this_update: NOW - 8 * DAY, next_update: Some(NOW - DAY), ..Crl::listing(&[]) }.issue());
    case.refused_by(
        "AMD revocation list",
        "the revocation list expired on 2025-07-07T18:40:00Z (verification time 2025-07-08T18:40:00Z): fetch a \
         current one from https://kdsintf.amd.com/vcek/v1/Test/crl",
    );
    // The current list, checked a week later.
    let mut case = Case::milan();
    case.crl = Some(Crl::listing(&[]).issue());
    case.now = NOW + 7 * DAY;
    case.refused_by("AMD revocation list", "the revocation list expired on 2025-07-12T18:40:00Z");
    let mut case = Case::milan();
    case.crl = Some(Crl { this_update: NOW + DAY, next_update: Some(NOW + 8 * DAY), ..Crl::listing(&[]) }.issue());
    case.refused_by(
        "AMD revocation list",
        "the revocation list is not valid before 2025-07-09T18:40:00Z (verification time 2025-07-08T18:40:00Z)",
    );
    // A list without nextUpdate never says it is current.
    let mut case = Case::milan();
    case.crl = Some(Crl { next_update: None, ..Crl::listing(&[]) }.issue());
    case.refused_by("AMD revocation list", "the revocation list has no nextUpdate");
}

#[test]
fn a_changed_crl_is_refused() {
    let crl = Crl::listing(&[&[0x33]]).issue();
    // The last byte of the signature.
    let mut case = Case::milan();
    let mut changed = crl.clone();
    *changed.last_mut().unwrap() ^= 0x01;
    case.crl = Some(changed);
    case.refused_by(
        "AMD revocation list",
        "the revocation list is not signed by AMD's Test ARK: the signature does not verify",
    );
    // A signed byte: the last digit of the seconds of thisUpdate (a valid date one second later).
    let this_update = time(NOW - 3 * DAY).to_der().unwrap();
    let at = crl.windows(this_update.len()).position(|w| w == this_update).unwrap() + this_update.len() - 2;
    let mut changed = crl.clone();
    changed[at] ^= 0x01;
    let mut case = Case::milan();
    case.crl = Some(changed);
    case.refused_by(
        "AMD revocation list",
        "the revocation list is not signed by AMD's Test ARK: the signature does not verify",
    );
    // The revoked serial 0x33 made 0x32: still a well-formed list, but not the one the ARK signed.
    let entry = [0x02, 0x01, 0x33];
    let at = crl.windows(3).position(|w| w == entry).unwrap() + 2;
    let mut changed = crl.clone();
    changed[at] ^= 0x01;
    let mut case = Case::milan();
    case.crl = Some(changed);
    case.refused_by("AMD revocation list", "the signature does not verify");
    // The algorithm named outside the signed part is not the signed one.
    let mut case = Case::milan();
    case.crl = Some(Crl { outer_salt: 32, ..Crl::listing(&[]) }.issue());
    case.refused_by(
        "AMD revocation list",
        "the revocation list is not signed by AMD's Test ARK: its outer signature algorithm differs from the signed \
         one",
    );
    // Not a CRL at all.
    let mut case = Case::milan();
    case.crl = Some(crl[..crl.len() - 1].to_vec());
    case.refused_by("AMD revocation list", "the revocation list is not a DER CRL");
}

// The contract's minimum FMC (Turin).

#[test]
fn a_turin_report_below_the_contracts_minimum_fmc_is_refused() {
    let mut case = Case::turin();
    case.policy.snp_min_tcb.as_mut().unwrap().fmc = Some(3);
    case.refused_by("minimum TCB", "below the minimum: fmc 2 < 3");
    // At the minimum it passes (Case::turin's minimum is exactly the reported TCB, FMC included).
    let v = Case::turin().run();
    assert!(v.passed(), "{}", v.render());
    // Below the minimum in the FMC and another component: both are named.
    let mut case = Case::turin();
    let min = case.policy.snp_min_tcb.as_mut().unwrap();
    min.fmc = Some(4);
    min.snp = 6;
    case.refused_by("minimum TCB", "below the minimum: fmc 2 < 4, snp 5 < 6");
}

#[test]
fn a_milan_report_is_not_refused_for_a_minimum_fmc_it_cannot_have() {
    let mut case = Case::milan();
    case.policy.snp_min_tcb.as_mut().unwrap().fmc = Some(9);
    let v = case.run();
    assert!(v.passed(), "{}", v.render());
    assert_eq!(
        v.get("minimum TCB").unwrap().detail,
        "reported TCB meets bootloader 4, tee 0, snp 23, microcode 219; the contract's minimum fmc 9 does not apply: \
         this report has no FMC component (only Turin reports have one)"
    );
    // The other components are still compared, and the detail still says the FMC was not.
    case.policy.snp_min_tcb.as_mut().unwrap().snp = 24;
    let v =
        case.refused_by("minimum TCB", "below the minimum: snp 23 < 24; the contract's minimum fmc 9 does not apply");
    assert!(!v.get("minimum TCB").unwrap().detail.contains("fmc 9 <"));
}

#[test]
fn the_contracts_minimum_fmc_reaches_the_policy() {
    use sealroom_proto::room::v1 as pb;
    let contract = |fmc: u32| pb::RoomContract {
        attestation: Some(pb::AttestationPolicy {
            min_snp_tcb: Some(pb::SnpTcb { bootloader: 1, tee: 2, snp: 3, microcode: 4, fmc }),
            ..pb::AttestationPolicy::default()
        }),
        ..pb::RoomContract::default()
    };
    let min = |fmc| Policy::from_contract(&contract(fmc)).snp_min_tcb.unwrap();
    assert_eq!(min(7), SnpTcb { bootloader: 1, tee: 2, snp: 3, microcode: 4, fmc: Some(7) });
    assert_eq!(min(7).to_string(), "fmc 7, bootloader 1, tee 2, snp 3, microcode 4");
    // 0 is no minimum.
    assert_eq!(min(0).fmc, None);
    assert_eq!(min(0).to_string(), "bootloader 1, tee 2, snp 3, microcode 4");
}
