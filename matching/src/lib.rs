//! Identity normalization, hashing and matching.
//!
//! A pure library: no I/O, no async, no global state. The engine, the CLI and the benchmarks call it
//! on strings and Arrow arrays; it must never log or persist what it is given (it is handed raw PII).
//!
//! - [`normalize`]: emails, phones, names, addresses, postcodes and dates of birth, under the
//!   published rules of Google Customer Match, Meta Custom Audiences and UID2;
//! - [`hash`]: SHA-256 of normalized identifiers, and decoding of uploaded hash columns (binary,
//!   hex or base64) with a precise account of the rows that are not SHA-256;
//! - [`sketch`]: mergeable HyperLogLog++ reach sketches over a fixed hash.

pub mod batch;
pub mod clk;
pub mod eval;
pub mod exact;
pub mod fuzzy;
pub mod graph;
pub mod hash;
pub mod normalize;
pub mod sketch;

/// A scoped worker's result. A worker that panicked is a bug, and dropping its share would return
/// incomplete matches as if they were whole: the panic is carried on to the caller instead.
pub(crate) fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
