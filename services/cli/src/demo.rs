//! `sealroom demo`: the whole collaboration in one process, on embedded defaults.
//!
//! An advertiser (ACME Retail) and a publisher (Daily News) each prepare their data on "their own
//! machine" (here: files in the demo directory), the room contract is written, the enclave server
//! starts on loopback with the simulated TEE, each side uploads over Flight as its own participant,
//! the advertiser runs the overlap over REST, reads the k-anonymous report, and the publisher's
//! activation sink receives its released copy.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use sealroom_attest::token::IssuerKey;
use sealroom_loadtest::synth::{self, SynthConfig, Synthetic};
use sealroom_matching::normalize;
use sealroom_proto::RoomFile;
use sealroom_proto::room_file::{
    AffinityFile, AttestationFile, ColumnFile, ColumnTypeFile, ComputationFile, CredentialFile, IdentifierFile,
    KThresholdFile, LookalikeFile, OverlapFile, ParticipantFile, PrivacyFile, RoleFile, TableFile,
};
use sealroom_server::config::{ServerConfig, SinkConfig};

use crate::client::{Rest, UploadRequest, upload};
use crate::hash::{HashOptions, hash_csv};
use crate::{CliError, credential, report_table};

const MARKER: &str = ".sealroom-demo";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub advertisers: usize,
    pub publishers: usize,
    pub seed: u64,
    pub k: u32,
    pub keep_running: bool,
    pub progress: bool,
}

/// Where the demo put things, for the caller (and tests).
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub room_id: String,
    pub result: serde_json::Value,
    /// The released top-affinity report.
    pub affinity: serde_json::Value,
    /// The released lookalike report (held-out quality and the reach curve).
    pub lookalike: serde_json::Value,
    /// The lookalike audience Daily News took: the delivery record.
    pub audience: serde_json::Value,
    pub activation_files: Vec<PathBuf>,
}

fn prepare_dir(dir: &Path) -> Result<(), CliError> {
    if dir.exists() {
        let empty = fs::read_dir(dir).map_err(|e| CliError::io(dir, e))?.next().is_none();
        if dir.join(MARKER).exists() {
            fs::remove_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
        } else if !empty {
            return Err(CliError::Usage(format!(
                "{} exists and is not a demo directory; choose another --dir (the demo only replaces directories it made)",
                dir.display()
            )));
        }
    }
    fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
    fs::write(dir.join(MARKER), b"made by `sealroom demo`; the next demo run replaces this directory\n")
        .map_err(|e| CliError::io(dir, e))
}

fn column(name: &str, t: ColumnTypeFile, identifier: Option<IdentifierFile>, nullable: bool) -> ColumnFile {
    ColumnFile { name: name.into(), column_type: t, identifier, nullable, normalization: None }
}

fn participant(id: &str, name: &str, roles: Vec<RoleFile>, issuer_key: &IssuerKey) -> ParticipantFile {
    ParticipantFile {
        id: id.into(),
        name: name.into(),
        roles,
        credential: Some(CredentialFile { issuer_keys: vec![issuer_key.public_key_pem()], revoked_token_ids: vec![] }),
    }
}

