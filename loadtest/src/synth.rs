//! Realistic synthetic advertiser and publisher data.
//!
//! A population of people, each with a name, an email address and a US phone number. The advertiser's
//! CRM holds raw identifiers with the formatting noise real CRMs have (case, stray spaces, many phone
//! formats, missing values); the publisher holds hashed identifiers (normalized as `sealroom hash`
//! does), its own user ids, and memberships in segments whose sizes follow a power law, so that
//! popular segments are large and tail segments small (and, in a k-anonymous report, suppressed).
//! A chosen share of the advertiser's customers are also publisher users; some of them are known to
//! the two sides by different emails and match only on phone, and vice versa. The advertiser's
//! customers are more likely than other publisher users to be in the [`AFFINE_SEGMENTS`] (by the
//! factor `customer_affinity`), so an affinity report has something true to find.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sealroom_matching::hash::sha256_hex;

/// The segments a publisher sells, most popular first.
pub const SEGMENTS: &[&str] = &[
    "news_junkies",
    "sports_fans",
    "foodies",
    "travel_intenders",
    "tech_early_adopters",
    "parents_young_kids",
    "fitness_enthusiasts",
    "home_improvement",
    "auto_intenders",
    "movie_buffs",
    "pet_owners",
    "fashion_shoppers",
    "finance_investors",
    "gamers",
    "music_lovers",
    "outdoor_adventure",
    "beauty_buyers",
    "students",
    "small_business_owners",
    "eco_conscious",
    "retirees",
    "luxury_travel",
    "diy_crafters",
    "crypto_curious",
];

const FIRST: &[&str] = &[
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
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "maria",
    "jose",
    "wei",
    "fatima",
    "olivia",
    "liam",
    "emma",
    "noah",
    "ava",
    "sofia",
    "lucas",
    "mia",
    "chloe",
    "mateo",
    "zoe",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "nguyen",
    "chen",
    "patel",
    "kim",
    "muller",
    "rossi",
    "silva",
    "kowalski",
    "okafor",
];
const DOMAINS: &[&str] =
    &["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "proton.me", "comcast.net"];
/// Real US area codes (libphonenumber validates area code and exchange).
const AREA_CODES: &[u32] = &[
    201, 202, 203, 205, 206, 207, 208, 212, 213, 214, 215, 216, 217, 303, 305, 310, 312, 313, 314, 317, 404, 408, 410,
    412, 415, 425, 503, 512, 602, 617, 619, 646, 702, 713, 718, 773, 801, 805, 818, 917,
];

/// How much data to make.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub advertiser_rows: usize,
    pub publisher_rows: usize,
    /// Share of advertiser customers who are also publisher users.
    pub overlap: f64,
    /// Share of advertiser rows with an email / a phone.
    pub advertiser_email_rate: f64,
    pub advertiser_phone_rate: f64,
    /// Share of publisher users with a hashed email / phone.
    pub publisher_email_rate: f64,
    pub publisher_phone_rate: f64,
    /// Number of segments (at most [`SEGMENTS`].len(); more get numbered names).
    pub segments: usize,
    /// How much likelier the advertiser's customers are to be in each of [`AFFINE_SEGMENTS`] than
    /// other publisher users (1 for no affinity; probabilities are capped at 0.9).
    pub customer_affinity: f64,
}

/// Segments the advertiser's customers over-index on (a retailer's buyers: food, home, pets).
pub const AFFINE_SEGMENTS: &[&str] = &["foodies", "home_improvement", "pet_owners"];

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            advertiser_rows: 50_000,
            publisher_rows: 200_000,
            overlap: 0.3,
            advertiser_email_rate: 0.9,
            advertiser_phone_rate: 0.6,
            publisher_email_rate: 0.85,
            publisher_phone_rate: 0.5,
            segments: SEGMENTS.len(),
            customer_affinity: 2.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Person {
    email: String,
    /// A second address some people use elsewhere.
    alt_email: String,
    /// E.164.
    phone: String,
}

