//! `sealroom serve`, `sealroom attest` and `sealroom audit verify` as a user runs them, with the
//! server a separate process that is killed with SIGKILL in the middle of uploads.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealroom"))
}

fn example_room() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/room.yaml")
}

/// ACME's issuer key in the example room (a public example key): `upload` mints its own token.
fn acme_key() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/keys/acme.key.pem")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    rest: String,
    flight: String,
}

/// Starts `sealroom serve` on the example room (INSECURE simulated TEE, which it allows) and waits
/// until it listens.
fn serve(dir: &Path) -> Server {
    serve_room(dir, &example_room())
}

/// Starts `sealroom serve` on `room_file`.
fn serve_room(dir: &Path, room_file: &Path) -> Server {
    let (http, flight) = (free_port(), free_port());
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "rooms: [{}]\ndata_dir: {}\nflight_addr: 127.0.0.1:{flight}\nhttp_addr: 127.0.0.1:{http}\ntee: simulated\n",
            room_file.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = bin()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, rest: format!("https://127.0.0.1:{http}"), flight: format!("https://127.0.0.1:{flight}") }
}

fn attest(server: &Server, cert: &Path) -> Output {
    attest_room(server, cert, &example_room())
}

fn attest_room(server: &Server, cert: &Path, room_file: &Path) -> Output {
    bin()
        .args(["attest", "--rest", &server.rest, "--room-file"])
        .arg(room_file)
        .arg("--save-cert")
        .arg(cert)
        .output()
        .unwrap()
}

fn upload(flight: &str, room: &str, cert: &Path, file: &Path) -> Output {
    bin()
        .args([
            "upload",
            "--flight",
            flight,
            "--room",
            room,
            "--table",
            "crm",
            "--participant",
            "acme",
            "--no-progress",
        ])
        .arg("--key")
        .arg(acme_key())
        .arg("--enclave-cert")
        .arg(cert)
        .arg(file)
        .output()
        .unwrap()
}

fn verify_log(log: &Path) -> Output {
    bin().args(["audit", "verify", "--log"]).arg(log).arg("--room-file").arg(example_room()).output().unwrap()
}

