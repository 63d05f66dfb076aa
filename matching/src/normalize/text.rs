//! Names, cities, street addresses and postcodes.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::{NormalizeError, Profile};

/// Letters that Unicode does not decompose but that people write without their mark.
fn fold_letter(c: char, out: &mut String) {
    match c {
        'ß' => out.push_str("ss"),
        'æ' => out.push_str("ae"),
        'œ' => out.push_str("oe"),
        'ø' => out.push('o'),
        'đ' | 'ð' => out.push('d'),
        'ł' => out.push('l'),
        'þ' => out.push_str("th"),
        'ı' => out.push('i'),
        _ => out.push(c),
    }
}

/// NFKD, marks removed, lower-case, folded letters.
fn fold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase) {
        fold_letter(c, &mut out);
    }
    out
}

/// Apostrophes disappear (`O'Brien` → `obrien`); other punctuation separates words; whitespace is
/// collapsed to single spaces.
fn words(folded: &str) -> String {
    let mut out = String::with_capacity(folded.len());
    let mut pending_space = false;
    for c in folded.chars() {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else if matches!(c, '\'' | '’' | '`' | 'ʼ') {
            continue;
        } else {
            pending_space = true;
        }
    }
    out
}

fn non_empty(s: String) -> Result<String, NormalizeError> {
    if s.is_empty() { Err(NormalizeError::NothingLeft) } else { Ok(s) }
}

fn check_empty(raw: &str) -> Result<&str, NormalizeError> {
    let t = raw.trim();
    if t.is_empty() { Err(NormalizeError::Empty) } else { Ok(t) }
}

/// A given name or surname.
pub fn name_with(raw: &str, profile: Profile) -> Result<String, NormalizeError> {
    let t = check_empty(raw)?;
    match profile {
        Profile::Sealroom => non_empty(words(&fold(t))),
        // Customer Match: trim, lower-case.
        Profile::Google => non_empty(t.to_lowercase()),
        // Custom Audiences: lower-case, no punctuation, letters in UTF-8.
        Profile::Meta => non_empty(t.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect()),
        Profile::Uid2 => Err(NormalizeError::NotInProfile { profile, field: "names" }),
    }
}

/// A city.
pub fn city_with(raw: &str, profile: Profile) -> Result<String, NormalizeError> {
    let t = check_empty(raw)?;
    match profile {
        Profile::Sealroom => non_empty(words(&fold(t))),
        Profile::Google => non_empty(t.to_lowercase()),
        // Custom Audiences: lower-case a-z only, no punctuation, no special characters, no spaces.
        Profile::Meta => non_empty(fold(t).chars().filter(char::is_ascii_alphanumeric).collect()),
        Profile::Uid2 => Err(NormalizeError::NotInProfile { profile, field: "cities" }),
    }
}

/// USPS street suffixes, directionals and unit designators, and their common English equivalents.
const ADDRESS_WORDS: &[(&str, &str)] = &[
    ("street", "st"),
    ("str", "st"),
    ("avenue", "ave"),
    ("av", "ave"),
    ("road", "rd"),
    ("boulevard", "blvd"),
    ("drive", "dr"),
    ("lane", "ln"),
    ("court", "ct"),
    ("place", "pl"),
    ("square", "sq"),
    ("terrace", "ter"),
    ("parkway", "pkwy"),
    ("highway", "hwy"),
    ("circle", "cir"),
    ("crescent", "cres"),
    ("close", "cl"),
    ("way", "wy"),
    ("mount", "mt"),
    ("saint", "st"),
    ("north", "n"),
    ("south", "s"),
    ("east", "e"),
    ("west", "w"),
    ("northeast", "ne"),
    ("northwest", "nw"),
    ("southeast", "se"),
    ("southwest", "sw"),
    ("apartment", "apt"),
    ("suite", "ste"),
    ("unit", "unit"),
    ("floor", "fl"),
    ("building", "bldg"),
    ("number", "no"),
];

/// A street address: folded like a name, then street types, directions and unit words abbreviated
/// the USPS way (`123 North Main Street, Apt. 4` → `123 n main st apt 4`).
pub fn address_with(raw: &str, profile: Profile) -> Result<String, NormalizeError> {
    let t = check_empty(raw)?;
    match profile {
        Profile::Sealroom => {
            let w = words(&fold(t));
            let out: Vec<&str> = w
                .split(' ')
                .map(|word| ADDRESS_WORDS.iter().find(|(long, _)| *long == word).map_or(word, |(_, short)| short))
                .collect();
            non_empty(out.join(" "))
        }
        // Customer Match hashes street addresses trimmed and lower-cased.
        Profile::Google => non_empty(t.to_lowercase()),
        Profile::Meta | Profile::Uid2 => Err(NormalizeError::NotInProfile { profile, field: "street addresses" }),
    }
}

