//! Activations the engine keeps until their sink takes them.
//!
//! A release that passed the gate and was audited, but whose delivery failed with an error the
//! destination may get over (brokers unreachable, a timeout, a full disk), is not lost: the released
//! batches are kept, sealed, in `activations/<id>.json`, and retried with exponential backoff (30 s,
//! doubling, at most an hour) by [`crate::Engine::retry_activations`] until the sink takes them (the
//! delivery is then audited like any other) or fails with an error retrying cannot fix (the
//! activation is then `failed`, audited, and kept for the record). Once delivered or failed, the
//! record keeps no rows. The recipient sees its
//! activations and their state over REST (`GET /v1/rooms/{room}/activations`).
//!
//! The batches are exactly what was released and audited: a retry sends the same rows under the
//! same release digest, never a new release.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first retry comes this long after the failure; each later one waits twice as long.
pub const FIRST_RETRY_SECONDS: u64 = 30;
/// The longest wait between retries.
pub const MAX_RETRY_SECONDS: u64 = 3600;

/// Where an activation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ActivationState {
    /// Waiting for its next attempt.
    Pending,
    /// The sink took it.
    Delivered { location: String },
    /// The sink refused it with an error retrying cannot fix.
    Failed { reason: String },
}

/// An activation as its recipient sees it (no rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationView {
    pub id: String,
    pub recipient: String,
    pub computation: String,
    pub run_id: String,
    pub release_digest: String,
    /// Sections and their row counts.
    pub sections: Vec<(String, usize)>,
    #[serde(flatten)]
    pub state: ActivationState,
    pub attempts: u32,
    pub last_error: String,
    pub created_at: u64,
    /// When the next attempt is due (seconds since the Unix epoch), while pending.
    pub next_attempt_at: u64,
}

/// A kept activation: its view and the released batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingActivation {
    #[serde(flatten)]
    pub view: ActivationView,
    /// Each section's batch as a base64 Arrow IPC stream.
    batches: Vec<(String, String)>,
}

/// The wait before attempt `attempts + 1`.
pub(crate) fn backoff(attempts: u32) -> u64 {
    FIRST_RETRY_SECONDS.saturating_mul(1u64 << attempts.min(20)).min(MAX_RETRY_SECONDS)
}

fn encode_batch(batch: &RecordBatch) -> Result<String> {
    let mut bytes = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode_batch(text: &str) -> Result<RecordBatch> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Computation(format!("a kept activation is corrupt: {e}")))?;
    let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    reader
        .next()
        .ok_or_else(|| Error::Computation("a kept activation has an empty section".into()))?
        .map_err(Error::from)
}

impl PendingActivation {
    pub(crate) fn new(view: ActivationView, sections: &[(String, RecordBatch)]) -> Result<Self> {
        let batches =
            sections.iter().map(|(name, batch)| Ok((name.clone(), encode_batch(batch)?))).collect::<Result<_>>()?;
        Ok(Self { view, batches })
    }

    /// Drops the rows once the activation is delivered or failed for good: the record stays, the
    /// released data is no longer kept.
    pub(crate) fn forget_rows(&mut self) {
        self.batches.clear();
    }

    /// The released sections to send again.
    pub(crate) fn sections(&self) -> Result<Vec<(String, RecordBatch)>> {
        self.batches.iter().map(|(name, text)| Ok((name.clone(), decode_batch(text)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};

    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_up_to_an_hour() {
        assert_eq!((0..9).map(backoff).collect::<Vec<_>>(), [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY_SECONDS);
    }

    #[test]
    fn kept_sections_come_back_exactly() {
        let batch = RecordBatch::try_from_iter([(
            "user_id",
            Arc::new(StringArray::from(vec![Some("u1"), None, Some("u3")])) as ArrayRef,
        )])
        .unwrap();
        let view = ActivationView {
            id: "a1".into(),
            recipient: "news".into(),
            computation: "lookalike".into(),
            run_id: "r1".into(),
            release_digest: "00".repeat(32),
            sections: vec![("audience".into(), 3)],
            state: ActivationState::Pending,
            attempts: 1,
            last_error: "timed out".into(),
            created_at: 1,
            next_attempt_at: 31,
        };
        let kept = PendingActivation::new(view, &[("audience".into(), batch.clone())]).unwrap();
        let json = serde_json::to_string(&kept).unwrap();
        assert!(json.contains("\"state\":\"pending\""), "{json}");
        let back: PendingActivation = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sections().unwrap(), [("audience".to_owned(), batch)]);
    }
}
