//! Deal records: what a publisher sets up in its ad server for an audience the room released to it.
//!
//! Releasing a top-affinity result or a lookalike audience to the publisher's activation sink makes a
//! deal: its id (deterministic for the release, so a retried delivery carries the same id), the
//! segment ids (top affinity: the ranked segments, best first) or the audience reference (lookalike:
//! computation, run and the number of users), the publisher, the advertiser who ran the computation,
//! and an expiry. The deal travels with the release through the sink as a one-row `deal` section, is
//! kept (sealed) in `deals/<id>.json`, audited as `deal_created`, and listed over REST
//! (`GET /v1/rooms/{room}/deals`) for its publisher and advertiser. It holds nothing the release did
//! not: segment names the release already contains and counts the gate already passed.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder, UInt64Array};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;

/// How long a deal lasts after it is made.
pub const DEAL_DAYS: i64 = 30;
/// The most segments a top-affinity deal names.
pub const MAX_DEAL_SEGMENTS: usize = 10;

/// A deal for a released audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealRecord {
    /// `sr-` and 20 hex characters of SHA-256(room id, release digest, kind).
    pub deal_id: String,
    /// `top_affinity` or `lookalike_audience`.
    pub kind: String,
    pub publisher: String,
    pub advertiser: String,
    pub computation: String,
    pub run_id: String,
    /// Top affinity: the ranked segment ids, best first (at most [`MAX_DEAL_SEGMENTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// Lookalike: how many users the audience holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_size: Option<u64>,
    /// SHA-256 of the release the deal is for, as audited.
    pub release_digest: String,
    pub created_at: String,
    pub expires_at: String,
}

impl DealRecord {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        room_id: &str,
        kind: &str,
        publisher: &str,
        advertiser: &str,
        computation: &str,
        run_id: &str,
        segments: Vec<String>,
        audience_size: Option<u64>,
        release_digest: &str,
    ) -> Self {
        let digest = Sha256::new()
            .chain_update(room_id.as_bytes())
            .chain_update([0])
            .chain_update(release_digest.as_bytes())
            .chain_update([0])
            .chain_update(kind.as_bytes())
            .finalize();
        let now = chrono::Utc::now();
        let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Self {
            deal_id: format!("sr-{}", &hex::encode(digest)[..20]),
            kind: kind.to_owned(),
            publisher: publisher.to_owned(),
            advertiser: advertiser.to_owned(),
            computation: computation.to_owned(),
            run_id: run_id.to_owned(),
            segments,
            audience_size,
            release_digest: release_digest.to_owned(),
            created_at: time(now),
            expires_at: time(now + chrono::Duration::days(DEAL_DAYS)),
        }
    }

    /// The deal as the one-row `deal` section a sink receives.
    pub(crate) fn to_record_batch(&self) -> Result<RecordBatch> {
        let text = |v: &str| Arc::new(StringArray::from(vec![v.to_owned()])) as ArrayRef;
        let mut segments = ListBuilder::new(StringBuilder::new());
        for s in &self.segments {
            segments.values().append_value(s);
        }
        segments.append(true);
        Ok(RecordBatch::try_from_iter([
            ("deal_id", text(&self.deal_id)),
            ("kind", text(&self.kind)),
            ("publisher", text(&self.publisher)),
            ("advertiser", text(&self.advertiser)),
            ("computation", text(&self.computation)),
            ("run_id", text(&self.run_id)),
            ("segments", Arc::new(segments.finish()) as ArrayRef),
            ("audience_size", Arc::new(UInt64Array::from(vec![self.audience_size])) as ArrayRef),
            ("release_digest", text(&self.release_digest)),
            ("created_at", text(&self.created_at)),
            ("expires_at", text(&self.expires_at)),
        ])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deal_id_is_the_releases_and_the_deal_lasts_thirty_days() {
        let a = DealRecord::new("room", "lookalike_audience", "news", "acme", "l", "r1", vec![], Some(500), "d1");
        let again = DealRecord::new("room", "lookalike_audience", "news", "acme", "l", "r1", vec![], Some(500), "d1");
        let other = DealRecord::new("room", "lookalike_audience", "news", "acme", "l", "r1", vec![], Some(400), "d2");
        assert_eq!(a.deal_id, again.deal_id, "a retried delivery carries the same deal id");
        assert_ne!(a.deal_id, other.deal_id);
        assert!(a.deal_id.starts_with("sr-") && a.deal_id.len() == 23, "{}", a.deal_id);
        let created = chrono::DateTime::parse_from_rfc3339(&a.created_at).unwrap();
        let expires = chrono::DateTime::parse_from_rfc3339(&a.expires_at).unwrap();
        assert_eq!((expires - created).num_days(), DEAL_DAYS);
        let batch = a.to_record_batch().unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (1, 11));
    }
}
