//! Dates of birth in many input formats → `YYYYMMDD`.

use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

use super::NormalizeError;

/// How to read day/month dates whose order the text does not settle (`03/04/1985`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DateOrder {
    /// Day before month when the first number is over 12, month before day when the second is,
    /// day first for dots (`03.04.1985`, the European form); otherwise refuse as ambiguous.
    #[default]
    Auto,
    /// `DD/MM/YYYY`.
    DayFirst,
    /// `MM/DD/YYYY`.
    MonthFirst,
}

impl FromStr for DateOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "dmy" | "day-first" => Ok(Self::DayFirst),
            "mdy" | "month-first" => Ok(Self::MonthFirst),
            other => Err(format!("unknown date order '{other}': use auto, dmy or mdy")),
        }
    }
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

fn month_of(word: &str) -> Option<u32> {
    let w = word.to_ascii_lowercase();
    if w.len() < 3 {
        return None;
    }
    MONTHS.iter().position(|m| w.starts_with(m)).map(|i| i as u32 + 1)
}

fn invalid(reason: impl Into<String>) -> NormalizeError {
    NormalizeError::InvalidDate(reason.into())
}

/// A two-digit year: the most recent year with those digits that is not in the future.
fn full_year(y: u32, digits: usize) -> i32 {
    if digits != 2 {
        return y as i32;
    }
    let this_year = chrono::Utc::now().year();
    let century = this_year - this_year % 100;
    let candidate = century + y as i32;
    if candidate > this_year { candidate - 100 } else { candidate }
}

fn ymd(y: i32, m: u32, d: u32) -> Result<String, NormalizeError> {
    if !(1800..=2200).contains(&y) {
        return Err(invalid(format!("year {y} is out of range")));
    }
    let date = NaiveDate::from_ymd_opt(y, m, d)
        .ok_or_else(|| invalid(format!("{y:04}-{m:02}-{d:02} is not a calendar date")))?;
    Ok(date.format("%Y%m%d").to_string())
}

/// A best-effort `YYYYMMDD` for comparison (fuzzy matching, CLKs), where an unparsed date is
/// still evidence: the date under `Auto`; an ambiguous `03/04/1985` read month first (the US
/// convention); otherwise the digits with a four-digit year moved to the front, so that the year
/// stays comparable. `None` when there are no digits.
pub fn date_for_comparison(raw: &str) -> Option<String> {
    if let Ok(d) = date_of_birth(raw, DateOrder::Auto).or_else(|_| date_of_birth(raw, DateOrder::MonthFirst)) {
        return Some(d);
    }
    let groups: Vec<&str> = raw.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).collect();
    if groups.is_empty() {
        return None;
    }
    match groups.iter().position(|g| g.len() == 4) {
        Some(y) if y > 0 => {
            let mut out = groups[y].to_owned();
            for (i, g) in groups.iter().enumerate() {
                if i != y {
                    out.push_str(g);
                }
            }
            Some(out)
        }
        _ => Some(groups.concat()),
    }
}

