//! The attack suite: an analyst who may run every computation tries to learn something about fewer
//! than k people from what the engine releases. Each test mounts one attack against the running
//! engine and asserts that the defence documented in docs/attacks.md stops it. The attacks that k
//! cannot stop (differencing by one person, insert-one-record probing, averaging repeated runs) are
//! mounted twice: against a k-only room, where they succeed (documenting why such rooms need
//! differential privacy), and against a room with `differential_privacy`, where they must not.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
use arrow::record_batch::RecordBatch;
use sealroom_engine::{CellValue, Channel, Engine, Error, Released, ReleasedCell};
use sealroom_proto::RoomFile;

mod common;
use common::{count, digest};

const ADV: &str = "adv";
const PUB: &str = "pub";
const K: u64 = 10;

fn room() -> String {
    room_with(None)
}

/// The attack room; with `dp` (a YAML flow mapping), a differentially private room whose
/// measurement has no conversion lift (which differential privacy cannot bound).
fn room_with(dp: Option<&str>) -> String {
    let text = format!(
        r#"
name: attack room
participants:
  - {{ id: adv, name: Attacker, roles: [data_owner, analyst], credential: {a} }}
  - {{ id: pub, name: Publisher, roles: [data_owner], credential: {p} }}
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
        a = common::credential(ADV),
        p = common::credential(PUB)
    );
    match dp {
        None => text,
        Some(dp) => text
            .replace("      conversion_table: conversions\n", "")
            .replace("privacy:\n", &format!("privacy:\n  differential_privacy: {dp}\n")),
    }
}

/// A publisher user: matched (shares an email with a customer) or not, and its segments.
#[derive(Clone)]
struct User {
    matched: bool,
    segments: Vec<&'static str>,
}

struct World {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl World {
    /// Customers c0..c{n} match users u0..u{n} one to one; unmatched users get their own emails
    /// (`other{i}`).
    async fn new(users: &[User], impressions: &[(usize, &str)], converters: &[usize]) -> Self {
        Self::in_room(&room(), users, impressions, converters).await
    }

    async fn in_room(room: &str, users: &[User], impressions: &[(usize, &str)], converters: &[usize]) -> Self {
        let world = Self::empty(room).await;
        world.crm(users, &[]).await;
        if !converters.is_empty() {
            let ids = col(converters.iter().map(|i| Some(format!("c{i}"))).collect());
            world.upload(ADV, "conversions", vec![("customer_id", ids)]).await;
        }
        world.publisher(users).await;
        if !impressions.is_empty() {
            let ids = col(impressions.iter().map(|(u, _)| Some(format!("u{u}"))).collect());
            let campaigns = col(impressions.iter().map(|(_, c)| Some((*c).to_owned())).collect());
            world.upload(PUB, "impressions", vec![("user_id", ids), ("campaign", campaigns)]).await;
        }
        world
    }

    /// The room with nothing uploaded.
    async fn empty(room: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = common::open(dir.path(), vec![RoomFile::parse(room, "attacks").unwrap()], vec![]).await;
        Self { engine, _dir: dir }
    }

    /// Uploads the publisher's users u0..u{n} with their emails and segments.
    async fn publisher(&self, users: &[User]) {
        let mut segments = ListBuilder::new(StringBuilder::new());
        for u in users {
            for s in &u.segments {
                segments.values().append_value(s);
            }
            segments.append(true);
        }
        let emails = (0..users.len())
            .map(|i| Some(digest(&if users[i].matched { format!("e{i}") } else { format!("other{i}") })))
            .collect();
        self.upload(
            PUB,
            "users",
            vec![
                ("user_id", col((0..users.len()).map(|i| Some(format!("u{i}"))).collect())),
                ("email", col(emails)),
                ("segments", Arc::new(segments.finish()) as ArrayRef),
            ],
        )
        .await;
    }

    /// Uploads the CRM: a customer per matched user, plus customers with the given extra emails.
    async fn crm(&self, users: &[User], extra: &[String]) {
        let customers: Vec<usize> = (0..users.len()).filter(|i| users[*i].matched).collect();
        let mut ids: Vec<Option<String>> = customers.iter().map(|i| Some(format!("c{i}"))).collect();
        let mut emails: Vec<Option<String>> = customers.iter().map(|i| Some(digest(&format!("e{i}")))).collect();
        for (j, e) in extra.iter().enumerate() {
            ids.push(Some(format!("extra{j}")));
            emails.push(Some(digest(e)));
        }
        self.upload(ADV, "crm", vec![("customer_id", col(ids)), ("email", col(emails))]).await;
    }

