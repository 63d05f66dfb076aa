//! The matching tiers of an overlap inside the engine: exact keys in precedence order (with
//! plaintext emails hashed under the room's profile), identity graphs, fuzzy matching of plaintext
//! personal data, and CLK matching; what each tier added, through the release gate.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, ListBuilder, StringArray, StringBuilder};
use arrow::record_batch::RecordBatch;
use sealroom_matching::clk::{self, ClkSchema, Encoder};
use sealroom_matching::hash::sha256;
use sealroom_proto::RoomFile;

mod common;
use common::count;

const ADV: &str = "adv";
const PUB: &str = "pub";
const SECRET: &[u8] = b"the room's CLK secret, 32 bytes!";

const FIRST: [&str; 20] = [
    "olivia",
    "liam",
    "emma",
    "noah",
    "amelia",
    "oliver",
    "sophia",
    "elijah",
    "charlotte",
    "james",
    "isabella",
    "william",
    "mia",
    "benjamin",
    "evelyn",
    "lucas",
    "harper",
    "henry",
    "camila",
    "theodore",
];
const LAST: [&str; 20] = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
];

fn room(overlap: &str) -> String {
    format!(
        r#"
name: tiers
{parties}tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
      - {{ name: email, type: string, identifier: email, nullable: true }}
      - {{ name: phone, type: sha256, identifier: hashed_phone, nullable: true }}
      - {{ name: given_name, type: string, identifier: given_name, nullable: true }}
      - {{ name: surname, type: string, identifier: surname, nullable: true }}
      - {{ name: dob, type: string, identifier: date_of_birth, nullable: true }}
      - {{ name: zip, type: string, identifier: postcode, nullable: true }}
      - {{ name: clk, type: bytes, identifier: clk }}
      - {{ name: clk_keys, type: string_list, identifier: clk_blocking_keys, nullable: true }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone, type: sha256, identifier: hashed_phone, nullable: true }}
      - {{ name: given_name, type: string, identifier: given_name, nullable: true }}
      - {{ name: surname, type: string, identifier: surname, nullable: true }}
      - {{ name: dob, type: string, identifier: date_of_birth, nullable: true }}
      - {{ name: zip, type: string, identifier: postcode, nullable: true }}
      - {{ name: clk, type: bytes, identifier: clk }}
      - {{ name: clk_keys, type: string_list, identifier: clk_blocking_keys, nullable: true }}
  - name: graph
    owner: pub
    columns:
      - {{ name: email, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone, type: sha256, identifier: hashed_phone, nullable: true }}
computations:
  - name: overlap
    overlap: {overlap}
    run_by: [adv]
    results_to: [adv]
privacy:
  k_thresholds: [{{ set_by: adv, k: 5 }}]
attestation: {{ allow_simulated: true }}
"#,
        parties = common::participants(ADV, PUB, true)
    )
}

/// A person of the test population.
#[derive(Clone)]
struct Person {
    given: String,
    surname: String,
    dob: String,
    zip: String,
}

fn person(i: usize) -> Person {
    Person {
        given: FIRST[i % 20].to_owned(),
        surname: LAST[(i / 20 + i * 7) % 20].to_owned(),
        dob: format!("{}-{:02}-{:02}", 1950 + (i * 13) % 50, i % 12 + 1, (i * 5) % 28 + 1),
        zip: format!("{:05}", 10_000 + (i * 7_919) % 89_000),
    }
}

/// A one-character typo in the surname and the birth date written another way.
fn typo(p: &Person) -> Person {
    let mut s: Vec<char> = p.surname.chars().collect();
    let n = s.len();
    s.swap(n - 2, n - 1);
    let (y, rest) = p.dob.split_at(4);
    let (m, d) = (&rest[1..3], &rest[4..6]);
    Person { surname: s.into_iter().collect(), dob: format!("{d}/{m}/{y}").replace("/0", "/"), ..p.clone() }
}

struct Row {
    id: String,
    email: Option<String>,
    phone: Option<String>,
    person: Person,
}