/// Normalizes a date to `YYYYMMDD`. Accepted: `YYYYMMDD`, `YYYY-MM-DD` (also with `/` or `.`, and
/// with a time after it), `DD/MM/YYYY` and `MM/DD/YYYY` (also with `-` or `.`, and two-digit years),
/// and month names (`12 Mar 1985`, `March 12, 1985`, `12-MAR-85`).
pub fn date_of_birth(raw: &str, order: DateOrder) -> Result<String, NormalizeError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(NormalizeError::Empty);
    }
    // Drop a time of day: `1985-03-12T00:00:00`, `1985-03-12 00:00:00`.
    let t = t
        .split(['T', ' '])
        .next()
        .filter(|d| d.len() >= 8 && d.bytes().filter(u8::is_ascii_digit).count() >= 6)
        .unwrap_or(t);
    if t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit()) {
        let (y, m, d) = (&t[0..4], &t[4..6], &t[6..8]);
        return ymd(y.parse().unwrap_or(0), m.parse().unwrap_or(0), d.parse().unwrap_or(0));
    }
    let parts: Vec<&str> = t.split(['-', '/', '.', ' ', ',']).filter(|p| !p.is_empty()).collect();
    if parts.len() != 3 {
        return Err(invalid(format!("'{t}' has {} parts, expected day, month and year", parts.len())));
    }
    let numeric: Vec<Option<u32>> = parts.iter().map(|p| p.parse::<u32>().ok()).collect();
    // With a month name.
    if let Some(name_at) = parts.iter().position(|p| month_of(p).is_some() && p.parse::<u32>().is_err()) {
        let month = month_of(parts[name_at]).unwrap_or(0);
        let others: Vec<(usize, u32)> =
            (0..3).filter(|i| *i != name_at).filter_map(|i| numeric[i].map(|v| (i, v))).collect();
        let [(i1, a), (i2, b)] = others.as_slice() else {
            return Err(invalid(format!("'{t}' has a month name but not a day and a year")));
        };
        let (day, (year, year_digits)) =
            if parts[*i2].len() == 4 || *b > 31 { (*a, (*b, parts[*i2].len())) } else { (*b, (*a, parts[*i1].len())) };
        return ymd(full_year(year, year_digits), month, day);
    }
    let [Some(a), Some(b), Some(c)] = numeric[..] else {
        return Err(invalid(format!("'{t}' is not made of numbers or a month name")));
    };
    if parts[0].len() == 4 {
        return ymd(a as i32, b, c);
    }
    let year = full_year(c, parts[2].len());
    let day_first = match order {
        DateOrder::DayFirst => true,
        DateOrder::MonthFirst => false,
        DateOrder::Auto if a > 12 => true,
        DateOrder::Auto if b > 12 => false,
        DateOrder::Auto if t.contains('.') => true,
        DateOrder::Auto if a == b => true,
        DateOrder::Auto => {
            return Err(invalid(format!(
                "'{t}' is ambiguous (day/month or month/day?); give the date order (dmy or mdy)"
            )));
        }
    };
    if day_first { ymd(year, b, a) } else { ymd(year, a, b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats() {
        let d = |raw| date_of_birth(raw, DateOrder::Auto).unwrap();
        assert_eq!(d("19850312"), "19850312");
        assert_eq!(d("1985-03-12"), "19850312");
        assert_eq!(d("1985/3/12"), "19850312");
        assert_eq!(d("1985-03-12T00:00:00Z"), "19850312");
        assert_eq!(d("1985-03-12 10:11:12"), "19850312");
        assert_eq!(d("25/12/1985"), "19851225");
        assert_eq!(d("12/25/1985"), "19851225");
        assert_eq!(d("03.04.1985"), "19850403");
        assert_eq!(d("12 Mar 1985"), "19850312");
        assert_eq!(d("March 12, 1985"), "19850312");
        assert_eq!(d("12-MAR-85"), "19850312");
        assert_eq!(d("29/02/2000"), "20000229");
        assert_eq!(date_of_birth("03/04/1985", DateOrder::DayFirst).unwrap(), "19850403");
        assert_eq!(date_of_birth("03/04/1985", DateOrder::MonthFirst).unwrap(), "19850304");
    }

    #[test]
    fn bad_dates_are_explained() {
        let e = |raw| date_of_birth(raw, DateOrder::Auto).unwrap_err().to_string();
        assert!(e("03/04/1985").contains("ambiguous"));
        assert!(e("29/02/2001").contains("not a calendar date"));
        assert!(e("19851332").contains("not a calendar date"));
        assert!(e("yesterday").contains("parts"));
        assert!(e("1985-03").contains("parts"));
        assert_eq!(date_of_birth(" ", DateOrder::Auto), Err(NormalizeError::Empty));
    }

    #[test]
    fn dates_for_comparison_keep_the_year_first() {
        assert_eq!(date_for_comparison("1985-03-12").as_deref(), Some("19850312"));
        // Ambiguous: read month first.
        assert_eq!(date_for_comparison("03/04/1985").as_deref(), Some("19850304"));
        // Not a calendar date: digits, with the year moved to the front.
        assert_eq!(date_for_comparison("31/02/1985").as_deref(), Some("19853102"));
        assert_eq!(date_for_comparison("no date"), None);
        assert_eq!(date_for_comparison("ünïcödé 12").as_deref(), Some("12"));
    }

    proptest! {
        /// Never panics, whatever the input.
        #[test]
        fn comparison_dates_never_panic(raw in "\\PC{0,24}") {
            let _ = date_for_comparison(&raw);
        }

        /// Every accepted spelling of a date gives the same YYYYMMDD, and YYYYMMDD is a fixed point.
        #[test]
        fn spellings_agree(y in 1900i32..2020, m in 1u32..=12, d in 1u32..=28, style in 0usize..6) {
            let canonical = format!("{y:04}{m:02}{d:02}");
            let text = match style {
                0 => format!("{y:04}-{m:02}-{d:02}"),
                1 => format!("{d:02}/{m:02}/{y:04}"),
                2 => format!("{d}.{m}.{y}"),
                3 => format!("{} {d}, {y}", MONTHS[(m - 1) as usize]),
                4 => format!("{d:02}-{}-{y}", MONTHS[(m - 1) as usize].to_uppercase()),
                _ => canonical.clone(),
            };
            let order = if style == 1 { DateOrder::DayFirst } else { DateOrder::Auto };
            prop_assert_eq!(date_of_birth(&text, order).unwrap(), canonical.clone());
            prop_assert_eq!(date_of_birth(&canonical, DateOrder::Auto).unwrap(), canonical);
        }
    }
}