    async fn upload(&self, token: &str, table: &str, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        common::upload(&self.engine, token, table, vec![batch]).await.unwrap();
    }

    async fn run(&self, computation: &str) -> Released {
        common::run(&self.engine, ADV, computation).await
    }
}

fn col(values: Vec<Option<String>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<StringArray>()) as ArrayRef
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
/// *runs* are what the privacy budget meters (`averaging_repeated_runs_is_cut_off_by_the_budget_…`).
#[tokio::test]
async fn re_reading_a_run_releases_identical_numbers() {
    let world = World::new(&users(&[(40, true, &["a"]), (25, true, &["b"])]), &[], &[]).await;
    let first = world.run("overlap").await;
    let room = world.engine.room_ids()[0].clone();
    let analyst = common::login(&world.engine, room.as_str(), ADV).unwrap();
    let again = world.engine.release(&analyst, "overlap", Some(first.run_id()), Channel::Rest).unwrap();
    assert_eq!(first.sections(), again.sections());
    assert_ne!(first.audit_seq(), again.audit_seq(), "every release is audited");
}

/// ε = 0.25 per run and one segment per person: noise of scale (2 + 2·1) / 0.25 = 16 on every count.
const DP: &str = "{ epsilon_per_run: 0.25, budget_per_participant: 100, max_segments_per_person: 1 }";

/// The overlap's matched advertiser individuals, when released.
fn matched(released: &Released) -> Option<f64> {
    count(&released.section("summary").unwrap().rows()[0].cells()[2]).map(|v| v as f64)
}

/// The advertiser's match rate, when released.
fn match_rate(released: &Released) -> Option<f64> {
    match released.section("summary").unwrap().rows()[0].cells()[4] {
        ReleasedCell::Value(CellValue::Real(v)) => Some(v),
        _ => None,
    }
}

/// The differencing attack, `trials` times: the attacker runs the overlap on its CRM, re-uploads it
/// with one more record (the probe: one email), runs again, and guesses that the probe is a
/// publisher user when `observe` went up. The probe is the publisher's last user in even trials and
/// absent in odd ones. Returns how many guesses were right.
async fn differencing(dp: Option<&str>, trials: usize, observe: fn(&Released) -> Option<f64>) -> usize {
    let absent = users(&[(60, true, &["a"]), (60, false, &["b"])]);
    let mut present = absent.clone();
    present.push(User { matched: false, segments: vec!["b"] });
    let probe = format!("other{}", present.len() - 1);
    let room = room_with(dp);
    let worlds = [
        (World::in_room(&room, &present, &[], &[]).await, &present, true),
        (World::in_room(&room, &absent, &[], &[]).await, &absent, false),
    ];
    // 40 customers who match no one, so that the match rate is not 100%.
    let mut crm: Vec<String> = (0..40).map(|i| format!("nobody{i}")).collect();
    let mut right = 0;
    for trial in 0..trials {
        let (world, users, is_present) = &worlds[trial % 2];
        world.crm(users, &crm).await;
        let before = observe(&world.run("overlap").await);
        crm.push(probe.clone());
        world.crm(users, &crm).await;
        crm.pop();
        let after = observe(&world.run("overlap").await);
        let guess = matches!((before, after), (Some(b), Some(a)) if a > b);
        right += usize::from(guess == *is_present);
    }
    right
}

/// Differencing by one person: two runs whose inputs differ by one record. k alone cannot stop it
/// (both runs release counts far above k that differ by 1). Under differential privacy the two runs
/// spend ε = 0.5, which bounds any guess at e^0.5 / (1 + e^0.5) ≈ 62% right; noise of scale 16
/// against a difference of 1 makes the attacker's rule about 51% right (so 140 of 200 is more than
/// five standard deviations away from what the noise allows).
#[tokio::test]
async fn differencing_by_one_person_succeeds_on_k_alone_and_fails_under_differential_privacy() {
    assert_eq!(differencing(None, 10, matched).await, 10, "k alone: the attacker is always right");
    let right = differencing(Some(DP), 200, matched).await;
    assert!(right <= 140, "{right} of 200 right: more than ε = 0.5 allows");
}

/// Insert-one-record match-rate probing: the same, watching the match rate instead of the count.
/// Under differential privacy the rate is computed from noisy counts, so it is as noisy.
#[tokio::test]
async fn match_rate_probing_succeeds_on_k_alone_and_fails_under_differential_privacy() {
    assert_eq!(differencing(None, 10, match_rate).await, 10, "k alone: the attacker is always right");
    let right = differencing(Some(DP), 200, match_rate).await;
    assert!(right <= 140, "{right} of 200 right: more than ε = 0.5 allows");
}

/// Averaging repeated noisy runs: each run draws fresh noise, so averaging n runs would shrink it
/// by √n. Defence: every run is charged to the budget of each recipient before it runs, the ledger
/// is on disk, and once spent the room refuses — across restarts. A run refused because its inputs
/// are not uploaded yet is refused before any ε is spent.
#[tokio::test]
async fn averaging_repeated_runs_is_cut_off_by_the_budget_across_restarts() {
    let room = room_with(Some("{ epsilon_per_run: 0.25, budget_per_participant: 1, max_segments_per_person: 1 }"));
    let world = World::empty(&room).await;
    let id = world.engine.room_ids()[0].clone();
    let analyst = common::login(&world.engine, id.as_str(), ADV).unwrap();
    // Nothing uploaded: the run is refused before the budget is charged.
    let err = world.engine.run(&analyst, "overlap").await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    let people = users(&[(200, true, &["a"]), (100, false, &["b"])]);
    world.crm(&people, &[]).await;
    world.publisher(&people).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let released = world.run("overlap").await;
        assert_eq!(released.json()["differential_privacy"]["epsilon"], 0.25);
        assert!(released.section("by_tier").is_none(), "tier gains are not released under differential privacy");
        answers.push(matched(&released));
    }
    assert!(answers.windows(2).any(|w| w[0] != w[1]), "every run draws fresh noise: {answers:?}");
    async fn refused(engine: &Engine) -> Error {
        let analyst = common::caller(engine, ADV);
        engine.run(&analyst, "overlap").await.unwrap_err()
    }
    let err = refused(&world.engine).await;
    assert!(matches!(err, Error::BudgetExhausted(_)), "{err}");
    assert!(err.to_string().contains("'adv', who receives its results, has spent ε = 1 of 1"), "{err}");
    // A restart does not give the budget back.
    let World { engine, _dir: dir } = world;
    drop(engine);
    let engine = common::open(dir.path(), vec![RoomFile::parse(&room, "attacks").unwrap()], vec![]).await;
    assert!(matches!(refused(&engine).await, Error::BudgetExhausted(_)));
    let view = engine.room_view(&common::login(&engine, id.as_str(), ADV).unwrap()).unwrap();
    assert_eq!(view["privacy_budget"]["remaining"], 0.0);
    assert_eq!(view["privacy_budget"]["runs_left"], 0);
    let audit = std::fs::read_to_string(dir.path().join("rooms").join(id.as_str()).join("audit.jsonl")).unwrap();
    assert_eq!(audit.matches("\"privacy_budget_charged\"").count(), 4, "four runs, nothing for the refused ones");
}

