//! The audit log: an append-only, hash-chained record of everything that happens to a room.
//!
//! One JSON object per line. Each entry carries the SHA-256 of the previous entry, and its own
//! SHA-256 over its content, so any edit, removal or reordering breaks the chain. An entry is written
//! and synced *before* the action it records takes effect outside the engine (a release is audited
//! before its bytes are returned), so a crash can lose an action, never its record. A torn last line
//! (a crash mid-append) is dropped on open; damage anywhere else refuses to open.
//!
//! Every entry's digest is signed by the enclave key (ECDSA P-256), the key generated inside the
//! TEE at start. Each start of hosting writes a `room_hosted` entry carrying the attestation
//! evidence of the new key, bound to the log position (its nonce is the previous entry's digest);
//! the entries after it are signed by that key. So an auditor needs nothing but the log to check
//! that every entry was written by an attested enclave ([`verify_signatures`], then the evidence
//! of each signer against the room's policy: `sealroom audit verify`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tee::Enclave;

/// The `prev_sha256` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A dataset version a run read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputVersion {
    pub table: String,
    pub version: String,
}

/// What happened. One variant per kind of event, each with the facts an auditor needs and never
/// any row-level data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The engine started hosting the room under a TEE mode, with a new enclave key
    /// (`enclave_key`: hex SubjectPublicKeyInfo) that signs this entry and the ones after it.
    /// `evidence`: attestation evidence binding the key to the room, with the previous entry's
    /// digest as its nonce.
    RoomHosted {
        room_name: String,
        tee_mode: String,
        effective_k: u32,
        enclave_key: String,
        evidence: serde_json::Value,
    },
    /// A table upload was validated and committed.
    UploadCommitted { participant: String, table: String, version: String, rows: u64, data_sha256: String },
    /// An upload was refused or abandoned; nothing of it was kept.
    UploadRejected { participant: String, table: String, reason: String },
    /// A computation ran; its result is kept inside the engine until released.
    ComputationRun {
        participant: String,
        computation: String,
        run_id: String,
        inputs: Vec<InputVersion>,
        duration_ms: u64,
    },
    /// A differentially private run was charged to the privacy budget of every recipient of its
    /// results (before it ran; a run that then fails is not refunded, since its failure could depend
    /// on the data). `spent_micro`: each one's total afterwards.
    PrivacyBudgetCharged {
        computation: String,
        participants: Vec<String>,
        epsilon_micro: u64,
        spent_micro: std::collections::BTreeMap<String, u64>,
    },
    /// A computation failed; nothing was released.
    ComputationFailed { participant: String, computation: String, reason: String },
    /// A result passed the release gate and left the engine.
    ResultReleased {
        recipient: String,
        computation: String,
        run_id: String,
        channel: String,
        k: u32,
        cells_released: u64,
        cells_suppressed: u64,
        release_sha256: String,
    },
    /// A lookalike's trained model passed the release gate (trained on `seed_individuals` ≥ k seed
    /// users) and left the engine for a participant the contract names in `model_to`.
    ModelReleased {
        recipient: String,
        computation: String,
        run_id: String,
        channel: String,
        k: u32,
        seed_individuals: u64,
        release_sha256: String,
    },
    /// A lookalike audience (the publisher's own user ids, top `audience` by score, no seed user)
    /// passed the release gate for the publisher named in `audience_to`.
    AudienceReleased {
        recipient: String,
        computation: String,
        run_id: String,
        channel: String,
        k: u32,
        audience: u64,
        release_sha256: String,
    },
    /// A released result was written to a participant's activation sink.
    ActivationDelivered {
        recipient: String,
        computation: String,
        run_id: String,
        sink_type: String,
        location: String,
        release_sha256: String,
    },
    /// A delivery to an activation sink failed.
    ActivationFailed { recipient: String, computation: String, run_id: String, reason: String },
    /// A deal was made for an audience released to a publisher's sink (see `room::DealRecord`).
    DealCreated {
        deal_id: String,
        kind: String,
        publisher: String,
        advertiser: String,
        computation: String,
        run_id: String,
        expires_at: String,
        release_sha256: String,
    },
    /// A participant proposed contract version `version` (digest `contract_sha256`) of an interactive
    /// room; `approvers` must each sign an approval (none under development mode).
    ProposalCreated {
        proposal_id: String,
        proposed_by: String,
        base_version: u64,
        version: u64,
        contract_sha256: String,
        changes: Vec<String>,
        approvers: Vec<String>,
        /// The proposed contract's canonical bytes (standard base64), so that an auditor holding the
        /// first version can rebuild every version and check every decision offline.
        contract: String,
    },
    /// A data owner approved or rejected a proposal; `signature` is the decision it signed with its
    /// issuer key (`sealroom_attest::token::Decision`), checkable by anybody holding the contract.
    ProposalDecided {
        proposal_id: String,
        participant: String,
        decision: String,
        reason: String,
        contract_sha256: String,
        signature: String,
    },
    /// A proposal took effect: contract version `version` replaced the version whose digest is
    /// `previous_sha256`. The room id stays the first version's.
    ContractVersionAdopted {
        version: u64,
        contract_sha256: String,
        previous_sha256: String,
        proposal_id: String,
        proposed_by: String,
        approved_by: Vec<String>,
        /// Adopted without approval: development mode, own data only.
        development: bool,
        effective_k: u32,
    },
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: String,
    pub room_id: String,
    pub event: AuditEvent,
    pub prev_sha256: String,
    pub entry_sha256: String,
    /// Hex ECDSA P-256 signature of the 32 digest bytes by the enclave key in force.
    #[serde(default)]
    pub signature: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: &'a str,
    room_id: &'a str,
    event: &'a AuditEvent,
    prev_sha256: &'a str,
}

