//! Columns of text values to a numeric feature matrix.
//!
//! A column is **numeric** when every value present parses as a finite number, **categorical**
//! otherwise. Missing values are empty strings and the usual spellings (`?`, `NA`, `N/A`, `null`,
//! `NaN`, case-insensitive, after trimming).
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

use ndarray::Array2;
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

/// The fitted feature schema: what the model was trained on, exported with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub features: Vec<Feature>,
    /// Columns left out, and why.
    pub notes: Vec<String>,
}

impl FeatureSchema {
    /// Fits the schema on training columns.
    pub fn fit(columns: &[Column]) -> Result<Self, ModelError> {
        let mut features = Vec::new();
        let mut notes = Vec::new();
        for (name, values) in columns {
            let present_values: Vec<&str> = values.iter().filter_map(present).collect();
            let missing = present_values.len() < values.len();
            let mut distinct: Vec<&str> = present_values.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() < 2 {
                notes.push(if distinct.is_empty() {
                    format!("column '{name}' has no values: left out")
                } else {
                    format!("column '{name}' has a single value: left out (it cannot tell users apart)")
                });
                continue;
            }
            let parsed: Vec<Option<f64>> =
                present_values.iter().map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite())).collect();
            let numeric = parsed.iter().filter(|p| p.is_some()).count();
            // Mostly numbers with a few exceptions is garbage in a numeric column, not a category.
            if numeric < parsed.len() && numeric * 10 >= parsed.len() * 9 {
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
                    let levels = by_count.into_iter().take(MAX_LEVELS).map(|(l, _)| l.to_owned()).collect();
                    // `other` takes the pooled rare levels and levels first seen when scoring.
                    Encoding::Categorical { levels, other: true, missing }
                }
            };
            features.push(Feature { column: name.clone(), encoding });
        }
        if features.is_empty() {
            return Err(ModelError::Input(format!(
                "no usable feature: every column is constant or empty ({})",
                notes.join("; ")
            )));
        }
        Ok(Self { features, notes })
    }

    /// Names of the matrix's columns, in order.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.features {
            match &f.encoding {
                Encoding::Numeric { missing_indicator, .. } => {
                    out.push(f.column.clone());
                    if *missing_indicator {
                        out.push(format!("{}=missing", f.column));
                    }
                }
                Encoding::Categorical { levels, other, missing } => {
                    out.extend(levels.iter().map(|l| format!("{}={l}", f.column)));
                    if *other {
                        out.push(format!("{}=other", f.column));
                    }
                    if *missing {
                        out.push(format!("{}=missing", f.column));
                    }
                }
            }
        }
        out
    }

    pub fn width(&self) -> usize {
        self.names().len()
    }

    /// The feature matrix of `columns` (which must include every fitted column; extra columns are
    /// ignored). A numeric column whose value does not parse is an error naming the row.
    pub fn transform(&self, columns: &[Column]) -> Result<Array2<f64>, ModelError> {
        let rows = columns.first().map_or(0, |(_, v)| v.len());
        let mut x = Array2::<f64>::zeros((rows, self.width()));
        let mut at = 0;
        for f in &self.features {
            let values = &columns
                .iter()
                .find(|(n, _)| *n == f.column)
                .ok_or_else(|| ModelError::Input(format!("column '{}' is missing from the data", f.column)))?
                .1;
            if values.len() != rows {
                return Err(ModelError::Input(format!("column '{}' has {} rows, not {rows}", f.column, values.len())));
            }
            match &f.encoding {
                Encoding::Numeric { mean, std, missing_indicator } => {
                    for (r, v) in values.iter().enumerate() {
                        match present(v) {
                            Some(s) => {
                                let n = s.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| {
                                    ModelError::Input(format!(
                                        "column '{}' is numeric but row {r} (0-based) is not a number; fix the value \
                                         or leave it empty",
                                        f.column
                                    ))
                                })?;
                                x[[r, at]] = (n - mean) / std;
                            }
                            None if *missing_indicator => x[[r, at + 1]] = 1.0,
                            None => {}
                        }
                    }
                    at += 1 + usize::from(*missing_indicator);
                }
                Encoding::Categorical { levels, other, missing } => {
                    let index: std::collections::HashMap<&str, usize> =
                        levels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
                    let other_at = at + levels.len();
                    let missing_at = other_at + usize::from(*other);
                    for (r, v) in values.iter().enumerate() {
                        match present(v) {
                            Some(s) => match index.get(s) {
                                Some(i) => x[[r, at + i]] = 1.0,
                                None if *other => x[[r, other_at]] = 1.0,
                                None => {}
                            },
                            None if *missing => x[[r, missing_at]] = 1.0,
                            None => {}
                        }
                    }
                    at = missing_at + usize::from(*missing);
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
        assert_eq!(schema.names(), ["age", "age=missing", "job=a", "job=b", "job=other", "job=missing"]);
        assert_eq!(schema.notes, ["column 'country' has a single value: left out (it cannot tell users apart)"]);
        let x = schema.transform(&train).unwrap();
        // age: mean 40, std √(800/3).
        let std = (800.0f64 / 3.0).sqrt();
        assert!((x[[0, 0]] + 20.0 / std).abs() < 1e-12);
        assert_eq!(x.row(2).to_vec(), [0.0, 1.0, 1.0, 0.0, 0.0, 0.0], "missing age: mean and indicator");
        assert_eq!(x.row(3).to_vec()[2..], [0.0, 0.0, 0.0, 1.0]);
        // A level unseen in training goes to `other`.
        let test = vec![col("age", &["40"]), col("job", &["c"])];
        assert_eq!(schema.transform(&test).unwrap().row(0).to_vec(), [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
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
    }

    #[test]
    fn bad_input_is_named() {
        let schema = FeatureSchema::fit(&[col("age", &["1", "2"])]).unwrap();
        let err = schema.transform(&[col("age", &["1", "x"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column 'age' is numeric but row 1 (0-based) is not a number; fix the value or leave it empty"
        );
        assert!(schema.transform(&[col("other", &["1"])]).is_err());
        let err = FeatureSchema::fit(&[col("c", &["x", "x"]), col("e", &["", "?"])]).unwrap_err();
        assert!(err.to_string().starts_with("no usable feature"), "{err}");
    }
}
