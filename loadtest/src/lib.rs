//! Synthetic data for demos, tests and benchmarks, and (in `benches/` and `scripts/`) the load
//! drivers that measure sealroom against its peers.
//!
//! Everything here is generated from a seed, so a figure measured on it can be reproduced by anyone.

pub mod emails;
pub mod people;
pub mod synth;

/// Peak resident memory of this process in MiB (`VmHWM` in `/proc/self/status`), for the
/// benchmarks' reports; `None` where `/proc` does not have it.
pub fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
