//! SQL computations against the running engine: aggregates released per group with at least k
//! individuals, the match readable as `matched`, contributor counts that stop isolating one person
//! inside a large group, and queries refused when the room is hosted.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use sealroom_engine::{CellValue, Error, Released, ReleasedCell, check_sql};
use sealroom_proto::RoomFile;

mod common;
use common::{count, digest};

const ADV: &str = "adv";
const PUB: &str = "pub";

fn room(computations: &str) -> String {
    format!(
        r#"
name: sql room
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
      - {{ name: segment, type: string, identifier: segment }}
      - {{ name: age, type: int64 }}
      - {{ name: income, type: float64 }}
  - name: notes
    owner: pub
    columns:
      - {{ name: text, type: string }}
computations:
{computations}
privacy:
  k_thresholds: [{{ set_by: pub, k: 10 }}]
attestation: {{ allow_simulated: true }}
"#,
        parties = common::participants(ADV, PUB, true)
    )
}

fn computation(name: &str, query: &str, tables: &str, matching: bool) -> String {
    let matching = if matching { "\n      matching: { advertiser_table: crm, publisher_table: users }" } else { "" };
    format!(
        "  - name: {name}\n    sql:\n      query: \"{query}\"\n      tables: [{tables}]{matching}\n    run_by: [adv]\n    results_to: [adv]\n"
    )
}

/// 30 users in `sports` (ages 20..50, income 1000 each, one of them aged 77 with income 99,999),
/// 25 in `travel`, 4 in `opera`; the first 20 sports users and the first 12 travel users are
/// customers of the advertiser.
async fn world(computations: &str) -> (sealroom_engine::Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let contract = RoomFile::parse(&room(computations), "sql").unwrap();
    let engine = common::open(dir.path(), vec![contract], vec![]).await;
    let mut ids = Vec::new();
    let mut segments = Vec::new();
    let mut ages = Vec::new();
    let mut incomes = Vec::new();
    for (segment, n) in [("sports", 30), ("travel", 25), ("opera", 4)] {
        for i in 0..n {
            ids.push(format!("{segment}{i}"));
            segments.push(segment.to_owned());
            let odd = segment == "sports" && i == 7;
            ages.push(if odd { 77 } else { 20 + i as i64 });
            incomes.push(if odd { 99_999.0 } else { 1000.0 });
        }
    }
    let emails: Vec<String> = ids.iter().map(|i| digest(i)).collect();
    let users = RecordBatch::try_from_iter([
        ("user_id", Arc::new(StringArray::from(ids.clone())) as ArrayRef),
        ("email", Arc::new(StringArray::from(emails.clone())) as ArrayRef),
        ("segment", Arc::new(StringArray::from(segments)) as ArrayRef),
        ("age", Arc::new(Int64Array::from(ages)) as ArrayRef),
        ("income", Arc::new(Float64Array::from(incomes)) as ArrayRef),
    ])
    .unwrap();
    common::upload(&engine, PUB, "users", vec![users]).await.unwrap();
    let customers: Vec<usize> = (0..20).chain(30..42).collect();
    let crm = RecordBatch::try_from_iter([
        ("customer_id", Arc::new(StringArray::from_iter_values(customers.iter().map(|i| format!("c{i}")))) as ArrayRef),
        ("email", Arc::new(StringArray::from_iter_values(customers.iter().map(|i| emails[*i].clone()))) as ArrayRef),
    ])
    .unwrap();
    common::upload(&engine, ADV, "crm", vec![crm]).await.unwrap();
    (engine, dir)
}

fn real(cell: &ReleasedCell) -> Option<f64> {
    match cell {
        ReleasedCell::Value(CellValue::Real(v)) => Some(*v),
        _ => None,
    }
}

fn rows(released: &Released) -> Vec<(Vec<String>, Vec<ReleasedCell>)> {
    released.section("result").unwrap().rows().iter().map(|r| (r.dimensions().to_vec(), r.cells().to_vec())).collect()
}

#[tokio::test]
async fn aggregates_are_released_per_group_of_at_least_k_and_small_groups_are_not_listed() {
    let c = computation(
        "by_segment",
        "SELECT segment, COUNT(*) AS users, AVG(income) AS mean_income FROM users WHERE age < 70 GROUP BY segment",
        "users",
        false,
    );
    let (engine, _dir) = world(&c).await;
    let released = common::run(&engine, ADV, "by_segment").await;
    let section = released.section("result").unwrap();
    assert_eq!(section.dimensions(), ["segment"]);
    assert_eq!(section.metrics().iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["users", "mean_income"]);
    let rows = rows(&released);
    // opera (4 people) is not listed; sports lost its 77-year-old to the WHERE.
    assert_eq!(rows.iter().map(|r| r.0[0].as_str()).collect::<Vec<_>>(), ["sports", "travel"]);
    assert_eq!(count(&rows[0].1[0]), Some(29));
    assert_eq!(count(&rows[1].1[0]), Some(25));
    assert_eq!(real(&rows[0].1[1]), Some(1000.0));
    // Nothing hidden leaks into the release.
    assert!(!released.json().to_string().contains("__sealroom"));
}

