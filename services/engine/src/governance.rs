//! Governance: how an interactive room changes, and what never changes (see `docs/governance.md`).
//!
//! A room's contract is immutable unless it sets `governance.interactive`. In an interactive room a
//! participant proposes a whole new contract as the next version; [`assess`] compares it with the
//! version in force, refuses what a proposal may not change, and names the data owners whose data
//! the change touches. Each of them approves (or rejects) with a [`token::Decision`] signed by one of
//! its issuer keys; when the last approval arrives the version takes effect, is kept sealed under
//! `governance/versions/`, and is chained in the audit log (`contract_version_adopted`, naming the
//! digest of the version before it). The room id stays the id of the first version, so tokens,
//! storage and the audit log carry over.
//!
//! What a proposal may change: add computations, add tables, add participants, add roles to a
//! participant, change the k-anonymity thresholds, and change a participant's credential (rotate
//! issuer keys, revoke token ids). Everything else (removing or editing a computation or table, the
//! attestation policy, differential privacy, authentication, governance itself, the name) is a new
//! room. Development mode lets a participant add computations over only its own tables, run by and
//! delivered to only itself, without approval.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use sealroom_attest::token;
use sealroom_proto::room::v1::{Computation, Participant, Role, RoomContract};
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::room::{Issuer, Room};

/// Open proposals a room keeps at once: proposals are kept sealed, so a participant cannot fill the
/// disk with them.
pub const MAX_OPEN_PROPOSALS: usize = 50;

/// The largest proposed contract, in canonical bytes (real contracts are a few KiB).
pub const MAX_CONTRACT_BYTES: usize = 256 * 1024;

/// The contract version in force and what is derived from it once.
pub(crate) struct Terms {
    pub contract: RoomContract,
    /// 1 for the contract the room was created with.
    pub version: u64,
    /// Lowercase hex SHA-256 of the contract's canonical bytes (for version 1, the room id).
    pub contract_sha256: String,
    /// The contract's issuer keys by key id (`kid`), decoded once: tokens name their key by it.
    pub issuers: HashMap<String, Issuer>,
    pub k: u32,
}

impl Terms {
    pub(crate) fn new(contract: RoomContract, version: u64) -> Self {
        let contract_sha256 = contract.canonical_sha256();
        let mut issuers = HashMap::new();
        for p in &contract.participants {
            let Some(credential) = &p.credential else { continue };
            for key in &credential.issuer_keys {
                // Validation accepted every key; one that does not decode could name no token anyway.
                if let Ok(spki) = sealroom_proto::validate::decode_p256_spki(key) {
                    let revoked = credential.revoked_token_ids.clone();
                    let issuer = Issuer { participant: p.id.clone(), revoked, spki };
                    issuers.insert(token::key_id(&issuer.spki), issuer);
                }
            }
        }
        let k = contract.effective_k();
        Self { contract, version, contract_sha256, issuers, k }
    }

    /// A signed decision by `participant`, checked with one of its issuer keys in this version.
    fn signed_decision(&self, participant: &str, signed: &str) -> Result<token::Decision> {
        let kid = token::decision_key_id(signed).map_err(Error::InvalidRequest)?;
        let issuer = self.issuers.get(&kid).filter(|i| i.participant == participant).ok_or_else(|| {
            Error::PermissionDenied(format!(
                "the decision is signed by key {kid}, not one of its keys: it is not an issuer key of \
                 '{participant}' in contract version {}; sign it with your own issuer key",
                self.version
            ))
        })?;
        token::verify_decision(signed, &issuer.spki).map_err(Error::InvalidRequest)
    }
}

/// What a decision says that differs from what it must say: by `participant`, about proposal
/// `proposal` of `room`, making version `version` of the contract with digest `digest`.
fn decision_mismatches(
    d: &token::Decision,
    participant: &str,
    room: &str,
    (proposal, version, digest): (&str, u64, &str),
) -> Vec<String> {
    let mut wrong = Vec::new();
    if d.sub != participant {
        wrong.push(format!("it is by '{}', not '{participant}'", d.sub));
    }
    if d.room != room {
        wrong.push(format!("it names room {}, not {room}", d.room));
    }
    if d.proposal != proposal {
        wrong.push(format!("it names proposal {}, not {proposal}", d.proposal));
    }
    if d.version != version {
        wrong.push(format!("it names version {}, not {version}", d.version));
    }
    if d.contract_sha256 != digest {
        wrong.push(format!("it approves contract {}, but the proposal's contract is {digest}", d.contract_sha256));
    }
    wrong
}

/// A contract version after the first, as kept sealed in `governance/versions/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractVersion {
    pub version: u64,
    pub contract_sha256: String,
    /// The digest of the version it replaced.
    pub previous_sha256: String,
    pub proposal_id: String,
    pub adopted_at: String,
    /// The contract's canonical bytes, standard base64.
    pub contract: String,
}

