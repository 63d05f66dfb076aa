//! One hosted room: its contract, storage, audit log, datasets, runs and activation sinks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sealroom_connectors::{Delivery, DeliveryMetadata, Sink};
use sealroom_proto::RoomId;
use sealroom_proto::room::v1::{Computation, RoomContract};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditLog, InputVersion};
use crate::computation::lookalike::Artifacts;
use crate::computation::{self, InputTable};
use crate::deal::DealRecord;
use crate::dp::BudgetLedger;
use crate::error::{Error, Result};
use crate::governance::Terms;
use crate::metrics::EngineMetrics;
use crate::outbox::{self, ActivationState, ActivationView, PendingActivation};
use crate::release_gate::{Channel, ReleaseGate, Released, ReleasedModel, RunRef};
use crate::report::ComputedReport;
use crate::seal::MasterKey;
use crate::storage::{DatasetFile, RoomStorage, new_id};
use crate::tee::{Enclave, TeeMode};

/// What became of a release sent to a sink.
enum Sent {
    /// The sink took it; where it put it.
    Delivered(String),
    /// The sink could not take it yet: kept as activation `id` and retried.
    Kept { id: String, error: Error },
}

/// A delivery to a sink that did not succeed.
pub(crate) struct SinkFailure {
    pub error: Error,
    /// The destination may get over it: the activation is kept and retried.
    pub retriable: bool,
}

/// What happened to one activation delivery of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub recipient: String,
    /// `delivered`, `pending` (kept and retried: see the message), `failed`, or `no_sink` (no sink
    /// is configured for the recipient on this server).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A lookalike audience delivered to the publisher's activation sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceDelivery {
    pub recipient: String,
    pub run_id: String,
    /// Users released.
    pub audience: u64,
    /// The deal made for this audience (`GET /v1/rooms/{room}/deals`).
    pub deal_id: String,
    /// `delivered`, or `pending`: the sink could not take it yet; it is kept and retried as
    /// `activation_id` (see `GET /v1/rooms/{room}/activations`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<String>,
    /// Where the sink put them (or why it is pending).
    pub location: String,
    /// SHA-256 of the released audience, as audited.
    pub release_digest: String,
    /// The audit entry of the release.
    pub audit_seq: u64,
}

/// The shape of a result section: what a reader may know before the result is released.
#[derive(Debug, Clone)]
pub struct SectionShape {
    pub run_id: String,
    pub name: String,
    pub schema: arrow::datatypes::SchemaRef,
    /// Number of rows (for example, of segments); never a count of individuals.
    pub rows: usize,
}

/// The record of a computation run (no results: those leave only through the release gate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub computation: String,
    pub kind: String,
    pub run_by: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub inputs: Vec<InputVersion>,
    pub sections: Vec<String>,
    pub deliveries: Vec<DeliveryRecord>,
}

#[derive(Debug, Deserialize)]
struct RunFile {
    record: RunRecord,
    report: ComputedReport,
}

/// A [`RunFile`] to write, borrowed (the report is not copied to be serialized).
#[derive(Serialize)]
struct RunFileRef<'a> {
    record: &'a RunRecord,
    report: &'a ComputedReport,
}

/// An issuer key of the contract: the participant it belongs to, the token ids that participant's
/// credential revokes, and the key's DER SubjectPublicKeyInfo.
pub(crate) struct Issuer {
    pub participant: String,
    pub revoked: Vec<String>,
    pub spki: Vec<u8>,
}

pub(crate) struct Room {
    /// The id of the room's first contract version; it stays the room's id through later versions.
    pub id: RoomId,
    /// The contract version in force (replaced whole when a proposal is adopted).
    terms: std::sync::RwLock<Arc<Terms>>,
    /// Held while a proposal is made or decided, so two decisions cannot adopt two versions.
    pub(crate) governance_lock: Mutex<()>,
    pub tee: TeeMode,
    pub storage: RoomStorage,
    pub audit: AuditLog,
    pub metrics: Arc<EngineMetrics>,
    datasets: Mutex<HashMap<String, Arc<DatasetFile>>>,
    runs: Mutex<HashMap<String, Vec<RunRecord>>>,
    /// What is known of each kept activation (`activations/<id>.json` holds its rows too), by id
    /// (ids start with their creation time): listing and choosing what to retry read no file.
    activations: Mutex<BTreeMap<String, ActivationView>>,
    sinks: HashMap<String, tokio::sync::Mutex<Box<dyn Sink>>>,
    /// Held from loading a computation's state to saving it, so two runs that keep state cannot
    /// overwrite each other's additions.
    state_lock: tokio::sync::Mutex<()>,
    /// Held while the privacy budget ledger is read and rewritten.
    budget_lock: Mutex<()>,
}

