//! Lookalike modelling: the advertiser's matched customers are the seed (positives), the rest of the
//! publisher's users the unlabelled base; a model trained on the publisher's features ranks the base
//! by how much each user looks like the seed.
//!
//! A pure library: no I/O, no async, no logging of what it is given (it is handed personal data).
//!
//! - [`features`]: columns of text values → a compact numeric matrix (numbers as they are,
//!   categories as level indices, NaN for missing) and the schema that says how (the most frequent
//!   levels, the rest pooled; constant and all-missing columns left out and reported);
//! - [`model`]: the [`model::LookalikeModel`] trait, [`model::train`] and the exported form;
//! - [`logistic`]: L2-regularized logistic regression (L-BFGS on a sparse one-hot design);
//! - [`forest`]: gradient-boosted trees on histograms (a boosted forest);
//! - [`eval`]: ROC AUC, recall at the top k% of the base, and the reach/precision curve;
//! - [`split`]: seeded train/test splits.
//!
//! **Unlabelled is not negative.** In a lookalike, the base users who are not in the seed are not
//! known non-customers: some of them would convert. They are trained on as negatives (the
//! positive-unlabelled setting): the model then estimates how likely a user is to be *in the seed*,
//! which ranks users in the same order as how likely they are to be like it, as long as the seed is
//! a random sample of the advertiser's customers. Scores are used for ranking only, never read as
//! probabilities of conversion.

pub mod eval;
pub mod features;
pub mod forest;
pub mod logistic;
pub mod model;
pub mod split;

/// Why a model could not be trained or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The input has a problem its owner can fix.
    #[error("{0}")]
    Input(String),
    /// The training itself failed.
    #[error("training failed: {0}")]
    Training(String),
}

/// Runs `f(0..parts)` on up to as many threads as the machine has and returns the results in
/// order: work is split by part, never by thread, so sums over parts are the same on any machine.
pub(crate) fn par_map<T: Send>(parts: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    // Asking the OS reads cgroup files each time: once per process is enough.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = (*THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))).min(parts);
    if threads <= 1 {
        return (0..parts).map(f).collect();
    }
    let f = &f;
    let mut out: Vec<Option<T>> = (0..parts).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..parts).step_by(threads).map(|k| (k, f(k))).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            // A panic in `f` is a bug in this crate: re-raise it where it can be seen.
            for (k, v) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                out[k] = Some(v);
            }
        }
    });
    out.into_iter().flatten().collect()
}
