//! The room file: parsing, validation messages, canonical ids.

use proptest::prelude::*;
use sealroom_proto::room::v1::{Platform, RoomContract};
use sealroom_proto::{RoomFile, RoomFileError};

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/room.yaml")).unwrap()
}

fn invalid(text: &str) -> String {
    match RoomFile::parse(text, "room.yaml") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn the_example_room_file_is_valid() {
    let contract = RoomFile::parse(&example(), "examples/room.yaml").unwrap();
    assert_eq!(contract.effective_k(), 100, "the strictest threshold wins");
    assert!(contract.allows_simulated_tee());
    assert_eq!(contract.participants.len(), 3);
    assert_eq!(contract.room_id().as_str().len(), 64);
}

#[test]
fn default_k_is_100_and_strictest_wins() {
    let text = example().replace("- { set_by: acme, k: 100 }", "- { set_by: acme, k: 20 }");
    assert_eq!(RoomFile::parse(&text, "r").unwrap().effective_k(), 50);
    let start = text.find("privacy:").unwrap();
    let end = text.find("attestation:").unwrap();
    let without = format!("{}{}", &text[..start], &text[end..]);
    assert_eq!(RoomFile::parse(&without, "r").unwrap().effective_k(), 100);
}

#[test]
fn yaml_contract_yaml_round_trip_keeps_the_id() {
    let contract = RoomFile::parse(&example(), "r").unwrap();
    let file = RoomFile::from_contract(&contract);
    let again = RoomFile::parse(&file.to_yaml(), "r").unwrap();
    assert_eq!(contract.room_id(), again.room_id());
    assert_eq!(contract, again);
}

#[test]
fn syntax_errors_name_the_field() {
    let err =
        invalid(&example().replace("type: sha256, identifier: hashed_email", "type: sha265, identifier: hashed_email"));
    assert!(err.starts_with("room.yaml: tables[0].columns[1].type: unknown variant `sha265`"), "{err}");
    let err = invalid(&example().replace("    owner: acme\n", "    owner: acme\n    ownr: x\n"));
    assert!(err.contains("unknown field `ownr`"), "{err}");
    assert!(err.contains("tables[0]"), "{err}");
}

#[test]
fn semantic_errors_name_every_field_and_say_what_to_do() {
    let text = example_without_lookalike()
        .replace("owner: news", "owner: newz")
        .replacen("run_by: [acme]", "run_by: [auditor]", 1)
        .replace("{ set_by: news, k: 50 }", "{ set_by: news, k: 1 }")
        .replace("name: segments, type: string_list", "name: segments, type: int64");
    let err = invalid(&text);
    let RoomFileError::Invalid { errors, .. } = RoomFile::parse(&text, "room.yaml").unwrap_err() else {
        panic!("expected validation errors")
    };
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["tables[1].owner", "tables[1].columns[3].type", "computations[0].run_by[0]", "privacy.k_thresholds[1].k"],
        "{err}"
    );
    assert!(err.contains("'newz' is not a participant of this room (participants: acme, news, auditor)"), "{err}");
    assert!(err.contains("a segment column must have type string or string_list, not int64"), "{err}");
    assert!(err.contains("does not declare the role analyst"), "{err}");
    assert!(err.contains("k must be between 2 and 1000000"), "{err}");
}

/// The public issuer keys of the example's acme and news (one-line base64 of the DER SPKI).
const ACME_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXi2wNU4k8ua8iPexYuAZ0wNfrfqWbCEHjYNpv+jAX5xJ13oQxqyXuqHculABPi0M1URNM83h0nTd/39MC4w5Jg==";
const NEWS_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8Rngo6ZOvnLtxaabLh55h9UskgvyEiacutFjIsB5yHGOSYlzwhKjOYtlNGQYwtRYayDvNl6fr0KsbEfrCbF6sA==";

