//! Evaluation as AWS Clean Rooms ML and Decentriq report it: ROC AUC on held-out seed users,
//! recall at the top k% of the base, and the reach/precision curve (audience size against the
//! share of it that is seed).

use serde::Serialize;

/// ROC AUC: the probability that a random positive scores above a random negative (ties count
/// half), by the rank-sum (Mann–Whitney) formula with average ranks for ties. `None` with one
/// class only.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 || scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let average = (i + j + 2) as f64 / 2.0;
        rank_sum += average * order[i..=j].iter().filter(|k| labels[**k]).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Share of all positives found in the top `fraction` of rows by score (ties broken by row order).
pub fn recall_at(scores: &[f64], labels: &[bool], fraction: f64) -> Option<f64> {
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 || scores.len() != labels.len() {
        return None;
    }
    let top = ((scores.len() as f64) * fraction.clamp(0.0, 1.0)).ceil() as usize;
    Some(found_in_top(scores, labels)[top] as f64 / positives as f64)
}

/// Positives along the ranking (highest score first, ties by row order): element `i` is how many
/// of the first `i` ranked rows are positive, for `i` in `0..=scores.len()`.
pub fn found_in_top(scores: &[f64], labels: &[bool]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
    let mut found = Vec::with_capacity(order.len() + 1);
    found.push(0);
    let mut sum = 0;
    for i in order {
        sum += u64::from(labels[i]);
        found.push(sum);
    }
    found
}

/// One point of the reach/precision curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Share of the scored users in the audience (the top of the ranking).
    pub audience_fraction: f64,
    pub audience: usize,
    /// Share of the audience that is seed.
    pub precision: f64,
    /// Share of the seed in the audience.
    pub recall: f64,
}

/// The curve at each of `fractions` of the ranking.
pub fn reach_precision(scores: &[f64], labels: &[bool], fractions: &[f64]) -> Vec<CurvePoint> {
    let found_at = found_in_top(scores, labels);
    let positives = labels.iter().filter(|l| **l).count().max(1);
    fractions
        .iter()
        .map(|f| {
            let audience = ((scores.len() as f64) * f.clamp(0.0, 1.0)).ceil() as usize;
            let found = found_at[audience.min(scores.len())] as usize;
            CurvePoint {
                audience_fraction: *f,
                audience,
                precision: if audience == 0 { 0.0 } else { found as f64 / audience as f64 },
                recall: found as f64 / positives as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn auc_recall_and_curve_on_a_small_example() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let labels = [true, false, true, false, false, true];
        // Pairs (positive, negative) ordered right: 0>1,0>3,0>4, 2>3,2>4, 5: none → 5 of 9.
        assert!((roc_auc(&scores, &labels).unwrap() - 5.0 / 9.0).abs() < 1e-12);
        assert_eq!(recall_at(&scores, &labels, 0.5), Some(2.0 / 3.0));
        let curve = reach_precision(&scores, &labels, &[0.5, 1.0]);
        assert_eq!(curve[0].audience, 3);
        assert!((curve[0].precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(curve[1].recall, 1.0);
        assert_eq!(roc_auc(&scores, &[true; 6]), None);
        // Ties count half: all scores equal gives 0.5.
        assert_eq!(roc_auc(&[1.0; 4], &[true, false, true, false]), Some(0.5));
    }

    proptest! {
        /// The rank formula agrees with counting pairs.
        #[test]
        fn auc_agrees_with_pair_counting(rows in proptest::collection::vec((0u8..10, any::<bool>()), 2..60)) {
            let scores: Vec<f64> = rows.iter().map(|r| f64::from(r.0)).collect();
            let labels: Vec<bool> = rows.iter().map(|r| r.1).collect();
            let mut good = 0.0;
            let mut pairs = 0.0;
            for (i, a) in rows.iter().enumerate() {
                for (j, b) in rows.iter().enumerate() {
                    if a.1 && !b.1 {
                        pairs += 1.0;
                        good += if scores[i] > scores[j] { 1.0 } else if scores[i] == scores[j] { 0.5 } else { 0.0 };
                    }
                }
            }
            match roc_auc(&scores, &labels) {
                Some(auc) => prop_assert!((auc - good / pairs).abs() < 1e-9),
                None => prop_assert!(pairs == 0.0),
            }
        }
    }
}