fn batch(rows: &[Row], hashed_email: bool) -> RecordBatch {
    let encoder = Encoder::new(
        ClkSchema::infer(&["given_name".into(), "surname".into(), "date_of_birth".into(), "postcode".into()]),
        SECRET,
    )
    .unwrap();
    let hex_digest = |s: &str| hex::encode(sha256(s.as_bytes()));
    let mut clks = Vec::new();
    let mut keys = ListBuilder::new(StringBuilder::new());
    for r in rows {
        let p = &r.person;
        let values = [Some(p.given.as_str()), Some(p.surname.as_str()), Some(p.dob.as_str()), Some(p.zip.as_str())];
        let mut filter = vec![0u64; encoder.words()];
        encoder.encode_into(&values, &mut filter);
        clks.push(clk::to_bytes(&filter));
        for key in encoder.keyed_blocking_keys(&values) {
            keys.values().append_value(clk::key_to_hex(key));
        }
        keys.append(true);
    }
    let strings =
        |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let id_name = if hashed_email { "user_id" } else { "customer_id" };
    RecordBatch::try_from_iter([
        (id_name, strings(&|r| Some(r.id.clone()))),
        ("email", strings(&|r| r.email.as_ref().map(|e| if hashed_email { hex_digest(e) } else { e.clone() }))),
        ("phone", strings(&|r| r.phone.as_ref().map(|p| hex_digest(p)))),
        ("given_name", strings(&|r| Some(r.person.given.clone()))),
        ("surname", strings(&|r| Some(r.person.surname.clone()))),
        ("dob", strings(&|r| Some(r.person.dob.clone()))),
        ("zip", strings(&|r| Some(r.person.zip.clone()))),
        ("clk", Arc::new(BinaryArray::from_iter_values(clks.iter())) as ArrayRef),
        ("clk_keys", Arc::new(keys.finish()) as ArrayRef),
    ])
    .unwrap()
}

/// The population:
/// - 0..20: the advertiser's plaintext gmail address, written with dots, capitals and a `+tag`,
///   matches the publisher's hash of the normalized address; 0..5 also share a phone.
/// - 20..30: a phone only.
/// - 30..40: the advertiser knows an email, the publisher a phone; the graph links them.
/// - 40..60: no key in common; the publisher's record has a typo in the surname.
/// - advertiser 60..80 and publisher 100..140: nobody on the other side.
fn population() -> (Vec<Row>, Vec<Row>, RecordBatch) {
    let mut adv = Vec::new();
    let mut publ = Vec::new();
    let phone = |i: usize| format!("+1415555{i:04}");
    for i in 0..60 {
        let p = person(i);
        let (a_email, p_email, a_phone, p_phone) = match i {
            0..5 => (
                Some(format!(" {}.{}+News@GMail.com", p.given.to_uppercase(), p.surname)),
                Some(format!("{}{}@gmail.com", p.given, p.surname)),
                Some(phone(i)),
                Some(phone(i)),
            ),
            5..20 => (
                Some(format!("{}.{}+News@GMail.com", p.given, p.surname)),
                Some(format!("{}{}@gmail.com", p.given, p.surname)),
                None,
                None,
            ),
            20..30 => (None, None, Some(phone(i)), Some(phone(i))),
            30..40 => (Some(format!("a{i}@example.com")), None, None, Some(phone(i))),
            _ => (None, None, None, None),
        };
        let pub_person = if i >= 40 { typo(&p) } else { p.clone() };
        adv.push(Row { id: format!("c{i}"), email: a_email, phone: a_phone, person: p });
        publ.push(Row { id: format!("u{i}"), email: p_email, phone: p_phone, person: pub_person });
    }
    for i in 60..80 {
        adv.push(Row { id: format!("c{i}"), email: Some(format!("x{i}@example.com")), phone: None, person: person(i) });
    }
    for i in 100..140 {
        publ.push(Row { id: format!("u{i}"), email: None, phone: Some(phone(i)), person: person(i) });
    }
    let hex_digest = |s: &str| Some(hex::encode(sha256(s.as_bytes())));
    let graph = RecordBatch::try_from_iter([
        (
            "email",
            Arc::new((30..40).map(|i| hex_digest(&format!("a{i}@example.com"))).collect::<StringArray>()) as ArrayRef,
        ),
        ("phone", Arc::new((30..40).map(|i| hex_digest(&phone(i))).collect::<StringArray>()) as ArrayRef),
    ])
    .unwrap();
    (adv, publ, graph)
}

