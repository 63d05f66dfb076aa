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
//! counts distinct individuals per segment in one pass over the memberships (`segments.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use sealroom_proto::room::v1::{IdentifierKind, OverlapComputation, RoomContract, Table};

use super::{InputTable, NoiseSource, linkage, segments};
use crate::dp::NoiseInfo;
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind, MetricSpec};

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
    /// segment → publisher individuals in it (matched or not), when asked for.
    pub base_by_segment: BTreeMap<String, u64>,
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

/// The match of the two tables: the pairs of individuals, and each side's individuals and person
/// keys.
pub(crate) struct Matched {
    pub pairs: linkage::Pairs,
    pub advertiser_individuals: usize,
    pub publisher_individuals: usize,
    /// Person key of each row per side, and the individual of each publisher row.
    pub advertiser_person: ArrayRef,
    pub publisher_person: ArrayRef,
    pub advertiser_of_row: Vec<u32>,
    pub publisher_of_row: Vec<u32>,
}

/// A table's data, or why it is missing.
pub(crate) fn input<'t>(tables: &'t HashMap<String, InputTable>, name: &str) -> Result<&'t InputTable> {
    tables.get(name).ok_or_else(|| Error::FailedPrecondition(format!("table '{name}' is not loaded")))
}

/// A table of the contract, or why it is unknown.
pub(crate) fn table<'c>(contract: &'c RoomContract, name: &str) -> Result<&'c Table> {
    contract.table(name).ok_or_else(|| Error::Contract(format!("the computation names an unknown table '{name}'")))
}

/// Matches the advertiser and publisher tables in tiers, off the async runtime; with
/// `one_to_one`, keeps at most one partner per individual (the contribution bound of differential
/// privacy).
pub(crate) async fn matched(
    contract: &RoomContract,
    spec: &OverlapComputation,
    tables: &HashMap<String, InputTable>,
    one_to_one: bool,
) -> Result<Matched> {
    let advertiser = table(contract, &spec.advertiser_table)?.clone();
    let publisher = table(contract, &spec.publisher_table)?.clone();
    let graph_tables: Vec<(Table, InputTable)> = spec
        .identity_graphs
        .iter()
        .map(|g| Ok((table(contract, g)?.clone(), input(tables, g)?.clone())))
        .collect::<Result<_>>()?;
    let (a_input, p_input) = (input(tables, &advertiser.name)?.clone(), input(tables, &publisher.name)?.clone());
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || -> Result<Matched> {
        let mut a = linkage::Side::new(&advertiser, &a_input)?;
        let mut p = linkage::Side::new(&publisher, &p_input)?;
        let graphs: Vec<(&Table, RecordBatch)> = graph_tables
            .iter()
            .map(|(t, i)| Ok((t, arrow::compute::concat_batches(&i.schema, &i.batches)?)))
            .collect::<Result<_>>()?;
        let mut pairs = linkage::link(&spec, &mut a, &mut p, &graphs)?;
        if one_to_one {
            pairs.one_to_one();
        }
        Ok(Matched {
            pairs,
            advertiser_individuals: a.individuals,
            publisher_individuals: p.individuals,
            advertiser_person: a.person()?,
            publisher_person: p.person()?,
            advertiser_of_row: a.of_row,
            publisher_of_row: p.of_row,
        })
    })
    .await
    .map_err(|e| Error::Computation(format!("matching stopped: {e}")))?
}

