//! The demo end to end (small), checked against an independent computation of the overlap from the
//! raw synthetic data; and the binary's room commands.

use std::collections::HashSet;

use sealroom_cli::demo::{DemoOptions, run};
use sealroom_loadtest::synth::{SynthConfig, generate};
use sealroom_matching::hash::sha256_hex;
use sealroom_matching::normalize;

#[tokio::test]
async fn the_demo_releases_the_true_overlap_and_writes_the_activation() {
    let dir = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        dir: dir.path().join("demo"),
        advertisers: 2_000,
        publishers: 6_000,
        seed: 7,
        k: 50,
        keep_running: false,
        progress: false,
    };
    let outcome = run(&options).await.unwrap();

    // Independently: normalize and hash the raw CRM, match against the publisher's hashes.
    let data =
        generate(&SynthConfig { seed: 7, advertiser_rows: 2_000, publisher_rows: 6_000, ..SynthConfig::default() });
    let us = normalize::region("US").unwrap();
    let pub_emails: HashSet<&str> = data.publisher.iter().filter_map(|p| p.email_sha256.as_deref()).collect();
    let pub_phones: HashSet<&str> = data.publisher.iter().filter_map(|p| p.phone_sha256.as_deref()).collect();
    let matched = data
        .crm
        .iter()
        .filter(|c| {
            let e = c.email.as_deref().and_then(|e| normalize::email(e).ok()).map(|e| sha256_hex(e.as_bytes()));
            let p = c.phone.as_deref().and_then(|p| normalize::phone(p, us).ok()).map(|p| sha256_hex(p.as_bytes()));
            e.is_some_and(|e| pub_emails.contains(e.as_str())) || p.is_some_and(|p| pub_phones.contains(p.as_str()))
        })
        .count() as u64;
    assert!(matched > 400, "the synthetic overlap is large enough to be released: {matched}");
    let summary = &outcome.result["sections"][0]["rows"][0];
    assert_eq!(summary["matched_advertiser_individuals"]["value"], matched);
    assert_eq!(summary["advertiser_individuals"]["value"], 2_000);
    assert_eq!(summary["publisher_individuals"]["value"], 6_000);
    let segments = outcome.result["sections"][1]["rows"].as_array().unwrap();
    assert_eq!(segments.len(), 24);
    assert!(segments.iter().any(|s| s["overlap"]["suppressed"] == true), "tail segments are suppressed");
    assert!(segments.iter().any(|s| s["overlap"]["value"].as_u64().is_some_and(|v| v >= 50)));

    // Top affinity: the segments the synthetic customers over-index on lead, and every ranked
    // segment's audience and base reach k.
    let ranked: Vec<&serde_json::Value> = outcome.affinity["sections"][1]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rank"] != "withheld")
        .collect();
    assert!(!ranked.is_empty() && ranked.len() <= 10, "top 10 at most: {}", ranked.len());
    for r in &ranked {
        assert!(r["audience"]["value"].as_u64().unwrap() >= 50 && r["base"]["value"].as_u64().unwrap() >= 50);
    }
    let top3: Vec<&str> = ranked.iter().take(3).map(|r| r["segment"].as_str().unwrap()).collect();
    assert!(top3.contains(&"foodies"), "the affine segment ranks high: {top3:?}");
    let foodies = ranked.iter().find(|r| r["segment"] == "foodies").unwrap();
    assert!(foodies["index_low"]["value"].as_f64().unwrap() > 100.0, "{foodies}");

    // summary, by_segment and by_tier.
    assert_eq!(outcome.activation_files.len(), 3);
    let by_tier = &outcome.result["sections"][2];
    assert_eq!(by_tier["name"], "by_tier");
    let added: u64 = by_tier["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["added_advertiser_individuals"]["value"].as_u64())
        .sum();
    assert!(added <= matched, "the tiers add up to at most the overlap: {added} vs {matched}");
    let by_segment = outcome.activation_files.iter().find(|p| p.to_string_lossy().contains("by_segment")).unwrap();
    let text = std::fs::read_to_string(by_segment).unwrap();
    assert_eq!(text.lines().count(), 24);
    // The lookalike: the segments carry the planted affinity, so held-out AUC beats chance; the
    // audience Daily News took holds no matched customer.
    let quality = &outcome.lookalike["sections"][0]["rows"][0];
    let auc = quality["auc"]["value"].as_f64().unwrap();
    assert!(auc > 0.55 && auc <= 1.0, "{quality}");
    let taken = outcome.audience["audience"].as_u64().unwrap();
    assert!(taken >= 50, "{}", outcome.audience);
    // The sink wrote the audience and its deal, one file each.
    let location = outcome.audience["location"].as_str().unwrap();
    let files: Vec<&str> = location.split(", ").collect();
    let audience_file = files.iter().find(|f| f.contains("-audience-")).unwrap();
    let deal_file = files.iter().find(|f| f.contains("-deal-")).unwrap();
    let deal: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(deal_file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(deal["row"]["deal_id"], outcome.audience["deal_id"]);
    assert_eq!(deal["row"]["audience_size"], outcome.audience["audience"]);
    let text = std::fs::read_to_string(audience_file).unwrap();
    let users: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["row"]["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users.len() as u64, taken);
    let crm_hashes: HashSet<String> = data
        .crm
        .iter()
        .flat_map(|c| {
            let e = c.email.as_deref().and_then(|e| normalize::email(e).ok()).map(|e| sha256_hex(e.as_bytes()));
            let p = c.phone.as_deref().and_then(|p| normalize::phone(p, us).ok()).map(|p| sha256_hex(p.as_bytes()));
            [e, p].into_iter().flatten()
        })
        .collect();
    let seed: HashSet<&str> = data
        .publisher
        .iter()
        .filter(|p| [&p.email_sha256, &p.phone_sha256].into_iter().flatten().any(|h| crm_hashes.contains(h)))
        .map(|p| p.user_id.as_str())
        .collect();
    assert_eq!(quality["seed_individuals"]["value"], seed.len(), "the seed is the matched readers");
    assert!(users.iter().all(|u| !seed.contains(u.as_str())), "a matched customer was in the audience");

    // The raw CRM never reached the enclave's storage: no stored file contains a raw email.
    let raw = data.crm.iter().find_map(|c| c.email.clone()).unwrap();
    for entry in walk(&options.dir.join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(raw.trim().len()).any(|w| w == raw.trim().as_bytes()), "{}", entry.display());
    }
    // Running the demo again replaces its own directory.
    run(&DemoOptions { advertisers: 200, publishers: 400, k: 2, ..options.clone() }).await.unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_demo_refuses_to_replace_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = DemoOptions {
        dir: dir.path().to_owned(),
        advertisers: 10,
        publishers: 10,
        seed: 1,
        k: 2,
        keep_running: false,
        progress: false,
    };
    let err = rt.block_on(run(&options)).unwrap_err().to_string();
    assert!(err.contains("is not a demo directory"), "{err}");
    assert!(dir.path().join("precious.txt").exists());
}

#[test]
fn room_commands_validate_and_print_the_id() {
    let bin = env!("CARGO_BIN_EXE_sealroom");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/room.yaml");
    let out = std::process::Command::new(bin).args(["room", "id", example]).output().unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(example).unwrap();
    let contract = sealroom_proto::RoomFile::parse(&text, "x").unwrap();
    assert_eq!(id.trim(), contract.room_id().as_str());

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, text.replace("owner: news", "owner: nobody")).unwrap();
    let out = std::process::Command::new(bin).args(["room", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("tables[1].owner: 'nobody' is not a participant of this room"), "{err}");

    // keygen: a private key file once, the public key printed for the room file.
    let key = dir.path().join("acme.key.pem");
    let out = std::process::Command::new(bin).args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("BEGIN PUBLIC KEY"));
    let out = std::process::Command::new(bin).args(["keygen", "--out"]).arg(&key).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("never overwritten"));

    // token: signed with the example's (public) acme key, for the example room, for 10 minutes.
    let example_key = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/keys/acme.key.pem");
    let out = std::process::Command::new(bin)
        .args(["token", "--key", example_key, "--participant", "acme", "--room-file", example, "--ttl", "10m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let issuer = sealroom_cli::credential::load_key(std::path::Path::new(example_key)).unwrap();
    let room_id = contract.room_id();
    let rules = sealroom_attest::token::TokenRules {
        room_id: room_id.as_str(),
        max_lifetime_seconds: 600,
        revoked: &[],
        now: sealroom_attest::token::unix_now(),
    };
    let claims = sealroom_attest::token::verify_token(token.trim(), issuer.public_key(), &rules).unwrap();
    assert_eq!((claims.sub.as_str(), claims.exp - claims.iat), ("acme", 600));
}
