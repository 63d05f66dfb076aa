//! The release gate: the only way anything computed from the room's data leaves the engine.
//!
//! [`ReleaseGate::release`] takes an unreleased [`ComputedReport`] and a recipient and returns a
//! [`Released`] result in which every cell about fewer than k distinct individuals is replaced by
//! [`ReleasedCell::Suppressed`] (never by 0), after writing an audit entry with the digest of exactly
//! what is released. `Released` and everything in it have private fields and no public
//! constructor, so code outside this module (REST, Flight, sinks) can hold, serialize and send a
//! released result but can never make one: every byte that leaves passed this gate and was audited.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{AuditEvent, AuditLog};
use crate::computation::lookalike::Artifacts;
use crate::error::{Error, Result};
use crate::metrics::EngineMetrics;
use crate::report::{CellValue, ComputedReport, MetricKind, MetricSpec};
use crate::tee::TeeMode;

/// How a release leaves the engine, recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Rest,
    Flight,
    /// An activation sink of the given type.
    Sink(String),
}

impl Channel {
    fn name(&self) -> String {
        match self {
            Self::Rest => "rest".into(),
            Self::Flight => "flight".into(),
            Self::Sink(t) => format!("sink:{t}"),
        }
    }
}

/// A released cell: a number, or the fact that it was suppressed.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleasedCell {
    Value(CellValue),
    Suppressed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedRow {
    dimensions: Vec<String>,
    cells: Vec<ReleasedCell>,
}

impl ReleasedRow {
    pub fn dimensions(&self) -> &[String] {
        &self.dimensions
    }

    pub fn cells(&self) -> &[ReleasedCell] {
        &self.cells
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedSection {
    name: String,
    description: String,
    dimensions: Vec<String>,
    metrics: Vec<MetricSpec>,
    rows: Vec<ReleasedRow>,
}

impl ReleasedSection {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn dimensions(&self) -> &[String] {
        &self.dimensions
    }

    pub fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    pub fn rows(&self) -> &[ReleasedRow] {
        &self.rows
    }

    /// The section's Arrow schema: one utf8 column per dimension, then per metric a nullable value
    /// column (uint64 for counts, float64 for ratios and other numbers; null when suppressed) and a
    /// `<metric>_suppressed` boolean column.
    pub fn schema(&self) -> Arc<Schema> {
        section_schema(&self.dimensions, &self.metrics)
    }

    /// The section as an Arrow record batch (see [`Self::schema`]).
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        for d in 0..self.dimensions.len() {
            columns.push(Arc::new(StringArray::from_iter_values(self.rows.iter().map(|r| r.dimensions[d].as_str()))));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let cells = self.rows.iter().map(|r| &r.cells[i]);
            match m.kind {
                MetricKind::Count => columns.push(Arc::new(UInt64Array::from_iter(cells.clone().map(|c| match c {
                    ReleasedCell::Value(CellValue::Count(v)) => Some(*v),
                    _ => None,
                })))),
                MetricKind::Ratio | MetricKind::Number => {
                    columns.push(Arc::new(Float64Array::from_iter(cells.clone().map(|c| match c {
                        ReleasedCell::Value(CellValue::Real(v)) => Some(*v),
                        _ => None,
                    }))))
                }
            }
            columns.push(Arc::new(BooleanArray::from_iter(cells.map(|c| Some(matches!(c, ReleasedCell::Suppressed))))));
        }
        RecordBatch::try_new(self.schema(), columns).map_err(|e| Error::Computation(e.to_string()))
    }

    fn to_json(&self, k: u32) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut obj = Map::new();
                for (d, v) in self.dimensions.iter().zip(&r.dimensions) {
                    obj.insert(d.clone(), Value::String(v.clone()));
                }
                for (m, c) in self.metrics.iter().zip(&r.cells) {
                    let cell = match c {
                        ReleasedCell::Value(CellValue::Count(v)) => json!({ "value": v }),
                        ReleasedCell::Value(CellValue::Real(v)) => json!({ "value": v }),
                        ReleasedCell::Suppressed => {
                            json!({
                                "suppressed": true,
                                "reason": format!(
                                    "fewer than k = {k} distinct individuals, or withheld so that such a cell cannot be worked out from released totals"
                                )
                            })
                        }
                    };
                    obj.insert(m.name.clone(), cell);
                }
                Value::Object(obj)
            })
            .collect();
        json!({
            "name": self.name,
            "description": self.description,
            "dimensions": self.dimensions,
            "metrics": self.metrics,
            "rows": rows,
        })
    }
}

