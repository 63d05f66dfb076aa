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

/// Runs a computation over its input tables.
pub(crate) async fn run(
    contract: &RoomContract,
    computation: &Computation,
    tables: &HashMap<String, InputTable>,
) -> Result<Vec<ComputedSection>> {
    match &computation.kind {
        Some(computation::Kind::Overlap(spec)) => overlap::run(contract, spec, tables).await,
        Some(computation::Kind::Affinity(spec)) => affinity::run(contract, spec, tables).await,
        Some(computation::Kind::Measurement(spec)) => measurement::run(contract, spec, tables).await,
        None => Err(Error::Contract(format!("computation '{}' has no kind", computation.name))),
    }
}
