//! Participant tokens: the room's authentication root.
//!
//! Every participant is its own root. It generates an ECDSA P-256 **issuer key** ([`IssuerKey`]),
//! keeps the private half (a PKCS#8 file, or a KMS/HSM that signs ES256), and the room contract names
//! the public half (`credential.issuer_keys`). To call the server it presents a short-lived JSON Web
//! Token signed with that key:
//!
//! ```text
//! header  {"alg": "ES256", "typ": "JWT", "kid": <hex SHA-256 of the issuer key's DER SPKI>}
//! claims  {"sub": <participant id>, "aud": [<room id>, …], "iat": …, "exp": …, "jti": <token id>}
//! ```
//!
//! The server picks the key by `kid` among the room's issuer keys, checks the ES256 signature (with
//! `jsonwebtoken` over ring), that the key belongs to `sub`, that the room is an audience, the times
//! (`iat` not in the future, `exp` not past, `exp - iat` within the room's maximum lifetime) and that
//! the token id is not revoked by the contract. The room file holds no secret, and no one but the
//! participant — not the room's author, not the operator — can make a token that acts as it.
//! Revocation is a contract change: drop the key, or list the token id.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use sealroom_proto::P256_SPKI_PREFIX;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AttestError;

/// Clock skew tolerated between a participant and the enclave, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// The PEM label of an issuer key's private half.
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// The claims of a participant token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The participant id.
    pub sub: String,
    /// The room ids the token is for.
    pub aud: Vec<String>,
    /// Issued at (seconds since the Unix epoch).
    pub iat: u64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: u64,
    /// The token id, which a contract can revoke.
    pub jti: String,
}

/// A participant's issuer key: an ECDSA P-256 key pair that signs its tokens.
pub struct IssuerKey {
    pkcs8: Vec<u8>,
    spki: Vec<u8>,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

impl IssuerKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, AttestError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| AttestError::Device(format!("cannot generate an issuer key: {e}")))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 DER encoding.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, AttestError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new()).map_err(|e| {
                AttestError::Malformed(format!(
                    "not an ECDSA P-256 private key in PKCS#8 ({e}); `sealroom keygen` makes one, or convert with \
                     `openssl pkcs8 -topk8 -nocrypt`"
                ))
            })?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ok(Self { pkcs8: pkcs8.to_vec(), spki })
    }

    /// A key from a PEM `PRIVATE KEY` (PKCS#8) file's text.
    pub fn from_pem(text: &[u8]) -> Result<Self, AttestError> {
        let block = pem::parse(text).map_err(|e| AttestError::Malformed(format!("not a PEM file: {e}")))?;
        if block.tag() != PRIVATE_KEY_LABEL {
            return Err(AttestError::Malformed(format!(
                "the PEM block is `{}`, not an unencrypted PKCS#8 `{PRIVATE_KEY_LABEL}`; convert it with \
                 `openssl pkcs8 -topk8 -nocrypt`",
                block.tag()
            )));
        }
        Self::from_pkcs8(block.contents())
    }

    /// The private key as PEM (PKCS#8): keep it secret, file mode 0600.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PRIVATE_KEY_LABEL, self.pkcs8.clone()))
    }

    /// The public key's DER SubjectPublicKeyInfo.
    pub fn public_key(&self) -> &[u8] {
        &self.spki
    }

    /// The public key as the contract holds it: standard base64 of the DER SPKI.
    pub fn public_key_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.spki)
    }

    /// The public key as PEM, for the room file.
    pub fn public_key_pem(&self) -> String {
        sealroom_proto::room_file::public_key_pem(&self.public_key_base64())
    }

    /// The `kid` of this key's tokens.
    pub fn key_id(&self) -> String {
        key_id(&self.spki)
    }

    /// A token for `participant` in `rooms`, valid from `now` for `lifetime_seconds`, with a random id.
    pub fn mint(
        &self,
        participant: &str,
        rooms: &[String],
        lifetime_seconds: u64,
        now: u64,
    ) -> Result<String, AttestError> {
        let mut jti = [0u8; 16];
        SystemRandom::new().fill(&mut jti).map_err(|e| AttestError::Device(format!("no randomness: {e}")))?;
        self.mint_with_id(participant, rooms, lifetime_seconds, now, &hex::encode(jti))
    }

    /// [`Self::mint`] with a chosen token id (`jti`), e.g. `dashboard-2026`: a contract can revoke a
    /// named token by listing its id.
    pub fn mint_with_id(
        &self,
        participant: &str,
        rooms: &[String],
        lifetime_seconds: u64,
        now: u64,
        token_id: &str,
    ) -> Result<String, AttestError> {
        let claims = Claims {
            sub: participant.to_owned(),
            aud: rooms.to_vec(),
            iat: now,
            exp: now.saturating_add(lifetime_seconds),
            jti: token_id.to_owned(),
        };
        let header = Header { kid: Some(self.key_id()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&self.pkcs8))
            .map_err(|e| AttestError::Device(format!("cannot sign the token: {e}")))
    }
}

