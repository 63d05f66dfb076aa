//! Top-affinity benchmark: the engine's `affinity` computation over 10M publisher users in 1,000
//! segments against 2M advertiser customers, on the same Parquet files DuckDB reads
//! (loadtest/peers/affinity_duckdb.py).
//!
//! ```text
//! bench_affinity generate --dir DIR [--publishers 10000000] [--advertisers 2000000] [--segments 1000] [--overlap 0.3] [--seed 42]
//! bench_affinity run --dir DIR [--k 100]
//! ```
//! `generate` writes `publisher.parquet` (`user_id` int64, `email_sha256` 32-byte binary,
//! `segments` list of strings; 1–9 memberships per user drawn from a Zipf-like popularity) and
//! `advertiser.parquet` (`customer_id` int64, `email_sha256`); a share `overlap` of the advertiser's
//! customers are publisher users. `run` uploads both into an engine (simulated TEE, a fresh data
//! directory), then times the `affinity` run alone, and prints a JSON object with the run time, the
//! upload time, what was released and peak memory.
#![allow(clippy::print_stdout)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arrow::array::{ArrayRef, FixedSizeBinaryBuilder, Int64Array, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use clap::{Parser, Subcommand};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sealroom_attest::token::{IssuerKey, unix_now};
use sealroom_engine::{Channel, Engine, EngineConfig, EngineMetrics, ReleasedCell, UploadLimits};
use sha2::{Digest, Sha256};

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
        publishers: usize,
        #[arg(long, default_value_t = 2_000_000)]
        advertisers: usize,
        #[arg(long, default_value_t = 1_000)]
        segments: usize,
        #[arg(long, default_value_t = 0.3)]
        overlap: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    Run {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        k: u32,
    },
}

const CHUNK: usize = 1 << 20;
// The benchmark's participants: each authenticates with a token signed by its issuer key.
const ADV_TOKEN: &str = "adv";
const PUB_TOKEN: &str = "pub";

/// The issuer key of a benchmark participant (made once per process).
fn issuer(who: &str) -> Result<&'static IssuerKey, String> {
    static KEYS: OnceLock<Result<[IssuerKey; 2], String>> = OnceLock::new();
    let keys = KEYS
        .get_or_init(|| {
            Ok([IssuerKey::generate().map_err(|e| e.to_string())?, IssuerKey::generate().map_err(|e| e.to_string())?])
        })
        .as_ref()
        .map_err(Clone::clone)?;
    Ok(if who == ADV_TOKEN { &keys[0] } else { &keys[1] })
}

/// Participant `who` in the engine's room, authenticated with a fresh token.
fn login(engine: &Engine, who: &str) -> Result<sealroom_engine::Caller, String> {
    let room = engine.room_ids()[0].to_string();
    let token = issuer(who)?.mint(who, std::slice::from_ref(&room), 600, unix_now()).map_err(|e| e.to_string())?;
    engine.authenticate(&room, &token).map_err(|e| e.to_string())
}

fn email_digest(person: usize) -> [u8; 32] {
    Sha256::digest(format!("person{person}@example.com").as_bytes()).into()
}

fn segment_name(i: usize) -> String {
    format!("seg{i:04}")
}

fn writer(path: &Path, schema: &Arc<Schema>) -> Result<ArrowWriter<File>, String> {
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| e.to_string())
}

fn generate(
    dir: &Path,
    publishers: usize,
    advertisers: usize,
    segments: usize,
    overlap: f64,
    seed: u64,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Zipf-like popularity (exponent 0.9): cumulative weights for inverse-CDF sampling.
    let mut cumulative = Vec::with_capacity(segments);
    let mut total = 0.0;
    for r in 0..segments {
        total += 1.0 / ((r + 1) as f64).powf(0.9);
        cumulative.push(total);
    }
    let names: Vec<String> = (0..segments).map(segment_name).collect();

    let list_field = Field::new("item", DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("email_sha256", DataType::FixedSizeBinary(32), true),
        Field::new("segments", DataType::List(Arc::new(list_field.clone())), true),
    ]));
    let mut w = writer(&dir.join("publisher.parquet"), &schema)?;
    let mut memberships = 0u64;
    for start in (0..publishers).step_by(CHUNK) {
        let end = (start + CHUNK).min(publishers);
        let mut emails = FixedSizeBinaryBuilder::with_capacity(end - start, 32);
        let mut lists = ListBuilder::new(StringBuilder::new()).with_field(list_field.clone());
        let mut picked = Vec::with_capacity(9);
        for user in start..end {
            emails.append_value(email_digest(user)).map_err(|e| e.to_string())?;
            picked.clear();
            for _ in 0..rng.random_range(1..=9) {
                let x = rng.random_range(0.0..total);
                picked.push(cumulative.partition_point(|c| *c < x).min(segments - 1));
            }
            picked.sort_unstable();
            picked.dedup();
            for s in &picked {
                lists.values().append_value(&names[*s]);
            }
            memberships += picked.len() as u64;
            lists.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values((start as i64)..(end as i64))),
            Arc::new(emails.finish()),
            Arc::new(lists.finish()),
        ];
        w.write(&RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;

    // Customers 0..shared are publisher users (spread over the base); the rest are not.
    let shared = ((advertisers as f64) * overlap).round() as usize;
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("email_sha256", DataType::FixedSizeBinary(32), true),
    ]));
    let mut w = writer(&dir.join("advertiser.parquet"), &schema)?;
    let stride = (publishers / shared.max(1)).max(1);
    for start in (0..advertisers).step_by(CHUNK) {
        let end = (start + CHUNK).min(advertisers);
        let mut emails = FixedSizeBinaryBuilder::with_capacity(end - start, 32);
        for c in start..end {
            let person = if c < shared { (c * stride) % publishers } else { publishers + c };
            emails.append_value(email_digest(person)).map_err(|e| e.to_string())?;
        }
        let columns: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from_iter_values((start as i64)..(end as i64))), Arc::new(emails.finish())];
        w.write(&RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::json!({"publishers": publishers, "advertisers": advertisers, "segments": segments,
                           "memberships": memberships, "shared": shared, "seed": seed})
    );
    Ok(())
}

