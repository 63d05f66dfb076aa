//! The Kafka sink against librdkafka's own in-process broker (`MockCluster`), with broker errors
//! injected through the mock, and against a real Kafka-protocol broker when `KAFKA_BROKERS` is set
//! (scripts/test starts one).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Headers as _;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use sealroom_connectors::{Delivery, DeliveryMetadata, Error, Sink, SinkRegistry};

fn delivery(rows: usize, section: &str) -> Delivery {
    let ids: StringArray = (0..rows).map(|i| Some(format!("user-{i}"))).collect();
    let scores: UInt64Array = (0..rows as u64).map(Some).collect();
    let batch =
        RecordBatch::try_from_iter([("user_id", Arc::new(ids) as ArrayRef), ("rank", Arc::new(scores) as ArrayRef)])
            .unwrap();
    Delivery {
        metadata: DeliveryMetadata {
            room_id: "ab".repeat(32),
            computation: "lookalike".into(),
            run_id: "r20261121T000000000Z-0001".into(),
            section: section.into(),
            recipient: "news".into(),
            release_digest: "cd".repeat(32),
        },
        batch,
    }
}

fn sink(brokers: &str, topic: &str, extra: serde_json::Value) -> Box<dyn Sink> {
    let mut config = serde_json::json!({
        "type": "kafka",
        "brokers": brokers.split(',').collect::<Vec<_>>(),
        "topic": topic,
        "delivery_timeout_ms": 10_000,
        "connect_timeout_ms": 5_000,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    SinkRegistry::default().build(&config).unwrap()
}

/// A consumed message: key, JSON value, headers.
type Received = (String, serde_json::Value, Vec<(String, String)>);

/// Every message on `topic` (all partitions, from the beginning), read without a consumer group.
fn read_all(brokers: &str, topic: &str, partitions: i32, expected: usize) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sealroom-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expected && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        out.push((key, value, headers));
    }
    out
}

fn check_messages(messages: &[Received], rows: usize) {
    assert_eq!(messages.len(), rows);
    let keys: BTreeSet<&str> = messages.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(keys.len(), rows, "keys are unique per row");
    for (key, value, headers) in messages {
        let i = value["row_index"].as_u64().unwrap();
        assert_eq!(key, &format!("lookalike/r20261121T000000000Z-0001/audience/{i}"));
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["rows"], rows);
        assert_eq!(value["row"]["user_id"], format!("user-{i}"));
        assert_eq!(value["release_digest"], "cd".repeat(32));
        let header = |k: &str| headers.iter().find(|h| h.0 == k).map(|h| h.1.as_str());
        assert_eq!(header("sealroom-release-digest"), Some("cd".repeat(32).as_str()));
        assert_eq!(header("sealroom-room-id"), Some("ab".repeat(32).as_str()));
        assert_eq!(header("sealroom-computation"), Some("lookalike"));
        assert_eq!(header("sealroom-schema-version"), Some("1"));
    }
}

#[tokio::test]
async fn every_row_arrives_once_with_its_key_and_headers() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("activations", 3, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    // A queue of 16 messages for 300 rows: send waits for room instead of failing (back-pressure).
    let mut sink = sink(&brokers, "activations", serde_json::json!({"queue_buffering_max_messages": 16}));
    assert!(matches!(sink.send(&delivery(1, "audience")).await, Err(Error::Lifecycle { .. })));
    sink.open().await.unwrap();
    sink.healthcheck().await.unwrap();
    let receipt = sink.send(&delivery(300, "audience")).await.unwrap();
    sink.flush().await.unwrap();
    assert_eq!(receipt.rows, 300);
    assert!(receipt.location.starts_with("kafka:activations partitions"), "{}", receipt.location);
    sink.close().await.unwrap();
    assert!(matches!(sink.send(&delivery(1, "audience")).await, Err(Error::Lifecycle { .. })));
    check_messages(&read_all(&brokers, "activations", 3, 300), 300);
}

#[tokio::test]
async fn broker_errors_are_retried_until_delivered() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("activations", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut sink = sink(&brokers, "activations", serde_json::json!({}));
    sink.open().await.unwrap();
    // The next produce requests fail with errors a broker recovers from.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let receipt = sink.send(&delivery(50, "audience")).await.unwrap();
    sink.flush().await.unwrap();
    assert_eq!(receipt.rows, 50);
    // The idempotent producer retried without duplicates.
    check_messages(&read_all(&brokers, "activations", 1, 50), 50);
}