#[test]
fn credentials_are_p256_issuer_keys_and_pem_or_base64_is_the_same_contract() {
    let pem_room = RoomFile::parse(&example(), "room.yaml").unwrap();
    let acme = pem_room.participants.iter().find(|p| p.id == "acme").unwrap();
    assert_eq!(acme.credential.as_ref().unwrap().issuer_keys, [ACME_KEY]);
    // The same key written as one line of base64 is the same contract.
    let start = example().find("-----BEGIN PUBLIC KEY-----").unwrap();
    let end = example()[start..].find("-----END PUBLIC KEY-----").unwrap() + start + "-----END PUBLIC KEY-----".len();
    let one_line = format!("{}{ACME_KEY}{}", &example()[..start], &example()[end..]);
    assert_eq!(RoomFile::parse(&one_line, "room.yaml").unwrap().room_id(), pem_room.room_id());
    // The file form renders the keys as PEM again, and parses back to the same room.
    let back = RoomFile::from_contract(&pem_room).to_yaml();
    assert!(back.contains("-----BEGIN PUBLIC KEY-----"), "{back}");
    assert_eq!(RoomFile::parse(&back, "again.yaml").unwrap().room_id(), pem_room.room_id());

    // A bearer token (or its digest) where the key belongs.
    let digest = "691a43a0d9ba5252af78013aa09593ac56850a1397d25a9877449978f8f8bad7";
    let token = format!("{}{digest}{}", &example()[..start], &example()[end..]);
    let err = invalid(&token);
    assert!(err.contains("participants[0].credential.issuer_keys[0]: not an ECDSA P-256 public key"), "{err}");
    let err = invalid(&format!("{}not base64!{}", &example()[..start], &example()[end..]));
    assert!(err.contains("not a PEM public key or its base64 body"), "{err}");
    // The old credential field is gone: a clear error, not a silent ignore.
    let old = example().replacen("issuer_keys:", "bearer_token_sha256: 00\n      issuer_keys:", 1);
    assert!(
        RoomFile::parse(&old, "room.yaml").unwrap_err().to_string().contains("unknown field `bearer_token_sha256`")
    );
    // Two participants with one key: one could act as the other.
    let shared = example().replace(&NEWS_KEY[..64], &ACME_KEY[..64]).replace(&NEWS_KEY[64..], &ACME_KEY[64..]);
    let err = invalid(&shared);
    assert!(err.contains("participants 'acme' and 'news' share an issuer key"), "{err}");
    // The token lifetime limit.
    let err = invalid(&format!("{}\nauthentication: {{ max_token_lifetime_seconds: 10 }}\n", example()));
    assert!(err.contains("authentication.max_token_lifetime_seconds: 10 is out of range"), "{err}");
    let day =
        RoomFile::parse(&format!("{}\nauthentication: {{ max_token_lifetime_seconds: 86400 }}\n", example()), "r")
            .unwrap();
    assert_eq!(day.room_id(), pem_room.room_id(), "the default lifetime, written out, is the same contract");
}

#[test]
fn overlap_needs_shared_keys_and_known_tables() {
    let err = invalid(&example().replace("publisher_table: readers", "publisher_table: reader"));
    assert!(
        err.contains("computations[0].overlap.publisher_table: no table named 'reader' (tables: crm, readers)"),
        "{err}"
    );
    let text = example().replace(
        "      - { name: phone_sha256, type: sha256, identifier: hashed_phone, nullable: true }\n      - { name: segments",
        "      - { name: segments",
    );
    let err = invalid(&text);
    assert!(err.contains("table 'readers' has no hashed_phone column to match on"), "{err}");
}

#[test]
fn affinity_is_a_kind_with_its_own_checks() {
    let contract = RoomFile::parse(&example(), "r").unwrap();
    let affinity = contract.computations.iter().find(|c| c.name == "top_affinity").unwrap();
    assert_eq!(affinity.kind_name(), "affinity");
    assert_eq!(affinity.input_tables(), vec!["crm", "readers"]);
    // A level not offered, too many segments, a misspelt matching option: each named.
    let err = invalid(&example().replace("confidence: 0.9", "confidence: 0.97").replace("top: 20", "top: 20000"));
    assert!(err.contains("affinity.confidence: confidence 0.97 is not offered"), "{err}");
    assert!(err.contains("affinity.top: top 20000"), "{err}");
    let err = invalid(&example().replace("      confidence: 0.9", "      confidence: 0.9\n      overlap: {}"));
    assert!(err.contains("unknown field `overlap`"), "{err}");
    // Nothing to rank: the publisher table has no segment column.
    let text =
        example().replace("      - { name: segments, type: string_list, identifier: segment, nullable: true }\n", "");
    assert_ne!(text, example());
    let err = invalid(&text);
    assert!(err.contains("has no segment column: an affinity ranks publisher segments"), "{err}");
    // Both kinds in one computation.
    let err = invalid(&example().replace(
        "    affinity:\n",
        "    overlap: { advertiser_table: crm, publisher_table: readers }\n    affinity:\n",
    ));
    assert!(
        err.contains("has more than one of `overlap:`, `affinity:`, `measurement:`, `sql:` and `lookalike:`"),
        "{err}"
    );
}

