//! `sealroom audit verify`: an audit log checked offline with nothing but the room file.
//!
//! 1. the hash chain (every entry's digest, in sequence, from the genesis);
//! 2. every entry's signature by the enclave key of the latest `room_hosted` entry before it;
//! 3. each such key's attestation evidence (kept in its `room_hosted` entry) against the contract's
//!    policy, bound to the room and to the log position (its nonce is the previous entry's digest);
//! 4. in rooms that changed, the governance: every contract version rebuilt from the log, every
//!    approval's signature checked with the approver's key in force, every version approved by every
//!    data owner it touched (`sealroom_engine::governance::verify_log`).
//!
//! A torn last line (a crash mid-append, dropped by the engine when it next opens the log) is
//! reported, not counted as damage.

use std::fmt::Write as _;
use std::path::Path;

use sealroom_attest::verify::verify;
use sealroom_attest::{Binding, Endorsements, Evidence, Policy, Verification};
use sealroom_engine::audit::{AuditEntry, parse_log, verify_chain, verify_signatures};
use sealroom_engine::governance::{GovernanceSummary, verify_log};
use sealroom_proto::room::v1::RoomContract;

use crate::CliError;

/// The outcome of verifying a log.
#[derive(Debug)]
pub struct AuditReport {
    pub entries: usize,
    pub torn_tail: bool,
    /// The chain and signature checks: the last digest, or what failed.
    pub chain: Result<String, String>,
    /// Each signing key: the hosting entry's sequence number, entries signed, and its evidence's
    /// verification (or why the evidence could not be read).
    pub signers: Vec<(u64, u64, Result<Verification, String>)>,
    /// The governance replay (see the module documentation).
    pub governance: Result<GovernanceSummary, String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.chain.is_ok()
            && self.governance.is_ok()
            && !self.signers.is_empty()
            && self.signers.iter().all(|(_, _, v)| v.as_ref().is_ok_and(Verification::passed))
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "audit log: {} entries{}",
            self.entries,
            if self.torn_tail {
                " (plus a torn last line from a crash mid-append, which the engine drops: ignored)"
            } else {
                ""
            }
        );
        match &self.chain {
            Ok(head) => {
                let _ =
                    writeln!(out, "  [pass] hash chain and signatures: every entry chained and signed; head {head}");
            }
            Err(e) => {
                let _ = writeln!(out, "  [FAIL] hash chain and signatures: {e}");
            }
        }
        match &self.governance {
            Ok(g) if g.proposals == 0 => {
                let _ = writeln!(out, "  [pass] governance: the contract never changed (version 1)");
            }
            Ok(g) => {
                let _ = writeln!(
                    out,
                    "  [pass] governance: {} proposals, {} signed decisions checked with the keys in force, every \
                     version approved by the data owners it touched; version {} in force",
                    g.proposals, g.decisions, g.version
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  [FAIL] governance: {e}");
            }
        }
        for (seq, signed, verification) in &self.signers {
            let _ = writeln!(out, "\nenclave key of entry {seq} (signed {signed} entries):");
            match verification {
                Ok(v) => out.push_str(&v.render()),
                Err(e) => {
                    let _ = writeln!(out, "  [FAIL] evidence: {e}");
                }
            }
        }
        let _ = writeln!(out, "\n{}", if self.passed() { "VERIFIED" } else { "NOT VERIFIED" });
        out
    }
}

/// Reads a log: JSON lines (the data directory's `audit.jsonl`) or the REST response
/// (`{"entries": [...]}`).
fn read_entries(path: &Path) -> Result<(Vec<AuditEntry>, bool), CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io(path, e))?;
    if bytes.trim_ascii_start().starts_with(b"{")
        && let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(entries) = body.get("entries")
    {
        let entries = serde_json::from_value(entries.clone())
            .map_err(|e| CliError::Input(format!("{}: the entries are not audit entries: {e}", path.display())))?;
        return Ok((entries, false));
    }
    parse_log(&bytes)
        .map(|p| (p.entries, p.torn))
        .map_err(|e| CliError::Input(format!("{}: audit log {e}", path.display())))
}

/// Verifies the log at `path` for `contract`'s room at `now`.
pub fn verify_file(
    path: &Path,
    contract: &RoomContract,
    endorsements: Option<&Endorsements>,
    now: u64,
) -> Result<AuditReport, CliError> {
    let (entries, torn_tail) = read_entries(path)?;
    Ok(verify_entries(&entries, torn_tail, contract, endorsements, now))
}

/// Verifies parsed entries (see the module documentation).
pub fn verify_entries(
    entries: &[AuditEntry],
    torn_tail: bool,
    contract: &RoomContract,
    endorsements: Option<&Endorsements>,
    now: u64,
) -> AuditReport {
    let room_id = contract.room_id();
    let policy = Policy::from_contract(contract);
    let wrong_room = entries.iter().find(|e| e.room_id != room_id.as_str());
    let checked = match wrong_room {
        Some(e) => Err(format!("entry {} is of room {}, not this room ({room_id})", e.seq, e.room_id)),
        None => verify_chain(entries).and_then(|head| verify_signatures(entries).map(|s| (head, s))),
    };
    let (chain, signers) = match checked {
        Ok((head, signers)) => (Ok(head), signers),
        Err(e) => (Err(e), Vec::new()),
    };
    let signers = signers
        .into_iter()
        .map(|s| {
            let evidence = serde_json::from_value::<Evidence>(s.evidence.clone())
                .map_err(|e| format!("not sealroom evidence: {e}"));
            let verification = evidence.and_then(|evidence| {
                let binding = Binding::Evidence {
                    room_id: room_id.as_str().to_owned(),
                    nonce: Some(hex::decode(&s.nonce).map_err(|e| format!("nonce: {e}"))?),
                    public_key: Some(hex::decode(&s.enclave_key).map_err(|e| format!("key: {e}"))?),
                };
                Ok(verify(&evidence, &policy, &binding, endorsements, now))
            });
            (s.seq, s.entries, verification)
        })
        .collect();
    let governance = verify_log(entries, contract);
    AuditReport { entries: entries.len(), torn_tail, chain, signers, governance }
}
