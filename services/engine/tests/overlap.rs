//! The engine end to end without a server: uploads, the overlap computation, the release gate,
//! atomic commits and restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use sealroom_engine::{
    CellValue, Channel, Engine, EngineConfig, EngineMetrics, Error, ReleasedCell, SinkBinding, UploadLimits,
};
use sealroom_proto::RoomFile;
use sealroom_proto::room::v1::RoomContract;

mod common;
use common::{count, digest, upload};

const ADV_TOKEN: &str = "adv";
const PUB_TOKEN: &str = "pub";

fn contract(k: u32) -> RoomContract {
    let yaml = format!(
        r#"
name: test room
{parties}tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone, type: sha256, identifier: hashed_phone, nullable: true }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone, type: sha256, identifier: hashed_phone, nullable: true }}
      - {{ name: segments, type: string_list, identifier: segment, nullable: true }}
computations:
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: users }}
    run_by: [adv]
    results_to: [adv, pub]
    deliver_to: [pub]
  - name: affinity
    affinity: {{ matching: {{ advertiser_table: crm, publisher_table: users }}, confidence: 0.9 }}
    run_by: [adv]
    results_to: [adv, pub]
    deliver_to: [pub]
privacy:
  k_thresholds: [{{ set_by: adv, k: {k} }}]
attestation: {{ allow_simulated: true }}
"#,
        parties = common::participants(ADV_TOKEN, PUB_TOKEN, true)
    );
    RoomFile::parse(&yaml, "test").unwrap()
}

async fn engine(dir: &std::path::Path, k: u32, sinks: Vec<SinkBinding>) -> Engine {
    common::open(dir, vec![contract(k)], sinks).await
}

/// An advertiser row: (email key, phone key), keys are small integers hashed as strings.
type AdvRow = (Option<u8>, Option<u8>);
/// A publisher row: (email key, phone key, segments).
type PubRow = (Option<u8>, Option<u8>, Vec<u8>);

fn key(kind: &str, k: u8) -> String {
    digest(&format!("{kind}{k}"))
}

fn crm_batch(rows: &[AdvRow]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
    ]));
    let email: StringArray = rows.iter().map(|r| r.0.map(|k| key("e", k))).collect();
    let phone: StringArray = rows.iter().map(|r| r.1.map(|k| key("p", k))).collect();
    RecordBatch::try_new(schema, vec![Arc::new(email), Arc::new(phone)]).unwrap()
}