#[test]
fn lookalike_is_a_kind_whose_model_and_audience_go_only_where_the_contract_says() {
    let contract = RoomFile::parse(&example(), "r").unwrap();
    let lookalike = contract.computation("lookalike").unwrap();
    assert_eq!(lookalike.kind_name(), "lookalike");
    assert_eq!(lookalike.input_tables(), vec!["crm", "readers"]);
    let spec = lookalike.lookalike().unwrap();
    assert_eq!((spec.model_to.as_slice(), spec.audience_to.as_str()), (&["acme".to_owned()][..], "news"));
    // Round trip keeps every field (and `model: logistic` is the default, canonically empty).
    let text = example()
        .replace("      audience_to: news\n", "      audience_to: news\n      model: logistic\n      seed: 9\n");
    let with_seed = RoomFile::parse(&text, "r").unwrap();
    assert_ne!(with_seed.room_id(), contract.room_id(), "the seed is part of the contract");
    let again = RoomFile::parse(&RoomFile::from_contract(&with_seed).to_yaml(), "r").unwrap();
    assert_eq!(again.room_id(), with_seed.room_id());
    let text = example().replace("      audience_to: news\n", "      audience_to: news\n      seed: 9\n");
    assert_eq!(RoomFile::parse(&text, "r").unwrap().room_id(), with_seed.room_id());

    for (from, to, expected) in [
        ("      model_to: [acme]\n", "      model_to: [acme, news]\n", "model_to[1]: 'news' takes the audience"),
        ("      model_to: [acme]\n", "      model_to: [auditor]\n", "does not declare the role analyst"),
        ("      audience_to: news\n", "      audience_to: acme\n", "only its owner 'news' may take it"),
        ("      audience_to: news\n", "      audience_to: news\n      model: svm\n", "'svm' is not a lookalike model"),
        (
            "      audience_to: news\n",
            "      audience_to: news\n      features: [segments, email_sha256, shoe_size]\n",
            "features[1]: column 'email_sha256' of 'readers' is an identifier (hashed_email)",
        ),
        (
            "      audience_to: news\n",
            "      audience_to: news\n      features: [shoe_size]\n",
            "features[0]: 'shoe_size' is not a column of the publisher table 'readers' (features: segments)",
        ),
        ("    results_to: [acme, news] # news", "    results_to: [acme] # news", "must also be in results_to"),
    ] {
        let text = example().replacen(from, to, 1);
        assert_ne!(text, example(), "{from}");
        let err = invalid(&text);
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // No feature column at all.
    let err = invalid(
        &example().replace("      - { name: segments, type: string_list, identifier: segment, nullable: true }\n", ""),
    );
    assert!(err.contains("lookalike.features: table 'readers' has no column to train on"), "{err}");
    // Not under differential privacy.
    let err = invalid(&with_dp_on(&example(), "{ epsilon_per_run: 1, budget_per_participant: 10 }"));
    assert!(err.contains("lookalike: lookalike models cannot be trained under differential privacy"), "{err}");
}

/// A room with a measurement; `tweak` edits its text.
fn measurement_room(tweak: impl Fn(String) -> String) -> Result<RoomContract, RoomFileError> {
    let text = format!(
        r#"
name: measurement
participants:
  - {{ id: adv, name: A, roles: [data_owner, analyst], credential: {{ issuer_keys: [{ACME_KEY}] }} }}
  - {{ id: pub, name: P, roles: [data_owner], credential: {{ issuer_keys: [{NEWS_KEY}] }} }}
tables:
  - name: crm
    owner: adv
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email }}
  - name: conversions
    owner: adv
    columns:
      - {{ name: customer_id, type: string, identifier: user_id }}
  - name: users
    owner: pub
    columns:
      - {{ name: user_id, type: string, identifier: user_id }}
      - {{ name: email, type: sha256, identifier: hashed_email }}
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
attestation: {{ allow_simulated: true }}
"#
    );
    RoomFile::parse(&tweak(text), "m.yaml")
}

