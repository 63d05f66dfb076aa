//! A boosted forest: gradient-boosted decision trees on binned features for the log loss, grown
//! leaf-wise on histograms (the algorithm of LightGBM and scikit-learn's
//! HistGradientBoostingClassifier).
//!
//! - **Bins.** A numeric column is cut into at most 255 bins at the midpoints between its distinct
//!   training values, or at quantiles when it has more (from at most 200,000 rows, sampled with
//!   the seed); a categorical column's bin is its level. Missing values have a bin of their own,
//!   so every split also learns where missing values go.
//! - **Trees.** Each tree fits the gradient and hessian of the log loss; the leaf with the best
//!   split gain is split next, up to `max_leaves`, never leaving fewer than `min_samples_leaf` rows
//!   on a side. Numeric splits are thresholds (with missing values sent to the better side);
//!   categorical splits send a set of levels left, found by sorting levels by gradient/hessian
//!   (Fisher's ordering for the log loss). A child's histogram is the parent's minus its
//!   sibling's, so only the smaller child is counted.
//! - **Early stopping.** With more than 10,000 rows, 10% (stratified, seeded) are held out and
//!   boosting stops when their loss has not improved for 10 trees.
//!
//! Histograms are summed over a fixed number of row parts in order, whatever the number of
//! threads, and every random choice comes from the seed: the same data and seed give the same
//! trees.

use ndarray::ArrayView2;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::features::{Encoding, FeatureSchema};
use crate::{ModelError, par_map};

/// The bin of a missing value.
const MISSING: u8 = 255;
/// Most bins of a numeric column (the missing bin comes on top).
const MAX_BINS: usize = 255;
/// Rows sampled to place numeric bin edges.
const BIN_SAMPLE: usize = 200_000;
/// Nodes with fewer rows have their histogram built on one thread (spawning costs more).
const PARALLEL_ROWS: usize = 16_384;
/// Rows scored per task.
const PART_ROWS: usize = 8_192;

/// Boosting options (the defaults are scikit-learn's HistGradientBoostingClassifier's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForestOptions {
    pub learning_rate: f64,
    pub max_trees: usize,
    pub max_leaves: usize,
    pub min_samples_leaf: usize,
    pub l2: f64,
    /// Hold out 10% and stop when its loss stalls; `None`: when there are more than 10,000 rows.
    pub early_stopping: Option<bool>,
    /// With more training rows than this, each tree is grown on a seeded random sample of about
    /// this many (stochastic gradient boosting) and the other rows' scores are updated by passing
    /// them down the tree; 0: every tree sees every row.
    pub max_rows_per_tree: usize,
    pub seed: u64,
}

impl Default for ForestOptions {
    fn default() -> Self {
        Self {
            learning_rate: 0.1,
            max_trees: 100,
            max_leaves: 31,
            min_samples_leaf: 20,
            l2: 0.0,
            early_stopping: None,
            max_rows_per_tree: 1_000_000,
            seed: 0,
        }
    }
}

/// How a column's values become bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Binning {
    /// Bin = how many edges are below the value.
    Numeric { edges: Vec<f64> },
    /// Bin = level index (`other` included).
    Categorical { levels: usize },
}

impl Binning {
    fn bin(&self, v: f64) -> u8 {
        if v.is_nan() {
            return MISSING;
        }
        match self {
            Self::Numeric { edges } => edges.partition_point(|e| *e < v) as u8,
            // Codes past the levels (never produced by `encode`) count as `other`, the last level.
            Self::Categorical { levels } => (v.max(0.0) as usize).min(levels.saturating_sub(1)) as u8,
        }
    }

    fn bins(&self) -> usize {
        match self {
            Self::Numeric { edges } => edges.len() + 1,
            Self::Categorical { levels } => *levels,
        }
    }
}

fn numeric_edges(values: &mut Vec<f64>) -> Vec<f64> {
    values.retain(|v| !v.is_nan());
    values.sort_by(f64::total_cmp);
    let mut distinct = values.clone();
    distinct.dedup();
    if distinct.len() <= MAX_BINS {
        return distinct.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect();
    }
    let mut edges: Vec<f64> = (1..MAX_BINS)
        .map(|k| {
            let at = (k * values.len()) / MAX_BINS;
            let (a, b) = (values[at.saturating_sub(1)], values[at]);
            a + (b - a) / 2.0
        })
        .collect();
    edges.dedup();
    edges
}

