//! `sealroom link`: link two CSV files (or deduplicate one) locally, and measure quality against a
//! truth file. Reproducible evaluation of the matcher the engine runs inside the enclave.
//!
//! The last line printed is a JSON object with `precision`, `recall`, `f1` (when a truth file is
//! given), `pairs_compared` and `seconds`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sealroom_matching::eval::{Quality, evaluate};
use sealroom_matching::fuzzy::{self, Records, Settings};
use serde_json::json;

use crate::CliError;

/// Longest field accepted, in bytes: longer values are data errors, not names.
pub const MAX_FIELD_BYTES: usize = 4096;

/// A CSV file read as strings: its id column and every other column.
#[derive(Debug, Clone)]
pub struct CsvTable {
    pub path: PathBuf,
    pub ids: Vec<String>,
    pub id_column: String,
    pub columns: Vec<(String, Vec<Option<String>>)>,
}

/// A CSV file read as columns of strings (empty cells are `None`), with each record's line.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    pub columns: Vec<(String, Vec<Option<String>>)>,
    /// The line each record starts on (a quoted field may span lines).
    pub lines: Vec<u64>,
}

/// Reads a CSV with a header row into columns. Every failure names the file, the line and the
/// column: an empty file, a repeated header, a field longer than [`MAX_FIELD_BYTES`], a record of
/// the wrong length or not UTF-8, no records, and an `exclude` name the header does not have.
pub fn read_columns(path: &Path, exclude: &[String]) -> Result<CsvColumns, CliError> {
    let file = std::fs::File::open(path).map_err(|e| CliError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(std::io::BufReader::new(file));
    let where_ = |line: u64| format!("{} line {line}", path.display());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(CliError::Input(format!("{}: cannot read the header row: {}", path.display(), csv_error(&e))));
        }
    };
    if headers.is_empty() || (headers.len() == 1 && headers[0].trim().is_empty()) {
        return Err(CliError::Input(format!(
            "{} is empty: it needs a header row and at least one record",
            path.display()
        )));
    }
    let names: Vec<String> = headers.iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_owned()).collect();
    let mut seen = HashSet::new();
    for n in &names {
        if !seen.insert(n.as_str()) {
            return Err(CliError::Input(format!("{}: column '{n}' appears twice in the header", path.display())));
        }
    }
    for e in exclude {
        if !names.contains(e) {
            return Err(CliError::Input(format!(
                "{}: --exclude-column {e}: no such column (columns: {})",
                path.display(),
                names.join(", ")
            )));
        }
    }
    let mut columns: Vec<(String, Vec<Option<String>>)> = names.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut lines = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(CliError::Input(format!("{}: {}", where_(line), csv_error(&e))));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        for (i, value) in record.iter().enumerate() {
            if value.len() > MAX_FIELD_BYTES {
                return Err(CliError::Input(format!(
                    "{} column '{}': a {}-byte value; fields longer than {MAX_FIELD_BYTES} bytes are refused",
                    where_(line),
                    names[i],
                    value.len()
                )));
            }
        }
        for (slot, value) in columns.iter_mut().zip(record.iter()) {
            let v = value.trim();
            slot.1.push((!v.is_empty()).then(|| v.to_owned()));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(CliError::Input(format!("{} has a header but no records", path.display())));
    }
    Ok(CsvColumns { columns, lines })
}

/// Reads a CSV with a header row. The id column is `id_column`, or the first column; ids must be
/// present and unique. Every failure names the file, the line and the column.
pub fn read_csv(path: &Path, id_column: Option<&str>, exclude: &[String]) -> Result<CsvTable, CliError> {
    let CsvColumns { columns, lines } = read_columns(path, exclude)?;
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let id_at = match id_column {
        Some(c) => names.iter().position(|n| *n == c).ok_or_else(|| {
            CliError::Input(format!("{}: no id column '{c}' (columns: {})", path.display(), names.join(", ")))
        })?,
        None => 0,
    };
    let id_name = names[id_at].to_owned();
    let mut ids = Vec::with_capacity(lines.len());
    let mut first_line_of: HashMap<&str, u64> = HashMap::new();
    for (id, line) in columns[id_at].1.iter().zip(&lines) {
        let where_ = format!("{} line {line} column '{id_name}'", path.display());
        let Some(id) = id else {
            return Err(CliError::Input(format!("{where_}: the record id is empty")));
        };
        if let Some(first) = first_line_of.insert(id, *line) {
            return Err(CliError::Input(format!(
                "{where_}: duplicate record id '{id}' (first on line {first}); ids must be unique"
            )));
        }
        ids.push(id.clone());
    }
    let columns = columns
        .into_iter()
        .enumerate()
        .filter(|(i, (n, _))| *i != id_at && !exclude.contains(n))
        .map(|(_, c)| c)
        .collect();
    Ok(CsvTable { path: path.to_owned(), ids, id_column: id_name, columns })
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            format!("not UTF-8 (field {} is invalid); convert the file to UTF-8", err.field() + 1)
        }
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the header has {expected_len}")
        }
        _ => e.to_string(),
    }
}