fn users_batch(rows: &[PubRow], offset: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new("segments", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]));
    let ids: StringArray = (0..rows.len()).map(|i| Some(format!("u{}", i + offset))).collect();
    let email: StringArray = rows.iter().map(|r| r.0.map(|k| key("e", k))).collect();
    let phone: StringArray = rows.iter().map(|r| r.1.map(|k| key("p", k))).collect();
    let mut segments = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for s in &r.2 {
            segments.values().append_value(format!("seg{s}"));
        }
        segments.append(true);
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(email), Arc::new(phone), Arc::new(segments.finish())];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Independent computation: (advertiser individuals, publisher individuals, matched advertiser,
/// matched publisher, segment → (matched publisher, matched advertiser)).
struct Expected {
    adv: u64,
    publ: u64,
    matched_adv: u64,
    matched_pub: u64,
    by_segment: BTreeMap<String, (u64, u64)>,
    /// Per exact tier (email, then phone): (advertiser individuals it matched first, their partners
    /// in that tier, publisher individuals it matched first, their partners).
    by_tier: [(u64, u64, u64, u64); 2],
}

/// The advertiser's individuals: its table has no user id, so rows sharing an email or a phone key
/// are one person (connected components, by repeated relabelling until nothing changes).
fn advertiser_persons(adv: &[AdvRow]) -> Vec<usize> {
    let mut person: Vec<usize> = (0..adv.len()).collect();
    loop {
        let mut changed = false;
        for a in 0..adv.len() {
            for b in 0..adv.len() {
                let share =
                    (adv[a].0.is_some() && adv[a].0 == adv[b].0) || (adv[a].1.is_some() && adv[a].1 == adv[b].1);
                if share && person[b] < person[a] {
                    person[a] = person[b];
                    changed = true;
                }
            }
        }
        if !changed {
            return person;
        }
    }
}

fn expected(adv: &[AdvRow], publ: &[PubRow]) -> Expected {
    let person = advertiser_persons(adv);
    let persons: BTreeSet<usize> = person.iter().copied().collect();
    // Pairs of (advertiser person, publisher user) and the first tier that links them: email (0)
    // when any of the person's rows shares the user's email, else phone (1).
    let mut pair_tier: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (a, ar) in adv.iter().enumerate() {
        for (p, pr) in publ.iter().enumerate() {
            let email = ar.0.is_some() && ar.0 == pr.0;
            let phone = ar.1.is_some() && ar.1 == pr.1;
            if email || phone {
                let t = pair_tier.entry((person[a], p)).or_insert(1);
                if email {
                    *t = 0;
                }
            }
        }
    }
    let pairs: BTreeSet<(usize, usize)> = pair_tier.keys().copied().collect();
    let matched_adv: BTreeSet<_> = pairs.iter().map(|(a, _)| *a).collect();
    let matched_pub: BTreeSet<_> = pairs.iter().map(|(_, p)| *p).collect();
    let mut by_segment: BTreeMap<String, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for pr in publ {
        for s in &pr.2 {
            by_segment.entry(format!("seg{s}")).or_default();
        }
    }
    for (a, p) in &pairs {
        for s in &publ[*p].2 {
            let e = by_segment.entry(format!("seg{s}")).or_default();
            e.0.insert(*p);
            e.1.insert(*a);
        }
    }
    // Tiers by brute force: an individual is credited to the first tier of any of its pairs; its
    // partners are those it has in that tier.
    let tier_of = |a: usize, p: usize| pair_tier[&(a, p)];
    let by_tier = [0, 1].map(|tier| {
        let first_adv = |a: usize| pairs.iter().filter(|(x, _)| *x == a).map(|(x, p)| tier_of(*x, *p)).min();
        let first_pub = |p: usize| pairs.iter().filter(|(_, y)| *y == p).map(|(a, y)| tier_of(*a, *y)).min();
        let adv_added: BTreeSet<usize> = matched_adv.iter().copied().filter(|a| first_adv(*a) == Some(tier)).collect();
        let pub_added: BTreeSet<usize> = matched_pub.iter().copied().filter(|p| first_pub(*p) == Some(tier)).collect();
        let adv_partners: BTreeSet<usize> =
            pairs.iter().filter(|(a, p)| adv_added.contains(a) && tier_of(*a, *p) == tier).map(|(_, p)| *p).collect();
        let pub_partners: BTreeSet<usize> =
            pairs.iter().filter(|(a, p)| pub_added.contains(p) && tier_of(*a, *p) == tier).map(|(a, _)| *a).collect();
        (adv_added.len() as u64, adv_partners.len() as u64, pub_added.len() as u64, pub_partners.len() as u64)
    });
    Expected {
        by_tier,
        adv: persons.len() as u64,
        publ: publ.len() as u64,
        matched_adv: matched_adv.len() as u64,
        matched_pub: matched_pub.len() as u64,
        by_segment: by_segment.into_iter().map(|(s, (p, a))| (s, (p.len() as u64, a.len() as u64))).collect(),
    }
}

async fn run_and_check(adv: Vec<AdvRow>, publ: Vec<PubRow>, k: u32) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), k, vec![]).await;
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    let half = publ.len() / 2;
    upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ[..half], 0), users_batch(&publ[half..], half)])
        .await
        .unwrap();
    let released = common::run(&engine, ADV_TOKEN, "overlap").await;
    let exp = expected(&adv, &publ);
    let k = u64::from(k);
    let overlap_individuals = exp.matched_adv.min(exp.matched_pub);

    let summary = &released.section("summary").unwrap().rows()[0];
    let cells = summary.cells();
    let want = [
        (exp.adv, exp.adv),
        (exp.publ, exp.publ),
        (exp.matched_adv, overlap_individuals),
        (exp.matched_pub, overlap_individuals),
    ];
    for (cell, (value, individuals)) in cells.iter().zip(want) {
        if individuals >= k {
            prop_assert_eq!(count(cell), Some(value));
        } else {
            prop_assert_eq!(cell, &ReleasedCell::Suppressed);
        }
    }
    // Match rates are suppressed whenever the overlap is under k.
    for cell in &cells[4..6] {
        if overlap_individuals < k {
            prop_assert_eq!(cell, &ReleasedCell::Suppressed);
        }
    }
    if let (ReleasedCell::Value(CellValue::Real(rate)), true) = (&cells[4], exp.adv > 0) {
        prop_assert!((rate - exp.matched_adv as f64 / exp.adv as f64).abs() < 1e-12);
    }

    let by_segment = released.section("by_segment").unwrap();
    let got: Vec<&str> = by_segment.rows().iter().map(|r| r.dimensions()[0].as_str()).collect();
    let want_segments: Vec<&str> = exp.by_segment.keys().map(String::as_str).collect();
    prop_assert_eq!(got, want_segments, "every segment is listed, in name order");
    let (mut hidden, mut hidden_total) = (0, 0);
    for row in by_segment.rows() {
        let (np, na) = exp.by_segment[&row.dimensions()[0]];
        let individuals = np.min(na);
        match &row.cells()[0] {
            ReleasedCell::Value(CellValue::Count(v)) => {
                // The property: no released cell is about fewer than k distinct individuals.
                prop_assert!(individuals >= k, "released a cell about {} < k = {} individuals", individuals, k);
                prop_assert_eq!(*v, np);
            }
            ReleasedCell::Suppressed => {
                hidden += 1;
                hidden_total += np;
            }
            other => prop_assert!(false, "unexpected cell {:?}", other),
        }
    }
    // Suppressed segments are none, all, or at least two totalling ≥ k: when segments partition
    // the base, the matched count minus the released segments reveals no single segment under k.
    let rows = by_segment.rows().len();
    prop_assert!(
        hidden == 0 || hidden == rows || (hidden >= 2 && hidden_total >= k),
        "{} suppressed segments totalling {} (k = {})",
        hidden,
        hidden_total,
        k
    );

    // by_tier: what each exact tier added, checked against the brute-force tiers. A released cell
    // equals the oracle and is about ≥ k individuals; a column's suppressed cells are none, all, or at
    // least two that together count ≥ k (so no hidden cell is the total minus the released ones).
    let by_tier = released.section("by_tier").unwrap();
    let names: Vec<&str> = by_tier.rows().iter().map(|r| r.dimensions()[0].as_str()).collect();
    prop_assert_eq!(names, vec!["hashed_email", "hashed_phone"]);
    for column in 0..2 {
        let mut hidden_total = 0;
        let mut hidden = 0;
        for (row, oracle) in by_tier.rows().iter().zip(&exp.by_tier) {
            let (value, individuals) =
                if column == 0 { (oracle.0, oracle.0.min(oracle.1)) } else { (oracle.2, oracle.2.min(oracle.3)) };
            match count(&row.cells()[column]) {
                Some(v) => {
                    prop_assert_eq!(v, value, "tier {} column {}", row.dimensions()[0], column);
                    prop_assert!(individuals >= k, "released a tier cell about {} < k = {}", individuals, k);
                }
                None => {
                    hidden += 1;
                    hidden_total += value;
                }
            }
        }
        let rows = by_tier.rows().len();
        prop_assert!(
            hidden == 0 || hidden == rows || (hidden >= 2 && hidden_total >= k),
            "{} hidden tier cells totalling {} can be recovered from the released ones (k = {})",
            hidden,
            hidden_total,
            k
        );
    }
    Ok(())
}

