//! Evidence: a TEE's signed report (or quote) whose report data binds the enclave's public key,
//! the room and the verifier's nonce, with what a verifier needs besides the vendor roots.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AttestError;

/// The TEE that produced a piece of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// AMD SEV-SNP: a 1184-byte attestation report signed by the chip's VCEK.
    SevSnp,
    /// Intel TDX: a DCAP quote of a trust domain.
    Tdx,
    /// Intel SGX: a DCAP quote of an enclave.
    Sgx,
    /// No TEE: a statement signed by a local key. INSECURE.
    Simulated,
}

impl Platform {
    pub fn name(self) -> &'static str {
        match self {
            Self::SevSnp => "sev-snp",
            Self::Tdx => "tdx",
            Self::Sgx => "sgx",
            Self::Simulated => "simulated",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::SevSnp => "AMD SEV-SNP",
            Self::Tdx => "Intel TDX",
            Self::Sgx => "Intel SGX",
            Self::Simulated => "simulated TEE (INSECURE: no hardware protection)",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::SevSnp, Self::Tdx, Self::Sgx, Self::Simulated].into_iter().find(|p| p.name() == name)
    }

    pub fn is_insecure(self) -> bool {
        self == Self::Simulated
    }
}

/// What a verifier needs besides the report and the vendor roots built into the verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endorsements {
    /// Nothing came with the report: the verifier supplies it (a VCEK from AMD's KDS, collateral
    /// from a PCCS).
    #[default]
    None,
    /// The chip's VCEK certificate (DER), e.g. from the extended report's certificate table, and
    /// optionally AMD's revocation list (CRL, DER) for the product, from AMD's KDS
    /// (`https://kdsintf.amd.com/vcek/v1/{Milan,Genoa,Turin}/crl`).
    Vcek {
        #[serde(with = "b64")]
        der: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_option")]
        crl: Option<Vec<u8>>,
    },
    /// DCAP collateral (the JSON form of `dcap_qvl::QuoteCollateralV3`).
    Collateral { collateral: serde_json::Value },
    /// The simulated platform's public key (uncompressed P-256 point). Proves nothing.
    SimulatedKey { public_key: String },
}

/// Evidence that a room's engine holds `public_key` inside a TEE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub platform: Platform,
    /// The raw report (SEV-SNP), quote (SGX, TDX) or signed statement (simulated).
    #[serde(with = "b64")]
    pub report: Vec<u8>,
    /// The enclave's public key (SubjectPublicKeyInfo DER, hex): its TLS key and audit signer.
    pub public_key: String,
    pub room_id: String,
    /// The verifier's nonce (hex), or the room's hosting nonce for evidence kept in the audit log.
    pub nonce: String,
    #[serde(default)]
    pub endorsements: Endorsements,
}

impl Evidence {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn from_json(text: &[u8]) -> Result<Self, AttestError> {
        serde_json::from_slice(text).map_err(|e| {
            AttestError::Malformed(format!(
                "the evidence is not sealroom evidence JSON (platform, report, public_key, room_id, nonce, \
                 endorsements): {e}"
            ))
        })
    }

    pub fn public_key_bytes(&self) -> Result<Vec<u8>, AttestError> {
        hex::decode(&self.public_key)
            .map_err(|e| AttestError::Malformed(format!("the evidence's public_key is not hex: {e}")))
    }

    pub fn nonce_bytes(&self) -> Result<Vec<u8>, AttestError> {
        hex::decode(&self.nonce).map_err(|e| AttestError::Malformed(format!("the evidence's nonce is not hex: {e}")))
    }
}

/// The 64 bytes of report data that bind a key, a room and a nonce: SHA-256(public key ‖ room id
/// ‖ nonce), then 32 zero bytes. The concatenation is unambiguous: the key is DER (it encodes its
/// own length) and a room id is always 64 hex characters.
pub fn report_data(public_key: &[u8], room_id: &str, nonce: &[u8]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(public_key);
    h.update(room_id.as_bytes());
    h.update(nonce);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// The parts of the binding must split one way only: the key is exactly one DER value (a
/// SubjectPublicKeyInfo SEQUENCE) and the room id exactly 64 lowercase hex characters.
pub(crate) fn check_binding_parts(public_key: &[u8], room_id: &str) -> Result<(), String> {
    if room_id.len() != 64 || !room_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("the evidence's room id '{room_id}' is not 64 lowercase hex characters"));
    }
    let der_len = match public_key {
        [0x30, n, ..] if *n < 0x80 => Some(2 + usize::from(*n)),
        [0x30, 0x81, n, ..] => Some(3 + usize::from(*n)),
        [0x30, 0x82, a, b, ..] => Some(4 + (usize::from(*a) << 8 | usize::from(*b))),
        _ => None,
    };
    if der_len != Some(public_key.len()) {
        return Err("the evidence's public key is not exactly one DER SubjectPublicKeyInfo".into());
    }
    Ok(())
}

mod b64 {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode(&String::deserialize(d)?)
    }

    pub(super) fn decode<E: serde::de::Error>(text: &str) -> Result<Vec<u8>, E> {
        STANDARD.decode(text.trim()).map_err(|e| E::custom(format!("not base64: {e}")))
    }
}

/// [`b64`] for an optional value (absent when `None`).
mod b64_option {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::b64::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|text| super::b64::decode(&text)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_changes_with_every_part_and_keeps_the_tail_zero() {
        let base = report_data(b"key", &"a".repeat(64), b"nonce");
        assert_eq!(&base[32..], &[0u8; 32]);
        assert_ne!(base, report_data(b"kez", &"a".repeat(64), b"nonce"));
        assert_ne!(base, report_data(b"key", &"b".repeat(64), b"nonce"));
        assert_ne!(base, report_data(b"key", &"a".repeat(64), b"nonse"));
    }

    #[test]
    fn evidence_round_trips_and_says_what_is_wrong() {
        let e = Evidence {
            platform: Platform::SevSnp,
            report: vec![1, 2, 3],
            public_key: "00ff".into(),
            room_id: "r".into(),
            nonce: "aa".into(),
            endorsements: Endorsements::Vcek { der: vec![9, 9], crl: None },
        };
        let text = serde_json::to_vec(&e).unwrap();
        assert_eq!(Evidence::from_json(&text).unwrap(), e);
        assert!(String::from_utf8_lossy(&text).contains("\"platform\":\"sev-snp\""));
        // No CRL: no `crl` field, and evidence written before there was one still reads.
        assert!(String::from_utf8_lossy(&text).contains(r#""endorsements":{"kind":"vcek","der":"CQk="}"#));
        // A CRL is base64 like the VCEK.
        let with_crl = Evidence { endorsements: Endorsements::Vcek { der: vec![9, 9], crl: Some(vec![7]) }, ..e };
        let text = serde_json::to_vec(&with_crl).unwrap();
        assert!(String::from_utf8_lossy(&text).contains(r#""endorsements":{"kind":"vcek","der":"CQk=","crl":"Bw=="}"#));
        assert_eq!(Evidence::from_json(&text).unwrap(), with_crl);
        let err = serde_json::from_str::<Endorsements>(r#"{"kind":"vcek","der":"CQk=","crl":"!!"}"#).unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        let err = Evidence::from_json(b"{\"platform\":\"sev-snp\"}").unwrap_err().to_string();
        assert!(err.contains("missing field"), "{err}");
        let err =
            Evidence::from_json(br#"{"platform":"sev-snp","report":"!!","public_key":"","room_id":"","nonce":""}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("not base64"), "{err}");
    }
}
