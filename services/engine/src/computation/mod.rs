//! Computations: what a room may compute over its tables. Each produces a [`ComputedReport`] of
//! aggregates with the distinct-individual count behind every cell, for the release gate to judge.
//!
//! Computations run on the room's tables loaded as Arrow record batches, with the matching library's
//! kernels and single-pass counting (`segments.rs`), off the async runtime. They must never return
//! rows or row-level identifiers, only aggregates.

pub(crate) mod affinity;
pub(crate) mod linkage;
pub(crate) mod lookalike;
pub(crate) mod measurement;
pub(crate) mod overlap;
pub(crate) mod segments;
pub(crate) mod sql;

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sealroom_proto::room::v1::{Computation, RoomContract, computation};

use crate::dp::NoiseInfo;
use crate::error::{Error, Result};
use crate::report::ComputedSection;

/// The data of one input table.
#[derive(Debug, Clone)]
pub(crate) struct InputTable {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl InputTable {
    /// One column over all batches, concatenated (the other columns are not copied).
    pub(crate) fn column(&self, table: &str, name: &str) -> Result<arrow::array::ArrayRef> {
        let i = self
            .schema
            .index_of(name)
            .map_err(|_| Error::Computation(format!("table '{table}' has no stored column '{name}'")))?;
        let parts: Vec<&dyn arrow::array::Array> = self.batches.iter().map(|b| b.column(i).as_ref()).collect();
        Ok(arrow::compute::concat(&parts)?)
    }
}

/// Each individual's first non-null value of a row-aligned column, as text (`None` when all of
/// their rows are null). `of_row[row]` is the individual of each row.
pub(crate) fn first_text_per_individual(
    column: &arrow::array::ArrayRef,
    of_row: &[u32],
    individuals: usize,
) -> Result<Vec<Option<String>>> {
    use arrow::array::{Array, AsArray};
    let strings = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let mut first = vec![None; individuals];
    for (row, i) in of_row.iter().enumerate() {
        if let Some(slot) = first.get_mut(*i as usize)
            && slot.is_none()
            && strings.is_valid(row)
        {
            *slot = Some(strings.value(row).to_owned());
        }
    }
    Ok(first)
}

/// State a computation keeps inside the engine between its runs: measurement's reach sketch per
/// campaign (`matching::sketch`, as bytes). It is never released; only estimates made from it are,
/// through the gate.
pub(crate) type State = std::collections::BTreeMap<String, Vec<u8>>;

/// Where a differentially private run gets its noise: the room's ε per run and contribution bound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoiseSource {
    pub epsilon_micro: u64,
    /// Most segments one person counts in.
    pub cap: usize,
    /// Measurement: most campaigns one person counts in, and the clamp on their impressions.
    pub campaigns: usize,
    pub impressions: u64,
}

impl NoiseSource {
    pub(crate) fn of(contract: &RoomContract) -> Option<Self> {
        contract.differential_privacy().map(|dp| Self {
            epsilon_micro: dp.epsilon_per_run_micro,
            cap: dp.segments_per_person(),
            campaigns: dp.campaigns_per_person(),
            impressions: dp.impressions_per_person(),
        })
    }
}

/// What a run computed.
pub(crate) struct Computed {
    pub sections: Vec<ComputedSection>,
    /// The new state (`None`: the computation keeps none).
    pub state: Option<State>,
    /// The noise the counts carry, in differentially private rooms.
    pub noise: Option<NoiseInfo>,
    /// What a lookalike keeps for later releases (its model and ranking).
    pub artifacts: Option<lookalike::Artifacts>,
}

/// Refuses, before any budget is spent, what the room's privacy settings cannot run (validation
/// refuses these contracts; this keeps any other path from releasing exact numbers).
pub(crate) fn check_runnable(contract: &RoomContract, computation: &Computation) -> Result<()> {
    if contract.differential_privacy().is_none() {
        return Ok(());
    }
    match &computation.kind {
        Some(computation::Kind::Sql(_)) => Err(Error::Contract(
            "SQL computations do not support differential privacy yet; this room cannot run them".to_owned(),
        )),
        Some(computation::Kind::Lookalike(_)) => Err(Error::Contract(
            "lookalike models cannot be trained under differential privacy; this room cannot run them".to_owned(),
        )),
        Some(computation::Kind::Measurement(m)) if !m.conversion_table.is_empty() => Err(Error::Contract(
            "conversion lift cannot be measured under differential privacy; this room cannot run it".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// Runs a computation over its input tables, with the state its previous runs left.
pub(crate) async fn run(
    contract: &RoomContract,
    computation: &Computation,
    tables: &HashMap<String, InputTable>,
    state: State,
) -> Result<Computed> {
    check_runnable(contract, computation)?;
    let source = NoiseSource::of(contract);
    match &computation.kind {
        Some(computation::Kind::Overlap(spec)) => {
            let (sections, noise) = overlap::run(contract, spec, tables, source).await?;
            Ok(Computed { sections, state: None, noise, artifacts: None })
        }
        Some(computation::Kind::Affinity(spec)) => {
            let (sections, noise) = affinity::run(contract, spec, tables, source).await?;
            Ok(Computed { sections, state: None, noise, artifacts: None })
        }
        Some(computation::Kind::Measurement(spec)) => {
            let (sections, state, noise) = measurement::run(contract, spec, tables, state, source).await?;
            Ok(Computed { sections, state: Some(state), noise, artifacts: None })
        }
        Some(computation::Kind::Sql(spec)) => Ok(Computed {
            sections: sql::run(contract, &computation.name, spec, tables).await?,
            state: None,
            noise: None,
            artifacts: None,
        }),
        Some(computation::Kind::Lookalike(spec)) => {
            let (sections, artifacts) = lookalike::run(contract, spec, tables).await?;
            Ok(Computed { sections, state: None, noise: None, artifacts: Some(artifacts) })
        }
        None => Err(Error::Contract(format!("computation '{}' has no kind", computation.name))),
    }
}