fn entry_digest(seq: u64, time: &str, room_id: &str, event: &AuditEvent, prev: &str) -> String {
    let body = Hashed { seq, time, room_id, event, prev_sha256: prev };
    // Serializing a struct of strings, integers and enums cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// Checks the chain of a sequence of entries, from the genesis. Returns the digest of the last entry.
pub fn verify_chain(entries: &[AuditEntry]) -> std::result::Result<String, String> {
    let mut prev = GENESIS.to_owned();
    for (i, e) in entries.iter().enumerate() {
        if e.seq != i as u64 {
            return Err(format!("entry {i} has sequence number {} (entries missing or reordered)", e.seq));
        }
        if e.prev_sha256 != prev {
            return Err(format!("entry {i} does not chain to entry {} (prev_sha256 differs)", i.saturating_sub(1)));
        }
        let digest = entry_digest(e.seq, &e.time, &e.room_id, &e.event, &e.prev_sha256);
        if digest != e.entry_sha256 {
            return Err(format!("entry {i} was altered: its content does not hash to its entry_sha256"));
        }
        prev = digest;
    }
    Ok(prev)
}

/// An enclave key that signed part of a log, and the evidence that vouches for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signer {
    /// The `room_hosted` entry that introduced the key.
    pub seq: u64,
    /// Its `prev_sha256`: the nonce the evidence must answer.
    pub nonce: String,
    /// Hex SubjectPublicKeyInfo.
    pub enclave_key: String,
    pub evidence: serde_json::Value,
    /// Entries signed by this key.
    pub entries: u64,
}

/// Checks that every entry is signed by the enclave key of the latest `room_hosted` entry at or
/// before it, and that each such entry's evidence names its key. Returns the signers, for their
/// evidence to be verified against the room's policy.
pub fn verify_signatures(entries: &[AuditEntry]) -> std::result::Result<Vec<Signer>, String> {
    let mut signers: Vec<Signer> = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    for e in entries {
        if let AuditEvent::RoomHosted { enclave_key, evidence, .. } = &e.event {
            if evidence.get("public_key").and_then(|k| k.as_str()) != Some(enclave_key.as_str()) {
                return Err(format!("entry {}: its evidence is not for its enclave key", e.seq));
            }
            key = hex::decode(enclave_key)
                .map_err(|err| format!("entry {}: the enclave key is not hex: {err}", e.seq))?;
            signers.push(Signer {
                seq: e.seq,
                nonce: e.prev_sha256.clone(),
                enclave_key: enclave_key.clone(),
                evidence: evidence.clone(),
                entries: 0,
            });
        }
        let Some(signer) = signers.last_mut() else {
            return Err(format!("entry {} comes before any room_hosted entry: no attested key vouches for it", e.seq));
        };
        if e.signature.is_empty() {
            return Err(format!("entry {} is not signed", e.seq));
        }
        let signature =
            hex::decode(&e.signature).map_err(|err| format!("entry {}: the signature is not hex: {err}", e.seq))?;
        let digest =
            hex::decode(&e.entry_sha256).map_err(|err| format!("entry {}: the digest is not hex: {err}", e.seq))?;
        sealroom_attest::identity::verify_signature(&key, &digest, &signature)
            .map_err(|err| format!("entry {}: {err} (of room_hosted entry {})", e.seq, signer.seq))?;
        signer.entries += 1;
    }
    Ok(signers)
}