/// Fits the binning of every column.
fn fit_binning(schema: &FeatureSchema, x: ArrayView2<'_, f64>, seed: u64) -> Vec<Binning> {
    let rows: Vec<usize> = if x.nrows() > BIN_SAMPLE {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB1A5);
        let mut r = sample(&mut rng, x.nrows(), BIN_SAMPLE).into_vec();
        r.sort_unstable();
        r
    } else {
        (0..x.nrows()).collect()
    };
    schema
        .features
        .iter()
        .enumerate()
        .map(|(j, f)| match &f.encoding {
            Encoding::Numeric { .. } => {
                Binning::Numeric { edges: numeric_edges(&mut rows.iter().map(|r| x[[*r, j]]).collect()) }
            }
            Encoding::Categorical { levels, other, .. } => {
                Binning::Categorical { levels: levels.len() + usize::from(*other) }
            }
        })
        .collect()
}

/// Row-major bins of `x` (for scoring: one row's bins together).
fn bin_rows(binning: &[Binning], x: ArrayView2<'_, f64>) -> Vec<u8> {
    let p = binning.len();
    let mut out = vec![0u8; x.nrows() * p];
    for (row, o) in x.rows().into_iter().zip(out.chunks_exact_mut(p.max(1))) {
        for ((b, v), slot) in binning.iter().zip(row.iter()).zip(o.iter_mut()) {
            *slot = b.bin(*v);
        }
    }
    out
}

/// Column-major bins of `x` (for training: a feature's histogram reads one column), binned one
/// column per thread.
fn bin_columns(binning: &[Binning], x: ArrayView2<'_, f64>) -> Vec<u8> {
    par_map(binning.len(), |f| x.column(f).iter().map(|v| binning[f].bin(*v)).collect::<Vec<u8>>()).concat()
}

#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    g: f64,
    h: f64,
    n: u32,
}

impl Stat {
    fn add(&mut self, o: &Stat) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
    fn minus(&self, o: &Stat) -> Stat {
        Stat { g: self.g - o.g, h: self.h - o.h, n: self.n - o.n }
    }
}

/// Per feature, 256 bins of gradient/hessian/count.
type Histogram = Vec<Stat>;

struct Data<'a> {
    /// Column-major: feature `f`'s bin of row `r` is `bins[f * n + r]`.
    bins: &'a [u8],
    n: usize,
    p: usize,
    grad: &'a [f32],
    hess: &'a [f32],
}

impl Data<'_> {
    fn bin(&self, r: usize, f: usize) -> u8 {
        self.bins[f * self.n + r]
    }
}

/// The histogram of the rows `rows` (ascending), one feature at a time: a feature's 256 bins
/// (6 KiB) stay in the L1 cache while its column is read in row order. Features are shared among
/// threads; each feature's sums are in row order, so the result does not depend on the threads.
fn histogram(d: &Data<'_>, rows: &[u32]) -> Histogram {
    let ordered: Vec<(f64, f64)> =
        rows.iter().map(|r| (f64::from(d.grad[*r as usize]), f64::from(d.hess[*r as usize]))).collect();
    let one = |f: usize| {
        let column = &d.bins[f * d.n..(f + 1) * d.n];
        let mut total = [Stat::default(); 256];
        if rows.len() < 4096 {
            for (r, (g, hs)) in rows.iter().zip(&ordered) {
                let s = &mut total[usize::from(column[*r as usize])];
                s.g += g;
                s.h += hs;
                s.n += 1;
            }
            return total;
        }
        // Large nodes: four interleaved copies, so that consecutive rows in the same bin (a
        // feature with few levels) do not wait on each other's additions.
        let mut h = [[Stat::default(); 256]; 3];
        let mut rs = rows.chunks_exact(4);
        let mut gs = ordered.chunks_exact(4);
        for (r4, gh4) in (&mut rs).zip(&mut gs) {
            for (copy, (r, (g, hs))) in std::iter::once(&mut total).chain(h.iter_mut()).zip(r4.iter().zip(gh4)) {
                let s = &mut copy[usize::from(column[*r as usize])];
                s.g += g;
                s.h += hs;
                s.n += 1;
            }
        }
        for (r, (g, hs)) in rs.remainder().iter().zip(gs.remainder()) {
            let s = &mut total[usize::from(column[*r as usize])];
            s.g += g;
            s.h += hs;
            s.n += 1;
        }
        for copy in &h {
            for (a, x) in total.iter_mut().zip(copy) {
                a.add(x);
            }
        }
        total
    };
    let per_feature: Vec<[Stat; 256]> =
        if rows.len() >= PARALLEL_ROWS { par_map(d.p, one) } else { (0..d.p).map(one).collect() };
    per_feature.concat()
}

