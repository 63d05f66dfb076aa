//! Models behind one trait: [`LookalikeModel`] scores users; [`train`] fits one from the compact
//! feature matrix ([`FeatureSchema::encode`]) and seed labels.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::features::FeatureSchema;
use crate::forest::{ExportedForest, Forest, ForestOptions};
use crate::logistic::{Coefficient, Logistic, LogisticOptions};

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    /// L2-regularized logistic regression (L-BFGS; [`crate::logistic`]).
    Logistic,
    /// Gradient-boosted trees on histograms ([`crate::forest`]).
    Forest,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Logistic => "logistic",
            Self::Forest => "forest",
        }
    }

    /// The kind [`Self::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Logistic, Self::Forest].into_iter().find(|k| k.name() == name)
    }
}

/// A trained lookalike model: higher scores look more like the seed.
pub trait LookalikeModel: Send + Sync {
    fn kind(&self) -> ModelKind;
    /// The feature schema the model was trained on (exported with it).
    fn schema(&self) -> &FeatureSchema;
    /// One score (log-odds of being in the seed) per row of `x`, the compact matrix of the
    /// model's schema. Used to rank, never read as a probability of conversion.
    fn scores(&self, x: ArrayView2<'_, f64>) -> Result<Vec<f64>, ModelError>;
    /// The model in the schema's terms, for release to the party the contract names.
    fn export(&self) -> ExportedModel;
    /// How training went, in words (solver iterations, trees grown).
    fn training_summary(&self) -> String;
}

/// A model as it is released: its feature schema and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedModel {
    pub schema: FeatureSchema,
    #[serde(flatten)]
    pub parameters: Parameters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Parameters {
    /// Score = intercept + Σ weight · feature (numbers standardized by the schema's mean and std,
    /// missing numbers 0 with their `=missing` indicator 1; a category's level 1, others 0).
    Logistic {
        intercept: f64,
        coefficients: Vec<Coefficient>,
    },
    Forest(ExportedForest),
}

impl LookalikeModel for Logistic {
    fn kind(&self) -> ModelKind {
        ModelKind::Logistic
    }
    fn schema(&self) -> &FeatureSchema {
        Logistic::schema(self)
    }
    fn scores(&self, x: ArrayView2<'_, f64>) -> Result<Vec<f64>, ModelError> {
        Logistic::scores(self, x)
    }
    fn export(&self) -> ExportedModel {
        ExportedModel {
            schema: Logistic::schema(self).clone(),
            parameters: Parameters::Logistic { intercept: self.intercept(), coefficients: self.coefficients() },
        }
    }
    fn training_summary(&self) -> String {
        format!("{} L-BFGS iterations", self.iterations())
    }
}

impl LookalikeModel for Forest {
    fn kind(&self) -> ModelKind {
        ModelKind::Forest
    }
    fn schema(&self) -> &FeatureSchema {
        Forest::schema(self)
    }
    fn scores(&self, x: ArrayView2<'_, f64>) -> Result<Vec<f64>, ModelError> {
        Forest::scores(self, x)
    }
    fn export(&self) -> ExportedModel {
        ExportedModel { schema: Forest::schema(self).clone(), parameters: Parameters::Forest(Forest::export(self)) }
    }
    fn training_summary(&self) -> String {
        format!("{} trees", self.trees())
    }
}

/// Training options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainOptions {
    pub kind: ModelKind,
    /// Weight the classes so that the seed and the rest count equally (for a seed that is a small
    /// share of the base). A ranking's AUC does not need it; it keeps a tiny seed from being
    /// ignored by the trees' minimum leaf hessian and the logistic penalty.
    pub balanced: bool,
    pub logistic: LogisticOptions,
    pub forest: ForestOptions,
}

/// Checks labels before training: both classes present.
fn check_labels(y: &[bool]) -> Result<(usize, usize), ModelError> {
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 || positives == y.len() {
        return Err(ModelError::Input(format!(
            "the label has one class only ({positives} positive of {} rows): a model needs seed users and others",
            y.len()
        )));
    }
    Ok((positives, y.len() - positives))
}

