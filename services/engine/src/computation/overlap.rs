//! Overlap: exact match of an advertiser table and a publisher table on hashed identifiers.
//!
//! Privacy argument (see docs/computations/overlap.md): every number released is a count of distinct
//! individuals or a ratio of such counts; each cell carries the number of distinct matched
//! individuals it is about (the smaller of the advertiser-side and publisher-side counts), and the
//! release gate suppresses it when that is under k. Match rates are suppressed when the overlap is
//! under k. Segments are listed in name order, never by size, so the order of rows leaks nothing
//! about suppressed cells.
//!
//! The match is columnar: both sides' identifier columns (32-byte SHA-256 digests) are unioned into
//! (individual, key kind, key) relations and hash-joined by DataFusion; a pair of individuals matched
//! by several keys is one pair (`DISTINCT`), and every count is `COUNT(DISTINCT …)`, so an individual
//! matched by email and phone counts once.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use sealroom_proto::room::v1::{ColumnType, IdentifierKind, OverlapComputation, RoomContract, Table};

use super::{InputTable, quote, session};
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind, MetricSpec};
use crate::schema::ROW_ID_COLUMN;

const ADVERTISER: &str = "advertiser";
const PUBLISHER: &str = "publisher";
const SEGMENTS: &str = "segments";

fn person_expr(table: &Table) -> String {
    quote(table.user_id_column().map_or(ROW_ID_COLUMN, |c| c.name.as_str()))
}

/// The identifier kinds to match on: the contract's list, or every hashed kind both tables carry.
fn match_kinds(spec: &OverlapComputation, advertiser: &Table, publisher: &Table) -> Vec<IdentifierKind> {
    let listed: Vec<IdentifierKind> = spec.match_on().collect();
    if !listed.is_empty() {
        return listed;
    }
    [IdentifierKind::HashedEmail, IdentifierKind::HashedPhone]
        .into_iter()
        .filter(|k| advertiser.columns_of_kind(*k).next().is_some() && publisher.columns_of_kind(*k).next().is_some())
        .collect()
}

/// `(person, kind, k)` for every non-null identifier of the given kinds.
fn keys_sql(table: &Table, registered: &str, kinds: &[IdentifierKind]) -> String {
    let person = person_expr(table);
    let parts: Vec<String> = kinds
        .iter()
        .flat_map(|kind| {
            let person = person.clone();
            table.columns_of_kind(*kind).map(move |c| {
                format!(
                    "SELECT {person} AS person, {code} AS kind, {col} AS k FROM {registered} WHERE {col} IS NOT NULL",
                    code = *kind as i32,
                    col = quote(&c.name)
                )
            })
        })
        .collect();
    parts.join(" UNION ALL ")
}

/// `(person, segment)` for every segment membership.
fn segments_sql(table: &Table, registered: &str) -> Option<String> {
    let person = person_expr(table);
    let parts: Vec<String> = table
        .columns_of_kind(IdentifierKind::Segment)
        .map(|c| {
            let col = quote(&c.name);
            if c.r#type() == ColumnType::StringList {
                format!(
                    "SELECT person, segment FROM (SELECT {person} AS person, unnest({col}) AS segment FROM {registered} \
                     WHERE {col} IS NOT NULL) WHERE segment IS NOT NULL"
                )
            } else {
                format!("SELECT {person} AS person, {col} AS segment FROM {registered} WHERE {col} IS NOT NULL")
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" UNION ALL "))
}

async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

fn int_at(batches: &[RecordBatch], column: usize) -> Result<u64> {
    let batch =
        batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| Error::Computation("empty aggregate".into()))?;
    let array = batch.column(column);
    if array.data_type() != &DataType::Int64 {
        return Err(Error::Computation(format!("unexpected aggregate type {}", array.data_type())));
    }
    Ok(u64::try_from(array.as_primitive::<Int64Type>().value(0)).unwrap_or(0))
}

/// The counts overlap computes, before any suppression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OverlapCounts {
    pub advertiser_individuals: u64,
    pub publisher_individuals: u64,
    pub matched_advertiser: u64,
    pub matched_publisher: u64,
    /// segment → (matched publisher individuals, matched advertiser individuals); every segment of
    /// the publisher appears, with (0, 0) when none of its users matched.
    pub by_segment: BTreeMap<String, (u64, u64)>,
    pub has_segments: bool,
}

