//! Normalization of identifiers before hashing or comparing.
//!
//! Both sides of a room must normalize the same way or their hashes never meet. Four profiles are
//! offered; each reproduces a published rule set (see `docs/matching/normalization.md` for the
//! citations and the test vectors in this module's tests):
//!
//! | profile | emails | phones | names, cities |
//! |---|---|---|---|
//! | `sealroom` (default) | trim, lower-case; Gmail: dots and `+tag` removed, `googlemail.com` → `gmail.com` | E.164 (`+14155550134`) | NFKD, diacritics stripped, lower-case, punctuation removed, spaces collapsed |
//! | `google` (Customer Match) | trim, lower-case; dots removed before `@gmail.com` / `@googlemail.com` | E.164 | trim, lower-case |
//! | `meta` (Custom Audiences) | trim, lower-case | digits only, country code, no `+`, no leading zeros (`14155550134`) | lower-case, no punctuation or spaces (UTF-8 letters kept) |
//! | `uid2` (Unified ID 2.0) | trim, lower-case; `gmail.com`: dots and `+tag` removed | E.164 | not defined by UID2 (refused) |

mod date;
mod email;
mod phone;
mod text;

use std::fmt;
use std::str::FromStr;

pub use date::{DateOrder, date_for_comparison, date_of_birth};
pub use email::email_with;
pub use phone::{Region, phone_with, region};
pub use text::{address_with, city_with, name_with, postcode_with};

/// A published normalization rule set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// sealroom's own: the union of the platforms' rules that raises match rates without merging
    /// different people.
    #[default]
    Sealroom,
    /// Google Ads Customer Match.
    Google,
    /// Meta (Facebook) Custom Audiences.
    Meta,
    /// The Trade Desk's Unified ID 2.0.
    Uid2,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Self::Sealroom, Self::Google, Self::Meta, Self::Uid2];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sealroom => "sealroom",
            Self::Google => "google",
            Self::Meta => "meta",
            Self::Uid2 => "uid2",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown normalization profile '{s}': use sealroom, google, meta or uid2"))
    }
}

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
    /// Not a date in any accepted format, or not a real calendar date.
    InvalidDate(String),
    /// The profile does not define this kind of identifier.
    NotInProfile {
        profile: Profile,
        field: &'static str,
    },
    /// Nothing is left after normalization (only punctuation, say).
    NothingLeft,
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty value"),
            Self::MalformedEmail => f.write_str("not an email address (expected local@domain)"),
            Self::UnparsablePhone(reason) => write!(f, "not a phone number ({reason})"),
            Self::InvalidPhone => f.write_str("not a valid phone number for its region"),
            Self::InvalidDate(reason) => write!(f, "not a date ({reason})"),
            Self::NotInProfile { profile, field } => {
                write!(f, "the {profile} profile does not define how to normalize {field}")
            }
            Self::NothingLeft => f.write_str("nothing is left after normalization"),
        }
    }
}

impl std::error::Error for NormalizeError {}

/// Trims and lower-cases an email address (sealroom profile).
pub fn email(raw: &str) -> Result<String, NormalizeError> {
    email_with(raw, Profile::Sealroom)
}

/// A phone number in E.164 (sealroom profile).
pub fn phone(raw: &str, default_region: Region) -> Result<String, NormalizeError> {
    phone_with(raw, default_region, Profile::Sealroom)
}

/// A person's name (sealroom profile).
pub fn name(raw: &str) -> Result<String, NormalizeError> {
    name_with(raw, Profile::Sealroom)
}