pub(crate) async fn counts(
    contract: &RoomContract,
    spec: &OverlapComputation,
    tables: &HashMap<String, InputTable>,
    with_base: bool,
    bound: Option<usize>,
) -> Result<OverlapCounts> {
    let publisher = table(contract, &spec.publisher_table)?.clone();
    let segment_table =
        if spec.segment_table.is_empty() { publisher.clone() } else { table(contract, &spec.segment_table)?.clone() };
    let m = matched(contract, spec, tables, bound.is_some()).await?;
    let (pairs, a_individuals, p_individuals, p_person, p_of_row) =
        (m.pairs, m.advertiser_individuals, m.publisher_individuals, m.publisher_person, m.publisher_of_row);

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

    let segment_columns: Vec<String> =
        segment_table.columns_of_kind(IdentifierKind::Segment).map(|c| c.name.clone()).collect();
    if segment_columns.is_empty() {
        return Ok(counts);
    }
    counts.has_segments = true;
    let segment_input = input(tables, &segment_table.name)?.clone();
    let same_table = segment_table.name == publisher.name;
    let publisher_individuals = p_individuals;
    let partners = segments::Partners::new(pairs.tier_of.keys().copied(), publisher_individuals);
    // Counting reads every membership: off the async runtime too.
    let per_segment = tokio::task::spawn_blocking(move || -> Result<_> {
        // Only the columns counted (and the person key) are concatenated, not the whole table.
        let column = |name: &str| segment_input.column(&segment_table.name, name);
        let columns: Vec<ArrayRef> = segment_columns.iter().map(|c| column(c)).collect::<Result<_>>()?;
        let (of_row, unique_rows) = if same_table {
            let unique = p_of_row.len() == publisher_individuals;
            (p_of_row.into_iter().map(Some).collect::<Vec<_>>(), unique)
        } else {
            // The segment table's rows join the publisher's individuals on the person key.
            let keys = column(linkage::person_column_name(&segment_table))?;
            (linkage::individuals_by_key(p_person.as_ref(), keys.as_ref(), publisher_individuals)?, false)
        };
        segments::count(&columns, &of_row, unique_rows, &partners, linkage::threads(), bound)
    })
    .await
    .map_err(|e| Error::Computation(format!("counting segments stopped: {e}")))??;
    for (segment, c) in per_segment {
        counts.by_segment.insert(segment.clone(), (c.audience, c.partners));
        if with_base {
            counts.base_by_segment.insert(segment, c.base);
        }
    }
    Ok(counts)
}

/// The total L1 sensitivity of the counts [`noisy`] releases, under the contribution bounds (one
/// partner per individual, at most `cap` segments each): one person changes their side's
/// individual count by 1, the matched pairs by 1, the segment audiences by at most `2·cap` (the
/// person and the other end of the matching's alternating path), and the segment bases by `cap`.
pub(crate) fn sensitivity(c: &OverlapCounts, with_base: bool, cap: usize) -> u64 {
    let cap = cap as u64;
    let segments = if c.has_segments { 2 * cap + if with_base { cap } else { 0 } } else { 0 };
    2 + segments
}

/// The counts with discrete Laplace noise, as released under differential privacy: the two sides'
/// individuals, the matched pairs (one count for both sides: the matching is one-to-one), and per
/// segment its audience (and base). A segment whose noisy audience (or base) is under `threshold`
/// (k, or the listing threshold of (ε, δ) if larger) is dropped altogether, so not even its name is
/// listed. Tier gains are not released: one person can move every pair along the matching's
/// alternating path to another tier.
pub(crate) fn noisy(c: &OverlapCounts, noise: &mut crate::dp::Noise, with_base: bool, threshold: u64) -> OverlapCounts {
    let matched = noise.count(c.matched_publisher);
    let mut out = OverlapCounts {
        advertiser_individuals: noise.count(c.advertiser_individuals),
        publisher_individuals: noise.count(c.publisher_individuals),
        matched_advertiser: matched,
        matched_publisher: matched,
        has_segments: c.has_segments,
        ..Default::default()
    };
    // Every segment draws its noise (in name order) whether or not it is listed.
    for (segment, (audience, _)) in &c.by_segment {
        let audience = noise.count(*audience);
        let base =
            if with_base { Some(noise.count(c.base_by_segment.get(segment).copied().unwrap_or(0))) } else { None };
        if audience < threshold || base.is_some_and(|b| b < threshold) {
            continue;
        }
        out.by_segment.insert(segment.clone(), (audience, audience));
        if let Some(base) = base {
            out.base_by_segment.insert(segment.clone(), base);
        }
    }
    out
}