/// Checks the released affinity report against a brute-force computation.
async fn affinity_check(adv: Vec<AdvRow>, publ: Vec<PubRow>, k: u32) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), k, vec![]).await;
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ, 0)]).await.unwrap();
    let released = common::run(&engine, ADV_TOKEN, "affinity").await;
    let exp = expected(&adv, &publ);
    let k = u64::from(k);
    let (n1, n2) = (exp.matched_pub, exp.publ);
    // Base by brute force: publisher rows (each its own user) per segment.
    let mut base: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (p, row) in publ.iter().enumerate() {
        for s in &row.2 {
            base.entry(format!("seg{s}")).or_default().insert(p);
        }
    }
    let section = released.section("affinity").unwrap();
    prop_assert_eq!(section.rows().len(), base.len(), "every segment is listed, ranked or withheld");
    let mut last_index = f64::INFINITY;
    let mut withheld_started = false;
    let mut withheld = Vec::new();
    for row in section.rows() {
        let (rank, segment) = (&row.dimensions()[0], &row.dimensions()[1]);
        let a = exp.by_segment.get(segment).map_or(0, |(np, _)| *np);
        let b = base[segment].len() as u64;
        let real = |c: &ReleasedCell| match c {
            ReleasedCell::Value(CellValue::Real(v)) => Some(*v),
            _ => None,
        };
        if rank == "withheld" {
            withheld_started = true;
            withheld.push((a, b));
            for cell in row.cells() {
                prop_assert_eq!(cell, &ReleasedCell::Suppressed, "a withheld row shows nothing");
            }
            continue;
        }
        prop_assert!(!withheld_started, "ranked rows come before withheld ones");
        let partners = exp.by_segment.get(segment).map_or(0, |(_, na)| *na);
        prop_assert!(
            a >= k && b >= k && partners >= k,
            "segment {} ranked with audience {} / partners {} / base {} under k = {}",
            segment,
            a,
            partners,
            b,
            k
        );
        prop_assert_eq!(count(&row.cells()[0]), Some(a));
        prop_assert_eq!(count(&row.cells()[1]), Some(b));
        let index = real(&row.cells()[4]).unwrap();
        let want = 100.0 * (a as f64 / n1 as f64) / (b as f64 / n2 as f64);
        prop_assert!((index - want).abs() < 1e-9 * want.max(1.0), "index {} vs {}", index, want);
        let (low, high) = (real(&row.cells()[5]).unwrap(), real(&row.cells()[6]).unwrap());
        prop_assert!(low <= index && index <= high);
        prop_assert!((real(&row.cells()[7]).unwrap() - (want / 100.0 - 1.0)).abs() < 1e-9 * want.max(1.0));
        prop_assert!(index <= last_index, "ranked by index, highest first");
        last_index = index;
    }
    // Withheld rows cannot be recovered from the released ones and the totals.
    let n = withheld.len();
    let (wa, wb) = withheld.iter().fold((0, 0), |(x, y), (a, b)| (x + a, y + b));
    prop_assert!(
        n == 0 || n == base.len() || (n >= 2 && wa >= k && wb >= k),
        "withheld {:?} under k = {}",
        withheld,
        k
    );
    Ok(())
}

