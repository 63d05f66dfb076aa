//! Governance: proposals, signed approvals by the data owners a change touches, contract versions
//! chained in the audit log, development mode, and every refusal.

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use common::{credential, digest, issuer, login, token};
use sealroom_attest::token::{Decision, unix_now};
use sealroom_engine::audit::AuditEvent;
use sealroom_engine::{Engine, Error, Proposal, ProposalState};
use sealroom_proto::RoomFile;
use sealroom_proto::room::v1::RoomContract;

/// A room where `adv` (data owner, analyst) and `pub` (data owner) hold a table each and `aud`
/// audits; `extra_computations` and `extra_participants` are appended to their lists.
fn room_yaml(governance: &str, k: u32, extra_participants: &str, extra_computations: &str) -> String {
    format!(
        r#"
name: governed
participants:
  - {{ id: adv, name: A, roles: [data_owner, analyst], credential: {adv} }}
  - {{ id: pub, name: P, roles: [data_owner], credential: {pub_} }}
  - {{ id: aud, name: Auditor, roles: [auditor], credential: {aud} }}
{extra_participants}
tables:
  - {{ name: crm, owner: adv, columns: [{{ name: id, type: string, identifier: user_id }}, {{ name: email, type: sha256, identifier: hashed_email }}] }}
  - {{ name: users, owner: pub, columns: [{{ name: id, type: string, identifier: user_id }}, {{ name: email, type: sha256, identifier: hashed_email }}] }}
computations:
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: users }}
    run_by: [adv]
    results_to: [adv]
{extra_computations}
privacy:
  k_thresholds: [{{ set_by: pub, k: {k} }}]
attestation: {{ allow_simulated: true }}
governance: {governance}
"#,
        adv = credential("adv"),
        pub_ = credential("pub"),
        aud = credential("aud"),
    )
}

fn contract(yaml: &str) -> RoomContract {
    RoomFile::parse(yaml, "room.yaml").unwrap_or_else(|e| panic!("{e}"))
}

const INTERACTIVE: &str = "{ interactive: true }";

/// A SQL computation over `tables`, run by and delivered to adv.
fn sql(name: &str, query: &str, tables: &str) -> String {
    format!(
        "  - name: {name}\n    sql: {{ query: \"{query}\", tables: [{tables}] }}\n    run_by: [adv]\n    results_to: [adv]\n"
    )
}

fn joined_by_both() -> String {
    sql("joined", "SELECT COUNT(*) AS n FROM crm JOIN users ON crm.email = users.email", "crm, users")
}

/// `who`'s decision on `proposal`, signed with its issuer key.
fn decision(room: &str, who: &str, proposal: &Proposal, verdict: &str) -> String {
    sign(who, &decision_claims(room, who, proposal, verdict))
}

fn decision_claims(room: &str, who: &str, proposal: &Proposal, verdict: &str) -> Decision {
    Decision {
        sub: who.into(),
        room: room.into(),
        proposal: proposal.id.clone(),
        version: proposal.version,
        contract_sha256: proposal.contract_sha256.clone(),
        decision: verdict.into(),
        iat: unix_now(),
        reason: if verdict == "reject" { "not this quarter".into() } else { String::new() },
    }
}

fn sign(key_of: &str, d: &Decision) -> String {
    issuer(key_of).sign_decision(d).unwrap()
}

struct Room {
    engine: Engine,
    id: String,
    dir: tempfile::TempDir,
    genesis: RoomContract,
}

impl Room {
    async fn open(governance: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let genesis = contract(&room_yaml(governance, 10, "", ""));
        let engine = common::open(dir.path(), vec![genesis.clone()], vec![]).await;
        let id = engine.room_ids()[0].to_string();
        Self { engine, id, dir, genesis }
    }

    async fn reopen(self) -> Self {
        let Self { engine, id, dir, genesis } = self;
        engine.close().await;
        let engine = common::open(dir.path(), vec![genesis.clone()], vec![]).await;
        Self { engine, id, dir, genesis }
    }

