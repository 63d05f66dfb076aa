//! Comparison levels: which level of a comparison a pair of values reaches.

use super::settings::Level;

/// A level index that means "one of the values is missing".
pub const NULL_LEVEL: u8 = 15;

fn last_digits(s: &str, n: usize) -> Option<&[u8]> {
    // Bytes, not a string slice: a value that is not a phone number must not panic on a char
    // boundary.
    let digits = s.trim_start_matches('+').as_bytes();
    (digits.len() >= n).then(|| &digits[digits.len() - n..])
}

/// Longest ASCII input of the allocation-free similarity paths.
const SHORT: usize = 64;

fn short_ascii(a: &str, b: &str) -> bool {
    a.len() <= SHORT && b.len() <= SHORT && a.is_ascii() && b.is_ascii()
}

/// Jaro-Winkler similarity, exactly as `strsim::jaro_winkler` computes it. Names and addresses are
/// short ASCII after normalization; for them the match flags live in two `u64`s instead of the heap,
/// which matters when a linkage compares tens of millions of pairs. Anything else goes to `strsim`.
#[allow(clippy::needless_range_loop)]
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    if !short_ascii(a, b) {
        return strsim::jaro_winkler(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (la, lb) = (a.len(), b.len());
    if la == 0 && lb == 0 {
        return 1.0;
    }
    if la == 0 || lb == 0 {
        return 0.0;
    }
    let range = (la.max(lb) / 2).saturating_sub(1);
    let (mut a_flags, mut b_flags) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, x) in a.iter().enumerate() {
        let lo = i.saturating_sub(range);
        let hi = lb.min(i + range + 1);
        for j in lo..hi {
            if b_flags & (1 << j) == 0 && b[j] == *x {
                a_flags |= 1 << i;
                b_flags |= 1 << j;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut bf = b_flags;
    for (i, x) in a.iter().enumerate() {
        if a_flags & (1 << i) != 0 {
            let j = bf.trailing_zeros() as usize;
            bf &= bf - 1;
            if b[j] != *x {
                transpositions += 1;
            }
        }
    }
    let m = matches as f64;
    let jaro = (m / la as f64 + m / lb as f64 + (matches - transpositions / 2) as f64 / m) / 3.0;
    if jaro > 0.7 {
        let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
        jaro + 0.1 * prefix as f64 * (1.0 - jaro)
    } else {
        jaro
    }
}

/// Levenshtein distance, as `strsim::levenshtein`, on the stack for short ASCII.
pub fn levenshtein(a: &str, b: &str) -> usize {
    if !short_ascii(a, b) {
        return strsim::levenshtein(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row = [0usize; SHORT + 1];
    for (j, cell) in row.iter_mut().enumerate().take(b.len() + 1) {
        *cell = j;
    }
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(x != y));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Optimal string alignment distance (Damerau-Levenshtein without repeated edits of a substring),
/// as `strsim::osa_distance`, on the stack for short ASCII.
pub fn osa_distance(a: &str, b: &str) -> usize {
    if !short_ascii(a, b) {
        return strsim::osa_distance(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut two_back, mut one_back, mut current) = ([0usize; SHORT + 1], [0usize; SHORT + 1], [0usize; SHORT + 1]);
    for (j, cell) in one_back.iter_mut().enumerate().take(b.len() + 1) {
        *cell = j;
    }
    for i in 0..a.len() {
        current[0] = i + 1;
        for j in 0..b.len() {
            let cost = usize::from(a[i] != b[j]);
            let mut best = (one_back[j + 1] + 1).min(current[j] + 1).min(one_back[j] + cost);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                best = best.min(two_back[j - 1] + 1);
            }
            current[j + 1] = best;
        }
        two_back = one_back;
        one_back = current;
    }
    one_back[b.len()]
}

/// Whether the Levenshtein distance (`osa`: optimal string alignment) is at most `d`, computing only
/// the diagonal band of width `2d + 1` and stopping as soon as every cell in a row exceeds `d`: O(n·d)
/// instead of O(n²). Agrees with [`levenshtein`] / [`osa_distance`] (a property test checks it).
pub fn within(a: &str, b: &str, d: usize, osa: bool) -> bool {
    // Byte lengths bound the distance only for ASCII (one edit changes a character, which may be
    // several bytes); for other text the character counts do.
    if a.len().abs_diff(b.len()) > d
        && (a.is_ascii() && b.is_ascii() || a.chars().count().abs_diff(b.chars().count()) > d)
    {
        return false;
    }
    if !short_ascii(a, b) || d >= 16 {
        return if osa { strsim::osa_distance(a, b) <= d } else { strsim::levenshtein(a, b) <= d };
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a == b {
        return true;
    }
    // Three rotating rows of small counters; cells outside the band read as "far".
    const FAR: u8 = 64;
    let mut rows = [[FAR; SHORT + 1]; 3];
    let width = b.len();
    for (j, cell) in rows[0].iter_mut().enumerate().take(width.min(d) + 1) {
        *cell = j as u8;
    }
    let d8 = d as u8;
    for i in 0..a.len() {
        let (cur, prev, prev2) = ((i + 1) % 3, i % 3, (i + 2) % 3);
        let lo = (i + 1).saturating_sub(d);
        let hi = width.min(i + 1 + d);
        // Clear the cells this row may read from on its left edge.
        if lo > 0 {
            rows[cur][lo - 1] = FAR;
        }
        rows[cur][0] = if lo == 0 { (i + 1) as u8 } else { FAR };
        let mut row_min = rows[cur][0];
        for j in lo.max(1)..=hi {
            let (x, y) = (a[i], b[j - 1]);
            let up = rows[prev][j];
            let left = rows[cur][j - 1];
            let diag = rows[prev][j - 1];
            let mut best = up.saturating_add(1).min(left.saturating_add(1)).min(diag + u8::from(x != y));
            if osa && i > 0 && j > 1 && x == b[j - 2] && a[i - 1] == y {
                best = best.min(rows[prev2][j - 2].saturating_add(1));
            }
            let best = best.min(FAR);
            rows[cur][j] = best;
            row_min = row_min.min(best);
        }
        if hi < width {
            rows[cur][hi + 1] = FAR;
        }
        if row_min > d8 {
            return false;
        }
    }
    rows[a.len() % 3][width] <= d8
}

/// Days since 0000-03-01 of a valid YYYYMMDD date (the civil-from-days algorithm), without parsing
/// through a calendar library on the hot path.
fn days(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| b[r].iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe)
}

/// Caches the expensive similarity of one pair across levels.
#[derive(Default)]
struct Lazy {
    jaro_winkler: Option<f64>,
}

fn satisfies(level: &Level, a: &str, b: &str, lazy: &mut Lazy) -> bool {
    match *level {
        Level::Exact => a == b,
        Level::JaroWinkler(t) => *lazy.jaro_winkler.get_or_insert_with(|| jaro_winkler(a, b)) >= t,
        Level::Levenshtein(d) => within(a, b, d, false),
        Level::DamerauLevenshtein(d) => within(a, b, d, true),
        Level::Prefix(n) => {
            let (mut ca, mut cb) = (a.chars(), b.chars());
            (0..n).all(|_| matches!((ca.next(), cb.next()), (Some(x), Some(y)) if x == y))
        }
        Level::DateWithinDays(n) => {
            matches!((days(a), days(b)), (Some(x), Some(y)) if (x - y).unsigned_abs() <= u64::from(n))
        }
        Level::SameYearMonth => a.len() == 8 && b.len() == 8 && a.as_bytes()[..6] == b.as_bytes()[..6],
        Level::SameYear => a.len() >= 4 && b.len() >= 4 && a.as_bytes()[..4] == b.as_bytes()[..4],
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
    use proptest::prelude::*;

    proptest! {
        /// The allocation-free paths compute exactly what strsim computes.
        #[test]
        fn fast_similarities_equal_strsim(a in "[a-e ]{0,20}", b in "[a-e ]{0,20}", long in "[a-z]{60,64}") {
            prop_assert_eq!(jaro_winkler(&a, &b), strsim::jaro_winkler(&a, &b));
            prop_assert_eq!(levenshtein(&a, &b), strsim::levenshtein(&a, &b));
            prop_assert_eq!(osa_distance(&a, &b), strsim::osa_distance(&a, &b));
            prop_assert_eq!(jaro_winkler(&long, &a), strsim::jaro_winkler(&long, &a));
            prop_assert_eq!(osa_distance(&long, &b), strsim::osa_distance(&long, &b));
            for d in 0..4 {
                prop_assert_eq!(within(&a, &b, d, false), strsim::levenshtein(&a, &b) <= d);
                prop_assert_eq!(within(&a, &b, d, true), strsim::osa_distance(&a, &b) <= d);
            }
        }

        /// Non-ASCII text (Cyrillic, accented Latin) gets the same distances as strsim's.
        #[test]
        fn within_agrees_with_strsim_on_any_script(a in "[aéиж ]{0,12}", b in "[aéиж ]{0,12}", d in 0usize..4) {
            prop_assert_eq!(within(&a, &b, d, false), strsim::levenshtein(&a, &b) <= d);
            prop_assert_eq!(within(&a, &b, d, true), strsim::osa_distance(&a, &b) <= d);
        }

        /// No level panics on any pair of values, whatever column it is put on.
        #[test]
        fn levels_never_panic(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            let levels = [
                Level::SameYearMonth, Level::SameYear, Level::SameLastDigits(3), Level::Prefix(2),
                Level::DateWithinDays(30), Level::SameEmailUser, Level::JaroWinkler(0.9), Level::DamerauLevenshtein(1),
            ];
            let _ = level_of(&levels, Some(&a), Some(&b));
        }

        /// Day arithmetic agrees with the calendar library.
        #[test]
        fn day_numbers_agree_with_chrono(y in 1850i32..2100, m in 1u32..=12, d in 1u32..=31) {
            let text = format!("{y:04}{m:02}{d:02}");
            let ours = days(&text);
            let theirs = chrono::NaiveDate::from_ymd_opt(y, m, d);
            prop_assert_eq!(ours.is_some(), theirs.is_some());
            if let (Some(a), Some(base)) = (ours, days("20000101")) {
                use chrono::Datelike;
                let t = theirs.unwrap().num_days_from_ce() - chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap().num_days_from_ce();
                prop_assert_eq!(a - base, i64::from(t));
            }
        }
    }

    #[test]
    fn non_ascii_and_long_inputs_go_to_strsim() {
        assert_eq!(jaro_winkler("josé", "jose"), strsim::jaro_winkler("josé", "jose"));
        let long = "a".repeat(100);
        assert_eq!(levenshtein(&long, "a"), 99);
    }

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