fn adv_rows() -> impl Strategy<Value = Vec<AdvRow>> {
    proptest::collection::vec((proptest::option::of(0u8..60), proptest::option::of(0u8..60)), 1..120)
}

fn pub_rows() -> impl Strategy<Value = Vec<PubRow>> {
    proptest::collection::vec(
        (proptest::option::of(0u8..60), proptest::option::of(0u8..60), proptest::collection::vec(0u8..6, 0..3)),
        2..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For random data and random k, the released overlap equals an independent computation and no
    /// released cell has fewer than k distinct individuals.
    #[test]
    fn overlap_is_exact_and_k_anonymous(adv in adv_rows(), publ in pub_rows(), k in 2u32..40) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_and_check(adv, publ, k))?;
    }

    /// The affinity report equals a brute-force computation, ranks only segments whose audience and
    /// base reach k, and withholds the others so that they cannot be recovered.
    #[test]
    fn affinity_is_exact_ranked_and_k_anonymous(adv in adv_rows(), publ in pub_rows(), k in 2u32..12) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(affinity_check(adv, publ, k))?;
    }
}

/// `n` advertiser rows and `n` publisher rows that match one to one, all in `segment`.
fn matched(n: usize, start: u8, segment: u8) -> (Vec<AdvRow>, Vec<PubRow>) {
    let adv = (0..n).map(|i| (Some(start + i as u8), None)).collect();
    let publ = (0..n).map(|i| (Some(start + i as u8), None, vec![segment])).collect();
    (adv, publ)
}

