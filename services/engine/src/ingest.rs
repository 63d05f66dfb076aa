//! Uploads: a stream of Arrow record batches becomes a committed dataset version, or nothing.
//!
//! An [`UploadSession`] checks the uploaded schema against the contract on the first batch, converts
//! every batch to the stored schema (decoding hashes, widening integers), and writes it to a staging
//! file. Bad values are counted over the whole upload so the error can say how many rows are bad and
//! which is first. Only [`UploadSession::commit`] publishes the data; dropping the session at any
//! point before that (a client error, a dropped connection, a crash) removes the staging file, and a
//! crash leaves staging files that the next start removes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::array::{Array, ArrayRef, UInt64Array, new_null_array};
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use sealroom_matching::batch;
use sealroom_matching::normalize::{self, Profile, Region};
use sealroom_proto::room::v1::{Column, IdentifierKind, RoomContract, Table};
use sha2::{Digest, Sha256};

use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::room::Room;
use crate::schema::{BadRows, accepted_types, accepts, convert_column, stored_schema, stored_type};
use crate::seal::SealedWriter;
use crate::storage::{DatasetManifest, dataset_file_name, new_id};

/// Limits on one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    pub max_rows: u64,
    /// In-memory size of the uploaded batches, summed.
    pub max_bytes: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self { max_rows: 500_000_000, max_bytes: 64 * 1024 * 1024 * 1024 }
    }
}

/// Writes through to a file while hashing every byte.
struct HashingWriter {
    /// The sealed writer buffers a chunk (1 MiB) and writes whole chunks: no other buffer is needed.
    inner: SealedWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where each stored column comes from.
#[derive(Debug, Clone)]
enum Source {
    /// The uploaded column at this index.
    Uploaded(usize),
    /// Absent from the upload (allowed for nullable columns): all null.
    Nulls,
}

/// One upload in progress. See the module docs.
pub struct UploadSession {
    room: Arc<Room>,
    participant: String,
    table: Table,
    stored: SchemaRef,
    limits: UploadLimits,
    staging: PathBuf,
    /// The version this upload becomes when it commits.
    version: String,
    writer: Option<FileWriter<HashingWriter>>,
    plan: Option<Vec<Source>>,
    uploaded: Option<SchemaRef>,
    rows: u64,
    bytes: u64,
    bad: BTreeMap<String, BadRows>,
    /// Plaintext email / phone columns: values that do not normalize (count, first row).
    unusable: BTreeMap<String, (u64, u64)>,
    /// The rules those columns are matched under ([`matching_rules`]).
    rules: (Profile, Region),
    finished: bool,
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSession")
            .field("room", &self.room.id.as_str())
            .field("table", &self.table.name)
            .field("participant", &self.participant)
            .field("rows", &self.rows)
            .finish()
    }
}

fn suggest(name: &str, table: &Table) -> String {
    match table.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
        Some(c) => format!("; did you mean '{}'? (names are case-sensitive)", c.name),
        None => String::new(),
    }
}

