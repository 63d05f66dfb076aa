//! Email lists for the exact-matching benchmark: an advertiser list and a publisher list with a
//! known overlap, each with its own formatting noise (case, stray spaces), from a seed.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WORDS: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "wilson",
    "anderson",
    "taylor",
    "moore",
    "martin",
    "lee",
    "chen",
    "patel",
    "kim",
    "nguyen",
    "sofia",
    "lucas",
    "emma",
    "noah",
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "proton.me",
    "comcast.net",
    "example.org",
];

fn email(rng: &mut ChaCha8Rng, i: u64) -> String {
    let a = WORDS.choose(rng).copied().unwrap_or("x");
    let b = WORDS.choose(rng).copied().unwrap_or("y");
    let d = DOMAINS.choose(rng).copied().unwrap_or("example.com");
    match rng.random_range(0..3) {
        0 => format!("{a}.{b}{i}@{d}"),
        1 => format!("{a}_{i}@{d}"),
        _ => format!("{}{b}.{i}@{d}", &a[..1]),
    }
}

fn noisy(rng: &mut ChaCha8Rng, e: &str) -> String {
    let cased = match rng.random_range(0..4) {
        0 => e.to_uppercase(),
        1 => {
            let mut c = e.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        }
        _ => e.to_owned(),
    };
    match rng.random_range(0..5) {
        0 => format!(" {cased}"),
        1 => format!("{cased}  "),
        _ => cased,
    }
}

/// `advertisers` unique raw emails and `publishers` raw emails of which `overlap` (a share of the
/// publisher list) are advertiser emails written with their own noise.
pub fn lists(seed: u64, advertisers: usize, publishers: usize, overlap: f64) -> (Vec<String>, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let canonical: Vec<String> = (0..advertisers as u64).map(|i| email(&mut rng, i)).collect();
    let advertiser: Vec<String> = canonical.iter().map(|e| noisy(&mut rng, e)).collect();
    let shared = ((publishers as f64) * overlap).round() as usize;
    let shared = shared.min(advertisers);
    let mut publisher = Vec::with_capacity(publishers);
    // Every k-th advertiser email is shared: spread over the list, deterministic.
    let step = (advertisers / shared.max(1)).max(1);
    for i in 0..shared {
        publisher.push(noisy(&mut rng, &canonical[i * step]));
    }
    for i in shared..publishers {
        let e = email(&mut rng, advertisers as u64 + i as u64);
        publisher.push(noisy(&mut rng, &e));
    }
    (advertiser, publisher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealroom_matching::normalize::{Profile, email_with};
    use std::collections::HashSet;

    #[test]
    fn the_overlap_is_what_was_asked() {
        let (a, p) = lists(7, 2_000, 500, 0.3);
        let norm =
            |v: &Vec<String>| -> HashSet<String> { v.iter().map(|e| email_with(e, Profile::Meta).unwrap()).collect() };
        let (na, np) = (norm(&a), norm(&p));
        assert_eq!(na.len(), 2_000, "advertiser emails are unique");
        assert_eq!(na.intersection(&np).count(), 150);
        assert_eq!(lists(7, 2_000, 500, 0.3), (a, p), "deterministic");
    }
}
