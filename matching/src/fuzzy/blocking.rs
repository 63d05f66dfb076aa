//! Blocking: which record pairs are compared at all. A pair is a candidate when every key of at
//! least one rule agrees; each candidate is generated once (by the first rule it satisfies) and
//! remembers every rule it satisfies, for training.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use super::Records;
use super::compare::soundex;
use super::settings::{BlockingRule, KeyTransform};

/// Hashed blocking keys: `keys[rule][record]`, `None` when a key column is missing.
pub(crate) type RuleKeys = Vec<Vec<Option<u64>>>;

fn transform(value: &str, t: KeyTransform) -> Option<String> {
    match t {
        KeyTransform::Exact => Some(value.to_owned()),
        KeyTransform::First(n) => {
            let s: String = value.chars().take(n).collect();
            (s.chars().count() == n).then_some(s)
        }
        KeyTransform::Soundex => soundex(value),
        KeyTransform::Year => {
            (value.len() >= 4 && value[..4].bytes().all(|b| b.is_ascii_digit())).then(|| value[..4].to_owned())
        }
    }
}

/// The hashed keys of every record under every rule. `columns[i]` is the index, in `records`, of
/// each rule key's column (resolved by the caller).
pub(crate) fn rule_keys(records: &Records, rules: &[BlockingRule], columns: &[Vec<usize>]) -> RuleKeys {
    let state = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    rules
        .iter()
        .zip(columns)
        .map(|(rule, cols)| {
            (0..records.len())
                .map(|r| {
                    let mut h = state.build_hasher();
                    for (key, c) in rule.iter().zip(cols) {
                        let v = records.value(*c, r)?;
                        if v.is_empty() {
                            return None;
                        }
                        transform(v, key.transform)?.hash(&mut h);
                        0xffu8.hash(&mut h);
                    }
                    Some(h.finish())
                })
                .collect()
        })
        .collect()
}

/// Records grouped by their key under one rule.
pub(crate) fn groups(keys: &[Option<u64>]) -> HashMap<u64, Vec<u32>> {
    let mut g: HashMap<u64, Vec<u32>> = HashMap::new();
    for (r, k) in keys.iter().enumerate() {
        if let Some(k) = k {
            g.entry(*k).or_default().push(r as u32);
        }
    }
    g
}

/// Candidate pairs each rule generates before de-duplication across rules (an upper bound of the
/// work), per rule.
pub(crate) fn count_candidates(left: &RuleKeys, right: Option<&RuleKeys>) -> Vec<u64> {
    left.iter()
        .enumerate()
        .map(|(i, lk)| {
            let lg = groups(lk);
            match right {
                Some(rk) => {
                    let rg = groups(&rk[i]);
                    lg.iter().map(|(k, v)| v.len() as u64 * rg.get(k).map_or(0, |w| w.len() as u64)).sum()
                }
                None => lg.values().map(|v| (v.len() as u64) * (v.len() as u64 - 1) / 2).sum(),
            }
        })
        .collect()
}

/// Which rules a pair satisfies, as a bit mask.
pub(crate) fn rule_mask(left: &RuleKeys, right: &RuleKeys, l: usize, r: usize) -> u16 {
    let mut mask = 0u16;
    for (i, (lk, rk)) in left.iter().zip(right).enumerate() {
        if lk[l].is_some() && lk[l] == rk[r] {
            mask |= 1 << i;
        }
    }
    mask
}