/// A participant's decision on a proposal, with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDecision {
    pub participant: String,
    /// `approve` or `reject`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub decided_at: String,
    /// The compact JWS the participant signed (`sealroom_attest::token::Decision`).
    pub signature: String,
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for approvals.
    Open,
    /// In force as version `version`.
    Adopted,
    /// A data owner rejected it.
    Rejected,
    /// Another proposal became the next version first; propose again against the new one.
    Superseded,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Adopted => "adopted",
            Self::Rejected => "rejected",
            Self::Superseded => "superseded",
        }
    }
}

/// A proposed next version of a room's contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub proposed_by: String,
    pub proposed_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The version it was proposed against.
    pub base_version: u64,
    /// The version it makes.
    pub version: u64,
    /// What a signed decision must name.
    pub contract_sha256: String,
    /// What it changes, one line each.
    pub changes: Vec<String>,
    /// The data owners whose data it touches: each must approve.
    pub approvers: Vec<String>,
    pub decisions: Vec<SignedDecision>,
    pub state: ProposalState,
    /// Adopted without approval under development mode.
    #[serde(default)]
    pub development: bool,
    /// The proposed contract's canonical bytes, standard base64.
    pub contract: String,
}

impl Proposal {
    /// The proposed contract.
    pub fn proposed_contract(&self) -> Result<RoomContract> {
        decode_contract(&self.contract, &format!("proposal {}", self.id))
    }

    /// The proposal as participants read it: the proposed contract as a room file (what a signed
    /// decision's `contract_sha256` is the canonical digest of), and who has yet to approve.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let mut value = serde_json::to_value(self).map_err(|e| Error::Computation(e.to_string()))?;
        let contract = sealroom_proto::RoomFile::from_contract(&self.proposed_contract()?);
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "contract".into(),
                serde_json::to_value(contract).map_err(|e| Error::Computation(e.to_string()))?,
            );
            object.insert("awaiting".into(), serde_json::json!(self.awaiting()));
        }
        Ok(value)
    }

    /// Its state as the versions say: adopted when a version names it (its own file may lag after a
    /// failed write), superseded when still open against a version no longer in force.
    fn settle(&mut self, version_in_force: u64, adopted: bool) {
        if adopted {
            self.state = ProposalState::Adopted;
        } else if self.state == ProposalState::Open && self.base_version != version_in_force {
            self.state = ProposalState::Superseded;
        }
    }

    /// Approvers that have not approved yet (nobody, once the proposal is decided).
    pub fn awaiting(&self) -> Vec<String> {
        if self.state != ProposalState::Open {
            return Vec::new();
        }
        self.approvers
            .iter()
            .filter(|a| !self.decisions.iter().any(|d| &d.participant == *a && d.decision == "approve"))
            .cloned()
            .collect()
    }
}

fn decode_contract(text: &str, what: &str) -> Result<RoomContract> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Computation(format!("{what}: the stored contract is not base64: {e}")))?;
    RoomContract::from_canonical_bytes(&bytes).map_err(|e| Error::Computation(format!("{what}: {e}")))
}

/// What a proposal changes and who must approve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assessment {
    pub changes: Vec<String>,
    pub approvers: BTreeSet<String>,
    /// Only computations over the proposer's own tables, for only the proposer, were added.
    pub own_data_only: bool,
}

fn data_owners(contract: &RoomContract) -> BTreeSet<String> {
    contract.tables.iter().map(|t| t.owner.clone()).collect()
}

/// Everyone a computation lets run it or receive anything from it.
fn beneficiaries(c: &Computation) -> BTreeSet<&str> {
    let mut all: BTreeSet<&str> =
        c.run_by.iter().chain(&c.results_to).chain(&c.deliver_to).map(String::as_str).collect();
    if let Some(l) = c.lookalike() {
        all.extend(l.model_to.iter().map(String::as_str));
        if !l.audience_to.is_empty() {
            all.insert(l.audience_to.as_str());
        }
    }
    all
}

fn roles(p: &Participant) -> BTreeSet<i32> {
    p.roles.iter().copied().collect()
}

