//! `sealroom lookalike` through the binary: quality on the public adult data (a sample, to keep the
//! test fast), a separate test file, and bad input named clearly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The adult data: `$SEALROOM_LOOKALIKE_DATA`, or `shared/data/lookalike` next to the checkout, or
/// the machine's copy in /work/shared.
fn adult() -> PathBuf {
    let candidates = [
        std::env::var_os("SEALROOM_LOOKALIKE_DATA").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/lookalike")),
        Some(PathBuf::from("/work/shared/data/lookalike")),
    ];
    let dir = candidates.into_iter().flatten().find(|d| d.join("adult.csv").exists());
    dir.unwrap_or_default().join("adult.csv")
}

/// The header and rows `from..to` of adult.csv, written to `path`.
fn sample(path: &Path, from: usize, to: usize) {
    let text = std::fs::read_to_string(adult()).expect("the adult data (set SEALROOM_LOOKALIKE_DATA)");
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.skip(from).take(to - from).collect();
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
}

fn lookalike(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealroom")).arg("lookalike").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

const LEAKS: [&str; 4] = ["--exclude-column", "income", "--exclude-column", "split"];

#[test]
fn logistic_ranks_the_seed_well_on_adult() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("adult_sample.csv");
    sample(&data, 0, 6000);
    let d = data.to_str().unwrap();
    let (ok, stdout, stderr) = lookalike(&[&["--data", d, "--label", "label", "--seed", "7"][..], &LEAKS].concat());
    assert!(ok, "{stderr}");
    let summary = last_json(&stdout);
    let auc = summary["auc"].as_f64().unwrap();
    // Published logistic regressions on adult reach 0.90; a 6,000-row sample gets close.
    assert!(auc > 0.88, "AUC {auc}");
    assert!(summary["recall_at_10pct"].as_f64().unwrap() > 0.25, "{summary}");
    assert!(summary["train_seconds"].as_f64().unwrap() >= 0.0);
    let held_out = summary["test_rows"].as_u64().unwrap();
    assert!((1795..=1805).contains(&held_out), "30% held out, per class: {held_out}");
    assert!(stdout.contains("ROC AUC"), "{stdout}");
    // Deterministic: the same seed gives the same AUC.
    let (_, again, _) = lookalike(&[&["--data", d, "--label", "label", "--seed", "7"][..], &LEAKS].concat());
    assert_eq!(last_json(&again)["auc"], summary["auc"]);
}

#[test]
fn the_boosted_forest_beats_logistic_regression_on_adult() {
    // The same 6,000-row sample and split: the trees find the interactions a linear model cannot.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("adult_sample.csv");
    sample(&data, 0, 6000);
    let d = data.to_str().unwrap();
    let run = |model: &str| {
        let (ok, stdout, stderr) =
            lookalike(&[&["--data", d, "--label", "label", "--seed", "7", "--model", model][..], &LEAKS].concat());
        assert!(ok, "{stderr}");
        last_json(&stdout)
    };
    let (forest, logistic) = (run("forest"), run("logistic"));
    assert_eq!(forest["model"], "forest");
    let (f, l) = (forest["auc"].as_f64().unwrap(), logistic["auc"].as_f64().unwrap());
    assert!(f > 0.9 && f > l, "forest {f} vs logistic {l}");
    assert!(forest["training"].as_str().unwrap().ends_with(" trees"), "{forest}");
    // Deterministic by seed.
    assert_eq!(run("forest")["auc"], forest["auc"]);
    // A negative penalty is refused with the fix.
    let (ok, _, stderr) = lookalike(&[&["--data", d, "--label", "label", "--alpha=-1"][..], &LEAKS].concat());
    assert!(!ok && stderr.contains("--alpha -1 is not a penalty"), "{stderr}");
}

#[test]
fn a_separate_test_file_is_scored_by_the_schema_fitted_on_the_training_file() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    sample(&train, 0, 4000);
    sample(&test, 30_000, 32_000);
    let args = [&["--data", train.to_str().unwrap(), "--test", test.to_str().unwrap(), "--label", "label"][..], &LEAKS]
        .concat();
    let (ok, stdout, stderr) = lookalike(&args);
    assert!(ok, "{stderr}");
    let summary = last_json(&stdout);
    assert_eq!((summary["train_rows"].as_u64(), summary["test_rows"].as_u64()), (Some(4000), Some(2000)));
    assert!(summary["auc"].as_f64().unwrap() > 0.86, "{summary}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let one_class = write("one.csv", "age,job,label\n30,a,0\n40,b,0\n50,a,0\n");
    let (ok, _, stderr) = lookalike(&["--data", &one_class, "--label", "label"]);
    assert!(!ok);
    assert!(stderr.contains("no row has label = '1': the seed is empty"), "{stderr}");
    let (ok, _, stderr) = lookalike(&["--data", &one_class, "--label", "target"]);
    assert!(!ok && stderr.contains("no label column 'target' (columns: age, job, label)"), "{stderr}");
    let mut garbage = String::from("age,label\n");
    for i in 0..30 {
        garbage.push_str(&format!("{},{}\n", if i == 17 { "abc".to_owned() } else { (20 + i).to_string() }, i % 2));
    }
    let garbage = write("garbage.csv", &garbage);
    let (ok, _, stderr) = lookalike(&["--data", &garbage, "--label", "label"]);
    assert!(!ok);
    assert!(stderr.contains("column 'age' is numeric but row"), "{stderr}");
    let constant = write("constant.csv", "c,label\nx,0\nx,1\nx,0\nx,1\n");
    let (ok, _, stderr) = lookalike(&["--data", &constant, "--label", "label"]);
    assert!(!ok && stderr.contains("no usable feature"), "{stderr}");
    let (ok, _, stderr) = lookalike(&["--data", &constant, "--label", "label", "--test-fraction", "1.5"]);
    assert!(!ok && stderr.contains("--test-fraction 1.5 is not in (0, 1)"), "{stderr}");
}
