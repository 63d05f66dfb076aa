//! Linkage settings: blocking rules, comparisons and their levels, the threshold. Written as YAML,
//! or inferred from column names when none are given.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// How a column's values are normalized and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Given names, surnames: folded like names; Jaro-Winkler levels; term-frequency adjusted.
    Name,
    /// Dates (of birth): normalized to YYYYMMDD; exact, one typo, same month, within a year.
    Date,
    Postcode,
    /// Free text (street, city): folded; Jaro-Winkler and Levenshtein levels.
    Text,
    Email,
    Phone,
    /// Compared for equality only (house numbers, states).
    Exact,
}

impl FieldKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Date => "date",
            Self::Postcode => "postcode",
            Self::Text => "text",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Exact => "exact",
        }
    }
}

/// One level of a comparison; the first level a pair satisfies is its level. Written in YAML as a
/// word (`exact`, `same_year_month`, `same_year`, `same_email_user`) or a one-key map
/// (`{jaro_winkler: 0.92}`, `{levenshtein: 2}`, `{damerau_levenshtein: 1}`, `{prefix: 3}`,
/// `{date_within_days: 366}`, `{same_last_digits: 7}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// The values are equal.
    Exact,
    /// Jaro-Winkler similarity at least this.
    JaroWinkler(f64),
    /// Levenshtein distance at most this.
    Levenshtein(usize),
    /// Damerau-Levenshtein (optimal string alignment) distance at most this.
    DamerauLevenshtein(usize),
    /// The first `n` characters are equal.
    Prefix(usize),
    /// Dates (YYYYMMDD) within this many days of each other.
    DateWithinDays(u32),
    /// Dates with the same year and month.
    SameYearMonth,
    /// Dates with the same year.
    SameYear,
    /// Emails with the same local part (before '@').
    SameEmailUser,
    /// Phones whose last `n` digits are equal.
    SameLastDigits(usize),
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Word(String),
            Map(std::collections::BTreeMap<String, f64>),
        }
        let err = |m: String| serde::de::Error::custom(m);
        match Repr::deserialize(d)? {
            Repr::Word(w) => match w.as_str() {
                "exact" => Ok(Self::Exact),
                "same_year_month" => Ok(Self::SameYearMonth),
                "same_year" => Ok(Self::SameYear),
                "same_email_user" => Ok(Self::SameEmailUser),
                other => Err(err(format!(
                    "unknown level '{other}' (words: exact, same_year_month, same_year, same_email_user; maps: \
                     jaro_winkler, levenshtein, damerau_levenshtein, prefix, date_within_days, same_last_digits)"
                ))),
            },
            Repr::Map(m) if m.len() == 1 => {
                let (k, v) = m.into_iter().next().ok_or_else(|| err("empty level".into()))?;
                let whole = |v: f64| -> Result<usize, D::Error> {
                    if v >= 0.0 && v.fract() == 0.0 {
                        Ok(v as usize)
                    } else {
                        Err(err(format!("{k}: {v} must be a whole number")))
                    }
                };
                match k.as_str() {
                    "jaro_winkler" => Ok(Self::JaroWinkler(v)),
                    "levenshtein" => Ok(Self::Levenshtein(whole(v)?)),
                    "damerau_levenshtein" => Ok(Self::DamerauLevenshtein(whole(v)?)),
                    "prefix" => Ok(Self::Prefix(whole(v)?)),
                    "date_within_days" => Ok(Self::DateWithinDays(whole(v)? as u32)),
                    "same_last_digits" => Ok(Self::SameLastDigits(whole(v)?)),
                    other => Err(err(format!("unknown level '{other}'"))),
                }
            }
            Repr::Map(_) => Err(err("a level map has exactly one key, as in {jaro_winkler: 0.9}".into())),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact => f.write_str("exact"),
            Self::JaroWinkler(t) => write!(f, "jaro_winkler >= {t}"),
            Self::Levenshtein(d) => write!(f, "levenshtein <= {d}"),
            Self::DamerauLevenshtein(d) => write!(f, "damerau_levenshtein <= {d}"),
            Self::Prefix(n) => write!(f, "first {n} characters"),
            Self::DateWithinDays(d) => write!(f, "within {d} days"),
            Self::SameYearMonth => f.write_str("same year and month"),
            Self::SameYear => f.write_str("same year"),
            Self::SameEmailUser => f.write_str("same email user"),
            Self::SameLastDigits(n) => write!(f, "same last {n} digits"),
        }
    }
}

