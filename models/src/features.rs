//! Columns of text values to a compact numeric matrix, and the fitted schema that says how
//! ([`FeatureSchema::encode`]: a number as it is, a category as its level index, NaN for missing).
//! Each model expands the compact matrix as it needs: logistic regression as below, the boosted
//! forest into bins (categories stay one feature each, with their own splits).
//!
//! A column is **numeric** when every value present parses as a finite number, **categorical**
//! otherwise. Missing values are empty strings and the usual spellings (`?`, `NA`, `N/A`, `null`,
//! `NaN`, case-insensitive, after trimming).
//!
//! For logistic regression:
//!
//! - Numeric: standardized with the training mean and standard deviation; a missing value becomes
//!   the mean (0 after standardizing) and, when the column has missing values in training, an
//!   indicator feature `<column>=missing` says so.
//! - Categorical: one-hot over the [`MAX_LEVELS`] most frequent training levels (ties by name);
//!   other levels, and levels first seen at scoring time, go to `<column>=other`; missing values to
//!   `<column>=missing`.
//! - A column with a single value (or none) in training carries no information: it is left out and
//!   [`FeatureSchema::notes`] says so.
//!
//! The schema is fitted on training data only and then applied unchanged to test or scoring data,
//! so nothing about the test set leaks into the features.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Most one-hot levels per categorical column.
pub const MAX_LEVELS: usize = 64;

/// A column of raw values (`None`: missing).
pub type Column = (String, Vec<Option<String>>);

fn is_missing(v: &str) -> bool {
    let t = v.trim();
    t.is_empty() || ["?", "na", "n/a", "null", "nan"].iter().any(|m| t.eq_ignore_ascii_case(m))
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !is_missing(s)).map(str::trim)
}

/// How one input column becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Encoding {
    Numeric { mean: f64, std: f64, missing_indicator: bool },
    Categorical { levels: Vec<String>, other: bool, missing: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub column: String,
    pub encoding: Encoding,
}

/// How [`FeatureSchema::fit_with`] fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitOptions {
    /// A category level held by fewer training rows goes to `other` (so a released schema names
    /// no value that fewer than this many users hold). 1: every level may be named.
    pub min_level_count: usize,
    /// A column whose values are mostly numbers with a few that are not is an error (garbage in a
    /// numeric column). `false`: such a column is a category.
    pub strict_numbers: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { min_level_count: 1, strict_numbers: true }
    }
}

/// The fitted feature schema: what the model was trained on, exported with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub features: Vec<Feature>,
    /// Columns left out, and why.
    pub notes: Vec<String>,
}

impl FeatureSchema {
    /// Fits the schema on training columns; an error when no column is usable.
    pub fn fit(columns: &[Column]) -> Result<Self, ModelError> {
        let schema = Self::fit_with(columns, &FitOptions::default())?;
        if schema.features.is_empty() {
            return Err(ModelError::Input(format!(
                "no usable feature: every column is constant or empty ({})",
                schema.notes.join("; ")
            )));
        }
        Ok(schema)
    }