#[test]
fn attest_pin_upload_and_a_log_that_verifies_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let room = String::from_utf8(bin().args(["room", "id"]).arg(example_room()).output().unwrap().stdout).unwrap();
    let room = room.trim().to_owned();
    let csv = dir.path().join("crm.csv");
    let mut rows = String::from("customer_id,email,phone\n");
    for i in 0..200 {
        rows.push_str(&format!("c{i},person{i}@example.com,+1 415 555 {:04}\n", i));
    }
    std::fs::write(&csv, rows).unwrap();
    let crm = dir.path().join("crm.parquet");
    let out = bin()
        .args(["hash", "--no-progress", "--id-column", "customer_id", "--input"])
        .arg(&csv)
        .arg("--output")
        .arg(&crm)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let cert = dir.path().join("enclave.pem");
    let mut server = serve(dir.path());
    // Uploading before attesting: there is no certificate to pin, and nothing is sent.
    let out = upload(&server.flight, &room, &cert, &crm);
    assert!(!out.status.success());
    assert!(text(&out).contains("sealroom attest --save-cert"), "{}", text(&out));
    let out = attest(&server, &cert);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("[pass] report data binding") && report.contains("verdict      ACCEPTED"), "{report}");
    assert!(report.contains("INSECURE"), "the simulation is labelled: {report}");
    let out = upload(&server.flight, &room, &cert, &crm);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"rows\": 200"), "{}", text(&out));

    // SIGKILL the server while uploads are in flight, three times; each restart is a new enclave
    // key, which the old pinned certificate refuses.
    for (round, delay_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let (flight, room2, cert2, crm2) = (server.flight.clone(), room.clone(), cert.clone(), crm.clone());
        let uploads = std::thread::spawn(move || {
            for _ in 0..20 {
                if !upload(&flight, &room2, &cert2, &crm2).status.success() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        uploads.join().unwrap();
        server = serve(dir.path());
        let out = upload(&server.flight, &room, &cert, &crm);
        assert!(!out.status.success(), "round {round}: the restarted server has a new key");
        assert!(text(&out).contains("not the attested enclave's"), "{}", text(&out));
        let out = attest(&server, &cert);
        assert!(out.status.success(), "{}", text(&out));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let log = dir.path().join("data/rooms").join(&room).join("audit.jsonl");
    let out = verify_log(&log);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("VERIFIED") && !report.contains("NOT VERIFIED"), "{report}");
    assert_eq!(report.matches("enclave key of entry").count(), 4, "one key per start: {report}");
    assert!(report.contains("[pass] hash chain and signatures"), "{report}");

    // An edited entry is caught, offline.
    let tampered = dir.path().join("tampered.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&tampered, original.replacen("\"rows\":200", "\"rows\":201", 1)).unwrap();
    let out = verify_log(&tampered);
    assert!(!out.status.success());
    assert!(text(&out).contains("was altered"), "{}", text(&out));
}

/// An example key file (public example keys).
fn example_key(who: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/keys/{who}.key.pem"))
}

/// `sealroom proposal <args>` as `who` (signing with its example key) against `server`.
fn proposal(server: &Server, cert: &Path, room: &str, who: &str, args: &[&str]) -> Output {
    bin()
        .arg("proposal")
        .args(args)
        .args(["--rest", &server.rest, "--room", room, "--participant", who])
        .arg("--key")
        .arg(example_key(who))
        .arg("--enclave-cert")
        .arg(cert)
        .output()
        .unwrap()
}

#[test]
fn proposals_are_made_signed_and_adopted_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    // The example room, made interactive; the proposal raises news's k threshold from 50 to 150.
    let example = std::fs::read_to_string(example_room()).unwrap();
    let room_file = dir.path().join("room.yaml");
    std::fs::write(&room_file, format!("{example}\ngovernance: {{ interactive: true }}\n")).unwrap();
    let next = dir.path().join("room-v2.yaml");
    let raised = example.replace("{ set_by: news, k: 50 }", "{ set_by: news, k: 150 }");
    assert_ne!(raised, example, "the example room's news threshold moved; update this test");
    std::fs::write(&next, format!("{raised}\ngovernance: {{ interactive: true }}\n")).unwrap();
    let room = String::from_utf8(bin().args(["room", "id"]).arg(&room_file).output().unwrap().stdout).unwrap();
    let room = room.trim().to_owned();

    let cert = dir.path().join("enclave.pem");
    let mut server = serve_room(dir.path(), &room_file);
    let out = attest_room(&server, &cert, &room_file);
    assert!(out.status.success(), "{}", text(&out));

    let base = ["propose", "--room-file", next.to_str().unwrap(), "--base-version", "1"];
    let out = proposal(&server, &cert, &room, "acme", &[&base[..], &["--approve", "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["awaiting"], serde_json::json!(["news"]), "acme approved its own proposal: {created}");

    let out = proposal(&server, &cert, &room, "news", &["list"]);
    assert!(
        out.status.success() && text(&out).contains(&id) && text(&out).contains("awaiting: news"),
        "{}",
        text(&out)
    );
    let out = proposal(&server, &cert, &room, "news", &["show", "--id", &id]);
    assert!(text(&out).contains("k: 150") && text(&out).contains("effective k 100 → 150"), "{}", text(&out));

    // The auditor owns no data: its signed approval is refused.
    let out = proposal(&server, &cert, &room, "auditor", &["approve", "--id", &id]);
    assert!(!out.status.success() && text(&out).contains("owns no data"), "{}", text(&out));
    let out = proposal(&server, &cert, &room, "news", &["approve", "--id", &id]);
    assert!(out.status.success() && text(&out).contains("(adopted"), "{}", text(&out));

    // Proposing against the version it replaced is refused, naming the version in force.
    let out = proposal(&server, &cert, &room, "acme", &base);
    assert!(!out.status.success() && text(&out).contains("at version 2"), "{}", text(&out));
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // An auditor replays the change offline: the log and the first room file are enough.
    let log = dir.path().join("data").join("rooms").join(&room).join("audit.jsonl");
    let out = bin().args(["audit", "verify", "--log"]).arg(&log).arg("--room-file").arg(&room_file).output().unwrap();
    let report = text(&out);
    assert!(out.status.success() && report.contains("[pass] governance: 1 proposals, 2 signed decisions"), "{report}");
    assert!(report.contains("version 2 in force"), "{report}");
}