pub(crate) async fn counts(
    contract: &RoomContract,
    spec: &OverlapComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<OverlapCounts> {
    let table = |name: &str| {
        contract.table(name).ok_or_else(|| Error::Contract(format!("overlap names an unknown table '{name}'")))
    };
    let advertiser = table(&spec.advertiser_table)?;
    let publisher = table(&spec.publisher_table)?;
    let segment_table = if spec.segment_table.is_empty() { publisher } else { table(&spec.segment_table)? };
    let input = |name: &str| {
        tables.get(name).cloned().ok_or_else(|| Error::FailedPrecondition(format!("table '{name}' is not loaded")))
    };
    let mut registered = HashMap::new();
    registered.insert(ADVERTISER.to_owned(), input(&advertiser.name)?);
    registered.insert(PUBLISHER.to_owned(), input(&publisher.name)?);
    let segment_registered = if segment_table.name == publisher.name {
        PUBLISHER
    } else {
        registered.insert(SEGMENTS.to_owned(), input(&segment_table.name)?);
        SEGMENTS
    };
    let ctx = session(&registered)?;

    let kinds = match_kinds(spec, advertiser, publisher);
    if kinds.is_empty() {
        return Err(Error::Contract("overlap has no identifier kind to match on".into()));
    }
    let matched_sql = format!(
        "SELECT DISTINCT a.person AS ap, p.person AS pp FROM ({}) a JOIN ({}) p ON a.kind = p.kind AND a.k = p.k",
        keys_sql(advertiser, ADVERTISER, &kinds),
        keys_sql(publisher, PUBLISHER, &kinds)
    );
    let df = ctx.sql(&matched_sql).await?;
    let schema = df.schema().inner().clone();
    let matched = df.collect().await?;
    ctx.register_table("matched", std::sync::Arc::new(MemTable::try_new(schema, vec![matched])?))?;

    let totals = collect(
        &ctx,
        &format!(
            "SELECT (SELECT count(DISTINCT {}) FROM {ADVERTISER}), (SELECT count(DISTINCT {}) FROM {PUBLISHER}), \
             (SELECT count(DISTINCT ap) FROM matched), (SELECT count(DISTINCT pp) FROM matched)",
            person_expr(advertiser),
            person_expr(publisher)
        ),
    )
    .await?;
    let mut counts = OverlapCounts {
        advertiser_individuals: int_at(&totals, 0)?,
        publisher_individuals: int_at(&totals, 1)?,
        matched_advertiser: int_at(&totals, 2)?,
        matched_publisher: int_at(&totals, 3)?,
        ..Default::default()
    };

    if let Some(segments) = segments_sql(segment_table, segment_registered) {
        counts.has_segments = true;
        let all = collect(&ctx, &format!("SELECT DISTINCT segment FROM ({segments}) s")).await?;
        for batch in &all {
            let names = batch.column(0).as_string::<i32>();
            for i in 0..names.len() {
                counts.by_segment.insert(names.value(i).to_owned(), (0, 0));
            }
        }
        let per_segment = collect(
            &ctx,
            &format!(
                "SELECT s.segment, count(DISTINCT m.pp), count(DISTINCT m.ap) FROM matched m JOIN ({segments}) s \
                 ON m.pp = s.person GROUP BY s.segment"
            ),
        )
        .await?;
        for batch in &per_segment {
            let names = batch.column(0).as_string::<i32>();
            let np = batch.column(1).as_primitive::<Int64Type>();
            let na = batch.column(2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                counts.by_segment.insert(
                    names.value(i).to_owned(),
                    (u64::try_from(np.value(i)).unwrap_or(0), u64::try_from(na.value(i)).unwrap_or(0)),
                );
            }
        }
    }
    Ok(counts)
}

fn metric(name: &str, kind: MetricKind, description: &str) -> MetricSpec {
    MetricSpec { name: name.into(), kind, description: description.into() }
}

/// The report sections of an overlap.
pub(crate) fn sections(c: &OverlapCounts) -> Vec<ComputedSection> {
    // The overlap is about the matched individuals of both sides; a cell about it is as small as the
    // smaller side.
    let overlap_individuals = c.matched_advertiser.min(c.matched_publisher);
    let summary = ComputedSection {
        name: "summary".into(),
        description: "Overlap of the advertiser and publisher tables, with match rates from each side's denominator"
            .into(),
        dimensions: vec![],
        metrics: vec![
            metric("advertiser_individuals", MetricKind::Count, "distinct individuals in the advertiser table"),
            metric("publisher_individuals", MetricKind::Count, "distinct individuals in the publisher table"),
            metric(
                "matched_advertiser_individuals",
                MetricKind::Count,
                "advertiser individuals matched to at least one publisher individual (counted once however many keys matched)",
            ),
            metric(
                "matched_publisher_individuals",
                MetricKind::Count,
                "publisher individuals matched to at least one advertiser individual (counted once however many keys matched)",
            ),
            metric(
                "match_rate_advertiser",
                MetricKind::Ratio,
                "matched_advertiser_individuals / advertiser_individuals: the share of the advertiser's list found",
            ),
            metric(
                "match_rate_publisher",
                MetricKind::Ratio,
                "matched_publisher_individuals / publisher_individuals: the share of the publisher's base matched",
            ),
        ],
        rows: vec![ComputedRow {
            dimensions: vec![],
            cells: vec![
                ComputedCell::count(c.advertiser_individuals, c.advertiser_individuals),
                ComputedCell::count(c.publisher_individuals, c.publisher_individuals),
                ComputedCell::count(c.matched_advertiser, overlap_individuals),
                ComputedCell::count(c.matched_publisher, overlap_individuals),
                ComputedCell::ratio(
                    c.matched_advertiser,
                    c.advertiser_individuals,
                    overlap_individuals.min(c.advertiser_individuals),
                ),
                ComputedCell::ratio(
                    c.matched_publisher,
                    c.publisher_individuals,
                    overlap_individuals.min(c.publisher_individuals),
                ),
            ],
        }],
    };
    let mut sections = vec![summary];
    if c.has_segments {
        sections.push(ComputedSection {
            name: "by_segment".into(),
            description: "Matched publisher individuals in each publisher segment, in segment-name order".into(),
            dimensions: vec!["segment".into()],
            metrics: vec![
                metric("overlap", MetricKind::Count, "matched publisher individuals in the segment"),
                metric(
                    "share_of_overlap",
                    MetricKind::Ratio,
                    "overlap / matched_publisher_individuals: the segment's share of the matched audience",
                ),
            ],
            rows: c
                .by_segment
                .iter()
                .map(|(segment, (np, na))| {
                    let individuals = (*np).min(*na);
                    ComputedRow {
                        dimensions: vec![segment.clone()],
                        cells: vec![
                            ComputedCell::count(*np, individuals),
                            ComputedCell::ratio(*np, c.matched_publisher, individuals.min(overlap_individuals)),
                        ],
                    }
                })
                .collect(),
        });
    }
    sections
}

pub(crate) async fn run(
    contract: &RoomContract,
    spec: &OverlapComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<Vec<ComputedSection>> {
    Ok(sections(&counts(contract, spec, tables).await?))
}
