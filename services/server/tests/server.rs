//! Integration tests: the real server on 127.0.0.1:0, real Flight and REST clients over TLS. The
//! clients trust exactly the enclave's certificate (as `curl --cacert` and pyarrow's
//! `tls_root_certs` do); the attestation tests check the evidence that vouches for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::{Array, AsArray, ListBuilder, StringArray, StringBuilder, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use sealroom_attest::token::{IssuerKey, unix_now};
use sealroom_matching::hash::sha256_hex;
use sealroom_proto::RoomFile;
use sealroom_proto::room::v1::RoomContract;
use sealroom_server::config::{ServerConfig, SinkConfig};
use sealroom_server::{RunningServer, start};
use serde_json::Value;

// The participants of the test room; the harness signs a token for each with its issuer key.
const ADV: &str = "acme";
const PUB: &str = "news";
const AUDITOR: &str = "audit";
const K: u64 = 10;

/// The issuer key of a participant of the test room (one per participant per test binary).
fn issuer(who: &str) -> &'static IssuerKey {
    static KEYS: OnceLock<HashMap<&'static str, IssuerKey>> = OnceLock::new();
    let keys =
        KEYS.get_or_init(|| [ADV, PUB, AUDITOR].into_iter().map(|p| (p, IssuerKey::generate().unwrap())).collect());
    &keys[who]
}

/// What a test client sends as `Authorization: Bearer`: a fresh token of participant `who` for the
/// test room, or `who` itself when it names no participant (a bad token).
fn bearer(who: &str) -> String {
    static ROOM: OnceLock<String> = OnceLock::new();
    if ![ADV, PUB, AUDITOR].contains(&who) {
        return who.to_owned();
    }
    let room = ROOM.get_or_init(|| room_contract().room_id().to_string());
    issuer(who).mint(who, std::slice::from_ref(room), 600, unix_now()).unwrap()
}

fn room_contract() -> RoomContract {
    RoomFile::parse(&room_yaml(K), "test room").unwrap()
}

/// The test room's file with news's k threshold at `k` (an interactive room: changing k is a
/// proposal both data owners approve).
fn room_yaml(k: u64) -> String {
    format!(
        r#"
name: server test room
participants:
  - {{ id: acme, name: ACME, roles: [data_owner, analyst], credential: {{ issuer_keys: [{a}] }} }}
  - {{ id: news, name: News, roles: [data_owner, analyst], credential: {{ issuer_keys: [{p}] }} }}
  - {{ id: audit, name: Auditor, roles: [auditor], credential: {{ issuer_keys: [{u}] }} }}
tables:
  - name: crm
    owner: acme
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
      - {{ name: email_sha256, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone_sha256, type: sha256, identifier: hashed_phone, nullable: true }}
  - name: readers
    owner: news
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email_sha256, type: sha256, identifier: hashed_email, nullable: true }}
      - {{ name: phone_sha256, type: sha256, identifier: hashed_phone, nullable: true }}
      - {{ name: segments, type: string_list, identifier: segment, nullable: true }}
computations:
  - name: overlap
    overlap: {{ advertiser_table: crm, publisher_table: readers }}
    run_by: [acme]
    results_to: [acme, news]
    deliver_to: [news]
  - name: lookalike
    lookalike:
      matching: {{ advertiser_table: crm, publisher_table: readers }}
      model_to: [acme]
      audience_to: news
      max_audience: 200
    run_by: [acme]
    results_to: [acme, news]
privacy:
  k_thresholds: [{{ set_by: news, k: {k} }}]
attestation: {{ allow_simulated: true }}
governance: {{ interactive: true }}
"#,
        a = issuer(ADV).public_key_base64(),
        p = issuer(PUB).public_key_base64(),
        u = issuer(AUDITOR).public_key_base64(),
    )
}

/// `who`'s signed `verdict` on a proposal as the server shows it.
fn signed_decision(room: &str, who: &str, proposal: &Value, verdict: &str) -> String {
    let decision = sealroom_attest::token::Decision {
        sub: who.into(),
        room: room.into(),
        proposal: proposal["id"].as_str().unwrap().into(),
        version: proposal["version"].as_u64().unwrap(),
        contract_sha256: proposal["contract_sha256"].as_str().unwrap().into(),
        decision: verdict.into(),
        iat: sealroom_attest::token::unix_now(),
        reason: String::new(),
    };
    issuer(who).sign_decision(&decision).unwrap()
}

/// The config of a test server: the INSECURE simulated TEE (the test room allows it).
fn test_config(dir: &Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.join("data"),
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tee: sealroom_attest::Backend::Simulated,
        ..ServerConfig::default()
    }
}

/// A REST client that trusts only the server's enclave certificate.
fn pinned_http(server: &RunningServer) -> reqwest::Client {
    let cert = reqwest::Certificate::from_der(server.engine.enclave().identity().certificate_der()).unwrap();
    reqwest::Client::builder().tls_built_in_root_certs(false).add_root_certificate(cert).build().unwrap()
}

struct TestServer {
    server: Option<RunningServer>,
    data_dir: PathBuf,
    activations: PathBuf,
    room_id: String,
    http: reqwest::Client,
}

impl TestServer {
    async fn start(dir: &Path) -> Self {
        let data_dir = dir.join("data");
        let activations = dir.join("activations");
        let config = ServerConfig {
            sinks: vec![SinkConfig {
                participant: "news".into(),
                room: None,
                sink: serde_json::json!({"type": "file", "path": activations, "format": "ndjson"}),
            }],
            ..test_config(dir)
        };
        let contract = room_contract();
        let room_id = contract.room_id().to_string();
        let server = start(&config, vec![contract]).await.unwrap();
        let http = pinned_http(&server);
        Self { server: Some(server), data_dir, activations, room_id, http }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
    }