/// A postcode: lower-case, without spaces or punctuation; a US ZIP+4 keeps its first five digits
/// (Custom Audiences' rule, applied by every profile that defines postcodes).
pub fn postcode_with(raw: &str, profile: Profile) -> Result<String, NormalizeError> {
    let t = check_empty(raw)?;
    if profile == Profile::Uid2 {
        return Err(NormalizeError::NotInProfile { profile, field: "postcodes" });
    }
    let compact: String = t.chars().filter(char::is_ascii_alphanumeric).flat_map(|c| c.to_lowercase()).collect();
    let digits_only = compact.bytes().all(|b| b.is_ascii_digit());
    let zip_plus_4 = digits_only && compact.len() == 9 && t.contains('-') && t.find('-') == Some(5);
    if zip_plus_4 {
        return Ok(compact[..5].to_owned());
    }
    non_empty(compact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        let s = |raw| name_with(raw, Profile::Sealroom).unwrap();
        assert_eq!(s("  José  "), "jose");
        assert_eq!(s("Ångström"), "angstrom");
        assert_eq!(s("O'Brien"), "obrien");
        assert_eq!(s("Mary-Ann"), "mary ann");
        assert_eq!(s("Mary   Ann"), "mary ann");
        assert_eq!(s("STRAẞE"), "strasse");
        assert_eq!(s("Łukasz"), "lukasz");
        assert_eq!(s("Søren"), "soren");
        assert_eq!(s("ＡＢＣ"), "abc", "NFKD folds full-width letters");
        assert_eq!(name_with("  José ", Profile::Google).unwrap(), "josé");
        assert_eq!(name_with("Mary-Ann O'Brien", Profile::Meta).unwrap(), "maryannobrien");
        assert_eq!(name_with("José", Profile::Meta).unwrap(), "josé");
        assert!(matches!(name_with("x", Profile::Uid2), Err(NormalizeError::NotInProfile { .. })));
        assert_eq!(name_with("--", Profile::Sealroom), Err(NormalizeError::NothingLeft));
        assert_eq!(name_with(" ", Profile::Sealroom), Err(NormalizeError::Empty));
    }

    #[test]
    fn cities() {
        assert_eq!(city_with("São Paulo", Profile::Sealroom).unwrap(), "sao paulo");
        assert_eq!(city_with("São Paulo", Profile::Meta).unwrap(), "saopaulo");
        assert_eq!(city_with("St. Louis", Profile::Meta).unwrap(), "stlouis");
    }

    #[test]
    fn addresses() {
        let a = |raw| address_with(raw, Profile::Sealroom).unwrap();
        assert_eq!(a("123 North Main Street, Apt. 4"), "123 n main st apt 4");
        assert_eq!(a("123 N. MAIN ST #4"), "123 n main st 4");
        assert_eq!(a("9 Rue de l'Église"), "9 rue de leglise");
        assert_eq!(a("1600 Pennsylvania Avenue NW"), "1600 pennsylvania ave nw");
    }

    #[test]
    fn postcodes() {
        let p = |raw| postcode_with(raw, Profile::Sealroom).unwrap();
        assert_eq!(p("94105-1234"), "94105");
        assert_eq!(p(" 94105 "), "94105");
        assert_eq!(p("SW1A 1AA"), "sw1a1aa");
        assert_eq!(p("2600"), "2600");
        assert_eq!(postcode_with("94105-1234", Profile::Meta).unwrap(), "94105");
    }

    proptest! {
        /// Normalizing a name twice changes nothing; case and surrounding space never matter.
        #[test]
        fn name_normalization_is_idempotent(raw in "[A-Za-zÀ-ÿ' .-]{1,30}") {
            if let Ok(once) = name_with(&raw, Profile::Sealroom) {
                prop_assert_eq!(name_with(&once, Profile::Sealroom).unwrap(), once.clone());
                prop_assert_eq!(name_with(&format!("  {}  ", raw.to_uppercase()), Profile::Sealroom).unwrap(), once.clone());
                prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
                prop_assert!(once.chars().all(|c| !c.is_uppercase()));
            }
        }

        #[test]
        fn address_normalization_is_idempotent(raw in "[0-9]{1,4} [A-Za-z]{3,10} (Street|St|Avenue|Road|Rd)( Apt [0-9]{1,3})?") {
            let once = address_with(&raw, Profile::Sealroom).unwrap();
            prop_assert_eq!(address_with(&once, Profile::Sealroom).unwrap(), once);
        }
    }
}
