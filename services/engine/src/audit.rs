//! The audit log: an append-only, hash-chained record of everything that happens to a room.
//!
//! One JSON object per line. Each entry carries the SHA-256 of the previous entry, and its own
//! SHA-256 over its content, so any edit, removal or reordering breaks the chain. An entry is written
//! and synced *before* the action it records takes effect outside the engine (a release is audited
//! before its bytes are returned), so a crash can lose an action, never its record. A torn last line
//! (a crash mid-append) is dropped on open; damage anywhere else refuses to open.
//!
//! Signatures by the enclave key come with attestation; the chain already makes the log
//! tamper-evident to anyone holding its last digest.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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
    /// The engine started hosting the room under a TEE mode.
    RoomHosted { room_name: String, tee_mode: String, effective_k: u32 },
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
    tail: Mutex<Tail>,
}

fn now_rfc3339(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl AuditLog {
    /// Opens (or creates) the log, verifies its chain and drops a torn last line.
    pub fn open(path: &Path, room_id: &str) -> Result<Self> {
        let entries = if path.exists() { Self::read_verified(path, true)? } else { Vec::new() };
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::storage(path, e))?;
        let (next_seq, last_digest) = match entries.last() {
            Some(last) => (last.seq + 1, last.entry_sha256.clone()),
            None => (0, GENESIS.to_owned()),
        };
        Ok(Self {
            path: path.to_owned(),
            room_id: room_id.to_owned(),
            tail: Mutex::new(Tail { file, next_seq, last_digest }),
        })
    }

    /// Reads and verifies a log file. With `repair`, a torn last line is cut off the file.
    fn read_verified(path: &Path, repair: bool) -> Result<Vec<AuditEntry>> {
        let file = File::open(path).map_err(|e| Error::storage(path, e))?;
        let mut reader = BufReader::new(file);
        let mut entries = Vec::new();
        let mut good_len = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(|e| Error::storage(path, e))?;
            if n == 0 {
                break;
            }
            let complete = line.ends_with('\n');
            match serde_json::from_str::<AuditEntry>(line.trim_end()) {
                Ok(entry) if complete => {
                    entries.push(entry);
                    good_len += n as u64;
                }
                _ => {
                    // Only the very last line may be damaged (a torn append); anything else is tampering.
                    let mut rest = String::new();
                    let more = reader.read_line(&mut rest).map_err(|e| Error::storage(path, e))?;
                    if more > 0 {
                        return Err(Error::storage(
                            path,
                            format!(
                                "audit log entry {} is not valid JSON and is not the last line: the log was damaged",
                                entries.len()
                            ),
                        ));
                    }
                    if repair {
                        tracing::warn!(path = %path.display(), entry = entries.len(), "dropping a torn last audit entry");
                        let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::storage(path, e))?;
                        f.set_len(good_len).map_err(|e| Error::storage(path, e))?;
                        f.sync_all().map_err(|e| Error::storage(path, e))?;
                    }
                    break;
                }
            }
        }
        verify_chain(&entries).map_err(|e| Error::storage(path, format!("audit log fails verification: {e}")))?;
        Ok(entries)
    }

    /// Appends an event and syncs it to disk before returning.
    pub fn append(&self, event: AuditEvent) -> Result<AuditEntry> {
        let mut tail = self.tail.lock().map_err(|_| Error::storage(&self.path, "audit log lock poisoned"))?;
        let time = now_rfc3339(Utc::now());
        let entry_sha256 = entry_digest(tail.next_seq, &time, &self.room_id, &event, &tail.last_digest);
        let entry = AuditEntry {
            seq: tail.next_seq,
            time,
            room_id: self.room_id.clone(),
            event,
            prev_sha256: tail.last_digest.clone(),
            entry_sha256,
        };
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
        let _tail = self.tail.lock().map_err(|_| Error::storage(&self.path, "audit log lock poisoned"))?;
        Self::read_verified(&self.path, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent::UploadRejected { participant: "p".into(), table: format!("t{i}"), reason: "r".into() }
    }

    #[test]
    fn appended_entries_chain_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "room").unwrap();
        for i in 0..3 {
            log.append(event(i)).unwrap();
        }
        drop(log);
        let log = AuditLog::open(&path, "room").unwrap();
        let e = log.append(event(3)).unwrap();
        assert_eq!(e.seq, 3);
        let entries = log.entries().unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(verify_chain(&entries).unwrap(), entries[3].entry_sha256);
    }

    #[test]
    fn a_torn_last_line_is_dropped_but_damage_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "room").unwrap();
        for i in 0..3 {
            log.append(event(i)).unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        // A crash mid-append: half of a fourth line.
        std::fs::write(&path, format!("{text}{{\"seq\":3,\"ti")).unwrap();
        let log = AuditLog::open(&path, "room").unwrap();
        assert_eq!(log.entries().unwrap().len(), 3);
        assert_eq!(log.append(event(9)).unwrap().seq, 3);
        drop(log);
        // Editing an entry in the middle breaks the chain.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"t1\"", "\"t7\"", 1)).unwrap();
        let err = AuditLog::open(&path, "room").unwrap_err().to_string();
        assert!(err.contains("entry 1 was altered"), "{err}");
    }

    #[test]
    fn removing_an_entry_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "room").unwrap();
        let entries: Vec<_> = (0..3).map(|i| log.append(event(i)).unwrap()).collect();
        let mut without = entries.clone();
        without.remove(1);
        assert!(verify_chain(&without).unwrap_err().contains("entry 1 has sequence number 2"));
    }
}
