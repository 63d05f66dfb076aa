//! Overlap: the match of an advertiser table and a publisher table, its match rates, what each
//! matching tier added, and the overlap by publisher segment.
//!
//! Privacy argument (see docs/computations/overlap.md): every number released is a count of distinct
//! individuals or a ratio of such counts; each cell carries the number of distinct matched
//! individuals it is about (the smaller of the advertiser-side and publisher-side counts), and the
//! release gate suppresses it when that is under k. Match rates are suppressed when the overlap is
//! under k. The tier gains of a side sum to its matched count, which is released, so they are
//! suppressed complementarily: never exactly one, and never a suppressed total under k. Segments are
//! listed in name order and tiers in contract order, never by size, so the order of rows leaks
//! nothing about suppressed cells.
//!
//! Matching (`linkage.rs`) runs the tiers with the matching library: a radix hash join of 32-byte
//! digests per exact key kind, identity-graph components, fuzzy and CLK matching; a pair of
//! individuals matched several ways is one pair, credited to the first tier. The segment breakdown
//! joins the matched pairs to the segment memberships in DataFusion with `COUNT(DISTINCT …)`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use sealroom_proto::room::v1::{ColumnType, IdentifierKind, OverlapComputation, RoomContract, Table};

use super::{InputTable, linkage, quote, session};
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind, MetricSpec};
use crate::schema::ROW_ID_COLUMN;

const PUBLISHER: &str = "publisher";
const SEGMENTS: &str = "segments";

fn person_expr(table: &Table) -> String {
    quote(table.user_id_column().map_or(ROW_ID_COLUMN, |c| c.name.as_str()))
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

/// What one matching tier added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TierCounts {
    pub tier: String,
    /// Advertiser individuals this tier matched first, and the publisher individuals it paired
    /// them with.
    pub added_advertiser: u64,
    pub added_advertiser_partners: u64,
    /// Publisher individuals this tier matched first, and the advertiser individuals it paired
    /// them with.
    pub added_publisher: u64,
    pub added_publisher_partners: u64,
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
    /// What each tier added, in tier order.
    pub by_tier: Vec<TierCounts>,
}

/// Per tier: the individuals of one side it matched first, and their partners in that tier.
fn tier_gains(pairs: &linkage::Pairs, advertiser_side: bool) -> Vec<(u64, u64)> {
    // The first tier of each individual of this side.
    let mut first: HashMap<u32, u8> = HashMap::new();
    for (&(a, p), &t) in &pairs.tier_of {
        let me = if advertiser_side { a } else { p };
        let e = first.entry(me).or_insert(t);
        *e = (*e).min(t);
    }
    let mut added = vec![0u64; pairs.tiers.len()];
    for t in first.values() {
        added[*t as usize] += 1;
    }
    let mut partners: Vec<HashSet<u32>> = vec![HashSet::new(); pairs.tiers.len()];
    for (&(a, p), &t) in &pairs.tier_of {
        let (me, other) = if advertiser_side { (a, p) } else { (p, a) };
        if first.get(&me) == Some(&t) {
            partners[t as usize].insert(other);
        }
    }
    added.into_iter().zip(partners).map(|(n, p)| (n, p.len() as u64)).collect()
}