/// Which bins go left: a 256-bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct BinSet([u64; 4]);

impl BinSet {
    const ALL: BinSet = BinSet([u64::MAX; 4]);

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b) >> 6] |= 1 << (b & 63);
    }
    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b) >> 6] >> (b & 63) & 1 == 1
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    feature: usize,
    left: BinSet,
    gain: f64,
    left_stat: Stat,
}

struct Rules {
    min_samples_leaf: u32,
    l2: f64,
}

impl Rules {
    fn score(&self, s: &Stat) -> f64 {
        s.g * s.g / (s.h + self.l2)
    }
    fn allowed(&self, s: &Stat) -> bool {
        s.n >= self.min_samples_leaf && s.h >= 1e-3
    }
}

fn best_split(binning: &[Binning], hist: &Histogram, total: &Stat, rules: &Rules) -> Option<Candidate> {
    let parent = rules.score(total);
    let mut best: Option<Candidate> = None;
    let mut consider = |feature: usize, left: BinSet, left_stat: Stat| {
        let right = total.minus(&left_stat);
        if !rules.allowed(&left_stat) || !rules.allowed(&right) {
            return;
        }
        let gain = rules.score(&left_stat) + rules.score(&right) - parent;
        if gain > 1e-12 && best.is_none_or(|b| gain > b.gain) {
            best = Some(Candidate { feature, left, gain, left_stat });
        }
    };
    for (f, b) in binning.iter().enumerate() {
        let h = &hist[f * 256..(f + 1) * 256];
        let missing = h[usize::from(MISSING)];
        match b {
            Binning::Numeric { .. } => {
                for missing_left in [false, true] {
                    if missing_left && missing.n == 0 {
                        continue;
                    }
                    let mut acc = if missing_left { missing } else { Stat::default() };
                    let mut set = BinSet::default();
                    if missing_left {
                        set.insert(MISSING);
                    }
                    // The last bin too: all present values left, missing ones right.
                    for (t, s) in h.iter().enumerate().take(b.bins()) {
                        acc.add(s);
                        set.insert(t as u8);
                        if s.n > 0 {
                            consider(f, set, acc);
                        }
                    }
                }
            }
            Binning::Categorical { levels } => {
                let mut present: Vec<(u8, Stat)> =
                    (0..*levels).map(|c| (c as u8, h[c])).filter(|(_, s)| s.n > 0).collect();
                if missing.n > 0 {
                    present.push((MISSING, missing));
                }
                // Fisher's ordering, smoothed so that a rare level does not sort to an end by chance.
                present
                    .sort_by(|a, b| (a.1.g / (a.1.h + 10.0)).total_cmp(&(b.1.g / (b.1.h + 10.0))).then(a.0.cmp(&b.0)));
                let mut acc = Stat::default();
                let mut set = BinSet::default();
                for (c, s) in present.iter().take(present.len().saturating_sub(1)) {
                    acc.add(s);
                    set.insert(*c);
                    consider(f, set, acc);
                }
            }
        }
    }
    best
}

/// A node of a trained tree, on bins.
#[derive(Debug, Clone)]
enum Node {
    Leaf(f64),
    Split { feature: usize, left: BinSet, children: [usize; 2] },
}

/// A trained tree, also kept in a branch-free form for scoring: a leaf is a node that sends
/// every bin to itself, so every row takes exactly `depth` steps and rows are moved down the tree
/// level by level, a block at a time (data-dependent branches, one per level per row, cost more
/// than the arithmetic).
#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    steps: Vec<Step>,
    values: Vec<f64>,
    depth: usize,
}

/// One node in the branch-free form: the feature read, the bins sent to `next[0]`, the others to
/// `next[1]`.
#[derive(Debug, Clone, Copy)]
struct Step {
    feature: u32,
    left: BinSet,
    next: [u32; 2],
}

