//! Privacy-preserving fuzzy matching with Bloom-filter encodings (cryptographic long-term keys, CLKs).
//!
//! A data owner that will not send plaintext names encodes each record on its own machine: every
//! field is normalized, cut into character q-grams (bigrams by default; positional digits, the
//! year and the unordered month–day pair for dates),
//! and each q-gram sets `k` bits of a 1024-bit (by default) filter at positions derived from a keyed
//! HMAC-SHA-256 of the field tag and the q-gram under a secret the room's data owners share (double
//! hashing: `h1 + i·h2 mod bits`). `k` per field is the field's weight. Without the secret, the bit
//! positions of a q-gram cannot be computed, so a filter cannot be tested for a guessed name.
//!
//! The engine compares filters with the Dice coefficient `2|A∧B| / (|A| + |B|)` (popcounts), under
//! blocking: keyed hashes of blocking keys made with the same secret, or all pairs for small inputs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::fuzzy::{FieldKind, kind_of, soundex};
use crate::normalize::{self, Profile};

/// Default filter length in bits.
pub const DEFAULT_BITS: usize = 1024;

/// One encoded field.
#[derive(Debug, Clone, PartialEq)]
pub struct ClkField {
    pub column: String,
    /// What the field is (`given_name`, `surname`, `date_of_birth`, …). The HMAC input is tagged
    /// with the role ([`ClkField::hash_tag`]: one tag for every name field), not with the column's
    /// name or position, so two data owners whose files name or order their columns differently
    /// still produce comparable filters.
    pub role: &'static str,
    pub kind: FieldKind,
    /// Bits set per q-gram: the field's weight.
    pub bits_per_token: usize,
}

impl ClkField {
    /// The tag the field's q-grams are hashed under. Every name field shares one tag, so a record
    /// whose given name and surname were swapped (common in CRM files) still encodes to the same
    /// bits; other fields are tagged by their role.
    pub fn hash_tag(&self) -> &'static str {
        if self.kind == FieldKind::Name { "name" } else { self.role }
    }
}

/// Which fields go into a filter, and how heavily.
#[derive(Debug, Clone, PartialEq)]
pub struct ClkSchema {
    pub bits: usize,
    pub fields: Vec<ClkField>,
}

impl ClkSchema {
    /// Recognized columns with weights by kind: names and dates weigh most, free text least.
    pub fn infer(columns: &[String]) -> Self {
        let fields = columns
            .iter()
            .filter_map(|c| {
                let (kind, role) = kind_of(c)?;
                let bits_per_token = match (kind, role) {
                    (FieldKind::Name, _) => 15,
                    (FieldKind::Date, _) => 16,
                    (FieldKind::Postcode, _) => 12,
                    (FieldKind::Email, _) => 12,
                    (FieldKind::Phone, _) => 10,
                    (FieldKind::Text, "city") => 10,
                    (FieldKind::Text, _) => 6,
                    (FieldKind::Exact, "state") => 4,
                    (FieldKind::Exact, _) => 8,
                };
                Some(ClkField { column: c.clone(), role, kind, bits_per_token })
            })
            .collect();
        Self { bits: DEFAULT_BITS, fields }
    }
}

fn normalized(kind: FieldKind, raw: &str) -> Option<String> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    match kind {
        FieldKind::Name | FieldKind::Text => normalize::name_with(t, Profile::Sealroom).ok(),
        FieldKind::Date => normalize::date_for_comparison(t),
        FieldKind::Postcode => normalize::postcode_with(t, Profile::Sealroom).ok(),
        FieldKind::Email => normalize::email_with(t, Profile::Sealroom).ok(),
        FieldKind::Phone => Some(t.chars().filter(char::is_ascii_digit).collect::<String>()).filter(|s| !s.is_empty()),
        FieldKind::Exact => Some(t.to_lowercase()),
    }
}

