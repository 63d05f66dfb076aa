//! The Kafka sink: each released row becomes one Kafka message on the recipient's topic.
//!
//! # Message schema (version 1)
//!
//! - **key**: `<computation>/<run id>/<section>/<row index>` — deterministic, so a consumer can
//!   de-duplicate a delivery that was retried;
//! - **value**: JSON `{"schema_version": 1, "room_id", "computation", "run_id", "section",
//!   "recipient", "release_digest", "row_index", "rows", "row": {…}}` (`rows`: how many rows the
//!   section has, so a consumer knows when it has all of them);
//! - **headers**: `sealroom-schema-version`, `sealroom-room-id`, `sealroom-computation`,
//!   `sealroom-run-id`, `sealroom-section`, `sealroom-release-digest` (the SHA-256 the audit log
//!   records for this release).
//!
//! # Delivery guarantees
//!
//! The producer is idempotent (`enable.idempotence=true`, `acks=all`): librdkafka retries what the
//! broker did not acknowledge without duplicating or reordering within a partition. A delivery is
//! acknowledged only when every message of it is, and [`Sink::flush`] waits for all of them. Kafka
//! without transactions cannot make a delivery all-or-nothing: when `send` fails, some of its
//! messages may be on the topic. The engine then keeps the activation and retries it whole; the
//! deterministic keys let consumers drop the repeats (at-least-once, exactly-once per key).
//!
//! **Back-pressure**: when librdkafka's queue is full (`queue.buffering.max.messages`), `send` waits
//! for room (up to `queue_full_timeout_ms`) instead of failing or growing without bound.
//!
//! **Retries**: errors the broker may get over (timeouts, a leader moving, brokers down) are retried
//! by librdkafka within `delivery_timeout_ms`, then by this sink `retries` more times with
//! exponential backoff. [`FATAL`] errors are not retried: they need an operator (a missing topic, an
//! oversized message, denied authorization, failed authentication).

use std::io::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};

use crate::{Delivery, DeliveryReceipt, Error, Result, Sink};

const SINK: &str = "kafka";
/// Version of the message schema above.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors that retrying cannot fix.
pub const FATAL: [RDKafkaErrorCode; 13] = [
    RDKafkaErrorCode::UnknownTopicOrPartition,
    RDKafkaErrorCode::UnknownTopic,
    RDKafkaErrorCode::InvalidTopic,
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::TopicAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
    RDKafkaErrorCode::SaslAuthenticationFailed,
    RDKafkaErrorCode::Authentication,
    RDKafkaErrorCode::PolicyViolation,
    RDKafkaErrorCode::UnsupportedVersion,
    RDKafkaErrorCode::Fatal,
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials. The password is read from a file, so that it is never in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    /// A file holding the password (trailing newline ignored).
    pub password_file: std::path::PathBuf,
}

/// TLS to the brokers (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates to trust for the brokers (default: the system's).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key, for brokers that require mutual TLS.
    #[serde(default)]
    pub certificate_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Lz4,
    Zstd,
}