    async fn flight(&self, token: &str) -> FlightClient {
        let pem = self.server().engine.enclave().identity().certificate_pem().to_owned();
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        let channel = tonic::transport::Channel::from_shared(format!("https://{}", self.server().flight_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightClient::new(channel);
        client.add_header("authorization", &format!("Bearer {}", bearer(token))).unwrap();
        client
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.server().http_addr)
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(bearer(token)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(bearer(token)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_body(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(bearer(token))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn table_path(&self, table: &str) -> FlightDescriptor {
        FlightDescriptor::new_path(vec!["rooms".into(), self.room_id.clone(), "tables".into(), table.into()])
    }

    async fn upload(&self, token: &str, table: &str, batches: Vec<RecordBatch>) -> Result<Value, FlightError> {
        let mut client = self.flight(token).await;
        let stream = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(self.table_path(table)))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        let results: Vec<_> = client.do_put(stream).await?.try_collect().await?;
        Ok(serde_json::from_slice(&results[0].app_metadata).unwrap())
    }
}

/// Synthetic people: the advertiser knows some by email and/or phone; the publisher's readers
/// carry their own identifiers and segments.
/// (id, email, phone, segments)
type Reader = (String, Option<String>, Option<String>, Vec<String>);

struct Data {
    crm: Vec<(String, Option<String>, Option<String>)>,
    readers: Vec<Reader>,
}

fn email(i: usize) -> String {
    format!("person{i}@example.com")
}

fn phone(i: usize) -> String {
    format!("+1415555{i:04}")
}

fn data() -> Data {
    let mut crm = Vec::new();
    for i in 0..300 {
        let e = (i % 7 != 0 || (100..120).contains(&i)).then(|| email(i));
        let p = (i % 3 == 0).then(|| phone(i));
        crm.push((format!("c{i}"), e, p));
    }
    let mut readers = Vec::new();
    for j in 100..600 {
        // Readers 100..300 are the same people as customers 100..300 (matched when they share a key).
        let e = (j % 5 != 0 || (100..120).contains(&j)).then(|| email(j));
        let p = (j % 2 == 0).then(|| phone(j));
        let mut segments = vec![];
        if j % 2 == 0 {
            segments.push("sports".to_owned());
        }
        if j % 3 == 0 {
            segments.push("travel".to_owned());
        }
        if (100..109).contains(&j) {
            segments.push("edge_k_minus_1".to_owned()); // k - 1 matched people: suppressed
        }
        if (110..120).contains(&j) {
            segments.push("edge_k".to_owned()); // exactly k matched people: released
        }
        // Another k - 1 (people matched by email on both sides), so the two small segments protect
        // each other under complementary suppression and edge_k stays released.
        if [122, 123, 124, 127, 128, 129, 131, 132, 134].contains(&j) {
            segments.push("edge_k_minus_1_too".to_owned());
        }
        readers.push((format!("u{j}"), e, p, segments));
    }
    Data { crm, readers }
}

fn hashed(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| sha256_hex(s.as_bytes()))
}

fn crm_batches(d: &Data) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("email_sha256", DataType::Utf8, true),
        Field::new("phone_sha256", DataType::Utf8, true),
    ]));
    d.crm
        .chunks(128)
        .map(|rows| {
            let id: StringArray = rows.iter().map(|r| Some(r.0.clone())).collect();
            let e: StringArray = rows.iter().map(|r| hashed(&r.1)).collect();
            let p: StringArray = rows.iter().map(|r| hashed(&r.2)).collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(id), Arc::new(e), Arc::new(p)]).unwrap()
        })
        .collect()
}

fn readers_batches(d: &Data) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("email_sha256", DataType::Utf8, true),
        Field::new("phone_sha256", DataType::Utf8, true),
        Field::new("segments", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]));
    d.readers
        .chunks(200)
        .map(|rows| {
            let id: StringArray = rows.iter().map(|r| Some(r.0.clone())).collect();
            let e: StringArray = rows.iter().map(|r| hashed(&r.1)).collect();
            let p: StringArray = rows.iter().map(|r| hashed(&r.2)).collect();
            let mut segs = ListBuilder::new(StringBuilder::new());
            for r in rows {
                for s in &r.3 {
                    segs.values().append_value(s);
                }
                segs.append(true);
            }
            RecordBatch::try_new(schema.clone(), vec![Arc::new(id), Arc::new(e), Arc::new(p), Arc::new(segs.finish())])
                .unwrap()
        })
        .collect()
}

/// The overlap computed independently of the engine.
struct Expected {
    matched_adv: u64,
    matched_pub: u64,
    by_segment: BTreeMap<String, (u64, u64)>,
}

fn expected(d: &Data) -> Expected {
    let mut by_email: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_phone: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in d.crm.iter().enumerate() {
        if let Some(e) = &c.1 {
            by_email.entry(e).or_default().push(i);
        }
        if let Some(p) = &c.2 {
            by_phone.entry(p).or_default().push(i);
        }
    }
    let mut pairs = BTreeSet::new();
    for (j, r) in d.readers.iter().enumerate() {
        for i in r.1.as_deref().and_then(|e| by_email.get(e)).into_iter().flatten() {
            pairs.insert((*i, j));
        }
        for i in r.2.as_deref().and_then(|p| by_phone.get(p)).into_iter().flatten() {
            pairs.insert((*i, j));
        }
    }
    let mut seg: BTreeMap<String, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for r in &d.readers {
        for s in &r.3 {
            seg.entry(s.clone()).or_default();
        }
    }
    for (i, j) in &pairs {
        for s in &d.readers[*j].3 {
            let e = seg.get_mut(s).unwrap();
            e.0.insert(*j);
            e.1.insert(*i);
        }
    }
    Expected {
        matched_adv: pairs.iter().map(|p| p.0).collect::<BTreeSet<_>>().len() as u64,
        matched_pub: pairs.iter().map(|p| p.1).collect::<BTreeSet<_>>().len() as u64,
        by_segment: seg.into_iter().map(|(s, (p, a))| (s, (p.len() as u64, a.len() as u64))).collect(),
    }
}

async fn upload_both(server: &TestServer, d: &Data) {
    let r = server.upload(ADV, "crm", crm_batches(d)).await.unwrap();
    assert_eq!(r["rows"], 300);
    let r = server.upload(PUB, "readers", readers_batches(d)).await.unwrap();
    assert_eq!(r["rows"], 500);
}

fn check_rest_result(result: &Value, exp: &Expected) {
    let summary = &result["sections"][0]["rows"][0];
    assert_eq!(summary["advertiser_individuals"]["value"], 300);
    assert_eq!(summary["publisher_individuals"]["value"], 500);
    assert_eq!(summary["matched_advertiser_individuals"]["value"], exp.matched_adv);
    assert_eq!(summary["matched_publisher_individuals"]["value"], exp.matched_pub);
    let rate = summary["match_rate_advertiser"]["value"].as_f64().unwrap();
    assert!((rate - exp.matched_adv as f64 / 300.0).abs() < 1e-12);
    let rate = summary["match_rate_publisher"]["value"].as_f64().unwrap();
    assert!((rate - exp.matched_pub as f64 / 500.0).abs() < 1e-12);
    let rows = result["sections"][1]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), exp.by_segment.len());
    // Released cells are exact and about ≥ k individuals; every cell under k is suppressed, and so
    // are enough others (complementary suppression) that the suppressed ones total ≥ k.
    let (mut hidden, mut hidden_total) = (0, 0);
    for row in rows {
        let (np, na) = exp.by_segment[row["segment"].as_str().unwrap()];
        if row["overlap"]["suppressed"] == true {
            assert!(row["overlap"].get("value").is_none());
            hidden += 1;
            hidden_total += np;
        } else {
            assert!(np.min(na) >= K, "{row}");
            assert_eq!(row["overlap"]["value"], np, "{row}");
        }
        if np.min(na) < K {
            assert_eq!(row["overlap"]["suppressed"], true, "{row}");
        }
    }
    assert!(hidden == 0 || hidden == rows.len() || (hidden >= 2 && hidden_total >= K), "{hidden} {hidden_total}");
}