impl Tree {
    fn new(nodes: Vec<Node>) -> Self {
        let mut steps = Vec::with_capacity(nodes.len());
        let mut values = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let (step, value) = match n {
                Node::Leaf(v) => (Step { feature: 0, left: BinSet::ALL, next: [i as u32; 2] }, *v),
                Node::Split { feature, left, children } => {
                    (Step { feature: *feature as u32, left: *left, next: children.map(|c| c as u32) }, 0.0)
                }
            };
            steps.push(step);
            values.push(value);
        }
        // Children always come after their parent: one pass in order finds every node's depth.
        let mut depths = vec![0usize; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            if let Node::Split { children, .. } = n {
                for c in children {
                    depths[*c] = depths[i] + 1;
                }
            }
        }
        let depth = depths.iter().copied().max().unwrap_or(0);
        Self { nodes, steps, values, depth }
    }

    /// Adds to `out[row]` the leaf value each row reaches, whose bin of feature `f` is
    /// `bin(row, f)`: all rows advance one level at a time.
    fn add_to(&self, out: &mut [f64], bin: impl Fn(usize, usize) -> u8) {
        let mut at = vec![0u32; out.len()];
        for _ in 0..self.depth {
            for (i, a) in at.iter_mut().enumerate() {
                let s = &self.steps[*a as usize];
                *a = s.next[usize::from(!s.left.contains(bin(i, s.feature as usize)))];
            }
        }
        for (o, a) in out.iter_mut().zip(at) {
            *o += self.values[a as usize];
        }
    }

    /// The leaf value reached by a row whose bin of feature `f` is `bin(f)`.
    #[cfg(test)]
    fn predict(&self, bin: impl Fn(usize) -> u8) -> f64 {
        let mut v = [0.0];
        self.add_to(&mut v, |_, f| bin(f));
        v[0]
    }
}

/// A leaf being grown: its rows are `index[start..end]`.
struct Growing {
    node: usize,
    start: usize,
    end: usize,
    hist: Histogram,
    total: Stat,
    split: Option<Candidate>,
}

fn total_of(hist: &Histogram) -> Stat {
    // Every row has exactly one bin per feature: feature 0's bins sum to the node.
    let mut t = Stat::default();
    for s in &hist[..256] {
        t.add(s);
    }
    t
}

/// Grows one tree on the rows in `index` (permuted in place); returns it with each leaf's row range.
fn grow(
    d: &Data<'_>,
    binning: &[Binning],
    index: &mut [u32],
    o: &ForestOptions,
    rules: &Rules,
) -> (Tree, Vec<(usize, usize, f64)>) {
    let hist = histogram(d, index);
    let total = total_of(&hist);
    let split = best_split(binning, &hist, &total, rules);
    let mut nodes = vec![Node::Leaf(0.0)];
    let mut leaves = vec![Growing { node: 0, start: 0, end: index.len(), hist, total, split }];
    let mut scratch: Vec<u32> = Vec::new();
    while leaves.len() < o.max_leaves {
        let Some((at, _)) = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.split.map(|c| (i, c.gain)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        let leaf = leaves.swap_remove(at);
        let Some(c) = leaf.split else { break };
        // Stable partition: left rows first, in their order.
        let rows = &mut index[leaf.start..leaf.end];
        let k = partition(rows, &mut scratch, |r| c.left.contains(d.bin(r as usize, c.feature)));
        let mid = leaf.start + k;
        let right_stat = leaf.total.minus(&c.left_stat);
        let (small, large_is_left) =
            if k <= leaf.end - mid { (&index[leaf.start..mid], false) } else { (&index[mid..leaf.end], true) };
        let small_hist = histogram(d, small);
        let mut large_hist = leaf.hist;
        for (a, b) in large_hist.iter_mut().zip(&small_hist) {
            *a = a.minus(b);
        }
        let (left_hist, right_hist) = if large_is_left { (large_hist, small_hist) } else { (small_hist, large_hist) };
        let (l, r) = (nodes.len(), nodes.len() + 1);
        nodes.push(Node::Leaf(0.0));
        nodes.push(Node::Leaf(0.0));
        nodes[leaf.node] = Node::Split { feature: c.feature, left: c.left, children: [l, r] };
        for (node, start, end, hist, total) in
            [(l, leaf.start, mid, left_hist, c.left_stat), (r, mid, leaf.end, right_hist, right_stat)]
        {
            let split = best_split(binning, &hist, &total, rules);
            leaves.push(Growing { node, start, end, hist, total, split });
        }
    }
    let mut ranges = Vec::with_capacity(leaves.len());
    for l in &leaves {
        let value = -o.learning_rate * l.total.g / (l.total.h + o.l2).max(1e-12);
        nodes[l.node] = Node::Leaf(value);
        ranges.push((l.start, l.end, value));
    }
    (Tree::new(nodes), ranges)
}

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 { 1.0 / (1.0 + (-t).exp()) } else { t.exp() / (1.0 + t.exp()) }
}

