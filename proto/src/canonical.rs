//! Canonical encoding of a room contract and the room id.
//!
//! Two contracts that mean the same thing must have the same id. Canonicalization therefore sorts and
//! de-duplicates every collection whose order carries no meaning (participants, tables, computations,
//! roles, permission lists, thresholds, measurements) and lower-cases hex digests. Column order is
//! meaningful (it is the table's schema) and is kept. The canonical bytes are the protobuf encoding of
//! the canonicalized message: prost writes fields in field-number order and omits default values, and
//! the contract has no map fields, so the encoding is deterministic. The room id is the lowercase hex
//! SHA-256 of those bytes.

use std::fmt;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::room::v1::{RoomContract, computation};

/// The id of a room: lowercase hex SHA-256 of the canonical encoding of its first contract version
/// (an interactive room keeps it through later versions; see `docs/governance.md`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// Parses a room id from its 64-character lowercase hex form.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "'{}' is not a room id: a room id is 64 lowercase hex characters (the SHA-256 of the \
                 canonical contract); `sealroom room id <room file>` prints it",
                truncate_for_message(text, 80)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shortens user input quoted back in an error message.
pub(crate) fn truncate_for_message(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let head: String = text.chars().take(max_chars).collect();
        format!("{head}…")
    }
}

/// Lowercase hex SHA-256 of canonical contract bytes (see [`RoomContract::canonical_sha256`]).
pub fn canonical_sha256(canonical_bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical_bytes))
}

fn sort_dedup<T: Ord>(items: &mut Vec<T>) {
    items.sort();
    items.dedup();
}

fn canonicalize_overlap(overlap: &mut crate::room::v1::OverlapComputation) {
    // Precedence: the order is meaningful; only repeats go.
    let mut seen = std::collections::HashSet::new();
    overlap.match_on.retain(|k| seen.insert(*k));
    sort_dedup(&mut overlap.identity_graphs);
    if overlap.phone_region.eq_ignore_ascii_case("us") {
        overlap.phone_region.clear();
    }
    overlap.phone_region.make_ascii_uppercase();
    // A default written out is the default.
    if let Some(f) = &mut overlap.fuzzy
        && f.threshold == crate::DEFAULT_FUZZY_THRESHOLD
    {
        f.threshold = 0.0;
    }
    if let Some(c) = &mut overlap.clk
        && c.threshold == crate::DEFAULT_CLK_THRESHOLD
    {
        c.threshold = 0.0;
    }
}

impl RoomContract {
    /// Puts the contract in canonical form (idempotent).
    pub fn canonicalize(&mut self) {
        for participant in &mut self.participants {
            sort_dedup(&mut participant.roles);
            if let Some(credential) = &mut participant.credential {
                sort_dedup(&mut credential.issuer_keys);
                sort_dedup(&mut credential.revoked_token_ids);
            }
        }
        self.participants.sort_by(|a, b| a.id.cmp(&b.id));
        self.tables.sort_by(|a, b| a.name.cmp(&b.name));
        for computation in &mut self.computations {
            sort_dedup(&mut computation.run_by);
            sort_dedup(&mut computation.results_to);
            sort_dedup(&mut computation.deliver_to);
            match &mut computation.kind {
                Some(computation::Kind::Overlap(overlap)) => canonicalize_overlap(overlap),
                Some(computation::Kind::Affinity(affinity)) => {
                    if let Some(matching) = &mut affinity.matching {
                        canonicalize_overlap(matching);
                    }
                    if affinity.confidence == crate::DEFAULT_CONFIDENCE {
                        affinity.confidence = 0.0;
                    }
                }
                Some(computation::Kind::Measurement(measurement)) => {
                    if let Some(matching) = &mut measurement.matching {
                        canonicalize_overlap(matching);
                    }
                    if measurement.confidence == crate::DEFAULT_CONFIDENCE {
                        measurement.confidence = 0.0;
                    }
                }
                Some(computation::Kind::Lookalike(lookalike)) => {
                    if let Some(matching) = &mut lookalike.matching {
                        canonicalize_overlap(matching);
                    }
                    sort_dedup(&mut lookalike.features);
                    sort_dedup(&mut lookalike.model_to);
                    if lookalike.model == crate::DEFAULT_LOOKALIKE_MODEL {
                        lookalike.model.clear();
                    }
                }
                Some(computation::Kind::Sql(sql)) => {
                    sort_dedup(&mut sql.tables);
                    if let Some(matching) = &mut sql.matching {
                        canonicalize_overlap(matching);
                    }
                }
                None => {}
            }
        }
        self.computations.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(privacy) = &mut self.privacy {
            privacy.k_thresholds.sort_by(|a, b| (&a.set_by, a.k).cmp(&(&b.set_by, b.k)));
            privacy.k_thresholds.dedup();
        }
        if let Some(attestation) = &mut self.attestation {
            for m in &mut attestation.accepted_measurements {
                m.measurement = m.measurement.to_ascii_lowercase();
                for r in &mut m.rtmrs {
                    *r = r.to_ascii_lowercase();
                }
                // Trailing free registers say nothing.
                while m.rtmrs.last().is_some_and(String::is_empty) {
                    m.rtmrs.pop();
                }
            }
            attestation.accepted_measurements.sort_by(|a, b| {
                (a.platform, &a.measurement, &a.rtmrs, a.isv_prod_id, a.min_isv_svn, &a.description).cmp(&(
                    b.platform,
                    &b.measurement,
                    &b.rtmrs,
                    b.isv_prod_id,
                    b.min_isv_svn,
                    &b.description,
                ))
            });
            attestation.accepted_measurements.dedup();
            sort_dedup(&mut attestation.accepted_tcb_statuses);
        }
        if self.authentication.as_ref().is_some_and(|a| {
            a.max_token_lifetime_seconds == 0
                || a.max_token_lifetime_seconds == crate::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
        }) {
            self.authentication = None;
        }
        if self.governance.as_ref().is_some_and(|g| !g.interactive && !g.development_mode) {
            self.governance = None;
        }
    }

