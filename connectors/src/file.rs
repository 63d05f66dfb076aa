//! The file sink: each delivery becomes one file in a directory, NDJSON or Parquet.
//!
//! A delivery is written to a hidden temporary file, synced, and renamed into place, so a reader of
//! the directory sees whole deliveries or none. NDJSON lines wrap each row in an envelope that says
//! which release it belongs to; Parquet files carry the same facts as key-value metadata.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::{Delivery, DeliveryMetadata, DeliveryReceipt, Error, Result, Sink};

const SINK: &str = "file";
/// Version of the NDJSON envelope and of the Parquet metadata keys.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON object per line: `{"schema_version":1, "room_id":…, …, "row":{…}}`.
    #[default]
    Ndjson,
    /// One Parquet file per delivery, snappy-compressed, release facts in key-value metadata.
    Parquet,
}

/// Configuration of the file sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Directory the deliveries are written to; created on open if missing.
    pub path: PathBuf,
    /// `ndjson` (default) or `parquet`.
    #[serde(default)]
    pub format: FileFormat,
}

#[derive(Debug)]
pub struct FileSink {
    config: FileSinkConfig,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Built,
    Open,
    Closed,
}

impl FileSink {
    pub fn new(config: FileSinkConfig) -> Self {
        Self { config, state: State::Built }
    }

    /// The registry factory.
    pub fn from_config(config: serde_json::Value) -> Result<Box<dyn Sink>> {
        let config: FileSinkConfig =
            serde_json::from_value(config).map_err(|e| Error::Config { sink: SINK, message: e.to_string() })?;
        if config.path.as_os_str().is_empty() {
            return Err(Error::Config { sink: SINK, message: "`path` must name a directory".into() });
        }
        Ok(Box::new(Self::new(config)))
    }

    fn file_name(&self, m: &DeliveryMetadata) -> String {
        let ext = match self.config.format {
            FileFormat::Ndjson => "ndjson",
            FileFormat::Parquet => "parquet",
        };
        let room: String = m.room_id.chars().take(12).collect();
        format!("{room}-{}-{}-{}-{}.{ext}", m.computation, m.run_id, m.section, m.recipient)
    }
}

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { sink: SINK, operation, path: path.display().to_string(), source }
}

fn encode_error(e: impl std::fmt::Display) -> Error {
    Error::Encode { sink: SINK, message: e.to_string() }
}

fn write_ndjson(file: &mut BufWriter<File>, delivery: &Delivery) -> Result<()> {
    // `{"schema_version":…,"release_digest":"…",` → `{…,"row":<row>}`
    let mut prefix = delivery.metadata.envelope_open(SCHEMA_VERSION);
    prefix.push_str("\"row\":");
    let rows = crate::json_lines(SINK, &delivery.batch)?;
    for line in rows.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        file.write_all(prefix.as_bytes())
            .and_then(|()| file.write_all(line))
            .and_then(|()| file.write_all(b"}\n"))
            .map_err(|e| Error::Io { sink: SINK, operation: "write", path: String::new(), source: e })?;
    }
    Ok(())
}

fn write_parquet(file: File, delivery: &Delivery) -> Result<File> {
    let m = &delivery.metadata;
    let metadata = [
        ("sealroom.schema_version", SCHEMA_VERSION.to_string()),
        ("sealroom.room_id", m.room_id.clone()),
        ("sealroom.computation", m.computation.clone()),
        ("sealroom.run_id", m.run_id.clone()),
        ("sealroom.section", m.section.clone()),
        ("sealroom.recipient", m.recipient.clone()),
        ("sealroom.release_digest", m.release_digest.clone()),
    ]
    .into_iter()
    .map(|(k, v)| KeyValue::new(k.to_owned(), v))
    .collect();
    let props =
        WriterProperties::builder().set_compression(Compression::SNAPPY).set_key_value_metadata(Some(metadata)).build();
    let mut writer = ArrowWriter::try_new(file, delivery.batch.schema(), Some(props)).map_err(encode_error)?;
    writer.write(&delivery.batch).map_err(encode_error)?;
    writer.into_inner().map_err(encode_error)
}