fn contract(k: u32) -> Result<sealroom_proto::room::v1::RoomContract, String> {
    let yaml = format!(
        r#"
name: affinity benchmark
participants:
  - {{ id: adv, name: Advertiser, roles: [data_owner, analyst], credential: {{ issuer_keys: [{a}] }} }}
  - {{ id: pub, name: Publisher, roles: [data_owner], credential: {{ issuer_keys: [{p}] }} }}
tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: customer_id, type: int64, identifier: user_id }}
      - {{ name: email_sha256, type: sha256, identifier: hashed_email, nullable: true }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: int64, identifier: user_id }}
      - {{ name: email_sha256, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: segments, type: string_list, identifier: segment, nullable: true }}
computations:
  - name: affinity
    affinity: {{ matching: {{ advertiser_table: crm, publisher_table: users }} }}
    run_by: [adv]
    results_to: [adv]
privacy:
  k_thresholds: [{{ set_by: adv, k: {k} }}]
attestation: {{ allow_simulated: true }}
"#,
        a = issuer(ADV_TOKEN)?.public_key_base64(),
        p = issuer(PUB_TOKEN)?.public_key_base64()
    );
    sealroom_proto::RoomFile::parse(&yaml, "benchmark").map_err(|e| e.to_string())
}

async fn upload(engine: &Engine, who: &str, table: &str, path: &Path) -> Result<u64, String> {
    let caller = login(engine, who)?;
    let mut session = engine.begin_upload(&caller, table).map_err(|e| e.to_string())?;
    let file =
        File::open(path).map_err(|e| format!("{}: {e} (run `bench_affinity generate` first)", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?
        .with_batch_size(CHUNK)
        .build()
        .map_err(|e| e.to_string())?;
    for batch in reader {
        session.push(batch.map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    }
    Ok(session.commit().await.map_err(|e| e.to_string())?.rows)
}

/// Peak resident memory of this process, in MiB (Linux).
async fn run(dir: &Path, k: u32) -> Result<(), String> {
    let data = dir.join("engine");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| e.to_string())?;
    }
    let config = EngineConfig {
        data_dir: data.clone(),
        enclave: sealroom_engine::Enclave::insecure_simulated().map_err(|e| e.to_string())?,
        limits: UploadLimits::default(),
        sinks: vec![],
    };
    let engine = Engine::open(config, vec![contract(k)?], Arc::new(EngineMetrics::unregistered()))
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let publishers = upload(&engine, PUB_TOKEN, "users", &dir.join("publisher.parquet")).await?;
    let advertisers = upload(&engine, ADV_TOKEN, "crm", &dir.join("advertiser.parquet")).await?;
    let upload_seconds = t.elapsed().as_secs_f64();

    let analyst = login(&engine, ADV_TOKEN)?;
    let t = Instant::now();
    engine.run(&analyst, "affinity").await.map_err(|e| e.to_string())?;
    let released = engine.release(&analyst, "affinity", None, Channel::Rest).map_err(|e| e.to_string())?;
    let run_seconds = t.elapsed().as_secs_f64();
    let section = released.section("affinity").ok_or("no affinity section")?;
    let ranked: Vec<_> = section.rows().iter().filter(|r| r.dimensions()[0] != "withheld").collect();
    let top: Vec<serde_json::Value> = ranked
        .iter()
        .take(5)
        .map(|r| {
            let value = |i: usize| match &r.cells()[i] {
                ReleasedCell::Value(v) => serde_json::to_value(v).unwrap_or_default(),
                ReleasedCell::Suppressed => serde_json::Value::Null,
            };
            serde_json::json!({"segment": r.dimensions()[1], "audience": value(0), "base": value(1), "index": value(4)})
        })
        .collect();
    let matched = match &released.section("summary").ok_or("no summary")?.rows()[0].cells()[1] {
        ReleasedCell::Value(v) => serde_json::to_value(v).unwrap_or_default(),
        ReleasedCell::Suppressed => serde_json::Value::Null,
    };
    engine.close().await;
    let _ = std::fs::remove_dir_all(&data);
    println!(
        "{}",
        serde_json::json!({
            "engine": "sealroom",
            "threads": std::thread::available_parallelism().map_or(2, usize::from),
            "publishers": publishers,
            "advertisers": advertisers,
            "upload_seconds": upload_seconds,
            "run_seconds": run_seconds,
            "matched_publisher": matched,
            "segments": section.rows().len(),
            "ranked_segments": ranked.len(),
            "top": top,
            "peak_rss_mib": sealroom_loadtest::peak_mib(),
        })
    );
    Ok(())
}

fn main() -> Result<(), String> {
    match Cli::parse().command {
        Command::Generate { dir, publishers, advertisers, segments, overlap, seed } => {
            generate(&dir, publishers, advertisers, segments, overlap, seed)
        }
        Command::Run { dir, k } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(run(&dir, k))
        }
    }
}