#[tokio::test]
async fn end_to_end_over_flight_and_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let d = data();
    let exp = expected(&d);
    assert_eq!(exp.by_segment["edge_k_minus_1"], (K - 1, K - 1));
    assert_eq!(exp.by_segment["edge_k"], (K, K));
    assert_eq!(exp.by_segment["edge_k_minus_1_too"], (K - 1, K - 1));
    upload_both(&server, &d).await;
    let room = server.room_id.clone();

    // Over REST.
    let (status, body) = server.post(&format!("/v1/rooms/{room}/computations/overlap/runs"), ADV).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["run"]["deliveries"][0]["status"], "delivered", "{body}");
    let result_url = body["result"].as_str().unwrap().to_owned();
    let (status, result) = server.get(&result_url, ADV).await;
    assert_eq!(status, 200, "{result}");
    check_rest_result(&result, &exp);
    let rows = result["sections"][1]["rows"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["segment"] == name).unwrap().clone();
    assert_eq!(row("edge_k_minus_1")["overlap"]["suppressed"], true, "a cell at k - 1 is suppressed");
    assert_eq!(row("edge_k")["overlap"]["value"], K, "a cell at k is released");
    assert_eq!(result["tee"]["insecure"], true);
    assert_eq!(result["release_digest"].as_str().unwrap().len(), 64);
    // The publisher may read it too; the auditor may not.
    let (status, _) = server.get(&result_url, PUB).await;
    assert_eq!(status, 200);
    let (status, body) = server.get(&result_url, AUDITOR).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "permission_denied");

    // Over Flight: run with DoAction, read each section with DoGet.
    let mut client = server.flight(ADV).await;
    let action =
        Action::new("run-computation", serde_json::json!({"room_id": room, "computation": "overlap"}).to_string());
    let results: Vec<_> = client.do_action(action).await.unwrap().try_collect().await.unwrap();
    let run: Value = serde_json::from_slice(&results[0]).unwrap();
    let ticket = run["tickets"]["by_segment"].as_str().unwrap().to_owned();
    let batches: Vec<RecordBatch> = client.do_get(Ticket::new(ticket)).await.unwrap().try_collect().await.unwrap();
    let batch = &batches[0];
    let segments = batch.column_by_name("segment").unwrap().as_string::<i32>().clone();
    let overlap = batch.column_by_name("overlap").unwrap().as_primitive::<UInt64Type>().clone();
    let suppressed = batch.column_by_name("overlap_suppressed").unwrap().as_boolean().clone();
    assert_eq!(segments.len(), exp.by_segment.len());
    for i in 0..segments.len() {
        let (np, na) = exp.by_segment[segments.value(i)];
        if np.min(na) >= K {
            assert_eq!(overlap.value(i), np);
            assert!(!suppressed.value(i));
        } else {
            assert!(overlap.is_null(i), "a suppressed cell is null, never 0");
            assert!(suppressed.value(i));
        }
    }
    let ticket = run["tickets"]["summary"].as_str().unwrap().to_owned();
    let batches: Vec<RecordBatch> = client.do_get(Ticket::new(ticket)).await.unwrap().try_collect().await.unwrap();
    let matched = batches[0].column_by_name("matched_publisher_individuals").unwrap();
    assert_eq!(matched.as_any().downcast_ref::<UInt64Array>().unwrap().value(0), exp.matched_pub);

    // The activation file of the publisher holds the released by-segment report.
    let files: Vec<_> = std::fs::read_dir(&server.activations).unwrap().map(|e| e.unwrap().path()).collect();
    let by_segment = files.iter().find(|p| p.to_string_lossy().contains("by_segment")).unwrap();
    let lines: Vec<Value> =
        std::fs::read_to_string(by_segment).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), exp.by_segment.len());
    assert!(lines.iter().all(|l| l["recipient"] == "news" && l["room_id"] == room.as_str()));

    // Every release is in the audit log, which verifies.
    let (_, audit) = server.get(&format!("/v1/rooms/{room}/audit"), AUDITOR).await;
    let entries: Vec<sealroom_engine::audit::AuditEntry> = serde_json::from_value(audit["entries"].clone()).unwrap();
    sealroom_engine::audit::verify_chain(&entries).unwrap();
    // Signed by the enclave key, which the first entry's evidence vouches for.
    let signers = sealroom_engine::audit::verify_signatures(&entries).unwrap();
    assert_eq!(signers.len(), 1);
    assert_eq!(signers[0].enclave_key, hex::encode(server.server().engine.enclave().identity().public_key()));
    let releases =
        entries.iter().filter(|e| matches!(e.event, sealroom_engine::audit::AuditEvent::ResultReleased { .. })).count();
    assert_eq!(releases, 6, "REST ×2, Flight ×2, sink ×2");
    let digest = result["release_digest"].as_str().unwrap();
    assert!(entries.iter().any(|e| matches!(&e.event,
        sealroom_engine::audit::AuditEvent::ResultReleased { release_sha256, channel, .. } if release_sha256 == digest && channel == "rest")));
    server.stop().await;
}