/// The demo's room contract, naming each participant's issuer key.
pub fn demo_room(k: u32, advertiser: &IssuerKey, publisher: &IssuerKey, auditor: &IssuerKey) -> RoomFile {
    let matching = OverlapFile {
        advertiser_table: "crm".into(),
        publisher_table: "readers".into(),
        match_on: vec![IdentifierFile::HashedEmail, IdentifierFile::HashedPhone],
        ..Default::default()
    };
    RoomFile {
        name: "ACME Retail x Daily News (demo)".into(),
        description: "Demo room made by `sealroom demo`: overlap of ACME's CRM with Daily News readers.".into(),
        participants: vec![
            participant("acme", "ACME Retail (advertiser)", vec![RoleFile::DataOwner, RoleFile::Analyst], advertiser),
            participant("news", "Daily News (publisher)", vec![RoleFile::DataOwner, RoleFile::Analyst], publisher),
            participant("auditor", "Independent auditor", vec![RoleFile::Auditor], auditor),
        ],
        tables: vec![
            TableFile {
                name: "crm".into(),
                description: "ACME's CRM, hashed on ACME's machine with `sealroom hash`".into(),
                owner: "acme".into(),
                columns: vec![
                    column("customer_id", ColumnTypeFile::String, Some(IdentifierFile::UserId), false),
                    column("email_sha256", ColumnTypeFile::Sha256, Some(IdentifierFile::HashedEmail), true),
                    column("phone_sha256", ColumnTypeFile::Sha256, Some(IdentifierFile::HashedPhone), true),
                ],
            },
            TableFile {
                name: "readers".into(),
                description: "Daily News readers: hashed identifiers and segment memberships".into(),
                owner: "news".into(),
                columns: vec![
                    column("user_id", ColumnTypeFile::String, Some(IdentifierFile::UserId), false),
                    column("email_sha256", ColumnTypeFile::Sha256, Some(IdentifierFile::HashedEmail), true),
                    column("phone_sha256", ColumnTypeFile::Sha256, Some(IdentifierFile::HashedPhone), true),
                    column("segments", ColumnTypeFile::StringList, Some(IdentifierFile::Segment), true),
                ],
            },
        ],
        computations: vec![
            ComputationFile {
                name: "overlap".into(),
                description: "Overlap, match rates from both sides, and overlap by Daily News segment".into(),
                run_by: vec!["acme".into()],
                results_to: vec!["acme".into(), "news".into()],
                deliver_to: vec!["news".into()],
                overlap: Some(matching.clone()),
                affinity: None,
                measurement: None,
                sql: None,
                lookalike: None,
            },
            ComputationFile {
                name: "top_affinity".into(),
                description: "Daily News segments ranked by their affinity with ACME's customers".into(),
                run_by: vec!["acme".into()],
                results_to: vec!["acme".into()],
                deliver_to: vec![],
                overlap: None,
                affinity: Some(AffinityFile { matching: matching.clone(), confidence: None, top: Some(10) }),
                measurement: None,
                sql: None,
                lookalike: None,
            },
            ComputationFile {
                name: "lookalike".into(),
                description: "Daily News readers who look like ACME's matched customers, by their segments: the \
                              model goes to ACME, the audience only to Daily News's sink"
                    .into(),
                run_by: vec!["acme".into()],
                results_to: vec!["acme".into(), "news".into()],
                deliver_to: vec![],
                overlap: None,
                affinity: None,
                measurement: None,
                sql: None,
                lookalike: Some(LookalikeFile {
                    matching,
                    features: vec!["segments".into()],
                    model: None,
                    model_to: vec!["acme".into()],
                    audience_to: Some("news".into()),
                    max_audience: None,
                    seed: None,
                }),
            },
        ],
        privacy: PrivacyFile {
            k_thresholds: vec![KThresholdFile { set_by: "news".into(), k }],
            differential_privacy: None,
        },
        attestation: AttestationFile { allow_simulated: true, ..AttestationFile::default() },
        authentication: Default::default(),
        governance: Default::default(),
    }
}

fn write_crm_csv(path: &Path, data: &Synthetic) -> Result<(), CliError> {
    let mut w = csv::Writer::from_path(path).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    let err = |e: csv::Error| CliError::Input(format!("{}: {e}", path.display()));
    w.write_record(["customer_id", "email", "phone"]).map_err(err)?;
    for r in &data.crm {
        w.write_record([r.customer_id.as_str(), r.email.as_deref().unwrap_or(""), r.phone.as_deref().unwrap_or("")])
            .map_err(err)?;
    }
    w.flush().map_err(|e| CliError::io(path, e))
}

