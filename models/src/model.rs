//! Models behind one trait: [`LookalikeModel`] scores users; [`train`] fits one from features and
//! seed labels.

use linfa::prelude::*;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// L2-regularized logistic regression (linfa-logistic, L-BFGS).
    Logistic,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Logistic => "logistic",
        }
    }
}

/// A trained lookalike model: higher scores look more like the seed.
pub trait LookalikeModel: Send + Sync {
    fn kind(&self) -> ModelKind;
    /// One score per row of `x` (the feature matrix of the schema the model was trained on).
    fn scores(&self, x: &Array2<f64>) -> Vec<f64>;
}

/// Logistic regression: coefficients per feature and an intercept.
#[derive(Debug, Clone)]
pub struct Logistic {
    fitted: FittedLogisticRegression<f64, bool>,
}

impl Logistic {
    /// Per feature (the schema's order): how much it raises the log-odds of being in the seed.
    pub fn coefficients(&self) -> Array1<f64> {
        if self.fitted.labels().pos.class { self.fitted.params().clone() } else { -self.fitted.params() }
    }

    /// The log-odds of being in the seed at all-zero (average) features.
    pub fn intercept(&self) -> f64 {
        if self.fitted.labels().pos.class { self.fitted.intercept() } else { -self.fitted.intercept() }
    }
}

impl LookalikeModel for Logistic {
    fn kind(&self) -> ModelKind {
        ModelKind::Logistic
    }

    fn scores(&self, x: &Array2<f64>) -> Vec<f64> {
        // linfa gives the probability of the class it labelled positive, which is the more frequent
        // one (usually the non-seed): turn it into the probability of being in the seed.
        let p = self.fitted.predict_probabilities(x);
        if self.fitted.labels().pos.class { p.to_vec() } else { p.iter().map(|q| 1.0 - q).collect() }
    }
}

/// Training options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    pub kind: ModelKind,
    /// L2 penalty (`0.5 · alpha · ‖w‖²` added to the summed log loss; 1.0 is scikit-learn's
    /// default `C = 1`).
    pub alpha: f64,
    pub max_iterations: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { kind: ModelKind::Logistic, alpha: 1.0, max_iterations: 200 }
    }
}

/// Checks labels before training: both classes present.
fn check_labels(y: &[bool]) -> Result<(), ModelError> {
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 || positives == y.len() {
        return Err(ModelError::Input(format!(
            "the label has one class only ({positives} positive of {} rows): a model needs seed users and others",
            y.len()
        )));
    }
    Ok(())
}

/// Trains a model on features `x` and seed labels `y` (true: in the seed). Deterministic: the
/// solver starts from zero and has no random state.
pub fn train(x: &Array2<f64>, y: &[bool], options: &TrainOptions) -> Result<Box<dyn LookalikeModel>, ModelError> {
    if x.nrows() != y.len() {
        return Err(ModelError::Input(format!("{} feature rows but {} labels", x.nrows(), y.len())));
    }
    check_labels(y)?;
    match options.kind {
        ModelKind::Logistic => {
            // Column-major: linfa's gradient multiplies by xᵀ, whose rows are then contiguous (with
            // a row-major x they are strided columns, and the gradient dominates training time).
            let column_major = x.t().as_standard_layout().reversed_axes().to_owned();
            let dataset = Dataset::new(column_major, Array1::from(y.to_vec()));
            // scikit-learn stops when the largest component of the *mean* loss's gradient is under
            // 1e-4; linfa minimizes the *summed* loss and tests the gradient's Euclidean norm, which
            // is at most √features times the largest component: the same rule is 1e-4 × rows × √features.
            let tolerance = 1e-4 * x.nrows().max(1) as f64 * (x.ncols().max(1) as f64).sqrt();
            let fitted = LogisticRegression::default()
                .alpha(options.alpha)
                .max_iterations(options.max_iterations)
                .gradient_tolerance(tolerance)
                .fit(&dataset)
                .map_err(|e| ModelError::Training(e.to_string()))?;
            Ok(Box::new(Logistic { fitted }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_class_is_refused_and_a_separable_seed_is_found() {
        let x = Array2::from_shape_vec((6, 1), vec![0.0, 0.1, 0.2, 1.0, 1.1, 1.2]).unwrap();
        let err = train(&x, &[false; 6], &TrainOptions::default()).err().unwrap();
        assert!(err.to_string().starts_with("the label has one class only (0 positive of 6 rows)"), "{err}");
        let y = [false, false, false, true, true, true];
        let model = train(&x, &y, &TrainOptions { alpha: 0.01, ..TrainOptions::default() }).unwrap();
        let s = model.scores(&x);
        assert!(s[3..].iter().all(|p| s[..3].iter().all(|q| p > q)), "{s:?}");
    }
}
