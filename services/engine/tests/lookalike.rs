//! Lookalike audiences end to end: the advertiser's matched customers are the seed, a model is
//! trained inside the engine on the publisher's features, the advertiser sees k-anonymous metrics,
//! the model goes only to `model_to`, and the top of the ranking (never a seed user) only to the
//! publisher's sink. Every release is audited.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, StringArray, StringBuilder};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use sealroom_engine::audit::AuditEvent;
use sealroom_engine::{CellValue, Channel, Engine, Error, ReleasedCell, SinkBinding};
use sealroom_proto::RoomFile;

mod common;
use common::digest;

const ADV: &str = "adv";
const PUB: &str = "pub";
const USERS: usize = 3000;

fn room(k: u32) -> String {
    format!(
        r#"
name: lookalike room
{parties}tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email }}
      - {{ name: age, type: int64, nullable: true }}
      - {{ name: income, type: float64, nullable: true }}
      - {{ name: region, type: string, nullable: true }}
      - {{ name: subscriber, type: bool, nullable: true }}
      - {{ name: segments, type: string_list, identifier: segment, nullable: true }}
computations:
  - name: lookalike
    lookalike:
      matching: {{ advertiser_table: crm, publisher_table: users }}
      model_to: [adv]
      audience_to: pub
      max_audience: 1000
      seed: 7
    run_by: [adv]
    results_to: [adv, pub]
  - name: lookalike_forest
    lookalike:
      matching: {{ advertiser_table: crm, publisher_table: users }}
      features: [age, region, segments]
      model: forest
    run_by: [adv]
    results_to: [adv]
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: users }}
    run_by: [adv]
    results_to: [adv]
privacy:
  k_thresholds: [{{ set_by: pub, k: {k} }}]
attestation: {{ allow_simulated: true }}
"#,
        parties = common::participants(ADV, PUB, true)
    )
}

/// The publisher's users and which of them are the advertiser's customers: older users in the
/// north who like sports are far more often customers. Deterministic.
struct World {
    engine: Engine,
    seed_users: HashSet<String>,
    northerners: HashSet<String>,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(k: u32) -> Self {
        Self::with_sink(k, None).await
    }

    /// The publisher's activation sink: `sink`, or a file sink in the world's directory.
    async fn with_sink(k: u32, sink: Option<serde_json::Value>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("activations");
        let sinks = vec![SinkBinding {
            participant: "pub".into(),
            room: None,
            config: sink.unwrap_or_else(|| serde_json::json!({"type": "file", "path": out})),
        }];
        let contract = RoomFile::parse(&room(k), "lookalike").unwrap();
        let engine = common::open(dir.path(), vec![contract], sinks).await;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let regions = ["north", "south", "east", "west"];
        let (mut ages, mut incomes, mut region, mut subscriber) = (vec![], vec![], vec![], vec![]);
        let mut segments = ListBuilder::new(StringBuilder::new());
        let (mut seed_users, mut northerners) = (HashSet::new(), HashSet::new());
        for i in 0..USERS {
            let age: i64 = rng.random_range(18..80);
            let r = regions[rng.random_range(0..4)];
            let sports = rng.random_bool(0.3);
            let travel = rng.random_bool(0.4);
            ages.push(if i % 50 == 0 { None } else { Some(age) });
            incomes.push(if rng.random_bool(0.1) { None } else { Some(rng.random_range(20_000.0..120_000.0)) });
            region.push(Some(r.to_owned()));
            if r == "north" {
                northerners.insert(format!("u{i}"));
            }
            subscriber.push(Some(rng.random_bool(0.5)));
            if sports {
                segments.values().append_value("sports");
            }
            if travel {
                segments.values().append_value("travel");
            }
            // A segment three users hold: never a feature under k.
            if i < 3 {
                segments.values().append_value("rare_hobby");
            }
            segments.append(true);
            let logit = 2.0 * f64::from(r == "north") + 0.06 * (age as f64 - 50.0) + 1.5 * f64::from(sports) - 3.5;
            if rng.random_bool(1.0 / (1.0 + (-logit).exp())) {
                seed_users.insert(format!("u{i}"));
            }
        }
        let ids: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
        let users = RecordBatch::try_from_iter(vec![
            ("user_id", Arc::new(StringArray::from_iter_values(&ids)) as ArrayRef),
            ("email", Arc::new(StringArray::from_iter_values(ids.iter().map(|u| digest(&format!("{u}@mail"))))) as _),
            ("age", Arc::new(Int64Array::from(ages)) as _),
            ("income", Arc::new(Float64Array::from(incomes)) as _),
            ("region", Arc::new(StringArray::from(region)) as _),
            ("subscriber", Arc::new(BooleanArray::from(subscriber)) as _),
            ("segments", Arc::new(segments.finish()) as _),
        ])
        .unwrap();
        // The CRM: every seed user's email, and 200 customers the publisher does not have.
        let mut customers: Vec<String> = seed_users.iter().map(|u| format!("{u}@mail")).collect();
        customers.sort();
        customers.extend((0..200).map(|i| format!("stranger{i}@mail")));
        let crm = RecordBatch::try_from_iter(vec![
            (
                "customer_id",
                Arc::new(StringArray::from_iter_values((0..customers.len()).map(|i| format!("c{i}")))) as ArrayRef,
            ),
            ("email", Arc::new(StringArray::from_iter_values(customers.iter().map(|e| digest(e)))) as _),
        ])
        .unwrap();
        common::upload(&engine, ADV, "crm", vec![crm]).await.unwrap();
        common::upload(&engine, PUB, "users", vec![users]).await.unwrap();
        Self { engine, seed_users, northerners, out, _dir: dir }
    }