    fn caller(&self, who: &str) -> sealroom_engine::Caller {
        login(&self.engine, &self.id, who).unwrap()
    }

    async fn propose(&self, who: &str, base: u64, yaml: &str) -> Result<Proposal, Error> {
        self.engine.propose(&self.caller(who), base, contract(yaml), "add a computation").await
    }

    fn decide(&self, who: &str, proposal: &Proposal, verdict: &str) -> Result<Proposal, Error> {
        let signed = decision(&self.id, who, proposal, verdict);
        self.engine.decide(&self.caller(who), &proposal.id, verdict, &signed)
    }

    fn version(&self) -> u64 {
        self.engine.room_view(&self.caller("adv")).unwrap()["contract_version"].as_u64().unwrap()
    }

    fn computations(&self) -> Vec<String> {
        self.engine.computations(&self.caller("adv")).unwrap().into_iter().map(|c| c.name).collect()
    }

    fn events(&self) -> Vec<AuditEvent> {
        self.engine.audit_entries(&self.caller("aud")).unwrap().into_iter().map(|e| e.event).collect()
    }
}

/// `n` users with a hashed email each.
fn emails(n: usize) -> Vec<RecordBatch> {
    let ids: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    let col: Vec<String> = (0..n).map(|i| digest(&format!("u{i}@x.com"))).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("email", Arc::new(StringArray::from(col)) as ArrayRef),
    ]);
    vec![batch.unwrap()]
}

/// 20 CRM customers and 30 publisher users, the 20 in common.
async fn upload_both(room: &Room) {
    common::upload(&room.engine, "adv", "crm", emails(20)).await.unwrap();
    common::upload(&room.engine, "pub", "users", emails(30)).await.unwrap();
}

fn message(e: Error) -> String {
    e.to_string()
}

