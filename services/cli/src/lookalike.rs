//! `sealroom lookalike`: train a lookalike model on any CSV and evaluate it, offline — the models
//! the engine will train inside the enclave, measurable on public data.
//!
//! The last line printed is a JSON object with `auc`, `recall_at_10pct` and `train_seconds` (and
//! the model, the row counts, the feature count and the reach/precision curve).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sealroom_models::eval::{reach_precision, recall_at, roc_auc};
use sealroom_models::features::{Column, FeatureSchema};
use sealroom_models::model::{ModelKind, TrainOptions, train};
use sealroom_models::split::stratified;
use serde_json::json;

use crate::CliError;
use crate::link::read_columns;

/// What to train and evaluate.
#[derive(Debug, Clone)]
pub struct LookalikeOptions {
    pub data: PathBuf,
    pub test: Option<PathBuf>,
    pub label: String,
    pub positive: String,
    pub exclude: Vec<String>,
    pub model: ModelKind,
    pub test_fraction: f64,
    pub seed: u64,
    pub balanced: bool,
    /// The logistic L2 penalty (default: the library's).
    pub alpha: Option<f64>,
}

/// Splits off the label column: `true` where it equals `positive`. A missing label is an error.
fn labels(path: &Path, columns: &mut Vec<Column>, label: &str, positive: &str) -> Result<Vec<bool>, CliError> {
    let at = columns.iter().position(|(n, _)| n == label).ok_or_else(|| {
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        CliError::Input(format!("{}: no label column '{label}' (columns: {})", path.display(), names.join(", ")))
    })?;
    let (_, values) = columns.remove(at);
    values
        .iter()
        .enumerate()
        .map(|(row, v)| {
            v.as_deref().map(|v| v == positive).ok_or_else(|| {
                CliError::Input(format!(
                    "{} line {}: the label '{label}' is empty; every row needs one",
                    path.display(),
                    row + 2
                ))
            })
        })
        .collect()
}

fn select(columns: &[Column], rows: &[usize]) -> Vec<Column> {
    columns.iter().map(|(n, v)| (n.clone(), rows.iter().map(|r| v[*r].clone()).collect())).collect()
}

/// Trains, evaluates, prints the report; the JSON summary is returned and printed last.
pub fn run(o: &LookalikeOptions) -> Result<serde_json::Value, CliError> {
    let mut data = read_columns(&o.data, &o.exclude)?.columns;
    data.retain(|(n, _)| !o.exclude.contains(n));
    let y = labels(&o.data, &mut data, &o.label, &o.positive)?;
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 {
        return Err(CliError::Input(format!(
            "{}: no row has {} = '{}': the seed is empty (is --positive right?)",
            o.data.display(),
            o.label,
            o.positive
        )));
    }
    let (train_cols, train_y, test_cols, test_y) = match &o.test {
        Some(path) => {
            let mut test = read_columns(path, &[])?.columns;
            test.retain(|(n, _)| !o.exclude.contains(n));
            let test_y = labels(path, &mut test, &o.label, &o.positive)?;
            (data, y, test, test_y)
        }
        None => {
            if !(0.0..1.0).contains(&o.test_fraction) || o.test_fraction == 0.0 {
                return Err(CliError::Usage(format!(
                    "--test-fraction {} is not in (0, 1): give the share of rows held out, e.g. 0.3",
                    o.test_fraction
                )));
            }
            let (train_rows, test_rows) = stratified(&y, o.test_fraction, o.seed);
            let pick = |rows: &[usize]| rows.iter().map(|r| y[*r]).collect::<Vec<bool>>();
            (select(&data, &train_rows), pick(&train_rows), select(&data, &test_rows), pick(&test_rows))
        }
    };
    let schema = FeatureSchema::fit(&train_cols).map_err(|e| CliError::Input(e.to_string()))?;
    for note in &schema.notes {
        println!("note: {note}");
    }
    let x_train = schema.encode(&train_cols).map_err(|e| CliError::Input(format!("{}: {e}", o.data.display())))?;
    let test_name = o.test.as_deref().unwrap_or(&o.data).display().to_string();
    let x_test = schema.encode(&test_cols).map_err(|e| CliError::Input(format!("{test_name}: {e}")))?;
    let started = Instant::now();
    let mut options = TrainOptions { kind: o.model, balanced: o.balanced, ..TrainOptions::default() };
    options.forest.seed = o.seed;
    if let Some(alpha) = o.alpha {
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(CliError::Usage(format!("--alpha {alpha} is not a penalty: give a number ≥ 0, e.g. 10")));
        }
        options.logistic.alpha = alpha;
    }
    let model = train(&schema, x_train.view(), &train_y, &options).map_err(|e| CliError::Input(e.to_string()))?;
    let train_seconds = started.elapsed().as_secs_f64();
    let scores = model.scores(x_test.view()).map_err(|e| CliError::Input(format!("{test_name}: {e}")))?;
    let auc = roc_auc(&scores, &test_y).ok_or_else(|| {
        CliError::Input(format!("{test_name}: the test rows hold one class only, so AUC is undefined"))
    })?;
    let recall = recall_at(&scores, &test_y, 0.1).unwrap_or(0.0);
    let curve = reach_precision(&scores, &test_y, &[0.01, 0.05, 0.1, 0.2, 0.3, 0.5]);
    println!(
        "{} model on {} rows ({} seed), {} feature columns; evaluated on {} rows",
        o.model.name(),
        train_y.len(),
        train_y.iter().filter(|v| **v).count(),
        schema.features.len(),
        test_y.len()
    );
    println!(
        "ROC AUC {auc:.4}   recall at top 10% {recall:.4}   training {train_seconds:.3} s ({})",
        model.training_summary()
    );
    println!("audience  precision  recall");
    for p in &curve {
        println!("{:>7.0}%  {:>9.3}  {:>6.3}", p.audience_fraction * 100.0, p.precision, p.recall);
    }
    Ok(json!({
        "model": o.model.name(),
        "auc": auc,
        "recall_at_10pct": recall,
        "train_seconds": train_seconds,
        "training": model.training_summary(),
        "train_rows": train_y.len(),
        "test_rows": test_y.len(),
        "features": schema.features.len(),
        "curve": curve,
    }))
}
