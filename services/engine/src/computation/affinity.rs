//! Top-affinity segments: which publisher segments are over-represented in the matched audience.
//!
//! For a segment `s`, with `a` matched publisher individuals in it out of `n1` matched in all, and `b`
//! publisher individuals in it out of `n2` in the base:
//!
//! - share of audience `a / n1`, share of base `b / n2`;
//! - affinity index `100 · (a / n1) / (b / n2)` (100: as common in the audience as in the base);
//! - lift `index / 100 − 1`;
//! - a confidence interval of the index by the log method for a ratio of two proportions (Katz):
//!   `exp(ln(index) ± z · √(1/a − 1/n1 + 1/b − 1/n2))`. It treats audience and base as independent
//!   samples; the audience is part of the base, so the two shares are positively correlated and
//!   the true interval is narrower: this one is conservative.
//!
//! Privacy argument (docs/computations/affinity.md): a segment is ranked only when `a`, `b` and the
//! advertiser individuals paired with its audience all reach k, and every cell of its row is about
//! the smallest of them, so the release gate
//! suppresses the whole row otherwise. Because a publisher's segments may partition its base (age
//! brackets), the audience and base counts of the segments can sum to the released totals; so the
//! withheld rows are suppressed complementarily (never one alone, never totalling under k) for both
//! columns. Ranked rows come first, best index first, and withheld rows after them in name order, so
//! a row's position reveals nothing that its released numbers do not.

use std::collections::HashMap;

use sealroom_proto::room::v1::{AffinityComputation, RoomContract};

use super::overlap::{OverlapCounts, complementary_rows, counts, metric, noised};
use super::{InputTable, NoiseSource};
use crate::dp::NoiseInfo;
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind};

/// One segment's numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SegmentAffinity {
    pub segment: String,
    /// Matched publisher individuals in the segment.
    pub audience: u64,
    /// Advertiser individuals paired with the audience (fewer when several customers share one
    /// publisher user's key, more when one customer matches several users).
    pub partners: u64,
    /// Publisher individuals in the segment.
    pub base: u64,
    pub index: f64,
    pub low: f64,
    pub high: f64,
}

impl SegmentAffinity {
    /// The individuals the segment's numbers are about: its audience, their partners on the
    /// advertiser's side, and its base; the smallest group decides.
    fn individuals(&self) -> u64 {
        self.audience.min(self.partners).min(self.base)
    }
}

/// Index and interval of one segment; 0 when a count is 0 (such a row is never released).
/// `noise_variance` is the variance of the differential-privacy noise on each of the four counts
/// (0 without it): by the delta method it adds `v / x²` to the variance of each `ln x`.
pub(crate) fn affinity(
    audience: u64,
    matched: u64,
    base: u64,
    publisher: u64,
    z: f64,
    noise_variance: f64,
) -> (f64, f64, f64) {
    if audience == 0 || matched == 0 || base == 0 || publisher == 0 {
        return (0.0, 0.0, 0.0);
    }
    let (a, n1, b, n2) = (audience as f64, matched as f64, base as f64, publisher as f64);
    let index = 100.0 * (a / n1) / (b / n2);
    let sampling = (1.0 / a - 1.0 / n1 + 1.0 / b - 1.0 / n2).max(0.0);
    let noise = noise_variance * (1.0 / (a * a) + 1.0 / (n1 * n1) + 1.0 / (b * b) + 1.0 / (n2 * n2));
    let se = (sampling + noise).sqrt();
    (index, index * (-z * se).exp(), index * (z * se).exp())
}

/// Which segments are ranked and which withheld, and the ranked ones' order.
pub(crate) fn rank(segments: &[SegmentAffinity], k: u64, top: usize) -> (Vec<usize>, Vec<usize>) {
    let below: Vec<bool> = segments.iter().map(|s| s.individuals() < k).collect();
    let audience: Vec<(u64, u64)> = segments.iter().map(|s| (s.audience, s.individuals())).collect();
    let base: Vec<(u64, u64)> = segments.iter().map(|s| (s.base, s.individuals())).collect();
    // Complementary suppression on both columns until neither adds a row.
    let hidden = complementary_rows(&[audience, base], k, below);
    let mut ranked: Vec<usize> = (0..segments.len()).filter(|i| !hidden[*i]).collect();
    ranked.sort_by(|x, y| {
        segments[*y].index.total_cmp(&segments[*x].index).then_with(|| segments[*x].segment.cmp(&segments[*y].segment))
    });
    if top > 0 {
        ranked.truncate(top);
    }
    let mut withheld: Vec<usize> = (0..segments.len()).filter(|i| hidden[*i]).collect();
    withheld.sort_by(|x, y| segments[*x].segment.cmp(&segments[*y].segment));
    (ranked, withheld)
}