    fn caller(&self, token: &str) -> sealroom_engine::Caller {
        common::caller(&self.engine, token)
    }

    fn audit(&self) -> Vec<AuditEvent> {
        self.engine.audit_entries(&self.caller(ADV)).unwrap().into_iter().map(|e| e.event).collect()
    }

    /// The user ids of every audience file the publisher's sink holds, file by file.
    fn delivered(&self) -> Vec<Vec<(String, u64)>> {
        let mut files: Vec<_> = std::fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("-audience-"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        assert_eq!(v["section"], "audience", "{l}");
                        (v["row"]["user_id"].as_str().expect(l).to_owned(), v["row"]["rank"].as_u64().expect(l))
                    })
                    .collect()
            })
            .collect()
    }
}

fn real(cell: &ReleasedCell) -> Option<f64> {
    match cell {
        ReleasedCell::Value(CellValue::Real(v)) => Some(*v),
        _ => None,
    }
}

#[tokio::test]
async fn the_advertiser_sees_metrics_the_model_goes_to_model_to_and_the_audience_to_the_publisher() {
    let world = World::new(20).await;
    let seeds = world.seed_users.len() as u64;
    assert!((300..800).contains(&seeds), "the world has a seed of a useful size: {seeds}");

    // Metrics: k-anonymous, about held-out users.
    let released = common::run(&world.engine, ADV, "lookalike").await;
    let summary = released.section("summary").unwrap();
    let cells = summary.rows()[0].cells();
    assert_eq!(common::count(&cells[0]), Some(USERS as u64));
    assert_eq!(common::count(&cells[1]), Some(seeds), "the seed is the matched publisher users");
    let held_out = common::count(&cells[2]).unwrap();
    assert_eq!(held_out, (seeds as f64 * 0.3).round() as u64);
    let auc = real(&cells[3]).unwrap();
    assert!(auc > 0.75, "the model finds the seed's pattern on held-out users: AUC {auc}");
    let recall = real(&cells[4]).unwrap();
    assert!(recall > 0.2, "better than the 10% a random ranking finds: {recall}");
    assert!(summary.description().contains("logistic"), "{}", summary.description());
    assert!(summary.description().contains("segments held by fewer than k = 20"), "{}", summary.description());
    let reach = released.section("reach").unwrap();
    assert_eq!(reach.rows().len(), 7);
    assert_eq!(reach.rows()[0].dimensions(), ["1%"]);
    // 1% of ~900 held-out users is 9: under k, suppressed.
    assert!(matches!(reach.rows()[0].cells()[1], ReleasedCell::Suppressed));
    let ten = &reach.rows()[3];
    assert_eq!(ten.dimensions(), ["10%"]);
    assert_eq!(common::count(&ten.cells()[0]), Some(((USERS as u64 - seeds) as f64 * 0.1).round() as u64));
    assert!(real(&ten.cells()[3]).unwrap() > 1.5, "the top 10% is richer in seed users than the base");

    // The model: to adv (model_to), not to pub; the schema names no segment under k.
    let model = world.engine.release_model(&world.caller(ADV), "lookalike", None, Channel::Rest).unwrap();
    let json = model.json();
    assert_eq!(json["model_kind"], "logistic");
    assert_eq!(json["seed_individuals"], seeds);
    assert_eq!(json["model"]["model"], "logistic");
    let features: Vec<&str> =
        json["model"]["schema"]["features"].as_array().unwrap().iter().map(|f| f["column"].as_str().unwrap()).collect();
    for expected in ["age", "income", "region", "subscriber", "segments=sports", "segments=travel"] {
        assert!(features.contains(&expected), "{expected} in {features:?}");
    }
    assert!(!json.to_string().contains("rare_hobby"), "a segment three users hold is never named");
    assert!(!json.to_string().contains("@mail"), "no identifier in the model");
    assert_eq!(sealroom_engine::release_gate::release_digest_of(json), model.digest());
    let err = world.engine.release_model(&world.caller(PUB), "lookalike", None, Channel::Rest).unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
    assert!(err.to_string().contains("model_to: adv"), "{err}");
    let err = world.engine.release_model(&world.caller(ADV), "lookalike_forest", None, Channel::Rest).unwrap_err();
    assert!(err.to_string().contains("to nobody"), "{err}");
    let err = world.engine.release_model(&world.caller(ADV), "overlap", None, Channel::Rest).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)) && err.to_string().contains("not a lookalike"), "{err}");

    // The audience: the publisher's own users, never a seed user, to its sink only.
    let delivery = world.engine.deliver_audience(&world.caller(PUB), "lookalike", None, 500).await.unwrap();
    assert_eq!(delivery.audience, 500);
    // A deal for it: to the publisher's sink with the audience, and listed for publisher and advertiser.
    let deals = world.engine.deals(&world.caller(PUB)).unwrap();
    assert_eq!(deals, world.engine.deals(&world.caller(ADV)).unwrap());
    assert_eq!(deals.len(), 1);
    let deal = &deals[0];
    assert_eq!(deal.deal_id, delivery.deal_id);
    assert_eq!(
        (deal.kind.as_str(), deal.publisher.as_str(), deal.advertiser.as_str()),
        ("lookalike_audience", "pub", "adv")
    );
    assert_eq!((deal.audience_size, deal.release_digest.as_str()), (Some(500), delivery.release_digest.as_str()));
    let deal_file = std::fs::read_dir(&world.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-deal-"))
        .expect("the deal went to the publisher's sink");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(deal_file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["row"]["deal_id"], deal.deal_id.as_str());
    assert_eq!(line["row"]["expires_at"], deal.expires_at.as_str());
    assert!(
        world.audit().iter().any(|e| matches!(e, AuditEvent::DealCreated { deal_id, .. } if *deal_id == deal.deal_id))
    );
    let files = world.delivered();
    assert_eq!(files.len(), 1);
    let audience = &files[0];
    assert_eq!(audience.len(), 500);
    assert_eq!(audience.iter().map(|(_, r)| *r).collect::<Vec<_>>(), (1..=500).collect::<Vec<u64>>());
    assert!(audience.iter().all(|(u, _)| !world.seed_users.contains(u)), "no seed user is in an audience");
    assert_eq!(audience.iter().map(|(u, _)| u).collect::<HashSet<_>>().len(), 500, "no user twice");
    // The audience looks like the seed: far more northerners than the base's quarter.
    let north = audience.iter().filter(|(u, _)| world.northerners.contains(u)).count();
    assert!(north > 250, "{north} of 500 from the north, where a quarter of the base lives");
    for (size, why) in [(5, "at least k = 20"), (1001, "max_audience is 1000")] {
        let err = world.engine.deliver_audience(&world.caller(PUB), "lookalike", None, size).await.unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)) && err.to_string().contains(why), "{err}");
    }
    let err = world.engine.deliver_audience(&world.caller(ADV), "lookalike", None, 100).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)) && err.to_string().contains("only 'pub'"), "{err}");
    let err = world.engine.deliver_audience(&world.caller(PUB), "lookalike_forest", None, 100).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err}");

    // Every release is audited with its digest.
    let audit = world.audit();
    assert!(audit.iter().any(|e| matches!(e, AuditEvent::ModelReleased { recipient, release_sha256, .. }
        if recipient == "adv" && release_sha256 == model.digest())));
    assert!(
        audit.iter().any(|e| matches!(e, AuditEvent::AudienceReleased { recipient, audience: 500, release_sha256, .. }
        if recipient == "pub" && *release_sha256 == delivery.release_digest))
    );
    assert!(audit.iter().any(|e| matches!(e, AuditEvent::ActivationDelivered { recipient, release_sha256, .. }
        if recipient == "pub" && *release_sha256 == delivery.release_digest)));

    // Deterministic: a second run ranks the same users first.
    common::run(&world.engine, ADV, "lookalike").await;
    world.engine.deliver_audience(&world.caller(PUB), "lookalike", Some("latest"), 500).await.unwrap();
    let files = world.delivered();
    assert_eq!(files.len(), 2);
    assert!(files.contains(audience), "the same seed and data give the same audience");
}