#[tokio::test]
async fn a_segment_at_k_minus_one_is_suppressed_and_at_k_released() {
    let k = 10;
    let (mut adv, mut publ) = matched(9, 0, 1); // seg1: k - 1 matched individuals
    let (a2, p2) = matched(10, 100, 2); // seg2: exactly k
    let (a3, p3) = matched(9, 200, 3); // seg3: k - 1 again, so seg1 and seg3 protect each other
    adv.extend(a2.into_iter().chain(a3));
    publ.extend(p2.into_iter().chain(p3));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), k, vec![]).await;
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ, 0)]).await.unwrap();
    let released = common::run(&engine, ADV_TOKEN, "overlap").await;
    let rows = released.section("by_segment").unwrap().rows();
    assert_eq!(rows[0].dimensions(), ["seg1"]);
    assert_eq!(rows[0].cells()[0], ReleasedCell::Suppressed);
    assert_eq!(rows[1].dimensions(), ["seg2"]);
    assert_eq!(count(&rows[1].cells()[0]), Some(10));
    assert_eq!(rows[2].cells()[0], ReleasedCell::Suppressed);
    let json = released.json();
    assert_eq!(json["sections"][1]["rows"][0]["overlap"]["suppressed"], true);
    assert_eq!(json["sections"][1]["rows"][1]["overlap"]["value"], 10);
}

#[tokio::test]
async fn a_lone_small_segment_takes_the_next_smallest_with_it() {
    // seg1 (9 < k) and seg2 (10) partition the matched 19: releasing seg2 would give seg1 = 19 − 10.
    let k = 10;
    let (mut adv, mut publ) = matched(9, 0, 1);
    let (a2, p2) = matched(10, 100, 2);
    let (a3, p3) = matched(40, 150, 3);
    adv.extend(a2.into_iter().chain(a3));
    publ.extend(p2.into_iter().chain(p3));
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), k, vec![]).await;
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ, 0)]).await.unwrap();
    let released = common::run(&engine, ADV_TOKEN, "overlap").await;
    let rows = released.section("by_segment").unwrap().rows();
    let cells: Vec<Option<u64>> = rows.iter().map(|r| count(&r.cells()[0])).collect();
    assert_eq!(cells, vec![None, None, Some(40)], "seg2 is withheld to protect seg1");
}

#[tokio::test]
async fn an_individual_matched_by_email_and_phone_counts_once() {
    let adv: Vec<AdvRow> = (0..5).map(|i| (Some(i), Some(i))).collect();
    let publ: Vec<PubRow> = (0..5).map(|i| (Some(i), Some(i), vec![0])).collect();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 2, vec![]).await;
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ, 0)]).await.unwrap();
    let caller = common::caller(&engine, ADV_TOKEN);
    engine.run(&caller, "overlap").await.unwrap();
    let released = engine.release(&caller, "overlap", None, Channel::Rest).unwrap();
    let summary = &released.section("summary").unwrap().rows()[0];
    assert_eq!(count(&summary.cells()[2]), Some(5));
    assert_eq!(count(&summary.cells()[3]), Some(5));
    assert_eq!(summary.cells()[4], ReleasedCell::Value(CellValue::Real(1.0)));
}

#[tokio::test]
async fn permissions_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 2, vec![]).await;
    let room = engine.room_ids()[0].clone();
    let publisher = common::login(&engine, room.as_str(), PUB_TOKEN).unwrap();
    let err = engine.begin_upload(&publisher, "crm").unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)));
    assert_eq!(err.to_string(), "participant 'pub' may not upload table 'crm': the contract names 'adv' as its owner");
    let err = engine.run(&publisher, "overlap").await.unwrap_err();
    assert_eq!(err.to_string(), "participant 'pub' may not run computation 'overlap' (run_by: adv)");
    assert!(matches!(engine.authenticate(room.as_str(), "wrong"), Err(Error::Unauthenticated(_))));
    assert!(matches!(common::login(&engine, "nope", ADV_TOKEN), Err(Error::InvalidRequest(_))));
    let advertiser = common::login(&engine, room.as_str(), ADV_TOKEN).unwrap();
    let err = engine.run(&advertiser, "overlap").await.unwrap_err();
    assert!(err.to_string().contains("table 'crm' (owner: adv) has not been uploaded yet"), "{err}");
    let err = engine.release(&advertiser, "overlap", None, Channel::Rest).unwrap_err();
    assert!(err.to_string().contains("has not run yet"), "{err}");
}