async fn run(overlap: &str) -> (sealroom_engine::Released, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let contract = RoomFile::parse(&room(overlap), "tiers").unwrap_or_else(|e| panic!("{e}"));
    let engine = common::open(dir.path(), vec![contract], vec![]).await;
    let (adv, publ, graph) = population();
    for (token, table, b) in
        [(ADV, "crm", batch(&adv, false)), (PUB, "users", batch(&publ, true)), (PUB, "graph", graph)]
    {
        common::upload(&engine, token, table, vec![b]).await.unwrap();
    }
    (common::run(&engine, ADV, "overlap").await, dir)
}

/// `(tier, added advertiser individuals)` rows of the by_tier section (`None` when suppressed).
fn tiers(released: &sealroom_engine::Released) -> Vec<(String, Option<u64>)> {
    released
        .section("by_tier")
        .unwrap()
        .rows()
        .iter()
        .map(|r| (r.dimensions()[0].clone(), count(&r.cells()[0])))
        .collect()
}

fn matched_advertiser(released: &sealroom_engine::Released) -> Option<u64> {
    count(&released.section("summary").unwrap().rows()[0].cells()[2])
}

#[tokio::test]
async fn exact_tiers_follow_precedence_and_the_graph_adds_what_it_links() {
    let (released, _dir) =
        run("{ advertiser_table: crm, publisher_table: users, match_on: [hashed_phone, hashed_email], identity_graphs: [graph] }")
            .await;
    // Phones first: 0..5 and 20..30 (15); then emails (plaintext, normalized under the sealroom
    // profile: gmail dots, capitals and the +tag go) add 5..20 (15); the graph adds 30..40 (10).
    assert_eq!(
        tiers(&released),
        [("hashed_phone".into(), Some(15)), ("hashed_email".into(), Some(15)), ("identity_graph".into(), Some(10))]
    );
    assert_eq!(matched_advertiser(&released), Some(40));
    // Emails first: the five with both keys move to the email tier.
    let (released, _dir) =
        run("{ advertiser_table: crm, publisher_table: users, match_on: [hashed_email, hashed_phone] }").await;
    assert_eq!(tiers(&released), [("hashed_email".into(), Some(20)), ("hashed_phone".into(), Some(10))]);
    assert_eq!(matched_advertiser(&released), Some(30));
}

#[tokio::test]
async fn profiles_must_agree_and_a_tier_that_adds_nobody_is_suppressed() {
    // Under Google's rules the '+news' tag stays, so no plaintext gmail address matches the
    // publisher's hashes… but the publisher hashed under sealroom's rules, so the room refuses
    // the mismatch before anything runs.
    let err =
        RoomFile::parse(&room("{ advertiser_table: crm, publisher_table: users, normalization: google }"), "tiers")
            .unwrap_err()
            .to_string();
    assert!(err.contains("column 'users.email' was hashed under 'sealroom' normalization"), "{err}");
    // The graph alone over phones: 30..40 link to 10 advertiser emails — but with k = 5 a tier row
    // about fewer than 5 individuals is suppressed; here it is 10, so it shows.
    let (released, _dir) =
        run("{ advertiser_table: crm, publisher_table: users, match_on: [hashed_phone], identity_graphs: [graph] }")
            .await;
    // The graph's email side is not matched on (match_on is phones only), so the graph adds none:
    // a cell about 0 individuals is suppressed, never shown as 0 — and since the phone tier's gain
    // would then reveal the graph's (matched − phone), it is suppressed too (complementary).
    assert_eq!(tiers(&released), [("hashed_phone".into(), None), ("identity_graph".into(), None)]);
    assert_eq!(matched_advertiser(&released), Some(15), "the total itself is about 15 ≥ k individuals");
}

#[tokio::test]
async fn fuzzy_matching_finds_the_people_no_key_links() {
    let (released, _dir) = run("{ advertiser_table: crm, publisher_table: users, fuzzy: {} }").await;
    let t = tiers(&released);
    assert_eq!(t[0], ("hashed_email".into(), Some(20)));
    assert_eq!(t[1], ("hashed_phone".into(), Some(10)));
    assert_eq!(t[2].0, "fuzzy");
    // 30..60 share no key; their names and birth dates match (40..60 with a typo).
    let fuzzy = t[2].1.unwrap();
    assert!((28..=30).contains(&fuzzy), "fuzzy added {fuzzy}");
    // And nobody who is not on both sides.
    assert!(matched_advertiser(&released).unwrap() <= 60);
}