fn log_loss(raw: &[f64], y: &[bool], rows: &[u32]) -> f64 {
    rows.iter()
        .map(|r| {
            let z = raw[*r as usize];
            let t = if y[*r as usize] { -z } else { z };
            if t > 0.0 { t + (-t).exp().ln_1p() } else { t.exp().ln_1p() }
        })
        .sum::<f64>()
        / rows.len().max(1) as f64
}

/// A trained boosted forest.
#[derive(Debug, Clone)]
pub struct Forest {
    schema: FeatureSchema,
    binning: Vec<Binning>,
    base: f64,
    trees: Vec<Tree>,
    learning_rate: f64,
}

impl Forest {
    /// Fits on the compact matrix `x` (see [`FeatureSchema::encode`]) with seed labels `y` and
    /// per-class weights `(seed, others)`.
    pub fn fit(
        schema: &FeatureSchema,
        x: ArrayView2<'_, f64>,
        y: &[bool],
        class_weights: (f64, f64),
        o: &ForestOptions,
    ) -> Result<Self, ModelError> {
        schema.check_width(x)?;
        if o.max_leaves < 2 || o.max_trees == 0 || o.learning_rate.is_nan() || o.learning_rate <= 0.0 {
            return Err(ModelError::Input(
                "a forest needs max_leaves ≥ 2, max_trees ≥ 1 and a positive learning rate".into(),
            ));
        }
        let n = x.nrows();
        let binning = fit_binning(schema, x, o.seed);
        let bins = bin_columns(&binning, x);
        let (train, validation): (Vec<u32>, Vec<u32>) = if o.early_stopping.unwrap_or(n > 10_000) {
            let (t, v) = crate::split::stratified(y, 0.1, o.seed);
            (t.into_iter().map(|r| r as u32).collect(), v.into_iter().map(|r| r as u32).collect())
        } else {
            ((0..n as u32).collect(), Vec::new())
        };
        let weight = |r: usize| if y[r] { class_weights.0 } else { class_weights.1 };
        let (pos, all) = train.iter().fold((0.0, 0.0), |(p, a), r| {
            let w = weight(*r as usize);
            (p + if y[*r as usize] { w } else { 0.0 }, a + w)
        });
        if pos <= 0.0 || pos >= all {
            return Err(ModelError::Input("the training rows hold one class only".into()));
        }
        let base = (pos / (all - pos)).ln();
        let mut raw = vec![base; n];
        let (mut grad, mut hess) = (vec![0f32; n], vec![0f32; n]);
        let rules = Rules { min_samples_leaf: o.min_samples_leaf.max(1) as u32, l2: o.l2 };
        let mut trees = Vec::new();
        let subsample = o.max_rows_per_tree > 0 && train.len() > o.max_rows_per_tree;
        let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x5eed_f0e5);
        let (mut index, mut rest) = (train.clone(), Vec::new());
        let mut best_loss = f64::INFINITY;
        let mut since_best = 0;
        for _ in 0..o.max_trees {
            // Each tree starts from its rows in ascending order (partitions keep it within nodes),
            // so histograms read each column forwards.
            if subsample {
                sample_rows(&train, o.max_rows_per_tree, rng.random(), &mut index, &mut rest);
            } else {
                index.copy_from_slice(&train);
            }
            update_gradients(&raw, y, &index, &weight, &mut grad, &mut hess);
            let data = Data { bins: &bins, n, p: binning.len(), grad: &grad, hess: &hess };
            let tree = if subsample {
                // The sample's bins, gradients and hessians gathered into dense arrays, so the
                // histograms of every node read them contiguously (sampled rows are ~1 in 10 of
                // the columns, and reading them in place costs a cache line each).
                let m = index.len();
                let p = binning.len();
                let columns = par_map(p, |f| index.iter().map(|r| bins[f * n + *r as usize]).collect::<Vec<u8>>());
                let dense: Vec<u8> = columns.concat();
                let g: Vec<f32> = index.iter().map(|r| grad[*r as usize]).collect();
                let h: Vec<f32> = index.iter().map(|r| hess[*r as usize]).collect();
                let local = Data { bins: &dense, n: m, p, grad: &g, hess: &h };
                let mut positions: Vec<u32> = (0..m as u32).collect();
                let (tree, ranges) = grow(&local, &binning, &mut positions, o, &rules);
                for (start, end, value) in ranges {
                    for i in &positions[start..end] {
                        raw[index[*i as usize] as usize] += value;
                    }
                }
                tree
            } else {
                let (tree, ranges) = grow(&data, &binning, &mut index, o, &rules);
                for (start, end, value) in ranges {
                    for r in &index[start..end] {
                        raw[*r as usize] += value;
                    }
                }
                tree
            };
            // The rows the tree was not grown on (the held-out ones, and the unsampled training
            // rows) go down it.
            for rows in [&rest, &validation] {
                for (r, value) in rows.iter().zip(apply(&tree, &data, rows)) {
                    raw[*r as usize] += value;
                }
            }
            let single_leaf = tree.nodes.len() == 1;
            trees.push(tree);
            if single_leaf {
                break;
            }
            if !validation.is_empty() {
                let loss = log_loss(&raw, y, &validation);
                if loss < best_loss - 1e-7 {
                    best_loss = loss;
                    since_best = 0;
                } else {
                    since_best += 1;
                    if since_best >= 10 {
                        break;
                    }
                }
            }
        }
        Ok(Self { schema: schema.clone(), binning, base, trees, learning_rate: o.learning_rate })
    }

    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    /// Log-odds of being in the seed, per row of the compact matrix `x`.
    pub fn scores(&self, x: ArrayView2<'_, f64>) -> Result<Vec<f64>, ModelError> {
        self.schema.check_width(x)?;
        let p = self.binning.len();
        let rows = x.nrows();
        let chunks = rows.div_ceil(PART_ROWS);
        let parts = par_map(chunks, |c| {
            let (from, to) = (c * PART_ROWS, ((c + 1) * PART_ROWS).min(rows));
            let bins = bin_rows(&self.binning, x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(from..to)));
            let mut scores = vec![self.base; to - from];
            for t in &self.trees {
                t.add_to(&mut scores, |r, f| bins[r * p + f]);
            }
            scores
        });
        Ok(parts.into_iter().flatten().collect())
    }

    /// The trees with their splits in the schema's terms (thresholds and level names).
    pub fn export(&self) -> ExportedForest {
        let trees = self.trees.iter().map(|t| t.nodes.iter().map(|n| self.export_node(n)).collect()).collect();
        ExportedForest { base_score: self.base, learning_rate: self.learning_rate, trees }
    }

    fn export_node(&self, n: &Node) -> ExportedNode {
        match n {
            Node::Leaf(v) => ExportedNode::Leaf { value: *v },
            Node::Split { feature, left, children } => {
                let f = &self.schema.features[*feature];
                let missing_left = left.contains(MISSING);
                let rule = match (&self.binning[*feature], &f.encoding) {
                    (Binning::Numeric { edges }, _) => {
                        // Left bins are 0..=t: values up to edge t.
                        let t = (0..=edges.len()).take_while(|b| left.contains(*b as u8)).count();
                        let threshold = if t > edges.len() { f64::MAX } else { edges[t.saturating_sub(1)] };
                        SplitRule::AtMost { threshold }
                    }
                    (Binning::Categorical { .. }, Encoding::Categorical { levels, other, .. }) => SplitRule::In {
                        levels: levels
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| left.contains(*i as u8))
                            .map(|(_, l)| l.clone())
                            .collect(),
                        other: *other && left.contains(levels.len() as u8),
                    },
                    (Binning::Categorical { .. }, Encoding::Numeric { .. }) => {
                        SplitRule::In { levels: vec![], other: false }
                    }
                };
                ExportedNode::Split {
                    column: f.column.clone(),
                    rule,
                    missing_left,
                    left: children[0],
                    right: children[1],
                }
            }
        }
    }
}

