//! Exact matching on hashed identifiers.
//!
//! - [`join_digests`]: the kernel — every pair of equal SHA-256 digests between two columns, by a
//!   radix-partitioned hash join on all cores (each partition's table fits in cache; full 32-byte
//!   keys are compared, so a match is exact, not a truncated-hash guess).
//! - [`link`]: several identifier kinds in a precedence order (say email, then phone, then a shared
//!   id), one individual per side after de-duplication (rows sharing a user id or any identifier are
//!   one individual), an optional identity graph, and a one-to-one assignment of individuals across
//!   the sides with the tier that matched each pair.

use std::collections::HashMap;

use arrow::array::{Array, FixedSizeBinaryArray};

use crate::graph::UnionFind;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

fn digest_at(array: &FixedSizeBinaryArray, i: usize) -> Option<&Digest> {
    if array.is_null(i) {
        return None;
    }
    array.value(i).try_into().ok()
}

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

fn scatter(array: &FixedSizeBinaryArray, range: std::ops::Range<usize>) -> Scattered {
    let guess = range.len() / PARTITIONS + range.len() / PARTITIONS / 8 + 16;
    let mut entries: Vec<Vec<u64>> = (0..PARTITIONS).map(|_| Vec::with_capacity(guess)).collect();
    let contiguous = array.null_count() == 0 && array.offset() == 0;
    let data = array.value_data();
    for i in range {
        if !contiguous && array.is_null(i) {
            continue;
        }
        let d = if contiguous { &data[i * 32..i * 32 + 4] } else { &array.value(i)[..4] };
        let tag = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
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
/// Both sides are radix-partitioned on the first digest byte, carrying 128 bits of digest; each
/// partition's table fits in cache; pairs whose 128 bits agree are then checked on all 256 bits in
/// left-row order, so a match is exact.
pub fn join_digests(left: &FixedSizeBinaryArray, right: &FixedSizeBinaryArray, threads: usize) -> Vec<(u32, u32)> {
    if right.len() > left.len() {
        return join_digests(right, left, threads).into_iter().map(|(r, l)| (l, r)).collect();
    }
    let threads = threads.max(1);
    let (probe, build) = std::thread::scope(|s| {
        let probe: Vec<_> =
            chunks(left.len(), threads).into_iter().map(|r| s.spawn(move || scatter(left, r))).collect();
        let build: Vec<_> =
            chunks(right.len(), threads).into_iter().map(|r| s.spawn(move || scatter(right, r))).collect();
        (
            probe.into_iter().filter_map(|h| h.join().ok()).collect::<Vec<_>>(),
            build.into_iter().filter_map(|h| h.join().ok()).collect::<Vec<_>>(),
        )
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
            if let Ok(part) = h.join() {
                all.extend(part);
            }
        }
        all
    })
}

/// A kind of exact key, in the order of precedence the caller chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    Email,
    Phone,
    /// An identifier both sides hold (a loyalty number, a device id), hashed.
    SharedId,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::SharedId => "shared_id",
        }
    }
}

/// One side's identifiers.
#[derive(Debug, Clone)]
pub struct SideKeys<'a> {
    pub rows: usize,
    /// Rows with equal values here are one individual (a densely coded user id).
    pub person_hint: Option<&'a [u32]>,
    pub columns: Vec<(KeyKind, &'a FixedSizeBinaryArray)>,
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

/// How two individuals were matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Key(KeyKind),
    /// Through an identity graph.
    Graph,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Self::Key(k) => k.name(),
            Self::Graph => "identity_graph",
        }
    }
}

/// The individuals of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Individuals {
    /// Individual of each row.
    pub of_row: Vec<u32>,
    pub count: usize,
}

/// The result of [`link`].
#[derive(Debug, Clone)]
pub struct Linkage {
    pub left: Individuals,
    pub right: Individuals,
    /// One-to-one `(left individual, right individual, tier)`, sorted by left individual.
    pub pairs: Vec<(u32, u32, Tier)>,
}

