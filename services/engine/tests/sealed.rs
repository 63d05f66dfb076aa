//! Sealed storage: nothing a participant uploaded or the engine computed is readable in the data
//! directory, and any file changed, swapped or cut outside the enclave is refused with an error that
//! names it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use sealroom_engine::Channel;

fn emails(prefix: &str, n: usize) -> RecordBatch {
    let values: StringArray = (0..n).map(|i| Some(common::digest(&format!("{prefix}{i}@example.com")))).collect();
    RecordBatch::try_from_iter([("email", Arc::new(values) as _)]).unwrap()
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

fn find(dir: &Path, ends_with: &str) -> PathBuf {
    files(dir).into_iter().find(|p| p.to_string_lossy().ends_with(ends_with)).unwrap()
}

#[tokio::test]
async fn storage_is_sealed_and_tampering_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let room = common::email_room("", "");
    let engine = common::open(dir.path(), vec![room.clone()], vec![]).await;
    common::upload(&engine, "adv", "crm", vec![emails("p", 300)]).await.unwrap();
    common::upload(&engine, "pub", "users", vec![emails("p", 400)]).await.unwrap();
    let first = common::run(&engine, "adv", "overlap").await;
    let analyst = common::caller(&engine, "adv");
    engine.run(&analyst, "overlap").await.unwrap();
    drop(engine);

    // No uploaded value, row count or result is in the clear anywhere but the audit log (which
    // holds only digests and counts, signed) and the contract.
    let uploaded = common::digest("p7@example.com");
    for file in files(dir.path()) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&uploaded), "{} holds an uploaded value", file.display());
        if !["audit.jsonl", "contract.pb", "sealing.key"].contains(&name.as_str()) {
            assert!(bytes.starts_with(b"SRSEAL01"), "{} is not sealed", file.display());
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sealing.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A restart reads everything back (same key file).
    let engine = common::open(dir.path(), vec![room.clone()], vec![]).await;
    let analyst = common::caller(&engine, "adv");
    let again = engine.release(&analyst, "overlap", Some(first.run_id()), Channel::Rest).unwrap();
    assert_eq!(again.json()["sections"], first.json()["sections"]);
    assert!(again.json()["sections"].to_string().contains("300"), "{}", again.json());
    drop(engine);

    // Two run files swapped (each is valid, under the other's name): both refused.
    let runs: Vec<PathBuf> =
        files(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains("/runs/overlap/")).collect();
    let (a, b) = {
        let mut json: Vec<&PathBuf> = runs.iter().filter(|p| p.extension().unwrap() == "json").collect();
        json.sort();
        (json[0].clone(), json[1].clone())
    };
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &bytes_b).unwrap();
    std::fs::write(&b, &bytes_a).unwrap();
    let err = common::try_open(dir.path(), vec![room.clone()], vec![]).await.unwrap_err().to_string();
    assert!(err.contains("failed its integrity check") && err.contains(".json"), "{err}");
    std::fs::write(&a, &bytes_a).unwrap();
    std::fs::write(&b, &bytes_b).unwrap();

    // One flipped byte in the stored dataset: the room opens (the manifest is intact) but the run
    // that reads it is refused, naming the file.
    let data = find(dir.path(), ".arrow");
    let original = std::fs::read(&data).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&data, &flipped).unwrap();
    let engine = common::open(dir.path(), vec![room.clone()], vec![]).await;
    let analyst = common::caller(&engine, "adv");
    let err = engine.run(&analyst, "overlap").await.unwrap_err().to_string();
    assert!(err.contains(&*data.file_name().unwrap().to_string_lossy()) && err.contains("integrity"), "{err}");
    drop(engine);
    // Cut short: refused as well.
    std::fs::write(&data, &original[..original.len() - 1]).unwrap();
    let engine = common::open(dir.path(), vec![room.clone()], vec![]).await;
    let analyst = common::caller(&engine, "adv");
    assert!(engine.run(&analyst, "overlap").await.unwrap_err().to_string().contains("integrity"));
    drop(engine);
    std::fs::write(&data, &original).unwrap();

    // A manifest replaced by a plaintext one (an operator editing row counts): the room does not open.
    let manifest = find(dir.path(), "crm/current.json");
    let sealed_manifest = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, br#"{"table": "crm", "rows": 1}"#).unwrap();
    let err = common::try_open(dir.path(), vec![room.clone()], vec![]).await.unwrap_err().to_string();
    assert!(err.contains("current.json") && err.contains("no sealed-file header"), "{err}");
    std::fs::write(&manifest, sealed_manifest).unwrap();
    common::open(dir.path(), vec![room.clone()], vec![]).await;

    // Another sealing key (another enclave, or a lost key file): nothing unseals.
    std::fs::remove_file(dir.path().join("sealing.key")).unwrap();
    let err = common::try_open(dir.path(), vec![room], vec![]).await.unwrap_err().to_string();
    assert!(err.contains("sealed under another key"), "{err}");
}
