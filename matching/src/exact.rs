//! Exact matching on hashed identifiers.
//!
//! - [`join_digests`]: the kernel — every pair of equal SHA-256 digests between two columns, by a
//!   radix-partitioned hash join on all cores (each partition's table fits in cache; full 32-byte
//!   keys are compared, so a match is exact, not a truncated-hash guess).
//! - [`IdentityGraph`]: pairs of digests that belong to one individual, and their connected
//!   components. The engine's overlap (`services/engine/src/computation/linkage.rs`) runs the exact
//!   tiers in the contract's precedence order over these two.

use std::collections::HashMap;

use arrow::array::{Array, FixedSizeBinaryArray};

use crate::graph::UnionFind;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Number of radix partitions (by the first byte of the digest).
const PARTITIONS: usize = 128;

fn chunks(n: usize, threads: usize) -> Vec<std::ops::Range<usize>> {
    let chunk = n.div_ceil(threads.max(1)).max(1);
    (0..n).step_by(chunk).map(|s| s..(s + chunk).min(n)).collect()
}

/// One thread's share of one side, scattered by partition. An entry packs the digest's first 32
/// bits (the tag: the top 7 bits pick the partition, the low bits the slot) and the row: 8 bytes a
/// row instead of 36.
struct Scattered {
    entries: Vec<Vec<u64>>,
}

/// A bitmap of the tags one side holds (about 8 bits per key, at most 16 MiB): the larger side skips
/// every row whose tag bit is clear before it is scattered, so only the matches and about 12% of
/// the other rows pay for partitioning.
struct TagFilter {
    bits: Vec<u64>,
    shift: u32,
}

impl TagFilter {
    /// About 8 bits per key (a false-positive rate near 12%), between 64 Kbit and 128 Mbit.
    fn new(side: &[Scattered]) -> Self {
        let n: usize = side.iter().flat_map(|s| &s.entries).map(Vec::len).sum();
        let log = (n.max(1) * 8).next_power_of_two().trailing_zeros().clamp(16, 27);
        let mut bits = vec![0u64; 1 << (log - 6)];
        let shift = 32 - log;
        for e in side.iter().flat_map(|s| &s.entries).flatten() {
            let b = ((e >> 32) as u32 >> shift) as usize;
            bits[b >> 6] |= 1 << (b & 63);
        }
        Self { bits, shift }
    }

    #[inline]
    fn may_contain(&self, tag: u32) -> bool {
        let b = (tag >> self.shift) as usize;
        self.bits[b >> 6] & (1 << (b & 63)) != 0
    }
}

fn scatter(array: &FixedSizeBinaryArray, range: std::ops::Range<usize>, filter: Option<&TagFilter>) -> Scattered {
    let expected = if filter.is_some() { range.len() / 4 } else { range.len() };
    let guess = expected / PARTITIONS + expected / PARTITIONS / 8 + 16;
    let mut entries: Vec<Vec<u64>> = (0..PARTITIONS).map(|_| Vec::with_capacity(guess)).collect();
    let contiguous = array.null_count() == 0 && array.offset() == 0;
    let data = array.value_data();
    for i in range {
        if !contiguous && array.is_null(i) {
            continue;
        }
        let d = if contiguous { &data[i * 32..i * 32 + 4] } else { &array.value(i)[..4] };
        let tag = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        if filter.is_some_and(|f| !f.may_contain(tag)) {
            continue;
        }
        entries[(tag >> 25) as usize].push((u64::from(tag) << 32) | i as u64);
    }
    Scattered { entries }
}

/// Joins one partition on tags; equal tags are candidates, checked on all 256 bits afterwards.
fn join_partition(probe: &[Scattered], build: &[Scattered], p: usize, out: &mut Vec<(u32, u32)>) {
    let n: usize = build.iter().map(|b| b.entries[p].len()).sum();
    if n == 0 {
        return;
    }
    // A slot holds a whole entry (0 = empty: row numbers are stored plus one).
    let capacity = (n * 2).next_power_of_two();
    let mask = capacity - 1;
    let mut slots = vec![0u64; capacity];
    for b in build {
        for e in &b.entries[p] {
            let mut s = ((e >> 32) as usize) & mask;
            while slots[s] != 0 {
                s = (s + 1) & mask;
            }
            slots[s] = e + 1;
        }
    }
    for chunk in probe {
        for e in &chunk.entries[p] {
            let tag = e >> 32;
            let mut s = (tag as usize) & mask;
            while slots[s] != 0 {
                if slots[s] >> 32 == tag {
                    out.push((*e as u32, (slots[s] - 1) as u32));
                }
                s = (s + 1) & mask;
            }
        }
    }
}

