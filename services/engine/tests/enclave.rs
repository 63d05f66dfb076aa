//! The enclave checks its own evidence against each room before hosting it.

mod common;

use std::sync::Arc;

use sealroom_attest::{AttestError, Attester, EnclaveIdentity, Endorsements, Platform};
use sealroom_engine::{Enclave, Engine, EngineConfig, EngineMetrics, Error, UploadLimits};

/// A TEE that claims to be SEV-SNP but whose reports meet no room's policy.
#[derive(Debug)]
struct Imposter;

impl Attester for Imposter {
    fn platform(&self) -> Platform {
        Platform::SevSnp
    }
    fn report(&self, _report_data: &[u8; 64]) -> Result<(Vec<u8>, Endorsements), AttestError> {
        Ok((vec![0; 1184], Endorsements::None))
    }
    fn sealing_key(&self) -> Result<Option<[u8; 32]>, AttestError> {
        Ok(Some([9; 32]))
    }
}

#[tokio::test]
async fn a_room_whose_policy_this_enclave_cannot_meet_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let identity = EnclaveIdentity::generate(&["localhost".into()]).unwrap();
    let config = EngineConfig {
        data_dir: dir.path().to_owned(),
        enclave: Enclave::new(Box::new(Imposter), identity),
        limits: UploadLimits::default(),
        sinks: vec![],
    };
    let room = common::email_room("", "");
    let err = match Engine::open(config, vec![room], Arc::new(EngineMetrics::unregistered())).await {
        Err(Error::Contract(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(err.contains("does not accept this enclave (AMD SEV-SNP"), "{err}");
    assert!(err.contains("every participant would refuse it"), "{err}");
    assert!(err.contains("report format") || err.contains("measurement accepted"), "{err}");
    // Nothing was hosted, so nothing was written for the room.
    assert!(
        !dir.path().join("rooms").exists() || std::fs::read_dir(dir.path().join("rooms")).unwrap().next().is_none()
    );
}

#[tokio::test]
async fn the_simulated_enclave_meets_rooms_that_allow_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::open(dir.path(), vec![common::email_room("", "")], vec![]).await;
    assert_eq!(engine.room_ids().len(), 1);
}