fn default_delivery_timeout_ms() -> u64 {
    30_000
}
fn default_queue_full_timeout_ms() -> u64 {
    30_000
}
fn default_max_message_bytes() -> usize {
    1_000_000
}
fn default_queue_messages() -> u32 {
    100_000
}
fn default_retries() -> u32 {
    3
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// Configuration of the Kafka sink (unknown fields are errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// The topic activations go to. It must exist: the sink never creates topics.
    pub topic: String,
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub client_id: Option<String>,
    /// How long librdkafka may try to deliver a message (`delivery.timeout.ms`).
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// How long `send` waits for room in a full producer queue (back-pressure) before failing.
    #[serde(default = "default_queue_full_timeout_ms")]
    pub queue_full_timeout_ms: u64,
    /// The largest message sent (`message.max.bytes`); keep it at most the topic's `max.message.bytes`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// The producer queue's capacity in messages (`queue.buffering.max.messages`).
    #[serde(default = "default_queue_messages")]
    pub queue_buffering_max_messages: u32,
    /// Retries of messages librdkafka gave up on with a retriable error.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long `open` and `healthcheck` wait for the cluster's metadata.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl KafkaSinkConfig {
    fn check(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config { sink: SINK, message });
        if self.brokers.is_empty() || self.brokers.iter().any(|b| !b.contains(':')) {
            return bad(format!("`brokers` must list `host:port` addresses; got {:?}", self.brokers));
        }
        if self.topic.is_empty()
            || self.topic.len() > 249
            || !self.topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad(format!(
                "`topic` {:?} is not a Kafka topic name (1..249 of letters, digits, '.', '_', '-')",
                self.topic
            ));
        }
        match (self.security_protocol.uses_sasl(), &self.sasl) {
            (true, None) => {
                return bad(format!("security_protocol {} needs a `sasl:` section", self.security_protocol.name()));
            }
            (false, Some(_)) => {
                return bad("a `sasl:` section needs security_protocol sasl_plaintext or sasl_ssl".into());
            }
            _ => {}
        }
        if self.tls.is_some() && !self.security_protocol.uses_tls() {
            return bad("a `tls:` section needs security_protocol ssl or sasl_ssl".into());
        }
        // 1 KiB of each message is left for its key and headers (see `encode`).
        if !(2_000..=100_000_000).contains(&self.max_message_bytes) {
            return bad(format!("max_message_bytes {} must be 2000 to 100000000", self.max_message_bytes));
        }
        for (name, ms) in [
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("queue_full_timeout_ms", self.queue_full_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return bad(format!("{name} {ms} must be 1 to 3600000 (one hour)"));
            }
        }
        Ok(())
    }

    /// The librdkafka configuration.
    fn client_config(&self) -> Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("delivery.timeout.ms", self.delivery_timeout_ms.to_string())
            .set("message.max.bytes", self.max_message_bytes.to_string())
            .set("queue.buffering.max.messages", self.queue_buffering_max_messages.to_string())
            .set("compression.type", format!("{:?}", self.compression).to_lowercase())
            .set("security.protocol", self.security_protocol.name())
            .set("client.id", self.client_id.clone().unwrap_or_else(|| "sealroom".into()));
        if let Some(sasl) = &self.sasl {
            let password = std::fs::read_to_string(&sasl.password_file).map_err(|e| Error::Config {
                sink: SINK,
                message: format!("sasl.password_file {}: {e}", sasl.password_file.display()),
            })?;
            c.set("sasl.mechanism", sasl.mechanism.name())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", password.trim_end_matches(['\n', '\r']));
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.certificate_file),
                ("ssl.key.location", &tls.key_file),
            ] {
                if let Some(p) = path {
                    c.set(key, p.display().to_string());
                }
            }
        }
        Ok(c)
    }
}

/// The Kafka sink. See the module docs.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    state: State,
}

/// Where a sink is in its lifecycle.
enum State {
    Built,
    Open(FutureProducer),
    Closed,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.config.brokers)
            .field("topic", &self.config.topic)
            .field("open", &matches!(self.state, State::Open(_)))
            .finish()
    }
}

fn kafka_error(what: &str, e: &KafkaError) -> Error {
    let hint = match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            " (the topic does not exist: sealroom never creates topics; create it on the cluster)"
        }
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            " (a message is larger than the topic or broker accepts: raise the topic's max.message.bytes)"
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication,
        ) => " (check the sink's credentials and the topic's ACLs)",
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::AllBrokersDown) => {
            " (the brokers did not acknowledge in time: are they reachable?)"
        }
        _ => "",
    };
    Error::Delivery { sink: SINK, message: format!("{what}: {e}{hint}"), fatal: is_fatal(e) }
}

/// Whether retrying cannot help.
pub fn is_fatal(e: &KafkaError) -> bool {
    e.rdkafka_error_code().is_some_and(|c| FATAL.contains(&c))
}

/// One message of a delivery.
struct Message {
    key: String,
    value: Vec<u8>,
}

