//! Engine metrics, registered in the server's Prometheus registry. Labels never carry data values,
//! only outcomes, computation names and channels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    computation: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

/// Counters and histograms of the engine.
#[derive(Debug)]
pub struct EngineMetrics {
    uploads: Family<Outcome, Counter>,
    upload_rows: Counter,
    runs: Family<RunLabels, Counter>,
    run_seconds: Histogram,
    releases: Family<ChannelLabel, Counter>,
    cells_released: Counter,
    cells_suppressed: Counter,
    deliveries: Family<Outcome, Counter>,
}

impl EngineMetrics {
    /// Creates the metrics and registers them under the `sealroom_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            uploads: Family::default(),
            upload_rows: Counter::default(),
            runs: Family::default(),
            run_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            releases: Family::default(),
            cells_released: Counter::default(),
            cells_suppressed: Counter::default(),
            deliveries: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("sealroom");
        r.register("uploads", "Uploads by outcome (committed, rejected)", m.uploads.clone());
        r.register("upload_rows", "Rows committed by uploads", m.upload_rows.clone());
        r.register("runs", "Computation runs by computation and outcome", m.runs.clone());
        r.register("run_seconds", "Wall time of computation runs", m.run_seconds.clone());
        r.register("releases", "Results released through the release gate, by channel", m.releases.clone());
        r.register("cells_released", "Report cells released (at least k individuals)", m.cells_released.clone());
        r.register(
            "cells_suppressed",
            "Report cells suppressed (fewer than k individuals)",
            m.cells_suppressed.clone(),
        );
        r.register("deliveries", "Activation deliveries by outcome", m.deliveries.clone());
        m
    }

    /// Metrics that are not registered anywhere (for tools that embed the engine without a server).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    pub(crate) fn upload_committed(&self, rows: u64) {
        self.uploads.get_or_create(&Outcome { outcome: "committed" }).inc();
        self.upload_rows.inc_by(rows);
    }

    pub(crate) fn upload_rejected(&self) {
        self.uploads.get_or_create(&Outcome { outcome: "rejected" }).inc();
    }

    pub(crate) fn run_finished(&self, computation: &str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "failed" };
        self.runs.get_or_create(&RunLabels { computation: computation.to_owned(), outcome }).inc();
        self.run_seconds.observe(seconds);
    }

    pub(crate) fn released(&self, channel: &str, released: u64, suppressed: u64) {
        self.releases.get_or_create(&ChannelLabel { channel: channel.to_owned() }).inc();
        self.cells_released.inc_by(released);
        self.cells_suppressed.inc_by(suppressed);
    }

    pub(crate) fn delivery(&self, ok: bool) {
        self.deliveries.get_or_create(&Outcome { outcome: if ok { "delivered" } else { "failed" } }).inc();
    }
}