#[tokio::test]
async fn bad_hashes_are_counted_over_the_whole_upload_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 2, vec![]).await;
    let schema = Arc::new(Schema::new(vec![Field::new("email", DataType::Utf8, true)]));
    let good = digest("x");
    let b1 = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![Some(good.as_str()), Some("not-a-hash"), None]))],
    )
    .unwrap();
    let b2 = RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec![Some("jane@example.com"), Some(good.as_str())]))],
    )
    .unwrap();
    let err = upload(&engine, ADV_TOKEN, "crm", vec![b1, b2]).await.unwrap_err().to_string();
    assert!(err.contains("column 'email': 2 of 5 rows are bad; first bad row: 1 (0-based)"), "{err}");
    let caller = common::caller(&engine, ADV_TOKEN);
    assert!(!engine.datasets(&caller).unwrap()[0].uploaded);
    let staging = dir.path().join("rooms").join(engine.room_ids()[0].as_str()).join("staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
}

#[tokio::test]
async fn wrong_schemas_name_the_column_and_the_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 2, vec![]).await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int32, false),
        Field::new("Email", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int32Array::from(vec![1])), Arc::new(StringArray::from(vec![Some(digest("x"))]))],
    )
    .unwrap();
    let err = upload(&engine, PUB_TOKEN, "users", vec![batch]).await.unwrap_err().to_string();
    assert!(err.contains("column 'user_id' has Arrow type Int32, but the contract declares string"), "{err}");
    assert!(err.contains("column 'Email' is not in the contract of table 'users'; did you mean 'email'?"), "{err}");
}

#[tokio::test]
async fn a_dropped_upload_leaves_no_dataset_and_the_old_version_stays() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 2, vec![]).await;
    let first = crm_batch(&[(Some(1), None), (Some(2), None)]);
    upload(&engine, ADV_TOKEN, "crm", vec![first]).await.unwrap();
    let caller = common::caller(&engine, ADV_TOKEN);
    let before = engine.datasets(&caller).unwrap()[0].clone();
    {
        let mut session = engine.begin_upload(&caller, "crm").unwrap();
        session.push(crm_batch(&[(Some(3), None)])).await.unwrap();
        // The connection drops: the session is dropped without commit.
    }
    let after = engine.datasets(&caller).unwrap()[0].clone();
    assert_eq!(before, after, "the committed version is unchanged");
    assert_eq!(after.rows, Some(2));
    let staging = dir.path().join("rooms").join(engine.room_ids()[0].as_str()).join("staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0, "no staging file is left");
    let audit = engine.audit_entries(&caller).unwrap();
    assert!(audit.iter().any(|e| matches!(&e.event, sealroom_engine::audit::AuditEvent::UploadRejected { reason, .. } if reason.contains("dropped connection"))));
}

