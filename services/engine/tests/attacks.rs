//! The attack suite: an analyst who may run every computation tries to learn something about fewer
//! than k people from what the engine releases. Each test mounts one attack against the running
//! engine and asserts that the defence documented in docs/attacks.md stops it. Attacks that only
//! differential privacy stops (differencing across runs, averaging, match-rate probing) are listed
//! there as open until the budget lands.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
use arrow::record_batch::RecordBatch;
use sealroom_engine::{Channel, Engine, Released, ReleasedCell};
use sealroom_proto::RoomFile;

mod common;
use common::{count, digest};

const ADV: &str = "attacker-advertiser-token-000001";
const PUB: &str = "honest-publisher-token-00000002";
const K: u64 = 10;

fn room() -> String {
    format!(
        r#"
name: attack room
participants:
  - {{ id: adv, name: Attacker, roles: [data_owner, analyst], credential: {{ bearer_token_sha256: {a} }} }}
  - {{ id: pub, name: Publisher, roles: [data_owner], credential: {{ bearer_token_sha256: {p} }} }}
tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
  - name: conversions
    owner: adv
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: segments, type: string_list, identifier: segment, nullable: true }}
  - name: impressions
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: campaign, type: string, identifier: campaign }}
computations:
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: users }}
    run_by: [adv]
    results_to: [adv]
  - name: affinity
    affinity: {{ matching: {{ advertiser_table: crm, publisher_table: users }} }}
    run_by: [adv]
    results_to: [adv]
  - name: measurement
    measurement:
      matching: {{ advertiser_table: crm, publisher_table: users }}
      exposure_table: impressions
      conversion_table: conversions
    run_by: [adv]
    results_to: [adv]
privacy:
  k_thresholds: [{{ set_by: pub, k: {K} }}]
attestation: {{ allow_simulated: true }}
"#,
        a = digest(ADV),
        p = digest(PUB)
    )
}

/// A publisher user: matched (shares an email with a customer) or not, and its segments.
struct User {
    matched: bool,
    segments: Vec<&'static str>,
}

struct World {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl World {
    /// Customers c0..c{n} match users u0..u{n} one to one; unmatched users get their own emails.
    async fn new(users: &[User], impressions: &[(usize, &str)], converters: &[usize]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = common::open(dir.path(), vec![RoomFile::parse(&room(), "attacks").unwrap()], vec![]).await;
        let customers: Vec<usize> = (0..users.len()).filter(|i| users[*i].matched).collect();
        let col = |v: Vec<Option<String>>| Arc::new(v.into_iter().collect::<StringArray>()) as ArrayRef;
        let world = Self { engine, _dir: dir };
        world
            .upload(
                ADV,
                "crm",
                vec![
                    ("customer_id", col(customers.iter().map(|i| Some(format!("c{i}"))).collect())),
                    ("email", col(customers.iter().map(|i| Some(digest(&format!("e{i}")))).collect())),
                ],
            )
            .await;
        if !converters.is_empty() {
            let ids = col(converters.iter().map(|i| Some(format!("c{i}"))).collect());
            world.upload(ADV, "conversions", vec![("customer_id", ids)]).await;
        }
        let mut segments = ListBuilder::new(StringBuilder::new());
        for u in users {
            for s in &u.segments {
                segments.values().append_value(s);
            }
            segments.append(true);
        }
        world
            .upload(
                PUB,
                "users",
                vec![
                    ("user_id", col((0..users.len()).map(|i| Some(format!("u{i}"))).collect())),
                    (
                        "email",
                        col((0..users.len())
                            .map(|i| {
                                Some(digest(&if users[i].matched { format!("e{i}") } else { format!("other{i}") }))
                            })
                            .collect()),
                    ),
                    ("segments", Arc::new(segments.finish()) as ArrayRef),
                ],
            )
            .await;
        if !impressions.is_empty() {
            let ids = col(impressions.iter().map(|(u, _)| Some(format!("u{u}"))).collect());
            let campaigns = col(impressions.iter().map(|(_, c)| Some((*c).to_owned())).collect());
            world.upload(PUB, "impressions", vec![("user_id", ids), ("campaign", campaigns)]).await;
        }
        world
    }

    async fn upload(&self, token: &str, table: &str, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        common::upload(&self.engine, token, table, vec![batch]).await.unwrap();
    }