#[tokio::test]
async fn a_change_takes_effect_once_every_owner_it_touches_has_signed() {
    let room = Room::open(INTERACTIVE).await;
    let proposed = room_yaml(INTERACTIVE, 10, "", &joined_by_both());
    let p = room.propose("adv", 1, &proposed).await.unwrap();
    assert_eq!(p.state, ProposalState::Open);
    assert_eq!((p.base_version, p.version), (1, 2));
    assert_eq!(p.approvers, ["adv", "pub"]);
    assert_eq!(p.awaiting(), ["adv", "pub"]);
    assert!(p.changes.iter().any(|c| c.contains("'joined'")), "{:?}", p.changes);
    assert_eq!(room.engine.proposals(&room.caller("aud")).unwrap().len(), 1, "every participant reads proposals");

    // The auditor owns no data the change touches.
    let e = message(room.decide("aud", &p, "approve").unwrap_err());
    assert!(e.contains("owns no data") && e.contains("adv, pub"), "{e}");
    // A decision signed by somebody else's key.
    let forged = sign("adv", &decision_claims(&room.id, "pub", &p, "approve"));
    let e = room.engine.decide(&room.caller("pub"), &p.id, "approve", &forged).unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)) && e.to_string().contains("not an issuer key of 'pub'"), "{e}");
    // A decision about another contract.
    let mut wrong = decision_claims(&room.id, "pub", &p, "approve");
    wrong.contract_sha256 = "00".repeat(32);
    let e = message(room.engine.decide(&room.caller("pub"), &p.id, "approve", &sign("pub", &wrong)).unwrap_err());
    assert!(e.contains("approves contract 0000"), "{e}");
    // A participant token is not a decision; a rejection is not an approval.
    let e = message(room.engine.decide(&room.caller("pub"), &p.id, "approve", &token(&room.id, "pub")).unwrap_err());
    assert!(e.contains("not a sealroom decision"), "{e}");
    let e = message(
        room.engine
            .decide(&room.caller("pub"), &p.id, "approve", &decision(&room.id, "pub", &p, "reject"))
            .unwrap_err(),
    );
    assert!(e.contains("says `reject`"), "{e}");

    let after_adv = room.decide("adv", &p, "approve").unwrap();
    assert_eq!((after_adv.state, after_adv.awaiting()), (ProposalState::Open, vec!["pub".to_owned()]));
    assert!(!room.computations().contains(&"joined".to_owned()), "not in force before every approval");
    assert_eq!(room.version(), 1);

    let adopted = room.decide("pub", &p, "approve").unwrap();
    assert_eq!(adopted.state, ProposalState::Adopted);
    assert_eq!(room.version(), 2);
    assert!(room.computations().contains(&"joined".to_owned()));
    let view = room.engine.room_view(&room.caller("adv")).unwrap();
    assert_eq!(view["room_id"], room.id.as_str(), "the room id stays the first version's");
    assert_eq!(view["contract_sha256"], p.contract_sha256.as_str());

    // The new computation runs on the room's data.
    upload_both(&room).await;
    let released = common::run(&room.engine, "adv", "joined").await;
    assert_eq!(released.section("result").unwrap().rows().len(), 1);

    // The chain: created, two signed decisions, the version naming its predecessor.
    let events = room.events();
    let decided: Vec<&AuditEvent> = events.iter().filter(|e| matches!(e, AuditEvent::ProposalDecided { .. })).collect();
    assert_eq!(decided.len(), 2);
    for d in decided {
        let AuditEvent::ProposalDecided { participant, signature, .. } = d else { unreachable!() };
        let checked = sealroom_attest::token::verify_decision(signature, issuer(participant).public_key()).unwrap();
        assert_eq!(checked.contract_sha256, p.contract_sha256);
    }
    let adoption = events
        .iter()
        .find_map(|e| match e {
            AuditEvent::ContractVersionAdopted { version, previous_sha256, contract_sha256, approved_by, .. } => {
                Some((*version, previous_sha256.clone(), contract_sha256.clone(), approved_by.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(adoption, (2, room.id.clone(), p.contract_sha256.clone(), vec!["adv".to_owned(), "pub".to_owned()]));
    // An auditor replays it offline from the log and the first version; a forged or missing
    // approval does not replay.
    let entries = room.engine.audit_entries(&room.caller("aud")).unwrap();
    let replay = sealroom_engine::governance::verify_log(&entries, &room.genesis).unwrap();
    assert_eq!((replay.proposals, replay.decisions, replay.version), (1, 2, 2));
    let by_pub = |e: &sealroom_engine::audit::AuditEntry| matches!(&e.event, AuditEvent::ProposalDecided { participant, .. } if participant == "pub");
    let mut forged = entries.clone();
    for e in forged.iter_mut().filter(|e| by_pub(e)) {
        if let AuditEvent::ProposalDecided { signature, .. } = &mut e.event {
            *signature = sign("adv", &decision_claims(&room.id, "pub", &p, "approve"));
        }
    }
    let e = sealroom_engine::governance::verify_log(&forged, &room.genesis).unwrap_err();
    assert!(e.contains("not one of its keys"), "{e}");
    let missing: Vec<_> = entries.iter().filter(|e| !by_pub(e)).cloned().collect();
    let e = sealroom_engine::governance::verify_log(&missing, &room.genesis).unwrap_err();
    assert!(e.contains("without the approval of [\"pub\"]"), "{e}");
    let versions = room.engine.contract_versions(&room.caller("pub")).unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["previous_sha256"], versions[0]["contract_sha256"]);

    // A restart keeps the version in force; tokens for the room id keep working.
    let room = room.reopen().await;
    assert_eq!(room.version(), 2);
    assert!(room.computations().contains(&"joined".to_owned()));
    assert_eq!(room.engine.runs(&room.caller("adv"), "joined").unwrap().len(), 1);
    let e = message(room.decide("pub", &p, "approve").unwrap_err());
    assert!(e.contains("adopted"), "a decided proposal takes no more decisions: {e}");
}

#[tokio::test]
async fn a_proposal_against_an_old_version_is_refused_and_open_ones_are_superseded() {
    let room = Room::open(INTERACTIVE).await;
    let first = room.propose("adv", 1, &room_yaml(INTERACTIVE, 10, "", &joined_by_both())).await.unwrap();
    let lower_k = room.propose("pub", 1, &room_yaml(INTERACTIVE, 5, "", "")).await.unwrap();
    assert!(lower_k.changes[0].contains("10 → 5"), "{:?}", lower_k.changes);
    assert_eq!(lower_k.approvers, ["adv", "pub"], "k protects every owner's data");
    room.decide("adv", &first, "approve").unwrap();
    room.decide("pub", &first, "approve").unwrap();

    let listed = room.engine.proposals(&room.caller("adv")).unwrap();
    let states: Vec<ProposalState> = listed.iter().map(|p| p.state).collect();
    assert_eq!(states, [ProposalState::Adopted, ProposalState::Superseded]);
    let e = room.decide("adv", &lower_k, "approve").unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    assert!(e.to_string().contains("against contract version 1") && e.to_string().contains("at version 2"), "{e}");
    let e = message(room.propose("pub", 1, &room_yaml(INTERACTIVE, 5, "", &joined_by_both())).await.unwrap_err());
    assert!(e.contains("propose again against version 2"), "{e}");

    // Against the version in force it goes through, and k changes once both owners signed.
    let again = room.propose("pub", 2, &room_yaml(INTERACTIVE, 5, "", &joined_by_both())).await.unwrap();
    room.decide("pub", &again, "approve").unwrap();
    room.decide("adv", &again, "approve").unwrap();
    let view = room.engine.room_view(&room.caller("adv")).unwrap();
    assert_eq!((view["contract_version"].as_u64(), view["effective_k"].as_u64()), (Some(3), Some(5)));
}

#[tokio::test]
async fn a_rejection_closes_the_proposal_and_changes_nothing() {
    let room = Room::open(INTERACTIVE).await;
    let p = room.propose("adv", 1, &room_yaml(INTERACTIVE, 10, "", &joined_by_both())).await.unwrap();
    room.decide("adv", &p, "approve").unwrap();
    let rejected = room.decide("pub", &p, "reject").unwrap();
    assert_eq!(rejected.state, ProposalState::Rejected);
    assert_eq!(rejected.decisions.iter().find(|d| d.participant == "pub").unwrap().reason, "not this quarter");
    assert_eq!(room.version(), 1);
    let e = message(room.decide("pub", &p, "approve").unwrap_err());
    assert!(e.contains("rejected"), "{e}");
    assert!(
        room.events().iter().any(|e| matches!(e, AuditEvent::ProposalDecided { decision, .. } if decision == "reject"))
    );
}

#[tokio::test]
async fn an_immutable_room_and_forbidden_changes_are_refused_with_reasons() {
    let fixed = Room::open("{ interactive: false }").await;
    let e = fixed.propose("adv", 1, &room_yaml("{ interactive: false }", 10, "", &joined_by_both())).await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)) && e.to_string().contains("not interactive"), "{e}");

    let room = Room::open(INTERACTIVE).await;
    // Dropping the overlap and the interactive flag: both named.
    let text = room_yaml("{ interactive: false }", 10, "", "").replace(
        "  - name: overlap\n    overlap: { advertiser_table: crm, publisher_table: users }\n    run_by: [adv]\n    results_to: [adv]\n",
        "",
    );
    let e = message(room.propose("adv", 1, &text).await.unwrap_err());
    assert!(e.contains("computation 'overlap' is removed") && e.contains("`governance`"), "{e}");
    let e = message(room.propose("adv", 1, &room_yaml(INTERACTIVE, 10, "", "")).await.unwrap_err());
    assert!(e.contains("changes nothing"), "{e}");
    // A proposed contract that would not be hosted is refused as such.
    let bad = room_yaml(INTERACTIVE, 10, "", &sql("rows", "SELECT email FROM crm", "crm"));
    let e = room.propose("adv", 1, &bad).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest(_)) && e.to_string().contains("proposed contract is invalid"), "{e}");
    assert!(room.engine.proposals(&room.caller("adv")).unwrap().is_empty(), "nothing kept of refused proposals");
}