fn write_publisher_parquet(path: &Path, data: &Synthetic) -> Result<(), CliError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("email_sha256", DataType::Utf8, true),
        Field::new("phone_sha256", DataType::Utf8, true),
        Field::new("segments", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]));
    let file = fs::File::create(path).map_err(|e| CliError::io(path, e))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| CliError::Input(e.to_string()))?;
    for chunk in data.publisher.chunks(65_536) {
        let ids: StringArray = chunk.iter().map(|r| Some(r.user_id.as_str())).collect();
        let emails: StringArray = chunk.iter().map(|r| r.email_sha256.as_deref()).collect();
        let phones: StringArray = chunk.iter().map(|r| r.phone_sha256.as_deref()).collect();
        let mut segments = ListBuilder::new(StringBuilder::new());
        for r in chunk {
            for s in &r.segments {
                segments.values().append_value(s);
            }
            segments.append(true);
        }
        let columns: Vec<ArrayRef> =
            vec![Arc::new(ids), Arc::new(emails), Arc::new(phones), Arc::new(segments.finish())];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| CliError::Input(e.to_string()))?;
        writer.write(&batch).map_err(|e| CliError::Input(e.to_string()))?;
    }
    writer.close().map_err(|e| CliError::Input(e.to_string()))?;
    Ok(())
}

fn step(started: &Instant, text: &str) {
    println!("[{:>5.1}s] {text}", started.elapsed().as_secs_f64());
}