#[tokio::test]
async fn flight_listings_show_only_what_the_contract_allows() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    upload_both(&server, &data()).await;
    server.post(&format!("/v1/rooms/{}/computations/overlap/runs", server.room_id), ADV).await;

    let paths = |infos: Vec<arrow_flight::FlightInfo>| -> Vec<String> {
        let mut p: Vec<String> = infos.iter().map(|i| i.flight_descriptor.as_ref().unwrap().path[0].clone()).collect();
        p.sort();
        p
    };
    let mut adv = server.flight(ADV).await;
    let listed = paths(adv.list_flights(Vec::<u8>::new()).await.unwrap().try_collect().await.unwrap());
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(listed[0].contains("/computations/overlap/runs/") && listed[0].ends_with("/sections/by_segment"));
    assert!(listed[1].ends_with("/sections/by_tier"));
    assert!(listed[2].ends_with("/sections/summary"));
    assert!(listed[3].ends_with("/tables/crm"), "the advertiser sees its own table, not the publisher's");

    let mut auditor = server.flight(AUDITOR).await;
    let listed = paths(auditor.list_flights(Vec::<u8>::new()).await.unwrap().try_collect().await.unwrap());
    assert!(listed.is_empty(), "the auditor may read no result and owns no table: {listed:?}");

    // GetFlightInfo of another party's table is refused.
    let err = adv.get_flight_info(server.table_path("readers")).await.unwrap_err().to_string();
    assert!(err.contains("only the owner of table 'readers'"), "{err}");
    let info = adv.get_flight_info(server.table_path("crm")).await.unwrap();
    assert_eq!(info.total_records, 300);
    // Tables are never downloaded.
    let ticket = format!("rooms/{}/tables/readers", server.room_id);
    let err = adv.do_get(Ticket::new(ticket)).await.unwrap_err().to_string();
    assert!(err.contains("tables are never downloaded"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_rejected_with_clear_errors_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let d = data();

    // A non-owner.
    let err = server.upload(PUB, "crm", crm_batches(&d)).await.unwrap_err().to_string();
    assert!(err.contains("PermissionDenied") || err.contains("permission"), "{err}");
    assert!(err.contains("the contract names 'acme' as its owner"), "{err}");

    // A wrong schema: the message names the column and the expected type.
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("email_sha256", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec!["c1"])), Arc::new(arrow::array::Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = server.upload(ADV, "crm", vec![batch]).await.unwrap_err().to_string();
    assert!(err.contains("column 'email_sha256' has Arrow type Int64, but the contract declares sha256"), "{err}");

    // A non-hex hash: the count of bad rows and the first bad row.
    let mut bad = crm_batches(&d);
    let b = &bad[1];
    let mut emails: Vec<Option<String>> = b.column(1).as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect();
    emails[5] = Some("zz".repeat(32));
    emails[9] = Some("not a hash".into());
    bad[1] = RecordBatch::try_new(
        b.schema(),
        vec![b.column(0).clone(), Arc::new(StringArray::from(emails)), b.column(2).clone()],
    )
    .unwrap();
    let err = server.upload(ADV, "crm", bad).await.unwrap_err().to_string();
    assert!(err.contains("column 'email_sha256': 2 of 300 rows are bad; first bad row: 133 (0-based)"), "{err}");
    assert!(err.contains("not all hex digits"), "{err}");

    let (status, body) = server.get(&format!("/v1/rooms/{}/datasets", server.room_id), ADV).await;
    assert_eq!(status, 200);
    assert_eq!(body["datasets"][0]["table"], "crm");
    assert_eq!(body["datasets"][0]["uploaded"], false, "nothing of the rejected uploads was kept");
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_upload_leaves_no_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let d = data();
    let batches = crm_batches(&d);
    let (tx, rx) = futures::channel::mpsc::unbounded::<RecordBatch>();
    tx.unbounded_send(batches[0].clone()).unwrap();
    let stream =
        FlightDataEncoderBuilder::new().with_flight_descriptor(Some(server.table_path("crm"))).build(rx.map(Ok));
    let mut client = server.flight(ADV).await;
    let upload = tokio::spawn(async move {
        let _ = client.do_put(stream).await.map(|s| s.try_collect::<Vec<_>>());
        futures::future::pending::<()>().await;
    });
    // Wait until the server is streaming the upload, then drop the connection mid-stream.
    let staging = server.data_dir.join("rooms").join(&server.room_id).join("staging");
    for _ in 0..100 {
        if std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1, "the upload is in flight");
    upload.abort();
    drop(tx);
    let mut rejected = false;
    for _ in 0..100 {
        let (_, audit) = server.get(&format!("/v1/rooms/{}/audit", server.room_id), ADV).await;
        rejected = audit["entries"].as_array().unwrap().iter().any(|e| e["event"]["type"] == "upload_rejected");
        if rejected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rejected, "the server noticed the dropped upload");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "its staging file is gone");
    let (_, body) = server.get(&format!("/v1/rooms/{}/datasets", server.room_id), ADV).await;
    assert_eq!(body["datasets"][0]["uploaded"], false);
    server.stop().await;
}

#[tokio::test]
async fn an_activation_the_sink_cannot_take_is_kept_visible_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let server = TestServer::start(dir.path()).await;
    upload_both(&server, &d).await;
    // The publisher's activation directory becomes unusable (a file where the directory was).
    std::fs::remove_dir_all(&server.activations).unwrap();
    std::fs::write(&server.activations, b"not a directory").unwrap();
    let room = server.room_id.clone();
    let (status, body) = server.post(&format!("/v1/rooms/{room}/computations/overlap/runs"), ADV).await;
    assert_eq!(status, 201, "the run itself succeeds: {body}");
    let delivery = &body["run"]["deliveries"][0];
    assert_eq!(
        (delivery["recipient"].as_str(), delivery["status"].as_str()),
        (Some("news"), Some("pending")),
        "{body}"
    );
    assert!(delivery["message"].as_str().unwrap().contains("kept as activation"), "{delivery}");

    let (status, body) = server.get(&format!("/v1/rooms/{room}/activations"), PUB).await;
    assert_eq!(status, 200);
    let kept = body["activations"].as_array().unwrap().clone();
    assert_eq!(kept.len(), 1, "{body}");
    assert_eq!((kept[0]["state"].as_str(), kept[0]["attempts"].as_u64()), (Some("pending"), Some(1)));
    assert_eq!(kept[0]["computation"], "overlap");
    assert!(kept[0]["last_error"].as_str().unwrap().contains("activations"), "{}", kept[0]);
    let (_, body) = server.get(&format!("/v1/rooms/{room}/activations"), ADV).await;
    assert_eq!(body["activations"], serde_json::json!([]), "another participant's activations are not listed");

    // The directory is back: the next due retry delivers the kept release.
    std::fs::remove_file(&server.activations).unwrap();
    std::fs::create_dir(&server.activations).unwrap();
    let later = sealroom_attest::token::unix_now() + 3600;
    assert_eq!(server.server().engine.retry_activations_at(later).await, 1);
    let (_, body) = server.get(&format!("/v1/rooms/{room}/activations"), PUB).await;
    let kept = &body["activations"][0];
    assert_eq!((kept["state"].as_str(), kept["attempts"].as_u64()), (Some("delivered"), Some(2)), "{body}");
    let files: Vec<_> = std::fs::read_dir(&server.activations).unwrap().collect();
    assert!(!files.is_empty(), "the release is in the sink's directory");
    server.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_datasets_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let exp = expected(&d);
    let run_url;
    {
        let server = TestServer::start(dir.path()).await;
        upload_both(&server, &d).await;
        let (_, body) = server.post(&format!("/v1/rooms/{}/computations/overlap/runs", server.room_id), ADV).await;
        run_url = body["result"].as_str().unwrap().to_owned();
        server.stop().await;
    }
    let server = TestServer::start(dir.path()).await;
    let (_, body) = server.get(&format!("/v1/rooms/{}/datasets", server.room_id), PUB).await;
    let readers = body["datasets"].as_array().unwrap().iter().find(|d| d["table"] == "readers").unwrap().clone();
    assert_eq!(readers["uploaded"], true);
    assert_eq!(readers["rows"], 500, "the owner sees its row count");
    let crm = body["datasets"].as_array().unwrap().iter().find(|d| d["table"] == "crm").unwrap().clone();
    assert_eq!(crm["uploaded"], true);
    assert!(crm.get("rows").is_none(), "the publisher does not see the advertiser's row count");
    let (status, result) = server.get(&run_url, ADV).await;
    assert_eq!(status, 200);
    check_rest_result(&result, &exp);
    // And a new run over the recovered datasets gives the same numbers.
    let (status, body) = server.post(&format!("/v1/rooms/{}/computations/overlap/runs", server.room_id), ADV).await;
    assert_eq!(status, 201);
    let (_, again) = server.get(body["result"].as_str().unwrap(), ADV).await;
    check_rest_result(&again, &exp);
    server.stop().await;
}

