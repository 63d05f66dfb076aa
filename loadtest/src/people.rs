//! People records with realistic corruption, for linkage at scale: a left file of people and a right
//! file where a share of them reappear with typos, missing values, swapped fields and changed
//! addresses, plus people of its own. Names follow a Zipf law over generated name lists, so common
//! names are common (and blocking on them is realistic).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ONSETS: &[&str] = &[
    "b", "br", "c", "ch", "d", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh", "st", "t", "th", "v",
    "w", "z",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ie", "ou", "y"];
const CODAS: &[&str] = &[
    "", "n", "r", "s", "l", "m", "nd", "rt", "ck", "ll", "th", "x", "ng", "son", "ton", "ley", "man", "berg", "field",
];

/// A generated record: id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub given_name: String,
    pub surname: String,
    pub date_of_birth: String,
    pub street_number: String,
    pub street: String,
    pub city: String,
    pub postcode: String,
}

pub const HEADER: [&str; 8] =
    ["rec_id", "given_name", "surname", "date_of_birth", "street_number", "street", "city", "postcode"];

impl Person {
    pub fn fields(&self) -> [&str; 7] {
        [
            &self.given_name,
            &self.surname,
            &self.date_of_birth,
            &self.street_number,
            &self.street,
            &self.city,
            &self.postcode,
        ]
    }
}

fn word(rng: &mut ChaCha8Rng, syllables: usize) -> String {
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(ONSETS[rng.random_range(0..ONSETS.len())]);
        w.push_str(VOWELS[rng.random_range(0..VOWELS.len())]);
    }
    w.push_str(CODAS[rng.random_range(0..CODAS.len())]);
    w
}