/// Stable in-place partition: the rows `left` accepts first, then the others, each in their
/// order; returns how many went left. Branch-free: each row is written to both sides and only
/// the side it belongs to advances (which side is a coin toss at most splits).
fn partition(rows: &mut [u32], scratch: &mut Vec<u32>, left: impl Fn(u32) -> bool) -> usize {
    if scratch.len() < rows.len() {
        scratch.resize(rows.len(), 0);
    }
    let (mut k, mut j) = (0, 0);
    for i in 0..rows.len() {
        let r = rows[i];
        let l = left(r);
        rows[k] = r;
        scratch[j] = r;
        k += usize::from(l);
        j += usize::from(!l);
    }
    rows[k..].copy_from_slice(&scratch[..j]);
    k
}

/// A seeded random sample of `rows` (ascending) of about `size` rows into `sample` (ascending),
/// the others into `rest`. Parts of the rows are drawn on every core, each from its own stream of
/// `seed`, so the sample does not depend on the number of threads.
fn sample_rows(rows: &[u32], size: usize, seed: u64, sample: &mut Vec<u32>, rest: &mut Vec<u32>) {
    const PART: usize = 1 << 20;
    let threshold = ((size as f64 / rows.len() as f64) * f64::from(u32::MAX)) as u32;
    let parts = par_map(rows.len().div_ceil(PART), |c| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(c as u64);
        let (mut s, mut o) = (Vec::new(), Vec::new());
        for r in &rows[c * PART..((c + 1) * PART).min(rows.len())] {
            if rng.random::<u32>() <= threshold { s.push(*r) } else { o.push(*r) }
        }
        (s, o)
    });
    sample.clear();
    rest.clear();
    for (s, o) in parts {
        sample.extend_from_slice(&s);
        rest.extend_from_slice(&o);
    }
}

