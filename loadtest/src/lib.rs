//! Synthetic data for demos, tests and benchmarks, and (in `benches/` and `scripts/`) the load
//! drivers that measure sealroom against its peers.
//!
//! Everything here is generated from a seed, so a figure measured on it can be reproduced by anyone.

pub mod emails;
pub mod people;
pub mod synth;