/// A log file's entries. A torn last line (a crash mid-append) is left out: `torn` says so, and
/// `good_len` is the length of the complete lines before it.
#[derive(Debug)]
pub struct ParsedLog {
    pub entries: Vec<AuditEntry>,
    pub torn: bool,
    pub good_len: usize,
}

/// Parses a log file (JSON lines). Only the last line may be damaged (a torn append, which the
/// engine cuts off when it next opens the log); damage anywhere else is an error.
pub fn parse_log(bytes: &[u8]) -> std::result::Result<ParsedLog, String> {
    let mut entries = Vec::new();
    let mut good_len = 0;
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<AuditEntry>(line) {
            Ok(entry) if line.ends_with(b"\n") => {
                entries.push(entry);
                good_len += line.len();
            }
            _ if i + 1 == lines.len() => return Ok(ParsedLog { entries, torn: true, good_len }),
            _ => {
                return Err(format!(
                    "entry {} is not valid JSON and is not the last line: the log was damaged",
                    entries.len()
                ));
            }
        }
    }
    Ok(ParsedLog { entries, torn: false, good_len })
}

#[derive(Debug)]
struct Tail {
    file: File,
    next_seq: u64,
    last_digest: String,
}

/// The audit log of one room.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    room_id: String,
    enclave: Enclave,
    tail: Mutex<Tail>,
}