#[tokio::test]
async fn lookalike_model_and_audience_over_rest_and_flight() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    upload_both(&server, &data()).await;
    let room = server.room_id.clone();
    let runs = format!("/v1/rooms/{room}/computations/lookalike/runs");
    let (status, body) = server.post(&runs, ADV).await;
    assert_eq!(status, 201, "{body}");
    let (status, result) = server.get(body["result"].as_str().unwrap(), PUB).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["sections"][1]["name"], "reach", "the publisher reads the curve to choose a size");

    // The model: to acme only.
    let (status, model) = server.get(&format!("{runs}/latest/model"), ADV).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["model"]["model"], "logistic");
    assert_eq!(model["release_digest"].as_str().unwrap(), sealroom_engine::release_gate::release_digest_of(&model));
    let (status, body) = server.get(&format!("{runs}/latest/model"), PUB).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission_denied")), "{body}");

    // The audience: to news's sink only, sized by news.
    let audience = format!("{runs}/latest/audience");
    let (status, body) = server.post_body(&audience, PUB, r#"{"size": 50}"#).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["delivery"]["audience"], 50);
    let digest = body["delivery"]["release_digest"].as_str().unwrap().to_owned();
    let files: Vec<_> = std::fs::read_dir(&server.activations).unwrap().map(|e| e.unwrap().path()).collect();
    let file = files.iter().find(|p| p.to_string_lossy().contains("audience")).unwrap();
    let lines: Vec<Value> =
        std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 50);
    assert!(lines.iter().all(|l| l["release_digest"] == digest.as_str() && l["recipient"] == "news"));
    // A deal for the audience, visible to its publisher and its advertiser only.
    let deal_id = body["delivery"]["deal_id"].as_str().unwrap().to_owned();
    let room = server.room_id.clone();
    let (status, deals) = server.get(&format!("/v1/rooms/{room}/deals"), PUB).await;
    assert_eq!(status, 200, "{deals}");
    let deal = &deals["deals"][0];
    assert_eq!((deal["deal_id"].as_str(), deal["kind"].as_str()), (Some(deal_id.as_str()), Some("lookalike_audience")));
    assert_eq!((deal["publisher"].as_str(), deal["advertiser"].as_str()), (Some("news"), Some("acme")));
    assert_eq!((deal["audience_size"].as_u64(), deal["release_digest"].as_str()), (Some(50), Some(digest.as_str())));
    let (_, for_acme) = server.get(&format!("/v1/rooms/{room}/deals"), ADV).await;
    assert_eq!(for_acme, deals);
    let (_, for_auditor) = server.get(&format!("/v1/rooms/{room}/deals"), AUDITOR).await;
    assert_eq!(for_auditor["deals"], serde_json::json!([]));
    for (token, body, status, says) in [
        (ADV, r#"{"size": 50}"#, 403, "only 'news'"),
        (PUB, r#"{"size": 5}"#, 400, "at least k = 10"),
        (PUB, r#"{"size": 500}"#, 400, "max_audience is 200"),
        (PUB, r#"{"users": 50}"#, 400, "the body must be JSON like {\"size\": 50000}"),
        (PUB, "fifty", 400, "the body must be JSON"),
    ] {
        let (code, err) = server.post_body(&audience, token, body).await;
        assert_eq!(code, status, "{body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(says), "{body}: {err}");
    }

    // The same over Flight actions, with the same permissions.
    let action = |kind: &str, body: Value| Action::new(kind.to_owned(), body.to_string());
    let mut acme = server.flight(ADV).await;
    let got: Vec<_> = acme
        .do_action(action("lookalike-model", serde_json::json!({"room_id": room, "computation": "lookalike"})))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let flight_model: Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(flight_model["model"], model["model"], "the same run's model");
    let mut news = server.flight(PUB).await;
    let err = news
        .do_action(action("lookalike-model", serde_json::json!({"room_id": room, "computation": "lookalike"})))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("may not receive the model"), "{err}");
    let body = serde_json::json!({"room_id": room, "computation": "lookalike", "size": 20});
    let got: Vec<_> =
        news.do_action(action("lookalike-audience", body.clone())).await.unwrap().try_collect().await.unwrap();
    let delivery: Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(delivery["delivery"]["audience"], 20, "{delivery}");
    assert_ne!(delivery["delivery"]["release_digest"], digest.as_str(), "a second release, audited on its own");
    for (token, body, says) in [
        (ADV, body.clone(), "only 'news'"),
        (PUB, serde_json::json!({"room_id": room, "computation": "lookalike"}), "needs a size"),
        (PUB, serde_json::json!({"room_id": room, "computation": "lookalike", "users": 5}), "unknown field"),
    ] {
        let mut client = server.flight(token).await;
        let err = client.do_action(action("lookalike-audience", body)).await.err().unwrap().to_string();
        assert!(err.contains(says), "{err}");
    }

    let (_, audit) = server.get(&format!("/v1/rooms/{room}/audit"), AUDITOR).await;
    let entries: Vec<sealroom_engine::audit::AuditEntry> = serde_json::from_value(audit["entries"].clone()).unwrap();
    sealroom_engine::audit::verify_chain(&entries).unwrap();
    let audiences: Vec<&String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            sealroom_engine::audit::AuditEvent::AudienceReleased { release_sha256, .. } => Some(release_sha256),
            _ => None,
        })
        .collect();
    assert_eq!(audiences.len(), 2, "one per delivered audience, refusals release nothing");
    assert_eq!(audiences[0], &digest);
    server.stop().await;
}

#[tokio::test]
async fn rest_errors_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let room = server.room_id.clone();
    let r = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["tee"]["mode"], "simulated");
    assert_eq!(health["rooms"], 1);

    let r = server.http.get(server.url(&format!("/v1/rooms/{room}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = server.get(&format!("/v1/rooms/{room}"), "wrong-token").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")));
    assert!(body["error"]["message"].as_str().unwrap().contains("not a JWT"), "{body}");
    // Tokens signed by the right key but expired, or for another room, say which check failed.
    let room_list = std::slice::from_ref(&room);
    let expired = issuer(ADV).mint(ADV, room_list, 600, unix_now() - 3600).unwrap();
    let other_room = issuer(ADV).mint(ADV, &["ab".repeat(32)], 600, unix_now()).unwrap();
    let forged = issuer(PUB).mint(ADV, room_list, 600, unix_now()).unwrap();
    for (token, says) in [
        (expired, "expired"),
        (other_room, "is not for room"),
        (forged, "names participant 'acme' but is signed by an issuer key of 'news'"),
    ] {
        let (status, body) = server.get(&format!("/v1/rooms/{room}"), &token).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{says}: {body}");
        let (status, body) = server.get("/v1/rooms", &token).await;
        assert_eq!(status, 401, "{body}");
        let mut flight = server.flight(&token).await;
        let err = flight.list_flights(Vec::<u8>::new()).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("valid authentication credentials") && err.contains(says), "{says}: {err}");
    }
    let (status, body) = server.get(&format!("/v1/rooms/{room}"), ADV).await;
    assert_eq!(status, 200);
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["effective_k"], K);
    assert_eq!(body["contract"]["tables"][0]["name"], "crm");
    let acme = body["participants"].as_array().unwrap().iter().find(|p| p["id"] == "acme").unwrap().clone();
    assert_eq!(acme["data_owner_of"], serde_json::json!(["crm"]));
    assert_eq!(acme["analyst_of"], serde_json::json!(["overlap", "lookalike"]));

    let (status, body) = server.post(&format!("/v1/rooms/{room}/computations/overlap/runs"), ADV).await;
    assert_eq!(status, 409, "inputs are missing: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("has not been uploaded yet"));
    let (status, _) = server.post(&format!("/v1/rooms/{room}/computations/overlap/runs"), PUB).await;
    assert_eq!(status, 403);
    let (status, body) = server.post(&format!("/v1/rooms/{room}/computations/nope/runs"), ADV).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("computations: overlap"));
    let (status, _) = server.get("/v1/rooms/not-a-room-id", ADV).await;
    assert_eq!(status, 400);
    let (status, body) = server.get("/nope", ADV).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1"));

    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("sealroom_runs_total"), "{text}");
    assert!(text.contains("sealroom_http_requests_total{method=\"POST\",route=\"/v1/rooms/{room}/computations/{name}/runs\",status=\"409\"} 1"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_with_advice_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        limits: sealroom_server::config::Limits { max_message_bytes: 16 * 1024, ..Default::default() },
        ..test_config(dir.path())
    };
    let contract = room_contract();
    let room_id = contract.room_id().to_string();
    let running = start(&config, vec![contract]).await.unwrap();
    let server = TestServer {
        http: pinned_http(&running),
        server: Some(running),
        data_dir: config.data_dir.clone(),
        activations: dir.path().join("activations"),
        room_id,
    };
    // One batch of 300 rows with two 64-character hex columns is well over 16 KiB.
    let d = data();
    let schema = crm_batches(&d)[0].schema();
    let batch = arrow::compute::concat_batches(&schema, &crm_batches(&d)).unwrap();
    let err = server.upload(ADV, "crm", vec![batch]).await.unwrap_err().to_string();
    assert!(err.contains("larger than this server accepts"), "{err}");
    assert!(err.contains("max_chunksize"), "{err}");
    let (_, body) = server.get(&format!("/v1/rooms/{}/datasets", server.room_id), ADV).await;
    assert_eq!(body["datasets"][0]["uploaded"], false);
    // Small batches go through.
    let r = server
        .upload(
            ADV,
            "crm",
            crm_batches(&d)
                .iter()
                .flat_map(|b| (0..b.num_rows()).step_by(20).map(|o| b.slice(o, 20.min(b.num_rows() - o))))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(r["rows"], 300);
    server.stop().await;
}

/// GET attestation with a client that accepts any certificate and records it (what `sealroom
/// attest` does before it trusts anything).
async fn fetch_attestation(server: &RunningServer, room: &str, nonce: &str) -> (u16, Value, Option<Vec<u8>>) {
    let capture = sealroom_attest::tls::PinnedCert::capture();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(capture.client_config(&[b"http/1.1"]).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{}/v1/rooms/{room}/attestation?nonce={nonce}", server.http_addr);
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null), capture.seen())
}