/// Compares a proposed contract with the one in force: refuses what a proposal may not change (every
/// reason at once) and names the changes and the data owners who must approve them.
pub(crate) fn assess(current: &RoomContract, proposed: &RoomContract, proposer: &str) -> Result<Assessment> {
    let (mut current, mut proposed) = (current.clone(), proposed.clone());
    current.canonicalize();
    proposed.canonicalize();
    let mut refused = Vec::new();
    let mut changes = Vec::new();
    let mut approvers = BTreeSet::new();
    let owners = data_owners(&current);
    let mut own_data_only = true;

    if current.name != proposed.name || current.description != proposed.description {
        refused.push("the room's name and description are fixed".to_owned());
    }
    for (section, same) in [
        ("attestation", current.attestation == proposed.attestation),
        ("authentication", current.authentication == proposed.authentication),
        ("governance", current.governance == proposed.governance),
        (
            "privacy.differential_privacy",
            current.privacy.as_ref().and_then(|p| p.differential_privacy.as_ref())
                == proposed.privacy.as_ref().and_then(|p| p.differential_privacy.as_ref()),
        ),
    ] {
        if !same {
            refused.push(format!("`{section}` is fixed for the life of a room"));
        }
    }

    for p in &current.participants {
        let Some(q) = proposed.participant(&p.id) else {
            refused.push(format!("participant '{}' is removed; participants can only be added", p.id));
            continue;
        };
        if p.name != q.name {
            refused.push(format!("participant '{}' is renamed; names are fixed", p.id));
        }
        let (had, has) = (roles(p), roles(q));
        if !had.is_subset(&has) {
            refused.push(format!("participant '{}' loses a role; roles can only be added", p.id));
        }
        for role in has.difference(&had) {
            let name = Role::try_from(*role).map_or("unknown", Role::file_name);
            changes.push(format!("participant '{}' gains role {name}", p.id));
            approvers.extend(owners.iter().cloned());
            own_data_only = false;
        }
        if p.credential != q.credential {
            changes.push(format!("participant '{}' changes its credential (issuer keys, revoked token ids)", p.id));
            approvers.insert(p.id.clone());
            own_data_only = false;
        }
    }
    for q in &proposed.participants {
        if current.participant(&q.id).is_none() {
            changes.push(format!("participant '{}' joins", q.id));
            approvers.extend(owners.iter().cloned());
            own_data_only = false;
        }
    }

    for t in &current.tables {
        match proposed.table(&t.name) {
            None => refused.push(format!("table '{}' is removed; tables can only be added", t.name)),
            Some(u) if u != t => refused.push(format!("table '{}' is changed; tables are fixed once added", t.name)),
            Some(_) => {}
        }
    }
    for u in &proposed.tables {
        if current.table(&u.name).is_none() {
            changes.push(format!("table '{}' is added, owned by '{}'", u.name, u.owner));
            // Its owner commits to providing it; a participant that joins in the same proposal
            // agrees by handing over its key.
            if current.participant(&u.owner).is_some() {
                approvers.insert(u.owner.clone());
            }
            own_data_only = false;
        }
    }

    for c in &current.computations {
        match proposed.computation(&c.name) {
            None => refused.push(format!("computation '{}' is removed; computations can only be added", c.name)),
            Some(d) if d != c => {
                refused.push(format!("computation '{}' is changed; add one under a new name instead", c.name))
            }
            Some(_) => {}
        }
    }
    for d in &proposed.computations {
        if current.computation(&d.name).is_some() {
            continue;
        }
        let inputs = d.input_tables();
        let input_owners: BTreeSet<String> =
            inputs.iter().filter_map(|t| proposed.table(t)).map(|t| t.owner.clone()).collect();
        changes.push(format!(
            "computation '{}' ({}) is added over {} (owned by {})",
            d.name,
            d.kind_name(),
            inputs.join(", "),
            input_owners.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        if input_owners.iter().any(|o| o != proposer) || beneficiaries(d).iter().any(|b| *b != proposer) {
            own_data_only = false;
        }
        // Owners of tables added in this same proposal by a joining participant cannot sign yet.
        approvers.extend(input_owners.into_iter().filter(|o| current.participant(o).is_some()));
    }

    let thresholds = |c: &RoomContract| c.privacy.as_ref().map(|p| p.k_thresholds.clone()).unwrap_or_default();
    if thresholds(&current) != thresholds(&proposed) {
        changes.push(format!(
            "the k-anonymity thresholds change (effective k {} → {})",
            current.effective_k(),
            proposed.effective_k()
        ));
        // k protects every owner's data in every release.
        approvers.extend(owners.iter().cloned());
        own_data_only = false;
    }

    if !refused.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "the proposal changes what a proposal may not change:\n- {}\nA proposal may add computations, tables, \
             participants and roles, change k thresholds and change a participant's credential; anything else is \
             a new room",
            refused.join("\n- ")
        )));
    }
    if changes.is_empty() {
        return Err(Error::InvalidRequest(
            "the proposed contract is the contract in force: the proposal changes nothing".to_owned(),
        ));
    }
    if approvers.is_empty() {
        // Nobody's data is touched (a room without data owners): the proposer vouches for it.
        approvers.insert(proposer.to_owned());
    }
    Ok(Assessment { changes, approvers, own_data_only })
}

