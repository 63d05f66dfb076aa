//! Normalization of identifiers before hashing.
//!
//! Both sides of a room must normalize the same way or their hashes never meet. The rules here are
//! the common core of the advertising platforms' published rules: emails are trimmed and
//! lower-cased; phone numbers are parsed with libphonenumber's metadata (the `phonenumber` crate) and
//! written in E.164 (`+14155550134`).

use std::fmt;

pub use phonenumber::country::Id as Region;

/// Why a value could not be normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormalizeError {
    Empty,
    /// An email without exactly one '@' with text on both sides, or with spaces inside.
    MalformedEmail,
    /// Not a phone number libphonenumber can parse.
    UnparsablePhone(String),
    /// Parsed, but not a valid number for its region.
    InvalidPhone,
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty value"),
            Self::MalformedEmail => f.write_str("not an email address (expected local@domain)"),
            Self::UnparsablePhone(reason) => write!(f, "not a phone number ({reason})"),
            Self::InvalidPhone => f.write_str("not a valid phone number for its region"),
        }
    }
}

impl std::error::Error for NormalizeError {}

/// Trims and lower-cases an email address and checks its shape (`local@domain`, no inner spaces).
pub fn email(raw: &str) -> Result<String, NormalizeError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let lower = trimmed.to_lowercase();
    let mut parts = lower.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NormalizeError::MalformedEmail);
    };
    if local.is_empty() || domain.is_empty() || lower.chars().any(char::is_whitespace) {
        return Err(NormalizeError::MalformedEmail);
    }
    Ok(lower)
}

/// Parses a phone number written in any common national or international format and returns it in
/// E.164. Numbers without a country code are read in `default_region`.
pub fn phone(raw: &str, default_region: Region) -> Result<String, NormalizeError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    // "00" is the international prefix in most of the world; libphonenumber only understands it
    // relative to a region, so rewrite it to '+' first.
    let candidate = match trimmed.strip_prefix("00") {
        Some(rest) if !rest.starts_with('0') => format!("+{rest}"),
        _ => trimmed.to_owned(),
    };
    let number = phonenumber::parse(Some(default_region), &candidate)
        .map_err(|e| NormalizeError::UnparsablePhone(e.to_string()))?;
    if !phonenumber::is_valid(&number) {
        return Err(NormalizeError::InvalidPhone);
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Parses a region code such as `US` or `gb`.
pub fn region(code: &str) -> Result<Region, String> {
    code.trim()
        .to_ascii_uppercase()
        .parse::<Region>()
        .map_err(|_| {
            format!("'{code}' is not an ISO 3166-1 alpha-2 region code (for example US, GB, DE)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            email("  Jane.Doe@Example.COM \t").unwrap(),
            "jane.doe@example.com"
        );
        assert_eq!(email("ÉLODIE@exemple.fr").unwrap(), "élodie@exemple.fr");
        assert_eq!(email(""), Err(NormalizeError::Empty));
        assert_eq!(email("   "), Err(NormalizeError::Empty));
        assert_eq!(email("no-at-sign"), Err(NormalizeError::MalformedEmail));
        assert_eq!(email("a@b@c"), Err(NormalizeError::MalformedEmail));
        assert_eq!(email("@example.com"), Err(NormalizeError::MalformedEmail));
        assert_eq!(
            email("jane doe@example.com"),
            Err(NormalizeError::MalformedEmail)
        );
    }

    #[test]
    fn phones_in_many_formats_become_e164() {
        let us = region("us").unwrap();
        for raw in [
            "(415) 867-5309",
            "415.867.5309",
            "+1 415 867 5309",
            "001 415 867 5309",
            "1-415-867-5309",
            "4158675309",
        ] {
            assert_eq!(phone(raw, us).unwrap(), "+14158675309", "{raw}");
        }
        let gb = region("GB").unwrap();
        assert_eq!(phone("020 7946 0018", gb).unwrap(), "+442079460018");
        assert_eq!(phone("+44 20 7946 0018", us).unwrap(), "+442079460018");
        assert!(phone("not a number", us).is_err());
        assert!(phone("123", us).is_err());
        assert_eq!(phone(" ", us), Err(NormalizeError::Empty));
    }

    #[test]
    fn unknown_regions_are_reported() {
        assert!(region("XX").unwrap_err().contains("ISO 3166-1"));
    }

    proptest! {
        /// Normalizing is idempotent and insensitive to case and surrounding whitespace.
        #[test]
        fn email_normalization_is_idempotent(local in "[A-Za-z0-9._+-]{1,20}", domain in "[A-Za-z0-9-]{1,15}\\.[A-Za-z]{2,4}", pad in "[ \t]{0,3}") {
            let raw = format!("{pad}{local}@{domain}{pad}");
            let once = email(&raw).unwrap();
            prop_assert_eq!(email(&once).unwrap(), once.clone());
            prop_assert_eq!(email(&raw.to_uppercase()).unwrap(), once.clone());
            prop_assert!(!once.chars().any(|c| c.is_uppercase() || c.is_whitespace()));
        }

        /// Any formatting of the same US number normalizes to the same E.164 string.
        #[test]
        fn phone_formatting_does_not_matter(area in 201u32..990, exchange in 200u32..999, line in 0u32..10000, style in 0usize..5) {
            let us = region("US").unwrap();
            let digits = format!("{area}{exchange}{line:04}");
            let Ok(canonical) = phone(&digits, us) else { return Ok(()) };
            let styled = match style {
                0 => format!("({area}) {exchange}-{line:04}"),
                1 => format!("{area}.{exchange}.{line:04}"),
                2 => format!("+1 {area} {exchange} {line:04}"),
                3 => format!("1-{area}-{exchange}-{line:04}"),
                _ => format!(" {digits} "),
            };
            prop_assert_eq!(phone(&styled, us).unwrap(), canonical.clone());
            prop_assert!(canonical.starts_with("+1") && canonical.len() == 12);
        }
    }
}