pub(crate) fn sections(
    c: &OverlapCounts,
    spec: &AffinityComputation,
    k: u64,
    noise_variance: f64,
) -> Result<Vec<ComputedSection>> {
    let (level, z) = sealroom_proto::confidence(spec.confidence)
        .ok_or_else(|| Error::Contract(format!("affinity.confidence {} is not offered", spec.confidence)))?;
    let overlap_individuals = c.matched_advertiser.min(c.matched_publisher);
    let segments: Vec<SegmentAffinity> = c
        .base_by_segment
        .iter()
        .map(|(segment, base)| {
            let (audience, partners) = c.by_segment.get(segment).copied().unwrap_or((0, 0));
            let (index, low, high) =
                affinity(audience, c.matched_publisher, *base, c.publisher_individuals, z, noise_variance);
            SegmentAffinity { segment: segment.clone(), audience, partners, base: *base, index, low, high }
        })
        .collect();
    let (ranked, withheld) = rank(&segments, k, spec.top as usize);

    let summary = ComputedSection {
        name: "summary".into(),
        description: "The matched audience and the publisher base the shares are taken of".into(),
        dimensions: vec![],
        metrics: vec![
            metric("publisher_individuals", MetricKind::Count, "distinct individuals in the publisher's base"),
            metric(
                "matched_publisher_individuals",
                MetricKind::Count,
                "publisher individuals matched to the advertiser's list: the audience",
            ),
        ],
        rows: vec![ComputedRow {
            dimensions: vec![],
            cells: vec![
                ComputedCell::count(c.publisher_individuals, c.publisher_individuals),
                ComputedCell::count(c.matched_publisher, overlap_individuals),
            ],
        }],
    };
    let pct = (level * 100.0).round();
    let row = |rank: Option<usize>, s: &SegmentAffinity| {
        // Every number of the row is about the segment's audience and its base: the smaller decides.
        // A withheld row may be withheld only to protect another (complementary suppression): it is
        // about 0 individuals, so the gate suppresses it whatever its counts.
        let n = if rank.is_some() { s.individuals().min(overlap_individuals) } else { 0 };
        let rank = rank.map_or_else(|| "withheld".to_owned(), |r| r.to_string());
        ComputedRow {
            dimensions: vec![rank, s.segment.clone()],
            cells: vec![
                ComputedCell::count(s.audience, n),
                ComputedCell::count(s.base, n),
                ComputedCell::ratio(s.audience, c.matched_publisher, n),
                ComputedCell::ratio(s.base, c.publisher_individuals, n),
                ComputedCell::number(s.index, n),
                ComputedCell::number(s.low, n),
                ComputedCell::number(s.high, n),
                ComputedCell::number(s.index / 100.0 - 1.0, n),
            ],
        }
    };
    let mut rows: Vec<ComputedRow> = ranked.iter().enumerate().map(|(r, i)| row(Some(r + 1), &segments[*i])).collect();
    rows.extend(withheld.iter().map(|i| row(None, &segments[*i])));
    let affinity = ComputedSection {
        name: "affinity".into(),
        description: format!(
            "Publisher segments by affinity index, highest first; a segment is ranked only when its audience and its \
             base both reach k, and withheld segments follow in name order. Intervals at {pct}% confidence \
             (log method, conservative)"
        ),
        dimensions: vec!["rank".into(), "segment".into()],
        metrics: vec![
            metric("audience", MetricKind::Count, "matched publisher individuals in the segment"),
            metric("base", MetricKind::Count, "publisher individuals in the segment"),
            metric("share_of_audience", MetricKind::Ratio, "audience / matched_publisher_individuals"),
            metric("share_of_base", MetricKind::Ratio, "base / publisher_individuals"),
            metric(
                "affinity_index",
                MetricKind::Number,
                "100 × share_of_audience / share_of_base: 100 means as common in the audience as in the base",
            ),
            metric("index_low", MetricKind::Number, "lower bound of the affinity index's confidence interval"),
            metric("index_high", MetricKind::Number, "upper bound of the affinity index's confidence interval"),
            metric("lift", MetricKind::Number, "affinity_index / 100 − 1: 0.25 means 25% more common in the audience"),
        ],
        rows,
    };
    Ok(vec![summary, affinity])
}