#[test]
fn measurement_tables_must_belong_to_the_right_side_and_join() {
    let contract = measurement_room(|t| t).unwrap();
    let m = &contract.computations[0];
    assert_eq!(m.kind_name(), "measurement");
    assert_eq!(m.input_tables(), vec!["crm", "users", "impressions", "conversions"]);
    let err = |tweak: &dyn Fn(String) -> String| match measurement_room(tweak) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    };
    // The advertiser cannot supply the exposure log.
    let e = err(&|t| t.replace("exposure_table: impressions", "exposure_table: conversions"));
    assert!(
        e.contains(
            "measurement.exposure_table: table 'conversions' is owned by 'adv' but the publisher table 'users' by 'pub'"
        ),
        "{e}"
    );
    assert!(e.contains("needs exactly one column with `identifier: campaign`"), "{e}");
    // A conversion table must join the advertiser's user ids.
    let e = err(&|t| {
        t.replace(
            "      - { name: customer_id, type: string, identifier: user_id }\n      - { name: email",
            "      - { name: email",
        )
    });
    assert!(
        e.contains("table 'crm' has no user_id column: the rows they join must be joined on the advertiser's user id"),
        "{e}"
    );
    let e = err(&|t| t.replace("conversion_table: conversions", "conversion_table: nowhere\n      confidence: 0.5"));
    assert!(e.contains("measurement.conversion_table: unknown table 'nowhere'"), "{e}");
    assert!(e.contains("confidence 0.5 is not offered"), "{e}");
    // Reach only: no conversion table.
    assert!(measurement_room(|t| t.replace("      conversion_table: conversions\n", "")).is_ok());
}

fn shuffled(contract: &RoomContract, seed: u64) -> RoomContract {
    let mut c = contract.clone();
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    let n = c.participants.len();
    for i in (1..n).rev() {
        c.participants.swap(i, next() % (i + 1));
    }
    c.tables.reverse();
    for p in &mut c.participants {
        p.roles.reverse();
    }
    for comp in &mut c.computations {
        comp.results_to.reverse();
        comp.results_to.push(comp.results_to[0].clone());
    }
    if let Some(p) = &mut c.privacy {
        p.k_thresholds.reverse();
    }
    c
}

proptest! {
    /// The id depends on the meaning of the contract, never on the order of unordered collections.
    #[test]
    fn room_id_is_order_insensitive(seed in any::<u64>()) {
        let contract = RoomFile::parse(&example(), "r").unwrap();
        prop_assert_eq!(shuffled(&contract, seed).room_id(), contract.room_id());
    }

    /// Changing k changes the id (the contract is the law: a different law is a different room).
    #[test]
    fn room_id_changes_with_k(k in 2u32..100_000) {
        prop_assume!(k != 100);
        let base = RoomFile::parse(&example(), "r").unwrap();
        let text = example().replace("{ set_by: acme, k: 100 }", &format!("{{ set_by: acme, k: {k} }}"));
        let changed = RoomFile::parse(&text, "r").unwrap();
        prop_assert_ne!(changed.room_id(), base.room_id());
    }
}

/// The example without its lookalike computation (which differential privacy refuses).
fn example_without_lookalike() -> String {
    let text = example();
    let start = text.find("  - name: lookalike\n").unwrap();
    let end = text.find("\nprivacy:").unwrap();
    format!("{}{}", &text[..start], &text[end..])
}

/// `text` with `privacy.differential_privacy` set to `dp` (YAML flow mapping).
fn with_dp_on(text: &str, dp: &str) -> String {
    let out = text.replace("privacy:\n", &format!("privacy:\n  differential_privacy: {dp}\n"));
    assert_ne!(out, text);
    out
}

/// The example (without its lookalike) with `privacy.differential_privacy` set to `dp`.
fn with_dp(dp: &str) -> String {
    with_dp_on(&example_without_lookalike(), dp)
}

