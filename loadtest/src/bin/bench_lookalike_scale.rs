//! Lookalike training at scale: `--rows` users × `--features` numeric features (10M × 50 by
//! default), generated from a seed, trained in this process by `sealroom-models`.
//!
//! ```text
//! bench_lookalike_scale [--rows 10000000] [--features 50] [--model logistic|forest] [--seed 42]
//! ```
//! The seed (label 1, about 8% of users) comes from a logistic model of the features with an
//! interaction and a threshold effect, so both models have something to learn. Prints the
//! training seconds, the AUC on 200,000 fresh users and the peak resident memory as a JSON
//! object on its last line.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use clap::Parser;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sealroom_models::eval::roc_auc;
use sealroom_models::features::FeatureSchema;
use sealroom_models::model::{ModelKind, TrainOptions, train};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 50)]
    features: usize,
    #[arg(long, default_value = "logistic")]
    model: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// `rows` users: features in [-1, 1] (every fifth one a small integer, like a count), and labels.
/// The population (its coefficients) comes from `seed`; the users drawn from it from `draw`.
fn generate(rows: usize, features: usize, seed: u64, draw: u64) -> (Array2<f64>, Vec<bool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Every third feature matters (the counts a little, the others more).
    let beta: Vec<f64> = (0..features)
        .map(|j| match (j % 3, j % 5) {
            (0, 4) => rng.random_range(-0.2..0.2),
            (0, _) => rng.random_range(-1.0..1.0),
            _ => 0.0,
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(draw);
    let mut x = Array2::<f64>::zeros((rows, features));
    let mut y = Vec::with_capacity(rows);
    for mut row in x.rows_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if j % 5 == 4 { f64::from(rng.random_range(0u8..6)) } else { rng.random_range(-1.0..1.0) };
        }
        let linear: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
        let z = -3.5 + 1.5 * linear + 2.0 * row[1] * row[2] + if row[3] > 0.5 { 1.0 } else { 0.0 };
        y.push(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()));
    }
    (x, y)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let kind =
        ModelKind::from_name(&cli.model).ok_or_else(|| format!("unknown model '{}': logistic or forest", cli.model))?;
    let started = Instant::now();
    let (x, y) = generate(cli.rows, cli.features, cli.seed, 1);
    let (test_x, test_y) = generate(200_000, cli.features, cli.seed, 2);
    let names: Vec<String> = (0..cli.features).map(|j| format!("f{j}")).collect();
    let schema = FeatureSchema::numeric(&names, x.view())?;
    println!(
        "generated {} × {} ({} seed) in {:.1} s",
        cli.rows,
        cli.features,
        y.iter().filter(|v| **v).count(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let options = TrainOptions { kind, ..TrainOptions::default() };
    let model = train(&schema, x.view(), &y, &options)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let auc = roc_auc(&model.scores(test_x.view())?, &test_y).unwrap_or(f64::NAN);
    let peak = sealroom_loadtest::peak_mib();
    println!("{}: trained in {train_seconds:.1} s ({}), AUC {auc:.4}", kind.name(), model.training_summary());
    println!(
        "{}",
        json!({
            "model": kind.name(),
            "rows": cli.rows,
            "features": cli.features,
            "train_seconds": train_seconds,
            "training": model.training_summary(),
            "auc": auc,
            "peak_mib": peak,
        })
    );
    Ok(())
}
