//! The engine's public API: everything the server and the CLI may ask of it.
//!
//! Every method takes an authenticated [`Caller`] (made only by [`Engine::authenticate`]) and checks
//! the room's contract before doing anything. Results come back only as [`Released`] values; no
//! method returns rows.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use sealroom_attest::token;
use sealroom_connectors::{Sink, SinkRegistry};
use sealroom_proto::room::v1::{Role, RoomContract};
use sealroom_proto::validate::validate;
use sealroom_proto::{RoomFile, RoomId};
use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::AuditEntry;
use crate::error::{Error, Result};
use crate::governance::{Proposal, Terms};
use crate::ingest::{UploadLimits, UploadSession};
use crate::metrics::EngineMetrics;
use crate::release_gate::{Channel, Released, ReleasedModel};
use crate::room::{AudienceDelivery, Room, RunRecord, SectionShape};
use crate::tee::{Enclave, TeeMode};

/// The longest description a proposal may carry, in characters.
pub const MAX_PROPOSAL_DESCRIPTION: usize = 2000;

/// An activation sink of one participant.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkBinding {
    /// The participant whose results the sink receives.
    pub participant: String,
    /// Restrict the binding to one room (by id); `None` binds the participant in every room.
    pub room: Option<String>,
    /// The sink's configuration, with a `type` key (see `sealroom_connectors::SinkRegistry`).
    pub config: Value,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// The TEE and the enclave key generated in it at start.
    pub enclave: Enclave,
    pub limits: UploadLimits,
    pub sinks: Vec<SinkBinding>,
}

/// An authenticated participant of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    room_id: RoomId,
    participant: String,
}

impl Caller {
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    pub fn participant(&self) -> &str {
        &self.participant
    }
}

/// The status of a table's dataset, as a participant may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetStatus {
    pub table: String,
    pub owner: String,
    pub uploaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<String>,
    /// Only the owner sees its own row count, size and digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
}

/// A computation as a participant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputationView {
    pub name: String,
    pub kind: String,
    pub description: String,
    pub inputs: Vec<String>,
    pub run_by: Vec<String>,
    pub results_to: Vec<String>,
    pub deliver_to: Vec<String>,
    pub you_may_run: bool,
    pub you_may_read: bool,
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<String>,
}

/// The engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    rooms: BTreeMap<RoomId, Arc<Room>>,
    enclave: Enclave,
    limits: UploadLimits,
}

/// Checks the SQL computations of a contract the way hosting does: each query parsed, checked
/// against the rules of `computation::sql` (aggregates only, no identifiers out) and planned against
/// the tables' schemas. `sealroom room check` calls it too.
pub async fn check_sql(contract: &RoomContract) -> Result<()> {
    for (i, c) in contract.computations.iter().enumerate() {
        if let Some(sealroom_proto::room::v1::computation::Kind::Sql(spec)) = &c.kind {
            crate::computation::sql::plan(contract, spec).await.map_err(|e| {
                Error::Contract(format!(
                    "room '{}' has an invalid contract:\ncomputations[{i}].sql.query: {}",
                    contract.name,
                    e.to_string().trim_start_matches("sql: ")
                ))
            })?;
        }
    }
    Ok(())
}

/// Checks a contract the way hosting does: protobuf validation, the matching library's linkage
/// settings, and the SQL computations ([`check_sql`]).
pub async fn check_contract(contract: &RoomContract) -> Result<()> {
    validate(contract)
        .map_err(|e| Error::Contract(format!("room '{}' has an invalid contract:\n{e}", contract.name)))?;
    // What the protobuf validation cannot check: linkage settings are the matching library's.
    for (i, c) in contract.computations.iter().enumerate() {
        if let Some(o) = c.matching()
            && let Some(f) = &o.fuzzy
            && !f.settings_yaml.is_empty()
            && let Err(e) = sealroom_matching::fuzzy::Settings::from_yaml(&f.settings_yaml)
        {
            // An overlap's options sit at `overlap`, other kinds' at `<kind>.matching`.
            let at = match c.kind_name() {
                "overlap" => "overlap".to_owned(),
                kind => format!("{kind}.matching"),
            };
            return Err(Error::Contract(format!(
                "room '{}' has an invalid contract:\ncomputations[{i}].{at}.fuzzy.settings: {e}",
                contract.name
            )));
        }
    }
    check_sql(contract).await
}