/// A list of distinct words and cumulative Zipf weights over it.
struct Zipf {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Zipf {
    /// Zipf-Mandelbrot weights `1 / (rank + offset)^exponent`: a realistic head (the most common
    /// US given name is about 1.5% of people, the most common surname under 1%) and a long tail.
    fn new(rng: &mut ChaCha8Rng, n: usize, syllables: (usize, usize), exponent: f64, offset: f64) -> Self {
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(n);
        while words.len() < n {
            let syllable_count = rng.random_range(syllables.0..=syllables.1);
            let w = word(rng, syllable_count);
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                total += 1.0 / (r as f64 + offset).powf(exponent);
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> &str {
        let x = rng.random_range(0.0..*self.cumulative.last().unwrap_or(&1.0));
        let i = self.cumulative.partition_point(|c| *c < x).min(self.words.len() - 1);
        &self.words[i]
    }
}

struct Generator {
    given: Zipf,
    surnames: Zipf,
    streets: Zipf,
    cities: Vec<(String, String)>,
}

impl Generator {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let given = Zipf::new(rng, 5_000, (1, 2), 1.0, 15.0);
        let surnames = Zipf::new(rng, 100_000, (2, 3), 0.9, 10.0);
        let streets = Zipf::new(rng, 30_000, (2, 3), 0.8, 10.0);
        let cities =
            (0..2_000).map(|i| (word(rng, 2), format!("{:04}", 1000 + i * 4 + rng.random_range(0..4)))).collect();
        Self { given, surnames, streets, cities }
    }

    fn person(&self, rng: &mut ChaCha8Rng) -> Person {
        let (city, postcode) = &self.cities[rng.random_range(0..self.cities.len())];
        Person {
            given_name: self.given.pick(rng).to_owned(),
            surname: self.surnames.pick(rng).to_owned(),
            date_of_birth: format!(
                "{}{:02}{:02}",
                rng.random_range(1930..2006),
                rng.random_range(1..=12),
                rng.random_range(1..=28)
            ),
            street_number: rng.random_range(1..400).to_string(),
            street: format!(
                "{} {}",
                self.streets.pick(rng),
                ["street", "road", "avenue", "lane", "drive"][rng.random_range(0..5)]
            ),
            city: city.clone(),
            postcode: postcode.clone(),
        }
    }
}

fn typo(rng: &mut ChaCha8Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.is_empty() {
        return s.to_owned();
    }
    let i = rng.random_range(0..c.len());
    match rng.random_range(0..4) {
        0 => {
            c.remove(i);
        }
        1 => c.insert(i, (b'a' + rng.random_range(0..26)) as char),
        2 => c[i] = (b'a' + rng.random_range(0..26)) as char,
        _ => {
            if i + 1 < c.len() {
                c.swap(i, i + 1);
            }
        }
    }
    c.into_iter().collect()
}

/// Corrupts a record the way real files differ: typos in names and streets, missing values, a
/// mistyped or day/month-swapped date of birth, swapped given name and surname, a move.
fn corrupt(rng: &mut ChaCha8Rng, g: &Generator, p: &Person) -> Person {
    let mut q = p.clone();
    if rng.random_bool(0.15) {
        q.given_name = typo(rng, &q.given_name);
    }
    if rng.random_bool(0.15) {
        q.surname = typo(rng, &q.surname);
    }
    if rng.random_bool(0.03) {
        std::mem::swap(&mut q.given_name, &mut q.surname);
    }
    if rng.random_bool(0.08) {
        let mut d: Vec<char> = q.date_of_birth.chars().collect();
        let i = rng.random_range(2..8);
        d[i] = char::from(b'0' + rng.random_range(0..10));
        q.date_of_birth = d.into_iter().collect();
    } else if rng.random_bool(0.03) {
        q.date_of_birth = format!("{}{}{}", &p.date_of_birth[..4], &p.date_of_birth[6..8], &p.date_of_birth[4..6]);
    }
    if rng.random_bool(0.1) {
        // Moved house.
        let moved = g.person(rng);
        q.street_number = moved.street_number;
        q.street = moved.street;
        q.city = moved.city;
        q.postcode = moved.postcode;
    } else if rng.random_bool(0.1) {
        q.street = typo(rng, &q.street);
    }
    for field in [&mut q.given_name, &mut q.street_number, &mut q.street, &mut q.city, &mut q.postcode] {
        if rng.random_bool(0.04) {
            field.clear();
        }
    }
    q
}

/// `left` people, and `right` records of which `shared` are corrupted copies of left people (the
/// first `shared` of them, in a shuffled order). Returns (left, right, true pairs as indices).
pub fn linkage_files(
    seed: u64,
    left: usize,
    right: usize,
    shared: usize,
) -> (Vec<Person>, Vec<Person>, Vec<(usize, usize)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = Generator::new(&mut rng);
    let l: Vec<Person> = (0..left).map(|_| g.person(&mut rng)).collect();
    let shared = shared.min(left).min(right);
    let mut r = Vec::with_capacity(right);
    let mut truth = Vec::with_capacity(shared);
    for i in 0..shared {
        let li = (i * 7919) % left; // a spread of left people, deterministic and distinct when gcd = 1
        r.push(corrupt(&mut rng, &g, &l[li]));
        truth.push((li, i));
    }
    while r.len() < right {
        r.push(g.person(&mut rng));
    }
    (l, r, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_the_asked_shape_and_are_deterministic() {
        let (l, r, t) = linkage_files(3, 1_000, 800, 400);
        assert_eq!((l.len(), r.len(), t.len()), (1_000, 800, 400));
        assert_eq!(linkage_files(3, 1_000, 800, 400).1, r);
        let distinct: std::collections::HashSet<usize> = t.iter().map(|p| p.0).collect();
        assert_eq!(distinct.len(), 400);
        // Corrupted copies mostly keep the date of birth and the surname.
        let same_dob = t.iter().filter(|(a, b)| l[*a].date_of_birth == r[*b].date_of_birth).count();
        assert!(same_dob > 300 && same_dob < 400, "{same_dob}");
    }

    #[test]
    fn name_frequencies_are_realistic() {
        let (l, _, _) = linkage_files(5, 50_000, 10, 0);
        let mut counts = std::collections::HashMap::new();
        for p in &l {
            *counts.entry(p.given_name.as_str()).or_insert(0) += 1;
        }
        let top = *counts.values().max().unwrap() as f64 / l.len() as f64;
        assert!(top > 0.005 && top < 0.03, "most common given name: {top}");
        let mut counts = std::collections::HashMap::new();
        for p in &l {
            *counts.entry(p.surname.as_str()).or_insert(0) += 1;
        }
        let top = *counts.values().max().unwrap() as f64 / l.len() as f64;
        assert!(top > 0.002 && top < 0.015, "most common surname: {top}");
    }
}