impl Linkage {
    /// Matched pairs per tier.
    pub fn by_tier(&self) -> Vec<(Tier, usize)> {
        let mut counts: HashMap<Tier, usize> = HashMap::new();
        for (_, _, t) in &self.pairs {
            *counts.entry(*t).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    /// Match rates from each side's denominator.
    pub fn match_rates(&self) -> (f64, f64) {
        let rate = |n: usize| if n == 0 { 0.0 } else { self.pairs.len() as f64 / n as f64 };
        (rate(self.left.count), rate(self.right.count))
    }
}

/// Rows sharing a person hint, a digest, or a graph component are one individual.
fn individuals(side: &SideKeys<'_>, graph: &HashMap<Digest, u32>) -> Individuals {
    let mut uf = UnionFind::new(side.rows);
    if let Some(hint) = side.person_hint {
        let mut first: HashMap<u32, u32> = HashMap::new();
        for (row, h) in hint.iter().enumerate() {
            let f = *first.entry(*h).or_insert(row as u32);
            uf.union(f, row as u32);
        }
    }
    // Equal digests within the side (of any kind): sort by digest, union neighbours.
    let mut keyed: Vec<(Digest, u32)> = Vec::new();
    for (_, column) in &side.columns {
        for row in 0..side.rows.min(column.len()) {
            if let Some(d) = digest_at(column, row) {
                keyed.push((*d, row as u32));
            }
        }
    }
    keyed.sort_unstable();
    for w in keyed.windows(2) {
        if w[0].0 == w[1].0 {
            uf.union(w[0].1, w[1].1);
        }
    }
    if !graph.is_empty() {
        let mut first: HashMap<u32, u32> = HashMap::new();
        for (d, row) in &keyed {
            if let Some(c) = graph.get(d) {
                let f = *first.entry(*c).or_insert(*row);
                uf.union(f, *row);
            }
        }
    }
    let (of_row, count) = uf.labels();
    Individuals { of_row, count }
}

/// Graph component ids of a side's rows, as a digest column (the id in the first four bytes), so the
/// same join kernel matches through the graph.
fn graph_column(side: &SideKeys<'_>, graph: &HashMap<Digest, u32>) -> FixedSizeBinaryArray {
    let mut component_of_row: Vec<Option<u32>> = vec![None; side.rows];
    for (_, column) in &side.columns {
        for (row, slot) in component_of_row.iter_mut().enumerate().take(column.len()) {
            if let Some(c) = digest_at(column, row).and_then(|d| graph.get(d)) {
                *slot = Some(*c);
            }
        }
    }
    let values = component_of_row.iter().map(|c| {
        c.map(|c| {
            let mut d = [0u8; 32];
            // Spread the id over the partition byte and the slot-hash bytes.
            let h = (u64::from(c)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            d[..8].copy_from_slice(&h.to_le_bytes());
            d[8..16].copy_from_slice(&h.rotate_left(29).to_le_bytes());
            d[16..20].copy_from_slice(&c.to_le_bytes());
            d
        })
    });
    FixedSizeBinaryArray::try_from_sparse_iter_with_size(values, 32)
        .unwrap_or_else(|_| FixedSizeBinaryArray::new_null(32, side.rows))
}

/// Links two sides on exact keys in `precedence` order, then (if given) through an identity graph.
/// Each individual is matched at most once, by the first tier that can match it.
pub fn link(
    left: &SideKeys<'_>,
    right: &SideKeys<'_>,
    precedence: &[KeyKind],
    graph: Option<&IdentityGraph>,
    threads: usize,
) -> Linkage {
    let components = graph.map(IdentityGraph::components).unwrap_or_default();
    let (l_ind, r_ind) = std::thread::scope(|s| {
        let l = s.spawn(|| individuals(left, &components));
        let r = individuals(right, &components);
        (l.join().unwrap_or_else(|_| Individuals { of_row: vec![], count: 0 }), r)
    });
    let mut left_taken = vec![false; l_ind.count];
    let mut right_taken = vec![false; r_ind.count];
    let mut pairs = Vec::new();
    let mut assign = |candidates: Vec<(u32, u32)>, tier: Tier, pairs: &mut Vec<(u32, u32, Tier)>| {
        let mut persons: Vec<(u32, u32)> =
            candidates.into_iter().map(|(lr, rr)| (l_ind.of_row[lr as usize], r_ind.of_row[rr as usize])).collect();
        persons.sort_unstable();
        persons.dedup();
        for (lp, rp) in persons {
            if !left_taken[lp as usize] && !right_taken[rp as usize] {
                left_taken[lp as usize] = true;
                right_taken[rp as usize] = true;
                pairs.push((lp, rp, tier));
            }
        }
    };
    for kind in precedence {
        let mut candidates = Vec::new();
        for (_, lc) in left.columns.iter().filter(|(k, _)| k == kind) {
            for (_, rc) in right.columns.iter().filter(|(k, _)| k == kind) {
                candidates.extend(join_digests(lc, rc, threads));
            }
        }
        assign(candidates, Tier::Key(*kind), &mut pairs);
    }
    if !components.is_empty() {
        let lg = graph_column(left, &components);
        let rg = graph_column(right, &components);
        assign(join_digests(&lg, &rg, threads), Tier::Graph, &mut pairs);
    }
    pairs.sort_unstable_by_key(|p| (p.0, p.1));
    Linkage { left: l_ind, right: r_ind, pairs }
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
    fn precedence_and_one_to_one() {
        // Left 0 shares an email with right 0 and a phone with right 1; email wins, and right 1 is
        // then free for left 1, which shares a phone with it.
        let le = column(&[Some("e0"), None]);
        let lp = column(&[Some("p0"), Some("p0")]);
        let re = column(&[Some("e0"), None]);
        let rp = column(&[None, Some("p0")]);
        let left = SideKeys {
            rows: 2,
            person_hint: Some(&[0, 1]),
            columns: vec![(KeyKind::Email, &le), (KeyKind::Phone, &lp)],
        };
        let right =
            SideKeys { rows: 2, person_hint: None, columns: vec![(KeyKind::Email, &re), (KeyKind::Phone, &rp)] };
        // With a hint the two left rows are distinct people, but they share a phone, so they are one.
        let linkage = link(&left, &right, &[KeyKind::Email, KeyKind::Phone], None, 2);
        assert_eq!(linkage.left.count, 1, "rows sharing a phone are one individual");
        assert_eq!(linkage.right.count, 2);
        assert_eq!(linkage.pairs, vec![(0, 0, Tier::Key(KeyKind::Email))]);
        let linkage = link(&left, &right, &[KeyKind::Phone, KeyKind::Email], None, 2);
        assert_eq!(linkage.pairs, vec![(0, 1, Tier::Key(KeyKind::Phone))]);
    }

    #[test]
    fn identity_graphs_add_matches_and_say_so() {
        // The advertiser knows e1, the publisher knows e2; the graph says e1 and e2 are one person.
        let l = column(&[Some("e1"), Some("e3")]);
        let r = column(&[Some("e2"), Some("e3")]);
        let left = SideKeys { rows: 2, person_hint: None, columns: vec![(KeyKind::Email, &l)] };
        let right = SideKeys { rows: 2, person_hint: None, columns: vec![(KeyKind::Email, &r)] };
        let without = link(&left, &right, &[KeyKind::Email], None, 1);
        assert_eq!(without.pairs.len(), 1);
        let graph = IdentityGraph { edges: vec![(sha256(b"e1"), sha256(b"e2"))] };
        let with = link(&left, &right, &[KeyKind::Email], Some(&graph), 1);
        assert_eq!(with.pairs.len(), 2);
        assert_eq!(with.by_tier(), vec![(Tier::Key(KeyKind::Email), 1), (Tier::Graph, 1)]);
        assert_eq!(with.match_rates(), (1.0, 1.0));
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

        /// Linking never pairs an individual twice, and every pair shares a key.
        #[test]
        fn linkage_is_one_to_one_and_sound(l in proptest::collection::vec((proptest::option::of(0u8..20), proptest::option::of(0u8..20)), 1..60),
                                           r in proptest::collection::vec((proptest::option::of(0u8..20), proptest::option::of(0u8..20)), 1..60)) {
            let col = |v: &[(Option<u8>, Option<u8>)], phone: bool| FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                v.iter().map(|(e, p)| if phone { p.map(|x| sha256(&[b'p', x])) } else { e.map(|x| sha256(&[b'e', x])) }), 32).unwrap_or_else(|_| FixedSizeBinaryArray::new_null(32, v.len()));
            let (le, lp, re, rp) = (col(&l, false), col(&l, true), col(&r, false), col(&r, true));
            let left = SideKeys { rows: l.len(), person_hint: None, columns: vec![(KeyKind::Email, &le), (KeyKind::Phone, &lp)] };
            let right = SideKeys { rows: r.len(), person_hint: None, columns: vec![(KeyKind::Email, &re), (KeyKind::Phone, &rp)] };
            let linkage = link(&left, &right, &[KeyKind::Email, KeyKind::Phone], None, 2);
            let mut seen_l = std::collections::HashSet::new();
            let mut seen_r = std::collections::HashSet::new();
            for (lp_, rp_, tier) in &linkage.pairs {
                prop_assert!(seen_l.insert(*lp_) && seen_r.insert(*rp_));
                // Some row of each individual shares the tier's key.
                let shares = (0..l.len()).filter(|i| linkage.left.of_row[*i] == *lp_).any(|i| (0..r.len()).filter(|j| linkage.right.of_row[*j] == *rp_).any(|j| match tier {
                    Tier::Key(KeyKind::Email) => l[i].0.is_some() && l[i].0 == r[j].0,
                    Tier::Key(KeyKind::Phone) => l[i].1.is_some() && l[i].1 == r[j].1,
                    _ => false,
                }));
                prop_assert!(shares);
            }
        }
    }
}