/// The q-grams of a normalized value: padded bigrams, or for dates (`YYYYMMDD`) the positional
/// digits plus the year and the unordered pair of month and day as whole tokens — so a date with a
/// typo in one digit keeps most of its tokens, and a date whose day and month were swapped (a
/// European date read the American way) keeps its year, its pair and half of its digits.
fn tokens(kind: FieldKind, value: &str) -> Vec<String> {
    if kind == FieldKind::Date {
        let mut out: Vec<String> = value.chars().enumerate().map(|(i, c)| format!("{i}{c}")).collect();
        if let (Some(year), Some(month), Some(day)) = (value.get(..4), value.get(4..6), value.get(6..8)) {
            let (low, high) = if month <= day { (month, day) } else { (day, month) };
            out.extend([format!("y{year}"), format!("md{low}{high}")]);
        }
        return out;
    }
    let padded: Vec<char> = std::iter::once('_').chain(value.chars()).chain(std::iter::once('_')).collect();
    padded.windows(2).map(|w| w.iter().collect()).collect()
}

/// Encodes records into filters with a secret.
#[derive(Clone)]
pub struct Encoder {
    schema: ClkSchema,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl Encoder {
    /// `secret` must be at least 16 bytes; the room's data owners share it out of band.
    pub fn new(schema: ClkSchema, secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 16 {
            return Err("the CLK secret must be at least 16 bytes".into());
        }
        if schema.bits == 0 || !schema.bits.is_multiple_of(64) {
            return Err(format!("a filter of {} bits: use a positive multiple of 64", schema.bits));
        }
        if schema.fields.is_empty() {
            return Err("no field to encode".into());
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(Self { schema, mac })
    }

    pub fn schema(&self) -> &ClkSchema {
        &self.schema
    }

    pub fn words(&self) -> usize {
        self.schema.bits / 64
    }

    fn positions(&self, tag: &str, token: &str) -> (u64, u64) {
        let mut mac = self.mac.clone();
        mac.update(tag.as_bytes());
        mac.update(&[0]);
        mac.update(token.as_bytes());
        let out = mac.finalize().into_bytes();
        let h1 = u64::from_le_bytes(out[0..8].try_into().unwrap_or([0; 8]));
        let h2 = u64::from_le_bytes(out[8..16].try_into().unwrap_or([0; 8])) | 1;
        (h1, h2)
    }

    /// Encodes one record (`values[i]` is the raw value of `schema.fields[i]`) into `out`.
    pub fn encode_into(&self, values: &[Option<&str>], out: &mut [u64]) {
        out.fill(0);
        let bits = self.schema.bits as u64;
        for (field, value) in self.schema.fields.iter().zip(values) {
            let Some(v) = value.and_then(|v| normalized(field.kind, v)) else { continue };
            for token in tokens(field.kind, &v) {
                let (h1, h2) = self.positions(field.hash_tag(), &token);
                for k in 0..field.bits_per_token as u64 {
                    let pos = h1.wrapping_add(k.wrapping_mul(h2)) % bits;
                    out[(pos / 64) as usize] |= 1 << (pos % 64);
                }
            }
        }
    }

    /// A keyed 64-bit hash of a blocking key (so blocking reveals nothing without the secret).
    pub fn block_key(&self, rule: usize, key: &str) -> u64 {
        let (h1, _) = self.positions(&format!("block{rule}"), key);
        h1
    }

    /// The keyed blocking keys of a record ([`blocking_keys`] under [`Encoder::block_key`]).
    pub fn keyed_blocking_keys(&self, values: &[Option<&str>]) -> Vec<u64> {
        blocking_keys(&self.schema, values).into_iter().map(|(rule, key)| self.block_key(rule, &key)).collect()
    }
}

/// A filter's words as little-endian bytes, the form stored in a binary column.
pub fn to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A keyed blocking key as stored in a `clk_blocking_keys` column: 16 lowercase hex characters.
pub fn key_to_hex(key: u64) -> String {
    format!("{key:016x}")
}

/// Parses [`key_to_hex`]'s form; `None` unless exactly 16 hex characters.
pub fn key_from_hex(text: &str) -> Option<u64> {
    if text.len() == 16 { u64::from_str_radix(text, 16).ok() } else { None }
}

/// Filters of many records, stored contiguously.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    words: usize,
    data: Vec<u64>,
    counts: Vec<u32>,
}

impl Filters {
    pub fn new(words: usize) -> Self {
        Self { words, data: Vec::new(), counts: Vec::new() }
    }

    pub fn push(&mut self, filter: &[u64]) {
        self.data.extend_from_slice(filter);
        self.counts.push(filter.iter().map(|w| w.count_ones()).sum());
    }