pub(crate) async fn counts(
    contract: &RoomContract,
    spec: &OverlapComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<OverlapCounts> {
    let table = |name: &str| {
        contract.table(name).ok_or_else(|| Error::Contract(format!("overlap names an unknown table '{name}'")))
    };
    let advertiser = table(&spec.advertiser_table)?.clone();
    let publisher = table(&spec.publisher_table)?.clone();
    let segment_table =
        if spec.segment_table.is_empty() { publisher.clone() } else { table(&spec.segment_table)?.clone() };
    let input = |name: &str| {
        tables.get(name).cloned().ok_or_else(|| Error::FailedPrecondition(format!("table '{name}' is not loaded")))
    };
    let graph_tables: Vec<(Table, InputTable)> =
        spec.identity_graphs.iter().map(|g| Ok((table(g)?.clone(), input(g)?))).collect::<Result<_>>()?;
    let (a_input, p_input) = (input(&advertiser.name)?, input(&publisher.name)?);

    // Matching is CPU-bound: off the async runtime.
    let spec_owned = spec.clone();
    let (advertiser_t, publisher_t) = (advertiser.clone(), publisher.clone());
    let linked = tokio::task::spawn_blocking(move || -> Result<_> {
        let a = linkage::Side::new(&advertiser_t, &a_input)?;
        let p = linkage::Side::new(&publisher_t, &p_input)?;
        let graphs: Vec<(&Table, RecordBatch)> = graph_tables
            .iter()
            .map(|(t, i)| Ok((t, arrow::compute::concat_batches(&i.schema, &i.batches)?)))
            .collect::<Result<_>>()?;
        let pairs = linkage::link(&spec_owned, &a, &p, &graphs)?;
        Ok((pairs, a.individuals, p.individuals, p.person()?, p.of_row))
    })
    .await
    .map_err(|e| Error::Computation(format!("matching stopped: {e}")))??;
    let (pairs, a_individuals, p_individuals, p_person, p_of_row) = linked;

    let matched_a: HashSet<u32> = pairs.tier_of.keys().map(|(a, _)| *a).collect();
    let matched_p: HashSet<u32> = pairs.tier_of.keys().map(|(_, p)| *p).collect();
    let a_gains = tier_gains(&pairs, true);
    let p_gains = tier_gains(&pairs, false);
    let mut counts = OverlapCounts {
        advertiser_individuals: a_individuals as u64,
        publisher_individuals: p_individuals as u64,
        matched_advertiser: matched_a.len() as u64,
        matched_publisher: matched_p.len() as u64,
        by_tier: pairs
            .tiers
            .iter()
            .enumerate()
            .map(|(t, name)| TierCounts {
                tier: name.clone(),
                added_advertiser: a_gains[t].0,
                added_advertiser_partners: a_gains[t].1,
                added_publisher: p_gains[t].0,
                added_publisher_partners: p_gains[t].1,
            })
            .collect(),
        ..Default::default()
    };

    let mut registered = HashMap::new();
    let segment_registered = if segment_table.name == publisher.name {
        registered.insert(PUBLISHER.to_owned(), input(&publisher.name)?);
        PUBLISHER
    } else {
        registered.insert(SEGMENTS.to_owned(), input(&segment_table.name)?);
        SEGMENTS
    };
    let Some(segments) = segments_sql(&segment_table, segment_registered) else {
        return Ok(counts);
    };
    let ctx = session(&registered)?;
    // The publisher's person keys and their individuals, and the matched pairs, as tables.
    let individuals =
        RecordBatch::try_from_iter([("person", p_person), ("ind", linkage::individual_column(&p_of_row))])?;
    ctx.register_table("pind", Arc::new(MemTable::try_new(individuals.schema(), vec![vec![individuals]])?))?;
    let (ap, pp): (Vec<i64>, Vec<i64>) = pairs.tier_of.keys().map(|(a, p)| (i64::from(*a), i64::from(*p))).unzip();
    let matched = RecordBatch::try_from_iter([
        ("ap", Arc::new(Int64Array::from(ap)) as ArrayRef),
        ("pp", Arc::new(Int64Array::from(pp)) as ArrayRef),
    ])?;
    ctx.register_table("matched", Arc::new(MemTable::try_new(matched.schema(), vec![vec![matched]])?))?;

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
            "SELECT s.segment, count(DISTINCT m.pp), count(DISTINCT m.ap) FROM matched m \
             JOIN (SELECT DISTINCT person, ind FROM pind) i ON m.pp = i.ind \
             JOIN ({segments}) s ON i.person = s.person GROUP BY s.segment"
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
    Ok(counts)
}

fn metric(name: &str, kind: MetricKind, description: &str) -> MetricSpec {
    MetricSpec { name: name.into(), kind, description: description.into() }
}

/// The report sections of an overlap.
/// Which cells of a column that sums to a released total must be suppressed: those about fewer than
/// `k` individuals, and then — because the suppressed cells' total can be worked out from the
/// released ones — more cells, smallest first, until at least two are suppressed and together they
/// count at least `k`, or all are. `cells` are `(value, individuals)`.
pub(crate) fn complementary_suppression(cells: &[(u64, u64)], k: u64) -> Vec<bool> {
    let mut suppressed: Vec<bool> = cells.iter().map(|(_, individuals)| *individuals < k).collect();
    loop {
        let hidden: Vec<usize> = (0..cells.len()).filter(|i| suppressed[*i]).collect();
        let total: u64 = hidden.iter().map(|i| cells[*i].0).sum();
        if hidden.is_empty() || hidden.len() == cells.len() || (hidden.len() >= 2 && total >= k) {
            return suppressed;
        }
        let Some(next) = (0..cells.len()).filter(|i| !suppressed[*i]).min_by_key(|i| (cells[*i].0, *i)) else {
            return suppressed;
        };
        suppressed[next] = true;
    }
}

pub(crate) fn sections(c: &OverlapCounts, k: u64) -> Vec<ComputedSection> {
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
    if !c.by_tier.is_empty() {
        sections.push(ComputedSection {
            name: "by_tier".into(),
            description: "What each matching tier added, in the order the tiers run; an individual matched by \
                          several tiers is credited to the first"
                .into(),
            dimensions: vec!["tier".into()],
            metrics: vec![
                metric(
                    "added_advertiser_individuals",
                    MetricKind::Count,
                    "advertiser individuals this tier matched that no earlier tier had",
                ),
                metric(
                    "added_publisher_individuals",
                    MetricKind::Count,
                    "publisher individuals this tier matched that no earlier tier had",
                ),
                metric(
                    "match_rate_gain_advertiser",
                    MetricKind::Ratio,
                    "added_advertiser_individuals / advertiser_individuals: how much this tier raised the advertiser's match rate",
                ),
            ],
            rows: {
                // A cell about the individuals a tier added is as small as the smaller of them and
                // the individuals they were paired with; forced suppression makes it 0.
                let a: Vec<(u64, u64)> = c
                    .by_tier
                    .iter()
                    .map(|t| (t.added_advertiser, t.added_advertiser.min(t.added_advertiser_partners)))
                    .collect();
                let p: Vec<(u64, u64)> = c
                    .by_tier
                    .iter()
                    .map(|t| (t.added_publisher, t.added_publisher.min(t.added_publisher_partners)))
                    .collect();
                let (a_hidden, p_hidden) = (complementary_suppression(&a, k), complementary_suppression(&p, k));
                let individuals = |cell: (u64, u64), hidden: bool| if hidden { 0 } else { cell.1 };
                c.by_tier
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let ai = individuals(a[i], a_hidden[i]);
                        ComputedRow {
                            dimensions: vec![t.tier.clone()],
                            cells: vec![
                                ComputedCell::count(t.added_advertiser, ai),
                                ComputedCell::count(t.added_publisher, individuals(p[i], p_hidden[i])),
                                ComputedCell::ratio(t.added_advertiser, c.advertiser_individuals, ai),
                            ],
                        }
                    })
                    .collect()
            },
        });
    }
    sections
}

