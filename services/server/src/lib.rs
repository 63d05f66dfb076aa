//! The enclave server: Arrow Flight for data in and results out, REST for dashboards and
//! governance, `/healthz` and `/metrics`.
//!
//! [`start`] binds both listeners and returns a [`RunningServer`] (integration tests start the real
//! server on `127.0.0.1:0` this way); [`run`] serves until a shutdown signal. Shutdown is ordered:
//! both servers stop accepting and drain in-flight requests (uploads commit or abort), then the
//! engine flushes and closes its activation sinks.

pub mod config;
pub mod error;
pub mod flight;
pub mod http;
mod tls;

/// Runs `f` off the async workers: blocking engine work (releases fsync their audit entry; reads
/// unseal files and check signatures; attestation talks to the TEE device).
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, sealroom_engine::Error> + Send + 'static,
) -> Result<T, sealroom_engine::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sealroom_engine::Error::Computation(format!("blocking task failed: {e}")))?
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use prometheus_client::registry::Registry;
use sealroom_attest::EnclaveIdentity;
use sealroom_engine::{Enclave, Engine, EngineConfig, EngineMetrics};
use sealroom_proto::room::v1::RoomContract;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] sealroom_engine::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(String),
}

/// A started server. Dropping it does not stop it: call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    pub flight_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub engine: Engine,
    stop: watch::Sender<bool>,
    flight: JoinHandle<Result<(), String>>,
    http: JoinHandle<Result<(), String>>,
    /// Retries kept activations; awaited before the sinks close, so no retry meets a closed sink.
    retries: JoinHandle<()>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Opens the TEE (probing or as configured) and generates the enclave key and its certificate.
fn open_enclave(config: &ServerConfig) -> Result<Enclave, ServerError> {
    let probe = sealroom_attest::attester::Probe::default();
    let attester = sealroom_attest::attester::open(config.tee, &probe, None)
        .map_err(|e| ServerError::Config(format!("tee: {e}")))?;
    let identity =
        EnclaveIdentity::generate(&config.tls_names).map_err(|e| ServerError::Config(format!("tls_names: {e}")))?;
    let enclave = Enclave::new(attester, identity);
    Ok(match &config.sealing_key_file {
        Some(path) => enclave.with_sealing_key_file(path.clone()),
        None => enclave,
    })
}

/// Opens the engine, binds the Flight and REST listeners and starts serving both over TLS with
/// the enclave's key.
pub async fn start(config: &ServerConfig, contracts: Vec<RoomContract>) -> Result<RunningServer, ServerError> {
    let enclave = open_enclave(config)?;
    let identity = enclave.identity().clone();
    let mut registry = Registry::default();
    let engine_metrics = Arc::new(EngineMetrics::register(&mut registry));
    let http_metrics = http::HttpMetrics::register(&mut registry);
    let engine_config = EngineConfig {
        data_dir: config.data_dir.clone(),
        enclave,
        limits: config.upload_limits(),
        sinks: config.sink_bindings(),
    };
    let engine = Engine::open(engine_config, contracts, engine_metrics).await?;

    let flight_listener = TcpListener::bind(config.flight_addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.flight_addr, source })?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ServerError::Bind { addr: config.http_addr, source })?;
    let flight_addr = flight_listener.local_addr().map_err(|e| ServerError::Serve(e.to_string()))?;
    let http_addr = http_listener.local_addr().map_err(|e| ServerError::Serve(e.to_string()))?;
    let (stop, rx) = watch::channel(false);

    let service = FlightServiceServer::new(flight::SealroomFlight::new(engine.clone()))
        .max_decoding_message_size(config.limits.max_message_bytes)
        .max_encoding_message_size(config.limits.max_message_bytes);
    let flight_tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(identity.certificate_pem(), identity.private_key_pem()));
    let mut flight_server = tonic::transport::Server::builder()
        .tls_config(flight_tls)
        .map_err(|e| ServerError::Config(format!("Flight TLS: {e}")))?;
    let flight_rx = rx.clone();
    let flight = tokio::spawn(async move {
        flight_server
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(flight_listener), stopped(flight_rx))
            .await
            .map_err(|e| e.to_string())
    });

    let state = http::AppState { engine: engine.clone(), registry: Arc::new(registry), metrics: http_metrics };
    let app = http::router(state);
    let http_tls = sealroom_attest::tls::server_config(&identity, &[b"h2", b"http/1.1"])
        .map_err(|e| ServerError::Config(format!("REST TLS: {e}")))?;
    let http = tokio::spawn(tls::serve(http_listener, app, Arc::new(http_tls), stopped(rx.clone())));
    // Activations a sink could not take are retried until it does (engine::outbox).
    let retry_engine = engine.clone();
    let every = Duration::from_secs(config.activation_retry_seconds.max(1));
    let retries = tokio::spawn(async move {
        let mut stop = std::pin::pin!(stopped(rx));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    let attempted = retry_engine.retry_activations().await;
                    if attempted > 0 {
                        tracing::info!(attempted, "retried kept activations");
                    }
                }
            }
        }
    });
    tracing::info!(
        %flight_addr,
        %http_addr,
        tee = engine.tee().name(),
        enclave_key_sha256 = %identity.fingerprint(),
        "sealroom server listening (TLS with the enclave key)"
    );
    Ok(RunningServer { flight_addr, http_addr, engine, stop, flight, http, retries })
}

impl RunningServer {
    /// Stops accepting, drains in-flight requests, then closes the engine's sinks.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        let flight = self.flight.await.map_err(|e| ServerError::Serve(e.to_string()))?;
        let http = self.http.await.map_err(|e| ServerError::Serve(e.to_string()))?;
        self.retries.await.map_err(|e| ServerError::Serve(e.to_string()))?;
        self.engine.close().await;
        flight.map_err(ServerError::Serve)?;
        http.map_err(ServerError::Serve)?;
        tracing::info!("sealroom server stopped");
        Ok(())
    }
}

/// Loads the configured rooms, serves until `shutdown` completes, then shuts down in order.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let contracts = config.load_rooms().map_err(ServerError::Config)?;
    let server = start(&config, contracts).await?;
    shutdown.await;
    server.shutdown().await
}
