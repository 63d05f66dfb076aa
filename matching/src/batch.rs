//! Columnar normalize-and-hash kernels: a whole Arrow string column in, a `fixed_size_binary(32)`
//! column of SHA-256 digests out, on all cores, without allocating per value.
//!
//! The ASCII fast path trims and lower-cases into a stack buffer and hashes it; values that are not
//! ASCII, or that a profile rewrites (Gmail addresses), take the general path of
//! [`crate::normalize`]. Values that do not normalize become nulls and are counted.

use arrow::array::{Array, FixedSizeBinaryArray, StringArray};
use arrow::buffer::{Buffer, NullBuffer};

use crate::hash::sha256;
use crate::normalize::{self, Profile, Region};

/// What a kernel produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Hashed {
    pub digests: FixedSizeBinaryArray,
    /// Values present but not normalizable (now null), and the first such row.
    pub invalid: u64,
    pub first_invalid_row: Option<u64>,
}

/// Longest value taking the stack-buffer fast path.
const FAST: usize = 128;

/// The ASCII characters `str::trim` and `char::is_whitespace` treat as whitespace.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r')
}

fn is_gmail_domain(domain: &[u8]) -> bool {
    domain.eq_ignore_ascii_case(b"gmail.com") || domain.eq_ignore_ascii_case(b"googlemail.com")
}

/// Normalizes one email into `buf` on the fast path (its length); `None` means "use the general path".
fn fast_email(raw: &str, profile: Profile, buf: &mut [u8; FAST]) -> Option<Result<usize, ()>> {
    let bytes = raw.as_bytes();
    let start = bytes.iter().position(|b| !is_ws(*b))?;
    let end = bytes.iter().rposition(|b| !is_ws(*b))? + 1;
    let t = &bytes[start..end];
    if t.len() > FAST || !t.is_ascii() {
        return None;
    }
    let at = t.iter().position(|b| *b == b'@');
    let Some(at) = at else { return Some(Err(())) };
    if at == 0 || at + 1 == t.len() || t[at + 1..].contains(&b'@') || t.iter().any(|b| is_ws(*b)) {
        return Some(Err(()));
    }
    if profile != Profile::Meta && is_gmail_domain(&t[at + 1..]) {
        return None;
    }
    let out = &mut buf[..t.len()];
    out.copy_from_slice(t);
    out.make_ascii_lowercase();
    Some(Ok(t.len()))
}

/// A normalized value: in the caller's stack buffer (its length), or owned.
enum Normalized {
    Fast(usize),
    Owned(Vec<u8>),
}

fn hash_range<F>(
    values: &StringArray,
    range: std::ops::Range<usize>,
    out: &mut [u8],
    valid: &mut [bool],
    normalize_one: &F,
) -> (u64, Option<u64>)
where
    F: Fn(&str, &mut [u8; FAST]) -> Option<Normalized>,
{
    let mut invalid = 0;
    let mut first = None;
    let mut buf = [0u8; FAST];
    for (k, row) in range.clone().enumerate() {
        if values.is_null(row) {
            continue;
        }
        let value = values.value(row);
        let normalized = normalize_one(value, &mut buf);
        if normalized.is_none() && value.trim().is_empty() {
            // Blank: missing, not invalid.
            continue;
        }
        match normalized {
            Some(normalized) => {
                let digest = match normalized {
                    Normalized::Fast(len) => sha256(&buf[..len]),
                    Normalized::Owned(bytes) => sha256(&bytes),
                };
                out[k * 32..(k + 1) * 32].copy_from_slice(&digest);
                valid[k] = true;
            }
            None => {
                invalid += 1;
                first.get_or_insert(row as u64);
            }
        }
    }
    (invalid, first)
}

