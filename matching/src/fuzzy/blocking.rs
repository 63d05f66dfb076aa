//! Blocking: which record pairs are compared at all. A pair is a candidate when every key of at
//! least one rule agrees; each candidate is generated once (by the first rule it satisfies) and
//! remembers every rule it satisfies, for training.
//!
//! Keys are 64-bit FNV-1a hashes of the transformed values (0 means "no key"), stored record-major
//! so that everything the candidate loop asks about one record sits in one or two cache lines.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::Records;
use super::compare::soundex;
use super::settings::{BlockingRule, KeyTransform};

/// The hashed keys of every record under every rule: `keys[record * rules + rule]`, 0 = none.
#[derive(Debug, Clone)]
pub(crate) struct RuleKeys {
    pub rules: usize,
    pub keys: Vec<u64>,
}

impl RuleKeys {
    #[inline]
    pub(crate) fn get(&self, record: usize, rule: usize) -> u64 {
        self.keys[record * self.rules + rule]
    }

    #[inline]
    pub(crate) fn row(&self, record: usize) -> &[u64] {
        &self.keys[record * self.rules..(record + 1) * self.rules]
    }

    pub(crate) fn records(&self) -> usize {
        self.keys.len().checked_div(self.rules).unwrap_or(0)
    }
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Feeds a transformed key into the hash; `false` when the value has no key under the transform.
fn feed(h: &mut Fnv, value: &str, t: KeyTransform) -> bool {
    match t {
        KeyTransform::Exact => h.write(value.as_bytes()),
        KeyTransform::First(n) => {
            let Some((end, _)) = value.char_indices().nth(n - 1) else { return false };
            let end = end + value[end..].chars().next().map_or(0, char::len_utf8);
            h.write(&value.as_bytes()[..end]);
        }
        KeyTransform::Soundex => match soundex(value) {
            Some(code) => h.write(code.as_bytes()),
            None => return false,
        },
        KeyTransform::Year => {
            if value.len() < 4 || !value.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                return false;
            }
            h.write(&value.as_bytes()[..4]);
        }
    }
    h.write(&[0xff]);
    true
}

/// The keys of every record under every rule. `columns[i]` holds, for each key of rule `i`, the
/// index in `records` of its column.
pub(crate) fn rule_keys(records: &Records, rules: &[BlockingRule], columns: &[Vec<usize>]) -> RuleKeys {
    let mut keys = vec![0u64; records.len() * rules.len()];
    for (record, row) in keys.chunks_mut(rules.len().max(1)).enumerate().take(records.len()) {
        for (i, (rule, cols)) in rules.iter().zip(columns).enumerate() {
            let mut h = Fnv::new();
            let complete = rule.iter().zip(cols).all(|(key, c)| match records.value(*c, record) {
                Some(v) if !v.is_empty() => feed(&mut h, v, key.transform),
                _ => false,
            });
            row[i] = if complete { h.0 | 1 } else { 0 };
        }
    }
    RuleKeys { rules: rules.len(), keys }
}

/// Keys are hashes already: hash a `u64` key by itself.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// Records grouped by their key under one rule.
pub(crate) fn groups(keys: &RuleKeys, rule: usize) -> KeyMap<Vec<u32>> {
    let mut g: KeyMap<Vec<u32>> = KeyMap::default();
    for r in 0..keys.records() {
        let k = keys.get(r, rule);
        if k != 0 {
            g.entry(k).or_default().push(r as u32);
        }
    }
    g
}

/// Candidate pairs each rule generates before de-duplication across rules (an upper bound of the
/// work), per rule.
pub(crate) fn count_candidates(left: &RuleKeys, right: Option<&RuleKeys>) -> Vec<u64> {
    (0..left.rules)
        .map(|i| {
            let lg = groups(left, i);
            match right {
                Some(rk) => {
                    let rg = groups(rk, i);
                    lg.iter().map(|(k, v)| v.len() as u64 * rg.get(k).map_or(0, |w| w.len() as u64)).sum()
                }
                None => lg.values().map(|v| (v.len() as u64) * (v.len() as u64 - 1) / 2).sum(),
            }
        })
        .collect()
}

/// Which rules a pair satisfies, as a bit mask.
#[inline]
pub(crate) fn rule_mask(left: &[u64], right: &[u64]) -> u16 {
    let mut mask = 0u16;
    for (i, (l, r)) in left.iter().zip(right).enumerate() {
        if *l != 0 && l == r {
            mask |= 1 << i;
        }
    }
    mask
}
