//! Results as computations produce them, before the release gate.
//!
//! A computed report holds only aggregates, never rows, but it is still *unreleased*: each cell carries
//! the number of distinct individuals behind it, and nothing in it may leave the engine except
//! through [`crate::release_gate`]. Its types are crate-private so no other crate can see one.

use serde::{Deserialize, Serialize};

/// What kind of number a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A count of distinct individuals.
    Count,
    /// A ratio in [0, 1] (a match rate, a share).
    Ratio,
    /// Any other real number derived from counts (an affinity index, a lift, an interval bound).
    Number,
}

/// A metric (a column of numbers) of a report section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSpec {
    pub name: String,
    pub kind: MetricKind,
    /// What the number is; for ratios, which numerator and which denominator.
    pub description: String,
}

/// A cell's number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CellValue {
    Count(u64),
    /// A ratio or another real number (see the metric's kind).
    Real(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ComputedCell {
    pub value: CellValue,
    /// Distinct individuals this number is about (for ratios: the smaller of numerator and
    /// denominator). The release gate compares this with k.
    pub individuals: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ComputedRow {
    pub dimensions: Vec<String>,
    pub cells: Vec<ComputedCell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ComputedSection {
    pub name: String,
    pub description: String,
    pub dimensions: Vec<String>,
    pub metrics: Vec<MetricSpec>,
    pub rows: Vec<ComputedRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ComputedReport {
    pub computation: String,
    pub kind: String,
    pub run_id: String,
    pub computed_at: String,
    pub sections: Vec<ComputedSection>,
    /// The k the computation ran under (its own withholding and complementary suppression assume
    /// it); 0 in runs kept before contract versions existed. The gate refuses to release a run
    /// under another k.
    #[serde(default)]
    pub k: u32,
    /// The differential-privacy noise every count carries (rooms with `differential_privacy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<crate::dp::NoiseInfo>,
}

impl ComputedCell {
    pub(crate) fn count(value: u64, individuals: u64) -> Self {
        Self { value: CellValue::Count(value), individuals }
    }

    /// A real number about `individuals` individuals.
    pub(crate) fn number(value: f64, individuals: u64) -> Self {
        Self { value: CellValue::Real(value), individuals }
    }

    /// A ratio `numerator / denominator`, about `min(individuals)` individuals. A zero denominator
    /// gives 0 with no individuals, which the gate always suppresses.
    pub(crate) fn ratio(numerator: u64, denominator: u64, individuals: u64) -> Self {
        if denominator == 0 {
            return Self { value: CellValue::Real(0.0), individuals: 0 };
        }
        Self { value: CellValue::Real(numerator as f64 / denominator as f64), individuals }
    }
}
