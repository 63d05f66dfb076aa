//! Writes two CSV files of people and their truth file for `sealroom link` at scale:
//! `gen_people --dir DIR [--left 1000000] [--right 1000000] [--shared 500000] [--seed 42]`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use clap::Parser;
use sealroom_loadtest::people::{HEADER, Person, linkage_files};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    left: usize,
    #[arg(long, default_value_t = 1_000_000)]
    right: usize,
    #[arg(long, default_value_t = 500_000)]
    shared: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn write(path: &std::path::Path, prefix: &str, people: &[Person]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| e.to_string())?;
    w.write_record(HEADER).map_err(|e| e.to_string())?;
    for (i, p) in people.iter().enumerate() {
        let id = format!("{prefix}{i}");
        let mut row = vec![id.as_str()];
        row.extend(p.fields());
        w.write_record(&row).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    let (l, r, truth) = linkage_files(a.seed, a.left, a.right, a.shared);
    write(&a.dir.join("left.csv"), "l", &l)?;
    write(&a.dir.join("right.csv"), "r", &r)?;
    let mut w = csv::Writer::from_path(a.dir.join("truth.csv")).map_err(|e| e.to_string())?;
    w.write_record(["left_id", "right_id"]).map_err(|e| e.to_string())?;
    for (x, y) in truth {
        w.write_record([format!("l{x}"), format!("r{y}")]).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    println!("wrote {} and {} records, {} true pairs, to {}", a.left, a.right, a.shared, a.dir.display());
    Ok(())
}