#[tokio::test]
async fn the_match_is_a_table_and_counts_are_about_both_sides() {
    let c = computation(
        "customers_by_segment",
        "SELECT u.segment, COUNT(DISTINCT m.advertiser_id) AS customers FROM matched m JOIN users u ON m.publisher_id = u.user_id GROUP BY u.segment",
        "users",
        true,
    );
    let (engine, _dir) = world(&c).await;
    let rows = rows(&common::run(&engine, ADV, "customers_by_segment").await);
    assert_eq!(rows.iter().map(|r| r.0[0].as_str()).collect::<Vec<_>>(), ["sports", "travel"]);
    assert_eq!(count(&rows[0].1[0]), Some(20));
    assert_eq!(count(&rows[1].1[0]), Some(12));
}

/// SQL that tries to isolate one person inside a large group: the sum of one person's income in a
/// group of 30. The group reaches k, but the sum has one contributor, so it is suppressed.
#[tokio::test]
async fn sql_that_isolates_one_person_inside_a_large_group_is_suppressed() {
    let c = computation(
        "isolate",
        "SELECT segment, COUNT(*) AS users, SUM(CASE WHEN age = 77 THEN income ELSE 0 END) AS target_income FROM users GROUP BY segment",
        "users",
        false,
    );
    let (engine, _dir) = world(&c).await;
    let rows = rows(&common::run(&engine, ADV, "isolate").await);
    assert_eq!(rows[0].0[0], "sports");
    assert_eq!(count(&rows[0].1[0]), Some(30));
    assert_eq!(rows[0].1[1], ReleasedCell::Suppressed, "one person's income is not released");
}

#[tokio::test]
async fn queries_that_could_leak_rows_or_reach_outside_the_room_are_refused_at_hosting() {
    for (query, tables, expected) in [
        ("SELECT segment COUNT(*) FROM users", "users", "does not parse"),
        (
            "SELECT segment, COUNT(*) AS n FROM secrets GROUP BY segment",
            "users",
            "table 'secrets' is not one this computation may read",
        ),
        (
            "SELECT segment, COUNT(*) AS n FROM crm GROUP BY segment",
            "users",
            "table 'crm' is not one this computation may read",
        ),
        ("SELECT user_id, income FROM users", "users", "returns rows, not aggregates"),
        ("SELECT user_id, COUNT(*) AS n FROM users GROUP BY user_id", "users", "would return row-level identifiers"),
        ("SELECT email, COUNT(*) AS n FROM users GROUP BY email", "users", "would return row-level identifiers"),
        (
            "SELECT segment, MAX(income) AS top FROM users GROUP BY segment",
            "users",
            "the aggregate MAX can return one person's value",
        ),
        (
            "SELECT segment, COUNT(*) AS n FROM users GROUP BY segment ORDER BY n DESC LIMIT 3",
            "users",
            "ORDER BY and LIMIT are not supported",
        ),
        (
            "SELECT segment, COUNT(*) AS n FROM users WHERE age IN (SELECT age FROM users) GROUP BY segment",
            "users",
            "subqueries are not supported",
        ),
        ("SELECT * FROM users", "users", "returns rows, not aggregates"),
        (
            "SELECT segment, SUM(CASE WHEN user_id = 'x' THEN income END) AS s FROM users GROUP BY segment",
            "users",
            "SUM over an identifier column",
        ),
        (
            "SELECT segment, COUNT(*) AS n FROM users GROUP BY segment UNION SELECT segment, COUNT(*) FROM users GROUP BY segment",
            "users",
            "set operations",
        ),
        (
            "SELECT segment, COUNT(*) AS n, AVG(nope) AS x FROM users GROUP BY segment",
            "users",
            "does not plan against the room's tables",
        ),
        ("DROP TABLE users", "users", "give exactly one SELECT statement"),
        (
            "SELECT segment, 100000 AS __sealroom_g0, COUNT(*) AS n FROM users GROUP BY segment",
            "users",
            "reserved for the engine",
        ),
        ("SELECT text, COUNT(*) AS n FROM notes GROUP BY text", "notes", "has no user_id column"),
    ] {
        let c = computation("q", query, tables, false);
        // Proto validation catches what needs no parsing (a table without user ids); the engine the rest.
        let message = match RoomFile::parse(&room(&c), "sql") {
            Err(e) => e.to_string(),
            Ok(contract) => match check_sql(&contract).await {
                Err(e @ Error::Contract(_)) => e.to_string(),
                other => panic!("{query}: expected a refusal, got {other:?}"),
            },
        };
        assert!(message.contains(expected), "{query}: {message}");
    }
}

/// Two aggregates of one row that differ by one person: the income of everyone, and of everyone
/// but the 77-year-old. Both have 30 or 29 contributors, far above k; their difference is one
/// person's income. The difference check suppresses the one whose contributors are within k of
/// the group's.
#[tokio::test]
async fn two_aggregates_that_differ_by_one_person_are_not_both_released() {
    let c = computation(
        "subtract",
        "SELECT segment, SUM(income) AS income, SUM(CASE WHEN age <> 77 THEN income ELSE 0 END) AS without_one FROM users GROUP BY segment",
        "users",
        false,
    );
    let (engine, _dir) = world(&c).await;
    let rows = rows(&common::run(&engine, ADV, "subtract").await);
    assert_eq!(rows[0].0[0], "sports");
    assert_eq!(real(&rows[0].1[0]), Some(29.0 * 1000.0 + 99_999.0));
    assert_eq!(rows[0].1[1], ReleasedCell::Suppressed);
    // travel has no 77-year-old: both sums are about all 25 people and both are released.
    assert_eq!(rows[1].0[0], "travel");
    assert_eq!(real(&rows[1].1[1]), Some(25_000.0));
}