impl Room {
    fn proposal_path(&self, id: &str) -> std::path::PathBuf {
        self.storage.proposals_dir().join(format!("{id}.json"))
    }

    /// Every proposal, oldest first; an open one against an older version shows as superseded.
    pub(crate) fn proposals(&self) -> Result<Vec<Proposal>> {
        let version = self.terms().version;
        let adopted: BTreeSet<String> = self.versions()?.into_iter().map(|v| v.proposal_id).collect();
        let mut all: Vec<Proposal> = self.storage.sealer().read_json_dir(&self.storage.proposals_dir())?;
        for p in &mut all {
            p.settle(version, adopted.contains(&p.id));
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// One proposal, read from its own file (ids are the engine's: letters, digits and '-').
    pub(crate) fn proposal(&self, id: &str) -> Result<Proposal> {
        let not_found = || {
            Error::NotFound(format!(
                "room {} has no proposal '{id}'; `GET /v1/rooms/{}/proposals` lists them",
                self.id, self.id
            ))
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(not_found());
        }
        let mut p: Proposal =
            self.storage.sealer().read_json_if_exists(&self.proposal_path(id))?.ok_or_else(not_found)?;
        let adopted = self.versions()?.iter().any(|v| v.proposal_id == p.id);
        p.settle(self.terms().version, adopted);
        Ok(p)
    }

    /// The versions of the contract after the first, oldest first.
    pub(crate) fn versions(&self) -> Result<Vec<ContractVersion>> {
        let mut all: Vec<ContractVersion> = self.storage.sealer().read_json_dir(&self.storage.versions_dir())?;
        all.sort_by_key(|v| v.version);
        Ok(all)
    }

    /// The contract in force after every stored version, checked link by link: each version follows
    /// the one before it and names its digest.
    pub(crate) fn load_terms(&self, genesis: RoomContract) -> Result<Terms> {
        let mut terms = Terms::new(genesis, 1);
        for v in self.versions()? {
            let what = format!("contract version {}", v.version);
            let next = Terms::new(decode_contract(&v.contract, &what)?, v.version);
            if v.version != terms.version + 1
                || v.previous_sha256 != terms.contract_sha256
                || next.contract_sha256 != v.contract_sha256
            {
                return Err(Error::storage(
                    self.storage.versions_dir(),
                    format!(
                        "{what} does not follow version {} (its digests or numbering do not chain); the room's \
                         version history is damaged",
                        terms.version
                    ),
                ));
            }
            terms = next;
        }
        Ok(terms)
    }

    /// Holds the stored versions against the audit log when an interactive room opens:
    /// - a version the log records as adopted but storage lacks (or holds with another digest) means
    ///   version files were removed or replaced, which would roll the contract back (a revoked key
    ///   back in force, a lower k): the room is refused;
    /// - a stored version the log does not record (a crash between writing it and auditing it) is
    ///   audited now;
    /// - an open proposal with every approval but no version (a crash before adoption) is adopted.
    ///
    /// Two steps: [`Self::check_versions_against_audit`] before the room's `room_hosted` entry (a
    /// refused room leaves none), [`Self::recover_adoptions`] after it (its entries are signed by the
    /// key that entry introduces).
    pub(crate) fn check_versions_against_audit(&self) -> Result<std::collections::BTreeMap<u64, String>> {
        if !self.terms().contract.is_interactive() {
            return Ok(Default::default());
        }
        let audited: std::collections::BTreeMap<u64, String> = self
            .audit
            .entries()?
            .into_iter()
            .filter_map(|e| match e.event {
                AuditEvent::ContractVersionAdopted { version, contract_sha256, .. } => Some((version, contract_sha256)),
                _ => None,
            })
            .collect();
        let versions = self.versions()?;
        for (version, digest) in &audited {
            match versions.iter().find(|v| v.version == *version) {
                Some(v) if v.contract_sha256 == *digest => {}
                found => {
                    return Err(Error::storage(
                        self.storage.versions_dir(),
                        format!(
                            "the audit log records contract version {version} ({digest}) as adopted, but {}: the \
                             room's versions were removed or replaced, which would roll its contract back; restore \
                             the room directory from a backup taken after version {version}",
                            match found {
                                Some(v) => format!("the stored version {version} is {}", v.contract_sha256),
                                None => "storage does not hold it".to_owned(),
                            }
                        ),
                    ));
                }
            }
        }
        Ok(audited)
    }

    /// The second step of [`Self::check_versions_against_audit`].
    pub(crate) fn recover_adoptions(&self, audited: &std::collections::BTreeMap<u64, String>) -> Result<()> {
        let terms = self.terms();
        if !terms.contract.is_interactive() {
            return Ok(());
        }
        for v in self.versions()?.into_iter().filter(|v| !audited.contains_key(&v.version)) {
            let mut proposal: Proposal = self.storage.sealer().read_json(&self.proposal_path(&v.proposal_id))?;
            let k = decode_contract(&v.contract, "contract version")?.effective_k();
            tracing::warn!(room = %self.id, version = v.version, "auditing a contract version adopted just before a crash");
            self.audit_adoption(&v, &proposal, k)?;
            self.mark_adopted(&mut proposal);
        }
        let stuck: Vec<Proposal> = self
            .proposals()?
            .into_iter()
            .filter(|p| p.state == ProposalState::Open && !p.approvers.is_empty() && p.awaiting().is_empty())
            .collect();
        if let Some(p) = stuck.into_iter().next() {
            tracing::warn!(room = %self.id, proposal = %p.id, "adopting a proposal approved just before a crash");
            let _guard = self.lock_governance()?;
            self.adopt(p, &terms)?;
        }
        Ok(())
    }

    /// Records a proposal, or adopts it at once when development mode allows.
    pub(crate) fn propose(
        &self,
        proposer: &str,
        base_version: u64,
        proposed: RoomContract,
        description: &str,
    ) -> Result<Proposal> {
        let _guard = self.lock_governance()?;
        let terms = self.terms();
        if !terms.contract.is_interactive() {
            return Err(Error::FailedPrecondition(format!(
                "room {} is not interactive: its contract is fixed. A room whose contract sets \
                 `governance: {{interactive: true}}` takes proposals; otherwise create a new room",
                self.id
            )));
        }
        if base_version != terms.version {
            return Err(stale(&self.id, base_version, terms.version));
        }
        let open = self.proposals()?.iter().filter(|p| p.state == ProposalState::Open).count();
        if open >= MAX_OPEN_PROPOSALS {
            return Err(Error::FailedPrecondition(format!(
                "room {} already has {open} open proposals (at most {MAX_OPEN_PROPOSALS}); let the data owners \
                 decide them, or wait until one is adopted (which supersedes the rest)",
                self.id
            )));
        }
        let assessment = assess(&terms.contract, &proposed, proposer)?;
        let development = terms.contract.in_development_mode() && assessment.own_data_only;
        let bytes = proposed.canonical_bytes();
        if bytes.len() > MAX_CONTRACT_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the proposed contract is {} bytes; a contract may be at most {MAX_CONTRACT_BYTES}",
                bytes.len()
            )));
        }
        let proposal = Proposal {
            id: crate::storage::new_id("prop-"),
            proposed_by: proposer.to_owned(),
            proposed_at: now_rfc3339(),
            description: description.to_owned(),
            base_version,
            version: base_version + 1,
            contract_sha256: sealroom_proto::canonical::canonical_sha256(&bytes),
            changes: assessment.changes,
            approvers: if development { Vec::new() } else { assessment.approvers.into_iter().collect() },
            decisions: Vec::new(),
            state: ProposalState::Open,
            development,
            contract: base64::engine::general_purpose::STANDARD.encode(&bytes),
        };
        self.storage.sealer().write_json_atomically(&self.proposal_path(&proposal.id), &proposal)?;
        self.audit.append(AuditEvent::ProposalCreated {
            proposal_id: proposal.id.clone(),
            proposed_by: proposer.to_owned(),
            base_version,
            version: proposal.version,
            contract_sha256: proposal.contract_sha256.clone(),
            changes: proposal.changes.clone(),
            approvers: proposal.approvers.clone(),
            contract: proposal.contract.clone(),
        })?;
        if proposal.development {
            return self.adopt(proposal, &terms);
        }
        Ok(proposal)
    }

    /// Takes a data owner's signed decision on an open proposal; adopts the proposal when it was the
    /// last approval, closes it when it is a rejection.
    pub(crate) fn decide(&self, participant: &str, proposal_id: &str, verdict: &str, signed: &str) -> Result<Proposal> {
        let _guard = self.lock_governance()?;
        let terms = self.terms();
        let mut proposal = self.proposal(proposal_id)?;
        match proposal.state {
            ProposalState::Open => {}
            ProposalState::Superseded => return Err(stale(&self.id, proposal.base_version, terms.version)),
            state => {
                return Err(Error::FailedPrecondition(format!(
                    "proposal {proposal_id} is {}: it takes no more decisions",
                    state.as_str()
                )));
            }
        }
        if !proposal.approvers.iter().any(|a| a == participant) {
            return Err(Error::PermissionDenied(format!(
                "participant '{participant}' is not an approver of proposal {proposal_id}: it owns no data the \
                 proposal touches and its credential is not what changes, so it neither approves nor rejects it; \
                 the approvers are: {}",
                proposal.approvers.join(", ")
            )));
        }
        let decision = self.verify_decision(&terms, participant, &proposal, signed)?;
        if decision.decision != verdict {
            return Err(Error::InvalidRequest(format!(
                "the signed decision says `{}` but was sent to {verdict}; send it to {} instead",
                decision.decision, decision.decision
            )));
        }
        proposal.decisions.retain(|d| d.participant != participant);
        proposal.decisions.push(SignedDecision {
            participant: participant.to_owned(),
            decision: decision.decision.clone(),
            reason: decision.reason.clone(),
            decided_at: now_rfc3339(),
            signature: signed.to_owned(),
        });
        let rejected = decision.decision == "reject";
        if rejected {
            proposal.state = ProposalState::Rejected;
        }
        self.storage.sealer().write_json_atomically(&self.proposal_path(&proposal.id), &proposal)?;
        self.audit.append(AuditEvent::ProposalDecided {
            proposal_id: proposal.id.clone(),
            participant: participant.to_owned(),
            decision: decision.decision,
            reason: decision.reason,
            contract_sha256: proposal.contract_sha256.clone(),
            signature: signed.to_owned(),
        })?;
        if !rejected && proposal.awaiting().is_empty() {
            return self.adopt(proposal, &terms);
        }
        Ok(proposal)
    }

    /// Checks a signed decision: a decision JWS by one of `participant`'s issuer keys in force, naming
    /// this room, this proposal, its version and its contract digest.
    fn verify_decision(
        &self,
        terms: &Terms,
        participant: &str,
        proposal: &Proposal,
        signed: &str,
    ) -> Result<token::Decision> {
        let d = terms.signed_decision(participant, signed)?;
        let about = (proposal.id.as_str(), proposal.version, proposal.contract_sha256.as_str());
        let wrong = decision_mismatches(&d, participant, self.id.as_str(), about);
        if !wrong.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "the signed decision is not about this proposal: {}",
                wrong.join("; ")
            )));
        }
        Ok(d)
    }

    /// Makes a proposal the version in force: the version file first (the source of truth), then
    /// its audit entry (the record comes before the effect), then the contract in memory and the
    /// proposal's state.
    fn adopt(&self, mut proposal: Proposal, terms: &Terms) -> Result<Proposal> {
        let contract = proposal.proposed_contract()?;
        let version = ContractVersion {
            version: proposal.version,
            contract_sha256: proposal.contract_sha256.clone(),
            previous_sha256: terms.contract_sha256.clone(),
            proposal_id: proposal.id.clone(),
            adopted_at: now_rfc3339(),
            contract: proposal.contract.clone(),
        };
        let path = self.storage.version_path(version.version);
        self.storage.sealer().write_json_atomically(&path, &version)?;
        let next = Terms::new(contract, version.version);
        if let Err(e) = self.audit_adoption(&version, &proposal, next.k) {
            // Not audited, so not adopted: the version file goes (a restart would audit it otherwise).
            if let Err(removal) = std::fs::remove_file(&path) {
                tracing::error!(path = %path.display(), %removal, "could not remove an unaudited contract version");
            }
            return Err(e);
        }
        self.install_terms(next);
        self.mark_adopted(&mut proposal);
        tracing::info!(room = %self.id, version = proposal.version, proposal = %proposal.id, "contract version adopted");
        Ok(proposal)
    }

    fn audit_adoption(&self, version: &ContractVersion, proposal: &Proposal, effective_k: u32) -> Result<()> {
        self.audit.append(AuditEvent::ContractVersionAdopted {
            version: version.version,
            contract_sha256: version.contract_sha256.clone(),
            previous_sha256: version.previous_sha256.clone(),
            proposal_id: proposal.id.clone(),
            proposed_by: proposal.proposed_by.clone(),
            approved_by: approved_by(proposal),
            development: proposal.development,
            effective_k,
        })?;
        Ok(())
    }

    /// Records a proposal's adoption in its file. The version file already says it (and
    /// [`Self::proposals`] reads it from there), so a failure here is logged, not returned.
    fn mark_adopted(&self, proposal: &mut Proposal) {
        proposal.state = ProposalState::Adopted;
        if let Err(e) = self.storage.sealer().write_json_atomically(&self.proposal_path(&proposal.id), proposal) {
            tracing::error!(room = %self.id, proposal = %proposal.id, error = %e, "could not mark the proposal adopted");
        }
    }

    fn lock_governance(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.governance_lock.lock().map_err(|_| Error::Computation("governance lock poisoned".into()))
    }
}

