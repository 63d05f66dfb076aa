//! Campaign measurement end to end in the engine, against a brute-force computation on random data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use sealroom_engine::{CellValue, Engine, ReleasedCell, ReleasedSection};
use sealroom_proto::RoomFile;

mod common;
use common::digest;

const ADV: &str = "adv";
const PUB: &str = "pub";
const CAMPAIGNS: [&str; 3] = ["c0", "c1", "c2"];
const BUCKETS: [(u64, u64); 5] = [(1, 1), (2, 2), (3, 5), (6, 10), (11, u64::MAX)];

fn room(k: u32) -> String {
    format!(
        r#"
name: measurement room
{parties}tables:
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
  - name: impressions
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: campaign, type: string, identifier: campaign }}
computations:
  - name: measurement
    measurement:
      matching: {{ advertiser_table: crm, publisher_table: users }}
      exposure_table: impressions
      conversion_table: conversions
    run_by: [adv]
    results_to: [adv]
privacy:
  k_thresholds: [{{ set_by: adv, k: {k} }}]
attestation: {{ allow_simulated: true }}
"#,
        parties = common::participants(ADV, PUB, false)
    )
}

/// Random data: customers and users with email keys (equal keys match), impressions (user,
/// campaign), converting customers.
#[derive(Debug, Clone)]
struct Data {
    customers: Vec<Option<u8>>,
    users: Vec<Option<u8>>,
    impressions: Vec<(usize, usize)>,
    conversions: Vec<usize>,
}

fn data() -> impl Strategy<Value = Data> {
    (
        proptest::collection::vec(proptest::option::of(0u8..120), 20..150),
        proptest::collection::vec(proptest::option::of(0u8..120), 20..150),
    )
        .prop_flat_map(|(customers, users)| {
            let (nc, nu) = (customers.len(), users.len());
            (
                Just(customers),
                Just(users),
                proptest::collection::vec((0..nu, 0..CAMPAIGNS.len()), 0..120),
                proptest::collection::vec(0..nc, 0..100),
            )
        })
        .prop_map(|(customers, users, impressions, conversions)| Data {
            customers,
            users,
            impressions,
            conversions,
        })
}

fn strings(name: &str, values: impl Iterator<Item = Option<String>>) -> (String, ArrayRef) {
    (name.to_owned(), Arc::new(values.collect::<StringArray>()) as ArrayRef)
}

async fn upload(engine: &Engine, token: &str, table: &str, columns: Vec<(String, ArrayRef)>) {
    common::upload(engine, token, table, vec![RecordBatch::try_from_iter(columns).unwrap()]).await.unwrap();
}

/// The oracle's numbers per campaign (index 3: all campaigns).
#[derive(Debug, Default, Clone)]
struct Oracle {
    reach: u64,
    impressions: u64,
    frequency: [u64; 5],
    exposed: u64,
    exposed_converters: u64,
    unexposed: u64,
    unexposed_converters: u64,
}

fn oracle(d: &Data) -> (u64, u64, Vec<Oracle>) {
    let pairs: BTreeSet<(usize, usize)> = (0..d.customers.len())
        .flat_map(|c| (0..d.users.len()).map(move |u| (c, u)))
        .filter(|(c, u)| d.customers[*c].is_some() && d.customers[*c] == d.users[*u])
        .collect();
    let matched_c: BTreeSet<usize> = pairs.iter().map(|p| p.0).collect();
    let matched_u: BTreeSet<usize> = pairs.iter().map(|p| p.1).collect();
    let converted: BTreeSet<usize> = d.conversions.iter().copied().collect();
    let out = (0..=CAMPAIGNS.len())
        .map(|campaign| {
            let mut per_user: BTreeMap<usize, u64> = BTreeMap::new();
            for (u, c) in &d.impressions {
                if (campaign == CAMPAIGNS.len() || *c == campaign) && matched_u.contains(u) {
                    *per_user.entry(*u).or_default() += 1;
                }
            }
            let exposed: BTreeSet<usize> =
                pairs.iter().filter(|(_, u)| per_user.contains_key(u)).map(|(c, _)| *c).collect();
            let mut o = Oracle {
                reach: per_user.len() as u64,
                impressions: per_user.values().sum(),
                exposed: exposed.len() as u64,
                exposed_converters: exposed.intersection(&converted).count() as u64,
                unexposed: (matched_c.len() - exposed.len()) as u64,
                ..Default::default()
            };
            o.unexposed_converters = matched_c.difference(&exposed).filter(|c| converted.contains(c)).count() as u64;
            for n in per_user.values() {
                o.frequency[BUCKETS.iter().position(|(lo, hi)| (lo..=hi).contains(&n)).unwrap()] += 1;
            }
            o
        })
        .collect();
    (matched_c.len() as u64, matched_u.len() as u64, out)
}