#[tokio::test]
async fn attestation_binds_the_tls_key_to_the_room_and_the_nonce() {
    use sealroom_attest::{Binding, Evidence, Policy, verify::verify};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let running = server.server();
    let contract = room_contract();
    let nonce = [7u8; 32];
    // No token is needed: this is what a participant checks before sending its token.
    let (status, body, seen) = fetch_attestation(running, &server.room_id, &hex::encode(nonce)).await;
    assert_eq!(status, 200, "{body}");
    let cert = seen.expect("the server presented a certificate");
    assert_eq!(cert, running.engine.enclave().identity().certificate_der());
    assert_eq!(body["tee"]["mode"], "simulated");
    assert_eq!(body["tee"]["insecure"], true);
    let evidence: Evidence = serde_json::from_value(body["evidence"].clone()).unwrap();
    let key = sealroom_attest::identity::certificate_public_key(&cert).unwrap();
    let policy = Policy::from_contract(&contract);
    let binding = |nonce: &[u8], key: &[u8]| Binding::Evidence {
        room_id: server.room_id.clone(),
        nonce: Some(nonce.to_vec()),
        public_key: Some(key.to_vec()),
    };
    let v = verify(&evidence, &policy, &binding(&nonce, &key), None, 1_800_000_000);
    assert!(v.passed(), "{}", v.render());
    // A replay for another nonce, or a TLS key that is not the attested one, is refused, saying why.
    let v = verify(&evidence, &policy, &binding(&[8u8; 32], &key), None, 1_800_000_000);
    assert!(!v.get("nonce (freshness)").unwrap().passed, "{}", v.render());
    let other = sealroom_attest::EnclaveIdentity::generate(&["localhost".into()]).unwrap();
    let v = verify(&evidence, &policy, &binding(&nonce, other.public_key()), None, 1_800_000_000);
    assert!(!v.get("enclave key").unwrap().passed, "{}", v.render());
    // A room that does not allow the simulation refuses it.
    let v = verify(&evidence, &Policy::default(), &binding(&nonce, &key), None, 1_800_000_000);
    assert!(!v.get("simulated TEE allowed").unwrap().passed, "{}", v.render());

    // Bad requests say what is wrong.
    let (status, body, _) = fetch_attestation(running, &server.room_id, "abcd").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("16 to 64 random bytes"), "{body}");
    let (status, body, _) = fetch_attestation(running, &"0".repeat(64), &hex::encode(nonce)).await;
    assert_eq!(status, 404, "{body}");

    // The same evidence over Flight.
    let mut flight = server.flight("no token needed").await;
    let body = serde_json::json!({ "room_id": server.room_id, "nonce": hex::encode(nonce) }).to_string();
    let mut results = flight.do_action(Action::new("attestation", body)).await.unwrap();
    let result: Value = serde_json::from_slice(&results.next().await.unwrap().unwrap()).unwrap();
    let evidence: Evidence = serde_json::from_value(result["evidence"].clone()).unwrap();
    let v = verify(&evidence, &policy, &binding(&nonce, &key), None, 1_800_000_000);
    assert!(v.passed(), "{}", v.render());
    server.stop().await;
}