#[test]
fn differential_privacy_settings_round_trip_and_absurd_epsilon_is_refused() {
    let contract = RoomFile::parse(
        &with_dp("{ epsilon_per_run: 0.5, budget_per_participant: 5, max_segments_per_person: 4 }"),
        "r",
    )
    .unwrap();
    let dp = contract.differential_privacy().unwrap();
    assert_eq!(
        (dp.epsilon_per_run_micro, dp.budget_per_participant_micro, dp.segments_per_person()),
        (500_000, 5_000_000, 4)
    );
    let again = RoomFile::parse(&RoomFile::from_contract(&contract).to_yaml(), "r").unwrap();
    assert_eq!(contract.room_id(), again.room_id());
    assert_ne!(contract.room_id(), RoomFile::parse(&example(), "r").unwrap().room_id(), "ε is part of the contract");
    let default_cap = RoomFile::parse(&with_dp("{ epsilon_per_run: 1, budget_per_participant: 1 }"), "r").unwrap();
    assert_eq!(default_cap.differential_privacy().unwrap().segments_per_person(), 10);

    for (dp, expected) in [
        ("{ epsilon_per_run: -1, budget_per_participant: 5 }", "epsilon_per_run: ε must be greater than 0"),
        ("{ epsilon_per_run: 0, budget_per_participant: 5 }", "epsilon_per_run: ε must be greater than 0"),
        ("{ epsilon_per_run: .nan, budget_per_participant: 5 }", "epsilon_per_run: ε must be greater than 0"),
        ("{ epsilon_per_run: 50, budget_per_participant: 60 }", "ε = 50 per run is too large"),
        ("{ epsilon_per_run: 1e300, budget_per_participant: 60 }", "per run is too large"),
        ("{ epsilon_per_run: 1, budget_per_participant: 5000 }", "a total ε of 5000 protects next to nothing"),
        ("{ epsilon_per_run: 1, budget_per_participant: 0.5 }", "smaller than one run's ε"),
        ("{ epsilon_per_run: 1, budget_per_participant: 2, max_segments_per_person: 5000 }", "at most 1000"),
        ("{ epsilon_per_run: 1 }", "missing field `budget_per_participant`"),
        ("{ epsilon: 1, budget_per_participant: 2 }", "unknown field `epsilon`"),
    ] {
        let err = invalid(&with_dp(dp));
        assert!(err.contains(expected), "{dp}: {err}");
    }
}

#[test]
fn differential_privacy_refuses_computations_that_cannot_bound_one_person() {
    let dp = "  differential_privacy: { epsilon_per_run: 1, budget_per_participant: 10 }\n";
    let err = measurement_room(|t| t.replace("attestation:", &format!("privacy:\n{dp}attestation:")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "computations[0].measurement.conversion_table: conversion lift cannot be measured under differential \
             privacy"
        ),
        "{err}"
    );
    // Reach and frequency alone are allowed.
    let with_dp_only = |t: String| {
        t.replace("      conversion_table: conversions\n", "")
            .replace("attestation:", &format!("privacy:\n{dp}attestation:"))
    };
    assert!(measurement_room(with_dp_only).is_ok());
    let fuzzy = with_dp("{ epsilon_per_run: 1, budget_per_participant: 10 }").replacen(
        "      match_on: [hashed_email, hashed_phone]\n",
        "      match_on: [hashed_email, hashed_phone]\n      fuzzy: {}\n",
        1,
    );
    let sql = with_dp("{ epsilon_per_run: 1, budget_per_participant: 10 }").replacen(
        "    affinity:\n      matching:\n        advertiser_table: crm\n        publisher_table: readers\n        match_on: [hashed_email, hashed_phone]\n      confidence: 0.9\n      top: 20\n",
        "    sql:\n      query: SELECT COUNT(*) AS n FROM readers\n      tables: [readers]\n",
        1,
    );
    assert!(sql.contains("sql:"));
    let err = invalid(&sql);
    assert!(err.contains("sql: SQL computations do not support differential privacy yet"), "{err}");
    let err = invalid(&fuzzy);
    assert!(
        err.contains("computations[0].overlap.fuzzy: fuzzy matching cannot be used under differential privacy"),
        "{err}"
    );
}