/// One raw CRM row, as an advertiser exports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmRow {
    pub customer_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// One publisher user, already hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherRow {
    pub user_id: String,
    pub email_sha256: Option<String>,
    pub phone_sha256: Option<String>,
    pub segments: Vec<String>,
}

/// The generated data set.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub crm: Vec<CrmRow>,
    pub publisher: Vec<PublisherRow>,
    pub segment_names: Vec<String>,
}

fn person(rng: &mut ChaCha8Rng, i: usize) -> Person {
    let first = FIRST.choose(rng).copied().unwrap_or("alex");
    let last = LAST.choose(rng).copied().unwrap_or("doe");
    let domain = DOMAINS.choose(rng).copied().unwrap_or("example.com");
    let local = match rng.random_range(0..4) {
        0 => format!("{first}.{last}{i}"),
        1 => format!("{}{last}{i}", &first[..1]),
        2 => format!("{first}_{last}.{i}"),
        _ => format!("{first}{i}"),
    };
    let area = AREA_CODES.choose(rng).copied().unwrap_or(415);
    // Exchange 200-999 excluding N11 and 555; line 0000-9999.
    let exchange = loop {
        let e = rng.random_range(200..1000u32);
        if e % 100 != 11 && e != 555 {
            break e;
        }
    };
    let line = rng.random_range(0..10_000u32);
    Person {
        email: format!("{local}@{domain}"),
        alt_email: format!("{last}.{first}.{i}@work-mail.example"),
        phone: format!("+1{area}{exchange}{line:04}"),
    }
}

/// An email as a CRM might hold it: random case and stray whitespace.
fn noisy_email(rng: &mut ChaCha8Rng, email: &str) -> String {
    let cased: String = match rng.random_range(0..4) {
        0 => email.to_uppercase(),
        1 => {
            let mut c = email.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        }
        _ => email.to_owned(),
    };
    match rng.random_range(0..6) {
        0 => format!(" {cased}"),
        1 => format!("{cased} "),
        2 => format!("\t{cased}  "),
        _ => cased,
    }
}

/// A US phone number (E.164 `+1AAAEEELLLL`) in one of the formats CRMs hold.
fn noisy_phone(rng: &mut ChaCha8Rng, e164: &str) -> String {
    let d = &e164[2..];
    let (a, e, l) = (&d[0..3], &d[3..6], &d[6..10]);
    match rng.random_range(0..7) {
        0 => format!("({a}) {e}-{l}"),
        1 => format!("{a}-{e}-{l}"),
        2 => format!("{a}.{e}.{l}"),
        3 => format!("+1 {a} {e} {l}"),
        4 => format!("1-{a}-{e}-{l}"),
        5 => format!("{a}{e}{l}"),
        _ => format!("+1 ({a}) {e}-{l}"),
    }
}

fn segment_names(n: usize) -> Vec<String> {
    (0..n).map(|i| SEGMENTS.get(i).map_or_else(|| format!("segment_{i:04}"), |s| (*s).to_owned())).collect()
}

/// Membership probability of the segment at popularity rank `r` (0-based): a power law from about
/// 35% for the most popular to well under 1% in the tail.
fn membership_probability(rank: usize) -> f64 {
    0.35 / ((rank + 1) as f64).powf(1.35)
}

