//! Computations: what a room may compute over its tables. Each produces a [`ComputedReport`] of
//! aggregates with the distinct-individual count behind every cell, for the release gate to judge.
//!
//! Computations run on the room's tables loaded as Arrow record batches, with the matching library's
//! kernels and single-pass counting (`segments.rs`), off the async runtime. They must never return
//! rows or row-level identifiers, only aggregates.

pub(crate) mod affinity;
pub(crate) mod linkage;
pub(crate) mod measurement;
pub(crate) mod overlap;
pub(crate) mod segments;

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sealroom_proto::room::v1::{Computation, RoomContract, computation};

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

/// State a computation keeps inside the engine between its runs: measurement's reach sketch per
/// campaign (`matching::sketch`, as bytes). It is never released; only estimates made from it are,
/// through the gate.
pub(crate) type State = std::collections::BTreeMap<String, Vec<u8>>;

/// Runs a computation over its input tables, with the state its previous runs left; returns its
/// sections and its new state (`None`: the computation keeps none).
pub(crate) async fn run(
    contract: &RoomContract,
    computation: &Computation,
    tables: &HashMap<String, InputTable>,
    state: State,
) -> Result<(Vec<ComputedSection>, Option<State>)> {
    match &computation.kind {
        Some(computation::Kind::Overlap(spec)) => Ok((overlap::run(contract, spec, tables).await?, None)),
        Some(computation::Kind::Affinity(spec)) => Ok((affinity::run(contract, spec, tables).await?, None)),
        Some(computation::Kind::Measurement(spec)) => {
            let (sections, state) = measurement::run(contract, spec, tables, state).await?;
            Ok((sections, Some(state)))
        }
        None => Err(Error::Contract(format!("computation '{}' has no kind", computation.name))),
    }
}
