//! The README's pyarrow example against the real server: a pyarrow user needs nothing but pyarrow.
//!
//! Needs a Python with pyarrow: `scripts/test` makes one and runs this test with
//! `SEALROOM_PYTHON=<venv python> cargo test -p sealroom-cli --test pyarrow_client -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sealroom_cli::demo::{DemoOptions, run};
use sealroom_proto::RoomFile;
use sealroom_server::ServerConfig;

fn python() -> String {
    std::env::var("SEALROOM_PYTHON").expect("set SEALROOM_PYTHON to a python with pyarrow (scripts/test does)")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

fn client(flight: &str, cert: &Path, room: &str, token: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(example("pyarrow_client.py"))
        .args(["--flight", flight, "--enclave-cert", cert.to_str().unwrap(), "--room", room, "--token", token])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "pyarrow client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
#[ignore = "needs pyarrow: run through scripts/test"]
async fn the_readme_pyarrow_example_uploads_and_reads_results() {
    // Files ready to upload, made by a small demo run (its own server is gone when it returns).
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    run(&DemoOptions {
        dir: demo_dir.clone(),
        advertisers: 1_500,
        publishers: 4_000,
        seed: 3,
        k: 2,
        keep_running: false,
        progress: false,
    })
    .await
    .unwrap();

    // The example room of the README, whose example tokens are public.
    let text = std::fs::read_to_string(example("room.yaml")).unwrap();
    let contract = RoomFile::parse(&text, "examples/room.yaml").unwrap();
    let room = contract.room_id().to_string();
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tee: sealroom_attest::Backend::Simulated,
        ..ServerConfig::default()
    };
    let server = sealroom_server::start(&config, vec![contract.clone()]).await.unwrap();
    let flight = format!("grpc+tls://{}", server.flight_addr);
    // `sealroom attest`: verify the server against the room file, save the certificate to pin.
    let rest = format!("https://{}", server.http_addr);
    let attested = sealroom_cli::attest::attest(&rest, &contract, None, sealroom_cli::attest::now()).await.unwrap();
    assert!(attested.verification.passed(), "{}", attested.verification.render());
    let cert = dir.path().join("enclave.pem");
    attested.certificate.save(&cert).unwrap();
    // Tokens signed with the example room's issuer keys (public example keys), as `sealroom token` makes.
    let token = |who: &str| {
        let key = sealroom_cli::credential::load_key(&example(&format!("keys/{who}.key.pem"))).unwrap();
        sealroom_cli::credential::mint(&key, who, &room, Duration::from_secs(600)).unwrap()
    };
    let (acme, news) = (token("acme"), token("news"));

    let crm = demo_dir.join("advertiser_crm_hashed.parquet");
    let readers = demo_dir.join("publisher_readers.parquet");
    let flight2 = flight.clone();
    let room2 = room.clone();
    let cert2 = cert.clone();
    let (a, b, result) = tokio::task::spawn_blocking(move || {
        let a = client(&flight2, &cert2, &room2, &acme, &["upload", "crm", crm.to_str().unwrap()]);
        let b = client(&flight2, &cert2, &room2, &news, &["upload", "readers", readers.to_str().unwrap()]);
        let result = client(&flight2, &cert2, &room2, &acme, &["run", "overlap"]);
        (a, b, result)
    })
    .await
    .unwrap();
    assert_eq!(a["rows"], 1_500);
    assert_eq!(b["rows"], 4_000);
    let summary = &result["sections"]["summary"][0];
    assert_eq!(summary["advertiser_individuals"], 1_500);
    assert!(summary["matched_advertiser_individuals"].as_u64().unwrap() > 200, "{summary}");
    assert_eq!(summary["matched_advertiser_individuals_suppressed"], false);
    let by_segment = result["sections"]["by_segment"].as_array().unwrap();
    assert_eq!(by_segment.len(), 24);
    // k = 100 in the example room: small segments come back null and flagged, never 0.
    for row in by_segment {
        if row["overlap_suppressed"] == true {
            assert!(row["overlap"].is_null(), "{row}");
        } else {
            assert!(row["overlap"].as_u64().unwrap() >= 100, "{row}");
        }
    }
    // A wrong token gets a clear refusal.
    let stderr = tokio::task::spawn_blocking(move || {
        let out = Command::new(python())
            .arg(example("pyarrow_client.py"))
            .args(["--flight", &flight, "--enclave-cert", cert.to_str().unwrap()])
            .args(["--room", &room, "--token", "wrong", "run", "overlap"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    })
    .await
    .unwrap();
    assert!(stderr.contains("the token is not a JWT"), "{stderr}");
    server.shutdown().await.unwrap();
}