#[tokio::test]
async fn the_forest_learns_the_seed_and_keeps_every_leaf_about_k_users() {
    let world = World::new(20).await;
    let released = common::run(&world.engine, ADV, "lookalike_forest").await;
    let summary = released.section("summary").unwrap();
    let auc = real(&summary.rows()[0].cells()[3]).unwrap();
    assert!(auc > 0.75, "forest AUC {auc}");
    assert!(summary.description().contains("forest") && summary.description().contains("from 3 columns"));
}

#[tokio::test]
async fn a_seed_under_k_trains_nothing_and_says_so() {
    let world = World::new(2000).await;
    let caller = world.caller(ADV);
    let err = world.engine.run(&caller, "lookalike").await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(err.to_string().contains("at least k = 2000 seed users"), "{err}");
    assert!(!err.to_string().contains(&world.seed_users.len().to_string()), "the error does not give the count");
    assert!(world.engine.runs(&caller, "lookalike").unwrap().is_empty(), "no run is recorded");
    assert!(
        world
            .audit()
            .iter()
            .any(|e| matches!(e, AuditEvent::ComputationFailed { computation, .. } if computation == "lookalike"))
    );
    let err = world.engine.release_model(&caller, "lookalike", None, Channel::Rest).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}

#[tokio::test]
async fn an_audience_reaches_the_publishers_kafka_topic() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers as _;

    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("news-activations", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let sink = serde_json::json!({"type": "kafka", "brokers": [brokers], "topic": "news-activations"});
    let world = World::with_sink(20, Some(sink)).await;
    world.engine.run(&world.caller(ADV), "lookalike").await.unwrap();
    let delivery = world.engine.deliver_audience(&world.caller(PUB), "lookalike", None, 300).await.unwrap();
    assert_eq!(delivery.audience, 300);
    assert!(delivery.location.starts_with("kafka:news-activations"), "{}", delivery.location);

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset("news-activations", 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut users = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while users.len() < 300 && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(std::time::Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let digest = message.headers().unwrap().iter().find(|h| h.key == "sealroom-release-digest").unwrap().value;
        assert_eq!(digest, Some(delivery.release_digest.as_bytes()));
        assert_eq!((value["recipient"].as_str(), value["section"].as_str()), (Some("pub"), Some("audience")));
        users.push(value["row"]["user_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(users.len(), 300);
    assert!(users.iter().all(|u| !world.seed_users.contains(u)), "no seed user is in an audience");
    let audit = serde_json::to_string(&world.engine.audit_entries(&world.caller(PUB)).unwrap()).unwrap();
    assert!(audit.contains("kafka:news-activations"), "the delivery is audited with its location");
}

#[tokio::test]
async fn an_audience_the_brokers_cannot_take_is_kept_and_retried_until_delivered() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use sealroom_engine::outbox::ActivationState;

    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("news-activations", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let sink = serde_json::json!({"type": "kafka", "brokers": [brokers], "topic": "news-activations",
                                  "delivery_timeout_ms": 1500, "retries": 0});
    let world = World::with_sink(20, Some(sink)).await;
    world.engine.run(&world.caller(ADV), "lookalike").await.unwrap();

    mock.broker_down(1).unwrap();
    let delivery = world.engine.deliver_audience(&world.caller(PUB), "lookalike", None, 200).await.unwrap();
    assert_eq!((delivery.state.as_str(), delivery.audience), ("pending", 200));
    let id = delivery.activation_id.clone().unwrap();
    assert!(delivery.location.contains(&format!("kept as activation {id}")), "{}", delivery.location);
    let kept = world.engine.activations(&world.caller(PUB)).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].state.clone(), kept[0].attempts), (ActivationState::Pending, 1));
    assert_eq!(kept[0].release_digest, delivery.release_digest);
    assert!(!kept[0].last_error.is_empty());
    assert!(world.engine.activations(&world.caller(ADV)).unwrap().is_empty(), "only the recipient sees it");

    // Not due yet: nothing is attempted. Due, brokers still down: attempted, still pending, later.
    let now = sealroom_attest::token::unix_now();
    assert_eq!(world.engine.retry_activations_at(now).await, 0);
    assert_eq!(world.engine.retry_activations_at(now + 60).await, 1);
    let kept = world.engine.activations(&world.caller(PUB)).unwrap();
    assert_eq!((kept[0].state.clone(), kept[0].attempts), (ActivationState::Pending, 2));
    assert!(kept[0].next_attempt_at >= now + 60 + 60, "the backoff doubled");

    // The brokers are back: a retry delivers exactly the released rows (librdkafka may take a few
    // seconds to reconnect, so the first retries after the broker's return may still time out).
    mock.broker_up(1).unwrap();
    let mut kept = Vec::new();
    for hour in 1..=12 {
        assert_eq!(world.engine.retry_activations_at(now + 3600 * hour).await, 1);
        kept = world.engine.activations(&world.caller(PUB)).unwrap();
        if kept[0].state != ActivationState::Pending {
            break;
        }
    }
    let ActivationState::Delivered { location } = &kept[0].state else { panic!("{:?}", kept[0]) };
    assert!(location.starts_with("kafka:news-activations"), "{location}");
    assert_eq!(world.engine.retry_activations_at(now + 86_400).await, 0, "delivered activations are not sent again");

    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let (_, high) = consumer.fetch_watermarks("news-activations", 0, std::time::Duration::from_secs(5)).unwrap();
    assert!(high >= 200, "{high} messages");
    let audit = serde_json::to_string(&world.engine.audit_entries(&world.caller(PUB)).unwrap()).unwrap();
    assert!(audit.contains(&format!("kept as activation {id} and retried")), "the failure is audited");
    assert!(audit.contains("activation_delivered"), "{audit}");
}
