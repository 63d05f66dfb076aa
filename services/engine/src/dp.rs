//! Differential privacy: exact discrete Laplace noise and the per-participant ε budget.
//!
//! **Noise.** A count with L1 sensitivity Δ (the most one person can change it, after the
//! computation's contribution bounds) released as `count + Z`, with `P(Z = z) ∝ exp(−ε·|z| / Δ)`, is
//! ε-differentially private; a vector of counts whose *total* L1 sensitivity is Δ gets independent
//! noise of that scale on every coordinate. Samples are exact: the algorithm of Canonne, Kamath and
//! Steinke ("The Discrete Gaussian for Differential Privacy", 2020, algorithms 1 and 2) uses only
//! uniform integers (drawn by rejection, so unbiased) from a ChaCha generator seeded by the operating
//! system, never floating point, so the floating-point attacks on textbook Laplace samplers
//! (Mironov 2012) do not apply. ε is kept in millionths (micro-ε), so the scale `Δ / ε` is the
//! rational `Δ·10⁶ / ε_micro`.
//!
//! **Budget.** Each run spends the room's `epsilon_per_run` for *every* participant the result goes
//! to (a result read by two parties tells each of them the same thing; repeated reads of one run
//! tell nothing new, so reads are free). The ledger (`state/_privacy_budget.json`) is charged and
//! written to disk *before* the computation runs, once its inputs are known to be uploaded, so a
//! crash never gives a run back for free; a run that fails after that is not refunded (whether it
//! fails could depend on the data). A run that would take any recipient past
//! `budget_per_participant` is refused, naming who has spent what.
//!
//! **Listing.** Which segments exist is data too: a person can bring segments no one else has.
//! A segment is listed only when its noisy count reaches [`Noise::listing_threshold`], `1 + b·ln(c/δ)`
//! for a person who can bring `c` new segments, so that such a segment is listed with probability
//! at most δ = 10⁻⁶ in all: the release is (ε, δ)-differentially private.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::seal::Sealer;

/// Micro-ε per ε.
pub(crate) const MICRO: u64 = 1_000_000;

/// The δ of (ε, δ): the probability that the rows one person brings are listed at all.
pub(crate) const DELTA: f64 = 1e-6;

/// A source of uniform integers for the samplers.
pub(crate) struct Randomness(rand_chacha::ChaCha20Rng);

impl Randomness {
    /// Seeded from the operating system (the only source used for released noise).
    pub(crate) fn from_os() -> Self {
        Self(rand_chacha::ChaCha20Rng::from_os_rng())
    }

    /// A fixed seed, for tests of the distribution only.
    #[cfg(test)]
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(rand_chacha::ChaCha20Rng::seed_from_u64(seed))
    }

    /// Uniform in `0..n` (`n ≥ 1`), by rejection: exactly uniform.
    fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        // The largest multiple of n that fits: values at or above it are redrawn.
        let zone = u64::MAX - (u64::MAX % n + 1) % n;
        loop {
            let v = self.0.next_u64();
            if v <= zone || zone == u64::MAX {
                return v % n;
            }
        }
    }

    /// Bernoulli(num / den), `num ≤ den`.
    fn bernoulli(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// Bernoulli(exp(−num/den)) (CKS algorithm 1).
    fn bernoulli_exp(&mut self, num: u64, den: u64) -> bool {
        let whole = num / den;
        for _ in 0..whole {
            if !self.bernoulli_exp_fraction(1, 1) {
                return false;
            }
        }
        self.bernoulli_exp_fraction(num % den, den)
    }

    /// Bernoulli(exp(−γ)) for γ = num/den in [0, 1].
    fn bernoulli_exp_fraction(&mut self, num: u64, den: u64) -> bool {
        let mut k: u64 = 1;
        loop {
            // Bernoulli(γ / k); den·k cannot overflow for the scales used (den ≤ 10¹²).
            if !self.bernoulli(num, den.saturating_mul(k)) {
                return k % 2 == 1;
            }
            k += 1;
        }
    }

    /// Discrete Laplace with scale `t / s`: `P(x) ∝ exp(−|x|·s/t)` (CKS algorithm 2).
    fn discrete_laplace(&mut self, t: u64, s: u64) -> i64 {
        let (t, s) = (t.max(1), s.max(1));
        loop {
            let u = self.below(t);
            if !self.bernoulli_exp(u, t) {
                continue;
            }
            let mut v: u64 = 0;
            while self.bernoulli_exp(1, 1) {
                v += 1;
            }
            let x = u.saturating_add(t.saturating_mul(v));
            let y = i64::try_from(x / s).unwrap_or(i64::MAX);
            let negative = self.bernoulli(1, 2);
            if negative && y == 0 {
                continue;
            }
            return if negative { -y } else { y };
        }
    }
}

