//! Probabilistic record linkage (Fellegi–Sunter) on plaintext identity fields.
//!
//! 1. **Prepare**: each compared column is normalized by its kind (names folded, dates to YYYYMMDD,
//!    …), see [`Records::prepare`].
//! 2. **Block**: candidate pairs are those agreeing on every key of at least one blocking rule (a
//!    union of rules, each pair generated once).
//! 3. **Compare**: each candidate gets a level per comparison (exact, Jaro-Winkler ≥ 0.92, …, else,
//!    or null), built on `strsim`.
//! 4. **Estimate**: u probabilities from random record pairs; m probabilities by expectation
//!    maximisation on the candidates of each blocking rule (leaving out the comparisons the rule
//!    forces to agree), averaged; the prior λ from the EM runs and the estimated recall of each rule.
//! 5. **Score**: match weight `log2(λ/(1−λ)) + Σ log2(m/u)`, with term-frequency adjustments on
//!    exact agreements of names; pairs at or above the threshold probability are matches, optionally
//!    one-to-one.
//!
//! Pure computation: no I/O. Work is spread over `Settings::threads` threads.

mod blocking;
mod compare;
mod infer;
mod model;
pub mod settings;

use std::collections::HashMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use compare::{NULL_LEVEL, jaro_winkler, level_of, levenshtein, osa_distance, soundex, within};
pub use infer::{infer, kind_of};
pub use model::Parameters;
pub use settings::{BlockKey, BlockingRule, Comparison, FieldKind, KeyTransform, Level, Settings};

use crate::normalize::{self, Profile};

/// Why a linkage cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FuzzyError {
    /// A comparison or blocking rule names a column the data does not have.
    MissingColumn {
        column: String,
        available: Vec<String>,
    },
    /// A blocking rule would generate more candidate pairs than allowed.
    TooManyCandidates {
        rule: String,
        pairs: u64,
        max: u64,
    },
    /// Nothing to compare.
    NoComparisons,
    NoBlockingRules,
    Settings(String),
}