/// What [`verify_log`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernanceSummary {
    pub proposals: usize,
    pub decisions: usize,
    /// The version in force after the last entry (1 when none was adopted).
    pub version: u64,
}

/// Replays a room's governance from its audit log, offline, with nothing but the first contract
/// version: every proposed contract is rebuilt from its entry and checked against its digest, its
/// approvers are recomputed from the version in force, every decision's signature is checked with the
/// participant's issuer key in the version in force when it was made, and every adopted version must
/// follow the previous one (number and digest) and carry the approval of every approver (or be an
/// own-data development change). Chain and enclave signatures are checked separately
/// ([`crate::audit::verify_chain`], [`crate::audit::verify_signatures`]).
pub fn verify_log(entries: &[crate::audit::AuditEntry], genesis: &RoomContract) -> Result<GovernanceSummary, String> {
    struct Proposed {
        contract: RoomContract,
        version: u64,
        digest: String,
        approvers: BTreeSet<String>,
        development: bool,
        approved: BTreeSet<String>,
    }
    let room = genesis.room_id();
    let mut terms = Terms::new(genesis.clone(), 1);
    let mut proposals: HashMap<String, Proposed> = HashMap::new();
    let mut decisions = 0;
    for entry in entries {
        let at = |what: String| format!("entry {}: {what}", entry.seq);
        match &entry.event {
            AuditEvent::ProposalCreated {
                proposal_id,
                proposed_by,
                base_version,
                version,
                contract_sha256,
                approvers,
                contract,
                ..
            } => {
                let proposed = decode_contract(contract, proposal_id).map_err(|e| at(e.to_string()))?;
                if *contract_sha256 != proposed.canonical_sha256() || *version != base_version + 1 {
                    return Err(at(format!("proposal {proposal_id}'s contract or version does not match its entry")));
                }
                let assessment = if *base_version == terms.version {
                    Some(assess(&terms.contract, &proposed, proposed_by).map_err(|e| at(e.to_string()))?)
                } else {
                    None // against an older version: it can only ever be superseded
                };
                let listed: BTreeSet<String> = approvers.iter().cloned().collect();
                let development = listed.is_empty();
                if let Some(a) = &assessment {
                    let expected_dev = terms.contract.in_development_mode() && a.own_data_only;
                    if (development && !expected_dev) || (!development && listed != a.approvers) {
                        return Err(at(format!(
                            "proposal {proposal_id} lists approvers [{}], but its changes need [{}]",
                            approvers.join(", "),
                            a.approvers.iter().cloned().collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
                proposals.insert(
                    proposal_id.clone(),
                    Proposed {
                        contract: proposed,
                        version: *version,
                        digest: contract_sha256.clone(),
                        approvers: listed,
                        development,
                        approved: BTreeSet::new(),
                    },
                );
            }
            AuditEvent::ProposalDecided { proposal_id, participant, decision, signature, .. } => {
                let p = proposals
                    .get_mut(proposal_id)
                    .ok_or_else(|| at(format!("a decision on unknown proposal {proposal_id}")))?;
                let d = terms.signed_decision(participant, signature).map_err(|e| at(e.to_string()))?;
                let mut wrong =
                    decision_mismatches(&d, participant, room.as_str(), (proposal_id, p.version, &p.digest));
                if d.decision != *decision {
                    wrong.push(format!("it says `{}`, the entry `{decision}`", d.decision));
                }
                if !wrong.is_empty() {
                    return Err(at(format!(
                        "{participant}'s signed decision does not say what the entry says: {}",
                        wrong.join("; ")
                    )));
                }
                if d.decision == "approve" {
                    p.approved.insert(participant.clone());
                } else {
                    p.approved.remove(participant);
                }
                decisions += 1;
            }
            AuditEvent::ContractVersionAdopted { version, contract_sha256, previous_sha256, proposal_id, .. } => {
                let p = proposals
                    .get(proposal_id)
                    .ok_or_else(|| at(format!("version {version} from unknown proposal {proposal_id}")))?;
                if *version != terms.version + 1
                    || *previous_sha256 != terms.contract_sha256
                    || *contract_sha256 != p.digest
                {
                    return Err(at(format!(
                        "version {version} does not follow version {} ({})",
                        terms.version, terms.contract_sha256
                    )));
                }
                if !(p.development || p.approvers.is_subset(&p.approved)) {
                    let missing: Vec<&String> = p.approvers.difference(&p.approved).collect();
                    return Err(at(format!("version {version} was adopted without the approval of {missing:?}")));
                }
                terms = Terms::new(p.contract.clone(), *version);
            }
            _ => {}
        }
    }
    Ok(GovernanceSummary { proposals: proposals.len(), decisions, version: terms.version })
}

fn approved_by(proposal: &Proposal) -> Vec<String> {
    proposal.decisions.iter().filter(|d| d.decision == "approve").map(|d| d.participant.clone()).collect()
}

fn stale(room: &sealroom_proto::RoomId, base: u64, current: u64) -> Error {
    Error::FailedPrecondition(format!(
        "the proposal is against contract version {base}, but room {room} is at version {current}: read the \
         contract in force (`GET /v1/rooms/{room}`) and propose again against version {current}"
    ))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use sealroom_proto::room::v1::{KThreshold, PrivacyPolicy};

    use super::*;

    fn contract() -> RoomContract {
        let key = |_| token::IssuerKey::generate().unwrap().public_key_base64();
        let yaml = format!(
            r#"
name: t
governance: {{interactive: true, development_mode: true}}
participants:
  - {{id: adv, name: A, roles: [data_owner, analyst], credential: {{issuer_keys: [{}]}}}}
  - {{id: pub, name: P, roles: [data_owner, analyst], credential: {{issuer_keys: [{}]}}}}
tables:
  - {{name: crm, owner: adv, columns: [{{name: email, type: sha256, identifier: hashed_email}}]}}
  - {{name: ids, owner: pub, columns: [{{name: email, type: sha256, identifier: hashed_email}}]}}
computations:
  - {{name: both, run_by: [adv], results_to: [adv], overlap: {{advertiser_table: crm, publisher_table: ids}}}}
"#,
            key(0),
            key(1)
        );
        sealroom_proto::RoomFile::parse(&yaml, "t").unwrap_or_else(|e| panic!("{e}"))
    }

    fn with_computation(mut c: RoomContract, name: &str, left: &str, right: &str, to: &str) -> RoomContract {
        let mut d = c.computations[0].clone();
        d.name = name.into();
        d.run_by = vec![to.into()];
        d.results_to = vec![to.into()];
        if let Some(sealroom_proto::room::v1::computation::Kind::Overlap(o)) = &mut d.kind {
            o.advertiser_table = left.into();
            o.publisher_table = right.into();
        }
        c.computations.push(d);
        c
    }

    #[test]
    fn a_computation_over_both_sides_needs_both_owners() {
        let base = contract();
        let a = assess(&base, &with_computation(base.clone(), "again", "crm", "ids", "adv"), "adv").unwrap();
        assert_eq!(a.approvers, BTreeSet::from(["adv".to_owned(), "pub".to_owned()]));
        assert!(!a.own_data_only);
        assert_eq!(a.changes.len(), 1, "{:?}", a.changes);
    }

    #[test]
    fn own_data_for_oneself_is_development_and_anything_else_is_not() {
        let base = contract();
        let own = assess(&base, &with_computation(base.clone(), "mine", "crm", "crm", "adv"), "adv").unwrap();
        assert!(own.own_data_only);
        assert_eq!(own.approvers, BTreeSet::from(["adv".to_owned()]));
        // Over its own data but for somebody else: not development.
        let other = assess(&base, &with_computation(base.clone(), "gift", "crm", "crm", "pub"), "adv").unwrap();
        assert!(!other.own_data_only);
        // Somebody else's data: not development, and its owner approves.
        let theirs = assess(&base, &with_computation(base.clone(), "peek", "ids", "ids", "adv"), "adv").unwrap();
        assert!(!theirs.own_data_only);
        assert_eq!(theirs.approvers, BTreeSet::from(["pub".to_owned()]));
    }

    #[test]
    fn changing_k_needs_every_data_owner() {
        let base = contract();
        let mut lower = base.clone();
        lower.privacy = Some(PrivacyPolicy {
            k_thresholds: vec![KThreshold { set_by: "adv".into(), k: 20 }],
            differential_privacy: None,
        });
        let a = assess(&base, &lower, "adv").unwrap();
        assert_eq!(a.approvers.len(), 2);
        assert!(a.changes[0].contains("100 → 20"), "{:?}", a.changes);
    }

    #[test]
    fn what_may_not_change_is_refused_with_every_reason() {
        let base = contract();
        let mut bad = base.clone();
        bad.computations.clear();
        bad.tables[0].description = "changed".into();
        bad.governance = None;
        bad.participants.pop();
        let e = assess(&base, &bad, "adv").unwrap_err().to_string();
        for needle in ["computation 'both' is removed", "table 'crm' is changed", "`governance`", "'pub' is removed"] {
            assert!(e.contains(needle), "{needle} missing from: {e}");
        }
        let same = assess(&base, &base, "adv").unwrap_err().to_string();
        assert!(same.contains("changes nothing"), "{same}");
    }

    #[test]
    fn a_joining_participant_needs_every_data_owner() {
        let base = contract();
        let mut joined = base.clone();
        let mut p = joined.participants[0].clone();
        p.id = "auditor".into();
        p.roles = vec![Role::Auditor as i32];
        p.credential = None;
        joined.participants.push(p);
        let a = assess(&base, &joined, "pub").unwrap();
        assert_eq!(a.approvers.len(), 2);
        assert_eq!(a.changes, vec!["participant 'auditor' joins".to_owned()]);
    }
}