/// The JWS `typ` of a signed decision: it is not a token and a token is not a decision.
pub const DECISION_TYPE: &str = "sealroom-decision+jwt";

/// A data owner's signed decision on a proposed contract version (see `docs/governance.md`): the
/// statement "participant `sub` approves (or rejects) proposal `proposal` of room `room`, which makes
/// the contract whose canonical SHA-256 is `contract_sha256` version `version`". Signed with one of
/// the participant's issuer keys as a compact JWS (ES256, `typ` [`DECISION_TYPE`]), it is kept in the
/// proposal and the audit log, where anybody holding the contract can check it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The participant id.
    pub sub: String,
    /// The room id.
    pub room: String,
    /// The proposal id.
    pub proposal: String,
    /// The version the proposal would make.
    pub version: u64,
    /// Lowercase hex SHA-256 of the proposed contract's canonical bytes.
    pub contract_sha256: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Signed at (seconds since the Unix epoch).
    pub iat: u64,
    /// Why (optional; shown to the other participants).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl IssuerKey {
    /// Signs a decision (compact JWS, ES256, `kid` = this key's id, `typ` [`DECISION_TYPE`]).
    pub fn sign_decision(&self, decision: &Decision) -> Result<String, AttestError> {
        let header =
            Header { kid: Some(self.key_id()), typ: Some(DECISION_TYPE.to_owned()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, decision, &EncodingKey::from_ec_der(&self.pkcs8))
            .map_err(|e| AttestError::Device(format!("cannot sign the decision: {e}")))
    }
}

/// The `kid` of a signed decision's header, checking that it is an ES256 decision.
pub fn decision_key_id(signed: &str) -> Result<String, String> {
    let header = jsonwebtoken::decode_header(signed).map_err(|e| {
        format!("the signature is not a compact JWS ({e}); `sealroom proposal approve` signs decisions")
    })?;
    if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(DECISION_TYPE) {
        return Err(format!(
            "the signature is not a sealroom decision (alg ES256, typ {DECISION_TYPE}); a participant token \
             is not an approval"
        ));
    }
    header.kid.ok_or_else(|| "the decision's header has no `kid` (the issuer key's id)".to_owned())
}

/// Verifies a signed decision with the issuer key `spki` (DER SubjectPublicKeyInfo) and returns it.
/// What it must say (room, proposal, contract digest) is for the caller to compare.
pub fn verify_decision(signed: &str, spki: &[u8]) -> Result<Decision, String> {
    decision_key_id(signed)?;
    let point = sealroom_proto::p256_spki_point(spki).ok_or("the issuer key is not an ECDSA P-256 public key")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<Decision>(signed, &DecodingKey::from_ec_der(point), &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "the decision's signature does not verify with the issuer key its `kid` names".to_owned()
            }
            _ => format!(
                "the decision is malformed: {e} (claims sub, room, proposal, version, contract_sha256, decision \
                 and iat are required)"
            ),
        })?;
    let decision = data.claims;
    if decision.decision != "approve" && decision.decision != "reject" {
        return Err(format!("the decision is '{}': it must be `approve` or `reject`", decision.decision));
    }
    Ok(decision)
}

/// The key id of an issuer key: lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn key_id(spki: &[u8]) -> String {
    hex::encode(Sha256::digest(spki))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `kid` of a token's header, checking that the token is ES256.
