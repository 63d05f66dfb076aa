//! Emails.

use super::{NormalizeError, Profile};

/// Normalizes an email address under a profile.
pub fn email_with(raw: &str, profile: Profile) -> Result<String, NormalizeError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let lower = if trimmed.is_ascii() { trimmed.to_ascii_lowercase() } else { trimmed.to_lowercase() };
    let Some((local, domain)) = lower.split_once('@') else {
        return Err(NormalizeError::MalformedEmail);
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') || lower.chars().any(char::is_whitespace) {
        return Err(NormalizeError::MalformedEmail);
    }
    let gmail = domain == "gmail.com";
    let googlemail = domain == "googlemail.com";
    let (local, domain): (String, &str) = match profile {
        // Customer Match: remove the periods before the domain of gmail.com and googlemail.com.
        Profile::Google if gmail || googlemail => (local.replace('.', ""), domain),
        // UID2: in gmail.com addresses, remove periods and a `+` with everything after it.
        Profile::Uid2 if gmail => (strip_plus(local).replace('.', ""), domain),
        // sealroom: both Gmail rules, and googlemail.com is the same mailbox as gmail.com.
        Profile::Sealroom if gmail || googlemail => (strip_plus(local).replace('.', ""), "gmail.com"),
        _ => (local.to_owned(), domain),
    };
    if local.is_empty() {
        return Err(NormalizeError::MalformedEmail);
    }
    Ok(format!("{local}@{domain}"))
}

fn strip_plus(local: &str) -> &str {
    local.split_once('+').map_or(local, |(before, _)| before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;
    use base64::Engine as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(crate::hash::sha256(s.as_bytes()))
    }

    /// The examples published in the UID2 documentation ("Normalization Examples for Email"), with
    /// their published hashes.
    #[test]
    fn uid2_published_examples() {
        let cases = [
            (
                "MyEmail@example.com",
                "myemail@example.com",
                "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
                "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
            ),
            (
                "MYEMAIL@example.com",
                "myemail@example.com",
                "16c18d336f0b250f0e2d907452ceb9658a74ecdae8bc94864c23122a72cc27a5",
                "FsGNM28LJQ8OLZB0Us65ZYp07NrovJSGTCMSKnLMJ6U=",
            ),
            (
                "My.Email@example.com",
                "my.email@example.com",
                "e22b53bc6f871274f3a62ab37a3caed7214fc14d676215a96a242fcfada1c81f",
                "4itTvG+HEnTzpiqzejyu1yFPwU1nYhWpaiQvz62hyB8=",
            ),
            (
                "JANESAOIRSE@example.com",
                "janesaoirse@example.com",
                "d6670e7a92007f1b5ff785f1fc81e53aa6d3d7bd06bdf5c473cdc7286c284b6d",
                "1mcOepIAfxtf94Xx/IHlOqbT170GvfXEc83HKGwoS20=",
            ),
            (
                "Jane.Saoirse@example.com",
                "jane.saoirse@example.com",
                "b196432c7b989a2ca91c83799957c515da53e6c13abf20b78fea94f117e90bf8",
                "sZZDLHuYmiypHIN5mVfFFdpT5sE6vyC3j+qU8RfpC/g=",
            ),
            (
                "JaneSaoirse+Work@example.com",
                "janesaoirse+work@example.com",
                "28aaee4815230cd3b4ebd88c515226550666e91ac019929e3adac3f66c288180",
                "KKruSBUjDNO069iMUVImVQZm6RrAGZKeOtrD9mwogYA=",
            ),
            (
                "JANE.SAOIRSE@gmail.com",
                "janesaoirse@gmail.com",
                "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
                "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
            ),
            (
                "Jane.Saoirse@gmail.com",
                "janesaoirse@gmail.com",
                "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
                "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
            ),
            (
                "JaneSaoirse+Work@gmail.com",
                "janesaoirse@gmail.com",
                "92ee26057ed9dea2535d6c8b141d48373932476599196e00352254896db5888f",
                "ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=",
            ),
            (
                "user@example.com",
                "user@example.com",
                "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514",
                "tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ=",
            ),
        ];
        for (raw, normalized, hex, base64) in cases {
            let n = email_with(raw, Profile::Uid2).unwrap();
            assert_eq!(n, normalized, "{raw}");
            assert_eq!(sha256_hex(n.as_bytes()), hex, "{raw}");
            assert_eq!(b64(&n), base64, "{raw}");
        }
        // The un-normalized value of the UID2 warning hashes differently, as published.
        assert_eq!(b64("JANESaoirse@gmail.com"), "VpLXEp5N1bj/V1WzjgZsC+FfuYdntAOywSVIO00FD/E=");
        // UID2 applies the Gmail rules to gmail.com only.
        assert_eq!(email_with("Jane.Doe+x@googlemail.com", Profile::Uid2).unwrap(), "jane.doe+x@googlemail.com");
    }

    #[test]
    fn google_removes_gmail_periods_but_keeps_plus_tags() {
        assert_eq!(email_with(" Jane.Doe@Gmail.com ", Profile::Google).unwrap(), "janedoe@gmail.com");
        assert_eq!(email_with("jane.doe@googlemail.com", Profile::Google).unwrap(), "janedoe@googlemail.com");
        assert_eq!(email_with("jane.doe+ads@gmail.com", Profile::Google).unwrap(), "janedoe+ads@gmail.com");
        assert_eq!(email_with("Jane.Doe@example.com", Profile::Google).unwrap(), "jane.doe@example.com");
    }

    #[test]
    fn meta_only_trims_and_lower_cases() {
        assert_eq!(email_with("  Jane.Doe+ads@GMAIL.com", Profile::Meta).unwrap(), "jane.doe+ads@gmail.com");
    }

    #[test]
    fn sealroom_folds_every_gmail_alias() {
        for raw in
            ["jane.doe@gmail.com", "JaneDoe+news@gmail.com", "j.a.n.e.d.o.e@googlemail.com", " janedoe@GMAIL.COM"]
        {
            assert_eq!(email_with(raw, Profile::Sealroom).unwrap(), "janedoe@gmail.com", "{raw}");
        }
        assert_eq!(email_with("jane.doe+news@example.com", Profile::Sealroom).unwrap(), "jane.doe+news@example.com");
        assert_eq!(email_with("ÉLODIE@exemple.fr", Profile::Sealroom).unwrap(), "élodie@exemple.fr");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for p in Profile::ALL {
            assert_eq!(email_with("", p), Err(NormalizeError::Empty));
            assert_eq!(email_with("no-at-sign", p), Err(NormalizeError::MalformedEmail));
            assert_eq!(email_with("a@b@c", p), Err(NormalizeError::MalformedEmail));
            assert_eq!(email_with("@example.com", p), Err(NormalizeError::MalformedEmail));
            assert_eq!(email_with("jane doe@example.com", p), Err(NormalizeError::MalformedEmail));
        }
        assert_eq!(email_with("+tag@gmail.com", Profile::Sealroom), Err(NormalizeError::MalformedEmail));
    }
}