fn describe_column(c: &Column) -> String {
    format!("{}{}", c.r#type().file_name(), if c.nullable { ", nullable" } else { "" })
}

/// Checks an uploaded schema against the contract's table and plans the conversion.
fn plan(table: &Table, uploaded: &SchemaRef) -> Result<Vec<Source>> {
    let mut problems = Vec::new();
    for field in uploaded.fields() {
        match table.column(field.name()) {
            None => problems.push(format!(
                "column '{}' is not in the contract of table '{}'{} (the contract's columns: {})",
                field.name(),
                table.name,
                suggest(field.name(), table),
                table
                    .columns
                    .iter()
                    .map(|c| format!("{} ({})", c.name, describe_column(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(column) if !accepts(column.r#type(), field.data_type()) => problems.push(format!(
                "column '{}' has Arrow type {}, but the contract declares {}: send {}",
                field.name(),
                field.data_type(),
                column.r#type().file_name(),
                accepted_types(column.r#type())
            )),
            Some(_) => {}
        }
    }
    let mut sources = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        match uploaded.index_of(&column.name) {
            Ok(i) => sources.push(Source::Uploaded(i)),
            Err(_) if column.nullable => sources.push(Source::Nulls),
            Err(_) => problems.push(format!(
                "column '{}' is missing: the contract requires it ({}); send {}",
                column.name,
                describe_column(column),
                accepted_types(column.r#type())
            )),
        }
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(Error::InvalidData(format!(
            "the upload's schema does not match table '{}':\n  - {}",
            table.name,
            problems.join("\n  - ")
        )))
    }
}

impl UploadSession {
    pub(crate) fn new(room: Arc<Room>, participant: String, table: Table, limits: UploadLimits) -> Self {
        let stored = stored_schema(&table);
        let staging = room.storage.staging_path(&table.name);
        let rules = matching_rules(&room.terms().contract, &table.name);
        Self {
            room,
            participant,
            table,
            stored,
            limits,
            staging,
            version: new_id("v"),
            writer: None,
            plan: None,
            uploaded: None,
            rows: 0,
            bytes: 0,
            bad: BTreeMap::new(),
            unusable: BTreeMap::new(),
            rules,
            finished: false,
        }
    }

    pub fn table(&self) -> &str {
        &self.table.name
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Checks the schema of the upload before any batch arrives (Flight sends it first).
    pub fn check_schema(&mut self, uploaded: &SchemaRef) -> Result<()> {
        if self.plan.is_none() {
            match plan(&self.table, uploaded) {
                Ok(p) => {
                    self.plan = Some(p);
                    self.uploaded = Some(uploaded.clone());
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(())
    }

    /// Validates, converts and stages one batch.
    pub async fn push(&mut self, batch: RecordBatch) -> Result<()> {
        self.check_schema(&batch.schema())?;
        if self.uploaded.as_ref().is_some_and(|first| first.fields() != batch.schema().fields()) {
            let e = plan_mismatch(&self.table, &batch.schema());
            return Err(self.fail(e));
        }
        let plan = self.plan.clone().unwrap_or_default();
        self.rows += batch.num_rows() as u64;
        self.bytes += batch.get_array_memory_size() as u64;
        if self.rows > self.limits.max_rows || self.bytes > self.limits.max_bytes {
            let e = Error::TooLarge(format!(
                "the upload exceeds this server's limits ({} rows, {} bytes); split it into several tables or ask the \
                 operator to raise `limits.max_upload_rows` / `limits.max_upload_bytes`",
                self.limits.max_rows, self.limits.max_bytes
            ));
            return Err(self.fail(e));
        }
        let offset = self.rows - batch.num_rows() as u64;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.stored.fields().len());
        let contract_columns = self.table.columns.clone();
        for (column, source) in contract_columns.iter().zip(&plan) {
            let uploaded = match source {
                Source::Uploaded(i) => batch.column(*i).clone(),
                Source::Nulls => new_null_array(&stored_type(column.r#type()), batch.num_rows()),
            };
            let converted = match convert_column(column.r#type(), &uploaded, offset) {
                Ok(c) => c,
                Err(e) => return Err(self.fail(e)),
            };
            match converted {
                Ok(array) => {
                    self.check_identifiers(column, &array, offset);
                    if !column.nullable && array.null_count() > 0 {
                        let first = (0..array.len()).find(|r| array.is_null(*r)).unwrap_or(0);
                        self.record_bad(
                            &column.name,
                            BadRows {
                                count: array.null_count() as u64,
                                first_row: offset + first as u64,
                                problem: "null in a column the contract declares non-nullable".into(),
                            },
                        );
                    }
                    columns.push(array);
                }
                Err(bad) => {
                    self.record_bad(&column.name, bad);
                    columns.push(new_null_array(&stored_type(column.r#type()), batch.num_rows()));
                }
            }
        }
        if !self.bad.is_empty() {
            // Keep counting bad rows across the whole upload, but stage nothing more.
            return Ok(());
        }
        if self.table.user_id_column().is_none() {
            columns.push(Arc::new(UInt64Array::from_iter_values(offset..self.rows)));
        }
        let stored = RecordBatch::try_new(self.stored.clone(), columns)
            .map_err(|e| Error::InvalidData(format!("could not assemble the stored batch: {e}")));
        let stored = match stored {
            Ok(b) => b,
            Err(e) => return Err(self.fail(e)),
        };
        if let Err(e) = self.write(stored).await {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Counts plaintext emails and phones that do not normalize under the rules of the first
    /// computation that matches on this table (its profile, and for phones its region): they are
    /// stored, but can never match, and the uploader is told so at commit.
    fn check_identifiers(&mut self, column: &Column, array: &ArrayRef, offset: u64) {
        let kind = column.identifier();
        if !matches!(kind, IdentifierKind::Email | IdentifierKind::Phone) {
            return;
        }
        let Some(strings) = array.as_any().downcast_ref::<StringArray>() else { return };
        let (profile, region) = self.rules;
        let hashed = if kind == IdentifierKind::Email {
            batch::hash_emails(strings, profile, 1)
        } else {
            batch::hash_phones(strings, region, profile, 1)
        };
        if let Some(first) = hashed.first_invalid_row {
            let e = self.unusable.entry(column.name.clone()).or_insert((0, offset + first));
            e.0 += hashed.invalid;
        }
    }

    fn record_bad(&mut self, column: &str, bad: BadRows) {
        self.bad.entry(column.to_owned()).and_modify(|b| b.count += bad.count).or_insert(bad);
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let writer = match self.writer.take() {
            Some(w) => w,
            None => {
                let file = File::create(&self.staging).map_err(|e| Error::storage(&self.staging, e))?;
                // Sealed under the name it will have once committed, so that it can be moved there.
                let sealed = self
                    .room
                    .storage
                    .sealer()
                    .writer(&self.room.storage.dataset_path(&self.table.name, &self.version), file)?;
                let sink = HashingWriter { inner: sealed, hasher: Sha256::new(), written: 0 };
                FileWriter::try_new(sink, &self.stored).map_err(|e| Error::storage(&self.staging, e))?
            }
        };
        let path = self.staging.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut writer = writer;
            writer.write(&batch).map(|()| writer).map_err(|e| Error::storage(&path, e))
        })
        .await
        .map_err(|e| Error::storage(&self.staging, e))??;
        self.writer = Some(writer);
        Ok(())
    }

    /// Publishes the upload as the table's new version, atomically replacing the previous one.
    pub async fn commit(mut self) -> Result<DatasetManifest> {
        if !self.bad.is_empty() {
            let lines: Vec<String> = self
                .bad
                .iter()
                .map(|(column, b)| {
                    format!(
                        "column '{column}': {} of {} rows are bad; first bad row: {} (0-based); it is {}",
                        b.count, self.rows, b.first_row, b.problem
                    )
                })
                .collect();
            let e = Error::InvalidData(format!(
                "the upload to table '{}' was rejected and nothing was stored:\n  - {}",
                self.table.name,
                lines.join("\n  - ")
            ));
            return Err(self.fail(e));
        }
        if self.rows == 0 {
            let e = Error::InvalidData(format!(
                "the upload to table '{}' has no rows; nothing was stored (the previous version, if any, is unchanged)",
                self.table.name
            ));
            return Err(self.fail(e));
        }
        let Some(writer) = self.writer.take() else {
            return Err(self.fail(Error::InvalidData("the upload has no data".into())));
        };
        let path = self.staging.clone();
        let finished = tokio::task::spawn_blocking(move || -> Result<(String, u64)> {
            let mut writer = writer;
            writer.finish().map_err(|e| Error::storage(&path, e))?;
            let mut sink = writer.into_inner().map_err(|e| Error::storage(&path, e))?;
            sink.flush().map_err(|e| Error::storage(&path, e))?;
            let HashingWriter { inner, hasher, written } = sink;
            let file = inner.finish().map_err(|e| Error::storage(&path, e))?;
            file.sync_all().map_err(|e| Error::storage(&path, e))?;
            Ok((hex::encode(hasher.finalize()), written))
        })
        .await
        .map_err(|e| Error::storage(&self.staging, e));
        let (digest, bytes) = match finished {
            Ok(Ok(v)) => v,
            Ok(Err(e)) | Err(e) => return Err(self.fail(e)),
        };
        let version = self.version.clone();
        let manifest = DatasetManifest {
            table: self.table.name.clone(),
            version: version.clone(),
            file: dataset_file_name(&version),
            rows: self.rows,
            bytes,
            uploader: self.participant.clone(),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            data_sha256: digest,
            warnings: self
                .unusable
                .iter()
                .map(|(column, (count, first))| {
                    let what = if self.table.column(column).is_some_and(|c| c.identifier() == IdentifierKind::Email) {
                        "emails"
                    } else {
                        "phone numbers"
                    };
                    format!(
                        "column '{column}': {count} of {} values are not valid {what} under the room's normalization \
                         rules (first at row {first}, 0-based); they are stored but will never match: correct them \
                         at the source, or leave them empty",
                        self.rows
                    )
                })
                .collect(),
        };
        let storage = self.room.storage.clone();
        let staged = self.staging.clone();
        let m = manifest.clone();
        let committed = tokio::task::spawn_blocking(move || storage.commit(&staged, m))
            .await
            .map_err(|e| Error::storage(&self.staging, e));
        let file = match committed {
            Ok(Ok(f)) => f,
            Ok(Err(e)) | Err(e) => return Err(self.fail(e)),
        };
        self.finished = true;
        self.room.install_dataset(file);
        self.room.audit.append(AuditEvent::UploadCommitted {
            participant: self.participant.clone(),
            table: self.table.name.clone(),
            version: manifest.version.clone(),
            rows: manifest.rows,
            data_sha256: manifest.data_sha256.clone(),
        })?;
        self.room.metrics.upload_committed(manifest.rows);
        tracing::info!(room = %self.room.id, table = %manifest.table, rows = manifest.rows, version = %manifest.version, "upload committed");
        Ok(manifest)
    }

    /// Abandons the upload: removes the staging file and records why.
    fn fail(&mut self, error: Error) -> Error {
        self.abort(&error.to_string());
        error
    }

    fn abort(&mut self, reason: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.writer = None;
        if self.staging.exists()
            && let Err(e) = std::fs::remove_file(&self.staging)
        {
            tracing::warn!(path = %self.staging.display(), error = %e, "could not remove a staging file");
        }
        self.room.metrics.upload_rejected();
        if let Err(e) = self.room.audit.append(AuditEvent::UploadRejected {
            participant: self.participant.clone(),
            table: self.table.name.clone(),
            reason: reason.to_owned(),
        }) {
            tracing::error!(error = %e, "could not audit a rejected upload");
        }
    }
}

fn plan_mismatch(table: &Table, schema: &SchemaRef) -> Error {
    Error::InvalidData(format!(
        "a later batch of the upload to table '{}' has a different schema ({} columns: {}) than the first; every \
         batch of one upload must have the same schema",
        table.name,
        schema.fields().len(),
        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
    ))
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        if !self.finished {
            self.abort("the upload ended before it was committed (client error or dropped connection)");
        }
    }
}

/// The normalization profile and phone region plaintext identifiers of `table` are matched under:
/// those of the first computation that matches on the table (`sealroom` and US otherwise).
fn matching_rules(contract: &RoomContract, table: &str) -> (Profile, Region) {
    let matching = contract
        .computations
        .iter()
        .filter_map(|c| c.matching())
        .find(|m| m.advertiser_table == table || m.publisher_table == table);
    let profile = matching.map_or(Profile::Sealroom, |m| crate::computation::linkage::profile(m.normalization()));
    let region = matching
        .filter(|m| !m.phone_region.is_empty())
        .and_then(|m| normalize::region(&m.phone_region).ok())
        .unwrap_or(Region::US);
    (profile, region)
}