fn encode(delivery: &Delivery, max_bytes: usize) -> Result<Vec<Message>> {
    let m = &delivery.metadata;
    let rows = crate::json_lines(SINK, &delivery.batch)?;
    let open = m.envelope_open(SCHEMA_VERSION);
    let total = delivery.batch.num_rows();
    let mut out = Vec::with_capacity(total);
    for (i, line) in rows.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let mut value = Vec::with_capacity(open.len() + line.len() + 48);
        value.extend_from_slice(open.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(value, "\"row_index\":{i},\"rows\":{total},\"row\":");
        value.extend_from_slice(line);
        value.push(b'}');
        // librdkafka counts the key, headers and framing too; leave them 1 KiB.
        if value.len() + 1024 > max_bytes {
            return Err(Error::Delivery {
                sink: SINK,
                message: format!(
                    "row {i} of section '{}' encodes to {} bytes, over max_message_bytes {max_bytes} (less 1 KiB \
                     for key and headers); nothing was sent. Raise max_message_bytes and the topic's \
                     max.message.bytes",
                    m.section,
                    value.len()
                ),
                fatal: true,
            });
        }
        out.push(Message { key: format!("{}/{}/{}/{i}", m.computation, m.run_id, m.section), value });
    }
    Ok(out)
}

fn headers(delivery: &Delivery) -> OwnedHeaders {
    let m = &delivery.metadata;
    let version = SCHEMA_VERSION.to_string();
    [
        ("sealroom-schema-version", version.as_str()),
        ("sealroom-room-id", m.room_id.as_str()),
        ("sealroom-computation", m.computation.as_str()),
        ("sealroom-run-id", m.run_id.as_str()),
        ("sealroom-section", m.section.as_str()),
        ("sealroom-release-digest", m.release_digest.as_str()),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }))
}

impl KafkaSink {
    pub fn new(config: KafkaSinkConfig) -> Self {
        Self { config, state: State::Built }
    }

    /// The registry factory.
    pub fn from_config(config: serde_json::Value) -> Result<Box<dyn Sink>> {
        let config: KafkaSinkConfig =
            serde_json::from_value(config).map_err(|e| Error::Config { sink: SINK, message: e.to_string() })?;
        config.check()?;
        Ok(Box::new(Self::new(config)))
    }

    fn producer(&self) -> Result<&FutureProducer> {
        match &self.state {
            State::Closed => Err(Error::Lifecycle { sink: SINK, message: "send after close" }),
            State::Built => Err(Error::Lifecycle { sink: SINK, message: "send before open" }),
            State::Open(p) => Ok(p),
        }
    }

    /// Checks that the brokers answer and the topic exists with partitions.
    async fn check_topic(producer: &FutureProducer, config: &KafkaSinkConfig) -> Result<()> {
        let producer = producer.clone();
        let topic = config.topic.clone();
        let brokers = config.brokers.join(",");
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        tokio::task::spawn_blocking(move || {
            let metadata = producer.client().fetch_metadata(Some(&topic), timeout).map_err(|e| Error::Delivery {
                sink: SINK,
                message: format!("cannot reach the Kafka brokers {brokers} within {} ms: {e}", timeout.as_millis()),
                fatal: false,
            })?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            match found {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                Some(t) if t.error().is_some() => Err(Error::Delivery {
                    sink: SINK,
                    message: format!(
                        "topic '{topic}' on {brokers}: {:?}; sealroom never creates topics: create it first",
                        t.error().map(RDKafkaErrorCode::from)
                    ),
                    fatal: true,
                }),
                _ => Err(Error::Delivery {
                    sink: SINK,
                    message: format!(
                        "topic '{topic}' does not exist on {brokers}; sealroom never creates topics: create it first"
                    ),
                    fatal: true,
                }),
            }
        })
        .await
        .map_err(|e| Error::Delivery {
            sink: SINK,
            message: format!("metadata task failed: {e}"),
            fatal: false,
        })?
    }

