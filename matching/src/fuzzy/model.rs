//! The Fellegi–Sunter model: u probabilities from random pairs, m probabilities by expectation
//! maximisation on blocked pairs (one run per training rule, leaving out the comparisons the rule
//! forces to agree, as Splink does), the prior from the EM runs, and match weights.

use std::collections::HashMap;

use super::compare::NULL_LEVEL;

/// Bits per comparison in a pattern.
pub(crate) const BITS: u32 = 4;

pub(crate) fn level(pattern: u64, c: usize) -> u8 {
    ((pattern >> (BITS as usize * c)) & 0xF) as u8
}

/// Parameters of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    /// `m[c][l]`: probability of level `l` of comparison `c` among matches (the last level is "else").
    pub m: Vec<Vec<f64>>,
    /// `u[c][l]`: the same among non-matches.
    pub u: Vec<Vec<f64>>,
    /// Probability that two random records match.
    pub lambda: f64,
}

/// Initial m probabilities: most mass on the first level, decreasing.
pub(crate) fn initial_m(levels: usize) -> Vec<f64> {
    let mut m: Vec<f64> = (0..levels).map(|l| if l == 0 { 0.7 } else { 0.3 / (levels - 1).max(1) as f64 }).collect();
    if levels == 1 {
        m[0] = 1.0;
    }
    m
}

/// u from level counts of random pairs, with a half-count floor so no level has u = 0.
pub(crate) fn u_from_counts(counts: &[u64]) -> Vec<f64> {
    let total: f64 = counts.iter().map(|c| *c as f64).sum::<f64>() + 0.5 * counts.len() as f64;
    counts.iter().map(|c| (*c as f64 + 0.5) / total).collect()
}

/// Comparison patterns and how often each occurs.
pub(crate) type Patterns = Vec<(u64, f64)>;

/// What an EM run fits: the patterns, the level count of each comparison, which comparisons take
/// part, and the fixed u probabilities.
pub(crate) struct EmProblem<'a> {
    pub patterns: &'a [(u64, f64)],
    pub levels: &'a [usize],
    pub active: &'a [bool],
    pub u: &'a [Vec<f64>],
    pub max_iterations: usize,
    pub tolerance: f64,
}

/// One EM run from the starting m and λ. Returns the m probabilities of the active comparisons
/// (others untouched) and the proportion of matches among the patterns.
pub(crate) fn em(problem: &EmProblem<'_>, mut m: Vec<Vec<f64>>, mut lambda: f64) -> (Vec<Vec<f64>>, f64) {
    let EmProblem { patterns, levels, active, u, max_iterations, tolerance } = *problem;
    let total: f64 = patterns.iter().map(|(_, n)| n).sum();
    if total == 0.0 {
        return (m, lambda);
    }
    for _ in 0..max_iterations {
        let mut m_num: Vec<Vec<f64>> = levels.iter().map(|l| vec![0.0; *l]).collect();
        let mut m_den: Vec<f64> = vec![0.0; levels.len()];
        let mut matches = 0.0;
        for (pattern, n) in patterns {
            let (mut lm, mut lu) = (lambda.ln(), (1.0 - lambda).ln());
            for c in 0..levels.len() {
                let l = level(*pattern, c);
                if !active[c] || l == NULL_LEVEL {
                    continue;
                }
                lm += m[c][l as usize].max(1e-12).ln();
                lu += u[c][l as usize].max(1e-12).ln();
            }
            let w = 1.0 / (1.0 + (lu - lm).exp());
            let wn = w * n;
            matches += wn;
            for c in 0..levels.len() {
                let l = level(*pattern, c);
                if !active[c] || l == NULL_LEVEL {
                    continue;
                }
                m_num[c][l as usize] += wn;
                m_den[c] += wn;
            }
        }
        let mut change: f64 = 0.0;
        for c in 0..levels.len() {
            if !active[c] || m_den[c] <= 0.0 {
                continue;
            }
            for l in 0..levels[c] {
                // A small floor keeps every level possible among matches.
                let new = ((m_num[c][l] / m_den[c]) * (1.0 - 1e-6 * levels[c] as f64) + 1e-6).clamp(1e-9, 1.0);
                change = change.max((new - m[c][l]).abs());
                m[c][l] = new;
            }
        }
        lambda = (matches / total).clamp(1e-12, 1.0 - 1e-12);
        if change < tolerance {
            break;
        }
    }
    (m, lambda)
}