/// Reads a truth file of `left_id,right_id` pairs (header row first).
pub fn read_truth(path: &Path) -> Result<Vec<(String, String)>, CliError> {
    let file = std::fs::File::open(path).map_err(|e| CliError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
    let mut pairs = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| CliError::Input(format!("{}: {}", path.display(), csv_error(&e))))?;
        if record.len() < 2 {
            return Err(CliError::Input(format!("{} line {}: expected left_id,right_id", path.display(), i + 2)));
        }
        pairs.push((record[0].trim().to_owned(), record[1].trim().to_owned()));
    }
    Ok(pairs)
}

/// Pairs a linkage predicted.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    pub matches: usize,
    pub pairs_compared: u64,
    /// `(left id, right id)`.
    pub pairs: Vec<(String, String)>,
    /// The score of each pair (match probability, or Dice with CLKs).
    pub scores: Vec<f64>,
    /// Comparison rate of the matching step alone, when it is worth reporting (CLK Dice).
    pub comparisons_per_second: Option<f64>,
}

/// What `link` was asked to do.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub left: PathBuf,
    /// `None`: deduplicate `left`.
    pub right: Option<PathBuf>,
    pub settings: Option<PathBuf>,
    pub exclude: Vec<String>,
    pub truth: Option<PathBuf>,
    /// Write the predicted pairs (`left_id,right_id,score`) here.
    pub output: Option<PathBuf>,
    pub id_column: Option<String>,
    pub threshold: Option<f64>,
    pub clk: bool,
    /// Hex secret for CLK encodings (default: random per run).
    pub clk_secret: Option<String>,
}

/// The figures `link` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkReport {
    pub matches: usize,
    pub pairs_compared: u64,
    pub seconds: f64,
    pub quality: Option<Quality>,
    pub comparisons_per_second: Option<f64>,
    pub lines: Vec<String>,
}

impl LinkReport {
    pub fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "matches": self.matches,
            "pairs_compared": self.pairs_compared,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
        });
        if let Some(rate) = self.comparisons_per_second {
            v["comparisons_per_second"] = json!(rate.round());
        }
        if let Some(q) = &self.quality {
            v["precision"] = json!((q.precision * 10_000.0).round() / 10_000.0);
            v["recall"] = json!((q.recall * 10_000.0).round() / 10_000.0);
            v["f1"] = json!((q.f1 * 10_000.0).round() / 10_000.0);
            v["true_positives"] = json!(q.true_positives);
            v["false_positives"] = json!(q.false_positives);
            v["false_negatives"] = json!(q.false_negatives);
        }
        v
    }
}

/// The settings to link with, and whether the blocking rules were inferred (and so may be fitted
/// to the data).
fn load_settings(options: &LinkOptions, columns: &[String]) -> Result<(Settings, bool), CliError> {
    let mut settings = match &options.settings {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
            Settings::from_yaml(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
        }
        None => Settings::default(),
    };
    let rules_inferred = settings.fill_inferred(columns);
    if let Some(t) = options.threshold {
        settings.threshold = t;
    }
    if options.right.is_some() && options.settings.is_none() {
        settings.one_to_one = true;
    }
    Ok((settings, rules_inferred))
}

