//! Attesting a server before talking to it, and the TLS clients that then talk only to it.
//!
//! [`attest`] connects to the REST listener accepting whatever certificate it presents, asks for
//! evidence with a fresh random nonce (and nothing else: no token, no data), and verifies the
//! evidence against the room's contract: vendor signatures, the contract's policy, and that the
//! evidence binds the room, the nonce and the key of the certificate the server presented. Only a
//! verified certificate is then used, pinned ([`Pinned`]), for Flight and REST calls with the
//! participant's token.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use sealroom_attest::identity::{certificate_from_pem, certificate_public_key, certificate_to_pem};
use sealroom_attest::tls::PinnedCert;
use sealroom_attest::verify::verify;
use sealroom_attest::{Binding, Endorsements, Evidence, Policy, Verification};
use sealroom_proto::room::v1::RoomContract;
use serde_json::Value;

use crate::CliError;

/// The certificate of an attested enclave (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned(pub Vec<u8>);

impl Pinned {
    /// Reads a certificate saved by `sealroom attest --save-cert`.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the enclave certificate {}: {e} (`sealroom attest --save-cert {}` writes it after \
                 verifying the server)",
                path.display(),
                path.display()
            ))
        })?;
        certificate_from_pem(&text).map(Self).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
    }

    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        std::fs::write(path, certificate_to_pem(&self.0)).map_err(|e| CliError::io(path, e))
    }

    /// A REST client that accepts only this certificate.
    pub fn http_client(&self) -> Result<reqwest::Client, CliError> {
        https_client(&PinnedCert::expect(self.0.clone()))
    }

    /// A gRPC channel to `url` (`https://host:port`) over TLS that accepts only this certificate.
    pub async fn channel(&self, url: &str) -> Result<tonic::transport::Channel, CliError> {
        let authority = authority(url)?;
        let tls =
            PinnedCert::expect(self.0.clone()).client_config(&[b"h2"]).map_err(|e| CliError::Connect(e.to_string()))?;
        // tonic is given a plain URI: the connector below does TLS with the pinning verifier.
        // The connector takes the host (IPv6 brackets stripped) and the port (443 when absent) from it.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| CliError::Usage(format!("'{url}' is not a Flight address: {e}")))?;
        endpoint.connect_with_connector(PinnedConnector { tls: Arc::new(tls) }).await.map_err(|e| {
            CliError::Connect(format!("cannot connect to the Flight server at {url}: {}", error_chain(&e)))
        })
    }
}

/// A REST client whose TLS certificates are checked by `verifier`.
fn https_client(verifier: &Arc<PinnedCert>) -> Result<reqwest::Client, CliError> {
    let tls = verifier.client_config(&[b"http/1.1"]).map_err(|e| CliError::Connect(e.to_string()))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| CliError::Connect(format!("cannot make the TLS client: {e}")))
}

/// The server's own message of an error response (`{"error": {"message": …}}`), or the status.
pub fn server_message(status: reqwest::StatusCode, body: &Value) -> String {
    body["error"]["message"].as_str().map_or_else(|| format!("HTTP {status}"), str::to_owned)
}

/// An error and its sources, so a TLS refusal (a certificate that is not the pinned one) shows.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// The host and port of `https://host:port` (or `grpc+tls://host:port`).
fn authority(url: &str) -> Result<http::uri::Authority, CliError> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("grpc+tls://")).ok_or_else(|| {
        CliError::Usage(format!("'{url}' is not a TLS address: sealroom serves only TLS, e.g. https://127.0.0.1:50051"))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    authority.parse().map_err(|e| CliError::Usage(format!("'{url}' has no host:port: {e}")))
}

/// Connects TCP, then TLS with the pinning verifier (ALPN h2).
#[derive(Clone)]
struct PinnedConnector {
    tls: Arc<rustls::ClientConfig>,
}

impl tower::Service<http::Uri> for PinnedConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri.host().ok_or_else(|| invalid(format!("{uri} has no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{host} is not a host name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A verified (or refused) server.
#[derive(Debug)]
pub struct Attested {
    pub verification: Verification,
    /// The certificate the server presented, to pin when the verification passed.
    pub certificate: Pinned,
}

/// Asks the REST server at `rest` for evidence for `contract`'s room and verifies it at `now`
/// (seconds since the Unix epoch) against the contract's policy. `endorsements`: a VCEK or DCAP
/// collateral the caller fetched itself (else those that came with the evidence).
pub async fn attest(
    rest: &str,
    contract: &RoomContract,
    endorsements: Option<&Endorsements>,
    now: u64,
) -> Result<Attested, CliError> {
    authority(rest)?;
    let room_id = contract.room_id();
    let nonce: [u8; 32] = rand::random();
    let capture = PinnedCert::capture();
    let http = https_client(&capture)?;
    let url = format!("{}/v1/rooms/{room_id}/attestation?nonce={}", rest.trim_end_matches('/'), hex::encode(nonce));
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| CliError::Connect(format!("cannot reach the REST server at {rest}: {}", error_chain(&e))))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError::Server(format!("the server gave no evidence: {}", server_message(status, &body))));
    }
    let certificate = capture.seen().ok_or_else(|| CliError::Connect("the server presented no certificate".into()))?;
    let evidence: Evidence = serde_json::from_value(body["evidence"].clone())
        .map_err(|e| CliError::Server(format!("the server's evidence is malformed: {e}")))?;
    let key = certificate_public_key(&certificate).map_err(CliError::Server)?;
    let binding =
        Binding::Evidence { room_id: room_id.as_str().to_owned(), nonce: Some(nonce.to_vec()), public_key: Some(key) };
    let verification = verify(&evidence, &Policy::from_contract(contract), &binding, endorsements, now);
    Ok(Attested { verification, certificate: Pinned(certificate) })
}

/// `--vcek` (DER, with AMD's revocation list `--amd-crl`, DER) or `--collateral` (JSON) files as
/// endorsements.
pub fn endorsements(
    vcek: Option<&Path>,
    amd_crl: Option<&Path>,
    collateral: Option<&Path>,
) -> Result<Option<Endorsements>, CliError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| CliError::io(path, e));
    match (vcek, collateral) {
        (Some(_), Some(_)) => Err(CliError::Usage("give --vcek (SEV-SNP) or --collateral (SGX, TDX), not both".into())),
        (Some(path), None) => Ok(Some(Endorsements::Vcek { der: read(path)?, crl: amd_crl.map(read).transpose()? })),
        (None, _) if amd_crl.is_some() => Err(CliError::Usage(
            "--amd-crl goes with --vcek: give the chip's VCEK too (the endorsements given replace the evidence's)"
                .into(),
        )),
        (None, Some(path)) => {
            let text = read(path)?;
            let collateral = serde_json::from_slice(&text)
                .map_err(|e| CliError::Input(format!("{}: not JSON collateral: {e}", path.display())))?;
            Ok(Some(Endorsements::Collateral { collateral }))
        }
        (None, None) => Ok(None),
    }
}

/// Seconds since the Unix epoch.
pub use sealroom_attest::token::unix_now as now;