/// The leaf value `tree` gives each row of `rows` (in order), on every core, a block of
/// consecutive rows at a time (the columns the tree reads stay in the cache for a block).
fn apply(tree: &Tree, d: &Data<'_>, rows: &[u32]) -> Vec<f64> {
    par_map(rows.len().div_ceil(PART_ROWS), |c| {
        let block = &rows[c * PART_ROWS..((c + 1) * PART_ROWS).min(rows.len())];
        let mut values = vec![0.0; block.len()];
        tree.add_to(&mut values, |i, f| d.bin(block[i] as usize, f));
        values
    })
    .concat()
}

fn update_gradients(
    raw: &[f64],
    y: &[bool],
    rows: &[u32],
    weight: &(impl Fn(usize) -> f64 + Sync),
    grad: &mut [f32],
    hess: &mut [f32],
) {
    let chunks = rows.len().div_ceil(16_384);
    let computed = par_map(chunks, |c| {
        rows[c * 16_384..((c + 1) * 16_384).min(rows.len())]
            .iter()
            .map(|r| {
                let r = *r as usize;
                let p = sigmoid(raw[r]);
                let w = weight(r);
                let g = if y[r] { p - 1.0 } else { p };
                ((w * g) as f32, (w * p * (1.0 - p)) as f32)
            })
            .collect::<Vec<_>>()
    });
    for (r, (g, h)) in rows.iter().zip(computed.into_iter().flatten()) {
        grad[*r as usize] = g;
        hess[*r as usize] = h;
    }
}

/// An exported forest: score = base_score + Σ over trees of the reached leaf's value (log-odds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedForest {
    pub base_score: f64,
    pub learning_rate: f64,
    /// Each tree's nodes; node 0 is the root.
    pub trees: Vec<Vec<ExportedNode>>,
}

/// Where a split sends a present value: left when the rule holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRule {
    /// Numeric: value ≤ threshold (`f64::MAX`: every present value).
    AtMost { threshold: f64 },
    /// Categorical: the value is one of `levels` (or, with `other`, none of the schema's levels).
    In { levels: Vec<String>, other: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "snake_case")]
pub enum ExportedNode {
    Leaf { value: f64 },
    Split { column: String, rule: SplitRule, missing_left: bool, left: usize, right: usize },
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;
    use crate::features::Feature;

    fn schema(numeric: usize, categorical: usize) -> FeatureSchema {
        let mut features = Vec::new();
        for i in 0..numeric {
            features.push(Feature {
                column: format!("n{i}"),
                encoding: Encoding::Numeric { mean: 0.0, std: 1.0, missing_indicator: true },
            });
        }
        for i in 0..categorical {
            features.push(Feature {
                column: format!("c{i}"),
                encoding: Encoding::Categorical {
                    levels: (0..5).map(|l| format!("l{l}")).collect(),
                    other: true,
                    missing: true,
                },
            });
        }
        FeatureSchema { features, notes: vec![] }
    }

    #[test]
    fn bins_cut_between_distinct_values_and_missing_has_its_own() {
        let mut v = vec![3.0, 1.0, f64::NAN, 2.0, 1.0];
        let edges = numeric_edges(&mut v);
        assert_eq!(edges, [1.5, 2.5]);
        let b = Binning::Numeric { edges };
        assert_eq!([b.bin(1.0), b.bin(1.5), b.bin(2.0), b.bin(9.0), b.bin(f64::NAN)], [0, 0, 1, 2, MISSING]);
        let mut many: Vec<f64> = (0..10_000).map(f64::from).collect();
        let edges = numeric_edges(&mut many);
        assert!(edges.len() < MAX_BINS && edges.len() > 250, "{}", edges.len());
        assert!(edges.windows(2).all(|w| w[0] < w[1]));
    }