#[tokio::test]
async fn clients_pinned_to_another_enclave_or_speaking_plain_http_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let path = format!("https://{}/v1/rooms/{}", server.server().http_addr, server.room_id);
    // A client that attested another enclave (e.g. before a restart) refuses this one before
    // sending its token.
    let other = sealroom_attest::EnclaveIdentity::generate(&["localhost".into()]).unwrap();
    let pinned = sealroom_attest::tls::PinnedCert::expect(other.certificate_der().to_vec());
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(pinned.client_config(&[b"http/1.1"]).unwrap())
        .build()
        .unwrap();
    let err = http.get(&path).bearer_auth(ADV).send().await.unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(chain.contains("not the attested enclave's"), "{chain}");
    assert_eq!(pinned.seen().unwrap(), server.server().engine.enclave().identity().certificate_der());
    // Plain HTTP is not served.
    let plain = reqwest::Client::new().get(path.replacen("https://", "http://", 1)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // The pinned client gets through.
    let (status, _) = server.get(&format!("/v1/rooms/{}", server.room_id), ADV).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Whether a Flight call succeeded, or the gRPC code it failed with.
async fn flight_outcome<T>(call: impl std::future::Future<Output = Result<T, FlightError>>) -> Result<(), tonic::Code> {
    match call.await {
        Ok(_) => Ok(()),
        Err(FlightError::Tonic(status)) => Err(status.code()),
        Err(e) => panic!("not a gRPC error: {e}"),
    }
}

/// Every REST route and Flight action, called by every participant of the contract and by an
/// outsider: allowed exactly when the contract says so; otherwise 403 / PERMISSION_DENIED for a
/// participant and 401 / UNAUTHENTICATED for anyone else.
#[tokio::test]
async fn contract_changes_over_rest_take_effect_once_both_owners_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let room = server.room_id.clone();
    let proposals = format!("/v1/rooms/{room}/proposals");
    let body = |base: u64, k: u64| {
        serde_json::json!({"base_version": base, "room_file": room_yaml(k), "description": "stricter"}).to_string()
    };
    // Bad bodies are named.
    let (status, err) = server.post_body(&proposals, ADV, r#"{"room_file": "name: x"}"#).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("base_version"), "{err}");
    let broken = serde_json::json!({"base_version": 1, "room_file": "name: [unclosed"}).to_string();
    let (status, err) = server.post_body(&proposals, ADV, &broken).await;
    assert_eq!(status, 400, "{err}");

    let (status, created) = server.post_body(&proposals, PUB, &body(1, 40)).await;
    assert_eq!(status, 201, "{created}");
    let p = created["proposal"].clone();
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(p["approvers"], serde_json::json!(["acme", "news"]));
    assert_eq!(p["contract"]["privacy"]["k_thresholds"][0]["k"], 40, "the proposed contract is shown: {p}");

    let decide = |who: &'static str, verdict: &'static str, p: Value| {
        let path = format!("{proposals}/{id}/{verdict}");
        let signed = serde_json::json!({"signature": signed_decision(&room, who, &p, verdict)}).to_string();
        let server = &server;
        async move { server.post_body(&path, who, &signed).await }
    };
    let (status, err) = decide(AUDITOR, "approve", p.clone()).await;
    assert_eq!(status, 403, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("owns no data"), "{err}");
    let (status, _) = decide(ADV, "approve", p.clone()).await;
    assert_eq!(status, 200);
    let (_, view) = server.get(&format!("/v1/rooms/{room}"), ADV).await;
    assert_eq!((view["contract_version"].as_u64(), view["effective_k"].as_u64()), (Some(1), Some(K)));
    let (status, adopted) = decide(PUB, "approve", p.clone()).await;
    assert_eq!(status, 200, "{adopted}");
    assert_eq!(adopted["proposal"]["state"], "adopted");
    let (_, view) = server.get(&format!("/v1/rooms/{room}"), AUDITOR).await;
    assert_eq!((view["contract_version"].as_u64(), view["effective_k"].as_u64()), (Some(2), Some(40)));
    assert_eq!(view["room_id"], room.as_str());

    // A proposal against version 1 is now refused, naming the version in force.
    let (status, err) = server.post_body(&proposals, ADV, &body(1, 60)).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("at version 2"), "{err}");
    let (_, versions) = server.get(&format!("/v1/rooms/{room}/versions"), AUDITOR).await;
    assert_eq!(versions["versions"][1]["previous_sha256"], room.as_str());
    let (_, audit) = server.get(&format!("/v1/rooms/{room}/audit"), AUDITOR).await;
    let types: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["event"]["type"].as_str()).collect();
    assert!(
        types.ends_with(&["proposal_created", "proposal_decided", "proposal_decided", "contract_version_adopted"]),
        "{types:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_permission_matrix_follows_the_contract() {
    use sealroom_proto::room::v1::computation::Kind;

    let dir = tempfile::tempdir().unwrap();
    let d = data();
    let server = TestServer::start(dir.path()).await;
    upload_both(&server, &d).await;
    let room = server.room_id.clone();
    let contract = room_contract();
    let computation = |name: &str| contract.computations.iter().find(|c| c.name == name).unwrap().clone();
    let (overlap, lookalike) = (computation("overlap"), computation("lookalike"));
    let Some(Kind::Lookalike(spec)) = lookalike.kind.clone() else { panic!("the room's lookalike") };
    let owner = |table: &str| contract.tables.iter().find(|t| t.name == table).unwrap().owner.clone();
    // Results exist for everyone to try to read.
    for name in ["overlap", "lookalike"] {
        let (status, body) = server.post(&format!("/v1/rooms/{room}/computations/{name}/runs"), ADV).await;
        assert_eq!(status, 201, "{body}");
    }
    let runs = |name: &str| format!("/v1/rooms/{room}/computations/{name}/runs");
    let nonce = "ab".repeat(16);
    let proposals = format!("/v1/rooms/{room}/proposals");
    let propose_body = serde_json::json!({"base_version": 1, "room_file": room_yaml(K * 2)}).to_string();
    let mut checked = 0;
    for who in [ADV, PUB, AUDITOR, "outsider"] {
        let member = contract.participants.iter().any(|p| p.id == who);
        let is = |list: &[String]| list.iter().any(|p| p == who);
        // Changing k touches every data owner's data: the owners approve or reject it, nobody else.
        let data_owner = contract.tables.iter().any(|t| t.owner == who);
        let (status, body) = server.post_body(&proposals, ADV, &propose_body).await;
        assert_eq!(status, 201, "{body}");
        let proposal = body["proposal"].clone();
        let id = proposal["id"].as_str().unwrap().to_owned();
        // An outsider has no issuer key in the room (and its token fails first).
        let signature = if member { signed_decision(&room, who, &proposal, "reject") } else { "none".into() };
        let rejection = serde_json::json!({ "signature": signature }).to_string();
        let rest: Vec<(String, &str, bool)> = vec![
            ("/v1/rooms".into(), "GET", member),
            (format!("/v1/rooms/{room}"), "GET", member),
            (format!("/v1/rooms/{room}/datasets"), "GET", member),
            (format!("/v1/rooms/{room}/computations"), "GET", member),
            (runs("overlap"), "POST", is(&overlap.run_by)),
            (runs("overlap"), "GET", is(&overlap.run_by) || is(&overlap.results_to)),
            (format!("{}/latest/result", runs("overlap")), "GET", is(&overlap.results_to)),
            (format!("{}/latest/result", runs("lookalike")), "GET", is(&lookalike.results_to)),
            (format!("{}/latest/model", runs("lookalike")), "GET", is(&spec.model_to)),
            (format!("{}/latest/audience", runs("lookalike")), "POST audience", spec.audience_to == who),
            (format!("/v1/rooms/{room}/activations"), "GET", member),
            (format!("/v1/rooms/{room}/deals"), "GET", member),
            (format!("/v1/rooms/{room}/audit"), "GET", member),
            (format!("/v1/rooms/{room}/attestation?nonce={nonce}"), "GET", true),
            (proposals.clone(), "GET", member),
            (proposals.clone(), "POST proposal", member),
            (format!("{proposals}/{id}"), "GET", member),
            (format!("{proposals}/{id}/reject"), "POST rejection", data_owner),
            (format!("/v1/rooms/{room}/versions"), "GET", member),
        ];
        for (path, method, allowed) in rest {
            let (status, body) = match method {
                "GET" => server.get(&path, who).await,
                "POST" => server.post(&path, who).await,
                "POST proposal" => server.post_body(&path, who, &propose_body).await,
                "POST rejection" => server.post_body(&path, who, &rejection).await,
                _ => server.post_body(&path, who, r#"{"size": 20}"#).await,
            };
            let denied = if member { 403 } else { 401 };
            if allowed {
                assert!((200..300).contains(&status), "{who} {method} {path}: {status} {body}");
            } else {
                assert_eq!(status, denied, "{who} {method} {path}: {body}");
            }
            checked += 1;
        }

        let mut client = server.flight(who).await;
        let action = |kind: &str, body: Value| Action::new(kind.to_owned(), body.to_string());
        let section = format!("rooms/{room}/computations/overlap/runs/latest/sections/summary");
        let denied = if member { tonic::Code::PermissionDenied } else { tonic::Code::Unauthenticated };
        let lookalike_body = serde_json::json!({"room_id": room, "computation": "lookalike"});
        let flight: Vec<(&str, Result<(), tonic::Code>, bool)> = vec![
            ("DoPut crm", flight_outcome(server.upload(who, "crm", crm_batches(&d))).await, owner("crm") == who),
            (
                "DoPut readers",
                flight_outcome(server.upload(who, "readers", readers_batches(&d))).await,
                owner("readers") == who,
            ),
            (
                "ListFlights",
                flight_outcome(async { client.list_flights(Vec::<u8>::new()).await?.try_collect::<Vec<_>>().await })
                    .await,
                member,
            ),
            (
                "DoGet overlap summary",
                flight_outcome(async {
                    client.do_get(Ticket::new(section.clone())).await?.try_collect::<Vec<_>>().await
                })
                .await,
                is(&overlap.results_to),
            ),
            (
                "run-computation overlap",
                flight_outcome(async {
                    let body = serde_json::json!({"room_id": room, "computation": "overlap"});
                    client.do_action(action("run-computation", body)).await?.try_collect::<Vec<_>>().await
                })
                .await,
                is(&overlap.run_by),
            ),
            (
                "lookalike-model",
                flight_outcome(async {
                    client
                        .do_action(action("lookalike-model", lookalike_body.clone()))
                        .await?
                        .try_collect::<Vec<_>>()
                        .await
                })
                .await,
                is(&spec.model_to),
            ),
            (
                "lookalike-audience",
                flight_outcome(async {
                    let body = serde_json::json!({"room_id": room, "computation": "lookalike", "size": 20});
                    client.do_action(action("lookalike-audience", body)).await?.try_collect::<Vec<_>>().await
                })
                .await,
                spec.audience_to == who,
            ),
            (
                "attestation",
                flight_outcome(async {
                    let body = serde_json::json!({"room_id": room, "nonce": nonce});
                    client.do_action(action("attestation", body)).await?.try_collect::<Vec<_>>().await
                })
                .await,
                true,
            ),
        ];
        for (call, outcome, allowed) in flight {
            if allowed {
                assert_eq!(outcome, Ok(()), "{who} {call}");
            } else {
                assert_eq!(outcome, Err(denied), "{who} {call}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * (19 + 8));
    server.stop().await;
}