    /// The canonical encoding: the protobuf bytes of the canonicalized contract.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut canonical = self.clone();
        canonical.canonicalize();
        canonical.encode_to_vec()
    }

    /// Lowercase hex SHA-256 of [`Self::canonical_bytes`]: the digest that names a contract version
    /// (and, for a room's first version, the room id).
    pub fn canonical_sha256(&self) -> String {
        canonical_sha256(&self.canonical_bytes())
    }

    /// The room id: [`Self::canonical_sha256`] of the room's first contract version.
    pub fn room_id(&self) -> RoomId {
        RoomId(self.canonical_sha256())
    }

    /// Decodes canonical bytes and checks that they are canonical, so that the id computed from the
    /// decoded contract is the id of the bytes.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, String> {
        let contract = Self::decode(bytes).map_err(|e| format!("not a sealroom.room.v1.RoomContract: {e}"))?;
        if contract.canonical_bytes() != bytes {
            return Err("the bytes decode to a room contract but are not in canonical form (collections \
                        unsorted, duplicates, upper-case hex, or unknown fields)"
                .to_owned());
        }
        Ok(contract)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::v1::{Participant, Role, Table};

    fn contract() -> RoomContract {
        RoomContract {
            name: "r".into(),
            participants: vec![
                Participant {
                    id: "b".into(),
                    roles: vec![Role::Analyst as i32, Role::DataOwner as i32],
                    ..Default::default()
                },
                Participant { id: "a".into(), roles: vec![Role::DataOwner as i32], ..Default::default() },
            ],
            tables: vec![
                Table { name: "t2".into(), owner: "a".into(), ..Default::default() },
                Table { name: "t1".into(), owner: "b".into(), ..Default::default() },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn order_of_unordered_collections_does_not_change_the_id() {
        let a = contract();
        let mut b = contract();
        b.participants.reverse();
        b.tables.reverse();
        b.participants[0].roles.reverse();
        b.participants[0].roles.push(Role::DataOwner as i32);
        assert_eq!(a.room_id(), b.room_id());
        assert_ne!(a.canonical_bytes(), Vec::<u8>::new());
    }

    #[test]
    fn any_meaningful_change_changes_the_id() {
        let a = contract();
        let mut b = contract();
        b.tables[0].owner = "b".into();
        assert_ne!(a.room_id(), b.room_id());
    }

    #[test]
    fn canonical_bytes_round_trip_and_non_canonical_bytes_are_refused() {
        let a = contract();
        let bytes = a.canonical_bytes();
        let decoded = RoomContract::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(decoded.room_id(), a.room_id());
        let non_canonical = a.encode_to_vec();
        assert!(RoomContract::from_canonical_bytes(&non_canonical).is_err());
    }

    #[test]
    fn room_id_parsing() {
        let id = contract().room_id();
        assert_eq!(RoomId::parse(id.as_str()).unwrap(), id);
        assert!(RoomId::parse("ABC").unwrap_err().contains("64 lowercase hex"));
        assert!(RoomId::parse(&id.as_str().to_uppercase()).is_err());
    }
}
