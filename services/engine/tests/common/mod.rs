//! Helpers the engine's integration tests share: an engine in the simulated TEE on a temporary
//! directory, uploads as a participant, and running and releasing a computation.
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use sealroom_engine::{
    Caller, CellValue, Channel, Enclave, Engine, EngineConfig, EngineMetrics, Error, Released, ReleasedCell,
    SinkBinding, UploadLimits,
};
use sealroom_proto::room::v1::RoomContract;
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 (bearer-token digests in room files, hashed identifiers).
pub(crate) fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The `participants:` block of a two-party test room: `adv` (data owner and analyst) and `pub`
/// (data owner, and analyst when `pub_runs`), each with the digest of its token.
pub(crate) fn participants(adv_token: &str, pub_token: &str, pub_runs: bool) -> String {
    let pub_roles = if pub_runs { "data_owner, analyst" } else { "data_owner" };
    format!(
        "participants:\n  - {{ id: adv, name: Advertiser, roles: [data_owner, analyst], credential: {{ \
         bearer_token_sha256: {} }} }}\n  - {{ id: pub, name: Publisher, roles: [{pub_roles}], credential: {{ \
         bearer_token_sha256: {} }} }}\n",
        digest(adv_token),
        digest(pub_token)
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

/// The holder of `token` in the engine's first room.
pub(crate) fn caller(engine: &Engine, token: &str) -> Caller {
    engine.authenticate(engine.room_ids()[0].as_str(), token).unwrap()
}

/// Uploads `batches` to `table` of the engine's first room as the holder of `token`.
pub(crate) async fn upload(engine: &Engine, token: &str, table: &str, batches: Vec<RecordBatch>) -> Result<u64, Error> {
    let room = engine.room_ids()[0].clone();
    let caller = engine.authenticate(room.as_str(), token)?;
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
