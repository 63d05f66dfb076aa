//! Activation sinks: where released results go when a room delivers them to a participant.
//!
//! Every sink implements [`Sink`] and is built from a typed configuration by the [`SinkRegistry`].
//! A sink only ever receives [`Delivery`] values, and the engine only makes those out of results that
//! passed its release gate: this crate is transport, never a way around the gate. It must never
//! inspect, log or keep the rows it delivers beyond what delivery needs.
//!
//! # Lifecycle
//!
//! 1. **build**: [`SinkRegistry::build`] parses the typed configuration (unknown fields are errors);
//!    nothing is touched yet.
//! 2. **open**: [`Sink::open`] acquires resources (creates the directory, connects to brokers) and
//!    fails with a clear error if the destination is unusable. Called once, before any send.
//! 3. **send**: [`Sink::send`] delivers one released batch. The file sink is all-or-nothing: when
//!    `send` returns an error, the destination holds none of it. The Kafka sink cannot be (no
//!    transactions): it is at-least-once with deterministic message keys, so a retried delivery is
//!    de-duplicated by consumers (see [`kafka`]).
//! 4. **flush**: [`Sink::flush`] makes everything sent so far durable at the destination. The engine
//!    flushes after each delivery before it records the delivery as done.
//! 5. **close**: [`Sink::close`] flushes and releases resources; later calls to `send` fail.
//!
//! [`Sink::healthcheck`] may be called at any time after `open`.

pub mod file;
pub mod kafka;
mod registry;

use std::fmt;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

pub use registry::{SinkFactory, SinkRegistry};

/// Errors of sinks and of the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown sink type '{requested}'; available sinks: {}", available.join(", "))]
    UnknownSinkType { requested: String, available: Vec<String> },
    #[error("invalid configuration for the {sink} sink: {message}")]
    Config { sink: &'static str, message: String },
    #[error("{sink} sink: {operation} {path}: {source}")]
    Io { sink: &'static str, operation: &'static str, path: String, source: std::io::Error },
    #[error("{sink} sink: could not encode the delivery: {message}")]
    Encode { sink: &'static str, message: String },
    #[error("{sink} sink: {message}")]
    Lifecycle { sink: &'static str, message: &'static str },
    /// The destination refused or did not acknowledge a delivery. `fatal`: retrying cannot help
    /// (a missing topic, an oversized message, denied access); otherwise it may.
    #[error("{sink} sink: {message}")]
    Delivery { sink: &'static str, message: String, fatal: bool },
}

impl Error {
    /// Whether retrying the same delivery later could succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Delivery { fatal, .. } => !fatal,
            Self::Io { .. } => true,
            Self::UnknownSinkType { .. } | Self::Config { .. } | Self::Encode { .. } | Self::Lifecycle { .. } => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a delivery is: which release of which room it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMetadata {
    pub room_id: String,
    pub computation: String,
    pub run_id: String,
    /// The result section the batch holds (for example `by_segment`).
    pub section: String,
    /// The participant the delivery is for.
    pub recipient: String,
    /// Lowercase hex SHA-256 of the released result, as recorded in the audit log.
    pub release_digest: String,
}

impl DeliveryMetadata {
    /// The release facts as a JSON object left open for more keys:
    /// `{"schema_version":…,"room_id":…,"computation":…,"run_id":…,"section":…,"recipient":…,"release_digest":…,`
    /// — each row of a delivery is this, its own keys, and `}` (NDJSON lines, Kafka values).
    pub(crate) fn envelope_open(&self, schema_version: u32) -> String {
        let envelope = serde_json::json!({
            "schema_version": schema_version,
            "room_id": self.room_id,
            "computation": self.computation,
            "run_id": self.run_id,
            "section": self.section,
            "recipient": self.recipient,
            "release_digest": self.release_digest,
        });
        let mut open = envelope.to_string();
        open.pop();
        open.push(',');
        open
    }
}

/// The rows of `batch` as JSON objects, one per line.
pub(crate) fn json_lines(sink: &'static str, batch: &RecordBatch) -> Result<Vec<u8>> {
    let encode = |e: arrow::error::ArrowError| Error::Encode { sink, message: e.to_string() };
    let mut rows = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut rows);
    writer.write(batch).map_err(encode)?;
    writer.finish().map_err(encode)?;
    drop(writer);
    Ok(rows)
}

/// One released batch on its way to a participant.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub metadata: DeliveryMetadata,
    pub batch: RecordBatch,
}

/// Where a delivery ended up, for the audit log and the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// Sink-specific location: a file path, a topic and offset, …
    pub location: String,
    pub rows: usize,
}

/// A destination for released results. See the crate docs for the lifecycle.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// The sink type, as named in configurations (`file`).
    fn sink_type(&self) -> &'static str;
    async fn open(&mut self) -> Result<()>;
    async fn send(&mut self, delivery: &Delivery) -> Result<DeliveryReceipt>;
    async fn flush(&mut self) -> Result<()>;
    async fn close(&mut self) -> Result<()>;
    async fn healthcheck(&self) -> Result<()>;
}