#[tokio::test]
async fn a_top_affinity_release_to_the_publishers_sink_makes_a_deal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("activations");
    let sinks = vec![SinkBinding {
        participant: "pub".into(),
        room: None,
        config: serde_json::json!({"type": "file", "path": out}),
    }];
    // seg1: 20 of the 50 who hold it are customers; seg2: 5 of 35. Both rank at k = 2, seg1 first.
    let (mut adv, mut publ) = matched(20, 0, 1);
    let (a2, p2) = matched(5, 50, 2);
    adv.extend(a2);
    publ.extend(p2);
    publ.extend((100..130).map(|i| (Some(i), None, vec![1, 2])));
    let engine = engine(dir.path(), 2, sinks).await;
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ, 0)]).await.unwrap();
    let analyst = common::caller(&engine, ADV_TOKEN);
    let record = engine.run(&analyst, "affinity").await.unwrap();
    assert_eq!(record.deliveries[0].status, "delivered", "{:?}", record.deliveries);
    let released = engine.release(&analyst, "affinity", Some(&record.run_id), Channel::Rest).unwrap();
    let ranked: Vec<String> = released
        .section("affinity")
        .unwrap()
        .rows()
        .iter()
        .filter(|r| r.dimensions()[0].parse::<u64>().is_ok())
        .map(|r| r.dimensions()[1].clone())
        .collect();
    assert_eq!(ranked, ["seg1", "seg2"]);

    let publisher = common::caller(&engine, PUB_TOKEN);
    let deals = engine.deals(&publisher).unwrap();
    assert_eq!(deals, engine.deals(&analyst).unwrap(), "publisher and advertiser see the same deal");
    assert_eq!(deals.len(), 1);
    let deal = &deals[0];
    assert_eq!((deal.kind.as_str(), deal.publisher.as_str(), deal.advertiser.as_str()), ("top_affinity", "pub", "adv"));
    assert_eq!((deal.segments.clone(), deal.audience_size), (ranked, None));
    assert_eq!(deal.run_id, record.run_id);
    let deal_file = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-deal-"))
        .expect("the deal went to the publisher's sink with the release");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(deal_file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["row"]["deal_id"], deal.deal_id.as_str());
    assert_eq!(line["row"]["segments"], serde_json::json!(["seg1", "seg2"]));
    assert_eq!(line["release_digest"], deal.release_digest.as_str());
}

#[tokio::test]
async fn restart_keeps_datasets_runs_and_the_audit_chain_and_replacements_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("activations");
    let sinks = vec![SinkBinding {
        participant: "pub".into(),
        room: None,
        config: serde_json::json!({"type": "file", "path": out}),
    }];
    let (adv, publ) = matched(6, 0, 1);
    let run_id;
    {
        let engine = engine(dir.path(), 2, sinks.clone()).await;
        upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv[..3])]).await.unwrap();
        // Re-uploading replaces the old version.
        upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
        upload(&engine, PUB_TOKEN, "users", vec![users_batch(&publ, 0)]).await.unwrap();
        let caller = common::caller(&engine, ADV_TOKEN);
        let record = engine.run(&caller, "overlap").await.unwrap();
        assert_eq!(record.deliveries.len(), 1);
        assert_eq!(record.deliveries[0].status, "delivered", "{:?}", record.deliveries);
        run_id = record.run_id;
        engine.close().await;
    }
    // The superseded version's file is gone; only the current one remains.
    let crm_dir = dir.path().join("rooms").join(contract(2).room_id().as_str()).join("tables").join("crm");
    let files: Vec<_> = std::fs::read_dir(&crm_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 2, "current.json and one version: {files:?}");
    // Three delivery files: summary, by_segment and by_tier.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);

    let engine = engine(dir.path(), 2, sinks).await;
    let caller = common::caller(&engine, ADV_TOKEN);
    let datasets: HashMap<String, _> =
        engine.datasets(&caller).unwrap().into_iter().map(|d| (d.table.clone(), d)).collect();
    assert_eq!(datasets["crm"].rows, Some(6));
    assert!(datasets["users"].uploaded);
    assert_eq!(datasets["users"].rows, None, "the advertiser does not see the publisher's row count");
    let released = engine.release(&caller, "overlap", Some(&run_id), Channel::Rest).unwrap();
    assert_eq!(count(&released.section("summary").unwrap().rows()[0].cells()[2]), Some(6));
    let audit = engine.audit_entries(&caller).unwrap();
    assert_eq!(sealroom_engine::audit::verify_chain(&audit).unwrap(), audit.last().unwrap().entry_sha256);
}

#[tokio::test]
async fn rooms_that_refuse_the_simulated_tee_are_not_hosted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = contract(2);
    c.attestation.as_mut().unwrap().allow_simulated = false;
    let err = common::try_open(dir.path(), vec![c], vec![]).await.unwrap_err().to_string();
    assert!(err.contains("does not accept the simulated TEE"), "{err}");
}

#[tokio::test]
async fn oversized_uploads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        data_dir: dir.path().to_owned(),
        enclave: sealroom_engine::Enclave::insecure_simulated().unwrap(),
        limits: UploadLimits { max_rows: 3, max_bytes: u64::MAX },
        sinks: vec![],
    };
    let engine = Engine::open(config, vec![contract(2)], Arc::new(EngineMetrics::unregistered())).await.unwrap();
    let rows: Vec<AdvRow> = (0..4).map(|i| (Some(i), None)).collect();
    let err = upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&rows)]).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
}