pub(crate) async fn run(
    contract: &RoomContract,
    spec: &OverlapComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<Vec<ComputedSection>> {
    Ok(sections(&counts(contract, spec, tables).await?, u64::from(contract.effective_k())))
}

#[cfg(test)]
mod tests {
    use super::complementary_suppression;
    use proptest::prelude::*;

    #[test]
    fn one_suppressed_cell_takes_the_smallest_other_with_it() {
        // Email added 5,000, phone 400, fuzzy 30: fuzzy alone would be matched − 5,400.
        assert_eq!(complementary_suppression(&[(5000, 5000), (400, 400), (30, 30)], 100), [false, true, true]);
        // Two small cells whose total is still under k pull in a third.
        assert_eq!(
            complementary_suppression(&[(5000, 5000), (400, 400), (30, 30), (20, 20)], 100),
            [false, true, true, true]
        );
        // Nothing under k: nothing hidden.
        assert_eq!(complementary_suppression(&[(500, 500), (400, 400)], 100), [false, false]);
        // A cell about few individuals is hidden even if its value is large.
        assert_eq!(complementary_suppression(&[(500, 5), (400, 400)], 100), [true, true]);
    }

    proptest! {
        /// Whatever the cells, the suppressed ones are never exactly one, and together they count
        /// at least k or are all the cells; every cell about fewer than k individuals is hidden.
        #[test]
        fn suppressed_totals_are_never_recoverable(cells in proptest::collection::vec((0u64..300, 0u64..300), 1..8), k in 1u64..200) {
            let hidden = complementary_suppression(&cells, k);
            let n = hidden.iter().filter(|h| **h).count();
            let total: u64 = cells.iter().zip(&hidden).filter(|(_, h)| **h).map(|(c, _)| c.0).sum();
            prop_assert!(n == 0 || n == cells.len() || (n >= 2 && total >= k));
            for (c, h) in cells.iter().zip(&hidden) {
                prop_assert!(c.1 >= k || *h);
            }
        }
    }
}
