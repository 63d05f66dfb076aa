//! Exact matching benchmark: normalize + SHA-256 of emails, and the join of the hashed keys.
//!
//! ```text
//! bench_exact generate --dir DIR [--advertisers 10000000] [--publishers 2000000] [--overlap 0.3] [--seed 42]
//! bench_exact run --dir DIR [--threads N]
//! ```
//! `generate` writes `advertiser_emails.parquet` and `publisher_emails.parquet` (columns `id`,
//! `email`), so the peers (loadtest/peers/exact_peers.py) read exactly the same data. `run` prints a
//! JSON object with rows/s of normalize + hash, the join time, the matched pairs and peak memory.
#![allow(clippy::print_stdout)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sealroom_matching::batch::hash_emails;
use sealroom_matching::exact::join_digests;
use sealroom_matching::normalize::Profile;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Generate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        advertisers: usize,
        #[arg(long, default_value_t = 2_000_000)]
        publishers: usize,
        #[arg(long, default_value_t = 0.3)]
        overlap: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

fn write(path: &Path, emails: &[String]) -> Result<(), String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt32, false),
        Field::new("email", DataType::Utf8, false),
    ]));
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| e.to_string())?;
    for (c, chunk) in emails.chunks(1 << 20).enumerate() {
        let ids = UInt32Array::from_iter_values((0..chunk.len()).map(|i| (c * (1 << 20) + i) as u32));
        let values = StringArray::from_iter_values(chunk.iter());
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(values)]).map_err(|e| e.to_string())?;
        w.write(&batch).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(())
}

fn read(path: &Path) -> Result<StringArray, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e} (run `bench_exact generate` first)", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?
        .with_batch_size(1 << 20)
        .build()
        .map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        parts.push(batch.column_by_name("email").ok_or("no email column")?.clone());
    }
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    let all = arrow::compute::concat(&refs).map_err(|e| e.to_string())?;
    Ok(all.as_string::<i32>().clone())
}

/// Peak resident memory of this process, in MiB (Linux).
fn main() -> Result<(), String> {
    match Cli::parse().command {
        Command::Generate { dir, advertisers, publishers, overlap, seed } => {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let (a, p) = sealroom_loadtest::emails::lists(seed, advertisers, publishers, overlap);
            write(&dir.join("advertiser_emails.parquet"), &a)?;
            write(&dir.join("publisher_emails.parquet"), &p)?;
            println!(
                "{}",
                serde_json::json!({"advertisers": a.len(), "publishers": p.len(), "overlap": overlap, "seed": seed})
            );
        }
        Command::Run { dir, threads } => {
            let threads =
                if threads == 0 { std::thread::available_parallelism().map_or(2, usize::from) } else { threads };
            let adv = read(&dir.join("advertiser_emails.parquet"))?;
            let publ = read(&dir.join("publisher_emails.parquet"))?;
            let rows = (adv.len() + publ.len()) as f64;
            // Same rule as the peers: trim and lower-case (the Meta profile).
            let t = Instant::now();
            let ah = hash_emails(&adv, Profile::Meta, threads);
            let ph = hash_emails(&publ, Profile::Meta, threads);
            let hash_seconds = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let pairs = join_digests(&ah.digests, &ph.digests, threads);
            let join_seconds = t.elapsed().as_secs_f64();
            // sealroom's own profile (Gmail folding too), for reference.
            let t = Instant::now();
            let _ = hash_emails(&adv, Profile::Sealroom, threads);
            let sealroom_seconds = t.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "engine": "sealroom",
                    "threads": threads,
                    "rows_hashed": rows as u64,
                    "hash_seconds": hash_seconds,
                    "hash_rows_per_second": rows / hash_seconds,
                    "sealroom_profile_rows_per_second": adv.len() as f64 / sealroom_seconds,
                    "join_seconds": join_seconds,
                    "matched_pairs": pairs.len(),
                    "invalid": ah.invalid + ph.invalid,
                    "peak_rss_mib": sealroom_loadtest::peak_mib(),
                })
            );
        }
    }
    Ok(())
}