#[test]
fn attestation_policy_round_trips_and_bad_tcb_settings_are_refused() {
    let attestation = "attestation:\n  allow_simulated: false\n  accepted_measurements:\n    - { platform: amd_sev_snp, \
                       measurement: AABB00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000 }\n  \
                       min_snp_tcb: { bootloader: 3, tee: 0, snp: 8, microcode: 115 }\n  \
                       accepted_tcb_statuses: [UpToDate, SWHardeningNeeded, UpToDate]\n";
    let text = example();
    let start = text.find("attestation:").unwrap();
    let with = |a: &str| format!("{}{a}", &text[..start]);
    let contract = RoomFile::parse(&with(attestation), "r").unwrap();
    let a = contract.attestation.as_ref().unwrap();
    assert_eq!(a.min_snp_tcb.as_ref().unwrap().microcode, 115);
    let again = RoomFile::parse(&RoomFile::from_contract(&contract).to_yaml(), "r").unwrap();
    assert_eq!(contract.room_id(), again.room_id());
    // Status order and repeats do not change the room; the minimum TCB does.
    let reordered =
        with(&attestation.replace("[UpToDate, SWHardeningNeeded, UpToDate]", "[SWHardeningNeeded, UpToDate]"));
    assert_eq!(RoomFile::parse(&reordered, "r").unwrap().room_id(), contract.room_id());
    let newer = with(&attestation.replace("microcode: 115", "microcode: 116"));
    assert_ne!(RoomFile::parse(&newer, "r").unwrap().room_id(), contract.room_id());

    let err = invalid(&with(&attestation.replace("SWHardeningNeeded", "Fine")));
    assert!(err.contains("attestation.accepted_tcb_statuses[1]") && err.contains("unknown TCB status 'Fine'"), "{err}");
    let err = invalid(&with(&attestation.replace("snp: 8", "snp: 300")));
    assert!(err.contains("attestation.min_snp_tcb.snp"), "{err}");
}

#[test]
fn a_minimum_turin_fmc_round_trips_and_is_a_patch_level() {
    let attestation = |tcb: &str| {
        format!(
            "attestation:\n  accepted_measurements:\n    - {{ platform: amd_sev_snp, measurement: {} }}\n  \
             min_snp_tcb: {tcb}\n",
            "ab".repeat(48)
        )
    };
    let text = example();
    let start = text.find("attestation:").unwrap();
    let with = |tcb: &str| format!("{}{}", &text[..start], attestation(tcb));
    let contract = RoomFile::parse(&with("{ bootloader: 1, tee: 0, snp: 5, microcode: 76, fmc: 2 }"), "r").unwrap();
    let tcb = contract.attestation.as_ref().unwrap().min_snp_tcb.unwrap();
    assert_eq!((tcb.bootloader, tcb.snp, tcb.microcode, tcb.fmc), (1, 5, 76, 2));
    // The file written back keeps the FMC, and so the room id.
    let yaml = RoomFile::from_contract(&contract).to_yaml();
    assert!(yaml.contains("fmc: 2"), "{yaml}");
    let again = RoomFile::parse(&yaml, "r").unwrap();
    assert_eq!(again.room_id(), contract.room_id());
    assert_eq!(again.attestation.as_ref().unwrap().min_snp_tcb.unwrap().fmc, 2);
    // The FMC is part of the contract: another minimum is another room.
    let other = RoomFile::parse(&with("{ bootloader: 1, tee: 0, snp: 5, microcode: 76, fmc: 3 }"), "r").unwrap();
    assert_ne!(other.room_id(), contract.room_id());
    // No FMC and `fmc: 0` (no minimum) are the same contract, and the room id of a contract written
    // before the field existed, which is not written back.
    let without = RoomFile::parse(&with("{ bootloader: 1, tee: 0, snp: 5, microcode: 76 }"), "r").unwrap();
    let zero = RoomFile::parse(&with("{ bootloader: 1, tee: 0, snp: 5, microcode: 76, fmc: 0 }"), "r").unwrap();
    assert_eq!(zero.room_id(), without.room_id());
    assert!(!RoomFile::from_contract(&zero).to_yaml().contains("fmc"));
    // A patch level is 0..255.
    let err = invalid(&with("{ bootloader: 1, tee: 0, snp: 5, microcode: 76, fmc: 300 }"));
    assert!(err.contains("attestation.min_snp_tcb.fmc: is a security patch level: 0..255"), "{err}");
    assert!(!err.contains("min_snp_tcb.snp"), "{err}");
}

