//! `sealroom link --clk`: the same evaluation with Bloom-filter encodings instead of plaintext, as
//! two data owners sharing a secret would produce them with `sealroom hash --clk`.

use rand::Rng;
use sealroom_matching::clk::{self, ClkSchema, Encoder, Filters};

use crate::CliError;
use crate::link::{CsvTable, Predicted};

/// Default Dice threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.8;
/// Above this many pairs, compare only pairs that share a keyed blocking key.
const ALL_PAIRS_LIMIT: u64 = 100_000_000;

/// One thread's encoded records: filter words, and the keyed blocking keys of each record.
type Chunk = (Vec<u64>, Vec<Vec<u64>>);

/// Encodes a table's records; returns the filters and their keyed blocking keys.
pub fn encode(encoder: &Encoder, table: &CsvTable, threads: usize) -> Result<(Filters, Vec<Vec<u64>>), CliError> {
    let columns: Vec<Option<&Vec<Option<String>>>> = encoder
        .schema()
        .fields
        .iter()
        .map(|f| table.columns.iter().find(|(n, _)| *n == f.column).map(|(_, v)| v))
        .collect();
    let n = table.ids.len();
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let parts: Option<Vec<Chunk>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let columns = &columns;
                s.spawn(move || {
                    let mut words = Vec::new();
                    let mut keys = Vec::new();
                    let mut buf = vec![0u64; encoder.words()];
                    for row in start..(start + chunk).min(n) {
                        let values: Vec<Option<&str>> =
                            columns.iter().map(|c| c.and_then(|c| c[row].as_deref())).collect();
                        encoder.encode_into(&values, &mut buf);
                        words.extend_from_slice(&buf);
                        keys.push(encoder.keyed_blocking_keys(&values));
                    }
                    (words, keys)
                })
            })
            .collect();
        // Every chunk or none: a lost chunk would shift the filters against the record ids.
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let parts = parts
        .ok_or_else(|| CliError::Input(format!("{}: encoding a chunk of records failed", table.path.display())))?;
    let mut filters = Filters::new(encoder.words());
    let mut keys = Vec::with_capacity(n);
    for (words, k) in parts {
        for f in words.chunks_exact(encoder.words()) {
            filters.push(f);
        }
        keys.extend(k);
    }
    Ok((filters, keys))
}

/// Links (or deduplicates) with CLKs. Returns (matches, pairs compared, predicted id pairs).
pub fn run(
    left: &CsvTable,
    right: Option<&CsvTable>,
    threshold: Option<f64>,
    secret_hex: Option<&str>,
    lines: &mut Vec<String>,
) -> Result<Predicted, CliError> {
    let columns: Vec<String> = left.columns.iter().map(|(n, _)| n.clone()).collect();
    let schema = ClkSchema::infer(&columns);
    if schema.fields.is_empty() {
        return Err(CliError::Input(format!(
            "{}: no column to encode was recognized (given_name, surname, date_of_birth, postcode, …)",
            left.path.display()
        )));
    }
    // Both data owners would share this secret; here one process plays both.
    let secret: Vec<u8> = match secret_hex {
        Some(h) => hex::decode(h).map_err(|e| CliError::Usage(format!("--clk-secret must be hex: {e}")))?,
        None => rand::rng().random::<[u8; 32]>().to_vec(),
    };
    let encoder = Encoder::new(schema, &secret).map_err(CliError::Input)?;
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let started = std::time::Instant::now();
    let (lf, lk) = encode(&encoder, left, threads)?;
    let r = match right {
        Some(t) => Some(encode(&encoder, t, threads)?),
        None => None,
    };
    lines.push(format!(
        "encoded {} records into {}-bit CLKs over {} fields in {:.3}s",
        left.ids.len() + right.map_or(0, |t| t.ids.len()),
        encoder.schema().bits,
        encoder.schema().fields.len(),
        started.elapsed().as_secs_f64()
    ));
    let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD);
    let all_pairs = match &r {
        Some((rf, _)) => lf.len() as u64 * rf.len() as u64,
        None => lf.len() as u64 * (lf.len() as u64).saturating_sub(1) / 2,
    };
    let started = std::time::Instant::now();
    let (mut matches, compared) = if all_pairs <= ALL_PAIRS_LIMIT {
        clk::compare_all(&lf, r.as_ref().map(|(f, _)| f), threshold, threads)
    } else {
        clk::compare_blocked(&lf, &lk, r.as_ref().map(|(f, k)| (f, k.as_slice())), threshold)
    };
    let seconds = started.elapsed().as_secs_f64();
    let rate = compared as f64 / seconds.max(1e-9);
    lines.push(format!(
        "compared {compared} pairs with Dice in {seconds:.3}s ({:.1} M comparisons/s)",
        compared as f64 / seconds.max(1e-9) / 1e6
    ));
    if r.is_some() {
        matches = clk::one_to_one(matches);
    }
    let r_ids = right.map_or(&left.ids, |t| &t.ids);
    let predicted =
        matches.iter().map(|m| (left.ids[m.left as usize].clone(), r_ids[m.right as usize].clone())).collect();
    let scores = matches.iter().map(|m| m.dice).collect();
    Ok(Predicted {
        matches: matches.len(),
        pairs_compared: compared,
        pairs: predicted,
        scores,
        comparisons_per_second: Some(rate),
    })
}