pub(crate) async fn run(
    contract: &RoomContract,
    spec: &AffinityComputation,
    tables: &HashMap<String, InputTable>,
    noise: Option<NoiseSource>,
) -> Result<(Vec<ComputedSection>, Option<NoiseInfo>)> {
    let matching = spec.matching.as_ref().ok_or_else(|| Error::Contract("affinity needs `matching:`".to_owned()))?;
    let k = u64::from(contract.effective_k());
    let counts = counts(contract, matching, tables, true, noise.as_ref().map(|n| n.cap)).await?;
    if !counts.has_segments {
        return Err(Error::Contract(
            "affinity: the publisher table (or segment_table) has no segment column to rank".to_owned(),
        ));
    }
    match noise {
        None => Ok((sections(&counts, spec, k, 0.0)?, None)),
        Some(source) => {
            let (noisy, info, variance) = noised(&counts, source, true, k);
            Ok((sections(&noisy, spec, k, variance)?, Some(info)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(name: &str, audience: u64, base: u64) -> SegmentAffinity {
        let (index, low, high) = affinity(audience, 1000, base, 100_000, 1.96, 0.0);
        SegmentAffinity { segment: name.into(), audience, partners: audience, base, index, low, high }
    }

    #[test]
    fn index_and_interval_match_a_hand_computation() {
        // 200 of 1,000 matched are in a segment that holds 10,000 of 100,000: twice as common.
        let (index, low, high) = affinity(200, 1000, 10_000, 100_000, 1.959_963_984_540, 0.0);
        assert!((index - 200.0).abs() < 1e-9);
        let se = (1.0f64 / 200.0 - 1.0 / 1000.0 + 1.0 / 10_000.0 - 1.0 / 100_000.0).sqrt();
        assert!((low - 200.0 * (-1.959_963_984_540 * se).exp()).abs() < 1e-9);
        assert!((high - 200.0 * (1.959_963_984_540 * se).exp()).abs() < 1e-9);
        assert!(low < index && index < high);
        assert_eq!(affinity(0, 1000, 10, 100, 1.96, 0.0), (0.0, 0.0, 0.0));
        // Noise on the counts widens the interval around the same index.
        let (noisy_index, noisy_low, noisy_high) = affinity(200, 1000, 10_000, 100_000, 1.959_963_984_540, 800.0);
        assert!((noisy_index - index).abs() < 1e-9 && noisy_low < low && noisy_high > high);
    }

    #[test]
    fn ranking_is_by_index_and_withheld_rows_follow_by_name() {
        let segments = vec![seg("a", 50, 1000), seg("b", 300, 10_000), seg("c", 5, 100), seg("d", 120, 20_000)];
        let (ranked, withheld) = rank(&segments, 20, 0);
        // c is under k; it alone would be recoverable, so the smallest other audience (a, 50) joins it.
        assert_eq!(withheld, vec![0, 2]);
        assert_eq!(ranked, vec![1, 3], "b (index 300) before d (60)");
        let (ranked, _) = rank(&segments, 20, 1);
        assert_eq!(ranked, vec![1]);
    }

    proptest! {
        /// Whatever the segments: a ranked segment has audience and base ≥ k; withheld rows are none,
        /// all, or at least two whose audiences and whose bases each total ≥ k; ranks follow the index.
        #[test]
        fn ranked_rows_are_safe_and_ordered(
            cells in proptest::collection::vec((0u64..400, 0u64..4000), 1..12),
            k in 1u64..120,
        ) {
            let segments: Vec<SegmentAffinity> =
                cells.iter().enumerate().map(|(i, (a, b))| seg(&format!("s{i}"), *a, (*b).max(*a))).collect();
            let (ranked, withheld) = rank(&segments, k, 0);
            prop_assert_eq!(ranked.len() + withheld.len(), segments.len());
            for i in &ranked {
                prop_assert!(segments[*i].audience >= k && segments[*i].base >= k);
            }
            for w in ranked.windows(2) {
                prop_assert!(segments[w[0]].index >= segments[w[1]].index);
            }
            let n = withheld.len();
            let audience: u64 = withheld.iter().map(|i| segments[*i].audience).sum();
            let base: u64 = withheld.iter().map(|i| segments[*i].base).sum();
            prop_assert!(n == 0 || n == segments.len() || (n >= 2 && audience >= k && base >= k));
        }
    }
}