#[tokio::test]
async fn development_mode_adopts_own_data_computations_at_once_and_nothing_else() {
    const DEV: &str = "{ interactive: true, development_mode: true }";
    let room = Room::open(DEV).await;
    let own = room_yaml(DEV, 10, "", &sql("mine", "SELECT COUNT(*) AS n FROM crm", "crm"));
    let p = room.propose("adv", 1, &own).await.unwrap();
    assert!(p.development);
    assert_eq!(p.state, ProposalState::Adopted);
    assert!(p.decisions.is_empty(), "no approval needed");
    assert!(room.computations().contains(&"mine".to_owned()));
    let adopted = room
        .events()
        .into_iter()
        .any(|e| matches!(e, AuditEvent::ContractVersionAdopted { development: true, version: 2, .. }));
    assert!(adopted);

    // Over the publisher's data: its owner approves, development mode or not.
    let theirs = format!("{}{}", sql("mine", "SELECT COUNT(*) AS n FROM crm", "crm"), joined_by_both());
    let q = room.propose("adv", 2, &room_yaml(DEV, 10, "", &theirs)).await.unwrap();
    assert!(!q.development);
    assert_eq!((q.state, q.approvers.clone()), (ProposalState::Open, vec!["adv".to_owned(), "pub".to_owned()]));
    // The log replays: the development version needed no approval, and the open one is not adopted.
    let entries = room.engine.audit_entries(&room.caller("aud")).unwrap();
    let replay = sealroom_engine::governance::verify_log(&entries, &room.genesis).unwrap();
    assert_eq!((replay.proposals, replay.decisions, replay.version), (2, 0, 2));
}