    /// Builds from raw bytes (little-endian words), as stored in a binary column.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() != self.words * 8 {
            return Err(format!("a filter of {} bytes; expected {}", bytes.len(), self.words * 8));
        }
        let words: Vec<u64> =
            bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        self.push(&words);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u64] {
        &self.data[i * self.words..(i + 1) * self.words]
    }

    /// The filter as little-endian bytes.
    pub fn bytes(&self, i: usize) -> Vec<u8> {
        to_bytes(self.get(i))
    }

    /// Dice coefficient of filter `i` here and `j` there.
    pub fn dice(&self, i: usize, other: &Filters, j: usize) -> f64 {
        let total = self.counts[i] + other.counts[j];
        if total == 0 {
            return 0.0;
        }
        let common: u32 = self.get(i).iter().zip(other.get(j)).map(|(a, b)| (a & b).count_ones()).sum();
        2.0 * f64::from(common) / f64::from(total)
    }
}

/// A pair of filters at or above the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClkMatch {
    pub left: u32,
    pub right: u32,
    pub dice: f64,
}

/// Popcount of the intersection of two filters of the default size, on fixed-size arrays so the
/// compiler unrolls it into POPCNTs.
#[inline]
fn common16(a: &[u64], b: &[u64]) -> u32 {
    let (Ok(a), Ok(b)) = (<&[u64; 16]>::try_from(a), <&[u64; 16]>::try_from(b)) else {
        return a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum();
    };
    let mut total = 0;
    for i in 0..16 {
        total += (a[i] & b[i]).count_ones();
    }
    total
}

fn compare_range(
    left: &Filters,
    right: &Filters,
    rows: std::ops::Range<usize>,
    dedupe: bool,
    threshold: f64,
    out: &mut Vec<ClkMatch>,
) -> u64 {
    let mut compared = 0u64;
    for i in rows {
        let ci = left.counts[i];
        let a = left.get(i);
        let start = if dedupe { i + 1 } else { 0 };
        compared += (right.len() - start.min(right.len())) as u64;
        for j in start..right.len() {
            let cj = right.counts[j];
            let total = f64::from(ci + cj);
            // Dice can be at most 2·min/(a+b): skip pairs that cannot reach the threshold.
            if 2.0 * f64::from(ci.min(cj)) < threshold * total {
                continue;
            }
            let common = f64::from(common16(a, right.get(j)));
            if 2.0 * common >= threshold * total && total > 0.0 {
                out.push(ClkMatch { left: i as u32, right: j as u32, dice: 2.0 * common / total });
            }
        }
    }
    compared
}

/// Every pair (all of `left` × `right`, or `i < j` within `left` when `right` is `None`) whose Dice
/// coefficient reaches `threshold`, and the number of pairs compared.
pub fn compare_all(left: &Filters, right: Option<&Filters>, threshold: f64, threads: usize) -> (Vec<ClkMatch>, u64) {
    let dedupe = right.is_none();
    let right = right.unwrap_or(left);
    let threads = threads.max(1);
    let block = 64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut compared = 0;
                    let mut start = t * block;
                    while start < left.len() {
                        compared += compare_range(
                            left,
                            right,
                            start..(start + block).min(left.len()),
                            dedupe,
                            threshold,
                            &mut out,
                        );
                        start += threads * block;
                    }
                    (out, compared)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut compared = 0;
        for h in handles {
            let (m, c) = crate::joined(h);
            all.extend(m);
            compared += c;
        }
        (all, compared)
    })
}

/// Pairs that share at least one blocking key (`keys[i]` are the keyed block hashes of record `i`),
/// compared with Dice; returns the matches and the number of pairs compared.
pub fn compare_blocked(
    left: &Filters,
    left_keys: &[Vec<u64>],
    right: Option<(&Filters, &[Vec<u64>])>,
    threshold: f64,
) -> (Vec<ClkMatch>, u64) {
    use std::collections::{HashMap, HashSet};
    let dedupe = right.is_none();
    let (rf, rk) = right.unwrap_or((left, left_keys));
    let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
    for (j, keys) in rk.iter().enumerate() {
        for k in keys {
            index.entry(*k).or_default().push(j as u32);
        }
    }
    let mut out = Vec::new();
    let mut compared = 0u64;
    let mut seen: HashSet<u32> = HashSet::new();
    for (i, keys) in left_keys.iter().enumerate() {
        seen.clear();
        for k in keys {
            for &j in index.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                if (dedupe && j as usize <= i) || !seen.insert(j) {
                    continue;
                }
                compared += 1;
                let d = left.dice(i, rf, j as usize);
                if d >= threshold {
                    out.push(ClkMatch { left: i as u32, right: j, dice: d });
                }
            }
        }
    }
    (out, compared)
}

