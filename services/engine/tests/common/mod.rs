//! Helpers the engine's integration tests share: an engine in the simulated TEE on a temporary
//! directory, uploads as a participant, and running and releasing a computation.
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::record_batch::RecordBatch;
use sealroom_attest::token::{IssuerKey, unix_now};
use sealroom_engine::{
    Caller, CellValue, Channel, Enclave, Engine, EngineConfig, EngineMetrics, Error, Released, ReleasedCell,
    SinkBinding, UploadLimits,
};
use sealroom_proto::room::v1::RoomContract;
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 (hashed identifiers).
pub(crate) fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The issuer key of participant `id` in this test binary (one per id, made on first use).
pub(crate) fn issuer(id: &str) -> &'static IssuerKey {
    static KEYS: OnceLock<Mutex<HashMap<String, &'static IssuerKey>>> = OnceLock::new();
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap();
    keys.entry(id.to_owned()).or_insert_with(|| Box::leak(Box::new(IssuerKey::generate().unwrap())))
}

/// The `credential:` of participant `id` in a room file (flow style).
pub(crate) fn credential(id: &str) -> String {
    format!("{{ issuer_keys: [{}] }}", issuer(id).public_key_base64())
}

/// A token of participant `id` for `room`, valid for an hour.
pub(crate) fn token(room: &str, id: &str) -> String {
    issuer(id).mint(id, &[room.to_owned()], 3600, unix_now()).unwrap()
}

/// Authenticates participant `id` in `room` with a fresh token.
pub(crate) fn login(engine: &Engine, room: &str, id: &str) -> Result<Caller, Error> {
    engine.authenticate(room, &token(room, id))
}

/// A room where `adv` (data owner, analyst) and `pub` (data owner) upload hashed emails and `adv`
/// runs their overlap; `extra_credential` is appended to adv's credential, `extra` to the file.
pub(crate) fn email_room(extra_credential: &str, extra: &str) -> RoomContract {
    let text = format!(
        r#"
name: auth
participants:
  - {{ id: adv, name: A, roles: [data_owner, analyst], credential: {{ issuer_keys: [{adv}]{extra_credential} }} }}
  - {{ id: pub, name: P, roles: [data_owner], credential: {pub_} }}
tables:
  - {{ name: crm, owner: adv, columns: [{{ name: email, type: sha256, identifier: hashed_email }}] }}
  - {{ name: users, owner: pub, columns: [{{ name: email, type: sha256, identifier: hashed_email }}] }}
computations:
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: users }}
    run_by: [adv]
    results_to: [adv]
attestation: {{ allow_simulated: true }}
{extra}
"#,
        adv = issuer("adv").public_key_base64(),
        pub_ = credential("pub"),
    );
    sealroom_proto::RoomFile::parse(&text, "room.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The `participants:` block of a two-party test room: `adv` (data owner and analyst) and `pub`
/// (data owner, and analyst when `pub_runs`), each with its issuer key.
pub(crate) fn participants(adv: &str, publisher: &str, pub_runs: bool) -> String {
    let pub_roles = if pub_runs { "data_owner, analyst" } else { "data_owner" };
    format!(
        "participants:\n  - {{ id: {adv}, name: Advertiser, roles: [data_owner, analyst], credential: {} }}\n  \
         - {{ id: {publisher}, name: Publisher, roles: [{pub_roles}], credential: {} }}\n",
        credential(adv),
        credential(publisher)
    )
}

/// An engine in the simulated TEE on `dir`, with default limits, hosting `contracts`, or why not.
pub(crate) async fn try_open(
    dir: &Path,
    contracts: Vec<RoomContract>,
    sinks: Vec<SinkBinding>,
) -> Result<Engine, Error> {
    let config = EngineConfig {
        data_dir: dir.to_owned(),
        enclave: Enclave::insecure_simulated()?,
        limits: UploadLimits::default(),
        sinks,
    };
    Engine::open(config, contracts, Arc::new(EngineMetrics::unregistered())).await
}

/// [`try_open`], which must succeed.
pub(crate) async fn open(dir: &Path, contracts: Vec<RoomContract>, sinks: Vec<SinkBinding>) -> Engine {
    try_open(dir, contracts, sinks).await.unwrap()
}

/// Participant `who` in the engine's first room.
pub(crate) fn caller(engine: &Engine, who: &str) -> Caller {
    login(engine, engine.room_ids()[0].as_str(), who).unwrap()
}

/// Uploads `batches` to `table` of the engine's first room as participant `who`.
pub(crate) async fn upload(engine: &Engine, who: &str, table: &str, batches: Vec<RecordBatch>) -> Result<u64, Error> {
    let room = engine.room_ids()[0].clone();
    let caller = login(engine, room.as_str(), who)?;
    let mut session = engine.begin_upload(&caller, table)?;
    for b in batches {
        session.push(b).await?;
    }
    Ok(session.commit().await?.rows)
}

/// Runs `computation` in the engine's first room as the holder of `token` and releases the run to
/// them over REST.
pub(crate) async fn run(engine: &Engine, token: &str, computation: &str) -> Released {
    let analyst = caller(engine, token);
    engine.run(&analyst, computation).await.unwrap_or_else(|e| panic!("{e}"));
    engine.release(&analyst, computation, None, Channel::Rest).unwrap()
}

/// A released count, or `None` when suppressed.
pub(crate) fn count(cell: &ReleasedCell) -> Option<u64> {
    match cell {
        ReleasedCell::Value(CellValue::Count(v)) => Some(*v),
        _ => None,
    }
}
