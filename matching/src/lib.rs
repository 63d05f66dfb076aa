//! Identity normalization, hashing and matching primitives.
//!
//! A pure library: no I/O, no async, no global state. The engine, the CLI and the benchmarks call it
//! on strings and Arrow arrays; it must never log or persist what it is given (it is handed raw PII).
//!
//! - [`normalize`]: emails and phone numbers into the form both sides of a room hash;
//! - [`hash`]: SHA-256 of normalized identifiers, and decoding of uploaded hash columns (32-byte
//!   binary or 64-character hex) with a precise account of the rows that are not SHA-256.

pub mod hash;
pub mod normalize;