/// The noise of one computation run: discrete Laplace of scale `sensitivity / ε` on every count.
pub(crate) struct Noise {
    randomness: Randomness,
    epsilon_micro: u64,
    sensitivity: u64,
}

impl Noise {
    pub(crate) fn new(randomness: Randomness, epsilon_micro: u64, sensitivity: u64) -> Self {
        Self { randomness, epsilon_micro: epsilon_micro.max(1), sensitivity: sensitivity.max(1) }
    }

    /// Noise spending `epsilon_micro` (a run's ε, or a share of it) on counts whose total L1
    /// sensitivity is `sensitivity`, from fresh OS randomness: what every release uses.
    pub(crate) fn from_os(epsilon_micro: u64, sensitivity: u64) -> Self {
        Self::new(Randomness::from_os(), epsilon_micro, sensitivity)
    }

    /// The scale `b = Δ / ε` (the noise's standard deviation is about `b·√2`).
    pub(crate) fn scale(&self) -> f64 {
        self.sensitivity as f64 * MICRO as f64 / self.epsilon_micro as f64
    }

    /// The smallest noisy count at which a row whose existence is itself data (a segment) is
    /// listed, when one person can bring up to `new_rows` such rows: `1 + b·ln(new_rows / δ)`, so
    /// that one person's rows are listed with probability at most [`DELTA`] in all.
    pub(crate) fn listing_threshold(&self, new_rows: usize) -> u64 {
        (1.0 + self.scale() * (new_rows.max(1) as f64 / DELTA).ln()).ceil() as u64
    }

    /// The variance of one noise draw: `2·e^(−1/b) / (1 − e^(−1/b))²`.
    pub(crate) fn variance(&self) -> f64 {
        let q = (-1.0 / self.scale()).exp();
        2.0 * q / ((1.0 - q) * (1.0 - q))
    }

    pub(crate) fn sensitivity(&self) -> u64 {
        self.sensitivity
    }

    pub(crate) fn epsilon(&self) -> f64 {
        self.epsilon_micro as f64 / MICRO as f64
    }

    /// `count + Z`, clamped at 0 (post-processing, which costs no privacy).
    pub(crate) fn count(&mut self, count: u64) -> u64 {
        let z = self.randomness.discrete_laplace(self.sensitivity.saturating_mul(MICRO), self.epsilon_micro);
        let noisy = i128::from(count) + i128::from(z);
        u64::try_from(noisy.max(0)).unwrap_or(u64::MAX)
    }
}

/// What the released report says about its noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NoiseInfo {
    pub mechanism: String,
    pub epsilon: f64,
    /// Total L1 sensitivity of the noised counts (what one person can change, summed).
    pub sensitivity: u64,
    /// Scale of the discrete Laplace noise on every count.
    pub scale: f64,
    pub standard_deviation: f64,
    /// The segment cap (overlap and affinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_segments_per_person: Option<u64>,
    /// δ of the (ε, δ) guarantee (from listing segments or campaigns).
    pub delta: f64,
    /// Noisy count a segment (or campaign) needs to be listed.
    pub listing_threshold: u64,
    /// Measurement: the noise on impressions (sums), which spends its own share of ε.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums: Option<SumNoise>,
}

/// The noise on sums (measurement's impressions) and their clamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SumNoise {
    pub epsilon: f64,
    pub sensitivity: u64,
    pub scale: f64,
    pub standard_deviation: f64,
    pub max_campaigns_per_person: u64,
    pub max_impressions_per_person: u64,
}