/// Generates the data set.
pub fn generate(config: &SynthConfig) -> Synthetic {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let shared = ((config.advertiser_rows as f64) * config.overlap).round() as usize;
    let shared = shared.min(config.publisher_rows);
    let segment_names = segment_names(config.segments);
    let probabilities: Vec<f64> = (0..segment_names.len()).map(membership_probability).collect();
    let customer_probabilities: Vec<f64> = segment_names
        .iter()
        .zip(&probabilities)
        .map(|(s, p)| if AFFINE_SEGMENTS.contains(&s.as_str()) { (p * config.customer_affinity).min(0.9) } else { *p })
        .collect();

    // People 0..shared are on both sides; then advertiser-only, then publisher-only.
    let mut crm = Vec::with_capacity(config.advertiser_rows);
    let mut publisher = Vec::with_capacity(config.publisher_rows);
    let mut next_person = 0usize;
    let mut shared_people = Vec::with_capacity(shared);
    for i in 0..config.advertiser_rows {
        let p = person(&mut rng, next_person);
        next_person += 1;
        let has_email = rng.random_bool(config.advertiser_email_rate);
        let has_phone = rng.random_bool(config.advertiser_phone_rate) || !has_email;
        crm.push(CrmRow {
            customer_id: format!("C{i:08}"),
            email: has_email.then(|| noisy_email(&mut rng, &p.email)),
            phone: has_phone.then(|| noisy_phone(&mut rng, &p.phone)),
        });
        if i < shared {
            shared_people.push(p);
        }
    }
    for j in 0..config.publisher_rows {
        let p = match shared_people.get(j) {
            Some(p) => p.clone(),
            None => {
                next_person += 1;
                person(&mut rng, next_person)
            }
        };
        // A tenth of shared people gave the publisher another address: only the phone can match.
        let email = if j < shared_people.len() && rng.random_bool(0.1) { &p.alt_email } else { &p.email };
        let has_email = rng.random_bool(config.publisher_email_rate);
        let has_phone = rng.random_bool(config.publisher_phone_rate) || !has_email;
        let is_customer = j < shared_people.len();
        let segments = segment_names
            .iter()
            .zip(if is_customer { &customer_probabilities } else { &probabilities })
            .filter(|(_, p)| rng.random_bool(**p))
            .map(|(s, _)| s.clone())
            .collect();
        publisher.push(PublisherRow {
            user_id: format!("P{j:09}"),
            email_sha256: has_email.then(|| sha256_hex(email.as_bytes())),
            phone_sha256: has_phone.then(|| sha256_hex(p.phone.as_bytes())),
            segments,
        });
    }
    Synthetic { crm, publisher, segment_names }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealroom_matching::normalize;

    #[test]
    fn generation_is_deterministic_and_sized() {
        let config = SynthConfig { advertiser_rows: 500, publisher_rows: 1000, ..SynthConfig::default() };
        let a = generate(&config);
        let b = generate(&config);
        assert_eq!(a.crm, b.crm);
        assert_eq!(a.publisher, b.publisher);
        assert_eq!(a.crm.len(), 500);
        assert_eq!(a.publisher.len(), 1000);
        assert!(a.crm.iter().all(|r| r.email.is_some() || r.phone.is_some()));
    }

    #[test]
    fn noisy_crm_identifiers_normalize_to_the_publishers_hashes() {
        let config = SynthConfig { advertiser_rows: 300, publisher_rows: 300, overlap: 1.0, ..SynthConfig::default() };
        let data = generate(&config);
        let us = normalize::region("US").unwrap();
        let mut email_matches = 0;
        let mut phone_matches = 0;
        for (c, p) in data.crm.iter().zip(&data.publisher) {
            if let (Some(e), Some(h)) = (&c.email, &p.email_sha256)
                && sha256_hex(normalize::email(e).unwrap().as_bytes()) == *h
            {
                email_matches += 1;
            }
            if let (Some(ph), Some(h)) = (&c.phone, &p.phone_sha256) {
                let e164 = normalize::phone(ph, us).unwrap();
                assert_eq!(sha256_hex(e164.as_bytes()), *h, "{ph}");
                phone_matches += 1;
            }
        }
        assert!(email_matches > 150, "{email_matches}");
        assert!(phone_matches > 50, "{phone_matches}");
    }

    #[test]
    fn segment_sizes_are_skewed() {
        let data = generate(&SynthConfig { advertiser_rows: 10, publisher_rows: 20_000, ..SynthConfig::default() });
        let count = |s: &str| data.publisher.iter().filter(|p| p.segments.iter().any(|x| x == s)).count();
        let head = count(SEGMENTS[0]);
        let tail = count(SEGMENTS[SEGMENTS.len() - 1]);
        assert!(head > 20 * tail, "head {head}, tail {tail}");
        assert!(tail > 0);
    }
}