fn value(cell: &ReleasedCell) -> Option<f64> {
    match cell {
        ReleasedCell::Value(CellValue::Count(v)) => Some(*v as f64),
        ReleasedCell::Value(CellValue::Real(v)) => Some(*v),
        ReleasedCell::Suppressed => None,
    }
}

/// Suppressed rows of a section (by their first cell) are none, all, or ≥ 2 totalling ≥ k in `of`.
fn check_complementary(
    section: &ReleasedSection,
    campaign_rows: usize,
    of: &[u64],
    k: u64,
) -> Result<(), TestCaseError> {
    let hidden: Vec<usize> =
        (0..campaign_rows).filter(|i| section.rows()[*i].cells()[0] == ReleasedCell::Suppressed).collect();
    let total: u64 = hidden.iter().map(|i| of[*i]).sum();
    prop_assert!(
        hidden.is_empty() || hidden.len() == campaign_rows || (hidden.len() >= 2 && total >= k),
        "{}: hidden {:?} totalling {} (k = {})",
        section.name(),
        hidden,
        total,
        k
    );
    Ok(())
}

async fn check(d: Data, k: u32) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), vec![RoomFile::parse(&room(k), "m").unwrap()], vec![]).await;
    let key = |k: &Option<u8>| k.map(|k| digest(&format!("e{k}")));
    upload(
        &engine,
        ADV,
        "crm",
        vec![
            strings("customer_id", (0..d.customers.len()).map(|i| Some(format!("c{i}")))),
            strings("email", d.customers.iter().map(key)),
        ],
    )
    .await;
    upload(
        &engine,
        PUB,
        "users",
        vec![
            strings("user_id", (0..d.users.len()).map(|i| Some(format!("u{i}")))),
            strings("email", d.users.iter().map(key)),
        ],
    )
    .await;
    // A ghost user and an unknown customer: rows that join nothing are ignored.
    upload(
        &engine,
        PUB,
        "impressions",
        vec![
            strings("user_id", d.impressions.iter().map(|(u, _)| Some(format!("u{u}"))).chain([Some("ghost".into())])),
            strings(
                "campaign",
                d.impressions.iter().map(|(_, c)| Some(CAMPAIGNS[*c].to_owned())).chain([Some("c0".into())]),
            ),
        ],
    )
    .await;
    upload(
        &engine,
        ADV,
        "conversions",
        vec![strings(
            "customer_id",
            d.conversions.iter().map(|c| Some(format!("c{c}"))).chain([Some("nobody".into())]),
        )],
    )
    .await;
    let released = common::run(&engine, ADV, "measurement").await;
    let (matched_c, matched_u, exp) = oracle(&d);
    let k = u64::from(k);
    // Campaigns listed: those in the log (plus the all row), in name order.
    let present: BTreeSet<usize> = d.impressions.iter().map(|(_, c)| *c).chain([0]).collect();
    let listed: Vec<usize> = present.iter().copied().chain([CAMPAIGNS.len()]).collect();
    let name = |i: usize| if i == CAMPAIGNS.len() { "(all campaigns)".to_owned() } else { CAMPAIGNS[i].to_owned() };

    let reach = released.section("reach").unwrap();
    prop_assert_eq!(reach.rows().len(), listed.len());
    for (row, i) in reach.rows().iter().zip(&listed) {
        prop_assert_eq!(&row.dimensions()[0], &name(*i));
        let o = &exp[*i];
        match value(&row.cells()[0]) {
            Some(r) => {
                prop_assert!(
                    o.reach.min(o.exposed) >= k,
                    "reach {} / customers {} released under k = {}",
                    o.reach,
                    o.exposed,
                    k
                );
                prop_assert_eq!(r as u64, o.reach);
                prop_assert_eq!(value(&row.cells()[1]).map(|v| v as u64), Some(o.impressions));
                let f = value(&row.cells()[2]).unwrap();
                prop_assert!((f - o.impressions as f64 / o.reach as f64).abs() < 1e-9);
            }
            None => prop_assert!(row.cells().iter().all(|c| *c == ReleasedCell::Suppressed)),
        }
    }
    let campaign_rows = listed.len() - 1;
    let reach_of: Vec<u64> = listed.iter().map(|i| exp[*i].reach).collect();
    check_complementary(reach, campaign_rows, &reach_of, k)?;

    let frequency = released.section("frequency").unwrap();
    prop_assert_eq!(frequency.rows().len(), listed.len() * 5);
    for (chunk, i) in frequency.rows().chunks(5).zip(&listed) {
        let mut hidden = 0;
        let mut hidden_total = 0;
        for (row, n) in chunk.iter().zip(exp[*i].frequency) {
            match value(&row.cells()[0]) {
                Some(v) => {
                    prop_assert!(n >= k);
                    prop_assert_eq!(v as u64, n);
                }
                None => {
                    hidden += 1;
                    hidden_total += n;
                }
            }
        }
        prop_assert!(hidden == 0 || hidden == 5 || (hidden >= 2 && hidden_total >= k));
    }

    let lift = released.section("conversion_lift").unwrap();
    for (row, i) in lift.rows().iter().zip(&listed) {
        let o = &exp[*i];
        let smallest = [
            o.exposed_converters,
            o.exposed - o.exposed_converters,
            o.unexposed_converters,
            o.unexposed - o.unexposed_converters,
        ]
        .into_iter()
        .min()
        .unwrap();
        match value(&row.cells()[0]) {
            Some(v) => {
                prop_assert!(smallest >= k, "lift row released with a group of {} under k = {}", smallest, k);
                prop_assert_eq!(v as u64, o.exposed);
                prop_assert_eq!(value(&row.cells()[1]).map(|v| v as u64), Some(o.exposed_converters));
                prop_assert_eq!(value(&row.cells()[2]).map(|v| v as u64), Some(o.unexposed));
                prop_assert_eq!(value(&row.cells()[3]).map(|v| v as u64), Some(o.unexposed_converters));
                let want = (o.exposed_converters as f64 / o.exposed as f64)
                    / (o.unexposed_converters as f64 / o.unexposed as f64)
                    - 1.0;
                let (l, low, high) =
                    (value(&row.cells()[6]).unwrap(), value(&row.cells()[7]).unwrap(), value(&row.cells()[8]).unwrap());
                prop_assert!((l - want).abs() < 1e-9 && low <= l && l <= high);
            }
            None => prop_assert!(row.cells().iter().all(|c| *c == ReleasedCell::Suppressed)),
        }
    }
    let summary = &released.section("summary").unwrap().rows()[0];
    if matched_c.min(matched_u) >= k {
        prop_assert_eq!(value(&summary.cells()[0]).map(|v| v as u64), Some(matched_c));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Reach, frequency and lift equal a brute-force computation wherever released; nothing
    /// released is about fewer than k individuals; suppressed campaign rows and frequency buckets
    /// cannot be worked out from the released totals.
    #[test]
    fn measurement_is_exact_and_k_anonymous(d in data(), k in 2u32..8) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(d, k))?;
    }
}