#[tokio::test]
async fn a_participant_joins_and_a_credential_change_revokes_a_token() {
    let room = Room::open(INTERACTIVE).await;
    let agency = format!("  - {{ id: agency, name: Agency, roles: [auditor], credential: {} }}", credential("agency"));
    assert!(login(&room.engine, &room.id, "agency").is_err(), "not a participant yet");
    let p = room.propose("pub", 1, &room_yaml(INTERACTIVE, 10, &agency, "")).await.unwrap();
    assert_eq!(p.changes, ["participant 'agency' joins"]);
    assert_eq!(p.approvers, ["adv", "pub"]);
    room.decide("adv", &p, "approve").unwrap();
    room.decide("pub", &p, "approve").unwrap();
    let joined = login(&room.engine, &room.id, "agency").unwrap();
    assert!(room.engine.audit_entries(&joined).is_ok());

    // adv revokes one of its tokens: its own credential, so only adv signs.
    let kept =
        issuer("adv").mint_with_id("adv", std::slice::from_ref(&room.id), 3600, unix_now(), "dashboard").unwrap();
    assert!(room.engine.authenticate(&room.id, &kept).is_ok());
    let revoking = room_yaml(INTERACTIVE, 10, &agency, "").replace(
        &format!("credential: {} }}\n  - {{ id: pub", credential("adv")),
        &format!(
            "credential: {{ issuer_keys: [{}], revoked_token_ids: [dashboard] }} }}\n  - {{ id: pub",
            issuer("adv").public_key_base64()
        ),
    );
    let r = room.propose("adv", 2, &revoking).await.unwrap();
    assert_eq!(r.approvers, ["adv"]);
    room.decide("adv", &r, "approve").unwrap();
    let e = room.engine.authenticate(&room.id, &kept).unwrap_err().to_string();
    assert!(e.contains("revoked"), "{e}");
    assert!(room.engine.authenticate(&room.id, &token(&room.id, "adv")).is_ok(), "other tokens still work");
}

