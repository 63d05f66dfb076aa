//! Comparison levels: which level of a comparison a pair of values reaches.

use super::settings::Level;

/// A level index that means "one of the values is missing".
pub const NULL_LEVEL: u8 = 15;

fn days(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let y: i32 = date[0..4].parse().ok()?;
    let m: u32 = date[4..6].parse().ok()?;
    let d: u32 = date[6..8].parse().ok()?;
    chrono::NaiveDate::from_ymd_opt(y, m, d).map(|x| i64::from(x.num_days_from_ce()))
}

use chrono::Datelike;

fn last_digits(s: &str, n: usize) -> Option<&str> {
    let digits = s.trim_start_matches('+');
    (digits.len() >= n).then(|| &digits[digits.len() - n..])
}

/// Caches the expensive similarity of one pair across levels.
#[derive(Default)]
struct Lazy {
    jaro_winkler: Option<f64>,
}

fn satisfies(level: &Level, a: &str, b: &str, lazy: &mut Lazy) -> bool {
    match *level {
        Level::Exact => a == b,
        Level::JaroWinkler(t) => *lazy.jaro_winkler.get_or_insert_with(|| strsim::jaro_winkler(a, b)) >= t,
        Level::Levenshtein(d) => a.len().abs_diff(b.len()) <= d && strsim::levenshtein(a, b) <= d,
        Level::DamerauLevenshtein(d) => a.len().abs_diff(b.len()) <= d && strsim::osa_distance(a, b) <= d,
        Level::Prefix(n) => {
            let (mut ca, mut cb) = (a.chars(), b.chars());
            (0..n).all(|_| matches!((ca.next(), cb.next()), (Some(x), Some(y)) if x == y))
        }
        Level::DateWithinDays(n) => {
            matches!((days(a), days(b)), (Some(x), Some(y)) if (x - y).unsigned_abs() <= u64::from(n))
        }
        Level::SameYearMonth => a.len() == 8 && b.len() == 8 && a[..6] == b[..6],
        Level::SameYear => a.len() >= 4 && b.len() >= 4 && a[..4] == b[..4],
        Level::SameEmailUser => {
            matches!((a.split_once('@'), b.split_once('@')), (Some((x, _)), Some((y, _))) if x == y && !x.is_empty())
        }
        Level::SameLastDigits(n) => matches!((last_digits(a, n), last_digits(b, n)), (Some(x), Some(y)) if x == y),
    }
}

/// The level (index into `levels`, or `levels.len()` for "else", or [`NULL_LEVEL`]) of two values.
pub fn level_of(levels: &[Level], a: Option<&str>, b: Option<&str>) -> u8 {
    let (Some(a), Some(b)) = (a, b) else { return NULL_LEVEL };
    if a.is_empty() || b.is_empty() {
        return NULL_LEVEL;
    }
    let mut lazy = Lazy::default();
    for (i, level) in levels.iter().enumerate() {
        if satisfies(level, a, b, &mut lazy) {
            return i as u8;
        }
    }
    levels.len() as u8
}

/// American Soundex of a name (first letter and three digits), or `None` if it has no letter.
pub fn soundex(name: &str) -> Option<String> {
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => '1',
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => '2',
        'd' | 't' => '3',
        'l' => '4',
        'm' | 'n' => '5',
        'r' => '6',
        _ => '0',
    };
    let mut letters = name.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase());
    let first = letters.next()?;
    let mut out = String::with_capacity(4);
    out.push(first.to_ascii_uppercase());
    let mut last = code(first);
    for c in letters {
        let d = code(c);
        if d != '0' && d != last {
            out.push(d);
            if out.len() == 4 {
                break;
            }
        }
        if c != 'h' && c != 'w' {
            last = d;
        }
    }
    while out.len() < 4 {
        out.push('0');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let name = [Level::Exact, Level::JaroWinkler(0.92), Level::JaroWinkler(0.8)];
        assert_eq!(level_of(&name, Some("martha"), Some("martha")), 0);
        assert_eq!(level_of(&name, Some("martha"), Some("marhta")), 1);
        assert_eq!(level_of(&name, Some("dwayne"), Some("duane")), 2);
        assert_eq!(level_of(&name, Some("alice"), Some("bob")), 3);
        assert_eq!(level_of(&name, None, Some("bob")), NULL_LEVEL);
        assert_eq!(level_of(&name, Some(""), Some("bob")), NULL_LEVEL);
        let date = [Level::Exact, Level::DamerauLevenshtein(1), Level::SameYearMonth, Level::DateWithinDays(366)];
        assert_eq!(level_of(&date, Some("19850312"), Some("19850312")), 0);
        assert_eq!(level_of(&date, Some("19850312"), Some("19850321")), 1, "transposed digits");
        assert_eq!(level_of(&date, Some("19850312"), Some("19850328")), 2);
        assert_eq!(level_of(&date, Some("19850312"), Some("19860101")), 3);
        assert_eq!(level_of(&date, Some("19850312"), Some("19900101")), 4);
        assert_eq!(level_of(&[Level::Prefix(3)], Some("2600"), Some("2612")), 1);
        assert_eq!(level_of(&[Level::Prefix(2)], Some("2600"), Some("2612")), 0);
        assert_eq!(level_of(&[Level::SameEmailUser], Some("jo@a.com"), Some("jo@b.org")), 0);
        assert_eq!(level_of(&[Level::SameLastDigits(7)], Some("+14158675309"), Some("8675309")), 0);
        assert_eq!(level_of(&[Level::Levenshtein(2)], Some("kitten"), Some("sitting")), 1);
        assert_eq!(level_of(&[Level::Levenshtein(3)], Some("kitten"), Some("sitting")), 0);
    }

    #[test]
    fn soundex_codes() {
        for (name, code) in [
            ("robert", "R163"),
            ("rupert", "R163"),
            ("rubin", "R150"),
            ("ashcraft", "A261"),
            ("tymczak", "T522"),
            ("pfister", "P236"),
            ("lee", "L000"),
        ] {
            assert_eq!(soundex(name).as_deref(), Some(code), "{name}");
        }
        assert_eq!(soundex("123"), None);
    }
}