/// A comparison of one column between two records.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub column: String,
    pub kind: FieldKind,
    /// Levels from most to least similar; everything else is the "else" level. Defaults by kind.
    #[serde(default)]
    pub levels: Vec<Level>,
    /// Adjust the exact level by how common the value is (a match on "smith" is weaker evidence than
    /// on "zabriskie"). Defaults to true for names and text.
    #[serde(default)]
    pub term_frequency: Option<bool>,
}

impl Comparison {
    pub fn new(column: &str, kind: FieldKind) -> Self {
        Self { column: column.to_owned(), kind, levels: Vec::new(), term_frequency: None }
    }

    /// The levels, defaulted by kind.
    pub fn effective_levels(&self) -> Vec<Level> {
        if !self.levels.is_empty() {
            return self.levels.clone();
        }
        match self.kind {
            FieldKind::Name => {
                vec![Level::Exact, Level::JaroWinkler(0.92), Level::JaroWinkler(0.88), Level::JaroWinkler(0.7)]
            }
            FieldKind::Date => {
                vec![Level::Exact, Level::DamerauLevenshtein(1), Level::SameYearMonth, Level::DateWithinDays(366)]
            }
            FieldKind::Postcode => vec![Level::Exact, Level::DamerauLevenshtein(1), Level::Prefix(3)],
            FieldKind::Text => {
                vec![Level::Exact, Level::JaroWinkler(0.9), Level::Levenshtein(2), Level::JaroWinkler(0.7)]
            }
            FieldKind::Email => vec![Level::Exact, Level::SameEmailUser, Level::JaroWinkler(0.88)],
            FieldKind::Phone => vec![Level::Exact, Level::DamerauLevenshtein(1), Level::SameLastDigits(7)],
            FieldKind::Exact => vec![Level::Exact],
        }
    }

    pub fn uses_term_frequency(&self) -> bool {
        self.term_frequency.unwrap_or(matches!(self.kind, FieldKind::Name | FieldKind::Text))
    }
}

/// How a blocking key is made from a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyTransform {
    Exact,
    /// The first n characters.
    First(usize),
    /// The Soundex code (names).
    Soundex,
    /// The year of a YYYYMMDD date.
    Year,
}

/// One column of a blocking rule, written `column`, `column:first3`, `column:soundex`, `column:year`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockKey {
    pub column: String,
    pub transform: KeyTransform,
}

impl FromStr for BlockKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (column, transform) = match s.split_once(':') {
            None => (s, KeyTransform::Exact),
            Some((c, "soundex")) => (c, KeyTransform::Soundex),
            Some((c, "year")) => (c, KeyTransform::Year),
            Some((c, "exact")) => (c, KeyTransform::Exact),
            Some((c, t)) if t.starts_with("first") => {
                let n = t["first".len()..]
                    .parse::<usize>()
                    .map_err(|_| format!("'{s}': write firstN with a number, as in surname:first3"))?;
                if n == 0 {
                    return Err(format!("'{s}': firstN needs N >= 1"));
                }
                (c, KeyTransform::First(n))
            }
            Some((_, t)) => {
                return Err(format!("'{s}': unknown key transform '{t}' (use exact, firstN, soundex or year)"));
            }
        };
        if column.trim().is_empty() {
            return Err(format!("'{s}': no column name"));
        }
        Ok(Self { column: column.trim().to_owned(), transform })
    }
}

impl<'de> Deserialize<'de> for BlockKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transform {
            KeyTransform::Exact => write!(f, "{}", self.column),
            KeyTransform::First(n) => write!(f, "{}:first{n}", self.column),
            KeyTransform::Soundex => write!(f, "{}:soundex", self.column),
            KeyTransform::Year => write!(f, "{}:year", self.column),
        }
    }
}

/// A blocking rule: records are compared when all its keys agree. Rules are unioned.
pub type BlockingRule = Vec<BlockKey>;

