//! Participant credentials on the command line: issuer keys (`sealroom keygen`) and the tokens they
//! sign (`sealroom token`, or minted per command from `--key`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use sealroom_attest::token::{self, IssuerKey};

use crate::CliError;

/// How a client command authenticates: a token, or an issuer key that mints one for this command.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// A participant token (`sealroom token`).
    #[arg(long, env = "SEALROOM_TOKEN", hide_env_values = true, conflicts_with = "key")]
    pub token: Option<String>,
    /// The participant's issuer key (PKCS#8 PEM): the command mints a short-lived token for the room.
    #[arg(long, env = "SEALROOM_ISSUER_KEY", requires = "participant")]
    pub key: Option<PathBuf>,
    /// The participant id the key belongs to (with --key).
    #[arg(long, env = "SEALROOM_PARTICIPANT")]
    pub participant: Option<String>,
}

/// The lifetime of the token a command mints for itself.
const COMMAND_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

impl CredentialArgs {
    /// The token to present in `room`.
    pub fn token(&self, room: &str) -> Result<String, CliError> {
        match (&self.token, &self.key, &self.participant) {
            (Some(t), _, _) => Ok(t.trim().to_owned()),
            (None, Some(key), Some(participant)) => {
                let key = load_key(key)?;
                mint(&key, participant, room, COMMAND_TOKEN_LIFETIME)
            }
            _ => Err(CliError::Usage(
                "give --token <participant token> (or SEALROOM_TOKEN), or --key <issuer key file> with --participant <id>"
                    .into(),
            )),
        }
    }
}

/// Reads an issuer key file.
pub fn load_key(path: &Path) -> Result<IssuerKey, CliError> {
    let text = fs::read(path).map_err(|e| CliError::io(path, e))?;
    IssuerKey::from_pem(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

/// A token for `participant` in `room`, valid from now for `lifetime`.
pub fn mint(key: &IssuerKey, participant: &str, room: &str, lifetime: Duration) -> Result<String, CliError> {
    let room = sealroom_proto::RoomId::parse(room).map_err(CliError::Usage)?;
    key.mint(participant, &[room.to_string()], lifetime.as_secs(), token::unix_now())
        .map_err(|e| CliError::Input(e.to_string()))
}

/// Writes a new file readable only by its owner (0600), refusing to replace an existing one.
pub fn write_secret(path: &Path, text: &str) -> Result<(), CliError> {
    sealroom_attest::create_private(path, text.as_bytes()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::Usage(format!("{} exists; a key file is never overwritten, choose another --out", path.display()))
        } else {
            CliError::io(path, e)
        }
    })
}

/// `sealroom keygen`: a new issuer key to `out` (0600); returns the text to print (the public key and
/// where it goes).
pub fn keygen(out: &Path) -> Result<String, CliError> {
    let key = IssuerKey::generate().map_err(|e| CliError::Input(e.to_string()))?;
    write_secret(out, &key.to_pem())?;
    let indented: String = key.public_key_pem().lines().map(|l| format!("          {l}\n")).collect();
    Ok(format!(
        "wrote the private issuer key to {} (mode 0600): keep it, or import it into your KMS/HSM; it never goes \
         to the server or the other participants.\n\nkey id {}\n\nPut the public key in the room file under your \
         participant:\n\n    credential:\n      issuer_keys:\n        - |\n{indented}",
        out.display(),
        key.key_id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_once_and_its_tokens_verify() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("acme.key.pem");
        let printed = keygen(&out).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let err = keygen(&out).unwrap_err().to_string();
        assert!(err.contains("never overwritten"), "{err}");

        let key = load_key(&out).unwrap();
        assert!(printed.contains(&key.key_id()));
        // The printed block is what the room file parser turns into the contract's key.
        let public: String = printed
            .lines()
            .skip_while(|l| !l.contains("BEGIN PUBLIC KEY"))
            .map(|l| format!("{}\n", l.trim()))
            .collect();
        assert_eq!(sealroom_proto::room_file::pem_body(&public), key.public_key_base64());

        let room = "ab".repeat(32);
        let args = CredentialArgs { token: None, key: Some(out), participant: Some("acme".into()) };
        let minted = args.token(&room).unwrap();
        let rules =
            token::TokenRules { room_id: &room, max_lifetime_seconds: 600, revoked: &[], now: token::unix_now() };
        let claims = token::verify_token(&minted, key.public_key(), &rules).unwrap();
        assert_eq!(claims.sub, "acme");
        assert!(args.token("not-a-room-id").is_err());
    }
}