/// Runs the demo. See the module docs.
pub async fn run(options: &DemoOptions) -> Result<DemoOutcome, CliError> {
    let started = Instant::now();
    println!("{}\n", sealroom_engine::tee::SIMULATION_BANNER);
    prepare_dir(&options.dir)?;
    let dir = options.dir.canonicalize().map_err(|e| CliError::io(&options.dir, e))?;

    // 1. Each participant's issuer key (its own authentication root), and the contract naming the
    // public halves; then tokens each participant signs for this room.
    let keys_dir = dir.join("keys");
    fs::create_dir_all(&keys_dir).map_err(|e| CliError::io(&keys_dir, e))?;
    let mut keys = Vec::new();
    for id in ["acme", "news", "auditor"] {
        let key = IssuerKey::generate().map_err(|e| CliError::Input(e.to_string()))?;
        credential::write_secret(&keys_dir.join(format!("{id}.key.pem")), &key.to_pem())?;
        keys.push(key);
    }
    let room_file = demo_room(options.k, &keys[0], &keys[1], &keys[2]);
    let room_path = dir.join("room.yaml");
    fs::write(&room_path, room_file.to_yaml()).map_err(|e| CliError::io(&room_path, e))?;
    let contract =
        RoomFile::parse(&fs::read_to_string(&room_path).map_err(|e| CliError::io(&room_path, e))?, "room.yaml")
            .map_err(|e| CliError::Input(e.to_string()))?;
    let room_id = contract.room_id().to_string();
    let day = Duration::from_secs(u64::from(sealroom_proto::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS));
    let acme_token = credential::mint(&keys[0], "acme", &room_id, day)?;
    let news_token = credential::mint(&keys[1], "news", &room_id, day)?;
    let auditor_token = credential::mint(&keys[2], "auditor", &room_id, day)?;
    let tokens_path = dir.join("tokens.txt");
    credential::write_secret(
        &tokens_path,
        &format!("acme={acme_token}\nnews={news_token}\nauditor={auditor_token}\n"),
    )?;
    step(&started, &format!("wrote the room contract {} (room id {room_id}, k = {})", room_path.display(), options.k));

    // 2. Each side's data, on its own machine.
    let data = synth::generate(&SynthConfig {
        seed: options.seed,
        advertiser_rows: options.advertisers,
        publisher_rows: options.publishers,
        ..SynthConfig::default()
    });
    let crm_csv = dir.join("advertiser_crm.csv");
    write_crm_csv(&crm_csv, &data)?;
    let readers_parquet = dir.join("publisher_readers.parquet");
    write_publisher_parquet(&readers_parquet, &data)?;
    step(
        &started,
        &format!(
            "generated {} raw CRM rows for ACME ({}) and {} hashed readers in {} segments for Daily News ({})",
            report_table::thousands(data.crm.len() as u64),
            crm_csv.display(),
            report_table::thousands(data.publisher.len() as u64),
            data.segment_names.len(),
            readers_parquet.display()
        ),
    );

    // 3. ACME hashes its CRM locally: raw emails and phones never leave its machine.
    let crm_hashed = dir.join("advertiser_crm_hashed.parquet");
    let summary = hash_csv(&HashOptions {
        input: crm_csv.clone(),
        output: crm_hashed.clone(),
        email_column: "email".into(),
        phone_column: "phone".into(),
        id_column: Some("customer_id".into()),
        region: normalize::region("US").map_err(CliError::Usage)?,
        profile: normalize::Profile::Sealroom,
        clk_secret: None,
        clk_columns: Vec::new(),
        progress: options.progress,
    })?;
    step(
        &started,
        &format!(
            "ACME hashed its CRM with `sealroom hash`: {} emails and {} phones normalized and SHA-256'd → {}",
            report_table::thousands(summary.emails_hashed),
            report_table::thousands(summary.phones_hashed),
            crm_hashed.display()
        ),
    );

    // 4. The enclave server.
    let config = ServerConfig {
        data_dir: dir.join("data"),
        flight_addr: "127.0.0.1:0".parse().map_err(|e| CliError::Usage(format!("{e}")))?,
        http_addr: "127.0.0.1:0".parse().map_err(|e| CliError::Usage(format!("{e}")))?,
        sinks: vec![SinkConfig {
            participant: "news".into(),
            room: None,
            sink: serde_json::json!({"type": "file", "path": dir.join("activations"), "format": "ndjson"}),
        }],
        // The demo runs anywhere: the INSECURE simulated TEE, which its room allows.
        tee: sealroom_attest::Backend::Simulated,
        ..ServerConfig::default()
    };
    let server =
        sealroom_server::start(&config, vec![contract.clone()]).await.map_err(|e| CliError::Server(e.to_string()))?;
    let flight = format!("https://{}", server.flight_addr);
    let rest_url = format!("https://{}", server.http_addr);
    step(&started, &format!("enclave server up (INSECURE SIMULATION): Flight {flight}, REST {rest_url} (TLS)"));

    let outcome = async {
        // 4b. Before sending anything, the participants attest the enclave and pin its TLS key.
        let attested = crate::attest::attest(&rest_url, &contract, None, crate::attest::now()).await?;
        let verification = attested.verification.into_result().map_err(CliError::Server)?;
        let enclave_cert = &dir.join("enclave.pem");
        attested.certificate.save(enclave_cert)?;
        step(
            &started,
            &format!(
                "the participants attested the enclave ({} checks passed; platform {}) and pinned its TLS certificate \
                 {}",
                verification.checks.len(),
                verification.platform.describe(),
                enclave_cert.display()
            ),
        );
        let enclave = attested.certificate;

        // 5. Each side uploads over Flight as its own participant.
        for (who, token, table, file) in
            [("ACME", &acme_token, "crm", &crm_hashed), ("Daily News", &news_token, "readers", &readers_parquet)]
        {
            let ack = upload(&UploadRequest {
                flight: flight.clone(),
                room: room_id.clone(),
                table: table.into(),
                token: token.clone(),
                enclave: enclave.clone(),
                file: file.clone(),
                progress: options.progress,
            })
            .await?;
            step(
                &started,
                &format!(
                    "{who} uploaded table '{table}' over Arrow Flight: {} rows committed (version {})",
                    report_table::thousands(ack["rows"].as_u64().unwrap_or(0)),
                    ack["version"].as_str().unwrap_or("?")
                ),
            );
        }

        // 6. ACME runs the overlap over REST and reads the released report.
        let acme = Rest::new(&rest_url, &acme_token, &enclave)?;
        let (run, result, result_path) = run_and_save(&acme, &room_id, "overlap", &dir).await?;
        step(
            &started,
            &format!(
                "ACME ran the overlap over REST in {} ms; the release gate let out this report (k = {}):",
                run["run"]["duration_ms"], result["k"]
            ),
        );
        println!("\n{}", report_table::render(&result));

        // 7. ACME ranks Daily News segments by affinity with its customers.
        let (_, affinity, _) = run_and_save(&acme, &room_id, "top_affinity", &dir).await?;
        step(&started, "ACME ranked Daily News segments by affinity; released:");
        println!("\n{}", report_table::render(&affinity));

        // 8. ACME trains a lookalike on its matched customers; Daily News reads the curve, picks a
        //    size and takes the audience into its own sink.
        let (_, lookalike, lookalike_path) = run_and_save(&acme, &room_id, "lookalike", &dir).await?;
        step(&started, "ACME trained a lookalike model inside the enclave; released (held-out quality, reach):");
        println!("\n{}", report_table::render(&lookalike));
        let news = Rest::new(&rest_url, &news_token, &enclave)?;
        let size = audience_size(&lookalike, u64::from(options.k));
        let taken = news
            .post_json(
                &format!("/v1/rooms/{room_id}/computations/lookalike/runs/latest/audience"),
                &serde_json::json!({ "size": size }),
            )
            .await?;
        let audience = taken["delivery"].clone();
        step(
            &started,
            &format!(
                "Daily News took the top {} of the lookalike ranking (never a matched customer) into its sink: {}",
                report_table::thousands(audience["audience"].as_u64().unwrap_or(0)),
                audience["location"].as_str().unwrap_or("?")
            ),
        );
        let activations: Vec<PathBuf> = run["run"]["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["location"].as_str())
            .flat_map(|l| l.split(", ").map(PathBuf::from).collect::<Vec<_>>())
            .collect();
        println!("Where everything is:");
        println!("  room contract        {}", room_path.display());
        println!("  issuer keys          {} (each participant's private key; keep secret)", keys_dir.display());
        println!("  participant tokens   {} (valid one day; keep secret)", tokens_path.display());
        println!("  ACME's raw CRM       {} (never uploaded)", crm_csv.display());
        println!("  uploaded files       {}, {}", crm_hashed.display(), readers_parquet.display());
        println!("  enclave data dir     {}", dir.join("data").display());
        println!("  released report      {}", result_path.display());
        println!("  lookalike report     {}", lookalike_path.display());
        for a in &activations {
            println!("  activation (news)    {}", a.display());
        }
        println!("  audit log            {rest_url}/v1/rooms/{room_id}/audit (GET with a participant token)");
        Ok::<_, CliError>(DemoOutcome {
            room_id: room_id.clone(),
            result,
            affinity,
            lookalike,
            audience,
            activation_files: activations,
        })
    }
    .await;

    if outcome.is_ok() && options.keep_running {
        println!("\nThe server keeps running. Try:");
        let cert = dir.join("enclave.pem");
        let cert = cert.display();
        println!("  curl --cacert {cert} -H 'Authorization: Bearer {acme_token}' {rest_url}/v1/rooms/{room_id}");
        println!(
            "  curl --cacert {cert} -H 'Authorization: Bearer {acme_token}' \
             {rest_url}/v1/rooms/{room_id}/computations/overlap/runs/latest/result"
        );
        println!("Press Ctrl-C to stop.");
        crate::shutdown_signal().await;
    }
    server.shutdown().await.map_err(|e| CliError::Server(e.to_string()))?;
    let outcome = outcome?;
    step(&started, "done");
    Ok(outcome)
}

/// Runs `computation` over REST, reads its released result and saves it as
/// `<computation>_result.json` in `dir`: the run record, the result and where it was saved.
async fn run_and_save(
    rest: &Rest,
    room_id: &str,
    computation: &str,
    dir: &Path,
) -> Result<(serde_json::Value, serde_json::Value, PathBuf), CliError> {
    let run = rest.post(&format!("/v1/rooms/{room_id}/computations/{computation}/runs")).await?;
    let result = rest.get(run["result"].as_str().unwrap_or_default()).await?;
    let path = dir.join(format!("{computation}_result.json"));
    fs::write(&path, serde_json::to_vec_pretty(&result).unwrap_or_default()).map_err(|e| CliError::io(&path, e))?;
    Ok((run, result, path))
}

/// The size Daily News picks from the released reach curve: the audience at 10% of its base when
/// that point was released, otherwise the largest released point, otherwise 2k.
fn audience_size(lookalike: &serde_json::Value, k: u64) -> u64 {
    let rows = lookalike["sections"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "reach"))
        .and_then(|s| s["rows"].as_array())
        .cloned()
        .unwrap_or_default();
    let released =
        |r: &serde_json::Value| r["audience"]["value"].as_u64().filter(|_| r["precision"]["value"].is_number());
    rows.iter()
        .find(|r| r["audience_share"] == "10%")
        .and_then(released)
        .or_else(|| rows.iter().filter_map(released).max())
        .unwrap_or(2 * k)
}