    async fn run(&self, computation: &str) -> Released {
        common::run(&self.engine, ADV, computation).await
    }
}

fn users(groups: &[(usize, bool, &[&'static str])]) -> Vec<User> {
    groups
        .iter()
        .flat_map(|(n, matched, segments)| {
            (0..*n).map(move |_| User { matched: *matched, segments: segments.to_vec() })
        })
        .collect()
}

/// Complementary cells: the publisher's segments partition its users (age brackets); one bracket
/// holds 3 matched customers. The attacker subtracts the released brackets from the released
/// matched total. Defence: complementary suppression hides a second bracket, so the difference is
/// a total over at least two brackets and at least k people.
#[tokio::test]
async fn complementary_cells_in_segments_reveal_no_small_bracket() {
    let world = World::new(
        &users(&[(40, true, &["age_18_34"]), (25, true, &["age_35_54"]), (3, true, &["age_55_plus"])]),
        &[],
        &[],
    )
    .await;
    let released = world.run("overlap").await;
    let matched = count(&released.section("summary").unwrap().rows()[0].cells()[3]).unwrap();
    let rows = released.section("by_segment").unwrap().rows();
    let shown: u64 = rows.iter().filter_map(|r| count(&r.cells()[0])).sum();
    let hidden = rows.iter().filter(|r| count(&r.cells()[0]).is_none()).count();
    let learned = matched - shown;
    assert!(hidden >= 2, "the small bracket does not stand alone");
    assert!(learned >= K, "what subtraction yields is about {learned} >= k people, not the 3");
}

/// The same attack on the affinity ranking (audience and base both sum to released totals).
#[tokio::test]
async fn complementary_cells_in_affinity_reveal_no_small_segment() {
    let world = World::new(
        &users(&[
            (40, true, &["a"]),
            (200, false, &["a"]),
            (25, true, &["b"]),
            (100, false, &["b"]),
            (3, true, &["c"]),
            (30, false, &["c"]),
        ]),
        &[],
        &[],
    )
    .await;
    let released = world.run("affinity").await;
    let summary = &released.section("summary").unwrap().rows()[0];
    let (base_total, audience_total) = (count(&summary.cells()[0]).unwrap(), count(&summary.cells()[1]).unwrap());
    let rows = released.section("affinity").unwrap().rows();
    let shown_audience: u64 = rows.iter().filter_map(|r| count(&r.cells()[0])).sum();
    let shown_base: u64 = rows.iter().filter_map(|r| count(&r.cells()[1])).sum();
    let withheld: Vec<&str> =
        rows.iter().filter(|r| r.dimensions()[0] == "withheld").map(|r| r.dimensions()[1].as_str()).collect();
    assert!(withheld.len() >= 2, "{withheld:?}");
    assert!(audience_total - shown_audience >= K && base_total - shown_base >= K);
}

/// Intersecting small groups through frequency: a campaign reached 30 matched users, 2 of them 11+
/// times. Subtracting the other buckets from the released reach would single out those 2 heavy
/// viewers. Defence: buckets are suppressed complementarily within the campaign.
#[tokio::test]
async fn frequency_buckets_do_not_single_out_heavy_viewers() {
    let mut impressions: Vec<(usize, &str)> = (0..28).map(|u| (u, "spring")).collect();
    for u in 28..30 {
        impressions.extend(std::iter::repeat_n((u, "spring"), 12));
    }
    let world = World::new(&users(&[(30, true, &[])]), &impressions, &[0]).await;
    let released = world.run("measurement").await;
    let reach = count(&released.section("reach").unwrap().rows()[0].cells()[0]).unwrap();
    assert_eq!(reach, 30);
    let buckets: Vec<Option<u64>> = released
        .section("frequency")
        .unwrap()
        .rows()
        .iter()
        .filter(|r| r.dimensions()[0] == "spring")
        .map(|r| count(&r.cells()[0]))
        .collect();
    let shown: u64 = buckets.iter().flatten().sum();
    assert!(buckets[4].is_none(), "the 11+ bucket (2 people) is hidden");
    assert!(buckets.iter().filter(|b| b.is_none()).count() >= 2);
    assert!(reach - shown >= K, "subtraction yields {} people, not 2", reach - shown);
}

/// A conversion rate of 100% tells everyone's outcome: all 12 exposed customers converted. The
/// attacker would learn each exposed customer converted. Defence: a lift row is about the smallest
/// of converters and non-converters in each group; 0 exposed non-converters suppress the row.
#[tokio::test]
async fn a_rate_of_one_hundred_percent_is_not_released() {
    let impressions: Vec<(usize, &str)> = (0..12).map(|u| (u, "spring")).collect();
    // 12 exposed (all convert), 40 unexposed (20 convert).
    let converters: Vec<usize> = (0..12).chain(12..32).collect();
    let world = World::new(&users(&[(52, true, &[])]), &impressions, &converters).await;
    let released = world.run("measurement").await;
    let spring = &released.section("conversion_lift").unwrap().rows()[0];
    assert_eq!(spring.dimensions()[0], "spring");
    assert!(spring.cells().iter().all(|c| *c == ReleasedCell::Suppressed), "{spring:?}");
}

/// Re-reading a result cannot average anything away: the same run releases the same numbers (and
/// each release is audited). With noise, this is what stops averaging repeated reads; repeated
/// *runs* are what the privacy budget will meter.
#[tokio::test]
async fn re_reading_a_run_releases_identical_numbers() {
    let world = World::new(&users(&[(40, true, &["a"]), (25, true, &["b"])]), &[], &[]).await;
    let first = world.run("overlap").await;
    let room = world.engine.room_ids()[0].clone();
    let analyst = world.engine.authenticate(room.as_str(), ADV).unwrap();
    let again = world.engine.release(&analyst, "overlap", Some(first.run_id()), Channel::Rest).unwrap();
    assert_eq!(first.sections(), again.sections());
    assert_ne!(first.audit_seq(), again.audit_seq(), "every release is audited");
}