impl NoiseInfo {
    pub(crate) fn of(noise: &Noise, max_segments_per_person: Option<usize>, listing_threshold: u64) -> Self {
        Self {
            mechanism: "discrete Laplace (two-sided geometric) on every count; ratios and indices are computed from \
                        the noisy counts"
                .into(),
            epsilon: noise.epsilon(),
            sensitivity: noise.sensitivity(),
            scale: noise.scale(),
            standard_deviation: noise.variance().sqrt(),
            max_segments_per_person: max_segments_per_person.map(|c| c as u64),
            delta: DELTA,
            listing_threshold,
            sums: None,
        }
    }
}

/// The ε spent so far, per participant, in micro-ε.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ledger {
    pub spent_micro: BTreeMap<String, u64>,
}

/// The room's budget ledger on disk. Callers serialize access (one lock per room).
#[derive(Debug)]
pub(crate) struct BudgetLedger {
    path: PathBuf,
    sealer: Sealer,
    budget_micro: u64,
}

/// One participant's budget, as the room view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub epsilon_per_run: f64,
    pub budget: f64,
    pub spent: f64,
    pub remaining: f64,
    pub runs_left: u64,
}

fn epsilon(micro: u64) -> f64 {
    micro as f64 / MICRO as f64
}

impl BudgetLedger {
    pub(crate) fn new(path: PathBuf, sealer: Sealer, budget_micro: u64) -> Self {
        Self { path, sealer, budget_micro }
    }

    pub(crate) fn load(&self) -> Result<Ledger> {
        Ok(self.sealer.read_json_if_exists(&self.path)?.unwrap_or_default())
    }

    /// Charges `cost` to every participant, all or none; refused when any would pass the budget.
    pub(crate) fn charge(&self, participants: &[String], cost_micro: u64, computation: &str) -> Result<Ledger> {
        let mut ledger = self.load()?;
        for p in participants {
            let spent = ledger.spent_micro.get(p).copied().unwrap_or(0);
            if spent.saturating_add(cost_micro) > self.budget_micro {
                return Err(Error::BudgetExhausted(format!(
                    "the privacy budget does not allow this run: computation '{computation}' costs ε = {} per run \
                     and '{p}', who receives its results, has spent ε = {} of {} (ε = {} left). The budget is \
                     fixed by the contract; a new budget needs a new room",
                    epsilon(cost_micro),
                    epsilon(spent),
                    epsilon(self.budget_micro),
                    epsilon(self.budget_micro.saturating_sub(spent)),
                )));
            }
        }
        for p in participants {
            *ledger.spent_micro.entry(p.clone()).or_insert(0) += cost_micro;
        }
        self.save(&ledger)?;
        Ok(ledger)
    }

    pub(crate) fn view(&self, participant: &str, per_run_micro: u64) -> Result<BudgetView> {
        let spent = self.load()?.spent_micro.get(participant).copied().unwrap_or(0);
        let remaining = self.budget_micro.saturating_sub(spent);
        Ok(BudgetView {
            epsilon_per_run: epsilon(per_run_micro),
            budget: epsilon(self.budget_micro),
            spent: epsilon(spent),
            remaining: epsilon(remaining),
            runs_left: remaining / per_run_micro.max(1),
        })
    }