/// The counts with noise as [`noisy`] releases them, with what the report says about the noise and
/// the variance of one draw (for intervals): one scale for the counts' total sensitivity, and a
/// listing threshold for the segments one person can bring (`source.cap`).
pub(crate) fn noised(
    c: &OverlapCounts,
    source: NoiseSource,
    with_base: bool,
    k: u64,
) -> (OverlapCounts, NoiseInfo, f64) {
    let mut noise = crate::dp::Noise::from_os(source.epsilon_micro, sensitivity(c, with_base, source.cap));
    let threshold = noise.listing_threshold(source.cap).max(k);
    let noisy = noisy(c, &mut noise, with_base, threshold);
    (noisy, NoiseInfo::of(&noise, Some(source.cap), threshold), noise.variance())
}

pub(crate) fn metric(name: &str, kind: MetricKind, description: &str) -> MetricSpec {
    MetricSpec { name: name.into(), kind, description: description.into() }
}

/// Which cells of a column that sums to a released total must be suppressed: those about fewer than
/// `k` individuals, and then — because the suppressed cells' total can be worked out from the
/// released ones — more cells, smallest first, until at least two are suppressed and together they
/// count at least `k`, or all are. `cells` are `(value, individuals)`.
pub(crate) fn complementary_suppression(cells: &[(u64, u64)], k: u64) -> Vec<bool> {
    complementary_suppression_from(cells, k, vec![false; cells.len()])
}

/// Rows to hide so that no column's hidden cells can be worked out from its released total:
/// [`complementary_suppression_from`] on every column, starting from `hidden`, until no column
/// adds a row. `columns[c][row]` is `(value, individuals)`.
pub(crate) fn complementary_rows(columns: &[Vec<(u64, u64)>], k: u64, mut hidden: Vec<bool>) -> Vec<bool> {
    loop {
        let mut next = hidden.clone();
        for column in columns {
            for (n, h) in next.iter_mut().zip(complementary_suppression_from(column, k, hidden.clone())) {
                *n |= h;
            }
        }
        if next == hidden {
            return hidden;
        }
        hidden = next;
    }
}

/// [`complementary_suppression`] starting from cells already suppressed for another reason.
pub(crate) fn complementary_suppression_from(cells: &[(u64, u64)], k: u64, already: Vec<bool>) -> Vec<bool> {
    let mut suppressed: Vec<bool> =
        cells.iter().zip(already).map(|((_, individuals), hidden)| hidden || *individuals < k).collect();
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

/// The report sections of an overlap.
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
            rows: {
                // When segments partition the base, the overlaps sum to the released matched count:
                // suppress complementarily, and force the extra cells (about 0 individuals).
                let cells: Vec<(u64, u64)> = c.by_segment.values().map(|(np, na)| (*np, (*np).min(*na))).collect();
                let hidden = complementary_suppression(&cells, k);
                c.by_segment
                    .iter()
                    .zip(hidden)
                    .map(|((segment, (np, na)), hidden)| {
                        let individuals = if hidden { 0 } else { (*np).min(*na) };
                        ComputedRow {
                            dimensions: vec![segment.clone()],
                            cells: vec![
                                ComputedCell::count(*np, individuals),
                                ComputedCell::ratio(*np, c.matched_publisher, individuals.min(overlap_individuals)),
                            ],
                        }
                    })
                    .collect()
            },
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
    noise: Option<NoiseSource>,
) -> Result<(Vec<ComputedSection>, Option<NoiseInfo>)> {
    let k = u64::from(contract.effective_k());
    match noise {
        None => Ok((sections(&counts(contract, spec, tables, false, None).await?, k), None)),
        Some(source) => {
            let c = counts(contract, spec, tables, false, Some(source.cap)).await?;
            let (noisy, info, _) = noised(&c, source, false, k);
            Ok((sections(&noisy, k), Some(info)))
        }
    }
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