#[tokio::test]
async fn what_a_crash_leaves_behind_is_cleaned_on_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = engine(dir.path(), 2, vec![]).await;
        upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&[(Some(1), None), (Some(2), None)])]).await.unwrap();
    }
    let room_dir = dir.path().join("rooms").join(contract(2).room_id().as_str());
    // A crash mid-upload leaves a staging file; a crash between moving a version into place and
    // publishing its manifest leaves an unreferenced version file.
    std::fs::write(room_dir.join("staging").join("crm-partial.arrow"), b"half an upload").unwrap();
    std::fs::write(room_dir.join("tables").join("crm").join("v-orphan.arrow"), b"never published").unwrap();
    let engine = engine(dir.path(), 2, vec![]).await;
    assert_eq!(std::fs::read_dir(room_dir.join("staging")).unwrap().count(), 0);
    assert!(!room_dir.join("tables").join("crm").join("v-orphan.arrow").exists());
    let caller = common::caller(&engine, ADV_TOKEN);
    assert_eq!(engine.datasets(&caller).unwrap()[0].rows, Some(2), "the committed version survives");
}

/// A separate segment table, one row per membership (with a repeat and a user the publisher table
/// does not hold), joined to the publisher's individuals on the user id.
#[tokio::test]
async fn a_separate_segment_table_joins_on_the_user_id() {
    let yaml = format!(
        r#"
name: segment table room
{parties}tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone, type: sha256, identifier: hashed_phone, nullable: true }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
  - name: audiences
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: segment, type: string, identifier: segment }}
computations:
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: users, segment_table: audiences }}
    run_by: [adv]
    results_to: [adv]
privacy:
  k_thresholds: [{{ set_by: adv, k: 2 }}]
attestation: {{ allow_simulated: true }}
"#,
        parties = common::participants(ADV_TOKEN, PUB_TOKEN, false)
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), vec![RoomFile::parse(&yaml, "t").unwrap()], vec![]).await;
    // Advertiser: e0..e5. Publisher users u0..u9 with emails e0..e9: u0..u5 match.
    let adv: Vec<AdvRow> = (0..6).map(|i| (Some(i), None)).collect();
    upload(&engine, ADV_TOKEN, "crm", vec![crm_batch(&adv)]).await.unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
    ]));
    let ids: StringArray = (0..10).map(|i| Some(format!("u{i}"))).collect();
    let emails: StringArray = (0..10u8).map(|i| Some(key("e", i))).collect();
    let users = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(emails)]).unwrap();
    upload(&engine, PUB_TOKEN, "users", vec![users]).await.unwrap();
    // news: u0, u1, u1 (repeat), u2, u7, ghost (not a publisher user); sport: u3, u4, u8, u9.
    let memberships = [
        ("u0", "news"),
        ("u1", "news"),
        ("u1", "news"),
        ("u2", "news"),
        ("u7", "news"),
        ("ghost", "news"),
        ("u3", "sport"),
        ("u4", "sport"),
        ("u8", "sport"),
        ("u9", "sport"),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
    ]));
    let u: StringArray = memberships.iter().map(|m| Some(m.0)).collect();
    let s: StringArray = memberships.iter().map(|m| Some(m.1)).collect();
    let audiences = RecordBatch::try_new(schema, vec![Arc::new(u), Arc::new(s)]).unwrap();
    upload(&engine, PUB_TOKEN, "audiences", vec![audiences]).await.unwrap();
    let released = common::run(&engine, ADV_TOKEN, "overlap").await;
    let rows = released.section("by_segment").unwrap().rows();
    let got: Vec<(&str, Option<u64>)> =
        rows.iter().map(|r| (r.dimensions()[0].as_str(), count(&r.cells()[0]))).collect();
    // news: u0, u1, u2 matched (u1 once, u7 unmatched, ghost ignored); sport: u3, u4.
    assert_eq!(got, vec![("news", Some(3)), ("sport", Some(2))]);
}