/// The name of the privacy budget ledger among the room's state files (no computation may take it:
/// computation names cannot start with '_').
const PRIVACY_BUDGET: &str = "_privacy_budget";

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("id", &self.id).field("name", &self.terms().contract.name).finish()
    }
}

/// Why a computation cannot run yet: one of its input tables has no data.
fn not_uploaded(terms: &Terms, computation: &Computation, table: &str) -> Error {
    let owner = terms.contract.table(table).map(|t| t.owner.as_str()).unwrap_or("?");
    Error::FailedPrecondition(format!(
        "table '{table}' (owner: {owner}) has not been uploaded yet; computation '{}' needs: {}",
        computation.name,
        computation.input_tables().join(", ")
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their maps inconsistent (every update is a
    // single insert), so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Room {
    /// Opens a room created with the contract `genesis` (its first version): recovers its storage and
    /// the contract version in force, and audits that it is hosted. Sinks come next
    /// ([`Self::attach_sinks`]), bound to the participants of the version in force.
    pub(crate) fn open(
        data_dir: &Path,
        genesis: RoomContract,
        enclave: &Enclave,
        master: &MasterKey,
        metrics: Arc<EngineMetrics>,
    ) -> Result<Self> {
        let id = genesis.room_id();
        let storage = RoomStorage::open(data_dir, id.as_str(), &genesis.canonical_bytes(), master)?;
        let audit = AuditLog::open(&storage.audit_path(), id.as_str(), enclave)?;
        let room = Self {
            id,
            terms: std::sync::RwLock::new(Arc::new(Terms::new(genesis.clone(), 1))),
            governance_lock: Mutex::new(()),
            tee: enclave.mode(),
            storage,
            audit,
            metrics,
            datasets: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
            activations: Mutex::new(BTreeMap::new()),
            sinks: HashMap::new(),
            state_lock: tokio::sync::Mutex::new(()),
            budget_lock: Mutex::new(()),
        };
        room.install_terms(room.load_terms(genesis)?);
        let audited = room.check_versions_against_audit()?;
        // Hosting first: it introduces the enclave key that signs every entry after it.
        let terms = room.terms();
        room.audit.append_hosting(&terms.contract.name, terms.k)?;
        room.recover_adoptions(&audited)?;
        let terms = room.terms();
        for table in &terms.contract.tables {
            if let Some(file) = room.storage.load_dataset(&table.name)? {
                lock(&room.datasets).insert(table.name.clone(), Arc::new(file));
            }
        }
        for computation in &terms.contract.computations {
            let files: Vec<RunFile> = room.storage.sealer().read_json_dir(&room.storage.runs_dir(&computation.name))?;
            let mut records: Vec<RunRecord> = files.into_iter().map(|f| f.record).collect();
            records.sort_by(|a, b| a.run_id.cmp(&b.run_id));
            lock(&room.runs).insert(computation.name.clone(), records);
        }
        let kept: Vec<PendingActivation> = room.storage.sealer().read_json_dir(&room.storage.activations_dir())?;
        lock(&room.activations).extend(kept.into_iter().map(|k| (k.view.id.clone(), k.view)));
        Ok(room)
    }

    /// The activation sinks of the room's participants (before the room is shared).
    pub(crate) fn attach_sinks(&mut self, sinks: HashMap<String, Box<dyn Sink>>) {
        self.sinks = sinks.into_iter().map(|(p, s)| (p, tokio::sync::Mutex::new(s))).collect();
    }

    /// The contract version in force.
    pub(crate) fn terms(&self) -> Arc<Terms> {
        // Replacing the Arc is a single store: a poisoned lock still holds a whole version.
        self.terms.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn install_terms(&self, terms: Terms) {
        *self.terms.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(terms);
    }

    pub(crate) fn dataset(&self, table: &str) -> Option<Arc<DatasetFile>> {
        lock(&self.datasets).get(table).cloned()
    }

    /// Makes a committed version current; the one it replaces is deleted when no run reads it.
    pub(crate) fn install_dataset(&self, file: DatasetFile) {
        let previous = lock(&self.datasets).insert(file.manifest.table.clone(), Arc::new(file));
        if let Some(previous) = previous {
            previous.supersede();
        }
    }

    pub(crate) fn runs(&self, computation: &str) -> Vec<RunRecord> {
        lock(&self.runs).get(computation).cloned().unwrap_or_default()
    }

    pub(crate) fn has_sink(&self, participant: &str) -> bool {
        self.sinks.contains_key(participant)
    }

    /// The release gate under a contract version (its k).
    fn gate<'a>(&'a self, terms: &'a Terms) -> ReleaseGate<'a> {
        ReleaseGate {
            k: terms.k,
            room_id: self.id.as_str(),
            room_name: &terms.contract.name,
            tee: self.tee,
            audit: &self.audit,
            metrics: &self.metrics,
        }
    }

    /// Runs a computation under one contract version (`terms`, taken once for the whole run), keeps
    /// its result inside the engine, and delivers it to the activation sinks of the participants the
    /// contract names.
    pub(crate) async fn run(&self, terms: &Terms, participant: &str, computation: &Computation) -> Result<RunRecord> {
        let started = Instant::now();
        let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // What the room cannot run, inputs not uploaded yet and a spent budget are refused before
        // any ε is charged; once charged, a run that fails is not refunded (whether it fails could
        // depend on the data).
        let outcome = async {
            computation::check_runnable(&terms.contract, computation)?;
            self.inputs_present(terms, computation)?;
            self.charge_budget(terms, computation)?;
            self.compute(terms, computation).await
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.run_finished(&computation.name, outcome.is_ok(), seconds);
        let (computed, inputs) = match outcome {
            Ok(v) => v,
            Err(e) => {
                self.audit.append(AuditEvent::ComputationFailed {
                    participant: participant.to_owned(),
                    computation: computation.name.clone(),
                    reason: e.to_string(),
                })?;
                return Err(e);
            }
        };
        let (sections, noise) = (computed.sections, computed.noise);
        let run_id = new_id("r");
        // Kept before the run is recorded, so a recorded run always has them.
        if let Some(artifacts) = &computed.artifacts {
            self.storage.sealer().write_json_atomically(&self.artifacts_path(&computation.name, &run_id), artifacts)?;
        }
        let report = ComputedReport {
            computation: computation.name.clone(),
            kind: computation.kind_name().to_owned(),
            run_id: run_id.clone(),
            computed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            sections,
            k: terms.k,
            noise,
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut record = RunRecord {
            run_id: run_id.clone(),
            computation: computation.name.clone(),
            kind: report.kind.clone(),
            run_by: participant.to_owned(),
            started_at,
            finished_at: report.computed_at.clone(),
            duration_ms,
            inputs: inputs.clone(),
            sections: report.sections.iter().map(|s| s.name.clone()).collect(),
            deliveries: Vec::new(),
        };
        self.audit.append(AuditEvent::ComputationRun {
            participant: participant.to_owned(),
            computation: computation.name.clone(),
            run_id: run_id.clone(),
            inputs,
            duration_ms,
        })?;
        self.save_run(&record, &report)?;
        lock(&self.runs).entry(computation.name.clone()).or_default().push(record.clone());
        for recipient in &computation.deliver_to {
            let delivery = self.deliver(terms, &report, recipient, participant).await;
            record.deliveries.push(delivery);
        }
        if !record.deliveries.is_empty() {
            self.save_run(&record, &report)?;
            if let Some(r) =
                lock(&self.runs).get_mut(&computation.name).and_then(|v| v.iter_mut().find(|r| r.run_id == run_id))
            {
                *r = record.clone();
            }
        }
        tracing::info!(room = %self.id, computation = %computation.name, run = %run_id, duration_ms, "computation ran");
        Ok(record)
    }

    /// The budget ledger of a differentially private room.
    fn ledger(&self, terms: &Terms) -> Option<(BudgetLedger, u64)> {
        terms.contract.differential_privacy().map(|dp| {
            (
                BudgetLedger::new(
                    self.storage.state_path(PRIVACY_BUDGET),
                    self.storage.sealer().clone(),
                    dp.budget_per_participant_micro,
                ),
                dp.epsilon_per_run_micro,
            )
        })
    }

    /// Fails, naming them, when input tables are not uploaded yet (checked before any ε is spent).
    fn inputs_present(&self, terms: &Terms, computation: &Computation) -> Result<()> {
        match computation.input_tables().into_iter().find(|t| self.dataset(t).is_none()) {
            Some(table) => Err(not_uploaded(terms, computation, table)),
            None => Ok(()),
        }
    }

    /// Charges one run's ε to every recipient of the computation's results, before it runs (rooms
    /// without differential privacy: nothing).
    fn charge_budget(&self, terms: &Terms, computation: &Computation) -> Result<()> {
        let Some((ledger, cost)) = self.ledger(terms) else {
            return Ok(());
        };
        let _guard = lock(&self.budget_lock);
        let spent = ledger.charge(&computation.results_to, cost, &computation.name)?;
        self.audit.append(AuditEvent::PrivacyBudgetCharged {
            computation: computation.name.clone(),
            participants: computation.results_to.clone(),
            epsilon_micro: cost,
            spent_micro: computation
                .results_to
                .iter()
                .map(|p| (p.clone(), spent.spent_micro.get(p).copied().unwrap_or(0)))
                .collect(),
        })?;
        Ok(())
    }

    /// A participant's privacy budget (`None` in rooms without differential privacy).
    pub(crate) fn budget(&self, participant: &str) -> Result<Option<crate::dp::BudgetView>> {
        match self.ledger(&self.terms()) {
            None => Ok(None),
            Some((ledger, per_run)) => ledger.view(participant, per_run).map(Some),
        }
    }

    async fn compute(
        &self,
        terms: &Terms,
        computation: &Computation,
    ) -> Result<(computation::Computed, Vec<InputVersion>)> {
        let mut files = Vec::new();
        for table in computation.input_tables() {
            let file = self.dataset(table).ok_or_else(|| not_uploaded(terms, computation, table))?;
            files.push((table.to_owned(), file));
        }
        let inputs: Vec<InputVersion> =
            files.iter().map(|(t, f)| InputVersion { table: t.clone(), version: f.manifest.version.clone() }).collect();
        let loaded = tokio::task::spawn_blocking(move || -> Result<HashMap<String, InputTable>> {
            let mut tables = HashMap::new();
            for (name, file) in files {
                let batches = file.read()?;
                let schema = batches
                    .first()
                    .map(|b| b.schema())
                    .ok_or_else(|| Error::storage(&file.path, "dataset file has no batches"))?;
                tables.insert(name, InputTable { schema, batches });
            }
            Ok(tables)
        })
        .await
        .map_err(|e| Error::Computation(format!("loading inputs failed: {e}")))??;
        let state_path = self.storage.state_path(&computation.name);
        let keeps_state = matches!(computation.kind, Some(sealroom_proto::room::v1::computation::Kind::Measurement(_)));
        let _state_guard = if keeps_state { Some(self.state_lock.lock().await) } else { None };
        let state: computation::State =
            self.storage.sealer().read_json_if_exists(&state_path)?.unwrap_or_else(computation::State::new);
        let computed = computation::run(&terms.contract, computation, &loaded, state).await?;
        // Kept before the run is recorded: a crash in between leaves state that includes a run
        // with no record, which a re-run on the same data merges into without change.
        if let Some(state) = &computed.state {
            self.storage.sealer().write_json_atomically(&state_path, state)?;
        }
        Ok((computed, inputs))
    }

    fn run_path(&self, computation: &str, run_id: &str) -> std::path::PathBuf {
        self.storage.runs_dir(computation).join(format!("{run_id}.json"))
    }

    /// A lookalike run's model and ranking (`.artifacts`, not `.json`: not a run file).
    fn artifacts_path(&self, computation: &str, run_id: &str) -> std::path::PathBuf {
        self.storage.runs_dir(computation).join(format!("{run_id}.artifacts"))
    }

    fn load_artifacts(&self, computation: &str, run_id: &str) -> Result<Artifacts> {
        self.storage.sealer().read_json(&self.artifacts_path(computation, run_id))
    }

    /// Releases a lookalike run's model to a participant of `model_to` through the gate.
    pub(crate) fn release_model(
        &self,
        computation: &str,
        run_id: &str,
        recipient: &str,
        channel: &Channel,
    ) -> Result<ReleasedModel> {
        let artifacts = self.load_artifacts(computation, run_id)?;
        self.gate(&self.terms()).release_model(RunRef { computation, run_id }, &artifacts, recipient, channel)
    }

    /// Releases the top `size` users of a lookalike run's ranking to the publisher of
    /// `audience_to` through the gate and delivers them to its activation sink (the only way an
    /// audience leaves: they are user ids).
    pub(crate) async fn deliver_audience(
        &self,
        computation: &str,
        run_id: &str,
        run_by: &str,
        recipient: &str,
        size: u64,
        max_audience: u64,
    ) -> Result<AudienceDelivery> {
        let Some(sink) = self.sinks.get(recipient) else {
            return Err(Error::FailedPrecondition(format!(
                "no activation sink is configured for '{recipient}' on this server, and an audience leaves only \
                 through its owner's sink; configure one (`sinks:` in the server configuration) and ask again"
            )));
        };
        let artifacts = self.load_artifacts(computation, run_id)?;
        let mut sink = sink.lock().await;
        let channel = Channel::Sink(sink.sink_type().to_owned());
        let run = RunRef { computation, run_id };
        let released =
            self.gate(&self.terms()).release_audience(run, &artifacts, recipient, &channel, size, max_audience)?;
        let deal = DealRecord::new(
            self.id.as_str(),
            "lookalike_audience",
            recipient,
            run_by,
            computation,
            run_id,
            Vec::new(),
            Some(released.size() as u64),
            released.digest(),
        );
        self.record_deal(&deal)?;
        let sections =
            vec![("audience".to_owned(), released.batch().clone()), ("deal".to_owned(), deal.to_record_batch()?)];
        let result = self.send_or_keep(sink.as_mut(), run, recipient, released.digest(), sections).await;
        self.metrics.delivery(matches!(result, Ok(Sent::Delivered(_))));
        let delivery = |state: &str, activation_id: Option<String>, location: String| AudienceDelivery {
            recipient: recipient.to_owned(),
            run_id: run_id.to_owned(),
            audience: released.size() as u64,
            deal_id: deal.deal_id.clone(),
            state: state.to_owned(),
            activation_id,
            location,
            release_digest: released.digest().to_owned(),
            audit_seq: released.audit_seq(),
        };
        match result {
            Ok(Sent::Delivered(location)) => Ok(delivery("delivered", None, location)),
            Ok(Sent::Kept { id, error }) => {
                let why = format!("pending: {error} (kept as activation {id}, retried)");
                Ok(delivery("pending", Some(id), why))
            }
            Err(f) => {
                self.audit_activation_failed(run, recipient, f.error.to_string())?;
                Err(f.error)
            }
        }
    }

    /// Keeps a released activation the sink could not take yet, to retry it (see [`crate::outbox`]).
    fn keep_activation(
        &self,
        run: RunRef<'_>,
        recipient: &str,
        release_digest: &str,
        sections: &[(String, arrow::record_batch::RecordBatch)],
        error: &Error,
    ) -> Result<String> {
        let now = sealroom_attest::token::unix_now();
        let view = ActivationView {
            id: new_id("a"),
            recipient: recipient.to_owned(),
            computation: run.computation.to_owned(),
            run_id: run.run_id.to_owned(),
            release_digest: release_digest.to_owned(),
            sections: sections.iter().map(|(n, b)| (n.clone(), b.num_rows())).collect(),
            state: ActivationState::Pending,
            attempts: 1,
            last_error: error.to_string(),
            created_at: now,
            next_attempt_at: now + outbox::backoff(0),
        };
        let kept = PendingActivation::new(view.clone(), sections)?;
        self.storage.sealer().write_json_atomically(&self.storage.activation_path(&view.id), &kept)?;
        lock(&self.activations).insert(view.id.clone(), view.clone());
        self.audit_activation_failed(run, recipient, format!("{error}; kept as activation {} and retried", view.id))?;
        tracing::warn!(room = %self.id, recipient, activation = %view.id, error = %error, "activation kept for retry");
        Ok(view.id)
    }

    /// Audits a delivery to `recipient`'s sink that did not succeed.
    fn audit_activation_failed(&self, run: RunRef<'_>, recipient: &str, reason: String) -> Result<()> {
        self.audit.append(AuditEvent::ActivationFailed {
            recipient: recipient.to_owned(),
            computation: run.computation.to_owned(),
            run_id: run.run_id.to_owned(),
            reason,
        })?;
        Ok(())
    }

    /// Sends a release to a locked sink; when the sink may get over its failure, keeps the release to
    /// retry it (see [`crate::outbox`]) instead of failing.
    async fn send_or_keep(
        &self,
        sink: &mut dyn Sink,
        run: RunRef<'_>,
        recipient: &str,
        release_digest: &str,
        sections: Vec<(String, arrow::record_batch::RecordBatch)>,
    ) -> std::result::Result<Sent, SinkFailure> {
        match self.send_to_sink(sink, run, recipient, release_digest, sections.clone()).await {
            Ok(location) => Ok(Sent::Delivered(location)),
            Err(f) if f.retriable => {
                let id = self
                    .keep_activation(run, recipient, release_digest, &sections, &f.error)
                    .map_err(|error| SinkFailure { error, retriable: false })?;
                Ok(Sent::Kept { id, error: f.error })
            }
            Err(f) => Err(f),
        }
    }

    /// Every kept activation of the room.
    /// The activations kept for `recipient`, oldest first.
    pub(crate) fn activations(&self, recipient: &str) -> Result<Vec<ActivationView>> {
        Ok(lock(&self.activations).values().filter(|v| v.recipient == recipient).cloned().collect())
    }

    /// Retries the pending activations due at `now`; returns how many were attempted. Only their
    /// files are read; one that cannot be read is logged and skipped, not a stop to the others.
    pub(crate) async fn retry_activations(&self, now: u64) -> Result<usize> {
        let mut attempted = 0;
        let due: Vec<String> = lock(&self.activations)
            .values()
            .filter(|v| v.state == ActivationState::Pending && v.next_attempt_at <= now)
            .map(|v| v.id.clone())
            .collect();
        for id in due {
            let mut kept: PendingActivation = match self.storage.sealer().read_json(&self.storage.activation_path(&id))
            {
                Ok(kept) => kept,
                Err(e) => {
                    tracing::error!(room = %self.id, activation = %id, error = %e, "cannot read a kept activation");
                    continue;
                }
            };
            let view = kept.view.clone();
            let result = match self.sinks.get(&view.recipient) {
                None => Err(SinkFailure {
                    error: Error::Delivery(format!("no activation sink is configured for '{}'", view.recipient)),
                    retriable: true,
                }),
                Some(sink) => {
                    let mut sink = sink.lock().await;
                    let run = RunRef { computation: &view.computation, run_id: &view.run_id };
                    self.send_to_sink(sink.as_mut(), run, &view.recipient, &view.release_digest, kept.sections()?).await
                }
            };
            self.metrics.delivery(result.is_ok());
            kept.view.attempts += 1;
            match result {
                Ok(location) => {
                    kept.view.state = ActivationState::Delivered { location };
                    kept.forget_rows();
                }
                Err(f) if f.retriable => {
                    kept.view.last_error = f.error.to_string();
                    kept.view.next_attempt_at = now + outbox::backoff(kept.view.attempts - 1);
                }
                Err(f) => {
                    kept.view.last_error = f.error.to_string();
                    kept.view.state = ActivationState::Failed { reason: f.error.to_string() };
                    kept.forget_rows();
                    let run = RunRef { computation: &view.computation, run_id: &view.run_id };
                    let reason = format!("activation {}: {}; not retried", view.id, f.error);
                    self.audit_activation_failed(run, &view.recipient, reason)?;
                }
            }
            self.storage.sealer().write_json_atomically(&self.storage.activation_path(&view.id), &kept)?;
            lock(&self.activations).insert(view.id.clone(), kept.view);
            attempted += 1;
        }
        Ok(attempted)
    }

    /// Sends a release's batches (one per section) to a locked sink, flushes it, and audits the
    /// delivery with the release's digest; returns where the sink put them.
    async fn send_to_sink(
        &self,
        sink: &mut dyn Sink,
        run: RunRef<'_>,
        recipient: &str,
        release_digest: &str,
        sections: Vec<(String, arrow::record_batch::RecordBatch)>,
    ) -> std::result::Result<String, SinkFailure> {
        let failure = |e: sealroom_connectors::Error| SinkFailure {
            retriable: e.is_retriable(),
            error: Error::Delivery(e.to_string()),
        };
        let mut locations = Vec::new();
        for (section, batch) in sections {
            let delivery = Delivery {
                metadata: DeliveryMetadata {
                    room_id: self.id.to_string(),
                    computation: run.computation.to_owned(),
                    run_id: run.run_id.to_owned(),
                    section,
                    recipient: recipient.to_owned(),
                    release_digest: release_digest.to_owned(),
                },
                batch,
            };
            let receipt = sink.send(&delivery).await.map_err(failure)?;
            locations.push(receipt.location);
        }
        sink.flush().await.map_err(failure)?;
        let location = locations.join(", ");
        let audited = self.audit.append(AuditEvent::ActivationDelivered {
            recipient: recipient.to_owned(),
            computation: run.computation.to_owned(),
            run_id: run.run_id.to_owned(),
            sink_type: sink.sink_type().to_owned(),
            location: location.clone(),
            release_sha256: release_digest.to_owned(),
        });
        audited.map_err(|error| SinkFailure { error, retriable: false })?;
        Ok(location)
    }

    fn save_run(&self, record: &RunRecord, report: &ComputedReport) -> Result<()> {
        let file = RunFileRef { record, report };
        self.storage.sealer().write_json_atomically(&self.run_path(&record.computation, &record.run_id), &file)
    }

    fn load_report(&self, computation: &str, run_id: &str) -> Result<ComputedReport> {
        let file: RunFile = self.storage.sealer().read_json(&self.run_path(computation, run_id))?;
        Ok(file.report)
    }

    /// The shape of a run's result sections (names, schemas, row counts), without their values.
    pub(crate) fn section_shapes(&self, computation: &str, run_id: &str) -> Result<Vec<SectionShape>> {
        let report = self.load_report(computation, run_id)?;
        Ok(report
            .sections
            .iter()
            .map(|s| SectionShape {
                run_id: run_id.to_owned(),
                name: s.name.clone(),
                schema: crate::release_gate::section_schema(&s.dimensions, &s.metrics),
                rows: s.rows.len(),
            })
            .collect())
    }

    /// Releases a run's result to a recipient through the gate.
    pub(crate) fn release(
        &self,
        computation: &str,
        run_id: &str,
        recipient: &str,
        channel: &Channel,
    ) -> Result<Released> {
        let report = self.load_report(computation, run_id)?;
        self.gate(&self.terms()).release(&report, recipient, channel)
    }

    /// A deal for a released result, when it is an audience a publisher can sell: the ranked
    /// segments of a top-affinity release (best first).
    fn affinity_deal(&self, released: &Released, recipient: &str, run_by: &str) -> Option<DealRecord> {
        let section = released.section("affinity")?;
        let segments: Vec<String> = section
            .rows()
            .iter()
            .filter(|r| r.dimensions().first().is_some_and(|rank| rank.parse::<u64>().is_ok()))
            .filter_map(|r| r.dimensions().get(1).cloned())
            .take(crate::deal::MAX_DEAL_SEGMENTS)
            .collect();
        (!segments.is_empty()).then(|| {
            DealRecord::new(
                self.id.as_str(),
                "top_affinity",
                recipient,
                run_by,
                released.computation(),
                released.run_id(),
                segments,
                None,
                released.digest(),
            )
        })
    }

    /// Keeps a deal (sealed) and audits it.
    fn record_deal(&self, deal: &DealRecord) -> Result<()> {
        self.storage.sealer().write_json_atomically(&self.storage.deal_path(&deal.deal_id), deal)?;
        self.audit.append(AuditEvent::DealCreated {
            deal_id: deal.deal_id.clone(),
            kind: deal.kind.clone(),
            publisher: deal.publisher.clone(),
            advertiser: deal.advertiser.clone(),
            computation: deal.computation.clone(),
            run_id: deal.run_id.clone(),
            expires_at: deal.expires_at.clone(),
            release_sha256: deal.release_digest.clone(),
        })?;
        Ok(())
    }

    /// The deals `participant` is the publisher or the advertiser of, oldest first.
    pub(crate) fn deals(&self, participant: &str) -> Result<Vec<DealRecord>> {
        let mut deals: Vec<DealRecord> = self.storage.sealer().read_json_dir(&self.storage.deals_dir())?;
        deals.retain(|d| d.publisher == participant || d.advertiser == participant);
        deals.sort_by(|a, b| (&a.created_at, &a.deal_id).cmp(&(&b.created_at, &b.deal_id)));
        Ok(deals)
    }

    async fn deliver(
        &self,
        terms: &Terms,
        report: &ComputedReport,
        recipient: &str,
        run_by: &str,
    ) -> crate::room::DeliveryRecord {
        let Some(sink) = self.sinks.get(recipient) else {
            return DeliveryRecord {
                recipient: recipient.to_owned(),
                status: "no_sink".into(),
                location: None,
                message: Some(format!(
                    "no activation sink is configured for '{recipient}' on this server; the result stays available \
                     over REST and Flight"
                )),
            };
        };
        let mut sink = sink.lock().await;
        let run = RunRef { computation: &report.computation, run_id: &report.run_id };
        let result: std::result::Result<Sent, SinkFailure> = async {
            let not_retriable = |error| SinkFailure { error, retriable: false };
            let released = self
                .gate(terms)
                .release(report, recipient, &Channel::Sink(sink.sink_type().to_owned()))
                .map_err(not_retriable)?;
            let mut sections = released
                .sections()
                .iter()
                .map(|s| Ok((s.name().to_owned(), s.to_record_batch()?)))
                .collect::<Result<Vec<_>>>()
                .map_err(not_retriable)?;
            if let Some(deal) = self.affinity_deal(&released, recipient, run_by) {
                self.record_deal(&deal).map_err(not_retriable)?;
                sections.push(("deal".to_owned(), deal.to_record_batch().map_err(not_retriable)?));
            }
            self.send_or_keep(sink.as_mut(), run, recipient, released.digest(), sections).await
        }
        .await;
        self.metrics.delivery(matches!(result, Ok(Sent::Delivered(_))));
        match result {
            Ok(Sent::Delivered(location)) => DeliveryRecord {
                recipient: recipient.to_owned(),
                status: "delivered".into(),
                location: Some(location),
                message: None,
            },
            Ok(Sent::Kept { id, error }) => DeliveryRecord {
                recipient: recipient.to_owned(),
                status: "pending".into(),
                location: None,
                message: Some(
                    Error::Delivery(format!(
                        "{error}; kept as activation {id} and retried (GET /v1/rooms/{}/activations)",
                        self.id
                    ))
                    .to_string(),
                ),
            },
            Err(SinkFailure { error: e, .. }) => {
                let _ = self.audit_activation_failed(run, recipient, e.to_string());
                tracing::warn!(room = %self.id, recipient, error = %e, "activation delivery failed");
                DeliveryRecord {
                    recipient: recipient.to_owned(),
                    status: "failed".into(),
                    location: None,
                    message: Some(e.to_string()),
                }
            }
        }
    }

    /// Closes the activation sinks (flushing them first).
    pub(crate) async fn close(&self) {
        for (participant, sink) in &self.sinks {
            let mut sink = sink.lock().await;
            if let Err(e) = sink.flush().await {
                tracing::warn!(participant, error = %e, "flushing a sink at shutdown failed");
            }
            if let Err(e) = sink.close().await {
                tracing::warn!(participant, error = %e, "closing a sink at shutdown failed");
            }
        }
    }
}