impl std::fmt::Display for FuzzyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingColumn { column, available } => {
                write!(f, "no column '{column}' (columns: {})", available.join(", "))
            }
            Self::TooManyCandidates { rule, pairs, max } => write!(
                f,
                "blocking rule [{rule}] generates {pairs} candidate pairs, more than the limit of {max}; make it stricter \
                 (add a column, or use a longer prefix) or raise max_candidate_pairs"
            ),
            Self::NoComparisons => f.write_str(
                "no comparisons: no column name was recognized (given_name, surname, date_of_birth, postcode, city, street, \
                 email, phone, …); name the comparisons in a settings file",
            ),
            Self::NoBlockingRules => f.write_str("no blocking rules; give at least one in the settings"),
            Self::Settings(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for FuzzyError {}

/// Normalized records of one file: the columns the settings use.
///
/// Stored row-major: each record's values sit together in one buffer (a small header of offsets,
/// then the bytes), so comparing a pair touches two short runs of memory instead of one scattered
/// location per column — the difference between cache hits and misses when the right-hand records
/// of candidate pairs come in random order.
#[derive(Debug, Clone)]
pub struct Records {
    ids: Vec<String>,
    names: Vec<String>,
    /// Start of each record in `data` (and one past the end).
    starts: Vec<u32>,
    /// Per record: `(offset, length)` of each column as two `u16` each (length `u16::MAX` = null),
    /// then the values' bytes.
    data: Vec<u8>,
}

/// Best-effort normalization for comparison: a value that does not parse is kept as cleaned text
/// rather than dropped, because a typo is evidence too.
fn normalize_for(kind: FieldKind, raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    let folded = || normalize::name_with(t, Profile::Sealroom).ok();
    match kind {
        FieldKind::Name | FieldKind::Text => folded(),
        FieldKind::Date => normalize::date_for_comparison(t),
        FieldKind::Postcode => normalize::postcode_with(t, Profile::Sealroom).ok(),
        FieldKind::Email => normalize::email_with(t, Profile::Sealroom).ok().or_else(|| Some(t.to_lowercase())),
        FieldKind::Phone => {
            let digits: String = t.chars().filter(char::is_ascii_digit).collect();
            (!digits.is_empty()).then_some(digits)
        }
        FieldKind::Exact => Some(t.to_lowercase()),
    }
}

impl Records {
    /// The columns the settings compare or block on, normalized by kind, from raw columns.
    pub fn prepare(
        ids: Vec<String>,
        raw: &[(String, Vec<Option<String>>)],
        settings: &Settings,
    ) -> Result<Self, FuzzyError> {
        let available: Vec<String> = raw.iter().map(|(n, _)| n.clone()).collect();
        let mut needed: Vec<(String, FieldKind)> = Vec::new();
        for c in &settings.comparisons {
            if !needed.iter().any(|(n, _)| n == &c.column) {
                needed.push((c.column.clone(), c.kind));
            }
        }
        for key in settings.blocking_rules.iter().flatten() {
            if !needed.iter().any(|(n, _)| n == &key.column) {
                let kind = kind_of(&key.column).map_or(FieldKind::Exact, |(k, _)| k);
                needed.push((key.column.clone(), kind));
            }
        }
        let mut names = Vec::new();
        let mut sources: Vec<(&Vec<Option<String>>, FieldKind)> = Vec::new();
        for (name, kind) in needed {
            let (_, column) = raw
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| FuzzyError::MissingColumn { column: name.clone(), available: available.clone() })?;
            sources.push((column, kind));
            names.push(name);
        }
        // Normalizing is the costly part of preparing (Unicode folding of every name): one thread
        // per column, up to the settings' thread count.
        let threads = settings.threads().max(1);
        let columns: Vec<Vec<Option<String>>> = std::thread::scope(|s| {
            let handles: Vec<_> = sources
                .chunks(sources.len().div_ceil(threads).max(1))
                .map(|group| {
                    s.spawn(move || {
                        group
                            .iter()
                            .map(|(column, kind)| {
                                column.iter().map(|v| v.as_deref().and_then(|v| normalize_for(*kind, v))).collect()
                            })
                            .collect::<Vec<Vec<Option<String>>>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(crate::joined).collect()
        });
        if columns.len() != names.len() {
            return Err(FuzzyError::Settings("normalizing the records failed".into()));
        }
        let header = 4 * columns.len();
        let mut starts = Vec::with_capacity(ids.len() + 1);
        let mut data = Vec::new();
        for row in 0..ids.len() {
            let start = data.len();
            starts
                .push(u32::try_from(start).map_err(|_| FuzzyError::Settings("more than 4 GiB of record data".into()))?);
            data.resize(start + header, 0);
            for (c, column) in columns.iter().enumerate() {
                // Values longer than a u16 can say are cut (callers refuse such fields anyway).
                let (offset, len) = match column.get(row).and_then(Option::as_deref) {
                    Some(v) => {
                        let v = &v.as_bytes()[..floor_char_boundary(v, 60_000)];
                        let offset = data.len() - start;
                        data.extend_from_slice(v);
                        (offset as u16, v.len() as u16)
                    }
                    None => (0, u16::MAX),
                };
                data[start + 4 * c..start + 4 * c + 2].copy_from_slice(&offset.to_le_bytes());
                data[start + 4 * c + 2..start + 4 * c + 4].copy_from_slice(&len.to_le_bytes());
            }
        }
        starts.push(data.len() as u32);
        Ok(Self { ids, names, starts, data })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, row: usize) -> &str {
        &self.ids[row]
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub(crate) fn column_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub(crate) fn value(&self, column: usize, row: usize) -> Option<&str> {
        let start = *self.starts.get(row)? as usize;
        let h = start + 4 * column;
        let offset = u16::from_le_bytes([self.data[h], self.data[h + 1]]) as usize;
        let len = u16::from_le_bytes([self.data[h + 2], self.data[h + 3]]);
        if len == u16::MAX {
            return None;
        }
        let bytes = &self.data[start + offset..start + offset + len as usize];
        // Only whole strings are ever written, so this never fails; a failure reads as missing.
        std::str::from_utf8(bytes).ok()
    }
}

/// The largest index `<= max` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0)
}

/// A scored pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub left: u32,
    pub right: u32,
    pub weight: f64,
    pub probability: f64,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub blocking_and_comparing: f64,
    pub estimating: f64,
    pub scoring: f64,
}

/// The outcome of a linkage.
#[derive(Debug, Clone)]
pub struct LinkResult {
    /// Pairs at or above the threshold (one-to-one when asked), highest weight first.
    pub matches: Vec<Match>,
    /// Candidate pairs compared.
    pub candidates: u64,
    pub parameters: Parameters,
    pub comparisons: Vec<Comparison>,
    pub blocking_rules: Vec<BlockingRule>,
    /// Pairs each blocking rule generates before de-duplication across rules.
    pub rule_pairs: Vec<u64>,
    pub timings: Timings,
}

/// Whether a column is a part of a postal address (by its name).
fn address_part(column: &str) -> bool {
    matches!(kind_of(column), Some((_, "street" | "street_number" | "address_2" | "city" | "postcode" | "state")))
}

/// Pairs a blocking rule may generate by default: five per record (at least a million), so that
/// linking stays linear in the input.
pub fn default_pair_budget(left: usize, right: usize) -> u64 {
    (5 * (left as u64 + right as u64)).max(1_000_000)
}

/// Fits inferred blocking rules to the data: a rule that would generate more than `budget` pairs is
/// made stricter by adding a key (a name initial, the birth year, a postcode prefix) until it fits,
/// or dropped. Returns a note per changed rule. Meant for inferred rules; explicit rules are the
/// user's to tune (they fail with [`FuzzyError::TooManyCandidates`] instead).
pub fn fit_blocking(settings: &mut Settings, left: &Records, right: Option<&Records>, budget: u64) -> Vec<String> {
    let roles: Vec<(&str, KeyTransform)> = vec![
        ("given_name", KeyTransform::First(1)),
        ("surname", KeyTransform::First(1)),
        ("date_of_birth", KeyTransform::Year),
        ("postcode", KeyTransform::First(2)),
        ("city", KeyTransform::First(2)),
        ("given_name", KeyTransform::First(3)),
        ("surname", KeyTransform::First(3)),
    ];
    let column_of = |role: &str| left.names.iter().find(|n| kind_of(n).is_some_and(|(_, r)| r == role)).cloned();
    let count = |rule: &BlockingRule| -> Option<u64> {
        let cols = |records: &Records| -> Option<Vec<usize>> {
            rule.iter().map(|k| records.column_index(&k.column)).collect()
        };
        let rules = std::slice::from_ref(rule);
        let lk = blocking::rule_keys(left, rules, &[cols(left)?]);
        let rk = match right {
            Some(r) => Some(blocking::rule_keys(r, rules, &[cols(r)?])),
            None => None,
        };
        blocking::count_candidates(&lk, rk.as_ref()).first().copied()
    };
    let mut notes = Vec::new();
    let mut fitted = Vec::new();
    for rule in std::mem::take(&mut settings.blocking_rules) {
        let mut rule = rule;
        let original = rule_name(&rule);
        let Some(mut pairs) = count(&rule) else {
            fitted.push(rule);
            continue;
        };
        let mut extra =
            roles.iter().filter_map(|(role, t)| column_of(role).map(|c| BlockKey { column: c, transform: *t }));
        while pairs > budget {
            // A new column, or a longer prefix of a column the rule already keys on.
            let Some(key) = extra.find(|k| match rule.iter().find(|r| r.column == k.column) {
                None => true,
                Some(r) => {
                    matches!((r.transform, k.transform), (KeyTransform::First(a), KeyTransform::First(b)) if b > a)
                }
            }) else {
                break;
            };
            match rule.iter_mut().find(|r| r.column == key.column) {
                Some(existing) => *existing = key,
                None => rule.push(key),
            }
            pairs = count(&rule).unwrap_or(0);
        }
        if pairs > budget {
            notes.push(format!(
                "dropped blocking rule [{original}]: {pairs} pairs even when made stricter (budget {budget})"
            ));
            continue;
        }
        let key_set = |r: &BlockingRule| {
            let mut keys: Vec<String> = r.iter().map(ToString::to_string).collect();
            keys.sort();
            keys
        };
        if fitted.iter().any(|r: &BlockingRule| key_set(r) == key_set(&rule)) {
            notes.push(format!("blocking rule [{original}] dropped: once made stricter it repeats another rule"));
            continue;
        }
        if rule_name(&rule) != original {
            notes.push(format!(
                "blocking rule [{original}] made stricter to [{}] ({pairs} pairs, budget {budget})",
                rule_name(&rule)
            ));
        }
        fitted.push(rule);
    }
    settings.blocking_rules = fitted;
    notes
}

/// Links two files (each pair is one record of each).
pub fn link(left: &Records, right: &Records, settings: &Settings) -> Result<LinkResult, FuzzyError> {
    run(left, Some(right), settings)
}

/// Finds duplicates within one file (pairs `left < right`).
pub fn dedupe(records: &Records, settings: &Settings) -> Result<LinkResult, FuzzyError> {
    run(records, None, settings)
}

/// u probabilities. The exact level (when it is the first) is computed exactly from value
/// frequencies (`Σ n_v(n_v − 1) / M(M − 1)` within a file, `Σ n_v n'_v / M M'` across two); the other
/// levels come from random record pairs sampled on every thread, conditioned on not being exact.
#[allow(clippy::too_many_arguments)]
fn estimate_u(
    left: &Records,
    right: &Records,
    dedupe: bool,
    columns: &[(usize, usize)],
    levels: &[Vec<Level>],
    level_counts: &[usize],
    settings: &Settings,
    pattern_of: &(dyn Fn(usize, usize) -> u64 + Sync),
) -> Vec<Vec<f64>> {
    let (n_left, n_right) = (left.len() as u64, right.len() as u64);
    let total_pairs = if dedupe { n_left * n_left.saturating_sub(1) / 2 } else { n_left * n_right };
    let samples = (settings.u_sample_pairs as u64).min(total_pairs);
    let threads = settings.threads();
    let counts: Vec<Vec<u64>> = if samples == 0 || n_left == 0 || n_right == 0 {
        level_counts.iter().map(|n| vec![0; *n]).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    s.spawn(move || {
                        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed.wrapping_add(t));
                        let mut counts: Vec<Vec<u64>> = level_counts.iter().map(|n| vec![0; *n]).collect();
                        let mine = samples / threads as u64 + u64::from(t < samples % threads as u64);
                        for _ in 0..mine {
                            let l = rng.random_range(0..n_left) as usize;
                            let mut r = rng.random_range(0..n_right) as usize;
                            if dedupe && r == l {
                                r = (r + 1) % n_right as usize;
                            }
                            let p = pattern_of(l, r);
                            for (c, counts) in counts.iter_mut().enumerate() {
                                let lv = model::level(p, c);
                                if lv != NULL_LEVEL {
                                    counts[lv as usize] += 1;
                                }
                            }
                        }
                        counts
                    })
                })
                .collect();
            let mut total: Vec<Vec<u64>> = level_counts.iter().map(|n| vec![0; *n]).collect();
            for h in handles {
                for (t, c) in total.iter_mut().zip(crate::joined(h)) {
                    for (a, b) in t.iter_mut().zip(c) {
                        *a += b;
                    }
                }
            }
            total
        })
    };
    counts
        .iter()
        .enumerate()
        .map(|(c, counts)| {
            if levels[c].first() != Some(&Level::Exact) {
                return model::u_from_counts(counts);
            }
            let (lc, rc) = columns[c];
            let mut freq: HashMap<&str, (u64, u64)> = HashMap::new();
            for row in 0..left.len() {
                if let Some(v) = left.value(lc, row) {
                    freq.entry(v).or_default().0 += 1;
                }
            }
            if !dedupe {
                for row in 0..right.len() {
                    if let Some(v) = right.value(rc, row) {
                        freq.entry(v).or_default().1 += 1;
                    }
                }
            }
            let (ml, mr): (u64, u64) = freq.values().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
            let exact = if dedupe {
                let pairs = ml.saturating_mul(ml.saturating_sub(1)) as f64;
                freq.values().map(|(n, _)| (n * n.saturating_sub(1)) as f64).sum::<f64>() / pairs.max(1.0)
            } else {
                freq.values().map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>()
                    / ((ml as f64) * (mr as f64)).max(1.0)
            };
            let exact = exact.clamp(1e-9, 1.0 - 1e-9);
            let rest = model::u_from_counts(&counts[1..]);
            std::iter::once(exact).chain(rest.iter().map(|q| q * (1.0 - exact))).collect()
        })
        .collect()
}