#[tokio::test]
async fn a_version_adopted_just_before_a_crash_is_audited_on_the_next_start() {
    let room = Room::open(INTERACTIVE).await;
    let p = room.propose("adv", 1, &room_yaml(INTERACTIVE, 10, "", &joined_by_both())).await.unwrap();
    room.decide("adv", &p, "approve").unwrap();
    // The log as it was when the version file was written and the crash came.
    let log = room.dir.path().join("rooms").join(&room.id).join("audit.jsonl");
    let before = std::fs::read(&log).unwrap();
    room.decide("pub", &p, "approve").unwrap();
    let room = {
        let Room { engine, id, dir, genesis } = room;
        engine.close().await;
        std::fs::write(&log, &before).unwrap();
        Room { engine: common::open(dir.path(), vec![genesis.clone()], vec![]).await, id, dir, genesis }
    };
    let adopted = |room: &Room| {
        room.events().iter().filter(|e| matches!(e, AuditEvent::ContractVersionAdopted { version: 2, .. })).count()
    };
    assert_eq!(room.version(), 2);
    assert_eq!(adopted(&room), 1, "the missing entry is appended");
    let room = room.reopen().await;
    assert_eq!(adopted(&room), 1, "and only once");
}

#[tokio::test]
async fn open_proposals_are_bounded() {
    let room = Room::open(INTERACTIVE).await;
    let max = sealroom_engine::governance::MAX_OPEN_PROPOSALS;
    for i in 0..max {
        room.propose("pub", 1, &room_yaml(INTERACTIVE, 11 + i as u32, "", "")).await.unwrap();
    }
    let e = room.propose("pub", 1, &room_yaml(INTERACTIVE, 5, "", "")).await.unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)) && e.to_string().contains("open proposals"), "{e}");
    // A rejection frees a place.
    let first = room.engine.proposals(&room.caller("adv")).unwrap().remove(0);
    room.decide("adv", &first, "reject").unwrap();
    room.propose("pub", 1, &room_yaml(INTERACTIVE, 5, "", "")).await.unwrap();
}

#[tokio::test]
async fn removing_a_version_file_to_roll_the_contract_back_is_refused() {
    let room = Room::open(INTERACTIVE).await;
    let p = room.propose("adv", 1, &room_yaml(INTERACTIVE, 10, "", &joined_by_both())).await.unwrap();
    room.decide("adv", &p, "approve").unwrap();
    room.decide("pub", &p, "approve").unwrap();
    let Room { engine, id, dir, genesis } = room;
    engine.close().await;
    let versions = dir.path().join("rooms").join(&id).join("governance").join("versions");
    std::fs::remove_file(versions.join("00000002.json")).unwrap();
    let e = common::try_open(dir.path(), vec![genesis], vec![]).await.unwrap_err().to_string();
    assert!(e.contains("records contract version 2") && e.contains("roll its contract back"), "{e}");
}

#[tokio::test]
async fn a_run_computed_under_another_k_is_not_released_under_the_new_one() {
    let room = Room::open(INTERACTIVE).await;
    upload_both(&room).await;
    let adv = room.caller("adv");
    room.engine.run(&adv, "overlap").await.unwrap();
    let p = room.propose("pub", 1, &room_yaml(INTERACTIVE, 25, "", "")).await.unwrap();
    room.decide("adv", &p, "approve").unwrap();
    room.decide("pub", &p, "approve").unwrap();
    let e = room.engine.release(&adv, "overlap", None, sealroom_engine::Channel::Rest).unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    assert!(e.to_string().contains("computed under k = 10") && e.to_string().contains("now 25"), "{e}");
    room.engine.run(&adv, "overlap").await.unwrap();
    let released = room.engine.release(&adv, "overlap", None, sealroom_engine::Channel::Rest).unwrap();
    assert_eq!(released.json()["k"], 25);
}
