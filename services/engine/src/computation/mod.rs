//! Computations: what a room may compute over its tables. Each produces a [`ComputedReport`] of
//! aggregates with the distinct-individual count behind every cell, for the release gate to judge.
//!
//! Computations run on DataFusion over the room's tables registered as in-memory tables. They must
//! never return rows or row-level identifiers, only aggregates.

pub(crate) mod linkage;
pub(crate) mod overlap;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use sealroom_proto::room::v1::{Computation, RoomContract, computation};

use crate::error::{Error, Result};
use crate::report::ComputedSection;

/// The data of one input table.
#[derive(Debug, Clone)]
pub(crate) struct InputTable {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// A DataFusion session with the given tables registered under their contract names.
pub(crate) fn session(tables: &HashMap<String, InputTable>) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_target_partitions(std::thread::available_parallelism().map_or(2, usize::from))
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    for (name, table) in tables {
        let mem = MemTable::try_new(table.schema.clone(), vec![table.batches.clone()])?;
        ctx.register_table(name.as_str(), Arc::new(mem))?;
    }
    Ok(ctx)
}

/// Runs a computation over its input tables.
pub(crate) async fn run(
    contract: &RoomContract,
    computation: &Computation,
    tables: &HashMap<String, InputTable>,
) -> Result<Vec<ComputedSection>> {
    match &computation.kind {
        Some(computation::Kind::Overlap(spec)) => overlap::run(contract, spec, tables).await,
        None => Err(Error::Contract(format!("computation '{}' has no kind", computation.name))),
    }
}

/// Quotes an identifier for SQL. Names are validated by the contract (letters, digits, '_').
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