/// Every `(left row, right row)` whose digests are equal (nulls never match), on `threads` threads.
/// Both sides are radix-partitioned on the top 7 bits of the digest, carrying its first 32 bits as
/// a tag: the smaller side first, then the larger side, skipping rows whose tag is missing from a
/// cache-sized bitmap of the smaller side's tags. Each partition's table fits in cache; pairs whose
/// tags agree are then checked on all 256 bits in left-row order, so a match is exact.
pub fn join_digests(left: &FixedSizeBinaryArray, right: &FixedSizeBinaryArray, threads: usize) -> Vec<(u32, u32)> {
    if right.len() > left.len() {
        return join_digests(right, left, threads).into_iter().map(|(r, l)| (l, r)).collect();
    }
    let threads = threads.max(1);
    // The smaller side is scattered first; its tag filter then thins the larger side as it scatters.
    let build: Vec<Scattered> = std::thread::scope(|s| {
        let handles: Vec<_> =
            chunks(right.len(), threads).into_iter().map(|r| s.spawn(move || scatter(right, r, None))).collect();
        handles.into_iter().map(crate::joined).collect()
    });
    let filter = TagFilter::new(&build);
    let filter = &filter;
    let probe: Vec<Scattered> = std::thread::scope(|s| {
        let handles: Vec<_> =
            chunks(left.len(), threads).into_iter().map(|r| s.spawn(move || scatter(left, r, Some(filter)))).collect();
        handles.into_iter().map(crate::joined).collect()
    });
    let (probe, build) = (&probe, &build);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for p in (t..PARTITIONS).step_by(threads) {
                        join_partition(probe, build, p, &mut out);
                    }
                    // Check every candidate on all 256 bits, in left-row order for locality.
                    out.sort_unstable();
                    out.retain(|(l, r)| left.value(*l as usize) == right.value(*r as usize));
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(crate::joined(h));
        }
        all
    })
}

/// An identity graph: pairs of identifier digests that belong to one individual.
#[derive(Debug, Clone, Default)]
pub struct IdentityGraph {
    pub edges: Vec<(Digest, Digest)>,
}

impl IdentityGraph {
    /// Component id of every digest in the graph (connected components by union-find).
    pub fn components(&self) -> HashMap<Digest, u32> {
        let mut ids: HashMap<Digest, u32> = HashMap::with_capacity(self.edges.len() * 2);
        let mut uf = UnionFind::new(0);
        for (a, b) in &self.edges {
            let ia = *ids.entry(*a).or_insert_with(|| uf.push());
            let ib = *ids.entry(*b).or_insert_with(|| uf.push());
            uf.union(ia, ib);
        }
        let (labels, _) = uf.labels();
        ids.into_iter().map(|(d, i)| (d, labels[i as usize])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;
    use proptest::prelude::*;

    fn column(values: &[Option<&str>]) -> FixedSizeBinaryArray {
        FixedSizeBinaryArray::try_from_sparse_iter_with_size(values.iter().map(|v| v.map(|s| sha256(s.as_bytes()))), 32)
            .unwrap()
    }

    #[test]
    fn join_finds_every_equal_pair_including_duplicates() {
        let l = column(&[Some("a"), Some("b"), None, Some("a"), Some("z")]);
        let r = column(&[Some("a"), None, Some("b"), Some("c"), Some("a")]);
        for threads in [1, 2, 3] {
            let mut pairs = join_digests(&l, &r, threads);
            pairs.sort_unstable();
            assert_eq!(pairs, vec![(0, 0), (0, 4), (1, 2), (3, 0), (3, 4)], "threads {threads}");
        }
    }

    #[test]
    fn identity_graph_components_join_what_the_edges_connect() {
        let d = |s: &str| sha256(s.as_bytes());
        let graph = IdentityGraph { edges: vec![(d("e1"), d("p1")), (d("p1"), d("e2")), (d("e3"), d("p3"))] };
        let c = graph.components();
        assert_eq!(c.len(), 5);
        assert_eq!(c[&d("e1")], c[&d("e2")], "connected through p1");
        assert_eq!(c[&d("e1")], c[&d("p1")]);
        assert_eq!(c[&d("e3")], c[&d("p3")]);
        assert_ne!(c[&d("e1")], c[&d("e3")]);
        assert!(!c.contains_key(&d("e4")));
    }

    proptest! {
        /// The kernel agrees with a nested loop.
        #[test]
        fn join_agrees_with_a_nested_loop(l in proptest::collection::vec(proptest::option::of(0u8..30), 0..200),
                                          r in proptest::collection::vec(proptest::option::of(0u8..30), 0..200),
                                          threads in 1usize..4) {
            let lc = FixedSizeBinaryArray::try_from_sparse_iter_with_size(l.iter().map(|v| v.map(|x| sha256(&[x]))), 32);
            let rc = FixedSizeBinaryArray::try_from_sparse_iter_with_size(r.iter().map(|v| v.map(|x| sha256(&[x]))), 32);
            let (Ok(lc), Ok(rc)) = (lc, rc) else { return Ok(()) };
            let mut got = join_digests(&lc, &rc, threads);
            got.sort_unstable();
            let mut want = Vec::new();
            for (i, a) in l.iter().enumerate() { for (j, b) in r.iter().enumerate() {
                if a.is_some() && a == b { want.push((i as u32, j as u32)); }
            }}
            prop_assert_eq!(got, want);
        }
    }
}