/// One publisher user shared by 30 customers (a household email) and 100 one-to-one matches. Under
/// differential privacy each person has at most one partner, so both sides count 101 pairs; with
/// ε = 10 (noise of scale 0.4) the released counts are within a few of the truth, the 3-person
/// segment is not listed at all, and tier gains are not released.
#[tokio::test]
async fn under_differential_privacy_each_person_counts_once_and_small_segments_are_not_listed() {
    let room = room_with(Some("{ epsilon_per_run: 10, budget_per_participant: 100, max_segments_per_person: 1 }"));
    let people = users(&[(101, true, &["big"]), (3, false, &["tiny"])]);
    let world = World::in_room(&room, &people, &[], &[]).await;
    // Customers c0..c100 as usual, and 30 more sharing user 0's email.
    let ids = (0..101).map(|i| format!("c{i}")).chain((0..30).map(|i| format!("h{i}"))).map(Some).collect();
    let emails = (0..101).map(|i| digest(&format!("e{i}"))).chain((0..30).map(|_| digest("e0"))).map(Some).collect();
    let household = vec![("customer_id", col(ids)), ("email", col(emails))];
    world.upload(ADV, "crm", household.clone()).await;
    let released = world.run("overlap").await;
    let summary = &released.section("summary").unwrap().rows()[0];
    let near = |cell: &ReleasedCell, truth: u64| {
        let v = count(cell).unwrap();
        assert!(v.abs_diff(truth) <= 6, "{v} vs {truth}");
    };
    near(&summary.cells()[0], 131);
    near(&summary.cells()[1], 104);
    near(&summary.cells()[2], 101);
    near(&summary.cells()[3], 101);
    assert_eq!(count(&summary.cells()[2]), count(&summary.cells()[3]), "one count of pairs for both sides");
    let segments: Vec<&str> =
        released.section("by_segment").unwrap().rows().iter().map(|r| r.dimensions()[0].as_str()).collect();
    assert_eq!(segments, ["big"]);
    assert!(released.section("by_tier").is_none());
    // The same data without differential privacy: 131 customers matched, to 101 users.
    let plain = World::new(&people, &[], &[]).await;
    plain.upload(ADV, "crm", household).await;
    let exact = plain.run("overlap").await;
    assert_eq!(matched(&exact), Some(131.0));
}