/// Keeps the best match of each record, greedily from the highest Dice (linking two files).
pub fn one_to_one(mut matches: Vec<ClkMatch>) -> Vec<ClkMatch> {
    matches.sort_by(|a, b| b.dice.total_cmp(&a.dice).then(a.left.cmp(&b.left)).then(a.right.cmp(&b.right)));
    let mut lt = std::collections::HashSet::new();
    let mut rt = std::collections::HashSet::new();
    matches.retain(|m| {
        let free = !lt.contains(&m.left) && !rt.contains(&m.right);
        if free {
            lt.insert(m.left);
            rt.insert(m.right);
        }
        free
    });
    matches
}

/// Blocking keys (plaintext, to be keyed with [`Encoder::block_key`]) for the CLK of a record:
/// surname Soundex + birth year, given-name prefix + birth date, postcode + surname initial, and the
/// unordered pair of given name and surname.
pub fn blocking_keys(schema: &ClkSchema, values: &[Option<&str>]) -> Vec<(usize, String)> {
    let find = |role: &str| {
        schema
            .fields
            .iter()
            .position(|f| kind_of(&f.column).is_some_and(|(_, r)| r == role))
            .and_then(|i| values.get(i).copied().flatten())
            .and_then(|v| {
                normalized(schema.fields.iter().find(|f| kind_of(&f.column).is_some_and(|(_, r)| r == role))?.kind, v)
            })
    };
    let (given, surname, dob, postcode) =
        (find("given_name"), find("surname"), find("date_of_birth"), find("postcode"));
    let mut keys = Vec::new();
    if let (Some(s), Some(d)) = (&surname, &dob)
        && let Some(code) = soundex(s)
    {
        keys.push((0, format!("{code}|{}", &d[..d.len().min(4)])));
    }
    if let (Some(g), Some(d)) = (&given, &dob) {
        keys.push((1, format!("{}|{d}", g.chars().take(3).collect::<String>())));
    }
    if let (Some(p), Some(s)) = (&postcode, &surname) {
        keys.push((2, format!("{p}|{}", s.chars().take(1).collect::<String>())));
    }
    if let (Some(g), Some(s)) = (&given, &surname) {
        // Order-free, so a record whose given name and surname were swapped blocks with the original.
        let (a, b) = if g <= s { (g, s) } else { (s, g) };
        keys.push((3, format!("{a}|{b}")));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> ClkSchema {
        ClkSchema::infer(&["given_name".into(), "surname".into(), "date_of_birth".into()])
    }

    fn encode(e: &Encoder, v: &[Option<&str>]) -> Vec<u64> {
        let mut out = vec![0; e.words()];
        e.encode_into(v, &mut out);
        out
    }

    #[test]
    fn similar_records_have_high_dice_and_the_secret_matters() {
        let e = Encoder::new(schema(), b"a room secret of 32 bytes.......").unwrap();
        let mut f = Filters::new(e.words());
        f.push(&encode(&e, &[Some("Jane"), Some("Smith"), Some("1985-03-12")]));
        f.push(&encode(&e, &[Some("jane"), Some("Smyth"), Some("19850312")]));
        f.push(&encode(&e, &[Some("Robert"), Some("Jones"), Some("1960-01-01")]));
        assert!(f.dice(0, &f, 1) > 0.8, "{}", f.dice(0, &f, 1));
        assert!(f.dice(0, &f, 2) < 0.5, "{}", f.dice(0, &f, 2));
        assert!((f.dice(0, &f, 0) - 1.0).abs() < 1e-12);
        // Another secret gives unrelated filters.
        let other = Encoder::new(schema(), b"another secret of 32 bytes......").unwrap();
        let mut g = Filters::new(other.words());
        g.push(&encode(&other, &[Some("Jane"), Some("Smith"), Some("1985-03-12")]));
        assert!(f.dice(0, &g, 0) < 0.6, "{}", f.dice(0, &g, 0));
        assert!(Encoder::new(schema(), b"short").is_err());
    }

    #[test]
    fn all_pairs_and_blocked_comparison_agree() {
        let e = Encoder::new(schema(), b"a room secret of 32 bytes.......").unwrap();
        let people = [
            ("jane", "smith", "19850312"),
            ("jane", "smyth", "19850312"),
            ("bob", "jones", "19600101"),
            ("rob", "jones", "19600101"),
        ];
        let mut f = Filters::new(e.words());
        let mut keys = Vec::new();
        for (g, s, d) in people {
            let v = [Some(g), Some(s), Some(d)];
            f.push(&encode(&e, &v));
            keys.push(e.keyed_blocking_keys(&v));
        }
        let (all, compared) = compare_all(&f, None, 0.7, 2);
        assert_eq!(compared, 6);
        let (blocked, _) = compare_blocked(&f, &keys, None, 0.7);
        let pairs = |m: &[ClkMatch]| {
            let mut p: Vec<(u32, u32)> = m.iter().map(|m| (m.left, m.right)).collect();
            p.sort_unstable();
            p
        };
        assert_eq!(pairs(&all), vec![(0, 1), (2, 3)]);
        assert_eq!(pairs(&blocked), pairs(&all));
    }

    #[test]
    fn column_names_and_order_do_not_change_the_filter() {
        let secret = b"a room secret of 32 bytes.......";
        let a = Encoder::new(schema(), secret).unwrap();
        let b =
            Encoder::new(ClkSchema::infer(&["dob".into(), "last_name".into(), "first_name".into()]), secret).unwrap();
        let fa = encode(&a, &[Some("Jane"), Some("Smith"), Some("1985-03-12")]);
        let fb = encode(&b, &[Some("1985-03-12"), Some("Smith"), Some("Jane")]);
        assert_eq!(fa, fb);
        // Name fields share one tag: swapped given name and surname encode identically…
        let swapped = [Some("Smith"), Some("Jane"), Some("1985-03-12")];
        assert_eq!(fa, encode(&a, &swapped));
        let name_key = a.keyed_blocking_keys(&[Some("Jane"), Some("Smith"), Some("1985-03-12")]).last().copied();
        assert_eq!(a.keyed_blocking_keys(&swapped).last().copied(), name_key, "swapped names share a blocking key");
        // …but the role still matters across kinds: a name is not a date.
        let fc = encode(&a, &[Some("Jane"), Some("1985-03-12"), Some("Smith")]);
        assert_ne!(fa, fc);
    }

    #[test]
    fn date_tokens_reward_shared_components() {
        let secret = b"a room secret of 32 bytes.......";
        let e = Encoder::new(ClkSchema::infer(&["date_of_birth".into()]), secret).unwrap();
        let mut f = Filters::new(e.words());
        for d in ["1985-03-12", "1985-03-13", "1985-12-03", "1962-11-27"] {
            f.push(&encode(&e, &[Some(d)]));
        }
        let (typo, swapped, unrelated) = (f.dice(0, &f, 1), f.dice(0, &f, 2), f.dice(0, &f, 3));
        // A one-digit typo keeps 8 of 10 tokens; a day/month swap keeps the year's 5 and the pair.
        assert!(typo > 0.7, "{typo}");
        assert!(swapped > 0.55, "{swapped}");
        assert!(swapped > unrelated + 0.1, "{swapped} vs {unrelated}");
        assert!(unrelated < 0.35, "{unrelated}");
    }

    #[test]
    fn blocking_keys_round_trip_through_hex() {
        for key in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(key_from_hex(&key_to_hex(key)), Some(key));
        }
        assert_eq!(key_from_hex("abc"), None);
        assert_eq!(key_from_hex("0123456789abcdeg"), None);
    }

    #[test]
    fn bytes_round_trip() {
        let mut f = Filters::new(2);
        f.push(&[1, u64::MAX]);
        let mut g = Filters::new(2);
        g.push_bytes(&f.bytes(0)).unwrap();
        assert_eq!(f, g);
        assert!(g.push_bytes(&[0; 3]).is_err());
    }
}
