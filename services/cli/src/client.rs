//! Clients of a running server: Flight uploads and REST calls, over TLS to the attested enclave
//! only (see [`crate::attest`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightClient, FlightDescriptor};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::CliError;
use crate::attest::{Pinned, error_chain, server_message};

/// Rows per uploaded record batch: well under the default 64 MiB message limit.
const UPLOAD_BATCH_ROWS: usize = 100_000;

/// Connects a Flight client to the attested enclave (`enclave`: its pinned certificate) that
/// sends the participant token on every call.
pub async fn flight_client(url: &str, token: &str, enclave: &Pinned) -> Result<FlightClient, CliError> {
    let channel = enclave.channel(url).await?;
    let mut client = FlightClient::new(channel);
    client
        .add_header("authorization", &format!("Bearer {token}"))
        .map_err(|e| CliError::Usage(format!("the token cannot be sent as a header: {e}")))?;
    Ok(client)
}

/// Batches on their way to the uploader.
type BatchReceiver = tokio::sync::mpsc::Receiver<Result<RecordBatch, FlightError>>;

/// Reads an Arrow IPC or Parquet file's batches on a blocking thread, re-chunked for upload. Returns
/// the row count when the file states it.
fn read_batches(path: &Path) -> Result<(Option<u64>, BatchReceiver), CliError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let file = File::open(path).map_err(|e| CliError::io(path, e))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let to_flight = |e: String| FlightError::ExternalError(e.into());
    match ext.as_str() {
        "parquet" | "pq" => {
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| CliError::Input(format!("{}: not a Parquet file: {e}", path.display())))?
                .with_batch_size(UPLOAD_BATCH_ROWS);
            let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
            let reader = builder.build().map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
            tokio::task::spawn_blocking(move || {
                for batch in reader {
                    if tx.blocking_send(batch.map_err(|e| to_flight(e.to_string()))).is_err() {
                        break;
                    }
                }
            });
            Ok((rows, rx))
        }
        "arrow" | "ipc" | "feather" => {
            let reader = arrow::ipc::reader::FileReader::try_new(file, None)
                .map_err(|e| CliError::Input(format!("{}: not an Arrow IPC file: {e}", path.display())))?;
            tokio::task::spawn_blocking(move || {
                for batch in reader {
                    let batch = batch.map_err(|e| to_flight(e.to_string()));
                    let chunks: Vec<Result<RecordBatch, FlightError>> = match batch {
                        Ok(b) => (0..b.num_rows())
                            .step_by(UPLOAD_BATCH_ROWS)
                            .map(|o| Ok(b.slice(o, UPLOAD_BATCH_ROWS.min(b.num_rows() - o))))
                            .collect(),
                        Err(e) => vec![Err(e)],
                    };
                    for c in chunks {
                        if tx.blocking_send(c).is_err() {
                            return;
                        }
                    }
                }
            });
            Ok((None, rx))
        }
        _ => Err(CliError::Usage(format!("cannot upload {}: give a .parquet or .arrow file", path.display()))),
    }
}

/// What to upload where.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub flight: String,
    pub room: String,
    pub table: String,
    pub token: String,
    /// The attested enclave's certificate.
    pub enclave: Pinned,
    pub file: PathBuf,
    pub progress: bool,
}

/// Uploads a file to a table over Flight `DoPut`; returns the server's commit record.
pub async fn upload(request: &UploadRequest) -> Result<Value, CliError> {
    let (rows, rx) = read_batches(&request.file)?;
    let bar = match (request.progress, rows) {
        (true, Some(n)) => ProgressBar::new(n),
        (true, None) => ProgressBar::new_spinner(),
        (false, _) => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} uploading {msg} [{bar:30}] {human_pos}/{human_len} rows")
            .map_err(|e| CliError::Input(e.to_string()))?
            .progress_chars("=> "),
    );
    bar.set_message(request.table.clone());
    let progress = bar.clone();
    let batches = tokio_stream_from(rx).inspect_ok(move |b| progress.inc(b.num_rows() as u64));
    let descriptor =
        FlightDescriptor::new_path(vec!["rooms".into(), request.room.clone(), "tables".into(), request.table.clone()]);
    let stream = FlightDataEncoderBuilder::new().with_flight_descriptor(Some(descriptor)).build(batches);
    let mut client = flight_client(&request.flight, &request.token, &request.enclave).await?;
    let results: Vec<_> = client
        .do_put(stream)
        .await
        .map_err(|e| CliError::Server(flight_message(&e)))?
        .try_collect()
        .await
        .map_err(|e| CliError::Server(flight_message(&e)))?;
    bar.finish_and_clear();
    let first = results.first().ok_or_else(|| CliError::Server("the server acknowledged nothing".into()))?;
    serde_json::from_slice(&first.app_metadata)
        .map_err(|e| CliError::Server(format!("unreadable upload acknowledgement: {e}")))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The server's own message of a Flight error.
pub fn flight_message(e: &FlightError) -> String {
    match e {
        FlightError::Tonic(status) => format!("{:?}: {}", status.code(), status.message()),
        other => other.to_string(),
    }
}

/// A REST client of one server with one token.
#[derive(Debug, Clone)]
pub struct Rest {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Rest {
    /// A client of the attested enclave at `base` (`enclave`: its pinned certificate).
    pub fn new(base: &str, token: &str, enclave: &Pinned) -> Result<Self, CliError> {
        Ok(Self { base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), http: enclave.http_client()? })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            CliError::Connect(format!("cannot reach the REST server at {}: {}", self.base, error_chain(&e)))
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() { Ok(body) } else { Err(CliError::Server(server_message(status, &body))) }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }
}
