//! Linkage quality against ground truth: precision, recall and F1 over record pairs.

use std::collections::HashSet;

/// Pairwise quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

fn ordered<'a>(a: &'a str, b: &'a str, symmetric: bool) -> (&'a str, &'a str) {
    if symmetric && b < a { (b, a) } else { (a, b) }
}

/// Compares predicted pairs with true pairs. With `symmetric` (deduplication), `(a, b)` and `(b, a)`
/// are the same pair.
pub fn evaluate<'a>(
    predicted: impl IntoIterator<Item = (&'a str, &'a str)>,
    truth: impl IntoIterator<Item = (&'a str, &'a str)>,
    symmetric: bool,
) -> Quality {
    let truth: HashSet<(&str, &str)> =
        truth.into_iter().map(|(a, b)| ordered(a, b, symmetric)).filter(|(a, b)| a != b).collect();
    let predicted: HashSet<(&str, &str)> = predicted.into_iter().map(|(a, b)| ordered(a, b, symmetric)).collect();
    let tp = predicted.intersection(&truth).count() as u64;
    let fp = predicted.len() as u64 - tp;
    let fn_ = truth.len() as u64 - tp;
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    let recall = if tp + fn_ == 0 { 0.0 } else { tp as f64 / (tp + fn_) as f64 };
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    Quality { true_positives: tp, false_positives: fp, false_negatives: fn_, precision, recall, f1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_scores() {
        let truth = [("a", "b"), ("c", "d"), ("e", "f")];
        let predicted = [("b", "a"), ("c", "d"), ("x", "y")];
        let q = evaluate(predicted, truth, true);
        assert_eq!((q.true_positives, q.false_positives, q.false_negatives), (2, 1, 1));
        assert!((q.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((q.f1 - 2.0 / 3.0).abs() < 1e-12);
        // Linking two files: direction matters.
        let q = evaluate([("b", "a")], [("a", "b")], false);
        assert_eq!(q.true_positives, 0);
    }
}