struct Candidates {
    left: Vec<u32>,
    right: Vec<u32>,
    pattern: Vec<u64>,
    mask: Vec<u16>,
}

fn rule_name(rule: &BlockingRule) -> String {
    rule.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn run(left: &Records, right: Option<&Records>, settings: &Settings) -> Result<LinkResult, FuzzyError> {
    settings.check().map_err(FuzzyError::Settings)?;
    if settings.comparisons.is_empty() {
        return Err(FuzzyError::NoComparisons);
    }
    if settings.blocking_rules.is_empty() {
        return Err(FuzzyError::NoBlockingRules);
    }
    if settings.blocking_rules.len() > 16 {
        return Err(FuzzyError::Settings("at most 16 blocking rules".into()));
    }
    let dedupe = right.is_none();
    let right_records = right.unwrap_or(left);
    let resolve = |records: &Records, name: &str| {
        records
            .column_index(name)
            .ok_or_else(|| FuzzyError::MissingColumn { column: name.to_owned(), available: records.names.clone() })
    };
    let comparison_columns: Vec<(usize, usize)> = settings
        .comparisons
        .iter()
        .map(|c| Ok((resolve(left, &c.column)?, resolve(right_records, &c.column)?)))
        .collect::<Result<_, FuzzyError>>()?;
    let rule_columns = |records: &Records| -> Result<Vec<Vec<usize>>, FuzzyError> {
        settings.blocking_rules.iter().map(|r| r.iter().map(|k| resolve(records, &k.column)).collect()).collect()
    };
    let (l_rule_cols, r_rule_cols) = (rule_columns(left)?, rule_columns(right_records)?);
    let levels: Vec<Vec<Level>> = settings.comparisons.iter().map(Comparison::effective_levels).collect();
    let level_counts: Vec<usize> = levels.iter().map(|l| l.len() + 1).collect();
    let threads = settings.threads();

    // Block and compare.
    let started = Instant::now();
    let lkeys = blocking::rule_keys(left, &settings.blocking_rules, &l_rule_cols);
    let rkeys =
        if dedupe { lkeys.clone() } else { blocking::rule_keys(right_records, &settings.blocking_rules, &r_rule_cols) };
    let counts = blocking::count_candidates(&lkeys, (!dedupe).then_some(&rkeys));
    for (rule, count) in settings.blocking_rules.iter().zip(&counts) {
        if *count > settings.max_candidate_pairs {
            return Err(FuzzyError::TooManyCandidates {
                rule: rule_name(rule),
                pairs: *count,
                max: settings.max_candidate_pairs,
            });
        }
    }
    let groups: Vec<blocking::KeyMap<Vec<u32>>> = (0..rkeys.rules).map(|i| blocking::groups(&rkeys, i)).collect();
    let pattern_of = |l: usize, r: usize| -> u64 {
        let mut p = 0u64;
        for (c, ((lc, rc), lv)) in comparison_columns.iter().zip(&levels).enumerate() {
            let level = level_of(lv, left.value(*lc, l), right_records.value(*rc, r));
            p |= u64::from(level) << (model::BITS as usize * c);
        }
        p
    };
    let chunk = 2048;
    let candidates = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (lkeys, rkeys, groups, pattern_of) = (&lkeys, &rkeys, &groups, &pattern_of);
                s.spawn(move || {
                    let mut out = Candidates { left: vec![], right: vec![], pattern: vec![], mask: vec![] };
                    let mut start = t * chunk;
                    while start < left.len() {
                        for l in start..(start + chunk).min(left.len()) {
                            let lrow = lkeys.row(l);
                            for (i, &k) in lrow.iter().enumerate() {
                                if k == 0 {
                                    continue;
                                }
                                let Some(members) = groups[i].get(&k) else { continue };
                                for &r in members {
                                    let r = r as usize;
                                    if dedupe && r <= l {
                                        continue;
                                    }
                                    let mask = blocking::rule_mask(lrow, rkeys.row(r));
                                    // Generated by an earlier rule already?
                                    if mask & ((1u16 << i) - 1) != 0 {
                                        continue;
                                    }
                                    out.left.push(l as u32);
                                    out.right.push(r as u32);
                                    out.pattern.push(pattern_of(l, r));
                                    out.mask.push(mask);
                                }
                            }
                        }
                        start += threads * chunk;
                    }
                    out
                })
            })
            .collect();
        let mut all = Candidates { left: vec![], right: vec![], pattern: vec![], mask: vec![] };
        for h in handles {
            let part = crate::joined(h);
            all.left.extend(part.left);
            all.right.extend(part.right);
            all.pattern.extend(part.pattern);
            all.mask.extend(part.mask);
        }
        all
    });
    let blocking_seconds = started.elapsed().as_secs_f64();

    // Estimate.
    let started = Instant::now();
    let n_left = left.len() as u64;
    let n_right = right_records.len() as u64;
    let total_pairs = if dedupe { n_left * n_left.saturating_sub(1) / 2 } else { n_left * n_right };
    let u = estimate_u(left, right_records, dedupe, &comparison_columns, &levels, &level_counts, settings, &pattern_of);
    let mask_rows: Vec<(u32, u32, u64, u16)> = (0..candidates.left.len())
        .map(|i| (candidates.left[i], candidates.right[i], candidates.pattern[i], candidates.mask[i]))
        .collect();
    let (all_patterns, per_rule) = model::pattern_counts(&mask_rows, settings.blocking_rules.len());
    drop(mask_rows);
    let m_init: Vec<Vec<f64>> = level_counts.iter().map(|n| model::initial_m(*n)).collect();
    let mut m_sum: Vec<Vec<f64>> = level_counts.iter().map(|n| vec![0.0; *n]).collect();
    let mut m_runs = vec![0usize; level_counts.len()];
    let mut rule_estimates: Vec<(usize, f64, f64)> = Vec::new(); // (rule, lambda within rule, pairs in rule)
    for (r, rule) in settings.blocking_rules.iter().enumerate() {
        let patterns = &per_rule[r];
        let pairs: f64 = patterns.iter().map(|(_, n)| n).sum();
        if pairs == 0.0 {
            continue;
        }
        // A comparison takes part unless the rule blocks on its column, or it agrees exactly in
        // almost every pair of the rule anyway (a city when the rule blocks on the postcode): such a
        // comparison cannot tell matches from non-matches among these pairs, and letting it in
        // would have EM mistake "same place" for "same person".
        let active: Vec<bool> = settings
            .comparisons
            .iter()
            .enumerate()
            .map(|(c, comparison)| {
                // Parts of an address move together: a rule that blocks on one part selects only the
                // matches that did not move, so it says nothing fair about the other parts.
                let group = |column: &str| if address_part(column) { "address" } else { column }.to_owned();
                if rule.iter().any(|k| group(&k.column) == group(&comparison.column)) {
                    return false;
                }
                let (mut exact, mut present) = (0.0, 0.0);
                for (pattern, n) in patterns {
                    let level = model::level(*pattern, c);
                    if level != NULL_LEVEL {
                        present += n;
                        if level == 0 {
                            exact += n;
                        }
                    }
                }
                present == 0.0 || exact / present < 0.95
            })
            .collect();
        // Parts of an address are not independent given a match (people move, and then every part
        // changes at once): EM over several of them at once drifts into "a match never moves".
        // So one address part takes part in EM; the others are estimated afterwards from the
        // posterior match probabilities of the fitted model, which they did not shape.
        let mut passive = vec![false; active.len()];
        let mut seen_address = false;
        for (c, comparison) in settings.comparisons.iter().enumerate() {
            if active[c] && address_part(&comparison.column) {
                if seen_address {
                    passive[c] = true;
                }
                seen_address = true;
            }
        }
        let em_active: Vec<bool> = active.iter().zip(&passive).map(|(a, p)| *a && !*p).collect();
        if !em_active.iter().any(|a| *a) {
            continue;
        }
        let problem = model::EmProblem {
            patterns,
            levels: &level_counts,
            active: &em_active,
            u: &u,
            max_iterations: settings.max_iterations,
            tolerance: settings.tolerance,
        };
        let (mut m, lambda) = model::em(&problem, m_init.clone(), 0.3);
        model::posterior_m(&problem, &mut m, lambda, &passive);
        for c in 0..level_counts.len() {
            if active[c] {
                for l in 0..level_counts[c] {
                    m_sum[c][l] += m[c][l];
                }
                m_runs[c] += 1;
            }
        }
        rule_estimates.push((r, lambda, pairs));
    }
    let mut m: Vec<Vec<f64>> = m_sum
        .iter()
        .zip(&m_runs)
        .zip(&m_init)
        .map(|((s, n), init)| if *n == 0 { init.clone() } else { s.iter().map(|x| x / *n as f64).collect() })
        .collect();
    // Comparisons no rule left free: estimate them on all candidates with the others fixed.
    let never: Vec<bool> = m_runs.iter().map(|n| *n == 0).collect();
    if never.iter().any(|x| *x) {
        let all_active = vec![true; level_counts.len()];
        let problem = model::EmProblem {
            patterns: &all_patterns,
            levels: &level_counts,
            active: &all_active,
            u: &u,
            max_iterations: settings.max_iterations,
            tolerance: settings.tolerance,
        };
        let (m2, _) = model::em(&problem, m.clone(), 0.3);
        for c in 0..level_counts.len() {
            if never[c] {
                m[c] = m2[c].clone();
            }
        }
    }
    // Prior: matches in each rule's candidates, divided by the share of all matches the rule can
    // catch (the m probability that its columns agree), then over all pairs.
    let mut totals: Vec<f64> = rule_estimates
        .iter()
        .map(|(r, lambda, pairs)| {
            let recall: f64 = settings.blocking_rules[*r]
                .iter()
                .filter_map(|k| {
                    let c = settings.comparisons.iter().position(|c| c.column == k.column)?;
                    Some(match k.transform {
                        KeyTransform::Exact => m[c][0],
                        _ => 1.0 - m[c][level_counts[c] - 1],
                    })
                })
                .product();
            lambda * pairs / recall.max(1e-3)
        })
        .collect();
    totals.sort_by(f64::total_cmp);
    let expected_matches = totals.get(totals.len() / 2).copied().unwrap_or(1.0).max(1.0);
    let lambda = (expected_matches / total_pairs.max(1) as f64).clamp(1e-12, 0.5);
    let estimating_seconds = started.elapsed().as_secs_f64();

    // Score.
    let started = Instant::now();
    let prior = (lambda / (1.0 - lambda)).log2();
    let log_ratio: Vec<Vec<f64>> = m
        .iter()
        .zip(&u)
        .map(|(mc, uc)| mc.iter().zip(uc).map(|(a, b)| (a.max(1e-12) / b.max(1e-12)).log2()).collect())
        .collect();
    let tf: Vec<Option<HashMap<&str, f64>>> = settings
        .comparisons
        .iter()
        .zip(&comparison_columns)
        .map(|(c, (lc, rc))| {
            if !c.uses_term_frequency() {
                return None;
            }
            let mut counts: HashMap<&str, f64> = HashMap::new();
            let mut total = 0.0;
            let mut sources: Vec<(&Records, usize)> = vec![(left, *lc)];
            if !dedupe {
                sources.push((right_records, *rc));
            }
            for (records, col) in sources {
                for row in 0..records.len() {
                    if let Some(v) = records.value(col, row) {
                        *counts.entry(v).or_default() += 1.0;
                        total += 1.0;
                    }
                }
            }
            let total: f64 = total;
            Some(counts.into_iter().map(|(k, v)| (k, v / total)).collect())
        })
        .collect();
    let threshold_weight = if settings.threshold >= 1.0 {
        f64::INFINITY
    } else {
        (settings.threshold / (1.0 - settings.threshold)).log2()
    };
    let mut matches: Vec<Match> = Vec::new();
    for i in 0..candidates.left.len() {
        let p = candidates.pattern[i];
        let (l, r) = (candidates.left[i] as usize, candidates.right[i] as usize);
        let mut w = prior;
        for c in 0..level_counts.len() {
            let lv = model::level(p, c);
            if lv == NULL_LEVEL {
                continue;
            }
            w += log_ratio[c][lv as usize];
            if lv == 0
                && let (Some(tf), Some(value)) = (&tf[c], left.value(comparison_columns[c].0, l))
                && let Some(freq) = tf.get(value)
            {
                // Replace u(exact) by the frequency of this very value.
                w += (u[c][0] / freq.max(1e-9)).log2();
            }
        }
        if w >= threshold_weight {
            matches.push(Match { left: l as u32, right: r as u32, weight: w, probability: 1.0 / (1.0 + (-w).exp2()) });
        }
    }
    matches.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.left.cmp(&b.left)).then(a.right.cmp(&b.right)));
    if settings.one_to_one {
        let mut lt = vec![false; left.len()];
        let mut rt = vec![false; right_records.len()];
        matches.retain(|m| {
            let free = !lt[m.left as usize] && !rt[m.right as usize];
            if free {
                lt[m.left as usize] = true;
                rt[m.right as usize] = true;
            }
            free
        });
    }
    let scoring_seconds = started.elapsed().as_secs_f64();
    Ok(LinkResult {
        matches,
        candidates: candidates.left.len() as u64,
        parameters: Parameters { m, u, lambda },
        comparisons: settings.comparisons.clone(),
        blocking_rules: settings.blocking_rules.clone(),
        rule_pairs: counts,
        timings: Timings {
            blocking_and_comparing: blocking_seconds,
            estimating: estimating_seconds,
            scoring: scoring_seconds,
        },
    })
}