/// Trains a model on the compact matrix `x` of `schema` and seed labels `y` (true: in the seed).
/// Deterministic: the same data and options give the same model.
pub fn train(
    schema: &FeatureSchema,
    x: ArrayView2<'_, f64>,
    y: &[bool],
    options: &TrainOptions,
) -> Result<Box<dyn LookalikeModel>, ModelError> {
    if x.nrows() != y.len() {
        return Err(ModelError::Input(format!("{} feature rows but {} labels", x.nrows(), y.len())));
    }
    let (positives, negatives) = check_labels(y)?;
    let weights = if options.balanced {
        (y.len() as f64 / (2.0 * positives as f64), y.len() as f64 / (2.0 * negatives as f64))
    } else {
        (1.0, 1.0)
    };
    Ok(match options.kind {
        ModelKind::Logistic => Box::new(Logistic::fit(schema, x, y, weights, &options.logistic)?),
        ModelKind::Forest => Box::new(Forest::fit(schema, x, y, weights, &options.forest)?),
    })
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;

    #[test]
    fn one_class_is_refused_and_a_separable_seed_is_found_by_both_models() {
        let x = Array2::from_shape_vec((6, 1), vec![0.0, 0.1, 0.2, 1.0, 1.1, 1.2]).unwrap();
        let schema = FeatureSchema::numeric(&["v".into()], x.view()).unwrap();
        let err = train(&schema, x.view(), &[false; 6], &TrainOptions::default()).err().unwrap();
        assert!(err.to_string().starts_with("the label has one class only (0 positive of 6 rows)"), "{err}");
        let y = [false, false, false, true, true, true];
        let mut o = TrainOptions::default();
        o.logistic.alpha = 0.01;
        o.forest.min_samples_leaf = 1;
        for kind in [ModelKind::Logistic, ModelKind::Forest] {
            let model = train(&schema, x.view(), &y, &TrainOptions { kind, ..o }).unwrap();
            assert_eq!(model.kind(), kind);
            let s = model.scores(x.view()).unwrap();
            assert!(s[3..].iter().all(|p| s[..3].iter().all(|q| p > q)), "{kind:?} {s:?}");
            let exported = serde_json::to_value(model.export()).unwrap();
            assert_eq!(exported["model"], kind.name());
            assert_eq!(exported["schema"]["features"][0]["column"], "v");
        }
    }

    #[test]
    fn the_logistic_solver_agrees_with_linfa_logistic() {
        // linfa-logistic is the reference implementation of the same objective (summed log loss +
        // 0.5·α·‖w‖², intercept free): the coefficients agree.
        use linfa::prelude::*;
        let n = 500;
        let x = Array2::from_shape_fn((n, 3), |(i, j)| ((i * (j + 3) * 7919) % 1000) as f64 / 250.0 - 2.0);
        let y: Vec<bool> = (0..n)
            .map(|i| x[[i, 0]] - 0.5 * x[[i, 1]] + 0.2 * x[[i, 2]] + ((i * 31) % 7) as f64 / 3.5 - 1.0 > 0.0)
            .collect();
        // A schema with mean 0 and std 1 leaves the values as they are.
        let mut schema = FeatureSchema::numeric(&["a".into(), "b".into(), "c".into()], x.view()).unwrap();
        for f in &mut schema.features {
            f.encoding = crate::features::Encoding::Numeric { mean: 0.0, std: 1.0, missing_indicator: false };
        }
        let o = TrainOptions {
            logistic: LogisticOptions { alpha: 1.0, gradient_tolerance: 1e-10, ..LogisticOptions::default() },
            ..TrainOptions::default()
        };
        let ours = Logistic::fit(&schema, x.view(), &y, (1.0, 1.0), &o.logistic).unwrap();
        let reference = linfa_logistic::LogisticRegression::default()
            .alpha(1.0)
            .max_iterations(1000)
            .gradient_tolerance(1e-10)
            .fit(&Dataset::new(x.clone(), ndarray::Array1::from(y.clone())))
            .unwrap();
        // linfa models the class it labels positive; flip to "in the seed" when that is `false`.
        let sign = if reference.labels().pos.class { 1.0 } else { -1.0 };
        for (c, r) in ours.coefficients().iter().zip(reference.params().iter()) {
            assert!((c.weight - sign * r).abs() < 1e-4, "{} vs {}", c.weight, sign * r);
        }
        assert!((ours.intercept() - sign * reference.intercept()).abs() < 1e-4);
    }
}