    /// Fits the schema on training columns with options; the schema may have no feature (every
    /// column left out, [`Self::notes`] says why).
    pub fn fit_with(columns: &[Column], options: &FitOptions) -> Result<Self, ModelError> {
        let mut features = Vec::new();
        let mut notes = Vec::new();
        for (name, values) in columns {
            let present_values: Vec<&str> = values.iter().filter_map(present).collect();
            let missing = present_values.len() < values.len();
            // Fewer than two distinct values: one scan, no sort.
            let Some(first) = present_values.first() else {
                notes.push(format!("column '{name}' has no values: left out"));
                continue;
            };
            if present_values.iter().all(|v| v == first) {
                notes.push(format!("column '{name}' has a single value: left out (it cannot tell users apart)"));
                continue;
            }
            let parsed: Vec<Option<f64>> =
                present_values.iter().map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite())).collect();
            let numeric = parsed.iter().filter(|p| p.is_some()).count();
            // Mostly numbers with a few exceptions is garbage in a numeric column, not a category.
            if options.strict_numbers && numeric < parsed.len() && numeric * 10 >= parsed.len() * 9 {
                let row = values
                    .iter()
                    .position(|v| present(v).is_some_and(|s| s.parse::<f64>().ok().filter(|x| x.is_finite()).is_none()))
                    .unwrap_or(0);
                return Err(ModelError::Input(format!(
                    "column '{name}' is numeric but row {row} (0-based) is not a number; fix the value or leave it empty"
                )));
            }
            let numbers: Option<Vec<f64>> = parsed.into_iter().collect();
            let encoding = match numbers {
                Some(xs) => {
                    let n = xs.len() as f64;
                    let mean = xs.iter().sum::<f64>() / n;
                    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
                    Encoding::Numeric { mean, std: var.sqrt().max(1e-12), missing_indicator: missing }
                }
                None => {
                    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
                    for v in &present_values {
                        *counts.entry(v).or_default() += 1;
                    }
                    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
                    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                    let levels: Vec<String> = by_count
                        .into_iter()
                        .filter(|(_, n)| *n >= options.min_level_count)
                        .take(MAX_LEVELS)
                        .map(|(l, _)| l.to_owned())
                        .collect();
                    if levels.is_empty() && !missing {
                        notes.push(format!(
                            "column '{name}': no value is held by {} or more users: left out",
                            options.min_level_count
                        ));
                        continue;
                    }
                    // `other` takes the pooled rare levels and levels first seen when scoring.
                    Encoding::Categorical { levels, other: true, missing }
                }
            };
            features.push(Feature { column: name.clone(), encoding });
        }
        Ok(Self { features, notes })
    }

    /// Fails unless the compact matrix `x` has one column per fitted feature.
    pub fn check_width(&self, x: ArrayView2<'_, f64>) -> Result<(), ModelError> {
        if x.ncols() == self.features.len() {
            return Ok(());
        }
        Err(ModelError::Input(format!("{} columns given for a schema of {} features", x.ncols(), self.features.len())))
    }

    /// Fits a schema for numeric columns given as a matrix (one column per name; NaN missing):
    /// for data that never was text, such as the scale benchmark's. Constant columns are refused.
    pub fn numeric(names: &[String], x: ArrayView2<'_, f64>) -> Result<Self, ModelError> {
        if names.len() != x.ncols() {
            return Err(ModelError::Input(format!("{} names for {} columns", names.len(), x.ncols())));
        }
        let mut features = Vec::with_capacity(names.len());
        for (name, column) in names.iter().zip(x.columns()) {
            let (mut n, mut sum, mut sum_sq) = (0usize, 0.0f64, 0.0f64);
            for v in column.iter().filter(|v| !v.is_nan()) {
                n += 1;
                sum += v;
                sum_sq += v * v;
            }
            if n == 0 {
                return Err(ModelError::Input(format!("column '{name}' has no values")));
            }
            let mean = sum / n as f64;
            let var = (sum_sq / n as f64 - mean * mean).max(0.0);
            if var == 0.0 {
                return Err(ModelError::Input(format!(
                    "column '{name}' has a single value: it cannot tell users apart"
                )));
            }
            let encoding = Encoding::Numeric { mean, std: var.sqrt(), missing_indicator: n < column.len() };
            features.push(Feature { column: name.clone(), encoding });
        }
        Ok(Self { features, notes: Vec::new() })
    }

    /// The compact matrix of `columns`, one column per fitted feature (which `columns` must all
    /// include; extra columns are ignored): a numeric column's value as it is, a categorical
    /// column's level index (`levels.len()` for `other`), and NaN for a missing value. Models
    /// expand it as they need ([`crate::logistic`] one-hot, [`crate::forest`] bins). A numeric
    /// column whose value does not parse is an error naming the row.
    pub fn encode(&self, columns: &[Column]) -> Result<Array2<f64>, ModelError> {
        let rows = columns.first().map_or(0, |(_, v)| v.len());
        let mut x = Array2::<f64>::from_elem((rows, self.features.len()), f64::NAN);
        for (at, f) in self.features.iter().enumerate() {
            let values = &columns
                .iter()
                .find(|(n, _)| *n == f.column)
                .ok_or_else(|| ModelError::Input(format!("column '{}' is missing from the data", f.column)))?
                .1;
            if values.len() != rows {
                return Err(ModelError::Input(format!("column '{}' has {} rows, not {rows}", f.column, values.len())));
            }
            match &f.encoding {
                Encoding::Numeric { .. } => {
                    for (r, v) in values.iter().enumerate() {
                        if let Some(s) = present(v) {
                            x[[r, at]] = s.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| {
                                ModelError::Input(format!(
                                    "column '{}' is numeric but row {r} (0-based) is not a number; fix the value or \
                                     leave it empty",
                                    f.column
                                ))
                            })?;
                        }
                    }
                }
                Encoding::Categorical { levels, .. } => {
                    let index: std::collections::HashMap<&str, usize> =
                        levels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
                    for (r, v) in values.iter().enumerate() {
                        if let Some(s) = present(v) {
                            x[[r, at]] = index.get(s).copied().unwrap_or(levels.len()) as f64;
                        }
                    }
                }
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, values: &[&str]) -> Column {
        (name.to_owned(), values.iter().map(|v| Some((*v).to_owned())).collect())
    }

    #[test]
    fn numeric_and_categorical_columns_are_detected_and_encoded() {
        let train = vec![
            col("age", &["20", "40", "?", "60"]),
            col("job", &["a", "b", "a", ""]),
            col("country", &["us", "us", "us", "us"]),
        ];
        let schema = FeatureSchema::fit(&train).unwrap();
        assert_eq!(schema.features.len(), 2);
        assert_eq!(schema.notes, ["column 'country' has a single value: left out (it cannot tell users apart)"]);
        let x = schema.encode(&train).unwrap();
        // Numbers as they are, levels by index (most frequent first), NaN for missing.
        assert_eq!(x[[0, 0]], 20.0);
        assert!(x[[2, 0]].is_nan());
        assert_eq!(x.column(1).iter().take(3).copied().collect::<Vec<_>>(), [0.0, 1.0, 0.0]);
        assert!(x[[3, 1]].is_nan());
        // age: mean 40, std √(800/3).
        let Encoding::Numeric { mean, std, missing_indicator } = schema.features[0].encoding else { panic!() };
        assert_eq!((mean, missing_indicator), (40.0, true));
        assert!((std - (800.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // A level unseen in training is `other` (index = number of levels).
        let test = vec![col("age", &["40"]), col("job", &["c"])];
        assert_eq!(schema.encode(&test).unwrap().row(0).to_vec(), [40.0, 2.0]);
    }

    #[test]
    fn garbage_in_a_numeric_column_is_an_error_not_a_category() {
        let mut values: Vec<&str> = vec!["1"; 20];
        values[13] = "abc";
        let err = FeatureSchema::fit(&[col("age", &values)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column 'age' is numeric but row 13 (0-based) is not a number; fix the value or leave it empty"
        );
        // Half numbers, half words: a categorical column (postcodes, codes).
        let schema = FeatureSchema::fit(&[col("code", &["1", "a", "2", "b"])]).unwrap();
        assert!(matches!(schema.features[0].encoding, Encoding::Categorical { .. }));
        // Not strict (typed text columns in the engine): the same column is a category.
        let lenient = FitOptions { strict_numbers: false, ..FitOptions::default() };
        let schema = FeatureSchema::fit_with(&[col("age", &values)], &lenient).unwrap();
        assert!(matches!(schema.features[0].encoding, Encoding::Categorical { .. }));
    }

    #[test]
    fn rare_levels_are_pooled_under_a_minimum_count() {
        let values = ["a", "a", "a", "b", "b", "b", "c", "d"];
        let options = FitOptions { min_level_count: 3, ..FitOptions::default() };
        let schema = FeatureSchema::fit_with(&[col("job", &values)], &options).unwrap();
        let Encoding::Categorical { levels, .. } = &schema.features[0].encoding else { panic!() };
        assert_eq!(levels, &["a", "b"], "c and d (one user each) are never named");
        // No level reaches the minimum: the column is left out, with a note; no error from fit_with.
        let strict = FitOptions { min_level_count: 4, ..FitOptions::default() };
        let schema = FeatureSchema::fit_with(&[col("job", &values)], &strict).unwrap();
        assert!(schema.features.is_empty());
        assert_eq!(schema.notes, ["column 'job': no value is held by 4 or more users: left out"]);
        assert!(
            FeatureSchema::fit(&[col("job", &["x", "x"])]).unwrap_err().to_string().starts_with("no usable feature")
        );
    }

    #[test]
    fn bad_input_is_named() {
        let schema = FeatureSchema::fit(&[col("age", &["1", "2"])]).unwrap();
        let err = schema.encode(&[col("age", &["1", "x"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column 'age' is numeric but row 1 (0-based) is not a number; fix the value or leave it empty"
        );
        assert!(schema.encode(&[col("other", &["1"])]).is_err());
        let x = ndarray::array![[1.0, 5.0], [2.0, 5.0]];
        let err = FeatureSchema::numeric(&["a".into(), "b".into()], x.view()).unwrap_err();
        assert_eq!(err.to_string(), "column 'b' has a single value: it cannot tell users apart");
        let err = FeatureSchema::fit(&[col("c", &["x", "x"]), col("e", &["", "?"])]).unwrap_err();
        assert!(err.to_string().starts_with("no usable feature"), "{err}");
    }
}