#[tokio::test]
async fn fatal_broker_errors_fail_at_once_and_say_why() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("activations", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut sink = sink(&brokers, "activations", serde_json::json!({"retries": 5}));
    sink.open().await.unwrap();
    mock.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 4]);
    let started = std::time::Instant::now();
    let err = sink.send(&delivery(3, "audience")).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("check the sink's credentials and the topic's ACLs"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "not retried: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_missing_topic_or_unreachable_brokers_fail_open() {
    let mock = MockCluster::new(1).unwrap();
    mock.topic_error("nowhere", RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART).unwrap();
    let mut missing = sink(&mock.bootstrap_servers(), "nowhere", serde_json::json!({}));
    let err = missing.open().await.unwrap_err();
    assert!(err.to_string().contains("topic 'nowhere'") && err.to_string().contains("never creates topics"), "{err}");
    assert!(!err.is_retriable());

    // Nothing listens on port 1.
    let mut unreachable = sink("127.0.0.1:1", "activations", serde_json::json!({"connect_timeout_ms": 1500}));
    let started = std::time::Instant::now();
    let err = unreachable.open().await.unwrap_err();
    assert!(err.to_string().contains("cannot reach the Kafka brokers 127.0.0.1:1 within 1500 ms"), "{err}");
    assert!(err.is_retriable());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_oversized_row_is_refused_before_anything_is_sent() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("activations", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut sink = sink(&brokers, "activations", serde_json::json!({"max_message_bytes": 2000}));
    sink.open().await.unwrap();
    let ids: StringArray = vec![Some("small".to_owned()), Some("x".repeat(5000))].into_iter().collect();
    let mut big = delivery(2, "audience");
    big.batch = RecordBatch::try_from_iter([("user_id", Arc::new(ids) as ArrayRef)]).unwrap();
    let err = sink.send(&big).await.unwrap_err();
    assert!(!err.is_retriable());
    assert!(
        err.to_string().contains("row 1 of section 'audience' encodes to")
            && err.to_string().contains("nothing was sent"),
        "{err}"
    );
    sink.flush().await.unwrap();
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let (_, high) = consumer.fetch_watermarks("activations", 0, Duration::from_secs(5)).unwrap();
    assert_eq!(high, 0, "the small row was not sent either");
}

#[test]
fn the_configuration_is_typed_and_checked() {
    let registry = SinkRegistry::default();
    let build = |c: serde_json::Value| registry.build(&c).map(|_| ()).unwrap_err().to_string();
    let err = build(serde_json::json!({"type": "kafka", "brokers": ["b:9092"], "topic": "t", "acks": "1"}));
    assert!(err.contains("unknown field `acks`"), "{err}");
    let err = build(serde_json::json!({"type": "kafka", "brokers": ["b"], "topic": "t"}));
    assert!(err.contains("`brokers` must list `host:port`"), "{err}");
    let err = build(serde_json::json!({"type": "kafka", "brokers": ["b:1"], "topic": "a topic"}));
    assert!(err.contains("not a Kafka topic name"), "{err}");
    let err =
        build(serde_json::json!({"type": "kafka", "brokers": ["b:1"], "topic": "t", "security_protocol": "sasl_ssl"}));
    assert!(err.contains("needs a `sasl:` section"), "{err}");
    let err = build(serde_json::json!({"type": "kafka", "brokers": ["b:1"], "topic": "t",
        "sasl": {"mechanism": "PLAIN", "username": "u", "password_file": "/p"}}));
    assert!(err.contains("needs security_protocol sasl_plaintext or sasl_ssl"), "{err}");
    let err = build(serde_json::json!({"type": "kafka", "brokers": ["b:1"], "topic": "t", "compression": "snappy"}));
    assert!(err.contains("unknown variant `snappy`"), "{err}");
}

/// Against a real Kafka-protocol broker (tansu in scripts/test, or any broker named by
/// `KAFKA_BROKERS`): the topic `KAFKA_TOPIC` (default `sealroom-activations`) is created with one
/// partition unless it exists.
#[tokio::test]
async fn a_real_broker_when_kafka_brokers_is_set() {
    let Ok(brokers) = std::env::var("KAFKA_BROKERS") else {
        eprintln!("KAFKA_BROKERS is not set: skipping the real-broker test (scripts/test sets it)");
        return;
    };
    let topic = std::env::var("KAFKA_TOPIC").unwrap_or_else(|_| "sealroom-activations".into());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let created = admin
        .create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();
    match &created[0] {
        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
        Err((t, e)) => panic!("cannot create topic {t}: {e}"),
    }
    let mut sink = sink(&brokers, &topic, serde_json::json!({"compression": "lz4"}));
    sink.open().await.unwrap_or_else(|e| panic!("{e}"));
    let receipt = sink.send(&delivery(120, "audience")).await.unwrap();
    sink.close().await.unwrap();
    assert_eq!(receipt.rows, 120);
    // The topic is fresh in scripts/test; with another broker earlier runs may have left messages.
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let (_, high) = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5)).unwrap();
    let messages = read_all(&brokers, &topic, 1, usize::try_from(high).unwrap());
    let ours: Vec<_> = messages.into_iter().skip(usize::try_from(high).unwrap() - 120).collect();
    check_messages(&ours, 120);
}