/// Runs `normalize_one` over a column on `threads` threads and hashes the results.
fn hash_column<F>(values: &StringArray, threads: usize, normalize_one: F) -> Hashed
where
    F: Fn(&str, &mut [u8; FAST]) -> Option<Normalized> + Sync,
{
    let n = values.len();
    let mut out = vec![0u8; n * 32];
    let mut valid = vec![false; n];
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let results: Vec<(u64, Option<u64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(chunk * 32)
            .zip(valid.chunks_mut(chunk))
            .enumerate()
            .map(|(t, (o, v))| {
                let normalize_one = &normalize_one;
                let start = t * chunk;
                s.spawn(move || hash_range(values, start..(start + chunk).min(n), o, v, normalize_one))
            })
            .collect();
        handles.into_iter().map(crate::joined).collect()
    });
    let invalid = results.iter().map(|r| r.0).sum();
    let first_invalid_row = results.iter().filter_map(|r| r.1).min();
    let nulls = NullBuffer::from(valid);
    let digests = FixedSizeBinaryArray::try_new(32, Buffer::from_vec(out), Some(nulls))
        .unwrap_or_else(|_| FixedSizeBinaryArray::new_null(32, n));
    Hashed { digests, invalid, first_invalid_row }
}

/// Normalizes (under `profile`) and SHA-256-hashes a column of emails.
pub fn hash_emails(values: &StringArray, profile: Profile, threads: usize) -> Hashed {
    hash_column(values, threads, |raw, buf| match fast_email(raw, profile, buf) {
        Some(Ok(len)) => Some(Normalized::Fast(len)),
        Some(Err(())) => None,
        None => normalize::email_with(raw, profile).ok().map(|s| Normalized::Owned(s.into_bytes())),
    })
}

/// Normalizes (under `profile`, reading numbers without a country code in `region`) and
/// SHA-256-hashes a column of phone numbers.
pub fn hash_phones(values: &StringArray, region: Region, profile: Profile, threads: usize) -> Hashed {
    hash_column(values, threads, |raw, _| {
        normalize::phone_with(raw, region, profile).ok().map(|s| Normalized::Owned(s.into_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_scalar_path() {
        let values = StringArray::from(vec![
            Some(" Jane.Doe@Example.COM "),
            None,
            Some("not an email"),
            Some("Jane.Doe+x@Gmail.com"),
            Some("ÉLODIE@exemple.fr"),
            Some("a@b@c"),
        ]);
        for threads in [1, 2, 3] {
            let h = hash_emails(&values, Profile::Sealroom, threads);
            assert_eq!(h.digests.value(0), sha256(b"jane.doe@example.com"));
            assert!(h.digests.is_null(1));
            assert!(h.digests.is_null(2));
            assert_eq!(h.digests.value(3), sha256(b"janedoe@gmail.com"));
            assert_eq!(h.digests.value(4), sha256("élodie@exemple.fr".as_bytes()));
            assert!(h.digests.is_null(5));
            assert_eq!((h.invalid, h.first_invalid_row), (2, Some(2)));
        }
        let meta = hash_emails(&values, Profile::Meta, 2);
        assert_eq!(meta.digests.value(3), sha256(b"jane.doe+x@gmail.com"));
    }

    #[test]
    fn phones() {
        let values = StringArray::from(vec![Some("(415) 867-5309"), Some("nope")]);
        let us = normalize::region("US").unwrap();
        let h = hash_phones(&values, us, Profile::Sealroom, 2);
        assert_eq!(h.digests.value(0), sha256(b"+14158675309"));
        assert_eq!(h.invalid, 1);
    }

    proptest! {
        /// The fast path and the general path agree on every input.
        #[test]
        fn fast_and_general_paths_agree(raw in "[ \\t\\x0B]{0,2}[A-Za-z0-9._+-]{0,12}@?[A-Za-z0-9.-]{0,12}[ ]{0,2}", profile in 0usize..4) {
            let profile = Profile::ALL[profile];
            let values = StringArray::from(vec![raw.as_str()]);
            let h = hash_emails(&values, profile, 1);
            match normalize::email_with(&raw, profile) {
                Ok(n) => prop_assert_eq!(h.digests.value(0), sha256(n.as_bytes())),
                Err(normalize::NormalizeError::Empty) => prop_assert!(h.digests.is_null(0) && h.invalid == 0),
                Err(_) => prop_assert!(h.digests.is_null(0) && h.invalid == 1),
            }
        }
    }
}