/// Affinity under differential privacy: audiences, bases and totals are noisy (scale (2 + 3·1) /
/// 10 = 0.5 here), segments whose noisy audience or base is under k are not listed at all, and the
/// release says what noise it carries.
#[tokio::test]
async fn affinity_under_differential_privacy_lists_only_segments_that_reach_k() {
    let room = room_with(Some("{ epsilon_per_run: 10, budget_per_participant: 100, max_segments_per_person: 1 }"));
    let people =
        users(&[(80, true, &["a"]), (100, false, &["a"]), (40, true, &["b"]), (400, false, &["b"]), (2, true, &["c"])]);
    let world = World::in_room(&room, &people, &[], &[]).await;
    let released = world.run("affinity").await;
    let dp = &released.json()["differential_privacy"];
    assert_eq!(dp["sensitivity"], 5);
    assert_eq!(dp["scale"], 0.5);
    // 1 + 0.5·ln(1 / 10⁻⁶) = 7.9: k = 10 is the larger.
    assert_eq!(dp["listing_threshold"], 10);
    assert_eq!(dp["delta"], 1e-6);
    let rows = released.section("affinity").unwrap().rows();
    let listed: Vec<(&str, &str)> =
        rows.iter().map(|r| (r.dimensions()[0].as_str(), r.dimensions()[1].as_str())).collect();
    assert_eq!(listed, [("1", "a"), ("2", "b")], "a is over-represented; c (2 people) is not listed");
    let audience_a = count(&rows[0].cells()[0]).unwrap();
    assert!(audience_a.abs_diff(80) <= 8, "{audience_a}");
}

/// Cumulative-reach probing and heavy viewers under differential privacy: cumulative reach is not
/// released at all (its sketch's sensitivity is not bounded), a person's impressions are clamped
/// (one user with 500 impressions adds at most 20), and reach, impressions and buckets carry noise
/// (ε = 10 here, so they stay within a few of the truth).
#[tokio::test]
async fn measurement_under_differential_privacy_clamps_impressions_and_keeps_cumulative_reach_inside() {
    let room = room_with(Some(
        "{ epsilon_per_run: 10, budget_per_participant: 100, max_campaigns_per_person: 1, max_impressions_per_person: 20 }",
    ));
    // 60 matched users see "spring" 3 times each; user 0 sees it 500 times; users 0..9 also see "summer".
    let mut impressions: Vec<(usize, &str)> = (1..60).flat_map(|u| std::iter::repeat_n((u, "spring"), 3)).collect();
    impressions.extend(std::iter::repeat_n((0, "spring"), 500));
    impressions.extend((0..10).map(|u| (u, "summer")));
    let world = World::in_room(&room, &users(&[(60, true, &[])]), &impressions, &[]).await;
    let released = world.run("measurement").await;
    let dp = &released.json()["differential_privacy"];
    assert_eq!(dp["sums"]["max_impressions_per_person"], 20);
    // Counts: 1 + 2·2·2 = 9 at ε = 5; impressions: 2·2·20 = 80 at ε = 5.
    assert_eq!(dp["sensitivity"], 9);
    assert_eq!(dp["sums"]["sensitivity"], 80);
    let reach = released.section("reach").unwrap();
    assert!(reach.metrics().iter().all(|m| m.name != "cumulative_reach"));
    let rows: Vec<&str> = reach.rows().iter().map(|r| r.dimensions()[0].as_str()).collect();
    // One campaign per person (the first by name, "spring"): "summer" keeps no one and is not listed.
    assert_eq!(rows, ["spring", "(all campaigns)"]);
    let spring = &reach.rows()[0];
    let (r, i) = (count(&spring.cells()[0]).unwrap(), count(&spring.cells()[1]).unwrap());
    assert!(r.abs_diff(60) <= 10, "reach {r}");
    // 59·3 + 20 (clamped from 500) = 197; noise of scale 16.
    assert!(i.abs_diff(197) <= 200, "impressions {i}");
    assert!(i < 600, "the heavy viewer's 500 impressions are clamped: {i}");
    assert!(released.section("conversion_lift").is_none());
}