pub fn token_key_id(token: &str) -> Result<String, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        format!("the token is not a JWT ({e}); mint one with `sealroom token --key <issuer key> --participant <id>`")
    })?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("the token is signed with {:?}; only ES256 (ECDSA P-256) tokens are accepted", header.alg));
    }
    if header.typ.as_deref() == Some(DECISION_TYPE) {
        return Err(
            "this is a signed decision on a proposal, not a token; mint a token with `sealroom token`".to_owned()
        );
    }
    header.kid.ok_or_else(|| "the token's header has no `kid` (the issuer key's id)".to_owned())
}

/// What a room requires of a token beyond its signature.
#[derive(Debug, Clone, Copy)]
pub struct TokenRules<'a> {
    /// The room the token must name as an audience.
    pub room_id: &'a str,
    /// The longest lifetime (`exp - iat`) accepted.
    pub max_lifetime_seconds: u64,
    /// Token ids the contract revoked.
    pub revoked: &'a [String],
    /// The verification time (seconds since the Unix epoch).
    pub now: u64,
}

/// Verifies a token signed by the issuer key `spki` (a DER SubjectPublicKeyInfo) against `rules`;
/// returns its claims. Every refusal says which check failed.
pub fn verify_token(token: &str, spki: &[u8], rules: &TokenRules<'_>) -> Result<Claims, String> {
    let point = sealroom_proto::p256_spki_point(spki).ok_or("the issuer key is not an ECDSA P-256 public key")?;
    let mut validation = Validation::new(Algorithm::ES256);
    // Times are checked below against `rules.now`, so that they can be tested at fixed times.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation.set_audience(&[rules.room_id]);
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_ec_der(point), &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the token's signature does not verify with the issuer key its `kid` names".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => format!(
                    "the token is not for room {} (its `aud` does not name it); mint one for this room",
                    rules.room_id
                ),
                _ => format!("the token is malformed: {e} (claims sub, aud, iat, exp and jti are required)"),
            }
        })?;
    let claims = data.claims;
    if claims.iat > rules.now.saturating_add(LEEWAY_SECONDS) {
        return Err(format!(
            "the token was issued in the future (iat {}, the enclave's clock says {}); check the issuer's clock",
            claims.iat, rules.now
        ));
    }
    if claims.exp.saturating_add(LEEWAY_SECONDS) <= rules.now {
        return Err(format!(
            "the token expired {} s ago (exp {}); mint a new one with `sealroom token`",
            rules.now.saturating_sub(claims.exp),
            claims.exp
        ));
    }
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime > rules.max_lifetime_seconds {
        return Err(format!(
            "the token lives {lifetime} s (exp - iat) but the room allows at most {} s \
             (authentication.max_token_lifetime_seconds); mint a shorter one",
            rules.max_lifetime_seconds
        ));
    }
    if rules.revoked.contains(&claims.jti) {
        return Err(format!("token {} was revoked by the room's contract (revoked_token_ids)", claims.jti));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(key: &IssuerKey, verdict: &str) -> (Decision, String) {
        let d = Decision {
            sub: "acme".into(),
            room: ROOM.into(),
            proposal: "p-1".into(),
            version: 2,
            contract_sha256: "ab".repeat(32),
            decision: verdict.into(),
            iat: NOW,
            reason: String::new(),
        };
        let signed = key.sign_decision(&d).unwrap();
        (d, signed)
    }

    #[test]
    fn a_signed_decision_verifies_with_its_key_only_and_is_not_a_token() {
        let key = IssuerKey::generate().unwrap();
        let (d, signed) = decision(&key, "approve");
        assert_eq!(decision_key_id(&signed).unwrap(), key.key_id());
        assert_eq!(verify_decision(&signed, key.public_key()).unwrap(), d);
        let other = IssuerKey::generate().unwrap();
        assert!(verify_decision(&signed, other.public_key()).unwrap_err().contains("signature does not verify"));
        // A decision is no token, and a token no decision.
        assert!(token_key_id(&signed).unwrap_err().contains("not a token"));
        let token = key.mint("acme", &[ROOM.to_owned()], 600, NOW).unwrap();
        assert!(decision_key_id(&token).unwrap_err().contains("not a sealroom decision"));
        assert!(verify_decision(&token, key.public_key()).is_err());
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
        let (_, forged) = decision(&key, "reject");
        parts[1] = forged.split('.').nth(1).unwrap().to_owned();
        assert!(verify_decision(&parts.join("."), key.public_key()).unwrap_err().contains("signature"));
        // Only approve and reject are decisions.
        let (_, maybe) = decision(&key, "maybe");
        assert!(verify_decision(&maybe, key.public_key()).unwrap_err().contains("approve"));
    }

    const ROOM: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const NOW: u64 = 1_800_000_000;

    fn rules(revoked: &[String]) -> TokenRules<'_> {
        TokenRules { room_id: ROOM, max_lifetime_seconds: 3600, revoked, now: NOW }
    }

    #[test]
    fn a_minted_token_verifies_with_its_key_and_only_its_key() {
        let key = IssuerKey::generate().unwrap();
        let token = key.mint("acme", &[ROOM.to_owned()], 600, NOW).unwrap();
        assert_eq!(token_key_id(&token).unwrap(), key.key_id());
        let claims = verify_token(&token, key.public_key(), &rules(&[])).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.aud.as_slice(), claims.exp - claims.iat),
            ("acme", &[ROOM.into()][..], 600)
        );
        assert_eq!(claims.jti.len(), 32);

        let other = IssuerKey::generate().unwrap();
        let err = verify_token(&token, other.public_key(), &rules(&[])).unwrap_err();
        assert!(err.contains("signature does not verify"), "{err}");
    }

    #[test]
    fn time_audience_lifetime_and_revocation_are_enforced() {
        let key = IssuerKey::generate().unwrap();
        let room = [ROOM.to_owned()];
        let expired = key.mint("acme", &room, 600, NOW - 700).unwrap();
        assert!(verify_token(&expired, key.public_key(), &rules(&[])).unwrap_err().contains("expired 100 s ago"));
        // Within the leeway it still passes.
        let just = key.mint("acme", &room, 600, NOW - 630).unwrap();
        verify_token(&just, key.public_key(), &rules(&[])).unwrap();
        let future = key.mint("acme", &room, 600, NOW + 120).unwrap();
        assert!(verify_token(&future, key.public_key(), &rules(&[])).unwrap_err().contains("in the future"));
        let long = key.mint("acme", &room, 3601, NOW).unwrap();
        assert!(verify_token(&long, key.public_key(), &rules(&[])).unwrap_err().contains("at most 3600 s"));
        let elsewhere = key.mint("acme", &["ff".repeat(32)], 600, NOW).unwrap();
        assert!(verify_token(&elsewhere, key.public_key(), &rules(&[])).unwrap_err().contains("not for room"));
        let token = key.mint("acme", &room, 600, NOW).unwrap();
        let jti = verify_token(&token, key.public_key(), &rules(&[])).unwrap().jti;
        let revoked = [jti];
        assert!(verify_token(&token, key.public_key(), &rules(&revoked)).unwrap_err().contains("revoked"));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let key = IssuerKey::generate().unwrap();
        let token = key.mint("acme", &[ROOM.to_owned()], 600, NOW).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // Another participant's name in the claims, with acme's signature.
        let forged_claims = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            claims["sub"] = "news".into();
            b64.encode(serde_json::to_vec(&claims).unwrap())
        };
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(verify_token(&forged, key.public_key(), &rules(&[])).unwrap_err().contains("signature"));
        // An HMAC token (alg confusion) is refused before any key is looked up.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "acme"}),
            &EncodingKey::from_secret(key.public_key()),
        )
        .unwrap();
        assert!(token_key_id(&hs).unwrap_err().contains("only ES256"));
        assert!(token_key_id("not a token").unwrap_err().contains("not a JWT"));
    }

    #[test]
    fn the_private_key_round_trips_through_pem() {
        let key = IssuerKey::generate().unwrap();
        let back = IssuerKey::from_pem(key.to_pem().as_bytes()).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(sealroom_proto::validate::decode_p256_spki(&key.public_key_base64()).unwrap(), key.public_key());
        let public = pem::parse(key.public_key_pem()).unwrap();
        assert_eq!(public.contents(), key.public_key());
        let err = IssuerKey::from_pem(key.public_key_pem().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("not an unencrypted PKCS#8"), "{err}");
    }
}
