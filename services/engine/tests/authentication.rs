//! The authentication root: participants' tokens are checked against the issuer keys the contract
//! names, and a contract change revokes keys and named tokens.

mod common;

use sealroom_attest::token::unix_now;
use sealroom_engine::Error;

fn unauthenticated(result: Result<sealroom_engine::Caller, Error>) -> String {
    match result {
        Err(Error::Unauthenticated(why)) => why,
        other => panic!("expected an authentication failure, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_are_checked_against_the_participants_issuer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), vec![common::email_room("", "")], vec![]).await;
    let room = engine.room_ids()[0].to_string();
    let adv = common::login(&engine, &room, "adv").unwrap();
    assert_eq!(adv.participant(), "adv");
    assert_eq!(common::login(&engine, &room, "pub").unwrap().participant(), "pub");

    // pub's key cannot speak for adv.
    let forged = common::issuer("pub").mint("adv", std::slice::from_ref(&room), 600, unix_now()).unwrap();
    let why = unauthenticated(engine.authenticate(&room, &forged));
    assert!(why.contains("names participant 'adv' but is signed by an issuer key of 'pub'"), "{why}");
    // A key the contract does not name.
    let why = unauthenticated(common::login(&engine, &room, "stranger"));
    assert!(why.contains("is not in room") && why.contains("contract"), "{why}");
    // A token for another room.
    let elsewhere = common::token(&"ab".repeat(32), "adv");
    assert!(unauthenticated(engine.authenticate(&room, &elsewhere)).contains("not for room"));
    // The default lifetime limit is one day.
    let long = common::issuer("adv").mint("adv", std::slice::from_ref(&room), 86_401, unix_now()).unwrap();
    assert!(unauthenticated(engine.authenticate(&room, &long)).contains("at most 86400 s"));
    // Expired, judged at a later time.
    let token = common::token(&room, "adv");
    let why = unauthenticated(engine.authenticate_at(&room, &token, unix_now() + 3 * 3600));
    assert!(why.contains("expired"), "{why}");
    // Not a JWT at all: the old bearer tokens.
    assert!(unauthenticated(engine.authenticate(&room, "acme-example-token-0123456789abcdef")).contains("not a JWT"));

    // Memberships: the rooms a token authenticates in, or why it fails.
    assert_eq!(engine.memberships(&token).unwrap().len(), 1);
    let why = match engine.memberships(&common::token(&room, "stranger")) {
        Err(Error::Unauthenticated(why)) => why,
        other => panic!("{other:?}"),
    };
    assert!(why.contains("in no hosted room's contract"), "{why}");
}

#[tokio::test]
async fn a_contract_change_revokes_keys_and_named_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let adv = common::issuer("adv");
    // The contract revokes adv's token "laptop-2026" and allows tokens of at most ten minutes.
    let strict =
        common::email_room(", revoked_token_ids: [laptop-2026]", "authentication: { max_token_lifetime_seconds: 600 }");
    // Rotation: adv's old key is replaced by a new one.
    let rotated = {
        let mut c = common::email_room("", "");
        c.participants.iter_mut().find(|p| p.id == "adv").unwrap().credential.as_mut().unwrap().issuer_keys =
            vec![common::issuer("adv-new-key").public_key_base64()];
        c
    };
    let engine = common::open(dir.path(), vec![strict.clone(), rotated.clone()], vec![]).await;
    let strict_id = strict.room_id().to_string();
    let rotated_id = rotated.room_id().to_string();
    let both = [strict_id.clone(), rotated_id.clone()];

    let named = adv.mint_with_id("adv", &both, 600, unix_now(), "laptop-2026").unwrap();
    assert!(unauthenticated(engine.authenticate(&strict_id, &named)).contains("token laptop-2026 was revoked"));
    let other = adv.mint_with_id("adv", &both, 600, unix_now(), "ci-2026").unwrap();
    engine.authenticate(&strict_id, &other).unwrap();
    let long = adv.mint("adv", &both, 601, unix_now()).unwrap();
    assert!(unauthenticated(engine.authenticate(&strict_id, &long)).contains("at most 600 s"));

    // The rotated room no longer names the old key: every token it signed is refused there.
    assert!(unauthenticated(engine.authenticate(&rotated_id, &other)).contains("is not in room"));
    let new = common::issuer("adv-new-key").mint("adv", &both, 600, unix_now()).unwrap();
    assert_eq!(engine.authenticate(&rotated_id, &new).unwrap().participant(), "adv");
    assert!(unauthenticated(engine.authenticate(&strict_id, &new)).contains("is not in room"));
}
