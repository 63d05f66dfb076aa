//! Phone numbers, parsed with libphonenumber's metadata (the `phonenumber` crate).

use super::{NormalizeError, Profile};

pub use phonenumber::country::Id as Region;

/// Parses a region code such as `US` or `gb`.
pub fn region(code: &str) -> Result<Region, String> {
    code.trim()
        .to_ascii_uppercase()
        .parse::<Region>()
        .map_err(|_| format!("'{code}' is not an ISO 3166-1 alpha-2 region code (for example US, GB, DE)"))
}

/// Parses a phone number written in any common national or international format. Numbers without a
/// country code are read in `default_region`. The result is E.164 (`+14155550134`), or for the Meta
/// profile the same digits without the `+` (`14155550134`: "remove symbols, letters and any leading
/// zeros; include the country code").
pub fn phone_with(raw: &str, default_region: Region, profile: Profile) -> Result<String, NormalizeError> {
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
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    Ok(match profile {
        Profile::Meta => e164.trim_start_matches('+').to_owned(),
        Profile::Sealroom | Profile::Google | Profile::Uid2 => e164,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;
    use proptest::prelude::*;

    #[test]
    fn phones_in_many_formats_become_e164() {
        let us = region("us").unwrap();
        for raw in
            ["(415) 867-5309", "415.867.5309", "+1 415 867 5309", "001 415 867 5309", "1-415-867-5309", "4158675309"]
        {
            assert_eq!(phone_with(raw, us, Profile::Sealroom).unwrap(), "+14158675309", "{raw}");
            assert_eq!(phone_with(raw, us, Profile::Google).unwrap(), "+14158675309", "{raw}");
            assert_eq!(phone_with(raw, us, Profile::Meta).unwrap(), "14158675309", "{raw}");
        }
        let gb = region("GB").unwrap();
        assert_eq!(phone_with("020 7946 0018", gb, Profile::Sealroom).unwrap(), "+442079460018");
        assert_eq!(phone_with("+44 20 7946 0018", us, Profile::Sealroom).unwrap(), "+442079460018");
        // Meta: the national leading zero goes, the country code comes.
        assert_eq!(phone_with("07911 123456", gb, Profile::Meta).unwrap(), "447911123456");
        assert!(phone_with("not a number", us, Profile::Sealroom).is_err());
        assert!(phone_with("123", us, Profile::Sealroom).is_err());
        assert_eq!(phone_with(" ", us, Profile::Sealroom), Err(NormalizeError::Empty));
    }

    /// UID2's published phone example: `1 (234) 567-8901` → `+12345678901`, with its hash.
    #[test]
    fn uid2_published_phone_example() {
        let n = phone_with("1 (234) 567-8901", region("US").unwrap(), Profile::Uid2).unwrap();
        assert_eq!(n, "+12345678901");
        assert_eq!(sha256_hex(n.as_bytes()), "10e6f0b47054a83359477dcb35231db6de5c69fb1816e1a6b98e192de9e5b9ee");
    }

    #[test]
    fn unknown_regions_are_reported() {
        assert!(region("XX").unwrap_err().contains("ISO 3166-1"));
    }

    proptest! {
        /// Any formatting of the same US number normalizes to the same E.164 string.
        #[test]
        fn phone_formatting_does_not_matter(area in 201u32..990, exchange in 200u32..999, line in 0u32..10000, style in 0usize..5) {
            let us = region("US").unwrap();
            let digits = format!("{area}{exchange}{line:04}");
            let Ok(canonical) = phone_with(&digits, us, Profile::Sealroom) else { return Ok(()) };
            let styled = match style {
                0 => format!("({area}) {exchange}-{line:04}"),
                1 => format!("{area}.{exchange}.{line:04}"),
                2 => format!("+1 {area} {exchange} {line:04}"),
                3 => format!("1-{area}-{exchange}-{line:04}"),
                _ => format!(" {digits} "),
            };
            prop_assert_eq!(phone_with(&styled, us, Profile::Sealroom).unwrap(), canonical.clone());
            prop_assert!(canonical.starts_with("+1") && canonical.len() == 12);
            prop_assert_eq!(phone_with(&styled, us, Profile::Meta).unwrap(), canonical[1..].to_owned());
        }
    }
}
