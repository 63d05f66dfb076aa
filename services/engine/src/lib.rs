//! The sealroom engine: what runs inside the enclave.
//!
//! It hosts rooms (each governed by its contract), takes uploads ([`ingest`]), keeps them in sealed
//! local storage, runs computations with the matching library's kernels, and lets results out only
//! through the [`release_gate`], which applies the room's k-anonymity threshold and writes an
//! [`audit`] entry for every release. Rooms with differential privacy also noise every count and
//! charge each run to a per-participant ε budget (`dp`). No public function of this crate returns rows of uploaded data.

pub mod audit;
mod computation;
pub mod deal;
mod dp;
mod engine;
pub mod error;
pub mod governance;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod release_gate;
mod report;
mod room;
pub mod schema;
pub mod seal;
mod storage;
pub mod tee;

pub use dp::BudgetView;
pub use engine::{
    Caller, ComputationView, DatasetStatus, Engine, EngineConfig, MAX_PROPOSAL_DESCRIPTION, SinkBinding,
    check_contract, check_sql,
};
pub use error::{Error, Result};
pub use governance::{ContractVersion, Proposal, ProposalState, SignedDecision};
pub use ingest::{UploadLimits, UploadSession};
pub use metrics::EngineMetrics;
pub use release_gate::{Channel, Released, ReleasedAudience, ReleasedCell, ReleasedModel, ReleasedSection};
pub use report::{CellValue, MetricKind, MetricSpec};
pub use room::{AudienceDelivery, DeliveryRecord, RunRecord, SectionShape};
pub use storage::DatasetManifest;
pub use tee::{Enclave, TeeMode};