/// Runs a linkage and evaluates it. Timing covers reading the files through scoring.
pub fn run(options: &LinkOptions) -> Result<LinkReport, CliError> {
    if let Some(t) = options.threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(CliError::Usage(format!(
            "--threshold {t} is out of range: a match probability (or, with --clk, a Dice coefficient) between 0 and 1"
        )));
    }
    if options.clk && options.settings.is_some() {
        return Err(CliError::Usage(
            "--settings configures Fellegi-Sunter linkage and does not apply with --clk; drop one of them".into(),
        ));
    }
    let started = Instant::now();
    let left = read_csv(&options.left, options.id_column.as_deref(), &options.exclude)?;
    let right = match &options.right {
        Some(p) => Some(read_csv(p, options.id_column.as_deref(), &options.exclude)?),
        None => None,
    };
    let columns: Vec<String> = left.columns.iter().map(|(n, _)| n.clone()).collect();
    if let Some(r) = &right {
        let rc: Vec<&String> = r.columns.iter().map(|(n, _)| n).collect();
        for c in &columns {
            if !rc.contains(&c) {
                return Err(CliError::Input(format!(
                    "{} has column '{c}' but {} does not",
                    left.path.display(),
                    r.path.display()
                )));
            }
        }
    }
    let mut lines = Vec::new();
    let predicted: Predicted = if options.clk {
        crate::link_clk::run(&left, right.as_ref(), options.threshold, options.clk_secret.as_deref(), &mut lines)?
    } else {
        let (mut settings, rules_inferred) = load_settings(options, &columns)?;
        let prep = |t: &CsvTable, settings: &Settings| {
            Records::prepare(t.ids.clone(), &t.columns, settings)
                .map_err(|e| CliError::Input(format!("{}: {e}", t.path.display())))
        };
        let l = prep(&left, &settings)?;
        let r = match &right {
            Some(t) => Some(prep(t, &settings)?),
            None => None,
        };
        if rules_inferred {
            let budget = fuzzy::default_pair_budget(l.len(), r.as_ref().map_or(0, Records::len));
            lines.extend(fuzzy::fit_blocking(&mut settings, &l, r.as_ref(), budget));
        }
        let result = match &r {
            Some(r) => fuzzy::link(&l, r, &settings),
            None => fuzzy::dedupe(&l, &settings),
        }
        .map_err(|e| CliError::Input(e.to_string()))?;
        let r_ids = right.as_ref().map_or(&left.ids, |r| &r.ids);
        lines.push(format!(
            "compared {} candidate pairs from {} blocking rules on {} comparisons (λ = {:.3e})",
            result.candidates,
            result.blocking_rules.len(),
            result.comparisons.len(),
            result.parameters.lambda
        ));
        for (c, comparison) in result.comparisons.iter().enumerate() {
            let levels = comparison.effective_levels();
            let cells: Vec<String> = (0..=levels.len())
                .map(|l| {
                    let name = levels.get(l).map_or_else(|| "else".to_owned(), ToString::to_string);
                    format!("{name}: m={:.3} u={:.2e}", result.parameters.m[c][l], result.parameters.u[c][l])
                })
                .collect();
            lines.push(format!("  {} ({}): {}", comparison.column, comparison.kind.name(), cells.join("; ")));
        }
        for (rule, pairs) in result.blocking_rules.iter().zip(&result.rule_pairs) {
            let keys: Vec<String> = rule.iter().map(ToString::to_string).collect();
            lines.push(format!("  rule [{}]: {pairs} pairs", keys.join(", ")));
        }
        lines.push(format!(
            "time: blocking and comparing {:.3}s, estimating {:.3}s, scoring {:.3}s",
            result.timings.blocking_and_comparing, result.timings.estimating, result.timings.scoring
        ));
        let predicted = result
            .matches
            .iter()
            .map(|m| (left.ids[m.left as usize].clone(), r_ids[m.right as usize].clone()))
            .collect();
        let scores = result.matches.iter().map(|m| m.probability).collect();
        Predicted {
            matches: result.matches.len(),
            pairs_compared: result.candidates,
            pairs: predicted,
            scores,
            comparisons_per_second: None,
        }
    };
    if let Some(path) = &options.output {
        let mut w = csv::Writer::from_path(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        let err = |e: csv::Error| CliError::Input(format!("{}: {e}", path.display()));
        w.write_record(["left_id", "right_id", "score"]).map_err(err)?;
        for ((l, r), score) in predicted.pairs.iter().zip(&predicted.scores) {
            w.write_record([l.as_str(), r.as_str(), &format!("{score:.6}")]).map_err(err)?;
        }
        w.flush().map_err(|e| CliError::io(path, e))?;
    }
    let quality = match &options.truth {
        Some(path) => {
            let truth = read_truth(path)?;
            Some(evaluate(
                predicted.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())),
                truth.iter().map(|(a, b)| (a.as_str(), b.as_str())),
                right.is_none(),
            ))
        }
        None => None,
    };
    Ok(LinkReport {
        matches: predicted.matches,
        pairs_compared: predicted.pairs_compared,
        seconds: started.elapsed().as_secs_f64(),
        quality,
        comparisons_per_second: predicted.comparisons_per_second,
        lines,
    })
}
