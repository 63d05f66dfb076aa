//! Per-segment counts of distinct individuals, in one pass over the segment memberships.
//!
//! For every publisher segment: the publisher individuals in it (its base), those of them that
//! matched (its audience), and the distinct advertiser individuals paired with its audience. The
//! memberships are read straight from the Arrow columns (`string` or `string_list` segment
//! columns), split over the cores; each worker counts into its own map and the maps are merged by
//! segment name. When every row of the segment table is a different individual (the publisher table
//! keyed by a unique user id, the common case) the counts are plain sums; otherwise each segment's
//! individuals are sorted and de-duplicated.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, GenericListArray, StringArray};
use arrow::datatypes::DataType;

use crate::error::{Error, Result};

/// What one segment counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentCounts {
    /// Publisher individuals in the segment.
    pub base: u64,
    /// Matched publisher individuals in the segment.
    pub audience: u64,
    /// Distinct advertiser individuals paired with the segment's audience.
    pub partners: u64,
}

/// Advertiser partners of each publisher individual (compressed rows: `of[offsets[p]..offsets[p+1]]`).
pub(crate) struct Partners {
    offsets: Vec<u32>,
    of: Vec<u32>,
}

impl Partners {
    /// From `(advertiser individual, publisher individual)` pairs.
    pub(crate) fn new(pairs: impl Iterator<Item = (u32, u32)>, publisher_individuals: usize) -> Self {
        let mut by_publisher: Vec<(u32, u32)> = pairs.map(|(a, p)| (p, a)).collect();
        by_publisher.sort_unstable();
        by_publisher.dedup();
        let mut offsets = vec![0u32; publisher_individuals + 1];
        for (p, _) in &by_publisher {
            if let Some(o) = offsets.get_mut(*p as usize + 1) {
                *o += 1;
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        Self { offsets, of: by_publisher.into_iter().map(|(_, a)| a).collect() }
    }

    pub(crate) fn of(&self, p: u32) -> &[u32] {
        let p = p as usize;
        match (self.offsets.get(p), self.offsets.get(p + 1)) {
            (Some(s), Some(e)) => &self.of[*s as usize..*e as usize],
            _ => &[],
        }
    }
}

/// The segment values of one row of one column.
pub(crate) enum SegmentColumn<'a> {
    Single(&'a StringArray),
    List { offsets: &'a [i32], values: &'a StringArray, list: &'a GenericListArray<i32> },
}

impl<'a> SegmentColumn<'a> {
    pub(crate) fn new(array: &'a ArrayRef) -> Result<Self> {
        match array.data_type() {
            DataType::Utf8 => Ok(Self::Single(array.as_string::<i32>())),
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let values = list
                    .values()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::Computation("a segment list column does not hold strings".to_owned()))?;
                Ok(Self::List { offsets: list.value_offsets(), values, list })
            }
            other => Err(Error::Computation(format!("a segment column of type {other} cannot be counted"))),
        }
    }

    pub(crate) fn push_row(&self, row: usize, out: &mut Vec<&'a str>) {
        match self {
            Self::Single(a) => {
                if a.is_valid(row) {
                    out.push(a.value(row));
                }
            }
            Self::List { offsets, values, list } => {
                if list.is_valid(row) {
                    for i in offsets[row] as usize..offsets[row + 1] as usize {
                        if values.is_valid(i) {
                            out.push(values.value(i));
                        }
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Acc {
    base: u64,
    audience: u64,
    /// Unique-row mode: nothing. Otherwise: the individuals in the segment.
    individuals: Vec<u32>,
    partners: Vec<u32>,
}

/// Counts every segment of `columns` (segment columns of one table, row-aligned with
/// `individual_of_row`; `None` for a row that is no publisher individual). With a `cap`, an
/// individual counts in at most that many of its segments, the first by name (the contribution
/// bound of differential privacy).
pub(crate) fn count(
    columns: &[ArrayRef],
    individual_of_row: &[Option<u32>],
    unique_rows: bool,
    partners: &Partners,
    threads: usize,
    cap: Option<usize>,
) -> Result<BTreeMap<String, SegmentCounts>> {
    let columns: Vec<SegmentColumn<'_>> = columns.iter().map(SegmentColumn::new).collect::<Result<_>>()?;
    if let (Some(cap), false) = (cap, unique_rows) {
        return Ok(finish(count_grouped(&columns, individual_of_row, partners, cap), true, partners));
    }
    let rows = individual_of_row.len();
    let chunk = rows.div_ceil(threads.max(1)).max(1);
    let parts: Vec<HashMap<&str, Acc>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..rows)
            .step_by(chunk)
            .map(|start| {
                let columns = &columns;
                s.spawn(move || {
                    let mut acc: HashMap<&str, Acc> = HashMap::new();
                    let mut segments = Vec::new();
                    let end = (start + chunk).min(rows);
                    for (row, individual) in individual_of_row.iter().enumerate().take(end).skip(start) {
                        let Some(p) = *individual else { continue };
                        segments.clear();
                        for c in columns {
                            c.push_row(row, &mut segments);
                        }
                        segments.sort_unstable();
                        segments.dedup();
                        if let Some(cap) = cap {
                            segments.truncate(cap);
                        }
                        let matched = partners.of(p);
                        for s in &segments {
                            let a = acc.entry(s).or_default();
                            if unique_rows {
                                a.base += 1;
                                a.audience += u64::from(!matched.is_empty());
                            } else {
                                a.individuals.push(p);
                            }
                            a.partners.extend_from_slice(matched);
                        }
                    }
                    acc
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut merged: HashMap<&str, Acc> = HashMap::new();
    for part in parts {
        for (segment, a) in part {
            let m = merged.entry(segment).or_default();
            m.base += a.base;
            m.audience += a.audience;
            m.individuals.extend(a.individuals);
            m.partners.extend(a.partners);
        }
    }
    Ok(finish(merged, unique_rows, partners))
}

/// Per individual, its first `cap` segments by name, each counted once: the individuals' rows are
/// gathered first (an individual may have rows anywhere in the table).
fn count_grouped<'a>(
    columns: &[SegmentColumn<'a>],
    individual_of_row: &[Option<u32>],
    partners: &Partners,
    cap: usize,
) -> HashMap<&'a str, Acc> {
    let mut memberships: Vec<(u32, &'a str)> = Vec::new();
    let mut segments = Vec::new();
    for (row, individual) in individual_of_row.iter().enumerate() {
        let Some(p) = *individual else { continue };
        segments.clear();
        for c in columns {
            c.push_row(row, &mut segments);
        }
        memberships.extend(segments.iter().map(|s| (p, *s)));
    }
    memberships.sort_unstable();
    memberships.dedup();
    let mut acc: HashMap<&'a str, Acc> = HashMap::new();
    for group in memberships.chunk_by(|x, y| x.0 == y.0) {
        for (p, segment) in group.iter().take(cap) {
            let matched = partners.of(*p);
            let a = acc.entry(segment).or_default();
            a.base += 1;
            a.audience += u64::from(!matched.is_empty());
            a.partners.extend_from_slice(matched);
        }
    }
    acc
}

/// The counts of the accumulated segments (`unique_rows`: base and audience are already sums).
fn finish(merged: HashMap<&str, Acc>, unique_rows: bool, partners: &Partners) -> BTreeMap<String, SegmentCounts> {
    merged
        .into_iter()
        .map(|(segment, mut a)| {
            if !unique_rows {
                a.individuals.sort_unstable();
                a.individuals.dedup();
                a.base = a.individuals.len() as u64;
                a.audience = a.individuals.iter().filter(|p| !partners.of(**p).is_empty()).count() as u64;
            }
            a.partners.sort_unstable();
            a.partners.dedup();
            (
                segment.to_owned(),
                SegmentCounts { base: a.base, audience: a.audience, partners: a.partners.len() as u64 },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ListBuilder, StringBuilder};
    use proptest::prelude::*;

    use super::*;

    fn list(rows: &[Vec<&str>]) -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for r in rows {
            for s in r {
                b.values().append_value(s);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    }

    #[test]
    fn counts_distinct_individuals_per_segment() {
        // Rows 0 and 2 are one individual (0); "a" twice in row 1 counts once.
        let segments = list(&[vec!["a", "b"], vec!["a", "a"], vec!["a"], vec![]]);
        let of_row = [Some(0), Some(1), Some(0), Some(2)];
        let partners = Partners::new([(10, 0), (11, 0), (10, 1)].into_iter(), 3);
        for threads in [1, 2, 3] {
            let got = count(std::slice::from_ref(&segments), &of_row, false, &partners, threads, None).unwrap();
            assert_eq!(got["a"], SegmentCounts { base: 2, audience: 2, partners: 2 });
            assert_eq!(got["b"], SegmentCounts { base: 1, audience: 1, partners: 2 });
            assert_eq!(got.len(), 2);
        }
    }

    proptest! {
        /// Both modes agree with a brute-force count whenever rows are unique individuals.
        #[test]
        fn agrees_with_brute_force(
            rows in proptest::collection::vec(proptest::collection::vec(0u8..6, 0..4), 1..80),
            pairs in proptest::collection::vec((0u32..20, 0u32..80), 0..60),
            threads in 1usize..4,
        ) {
            let names: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|s| format!("s{s}")).collect()).collect();
            let refs: Vec<Vec<&str>> = names.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
            let column = list(&refs);
            let n = rows.len() as u32;
            let pairs: Vec<(u32, u32)> = pairs.into_iter().filter(|(_, p)| *p < n).collect();
            let partners = Partners::new(pairs.iter().copied(), rows.len());
            let of_row: Vec<Option<u32>> = (0..n).map(Some).collect();
            let fast = count(std::slice::from_ref(&column), &of_row, true, &partners, threads, None).unwrap();
            let general = count(&[column], &of_row, false, &partners, threads, None).unwrap();
            prop_assert_eq!(&fast, &general);
            for (segment, c) in &fast {
                let members: Vec<u32> = (0..n).filter(|p| names[*p as usize].contains(segment)).collect();
                let matched: Vec<u32> = members.iter().copied().filter(|p| pairs.iter().any(|(_, q)| q == p)).collect();
                let mut partner_set: Vec<u32> =
                    pairs.iter().filter(|(_, p)| matched.contains(p)).map(|(a, _)| *a).collect();
                partner_set.sort_unstable();
                partner_set.dedup();
                prop_assert_eq!(c.base, members.len() as u64);
                prop_assert_eq!(c.audience, matched.len() as u64);
                prop_assert_eq!(c.partners, partner_set.len() as u64);
            }
        }

        /// With a cap, each individual counts in its first `cap` segments by name only, whether its
        /// memberships are on one row or spread over several.
        #[test]
        fn a_cap_bounds_each_individuals_segments(
            rows in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..6), 1..60),
            cap in 1usize..4,
            threads in 1usize..3,
        ) {
            let names: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|s| format!("s{s}")).collect()).collect();
            let refs: Vec<Vec<&str>> = names.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
            let column = list(&refs);
            let n = rows.len() as u32;
            let partners = Partners::new((0..n).filter(|p| p % 3 == 0).map(|p| (p, p)), rows.len());
            let of_row: Vec<Option<u32>> = (0..n).map(Some).collect();
            let fast = count(std::slice::from_ref(&column), &of_row, true, &partners, threads, Some(cap)).unwrap();
            let grouped = count(std::slice::from_ref(&column), &of_row, false, &partners, threads, Some(cap)).unwrap();
            prop_assert_eq!(&fast, &grouped);
            let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for (p, r) in names.iter().enumerate() {
                let mut r = r.clone();
                r.sort();
                r.dedup();
                for s in r.into_iter().take(cap) {
                    let e = expected.entry(s).or_default();
                    e.0 += 1;
                    e.1 += u64::from(p % 3 == 0);
                }
            }
            prop_assert_eq!(fast.len(), expected.len());
            for (segment, (base, audience)) in expected {
                prop_assert_eq!(fast[&segment].base, base);
                prop_assert_eq!(fast[&segment].audience, audience);
            }
        }
    }
}