    /// Enqueues one message, waiting while the producer queue is full (back-pressure).
    async fn enqueue(&self, delivery: &Delivery, message: &Message, headers: &OwnedHeaders) -> Result<DeliveryFuture> {
        let producer = self.producer()?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.queue_full_timeout_ms);
        // A refused record comes back and is sent again as it is.
        let mut record = FutureRecord::to(&self.config.topic)
            .key(message.key.as_bytes())
            .payload(message.value.as_slice())
            .headers(headers.clone());
        loop {
            match producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), refused))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = refused;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => {
                    let what = format!(
                        "could not queue message {} of {}/{} for topic '{}'",
                        message.key, delivery.metadata.computation, delivery.metadata.section, self.config.topic
                    );
                    return Err(kafka_error(&what, &e));
                }
            }
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn sink_type(&self) -> &'static str {
        SINK
    }

    async fn open(&mut self) -> Result<()> {
        if matches!(self.state, State::Closed) {
            return Err(Error::Lifecycle { sink: SINK, message: "open after close" });
        }
        let producer: FutureProducer = self
            .config
            .client_config()?
            .create()
            .map_err(|e| Error::Config { sink: SINK, message: format!("librdkafka refused the configuration: {e}") })?;
        Self::check_topic(&producer, &self.config).await?;
        self.state = State::Open(producer);
        Ok(())
    }

    async fn send(&mut self, delivery: &Delivery) -> Result<DeliveryReceipt> {
        self.producer()?;
        let messages = encode(delivery, self.config.max_message_bytes)?;
        let headers = headers(delivery);
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut placed: Vec<(i32, i64)> = Vec::with_capacity(messages.len());
        for attempt in 0..=self.config.retries {
            let mut futures = Vec::with_capacity(pending.len());
            for &i in &pending {
                futures.push((i, self.enqueue(delivery, &messages[i], &headers).await?));
            }
            let mut failed = Vec::new();
            let mut last_error = None;
            for (i, future) in futures {
                match future.await {
                    Ok(Ok(d)) => placed.push((d.partition, d.offset)),
                    Ok(Err((e, _))) if is_fatal(&e) => {
                        return Err(kafka_error(&format!("message {} was refused", messages[i].key), &e));
                    }
                    Ok(Err((e, _))) => {
                        failed.push(i);
                        last_error = Some(e);
                    }
                    Err(_) => {
                        return Err(Error::Delivery {
                            sink: SINK,
                            message: "the producer was dropped during the delivery".into(),
                            fatal: false,
                        });
                    }
                }
            }
            let Some(e) = last_error else {
                break;
            };
            if attempt == self.config.retries {
                let what = format!(
                    "{} of {} messages were not delivered after {} retries",
                    failed.len(),
                    messages.len(),
                    self.config.retries
                );
                return Err(kafka_error(&what, &e));
            }
            tracing::warn!(failed = failed.len(), attempt, error = %e, topic = %self.config.topic, "retrying Kafka messages");
            tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
            pending = failed;
        }
        let location = match (placed.iter().map(|p| p.1).min(), placed.iter().map(|p| p.1).max()) {
            (Some(lo), Some(hi)) => {
                let mut partitions: Vec<i32> = placed.iter().map(|p| p.0).collect();
                partitions.sort_unstable();
                partitions.dedup();
                format!("kafka:{} partitions {:?} offsets {lo}..={hi}", self.config.topic, partitions)
            }
            _ => format!("kafka:{} (no rows)", self.config.topic),
        };
        Ok(DeliveryReceipt { location, rows: messages.len() })
    }

    async fn flush(&mut self) -> Result<()> {
        let producer = self.producer()?.clone();
        let timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| Error::Delivery { sink: SINK, message: format!("flush task failed: {e}"), fatal: false })?
            .map_err(|e| kafka_error("flush", &e))
    }

    async fn close(&mut self) -> Result<()> {
        if matches!(self.state, State::Open(_)) {
            self.flush().await?;
        }
        self.state = State::Closed;
        Ok(())
    }

    async fn healthcheck(&self) -> Result<()> {
        let producer = self.producer()?;
        Self::check_topic(producer, &self.config).await
    }
}