    fn save(&self, ledger: &Ledger) -> Result<()> {
        self.sealer.write_json_atomically(&self.path, ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampled distribution matches `P(z) ∝ exp(−|z|/b)` within sampling error, and is symmetric.
    #[test]
    fn discrete_laplace_has_the_right_distribution() {
        for (sensitivity, epsilon_micro) in [(1u64, 1_000_000u64), (3, 500_000), (1, 2_000_000)] {
            let mut noise = Noise::new(Randomness::seeded(7), epsilon_micro, sensitivity);
            let b = noise.scale();
            let n = 200_000;
            let mut hist: BTreeMap<i64, u64> = BTreeMap::new();
            let base = 1_000_000u64;
            for _ in 0..n {
                *hist.entry(noise.count(base) as i64 - base as i64).or_default() += 1;
            }
            let q = (-1.0 / b).exp();
            let p0 = (1.0 - q) / (1.0 + q);
            for z in -3i64..=3 {
                let expected = p0 * q.powi(z.unsigned_abs() as i32);
                let got = hist.get(&z).copied().unwrap_or(0) as f64 / n as f64;
                let se = (expected * (1.0 - expected) / n as f64).sqrt();
                assert!(
                    (got - expected).abs() < 5.0 * se + 1e-4,
                    "Δ={sensitivity} ε_micro={epsilon_micro} z={z}: {got} vs {expected}"
                );
            }
            let mean: f64 = hist.iter().map(|(z, c)| *z as f64 * *c as f64).sum::<f64>() / n as f64;
            let var: f64 = hist.iter().map(|(z, c)| (*z as f64 - mean).powi(2) * *c as f64).sum::<f64>() / n as f64;
            assert!(mean.abs() < 5.0 * (noise.variance() / n as f64).sqrt() + 1e-3, "mean {mean}");
            assert!((var / noise.variance() - 1.0).abs() < 0.05, "variance {var} vs {}", noise.variance());
        }
    }

    /// Neighbouring counts (c and c+1) give output distributions whose ratio stays within e^ε
    /// (checked on the well-sampled middle of the distribution).
    #[test]
    fn neighbouring_counts_are_within_e_to_the_epsilon() {
        let epsilon = 0.5;
        let mut noise = Noise::new(Randomness::seeded(11), 500_000, 1);
        let n = 400_000;
        let mut a: BTreeMap<u64, f64> = BTreeMap::new();
        let mut b: BTreeMap<u64, f64> = BTreeMap::new();
        for _ in 0..n {
            *a.entry(noise.count(100)).or_default() += 1.0;
            *b.entry(noise.count(101)).or_default() += 1.0;
        }
        for (value, ca) in &a {
            let Some(cb) = b.get(value) else { continue };
            if *ca < 2_000.0 || *cb < 2_000.0 {
                continue;
            }
            let ratio = (ca / cb).ln().abs();
            assert!(ratio < epsilon * 1.15, "at {value}: ln ratio {ratio}");
        }
    }

    #[test]
    fn uniform_below_is_in_range_and_covers_it() {
        let mut r = Randomness::seeded(3);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            seen[r.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|c| *c > 850 && *c < 1150), "{seen:?}");
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn the_ledger_charges_all_or_none_and_refuses_past_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = crate::seal::MasterKey::from_bytes([1; 32]).sealer("room", dir.path()).unwrap();
        let path = dir.path().join("state/_privacy_budget.json");
        let ledger = BudgetLedger::new(path.clone(), sealer.clone(), 1_000_000);
        let both = vec!["acme".to_owned(), "news".to_owned()];
        ledger.charge(&both, 400_000, "overlap").unwrap();
        ledger.charge(&["acme".to_owned()], 400_000, "overlap").unwrap();
        // acme has 0.2 left: a run for both is refused, and news is not charged either.
        let err = ledger.charge(&both, 400_000, "overlap").unwrap_err();
        assert!(matches!(err, Error::BudgetExhausted(_)));
        let message = err.to_string();
        assert!(message.contains("'acme'") && message.contains("ε = 0.8 of 1"), "{message}");
        assert_eq!(ledger.load().unwrap().spent_micro["news"], 400_000);
        // Reopened from disk: same state.
        let again = BudgetLedger::new(path.clone(), sealer.clone(), 1_000_000);
        assert_eq!(again.load().unwrap().spent_micro["acme"], 800_000);
        assert_eq!(again.view("acme", 100_000).unwrap().runs_left, 2);
        assert_eq!(again.view("news", 400_000).unwrap().runs_left, 1);
        // Sealed on disk: neither readable nor silently replaceable by an older or edited copy.
        let on_disk = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&on_disk).contains("acme"));
        std::fs::write(&path, br#"{"spent_micro": {}}"#).unwrap();
        let err = again.charge(&both, 1, "overlap").unwrap_err().to_string();
        assert!(err.contains("_privacy_budget.json") && err.contains("failed its integrity check"), "{err}");
    }
}