/// Reach sketches carry reach across runs and restarts: week 1 reaches users 0..40, week 2 (a new
/// exposure log) users 20..60; the second run's cumulative reach is the union, 60.
#[tokio::test]
async fn cumulative_reach_merges_runs_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || common::open(dir.path(), vec![RoomFile::parse(&room(2), "m").unwrap()], vec![]);
    let key = |i: usize| Some(digest(&format!("e{i}")));
    let week = |engine: Engine, users: std::ops::Range<usize>| async move {
        upload(
            &engine,
            PUB,
            "impressions",
            vec![
                strings("user_id", users.clone().map(|u| Some(format!("u{u}")))),
                strings("campaign", users.map(|_| Some("c0".to_owned()))),
            ],
        )
        .await;
        let released = common::run(&engine, ADV, "measurement").await;
        let row = released.section("reach").unwrap().rows()[0].clone();
        assert_eq!(row.dimensions()[0], "c0");
        (engine, value(&row.cells()[0]).unwrap() as u64, value(&row.cells()[4]).unwrap() as u64)
    };
    let engine = open().await;
    upload(
        &engine,
        ADV,
        "crm",
        vec![strings("customer_id", (0..60).map(|i| Some(format!("c{i}")))), strings("email", (0..60).map(key))],
    )
    .await;
    upload(&engine, ADV, "conversions", vec![strings("customer_id", (0..10).map(|i| Some(format!("c{i}"))))]).await;
    upload(
        &engine,
        PUB,
        "users",
        vec![strings("user_id", (0..60).map(|i| Some(format!("u{i}")))), strings("email", (0..60).map(key))],
    )
    .await;
    let (engine, reach, cumulative) = week(engine, 0..40).await;
    assert_eq!((reach, cumulative), (40, 40));
    engine.close().await;
    drop(engine);
    let (_engine, reach, cumulative) = week(open().await, 20..60).await;
    assert_eq!(reach, 40, "this week's reach");
    assert_eq!(cumulative, 60, "both weeks' reach, from the sketch kept across the restart");
}