/// Posterior probability that a pattern is a match under the active comparisons.
#[allow(clippy::needless_range_loop)]
fn posterior(problem: &EmProblem<'_>, m: &[Vec<f64>], lambda: f64, pattern: u64) -> f64 {
    let (mut lm, mut lu) = (lambda.ln(), (1.0 - lambda).ln());
    for c in 0..problem.levels.len() {
        let l = level(pattern, c);
        if !problem.active[c] || l == NULL_LEVEL {
            continue;
        }
        lm += m[c][l as usize].max(1e-12).ln();
        lu += problem.u[c][l as usize].max(1e-12).ln();
    }
    1.0 / (1.0 + (lu - lm).exp())
}

/// m probabilities of the `passive` comparisons: their level frequencies among the patterns,
/// weighted by the posterior match probability of the fitted model (one M-step, no feedback).
#[allow(clippy::needless_range_loop)]
pub(crate) fn posterior_m(problem: &EmProblem<'_>, m: &mut [Vec<f64>], lambda: f64, passive: &[bool]) {
    if !passive.iter().any(|p| *p) {
        return;
    }
    let mut num: Vec<Vec<f64>> = problem.levels.iter().map(|l| vec![0.0; *l]).collect();
    let mut den = vec![0.0; problem.levels.len()];
    for (pattern, n) in problem.patterns {
        let w = posterior(problem, m, lambda, *pattern) * n;
        for c in 0..problem.levels.len() {
            let l = level(*pattern, c);
            if passive[c] && l != NULL_LEVEL {
                num[c][l as usize] += w;
                den[c] += w;
            }
        }
    }
    for c in 0..problem.levels.len() {
        if passive[c] && den[c] > 0.0 {
            for l in 0..problem.levels[c] {
                m[c][l] = ((num[c][l] / den[c]) * (1.0 - 1e-6 * problem.levels[c] as f64) + 1e-6).clamp(1e-9, 1.0);
            }
        }
    }
}

/// Counts of patterns: all candidates, and per training rule.
pub(crate) fn pattern_counts(candidates: &[(u32, u32, u64, u16)], rules: usize) -> (Patterns, Vec<Patterns>) {
    let mut all: HashMap<u64, f64> = HashMap::new();
    let mut per_rule: Vec<HashMap<u64, f64>> = vec![HashMap::new(); rules];
    for (_, _, p, mask) in candidates {
        *all.entry(*p).or_default() += 1.0;
        for (r, counts) in per_rule.iter_mut().enumerate() {
            if mask & (1 << r) != 0 {
                *counts.entry(*p).or_default() += 1.0;
            }
        }
    }
    (all.into_iter().collect(), per_rule.into_iter().map(|m| m.into_iter().collect()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EM recovers m from a synthetic mixture with known parameters.
    #[test]
    fn em_recovers_known_parameters() {
        // Two comparisons with two levels (agree, else).
        let (m_true, u) = ([0.9, 0.8], vec![vec![0.05, 0.95], vec![0.1, 0.9]]);
        let lambda_true = 0.2;
        let mut patterns = HashMap::new();
        for (a, b) in [(0u64, 0u64), (0, 1), (1, 0), (1, 1)] {
            let pm =
                (if a == 0 { m_true[0] } else { 1.0 - m_true[0] }) * (if b == 0 { m_true[1] } else { 1.0 - m_true[1] });
            let pu = u[0][a as usize] * u[1][b as usize];
            *patterns.entry(a | (b << BITS)).or_insert(0.0) +=
                100_000.0 * (lambda_true * pm + (1.0 - lambda_true) * pu);
        }
        let patterns: Vec<(u64, f64)> = patterns.into_iter().collect();
        let problem = EmProblem {
            patterns: &patterns,
            levels: &[2, 2],
            active: &[true, true],
            u: &u,
            max_iterations: 500,
            tolerance: 1e-10,
        };
        let (m, lambda) = em(&problem, vec![initial_m(2), initial_m(2)], 0.5);
        assert!((lambda - lambda_true).abs() < 0.01, "lambda {lambda}");
        assert!((m[0][0] - 0.9).abs() < 0.02, "m {m:?}");
        assert!((m[1][0] - 0.8).abs() < 0.02, "m {m:?}");
    }

    #[test]
    fn u_has_no_zero() {
        let u = u_from_counts(&[0, 10, 990]);
        assert!(u.iter().all(|x| *x > 0.0));
        assert!((u.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