impl Engine {
    /// Opens the engine on a data directory and hosts the given rooms: validates each contract, checks
    /// that it accepts this engine's TEE, recovers its storage and the contract version in force, and
    /// opens the activation sinks of that version's participants. Each contract is a room's first
    /// version: later versions come from the room's own (sealed) history.
    pub async fn open(config: EngineConfig, contracts: Vec<RoomContract>, metrics: Arc<EngineMetrics>) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::storage(&config.data_dir, e))?;
        let master = Arc::new(config.enclave.master_key(&config.data_dir)?);
        let registry = SinkRegistry::default();
        let mut rooms = BTreeMap::new();
        let mut bound: Vec<bool> = vec![false; config.sinks.len()];
        for contract in contracts {
            check_contract(&contract).await?;
            let id = contract.room_id();
            if rooms.contains_key(&id) {
                return Err(Error::Contract(format!("room {id} ('{}') is given twice", contract.name)));
            }
            if config.enclave.mode().is_insecure() && !contract.allows_simulated_tee() {
                return Err(Error::Contract(format!(
                    "room '{}' ({id}) does not accept the simulated TEE (attestation.allow_simulated is false), and \
                     this server runs in simulated mode; run it in a hardware enclave whose measurement the room \
                     accepts, or (for development only) set attestation.allow_simulated: true",
                    contract.name
                )));
            }
            let (enclave, checked) = (config.enclave.clone(), contract.clone());
            tokio::task::spawn_blocking(move || enclave.self_check(&checked))
                .await
                .map_err(|e| Error::Computation(format!("attestation self-check: {e}")))??;
            let data_dir = config.data_dir.clone();
            let enclave = config.enclave.clone();
            let m = metrics.clone();
            let master = master.clone();
            let mut room = tokio::task::spawn_blocking(move || Room::open(&data_dir, contract, &enclave, &master, m))
                .await
                .map_err(|e| Error::storage(&config.data_dir, e))??;
            let terms = room.terms();
            let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
            for (i, binding) in config.sinks.iter().enumerate() {
                if binding.room.as_ref().is_some_and(|r| r != id.as_str())
                    || terms.contract.participant(&binding.participant).is_none()
                {
                    continue;
                }
                let mut sink = registry
                    .build(&binding.config)
                    .map_err(|e| Error::Delivery(format!("sink of participant '{}': {e}", binding.participant)))?;
                sink.open()
                    .await
                    .map_err(|e| Error::Delivery(format!("sink of participant '{}': {e}", binding.participant)))?;
                sinks.insert(binding.participant.clone(), sink);
                bound[i] = true;
            }
            room.attach_sinks(sinks);
            if config.enclave.mode().is_insecure() {
                tracing::warn!(room = %id, "{}", crate::tee::SIMULATION_BANNER);
            }
            tracing::info!(room = %id, name = %terms.contract.name, version = terms.version, k = terms.k, "hosting room");
            rooms.insert(id, Arc::new(room));
        }
        if let Some(i) = bound.iter().position(|b| !b) {
            let b = &config.sinks[i];
            return Err(Error::Contract(format!(
                "a sink is configured for participant '{}'{}, but no hosted room has that participant",
                b.participant,
                b.room.as_ref().map(|r| format!(" in room {r}")).unwrap_or_default()
            )));
        }
        Ok(Self { inner: Arc::new(Inner { rooms, enclave: config.enclave, limits: config.limits }) })
    }

    pub fn tee(&self) -> TeeMode {
        self.inner.enclave.mode()
    }

    pub fn enclave(&self) -> &Enclave {
        &self.inner.enclave
    }

    /// Attestation evidence for a hosted room, fresh for `nonce_hex` (16 to 64 random bytes, hex),
    /// with the enclave's TLS certificate. Anyone may ask: it is what a participant checks before
    /// sending its credentials. Talks to the TEE device: call it off the async workers.
    pub fn attestation(&self, room_id: &str, nonce_hex: &str) -> Result<Value> {
        let room = self.room(&RoomId::parse(room_id).map_err(Error::InvalidRequest)?)?;
        let nonce = hex::decode(nonce_hex).ok().filter(|n| (16..=64).contains(&n.len())).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "nonce '{nonce_hex}' must be 16 to 64 random bytes in hex (32 to 128 hex characters)"
            ))
        })?;
        let evidence = self.inner.enclave.attest(room.id.as_str(), &nonce)?;
        Ok(json!({
            "room_id": room.id.as_str(),
            "tee": room.tee.describe(),
            "evidence": evidence.to_json(),
            "certificate_pem": self.inner.enclave.identity().certificate_pem(),
        }))
    }

    /// Ids of the hosted rooms.
    pub fn room_ids(&self) -> Vec<RoomId> {
        self.inner.rooms.keys().cloned().collect()
    }

    fn room(&self, id: &RoomId) -> Result<&Arc<Room>> {
        self.inner.rooms.get(id).ok_or_else(|| Error::NotFound(format!("no room {id} is hosted here")))
    }

    fn room_of(&self, caller: &Caller) -> Result<&Arc<Room>> {
        self.room(&caller.room_id)
    }

    /// Authenticates a participant token (a JWT signed by one of the participant's issuer keys, see
    /// `sealroom_attest::token`) as a participant of a room, at the current time.
    pub fn authenticate(&self, room_id: &str, token: &str) -> Result<Caller> {
        self.authenticate_at(room_id, token, token::unix_now())
    }

    /// [`Self::authenticate`] at the time `now` (seconds since the Unix epoch).
    pub fn authenticate_at(&self, room_id: &str, token: &str, now: u64) -> Result<Caller> {
        let id = RoomId::parse(room_id).map_err(Error::InvalidRequest)?;
        let room = self.room(&id)?;
        let kid = token::token_key_id(token).map_err(Error::Unauthenticated)?;
        Self::authenticate_in(&id, &room.terms(), token, &kid, now)
    }

    /// Checks a token whose header names the issuer key `kid` against a contract version of room `id`.
    fn authenticate_in(id: &RoomId, terms: &Terms, token: &str, kid: &str, now: u64) -> Result<Caller> {
        let Some(issuer) = terms.issuers.get(kid) else {
            return Err(Error::Unauthenticated(format!(
                "the token's issuer key (kid {kid}) is not in room {id}'s contract: the token is for another room, \
                 or the key was removed by a contract change"
            )));
        };
        let rules = token::TokenRules {
            room_id: id.as_str(),
            max_lifetime_seconds: u64::from(terms.contract.max_token_lifetime_seconds()),
            revoked: &issuer.revoked,
            now,
        };
        let claims = token::verify_token(token, &issuer.spki, &rules).map_err(Error::Unauthenticated)?;
        if claims.sub != issuer.participant {
            return Err(Error::Unauthenticated(format!(
                "the token names participant '{}' but is signed by an issuer key of '{}'",
                claims.sub, issuer.participant
            )));
        }
        Ok(Caller { room_id: id.clone(), participant: issuer.participant.clone() })
    }

    /// Every room membership of a participant token: the hosted rooms it authenticates in. When there
    /// is none, the error says why the token failed in the rooms it names.
    pub fn memberships(&self, token: &str) -> Result<Vec<Caller>> {
        let kid = token::token_key_id(token).map_err(Error::Unauthenticated)?;
        let now = token::unix_now();
        let mut first_error = None;
        let mut callers = Vec::new();
        for (id, room) in &self.inner.rooms {
            let terms = room.terms();
            if !terms.issuers.contains_key(&kid) {
                continue;
            }
            match Self::authenticate_in(id, &terms, token, &kid, now) {
                Ok(caller) => callers.push(caller),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            _ if !callers.is_empty() => Ok(callers),
            Some(e) => Err(e),
            None => Err(Error::Unauthenticated(format!(
                "the token's issuer key (kid {kid}) is in no hosted room's contract"
            ))),
        }
    }

    /// The room as its participants see it: the contract (as JSON), the room id, the effective k,
    /// the TEE, and each participant's roles.
    pub fn room_view(&self, caller: &Caller) -> Result<Value> {
        let room = self.room_of(caller)?;
        let terms = room.terms();
        let c = &terms.contract;
        let participants: Vec<Value> = c
            .participants
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "name": p.name,
                    "roles": p.roles().map(Role::file_name).collect::<Vec<_>>(),
                    "data_owner_of": c.tables_owned_by(&p.id).map(|t| t.name.as_str()).collect::<Vec<_>>(),
                    "analyst_of": c.computations.iter().filter(|x| x.may_run(&p.id)).map(|x| x.name.as_str()).collect::<Vec<_>>(),
                    "reads_results_of": c.computations.iter().filter(|x| x.may_read(&p.id)).map(|x| x.name.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({
            "room_id": room.id.as_str(),
            "name": c.name,
            "you": caller.participant,
            "effective_k": terms.k,
            // The contract version in force; the room id stays the first version's.
            "contract_version": terms.version,
            "contract_sha256": terms.contract_sha256,
            "interactive": c.is_interactive(),
            "development_mode": c.in_development_mode(),
            "tee": room.tee.describe(),
            "participants": participants,
            // The caller's own ε budget (rooms with differential privacy; null otherwise).
            "privacy_budget": room.budget(&caller.participant)?,
            "contract": RoomFile::from_contract(c),
        }))
    }

    /// The status of every table's dataset (never its contents).
    pub fn datasets(&self, caller: &Caller) -> Result<Vec<DatasetStatus>> {
        let room = self.room_of(caller)?;
        Ok(room
            .terms()
            .contract
            .tables
            .iter()
            .map(|t| {
                let file = room.dataset(&t.name);
                let own = t.owner == caller.participant;
                let m = file.as_ref().map(|f| &f.manifest);
                DatasetStatus {
                    table: t.name.clone(),
                    owner: t.owner.clone(),
                    uploaded: m.is_some(),
                    version: m.map(|m| m.version.clone()),
                    uploader: m.map(|m| m.uploader.clone()),
                    committed_at: m.map(|m| m.committed_at.clone()),
                    rows: m.filter(|_| own).map(|m| m.rows),
                    bytes: m.filter(|_| own).map(|m| m.bytes),
                    data_sha256: m.filter(|_| own).map(|m| m.data_sha256.clone()),
                }
            })
            .collect())
    }

    /// Tables the caller owns.
    pub fn owned_tables(&self, caller: &Caller) -> Result<Vec<String>> {
        let room = self.room_of(caller)?;
        Ok(room.terms().contract.tables_owned_by(&caller.participant).map(|t| t.name.clone()).collect())
    }

    /// The Arrow schema the engine stores a table in (and the simplest one to upload), for its owner.
    pub fn upload_schema(&self, caller: &Caller, table: &str) -> Result<arrow::datatypes::SchemaRef> {
        let room = self.room_of(caller)?;
        let terms = room.terms();
        let t = terms
            .contract
            .table(table)
            .ok_or_else(|| Error::NotFound(format!("room {} has no table '{table}'", room.id)))?;
        let schema = crate::schema::stored_schema(t);
        let fields: Vec<_> =
            schema.fields().iter().filter(|f| f.name() != crate::schema::ROW_ID_COLUMN).cloned().collect();
        Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(fields)))
    }

    /// Starts an upload of a table; only its owner may.
    pub fn begin_upload(&self, caller: &Caller, table: &str) -> Result<UploadSession> {
        let room = self.room_of(caller)?;
        let terms = room.terms();
        let t = terms.contract.table(table).ok_or_else(|| {
            Error::NotFound(format!(
                "room {} has no table '{table}' (tables: {})",
                room.id,
                terms.contract.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if t.owner != caller.participant {
            return Err(Error::PermissionDenied(format!(
                "participant '{}' may not upload table '{table}': the contract names '{}' as its owner",
                caller.participant, t.owner
            )));
        }
        Ok(UploadSession::new(room.clone(), caller.participant.clone(), t.clone(), self.inner.limits))
    }

    /// The computations of the room, with what the caller may do with each.
    pub fn computations(&self, caller: &Caller) -> Result<Vec<ComputationView>> {
        let room = self.room_of(caller)?;
        Ok(room
            .terms()
            .contract
            .computations
            .iter()
            .map(|c| {
                let runs = room.runs(&c.name);
                ComputationView {
                    name: c.name.clone(),
                    kind: c.kind_name().to_owned(),
                    description: c.description.clone(),
                    inputs: c.input_tables().into_iter().map(str::to_owned).collect(),
                    run_by: c.run_by.clone(),
                    results_to: c.results_to.clone(),
                    deliver_to: c.deliver_to.clone(),
                    you_may_run: c.may_run(&caller.participant),
                    you_may_read: c.may_read(&caller.participant),
                    runs: runs.len(),
                    latest_run: runs.last().map(|r| r.run_id.clone()),
                }
            })
            .collect())
    }

    /// A computation of a contract version of `room`, or which ones there are.
    fn computation<'a>(room: &Room, terms: &'a Terms, name: &str) -> Result<&'a sealroom_proto::room::v1::Computation> {
        terms.contract.computation(name).ok_or_else(|| {
            Error::NotFound(format!(
                "room {} has no computation '{name}' (computations: {})",
                room.id,
                terms.contract.computations.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Runs a computation; only the participants in its `run_by` may.
    pub async fn run(&self, caller: &Caller, computation: &str) -> Result<RunRecord> {
        let room = self.room_of(caller)?.clone();
        // One contract version for the whole run.
        let terms = room.terms();
        let c = Self::computation(&room, &terms, computation)?;
        if !c.may_run(&caller.participant) {
            return Err(Error::PermissionDenied(format!(
                "participant '{}' may not run computation '{computation}' (run_by: {})",
                caller.participant,
                c.run_by.join(", ")
            )));
        }
        room.run(&terms, &caller.participant, c).await
    }

    /// The runs of a computation (records only), oldest first; for those who may run or read it.
    pub fn runs(&self, caller: &Caller, computation: &str) -> Result<Vec<RunRecord>> {
        let room = self.room_of(caller)?;
        let terms = room.terms();
        let c = Self::computation(room, &terms, computation)?;
        if !c.may_run(&caller.participant) && !c.may_read(&caller.participant) {
            return Err(self.read_denied(caller, c));
        }
        Ok(room.runs(computation))
    }

    fn read_denied(&self, caller: &Caller, c: &sealroom_proto::room::v1::Computation) -> Error {
        Error::PermissionDenied(format!(
            "participant '{}' may not read the results of computation '{}' (results_to: {})",
            caller.participant,
            c.name,
            c.results_to.join(", ")
        ))
    }

    fn readable_run(
        &self,
        caller: &Caller,
        computation: &str,
        run_id: Option<&str>,
    ) -> Result<(&Arc<Room>, RunRecord)> {
        let room = self.room_of(caller)?;
        let terms = room.terms();
        let c = Self::computation(room, &terms, computation)?;
        if !c.may_read(&caller.participant) {
            return Err(self.read_denied(caller, c));
        }
        Ok((room, Self::run_of(room, computation, run_id)?))
    }

    /// A run of a computation: the latest when `run_id` is `None` or `latest`.
    fn run_of(room: &Room, computation: &str, run_id: Option<&str>) -> Result<RunRecord> {
        let mut runs = room.runs(computation);
        match run_id {
            None | Some("latest") => runs.pop().ok_or_else(|| {
                Error::NotFound(format!("computation '{computation}' has not run yet; run it first (POST …/runs)"))
            }),
            Some(id) => runs
                .into_iter()
                .find(|r| r.run_id == id)
                .ok_or_else(|| Error::NotFound(format!("computation '{computation}' has no run '{id}'"))),
        }
    }

    /// A lookalike computation of the caller's room, or why the name is not one.
    fn lookalike(&self, room: &Room, computation: &str) -> Result<sealroom_proto::room::v1::LookalikeComputation> {
        let terms = room.terms();
        let c = Self::computation(room, &terms, computation)?;
        c.lookalike().cloned().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "computation '{computation}' is {} computation, not a lookalike: it has no model or audience",
                match c.kind_name() {
                    k @ ("overlap" | "affinity") => format!("an {k}"),
                    k => format!("a {k}"),
                }
            ))
        })
    }

    /// Releases a lookalike run's trained model (the latest run when `run_id` is `None`) to the
    /// caller, who must be in the contract's `model_to`, through the gate.
    pub fn release_model(
        &self,
        caller: &Caller,
        computation: &str,
        run_id: Option<&str>,
        channel: Channel,
    ) -> Result<ReleasedModel> {
        let room = self.room_of(caller)?;
        let spec = self.lookalike(room, computation)?;
        if !spec.model_to.contains(&caller.participant) {
            return Err(Error::PermissionDenied(if spec.model_to.is_empty() {
                format!("the contract releases the model of '{computation}' to nobody: it never leaves the engine")
            } else {
                format!(
                    "participant '{}' may not receive the model of '{computation}' (model_to: {})",
                    caller.participant,
                    spec.model_to.join(", ")
                )
            }));
        }
        let run = Self::run_of(room, computation, run_id)?;
        room.release_model(computation, &run.run_id, &caller.participant, &channel)
    }

    /// Releases the top `size` users of a lookalike run's ranking (the latest run when `run_id` is
    /// `None`) to the caller, who must be the contract's `audience_to`, and delivers them to the
    /// caller's activation sink.
    pub async fn deliver_audience(
        &self,
        caller: &Caller,
        computation: &str,
        run_id: Option<&str>,
        size: u64,
    ) -> Result<AudienceDelivery> {
        let room = self.room_of(caller)?.clone();
        let spec = self.lookalike(&room, computation)?;
        if spec.audience_to != caller.participant {
            return Err(Error::PermissionDenied(if spec.audience_to.is_empty() {
                format!("the contract lets no one take an audience from '{computation}'")
            } else {
                format!(
                    "participant '{}' may not take the audience of '{computation}': only '{}', whose users it lists, may",
                    caller.participant, spec.audience_to
                )
            }));
        }
        let run = Self::run_of(&room, computation, run_id)?;
        room.deliver_audience(computation, &run.run_id, &run.run_by, &caller.participant, size, spec.max_audience).await
    }

    /// Releases a run's result (the latest when `run_id` is `None` or `latest`) to the caller,
    /// through the release gate, auditing the release.
    pub fn release(
        &self,
        caller: &Caller,
        computation: &str,
        run_id: Option<&str>,
        channel: Channel,
    ) -> Result<Released> {
        let (room, run) = self.readable_run(caller, computation, run_id)?;
        room.release(computation, &run.run_id, &caller.participant, &channel)
    }

    /// The names, schemas and row counts of a run's result sections, for those who may read it.
    /// Nothing here is a value of the result.
    pub fn section_shapes(
        &self,
        caller: &Caller,
        computation: &str,
        run_id: Option<&str>,
    ) -> Result<Vec<SectionShape>> {
        let (room, run) = self.readable_run(caller, computation, run_id)?;
        room.section_shapes(computation, &run.run_id)
    }

    /// The room's audit log, verified. Every participant may read it: it holds digests and counts,
    /// never data.
    pub fn audit_entries(&self, caller: &Caller) -> Result<Vec<AuditEntry>> {
        self.room_of(caller)?.audit.entries()
    }

    /// Whether a participant of a room has an activation sink on this server.
    pub fn has_sink(&self, caller: &Caller) -> bool {
        self.room_of(caller).is_ok_and(|r| r.has_sink(&caller.participant))
    }

    /// The deals the caller is the publisher or the advertiser of (see [`crate::deal`]).
    pub fn deals(&self, caller: &Caller) -> Result<Vec<crate::deal::DealRecord>> {
        self.room_of(caller)?.deals(&caller.participant)
    }

    /// Proposes `contract` as the next version of the caller's room, against version `base_version`
    /// (see [`crate::governance`]). The contract is checked the way hosting checks one; the proposal
    /// names what it changes and who must approve it, or is adopted at once under development mode.
    pub async fn propose(
        &self,
        caller: &Caller,
        base_version: u64,
        contract: RoomContract,
        description: &str,
    ) -> Result<Proposal> {
        let room = self.room_of(caller)?.clone();
        if description.chars().count() > MAX_PROPOSAL_DESCRIPTION {
            return Err(Error::InvalidRequest(format!(
                "the proposal's description is over {MAX_PROPOSAL_DESCRIPTION} characters; shorten it"
            )));
        }
        check_contract(&contract).await.map_err(|e| match e {
            Error::Contract(m) => Error::InvalidRequest(format!("the proposed contract is invalid: {m}")),
            e => e,
        })?;
        // Sealed writes and an audit entry (fsync): off the async workers.
        let (proposer, description) = (caller.participant.clone(), description.to_owned());
        tokio::task::spawn_blocking(move || room.propose(&proposer, base_version, contract, &description))
            .await
            .map_err(|e| Error::Computation(format!("proposal: {e}")))?
    }

    /// Records the caller's signed decision on a proposal: `verdict` (`approve` or `reject`) must be
    /// what the signed decision says. Adopts the proposal when it was the last approval needed.
    pub fn decide(&self, caller: &Caller, proposal: &str, verdict: &str, signed: &str) -> Result<Proposal> {
        self.room_of(caller)?.decide(&caller.participant, proposal, verdict, signed)
    }

    /// Every proposal of the caller's room, oldest first (every participant sees them all: each may
    /// read the contract they would make).
    pub fn proposals(&self, caller: &Caller) -> Result<Vec<Proposal>> {
        self.room_of(caller)?.proposals()
    }

    /// One proposal of the caller's room.
    pub fn proposal(&self, caller: &Caller, id: &str) -> Result<Proposal> {
        self.room_of(caller)?.proposal(id)
    }

    /// The contract versions of the caller's room, first to current: version, digest, the digest of
    /// the version before, the proposal that made it and when.
    pub fn contract_versions(&self, caller: &Caller) -> Result<Vec<Value>> {
        let room = self.room_of(caller)?;
        let mut all = vec![json!({
            "version": 1,
            "contract_sha256": room.id.as_str(),
            "note": "the contract the room was created with; its digest is the room id",
        })];
        all.extend(room.versions()?.into_iter().map(|v| {
            json!({
                "version": v.version,
                "contract_sha256": v.contract_sha256,
                "previous_sha256": v.previous_sha256,
                "proposal_id": v.proposal_id,
                "adopted_at": v.adopted_at,
            })
        }));
        Ok(all)
    }

    /// The caller's kept activations (see [`crate::outbox`]): pending, delivered on a retry, or
    /// failed for good, oldest first.
    pub fn activations(&self, caller: &Caller) -> Result<Vec<crate::outbox::ActivationView>> {
        self.room_of(caller)?.activations(&caller.participant)
    }

    /// Retries every pending activation that is due; returns how many were attempted. The server
    /// calls it periodically.
    pub async fn retry_activations(&self) -> usize {
        self.retry_activations_at(token::unix_now()).await
    }

    /// [`Self::retry_activations`] at the time `now` (seconds since the Unix epoch).
    pub async fn retry_activations_at(&self, now: u64) -> usize {
        let mut attempted = 0;
        for (id, room) in &self.inner.rooms {
            match room.retry_activations(now).await {
                Ok(n) => attempted += n,
                Err(e) => tracing::warn!(room = %id, error = %e, "retrying kept activations failed"),
            }
        }
        attempted
    }

    /// Flushes and closes activation sinks. Call after the servers stopped accepting requests.
    pub async fn close(&self) {
        for room in self.inner.rooms.values() {
            room.close().await;
        }
    }
}