#[tokio::test]
async fn plaintext_identifiers_that_cannot_match_are_reported_to_the_uploader() {
    let dir = tempfile::tempdir().unwrap();
    let contract = RoomFile::parse(&room("{ advertiser_table: crm, publisher_table: users }"), "t").unwrap();
    let engine = common::open(dir.path(), vec![contract], vec![]).await;
    let room_id = engine.room_ids()[0].clone();
    let (mut adv, _, _) = population();
    // Rows 80 and 82 are not emails (the advertiser's phones are uploaded hashed here).
    for (i, email) in [(80, "not an email"), (81, " Jane@Example.com "), (82, "@@example.com")] {
        adv.push(Row { id: format!("c{i}"), email: Some(email.to_owned()), phone: None, person: person(i) });
    }
    let caller = common::login(&engine, room_id.as_str(), ADV).unwrap();
    let mut session = engine.begin_upload(&caller, "crm").unwrap();
    session.push(batch(&adv, false)).await.unwrap();
    let manifest = session.commit().await.unwrap();
    assert_eq!(manifest.rows, 83, "the rows are kept");
    assert_eq!(manifest.warnings.len(), 1, "{:?}", manifest.warnings);
    assert!(
        manifest.warnings[0].starts_with("column 'email': 2 of 83 values are not valid emails"),
        "{:?}",
        manifest.warnings
    );
    assert!(manifest.warnings[0].contains("first at row 80"), "{:?}", manifest.warnings);
    assert!(!manifest.warnings.iter().any(|w| w.contains("not an email")), "values are never quoted");
}

#[tokio::test]
async fn clk_matching_needs_no_plaintext() {
    let (released, _dir) =
        run("{ advertiser_table: crm, publisher_table: users, match_on: [hashed_phone], clk: {} }").await;
    let t = tiers(&released);
    assert_eq!(t[0], ("hashed_phone".into(), Some(15)));
    assert_eq!(t[1].0, "clk");
    // Everyone of 0..60 not matched by phone: 45, the typo'd ones included.
    let clk = t[1].1.unwrap();
    assert!((42..=45).contains(&clk), "clk added {clk}");
    assert!(matched_advertiser(&released).unwrap() <= 60);
}

#[tokio::test]
async fn bad_fuzzy_settings_are_refused_when_the_room_is_hosted() {
    let dir = tempfile::tempdir().unwrap();
    let contract = RoomFile::parse(
        &room("{ advertiser_table: crm, publisher_table: users, fuzzy: { settings: { threshold: 2 } } }"),
        "tiers",
    )
    .unwrap();
    let err = common::try_open(dir.path(), vec![contract], vec![]).await.err().unwrap();
    let e = err.to_string();
    assert!(e.contains("computations[0].overlap.fuzzy.settings") && e.contains("threshold 2"), "{e}");
}

#[test]
fn contracts_that_cannot_match_say_why() {
    let err = |overlap: &str| RoomFile::parse(&room(overlap), "tiers").unwrap_err().to_string();
    let e = err("{ advertiser_table: crm, publisher_table: users, match_on: [hashed_email, hashed_email] }");
    assert!(e.contains("match_on[1]") && e.contains("hashed_email is listed twice"), "{e}");
    let e = err("{ advertiser_table: crm, publisher_table: users, match_on: [given_name] }");
    assert!(e.contains("not given_name"), "{e}");
    let e = err("{ advertiser_table: crm, publisher_table: users, identity_graphs: [crm] }");
    assert!(e.contains("needs at least two hashed identifier columns"), "{e}");
    let e = err("{ advertiser_table: crm, publisher_table: users, fuzzy: { threshold: 1.5 } }");
    assert!(e.contains("fuzzy.threshold") && e.contains("not a probability"), "{e}");
    let e = err("{ advertiser_table: crm, publisher_table: users, phone_region: USA }");
    assert!(e.contains("phone_region") && e.contains("ISO 3166-1"), "{e}");
}