/// Settings of a linkage. Every field has a default; see `docs/matching/fuzzy.md`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Candidate pairs: the union of these rules. Inferred when empty.
    pub blocking_rules: Vec<BlockingRule>,
    /// Inferred from column names when empty.
    pub comparisons: Vec<Comparison>,
    /// Pairs with a match probability at or above this are matches.
    pub threshold: f64,
    /// Keep only the best match of each record (linking two files).
    pub one_to_one: bool,
    /// EM iterations at most, and the convergence tolerance on m probabilities.
    pub max_iterations: usize,
    pub tolerance: f64,
    /// Random record pairs sampled to estimate u probabilities.
    pub u_sample_pairs: usize,
    /// Refuse to compare more candidate pairs than this (a blocking rule that is too loose).
    pub max_candidate_pairs: u64,
    pub seed: u64,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            blocking_rules: Vec::new(),
            comparisons: Vec::new(),
            threshold: 0.9,
            one_to_one: false,
            max_iterations: 30,
            tolerance: 1e-5,
            u_sample_pairs: 300_000,
            max_candidate_pairs: 400_000_000,
            seed: 42,
            threads: 0,
        }
    }
}

impl Settings {
    /// Parses YAML settings.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let s: Self = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("threshold {} must be a probability between 0 and 1", self.threshold));
        }
        for c in &self.comparisons {
            for l in &c.levels {
                if let Level::JaroWinkler(t) = l
                    && !(0.0..=1.0).contains(t)
                {
                    return Err(format!(
                        "comparison '{}': jaro_winkler threshold {t} must be between 0 and 1",
                        c.column
                    ));
                }
            }
            if c.effective_levels().len() > 6 {
                return Err(format!("comparison '{}': at most 6 levels (plus else)", c.column));
            }
        }
        if self.comparisons.len() > 16 {
            return Err("at most 16 comparisons".into());
        }
        Ok(())
    }

    /// Fills what the settings leave empty from column names ([`super::infer`]): comparisons, and
    /// blocking rules. Returns whether the blocking rules were inferred (and so may be fitted to the
    /// data with [`super::fit_blocking`]).
    pub fn fill_inferred(&mut self, columns: &[String]) -> bool {
        let inferred = super::infer(columns);
        if self.comparisons.is_empty() {
            self.comparisons = inferred.comparisons;
        }
        let rules_inferred = self.blocking_rules.is_empty();
        if rules_inferred {
            self.blocking_rules = inferred.blocking_rules;
        }
        rules_inferred
    }

    pub fn threads(&self) -> usize {
        if self.threads == 0 { std::thread::available_parallelism().map_or(2, usize::from) } else { self.threads }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_settings_parse_with_defaults() {
        let s = Settings::from_yaml(
            "blocking_rules:\n  - [surname, given_name:first1]\n  - [date_of_birth]\ncomparisons:\n  - {column: surname, kind: name}\n  - {column: date_of_birth, kind: date, levels: [exact, {damerau_levenshtein: 1}]}\nthreshold: 0.8\n",
        )
        .unwrap();
        assert_eq!(s.blocking_rules.len(), 2);
        assert_eq!(s.blocking_rules[0][1], BlockKey { column: "given_name".into(), transform: KeyTransform::First(1) });
        assert_eq!(s.comparisons[1].levels, vec![Level::Exact, Level::DamerauLevenshtein(1)]);
        assert_eq!(s.threshold, 0.8);
        assert_eq!(s.max_iterations, 30);
        assert!(s.comparisons[0].uses_term_frequency());
    }

    #[test]
    fn bad_settings_are_explained() {
        assert!(Settings::from_yaml("treshold: 0.5").unwrap_err().contains("unknown field `treshold`"));
        assert!(Settings::from_yaml("threshold: 2").unwrap_err().contains("between 0 and 1"));
        assert!(Settings::from_yaml("blocking_rules: [[surname:first]]").unwrap_err().contains("firstN"));
        assert!(
            Settings::from_yaml("blocking_rules: [[surname:metaphone]]").unwrap_err().contains("unknown key transform")
        );
        assert!(Settings::from_yaml("comparisons: [{column: x, kind: nam}]").unwrap_err().contains("unknown variant"));
        assert!(
            Settings::from_yaml("comparisons: [{column: x, kind: name, levels: [exakt]}]")
                .unwrap_err()
                .contains("unknown level")
        );
        assert!(
            Settings::from_yaml("comparisons: [{column: x, kind: name, levels: [{levenshtein: 1.5}]}]")
                .unwrap_err()
                .contains("whole number")
        );
    }
}