/// The Arrow schema of a released section (see [`ReleasedSection::schema`]).
pub fn section_schema(dimensions: &[String], metrics: &[MetricSpec]) -> Arc<Schema> {
    let mut fields: Vec<Field> = dimensions.iter().map(|d| Field::new(d, DataType::Utf8, false)).collect();
    for m in metrics {
        let t = match m.kind {
            MetricKind::Count => DataType::UInt64,
            MetricKind::Ratio | MetricKind::Number => DataType::Float64,
        };
        fields.push(Field::new(&m.name, t, true));
        fields.push(Field::new(format!("{}_suppressed", m.name), DataType::Boolean, false));
    }
    Arc::new(Schema::new(fields))
}

/// A result that passed the release gate and was audited. Only [`ReleaseGate::release`] makes one.
#[derive(Debug, Clone)]
pub struct Released {
    room_id: String,
    computation: String,
    run_id: String,
    recipient: String,
    k: u32,
    sections: Vec<ReleasedSection>,
    json: Value,
    digest: String,
    audit_seq: u64,
}

impl Released {
    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    pub fn computation(&self) -> &str {
        &self.computation
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    pub fn k(&self) -> u32 {
        self.k
    }

    pub fn sections(&self) -> &[ReleasedSection] {
        &self.sections
    }

    pub fn section(&self, name: &str) -> Option<&ReleasedSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The released result as JSON, including its `release_digest` (the SHA-256 of this JSON without
    /// that field, as recorded in the audit log).
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Lowercase hex SHA-256 of the released JSON (without the digest field).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Sequence number of the audit entry that records this release.
    pub fn audit_seq(&self) -> u64 {
        self.audit_seq
    }
}

/// The gate of one room.
#[derive(Debug)]
pub(crate) struct ReleaseGate<'a> {
    pub k: u32,
    pub room_id: &'a str,
    pub room_name: &'a str,
    pub tee: TeeMode,
    pub audit: &'a AuditLog,
    pub metrics: &'a EngineMetrics,
}

impl ReleaseGate<'_> {
    /// Applies k-anonymity to every cell, audits the release, and returns what may leave.
    pub(crate) fn release(&self, report: &ComputedReport, recipient: &str, channel: &Channel) -> Result<Released> {
        if report.k != 0 && report.k != self.k {
            // Suppressing at another k than the computation's own (complementary) suppression
            // assumed could leave suppressed cells derivable from the totals.
            return Err(Error::FailedPrecondition(format!(
                "run {} of '{}' was computed under k = {}, and the room's k is now {} (a new contract version): \
                 run the computation again to release it",
                report.run_id, report.computation, report.k, self.k
            )));
        }
        let k = u64::from(self.k);
        let (mut released_cells, mut suppressed_cells) = (0u64, 0u64);
        let sections: Vec<ReleasedSection> = report
            .sections
            .iter()
            .map(|s| ReleasedSection {
                name: s.name.clone(),
                description: s.description.clone(),
                dimensions: s.dimensions.clone(),
                metrics: s.metrics.clone(),
                rows: s
                    .rows
                    .iter()
                    .map(|r| ReleasedRow {
                        dimensions: r.dimensions.clone(),
                        cells: r
                            .cells
                            .iter()
                            .map(|c| {
                                if c.individuals >= k {
                                    released_cells += 1;
                                    ReleasedCell::Value(c.value)
                                } else {
                                    suppressed_cells += 1;
                                    ReleasedCell::Suppressed
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        let mut json = json!({
            "room_id": self.room_id,
            "room_name": self.room_name,
            "computation": report.computation,
            "kind": report.kind,
            "run_id": report.run_id,
            "computed_at": report.computed_at,
            "released_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            "recipient": recipient,
            "k": self.k,
            "privacy": format!(
                "every number is about at least k = {} distinct individuals; smaller cells are suppressed",
                self.k
            ),
            "tee": self.tee.describe(),
            "sections": sections.iter().map(|s| s.to_json(self.k)).collect::<Vec<_>>(),
        });
        if let (Some(noise), Value::Object(obj)) = (&report.noise, &mut json) {
            let sums = noise.sums.as_ref().map_or_else(String::new, |s| {
                format!(
                    " (impressions: scale {:.3}, each person's clamped to {} per campaign in at most {} campaigns)",
                    s.scale, s.max_impressions_per_person, s.max_campaigns_per_person
                )
            });
            obj.insert(
                "privacy".into(),
                Value::String(format!(
                    "(ε, δ)-differentially private with ε = {} for this run and δ = {} (discrete Laplace noise of \
                     scale {:.3} on every count{sums}; ratios and indices are computed from the noisy counts); cells \
                     whose noisy count of individuals is under k = {} are suppressed, and segments or campaigns are \
                     listed only when their noisy counts reach {}",
                    noise.epsilon, noise.delta, noise.scale, self.k, noise.listing_threshold
                )),
            );
            obj.insert(
                "differential_privacy".into(),
                serde_json::to_value(noise).map_err(|e| Error::Computation(e.to_string()))?,
            );
        }
        let digest = document_digest(&json)?;
        if let Value::Object(obj) = &mut json {
            obj.insert("release_digest".into(), Value::String(digest.clone()));
        }
        let entry = self.audit.append(AuditEvent::ResultReleased {
            recipient: recipient.to_owned(),
            computation: report.computation.clone(),
            run_id: report.run_id.clone(),
            channel: channel.name(),
            k: self.k,
            cells_released: released_cells,
            cells_suppressed: suppressed_cells,
            release_sha256: digest.clone(),
        })?;
        self.metrics.released(&channel.name(), released_cells, suppressed_cells);
        Ok(Released {
            room_id: self.room_id.to_owned(),
            computation: report.computation.clone(),
            run_id: report.run_id.clone(),
            recipient: recipient.to_owned(),
            k: self.k,
            sections,
            json,
            digest,
            audit_seq: entry.seq,
        })
    }
}

/// A lookalike model that passed the release gate and was audited. Only
/// [`ReleaseGate::release_model`] makes one.
#[derive(Debug, Clone)]
pub struct ReleasedModel {
    json: Value,
    digest: String,
    audit_seq: u64,
}

impl ReleasedModel {
    /// The model with its feature schema and release metadata, including `release_digest`.
    pub fn json(&self) -> &Value {
        &self.json
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn audit_seq(&self) -> u64 {
        self.audit_seq
    }
}

/// A lookalike audience that passed the release gate and was audited: the publisher's user ids
/// (column `user_id`) with their rank (column `rank`, 1 = best). Only
/// [`ReleaseGate::release_audience`] makes one.
#[derive(Debug, Clone)]
pub struct ReleasedAudience {
    batch: RecordBatch,
    digest: String,
    audit_seq: u64,
}

impl ReleasedAudience {
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    pub fn size(&self) -> usize {
        self.batch.num_rows()
    }

    /// SHA-256 of the release document (room, computation, run, recipient, time and the ids in
    /// rank order), as audited.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn audit_seq(&self) -> u64 {
        self.audit_seq
    }
}

/// Which run of which computation a release is of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunRef<'a> {
    pub computation: &'a str,
    pub run_id: &'a str,
}

impl ReleaseGate<'_> {
    /// Releases a lookalike's trained model to `recipient` (whom the caller checked is in the
    /// contract's `model_to`): refused unless it was trained on at least k seed users.
    pub(crate) fn release_model(
        &self,
        RunRef { computation, run_id }: RunRef<'_>,
        artifacts: &Artifacts,
        recipient: &str,
        channel: &Channel,
    ) -> Result<ReleasedModel> {
        if artifacts.seed_individuals < u64::from(self.k) {
            return Err(Error::FailedPrecondition(format!(
                "the model of run '{run_id}' was trained on fewer than k = {} seed users; it is not released",
                self.k
            )));
        }
        let mut json = json!({
            "room_id": self.room_id,
            "room_name": self.room_name,
            "computation": computation,
            "run_id": run_id,
            "released_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            "recipient": recipient,
            "k": self.k,
            "privacy": format!(
                "trained inside the engine on {} seed users (at least k = {}); the schema names only category \
                 values held by at least k users and every tree leaf holds at least k users",
                artifacts.seed_individuals, self.k
            ),
            "tee": self.tee.describe(),
            "model_kind": artifacts.model_kind,
            "seed_individuals": artifacts.seed_individuals,
            "model": artifacts.model,
        });
        let digest = document_digest(&json)?;
        if let Value::Object(obj) = &mut json {
            obj.insert("release_digest".into(), Value::String(digest.clone()));
        }
        let entry = self.audit.append(AuditEvent::ModelReleased {
            recipient: recipient.to_owned(),
            computation: computation.to_owned(),
            run_id: run_id.to_owned(),
            channel: channel.name(),
            k: self.k,
            seed_individuals: artifacts.seed_individuals,
            release_sha256: digest.clone(),
        })?;
        self.metrics.released(&channel.name(), 0, 0);
        Ok(ReleasedModel { json, digest, audit_seq: entry.seq })
    }

    /// Releases the top `size` of a lookalike's ranking (publisher users outside the seed) to the
    /// publisher `recipient` (whom the caller checked is the contract's `audience_to`): at least k
    /// users, at most `max_audience` (0: no limit) and the ranking's length.
    pub(crate) fn release_audience(
        &self,
        RunRef { computation, run_id }: RunRef<'_>,
        artifacts: &Artifacts,
        recipient: &str,
        channel: &Channel,
        size: u64,
        max_audience: u64,
    ) -> Result<ReleasedAudience> {
        let k = u64::from(self.k);
        let available = artifacts.ranking.len() as u64;
        let limit = if max_audience == 0 { available } else { max_audience.min(available) };
        if size < k {
            return Err(Error::InvalidRequest(format!(
                "an audience holds at least k = {k} users; ask for {k} to {limit}"
            )));
        }
        if size > limit {
            let why = if limit == max_audience {
                format!("the contract's max_audience is {max_audience}")
            } else {
                format!("{available} publisher users are outside the seed")
            };
            return Err(Error::InvalidRequest(format!(
                "an audience of {size} users is more than this run can give ({why}); ask for {k} to {limit}"
            )));
        }
        let ids = &artifacts.ranking[..size as usize];
        let document = json!({
            "room_id": self.room_id,
            "computation": computation,
            "run_id": run_id,
            "recipient": recipient,
            "released_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            "audience": size,
            "user_ids": ids,
        });
        let digest = document_digest(&document)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("rank", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(ids.iter())),
                Arc::new(UInt64Array::from_iter_values(1..=size)),
            ],
        )
        .map_err(|e| Error::Computation(e.to_string()))?;
        let entry = self.audit.append(AuditEvent::AudienceReleased {
            recipient: recipient.to_owned(),
            computation: computation.to_owned(),
            run_id: run_id.to_owned(),
            channel: channel.name(),
            k: self.k,
            audience: size,
            release_sha256: digest.clone(),
        })?;
        self.metrics.released(&channel.name(), 0, 0);
        Ok(ReleasedAudience { batch, digest, audit_seq: entry.seq })
    }
}

/// Lowercase hex SHA-256 of a JSON document as serialized.
fn document_digest(json: &Value) -> Result<String> {
    let bytes = serde_json::to_vec(json).map_err(|e| Error::Computation(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Recomputes the digest of a released JSON document (as a recipient or auditor would).
pub fn release_digest_of(json: &Value) -> String {
    let mut copy = json.clone();
    if let Value::Object(obj) = &mut copy {
        obj.remove("release_digest");
    }
    document_digest(&copy).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ComputedCell, ComputedRow, ComputedSection};
    use proptest::prelude::*;

    fn report(cells: &[(u64, u64)]) -> ComputedReport {
        ComputedReport {
            computation: "c".into(),
            kind: "overlap".into(),
            run_id: "r".into(),
            computed_at: "t".into(),
            k: 0,
            noise: None,
            sections: vec![ComputedSection {
                name: "by_segment".into(),
                description: String::new(),
                dimensions: vec!["segment".into()],
                metrics: vec![MetricSpec {
                    name: "overlap".into(),
                    kind: MetricKind::Count,
                    description: String::new(),
                }],
                rows: cells
                    .iter()
                    .enumerate()
                    .map(|(i, (v, n))| ComputedRow {
                        dimensions: vec![format!("s{i}")],
                        cells: vec![ComputedCell::count(*v, *n)],
                    })
                    .collect(),
            }],
        }
    }

    fn test_log(path: &std::path::Path) -> AuditLog {
        let room = "1111111111111111111111111111111111111111111111111111111111111111";
        let log = AuditLog::open(path, room, &crate::tee::Enclave::insecure_simulated().unwrap()).unwrap();
        log.append_hosting("Room", 10).unwrap();
        log
    }

    fn gate<'a>(audit: &'a AuditLog, metrics: &'a EngineMetrics, k: u32) -> ReleaseGate<'a> {
        ReleaseGate {
            k,
            room_id: "room",
            room_name: "Room",
            tee: TeeMode(crate::tee::Platform::Simulated),
            audit,
            metrics,
        }
    }

    #[test]
    fn a_cell_at_k_minus_one_is_suppressed_and_at_k_released() {
        let dir = tempfile::tempdir().unwrap();
        let audit = test_log(&dir.path().join("a.jsonl"));
        let released = gate(&audit, &EngineMetrics::unregistered(), 10)
            .release(&report(&[(9, 9), (10, 10)]), "acme", &Channel::Rest)
            .unwrap();
        let rows = released.sections()[0].rows();
        assert_eq!(rows[0].cells()[0], ReleasedCell::Suppressed);
        assert_eq!(rows[1].cells()[0], ReleasedCell::Value(CellValue::Count(10)));
        let json = released.json();
        assert_eq!(json["sections"][0]["rows"][0]["overlap"]["suppressed"], true);
        assert!(json["sections"][0]["rows"][0]["overlap"].get("value").is_none(), "never shown as a number");
        assert_eq!(json["sections"][0]["rows"][1]["overlap"]["value"], 10);
        // The release was audited with the digest of exactly what was released.
        let entries = audit.entries().unwrap();
        let AuditEvent::ResultReleased { release_sha256, cells_released, cells_suppressed, .. } = &entries[1].event
        else {
            panic!("expected a release entry")
        };
        assert_eq!(release_sha256, released.digest());
        assert_eq!((*cells_released, *cells_suppressed), (1, 1));
        assert_eq!(release_digest_of(json), released.digest());
        assert_eq!(json["release_digest"], released.digest());
    }

    #[test]
    fn suppressed_cells_are_null_with_a_flag_in_arrow() {
        let dir = tempfile::tempdir().unwrap();
        let audit = test_log(&dir.path().join("a.jsonl"));
        let released = gate(&audit, &EngineMetrics::unregistered(), 5)
            .release(&report(&[(4, 4), (7, 7)]), "acme", &Channel::Flight)
            .unwrap();
        let batch = released.sections()[0].to_record_batch().unwrap();
        let values = batch.column_by_name("overlap").unwrap();
        assert!(values.is_null(0));
        assert!(!values.is_null(1));
        let flags = batch.column_by_name("overlap_suppressed").unwrap();
        let flags = flags.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert!(flags.value(0) && !flags.value(1));
    }

    proptest! {
        /// For any report and any k, a released cell is about at least k individuals and a
        /// suppressed cell about fewer; no cell is dropped or invented.
        #[test]
        fn no_released_cell_has_fewer_than_k_individuals(
            cells in proptest::collection::vec((0u64..500, 0u64..500), 0..40),
            k in 2u32..300,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let audit = test_log(&dir.path().join("a.jsonl"));
            let released = gate(&audit, &EngineMetrics::unregistered(), k).release(&report(&cells), "acme", &Channel::Rest).unwrap();
            let rows = released.sections()[0].rows();
            prop_assert_eq!(rows.len(), cells.len());
            for (row, (value, individuals)) in rows.iter().zip(&cells) {
                match &row.cells()[0] {
                    ReleasedCell::Value(v) => {
                        prop_assert!(*individuals >= u64::from(k));
                        prop_assert_eq!(*v, CellValue::Count(*value));
                    }
                    ReleasedCell::Suppressed => prop_assert!(*individuals < u64::from(k)),
                }
            }
        }
    }
}