    /// Seed = (n0 > 0) xor (category in {l1, l3}); missing n0 counts as seed.
    fn xor_data(n: usize) -> (Array2<f64>, Vec<bool>) {
        let mut x = Array2::<f64>::zeros((n, 2));
        let mut y = Vec::new();
        for i in 0..n {
            let a = ((i * 7919) % 2001) as f64 / 1000.0 - 1.0;
            let c = (i * 31 % 6) as f64;
            x[[i, 0]] = if i % 17 == 0 { f64::NAN } else { a };
            x[[i, 1]] = c;
            let cat = c == 1.0 || c == 3.0;
            y.push(if i % 17 == 0 { true } else { (a > 0.0) != cat });
        }
        (x, y)
    }

    #[test]
    fn learns_an_interaction_a_linear_model_cannot() {
        let (x, y) = xor_data(4000);
        let s = schema(1, 1);
        let o = ForestOptions { early_stopping: Some(false), ..ForestOptions::default() };
        let f = Forest::fit(&s, x.view(), &y, (1.0, 1.0), &o).unwrap();
        let scores = f.scores(x.view()).unwrap();
        let auc = crate::eval::roc_auc(&scores, &y).unwrap();
        assert!(auc > 0.99, "{auc}");
        // Deterministic, and the export names columns, levels and thresholds.
        let g = Forest::fit(&s, x.view(), &y, (1.0, 1.0), &o).unwrap();
        assert_eq!(g.scores(x.view()).unwrap(), scores);
        let e = f.export();
        assert_eq!(e.trees.len(), f.trees());
        let root = &e.trees[0][0];
        assert!(matches!(root, ExportedNode::Split { column, .. } if column == "n0" || column == "c0"), "{root:?}");
        // Every split's children exist.
        for t in &e.trees {
            for node in t {
                if let ExportedNode::Split { left, right, .. } = node {
                    assert!(*left < t.len() && *right < t.len());
                }
            }
        }
    }

    #[test]
    fn subsampled_trees_still_learn_and_rows_go_down_a_tree_as_predict_sends_them() {
        let n = 6000;
        let (x, y) = xor_data(n);
        let s = schema(1, 1);
        let o = ForestOptions { max_rows_per_tree: 1000, ..ForestOptions::default() };
        let f = Forest::fit(&s, x.view(), &y, (1.0, 1.0), &o).unwrap();
        let scores = f.scores(x.view()).unwrap();
        let auc = crate::eval::roc_auc(&scores, &y).unwrap();
        assert!(auc > 0.98, "{auc}");
        assert_eq!(Forest::fit(&s, x.view(), &y, (1.0, 1.0), &o).unwrap().scores(x.view()).unwrap(), scores);
        let full = Forest::fit(&s, x.view(), &y, (1.0, 1.0), &ForestOptions::default()).unwrap();
        assert_ne!(full.scores(x.view()).unwrap(), scores, "the trees were grown on samples");
        // The pass over the rows a tree was not grown on gives each, in order, its leaf value.
        let bins = bin_columns(&f.binning, x.view());
        let zeros = vec![0f32; n];
        let d = Data { bins: &bins, n, p: 2, grad: &zeros, hess: &zeros };
        let rows: Vec<u32> = (0..n as u32).filter(|r| r % 3 != 0).collect();
        for tree in f.trees.iter().take(5) {
            let got = apply(tree, &d, &rows);
            assert_eq!(got.len(), rows.len());
            for (r, v) in rows.iter().zip(got) {
                assert_eq!(v, tree.predict(|feature| bins[feature * n + *r as usize]));
            }
        }
    }

    #[test]
    fn min_samples_leaf_is_respected_and_tiny_data_gives_a_stump_free_model() {
        // 30 rows, 20 per leaf at least: no split is possible; the model is the base rate.
        let x = Array2::from_shape_fn((30, 1), |(i, _)| i as f64);
        let y: Vec<bool> = (0..30).map(|i| i >= 20).collect();
        let f = Forest::fit(&schema(1, 0), x.view(), &y, (1.0, 1.0), &ForestOptions::default()).unwrap();
        let s = f.scores(x.view()).unwrap();
        assert!(s.iter().all(|v| (v - s[0]).abs() < 1e-12));
        assert!((s[0] - (10.0f64 / 20.0).ln()).abs() < 1e-9);
        let err =
            Forest::fit(&schema(1, 0), x.view(), &[false; 30], (1.0, 1.0), &ForestOptions::default()).unwrap_err();
        assert!(err.to_string().contains("one class"), "{err}");
    }
}