/// Writes a delivery to `dir/name` atomically: temporary file, fsync, rename, fsync of the directory.
fn write_atomically(dir: &Path, name: &str, format: FileFormat, delivery: &Delivery) -> Result<PathBuf> {
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&tmp_path).map_err(|e| io_error("create", &tmp_path, e))?;
        let file = match format {
            FileFormat::Ndjson => {
                let mut writer = BufWriter::new(file);
                write_ndjson(&mut writer, delivery).map_err(|e| match e {
                    Error::Io { source, .. } => io_error("write", &tmp_path, source),
                    other => other,
                })?;
                writer.into_inner().map_err(|e| io_error("write", &tmp_path, e.into_error()))?
            }
            FileFormat::Parquet => write_parquet(file, delivery)?,
        };
        file.sync_all().map_err(|e| io_error("sync", &tmp_path, e))?;
        fs::rename(&tmp_path, &final_path).map_err(|e| io_error("rename", &final_path, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result.map(|()| final_path)
}

#[async_trait]
impl Sink for FileSink {
    fn sink_type(&self) -> &'static str {
        SINK
    }

    async fn open(&mut self) -> Result<()> {
        if self.state == State::Closed {
            return Err(Error::Lifecycle { sink: SINK, message: "open after close" });
        }
        let dir = self.config.path.clone();
        tokio::task::spawn_blocking(move || {
            fs::create_dir_all(&dir).map_err(|e| io_error("create directory", &dir, e))
        })
        .await
        .map_err(|e| Error::Encode { sink: SINK, message: format!("open task failed: {e}") })??;
        self.state = State::Open;
        Ok(())
    }

    async fn send(&mut self, delivery: &Delivery) -> Result<DeliveryReceipt> {
        match self.state {
            State::Open => {}
            State::Built => {
                return Err(Error::Lifecycle { sink: SINK, message: "send before open" });
            }
            State::Closed => {
                return Err(Error::Lifecycle { sink: SINK, message: "send after close" });
            }
        }
        let name = self.file_name(&delivery.metadata);
        let dir = self.config.path.clone();
        let format = self.config.format;
        let delivery = delivery.clone();
        let rows = delivery.batch.num_rows();
        let path = tokio::task::spawn_blocking(move || write_atomically(&dir, &name, format, &delivery))
            .await
            .map_err(|e| Error::Encode { sink: SINK, message: format!("write task failed: {e}") })??;
        tracing::debug!(path = %path.display(), rows, "file sink delivered");
        Ok(DeliveryReceipt { location: path.display().to_string(), rows })
    }

    /// Every send is durable when it returns (synced and renamed), so there is nothing to flush.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.state = State::Closed;
        Ok(())
    }

    async fn healthcheck(&self) -> Result<()> {
        let dir = self.config.path.clone();
        tokio::task::spawn_blocking(move || {
            let meta = fs::metadata(&dir).map_err(|e| io_error("stat", &dir, e))?;
            if !meta.is_dir() || meta.permissions().readonly() {
                return Err(Error::Config {
                    sink: SINK,
                    message: format!("{} is not a writable directory", dir.display()),
                });
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Encode { sink: SINK, message: format!("healthcheck task failed: {e}") })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{StringArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    fn delivery() -> Delivery {
        let schema = Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, false),
            Field::new("overlap", DataType::UInt64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["sports", "travel"])),
                Arc::new(UInt64Array::from(vec![Some(120), None])),
            ],
        )
        .unwrap();
        Delivery {
            metadata: DeliveryMetadata {
                room_id: "ab".repeat(32),
                computation: "overlap".into(),
                run_id: "r1".into(),
                section: "by_segment".into(),
                recipient: "news".into(),
                release_digest: "cd".repeat(32),
            },
            batch,
        }
    }

    async fn sink(dir: &Path, format: &str) -> Box<dyn Sink> {
        let mut sink = crate::SinkRegistry::default()
            .build(&serde_json::json!({"type": "file", "path": dir, "format": format}))
            .unwrap();
        sink.open().await.unwrap();
        sink
    }

    #[tokio::test]
    async fn ndjson_deliveries_are_whole_files_with_envelopes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("activations");
        let mut sink = sink(&out, "ndjson").await;
        let receipt = sink.send(&delivery()).await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(receipt.rows, 2);
        let text = fs::read_to_string(&receipt.location).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["row"]["segment"], "sports");
        assert_eq!(lines[0]["row"]["overlap"], 120);
        assert_eq!(lines[1]["row"].get("overlap"), None, "a suppressed cell is absent, never 0");
        assert_eq!(lines[1]["release_digest"], "cd".repeat(32));
        assert_eq!(lines[1]["schema_version"], 1);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        sink.healthcheck().await.unwrap();
        sink.close().await.unwrap();
        assert!(sink.send(&delivery()).await.unwrap_err().to_string().contains("send after close"));
    }

    #[tokio::test]
    async fn parquet_deliveries_carry_release_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path(), "parquet").await;
        let receipt = sink.send(&delivery()).await.unwrap();
        let file = File::open(&receipt.location).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let kv = reader.metadata().file_metadata().key_value_metadata().unwrap().clone();
        assert!(kv.iter().any(|k| k.key == "sealroom.release_digest" && k.value.as_deref() == Some(&"cd".repeat(32))));
        let batches: Vec<_> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(batches[0].num_rows(), 2);
    }

    #[tokio::test]
    async fn send_before_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink =
            crate::SinkRegistry::default().build(&serde_json::json!({"type": "file", "path": dir.path()})).unwrap();
        assert!(sink.send(&delivery()).await.unwrap_err().to_string().contains("send before open"));
    }

    #[tokio::test]
    async fn an_unwritable_destination_fails_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let mut sink = crate::SinkRegistry::default()
            .build(&serde_json::json!({"type": "file", "path": blocker.join("sub")}))
            .unwrap();
        let err = sink.open().await.unwrap_err().to_string();
        assert!(err.contains("create directory"), "{err}");
    }
}