#[test]
fn tdx_rtmrs_and_sgx_signer_rules_are_validated_and_canonical() {
    let (mrtd, r0, r1) = ("aa".repeat(48), "0B".repeat(48), "1c".repeat(48));
    let mrsigner = "cc".repeat(32);
    let text = example();
    let start = text.find("attestation:").unwrap();
    let with = |measurements: &str| {
        format!("{}attestation:\n  allow_simulated: true\n  accepted_measurements:\n{measurements}", &text[..start])
    };
    let tdx = |rtmrs: &str| format!("    - {{ platform: intel_tdx, measurement: {mrtd}, rtmrs: {rtmrs} }}\n");
    let sgx = |extra: &str| format!("    - {{ platform: intel_sgx, measurement: {mrsigner}{extra} }}\n");

    let pinned =
        RoomFile::parse(&with(&(tdx(&format!("[{r0}, '', {r1}]")) + &sgx(", isv_prod_id: 7, min_isv_svn: 3"))), "r")
            .unwrap_or_else(|e| panic!("{e}"));
    let a = pinned.attestation.as_ref().unwrap();
    let m = a.accepted_measurements.iter().find(|m| m.platform == Platform::IntelTdx as i32).unwrap();
    assert_eq!(m.rtmrs, [r0.clone(), String::new(), r1.clone()]);
    let s = a.accepted_measurements.iter().find(|m| m.platform == Platform::IntelSgx as i32).unwrap();
    assert_eq!((s.isv_prod_id, s.min_isv_svn), (7, 3));
    let again = RoomFile::parse(&RoomFile::from_contract(&pinned).to_yaml(), "r").unwrap();
    assert_eq!(again.room_id(), pinned.room_id());
    // Trailing free registers and case do not change the room; a pinned register does.
    let trailing =
        with(&(tdx(&format!("[{}, '', {r1}, '']", r0.to_lowercase())) + &sgx(", isv_prod_id: 7, min_isv_svn: 3")));
    assert_eq!(RoomFile::parse(&trailing, "r").unwrap().room_id(), pinned.room_id());
    let fewer = with(&(tdx(&format!("[{r0}]")) + &sgx(", isv_prod_id: 7, min_isv_svn: 3")));
    assert_ne!(RoomFile::parse(&fewer, "r").unwrap().room_id(), pinned.room_id());

    let err = invalid(&with(&tdx("[ab, '', '', '', '']")));
    assert!(err.contains("accepted_measurements[0].rtmrs: a TD has 4 RTMRs (0 to 3); 5 are given"), "{err}");
    assert!(err.contains("accepted_measurements[0].rtmrs[0]: must be 96 hex characters"), "{err}");
    let err = invalid(&with(&sgx(", isv_prod_id: 70000")));
    assert!(err.contains("isv_prod_id: 70000 does not fit SGX's 16 bits"), "{err}");
    let err = invalid(&with(&format!(
        "    - {{ platform: amd_sev_snp, measurement: {mrtd}, rtmrs: [{r0}], min_isv_svn: 2 }}\n"
    )));
    assert!(
        err.contains("rtmrs: RTMRs are Intel TDX registers") && err.contains("min_isv_svn: an SGX enclave's field"),
        "{err}"
    );
}

#[test]
fn governance_round_trips_and_an_immutable_room_keeps_its_id() {
    let fixed = RoomFile::parse(&example(), "r").unwrap();
    assert!(!fixed.is_interactive() && !fixed.in_development_mode());
    // Saying "not interactive" is saying nothing: the same room.
    let spelled = RoomFile::parse(&format!("{}\ngovernance: {{ interactive: false }}\n", example()), "r").unwrap();
    assert_eq!(spelled.room_id(), fixed.room_id());

    let dev = format!("{}\ngovernance: {{ interactive: true, development_mode: true }}\n", example());
    let contract = RoomFile::parse(&dev, "r").unwrap();
    assert!(contract.is_interactive() && contract.in_development_mode());
    assert_ne!(contract.room_id(), fixed.room_id(), "an interactive room is another room");
    let back = RoomFile::parse(&RoomFile::from_contract(&contract).to_yaml(), "r").unwrap();
    assert_eq!(back.room_id(), contract.room_id());

    let e = invalid(&format!("{}\ngovernance: {{ development_mode: true }}\n", example()));
    assert!(e.contains("governance.development_mode") && e.contains("interactive: true"), "{e}");
    let e = invalid(&format!("{}\ngovernance: {{ interactive: yes please }}\n", example()));
    assert!(e.contains("governance"), "{e}");
}