fn now_rfc3339(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl AuditLog {
    /// Opens (or creates) the log, verifies its chain and signatures and drops a torn last line.
    /// New entries are signed by `enclave`'s key; call [`Self::append_hosting`] first.
    pub fn open(path: &Path, room_id: &str, enclave: &Enclave) -> Result<Self> {
        let entries = if path.exists() { Self::read_verified(path, true)? } else { Vec::new() };
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::storage(path, e))?;
        let (next_seq, last_digest) = match entries.last() {
            Some(last) => (last.seq + 1, last.entry_sha256.clone()),
            None => (0, GENESIS.to_owned()),
        };
        Ok(Self {
            path: path.to_owned(),
            room_id: room_id.to_owned(),
            enclave: enclave.clone(),
            tail: Mutex::new(Tail { file, next_seq, last_digest }),
        })
    }

    /// Reads and verifies a log file. With `repair`, a torn last line is cut off the file.
    fn read_verified(path: &Path, repair: bool) -> Result<Vec<AuditEntry>> {
        let bytes = std::fs::read(path).map_err(|e| Error::storage(path, e))?;
        Self::verified(path, &bytes, repair)
    }

    /// The entries of the log's bytes, chain and signatures checked; with `repair`, a torn last
    /// entry is cut from the file.
    fn verified(path: &Path, bytes: &[u8], repair: bool) -> Result<Vec<AuditEntry>> {
        let parsed = parse_log(bytes).map_err(|e| Error::storage(path, format!("audit log {e}")))?;
        if parsed.torn && repair {
            tracing::warn!(path = %path.display(), entry = parsed.entries.len(), "dropping a torn last audit entry");
            let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::storage(path, e))?;
            f.set_len(parsed.good_len as u64).map_err(|e| Error::storage(path, e))?;
            f.sync_all().map_err(|e| Error::storage(path, e))?;
        }
        verify_chain(&parsed.entries)
            .and_then(|_| verify_signatures(&parsed.entries))
            .map_err(|e| Error::storage(path, format!("audit log fails verification: {e}")))?;
        Ok(parsed.entries)
    }

    /// Appends an event and syncs it to disk before returning.
    pub fn append(&self, event: AuditEvent) -> Result<AuditEntry> {
        self.append_with(|_| Ok(event))
    }

    /// Appends the `room_hosted` entry of this start: the enclave key, and evidence for it whose
    /// nonce is the previous entry's digest.
    pub fn append_hosting(&self, room_name: &str, effective_k: u32) -> Result<AuditEntry> {
        self.append_with(|prev| {
            let nonce = hex::decode(prev).map_err(|e| Error::storage(&self.path, e))?;
            let evidence = self.enclave.attest(&self.room_id, &nonce)?;
            Ok(AuditEvent::RoomHosted {
                room_name: room_name.to_owned(),
                tee_mode: self.enclave.mode().name().to_owned(),
                effective_k,
                enclave_key: hex::encode(self.enclave.identity().public_key()),
                evidence: evidence.to_json(),
            })
        })
    }

    /// Appends the event `make` returns given the previous entry's digest.
    fn append_with(&self, make: impl FnOnce(&str) -> Result<AuditEvent>) -> Result<AuditEntry> {
        let mut tail = self.tail.lock().map_err(|_| Error::storage(&self.path, "audit log lock poisoned"))?;
        let event = make(&tail.last_digest)?;
        let time = now_rfc3339(Utc::now());
        let entry_sha256 = entry_digest(tail.next_seq, &time, &self.room_id, &event, &tail.last_digest);
        let entry = AuditEntry {
            seq: tail.next_seq,
            time,
            room_id: self.room_id.clone(),
            event,
            prev_sha256: tail.last_digest.clone(),
            signature: String::new(),
            entry_sha256,
        };
        let digest = hex::decode(&entry.entry_sha256).map_err(|e| Error::storage(&self.path, e))?;
        let signature = self.enclave.identity().sign(&digest).map_err(|e| Error::storage(&self.path, e))?;
        let entry = AuditEntry { signature: hex::encode(signature), ..entry };
        let mut line = serde_json::to_vec(&entry).map_err(|e| Error::storage(&self.path, e))?;
        line.push(b'\n');
        tail.file.write_all(&line).map_err(|e| Error::storage(&self.path, e))?;
        tail.file.sync_data().map_err(|e| Error::storage(&self.path, e))?;
        tail.next_seq += 1;
        tail.last_digest = entry.entry_sha256.clone();
        Ok(entry)
    }

    /// All entries, verified.
    pub fn entries(&self) -> Result<Vec<AuditEntry>> {
        // Appends hold the lock while they write whole lines: a read under it sees whole entries.
        // Checking every signature happens after it is released, so appends do not wait for it.
        let bytes = {
            let _tail = self.tail.lock().map_err(|_| Error::storage(&self.path, "audit log lock poisoned"))?;
            std::fs::read(&self.path).map_err(|e| Error::storage(&self.path, e))?
        };
        Self::verified(&self.path, &bytes, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn event(i: u64) -> AuditEvent {
        AuditEvent::UploadRejected { participant: "p".into(), table: format!("t{i}"), reason: "r".into() }
    }

    /// Opens the log as a starting server does: a new enclave key, then the hosting entry.
    fn start(path: &Path) -> AuditLog {
        let log = AuditLog::open(path, ROOM, &Enclave::insecure_simulated().unwrap()).unwrap();
        log.append_hosting("Room", 5).unwrap();
        log
    }

    /// A start that appends `events` after its hosting entry, then a stop.
    fn run_once(path: &Path, events: std::ops::Range<u64>) {
        let log = start(path);
        for i in events {
            log.append(event(i)).unwrap();
        }
    }

    #[test]
    fn entries_are_chained_and_signed_by_each_start_s_attested_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        run_once(&path, 0..3);
        let log = start(&path);
        let e = log.append(event(3)).unwrap();
        assert_eq!(e.seq, 5);
        let entries = log.entries().unwrap();
        assert_eq!(entries.len(), 6);
        assert_eq!(verify_chain(&entries).unwrap(), entries[5].entry_sha256);
        let signers = verify_signatures(&entries).unwrap();
        assert_eq!(signers.iter().map(|s| (s.seq, s.entries)).collect::<Vec<_>>(), [(0, 4), (4, 2)]);
        assert_ne!(signers[0].enclave_key, signers[1].enclave_key, "each start has its own key");
        // Each signer's evidence binds its key to the room, fresh for the log position.
        let policy = sealroom_attest::Policy { allow_simulated: true, ..Default::default() };
        for s in &signers {
            let evidence: sealroom_attest::Evidence = serde_json::from_value(s.evidence.clone()).unwrap();
            let binding = sealroom_attest::Binding::Evidence {
                room_id: ROOM.into(),
                nonce: Some(hex::decode(&s.nonce).unwrap()),
                public_key: Some(hex::decode(&s.enclave_key).unwrap()),
            };
            let v = sealroom_attest::verify::verify(&evidence, &policy, &binding, None, 1_800_000_000);
            assert!(v.passed(), "{}", v.render());
        }
        assert_eq!(signers[1].nonce, entries[3].entry_sha256);
    }

    #[test]
    fn forged_unsigned_or_unvouched_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = start(&path);
        let entries: Vec<_> = (0..2).map(|i| log.append(event(i)).unwrap()).collect();
        let all = log.entries().unwrap();

        let mut forged = all.clone();
        forged[2].signature = entries[0].signature.clone();
        assert!(verify_signatures(&forged).unwrap_err().contains("entry 2: the signature does not verify"));

        let mut unsigned = all.clone();
        unsigned[1].signature.clear();
        assert!(verify_signatures(&unsigned).unwrap_err().contains("entry 1 is not signed"));

        assert!(verify_signatures(&all[1..]).unwrap_err().contains("before any room_hosted entry"));

        // A hosting entry whose evidence is for another key.
        let mut swapped = all.clone();
        if let AuditEvent::RoomHosted { evidence, .. } = &mut swapped[0].event {
            evidence["public_key"] = "3059".into();
        }
        assert!(verify_signatures(&swapped).unwrap_err().contains("not for its enclave key"));

        // The engine refuses to open a log whose signatures fail.
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut e2: AuditEntry = serde_json::from_str(lines[2]).unwrap();
        e2.signature = entries[0].signature.clone();
        let tampered = format!("{}\n{}\n{}\n", lines[0], lines[1], serde_json::to_string(&e2).unwrap());
        std::fs::write(&path, tampered).unwrap();
        let err = AuditLog::open(&path, ROOM, &Enclave::insecure_simulated().unwrap()).unwrap_err().to_string();
        assert!(err.contains("entry 2: the signature does not verify"), "{err}");
    }

    #[test]
    fn a_torn_last_line_is_dropped_but_damage_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        run_once(&path, 0..3);
        let text = std::fs::read_to_string(&path).unwrap();
        // A crash mid-append: half of a fifth line.
        std::fs::write(&path, format!("{text}{{\"seq\":4,\"ti")).unwrap();
        let log = start(&path);
        assert_eq!(log.entries().unwrap().len(), 5);
        assert_eq!(log.append(event(9)).unwrap().seq, 5);
        drop(log);
        // Editing an entry in the middle breaks the chain.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"t1\"", "\"t7\"", 1)).unwrap();
        let err = AuditLog::open(&path, ROOM, &Enclave::insecure_simulated().unwrap()).unwrap_err().to_string();
        assert!(err.contains("entry 2 was altered"), "{err}");
    }

    #[test]
    fn a_crash_at_any_byte_leaves_a_log_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        run_once(&path, 0..3);
        run_once(&path, 3..4);
        let full = std::fs::read(&path).unwrap();
        let boundaries: Vec<usize> =
            full.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
        // Appends write whole lines then sync, so a crash leaves a prefix of the file: every offset
        // near a line boundary, and every 37th byte in between.
        let cut = |n: usize| n.is_multiple_of(37) || boundaries.iter().any(|b| b.abs_diff(n) <= 2);
        let crash = dir.path().join("crash.jsonl");
        for n in (0..=full.len()).filter(|n| cut(*n)) {
            let prefix = &full[..n];
            let ParsedLog { entries, torn, .. } = parse_log(prefix).unwrap();
            let whole = boundaries.iter().filter(|b| **b <= n).count();
            assert_eq!((entries.len(), torn), (whole, !boundaries.contains(&n) && n > 0), "offset {n}");
            verify_chain(&entries).unwrap();
            verify_signatures(&entries).unwrap();
            // The engine opens it (dropping the torn tail) and goes on appending.
            if boundaries.iter().any(|b| b.abs_diff(n) <= 1) {
                std::fs::write(&crash, prefix).unwrap();
                let log = start(&crash);
                assert_eq!(log.entries().unwrap().len(), whole + 1, "offset {n}");
            }
        }
    }

    #[test]
    fn removing_an_entry_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = start(&path);
        let entries: Vec<_> = (0..3).map(|i| log.append(event(i)).unwrap()).collect();
        let mut without = entries.clone();
        without.remove(1);
        assert!(verify_chain(&without).unwrap_err().contains("entry 0 has sequence number 1"));
    }
}
