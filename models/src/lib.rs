//! Lookalike modelling: the advertiser's matched customers are the seed (positives), the rest of the
//! publisher's users the unlabelled base; a model trained on the publisher's features ranks the base
//! by how much each user looks like the seed.
//!
//! A pure library: no I/O, no async, no logging of what it is given (it is handed personal data).
//!
//! - [`features`]: columns of text values → a numeric matrix: numeric columns standardized with a
//!   missing-value indicator, categorical columns one-hot encoded (the most frequent levels, the
//!   rest pooled), constant and all-missing columns left out and reported;
//! - [`model`]: the [`model::LookalikeModel`] trait and its logistic regression (linfa-logistic);
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
