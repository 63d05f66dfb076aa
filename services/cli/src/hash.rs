//! `sealroom hash`: a CSV of raw emails and phones becomes a hashed file ready to upload.
//!
//! Runs on the data owner's own machine: raw identifiers never leave it. Emails and phones are
//! normalized under a profile (`--profile`: sealroom, google, meta or uid2; see
//! docs/matching/normalization.md) — phones parsed with the `phonenumber` crate, numbers without a
//! country code read in `--region` — and hashed with SHA-256. Values that are not an email or a phone
//! number become nulls and are counted.
//!
//! With `--clk`, each row's name, birth-date and address columns are also encoded into a CLK (a
//! 1024-bit Bloom filter of keyed-HMAC q-grams, docs/matching/clk.md) under the room's shared
//! secret, with keyed blocking keys, so that fuzzy matching needs no plaintext.
//!
//! The output is written to a temporary file and renamed into place, so it is whole or absent.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeBinaryBuilder, StringBuilder};
use arrow::array::{BinaryBuilder, ListBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sealroom_matching::clk::{self, ClkSchema, Encoder};
use sealroom_matching::hash::sha256;
use sealroom_matching::normalize::{self, Profile, Region};
use serde::Serialize;

use crate::CliError;

/// Rows per output record batch.
const BATCH_ROWS: usize = 65_536;

#[derive(Debug, Clone)]
pub struct HashOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub email_column: String,
    pub phone_column: String,
    /// A column copied through unhashed (the customer id), if any.
    pub id_column: Option<String>,
    pub region: Region,
    pub profile: Profile,
    /// Encode CLKs with this secret.
    pub clk_secret: Option<Vec<u8>>,
    /// Columns to encode into the CLK; empty means every recognized name, date and address column.
    pub clk_columns: Vec<String>,
    pub progress: bool,
}

/// What `hash` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HashSummary {
    pub rows: u64,
    pub emails_hashed: u64,
    pub emails_missing: u64,
    pub emails_invalid: u64,
    /// CSV line (1 = header) of the first value that is not an email.
    pub first_invalid_email_line: Option<u64>,
    pub phones_hashed: u64,
    pub phones_missing: u64,
    pub phones_invalid: u64,
    pub first_invalid_phone_line: Option<u64>,
    pub profile: String,
    /// The columns encoded into each CLK and their roles (both data owners must encode the same
    /// roles for their filters to be comparable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clk_fields: Vec<String>,
    pub output: String,
}

enum Output {
    Parquet(ArrowWriter<File>),
    Ipc(FileWriter<File>),
}

impl Output {
    /// Creates `path` in the format `format_of`'s extension names.
    fn create(path: &Path, format_of: &Path, schema: &SchemaRef) -> Result<Self, CliError> {
        let ext = format_of.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        let file = File::create(path).map_err(|e| CliError::io(path, e))?;
        match ext.as_str() {
            "parquet" | "pq" => {
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
                    .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
                Ok(Self::Parquet(writer))
            }
            _ => {
                let writer = FileWriter::try_new(file, schema)
                    .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
                Ok(Self::Ipc(writer))
            }
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            Self::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Self::Ipc(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    fn finish(self) -> Result<File, String> {
        match self {
            Self::Parquet(w) => w.into_inner().map_err(|e| e.to_string()),
            Self::Ipc(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                w.into_inner().map_err(|e| e.to_string())
            }
        }
    }
}

/// Checks the output path's extension before any work is done.
pub fn check_output_path(path: &Path) -> Result<(), CliError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match ext.as_str() {
        "parquet" | "pq" | "arrow" | "ipc" | "feather" => Ok(()),
        _ => Err(CliError::Usage(format!(
            "cannot tell the output format of {}: end it in .parquet or .arrow",
            path.display()
        ))),
    }
}

struct Builders {
    id: Option<StringBuilder>,
    contacts: bool,
    email: FixedSizeBinaryBuilder,
    phone: FixedSizeBinaryBuilder,
    clk: Option<(BinaryBuilder, ListBuilder<StringBuilder>)>,
    rows: usize,
}

impl Builders {
    fn new(with_id: bool, contacts: bool, with_clk: bool) -> Self {
        Self {
            id: with_id.then(|| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 12)),
            contacts,
            email: FixedSizeBinaryBuilder::with_capacity(BATCH_ROWS, 32),
            phone: FixedSizeBinaryBuilder::with_capacity(BATCH_ROWS, 32),
            clk: with_clk.then(|| (BinaryBuilder::new(), ListBuilder::new(StringBuilder::new()))),
            rows: 0,
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, CliError> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        if let Some(id) = &mut self.id {
            columns.push(Arc::new(id.finish()));
        }
        let (email, phone) = (self.email.finish(), self.phone.finish());
        if self.contacts {
            columns.push(Arc::new(email));
            columns.push(Arc::new(phone));
        }
        if let Some((filters, keys)) = &mut self.clk {
            columns.push(Arc::new(filters.finish()));
            columns.push(Arc::new(keys.finish()));
        }
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| CliError::Input(e.to_string()))
    }
}

fn append_digest(builder: &mut FixedSizeBinaryBuilder, digest: Option<[u8; 32]>) -> Result<(), CliError> {
    match digest {
        Some(d) => builder.append_value(d).map_err(|e| CliError::Input(e.to_string())),
        None => {
            builder.append_null();
            Ok(())
        }
    }
}

/// Hashes a CSV file. See the module docs.
pub fn hash_csv(options: &HashOptions) -> Result<HashSummary, CliError> {
    check_output_path(&options.output)?;
    let input = File::open(&options.input).map_err(|e| CliError::io(&options.input, e))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| CliError::Input(format!("{}: cannot read the header row: {e}", options.input.display())))?
        .clone();
    let find = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let email_at = find(&options.email_column);
    let phone_at = find(&options.phone_column);
    let columns_list = || headers.iter().collect::<Vec<_>>().join(", ");
    if email_at.is_none() && phone_at.is_none() && options.clk_secret.is_none() {
        return Err(CliError::Input(format!(
            "{}: no '{}' or '{}' column (columns: {}); name them with --email-column / --phone-column",
            options.input.display(),
            options.email_column,
            options.phone_column,
            columns_list()
        )));
    }
    let contacts = email_at.is_some() || phone_at.is_some();
    // The CLK encoder and, per encoded field, its column in the CSV.
    let clk = match &options.clk_secret {
        None => None,
        Some(secret) => {
            let candidates: Vec<String> = if options.clk_columns.is_empty() {
                headers
                    .iter()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| {
                        // Emails and phones are matched exactly, by their hashes.
                        sealroom_matching::fuzzy::kind_of(h).is_some_and(|(_, role)| role != "email" && role != "phone")
                    })
                    .collect()
            } else {
                for c in &options.clk_columns {
                    if find(c).is_none() {
                        return Err(CliError::Input(format!(
                            "{}: no '{c}' column for --clk-columns (columns: {})",
                            options.input.display(),
                            columns_list()
                        )));
                    }
                }
                options.clk_columns.clone()
            };
            let schema = ClkSchema::infer(&candidates);
            if let Some(c) = candidates.iter().find(|c| !schema.fields.iter().any(|f| &f.column == *c)) {
                return Err(CliError::Input(format!(
                    "column '{c}' is not a field a CLK can encode: name it given_name, surname, date_of_birth, \
                     street, city, postcode (or a common synonym such as first_name, dob, zip)"
                )));
            }
            if schema.fields.is_empty() {
                return Err(CliError::Input(format!(
                    "{}: --clk found no name, birth-date or address column to encode (columns: {}); name \
                     them given_name, surname, date_of_birth, street, city, postcode, or list them with --clk-columns",
                    options.input.display(),
                    columns_list()
                )));
            }
            let at: Vec<usize> = schema.fields.iter().filter_map(|f| find(&f.column)).collect();
            let encoder = Encoder::new(schema, secret).map_err(|e| CliError::Usage(format!("--clk-secret: {e}")))?;
            Some((encoder, at))
        }
    };
    let id_at = match &options.id_column {
        Some(name) => Some(find(name).ok_or_else(|| {
            CliError::Input(format!(
                "{}: no '{name}' column for --id-column (columns: {})",
                options.input.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })?),
        None => None,
    };
    let mut fields = Vec::new();
    if let (Some(i), Some(_)) = (id_at, &options.id_column) {
        fields.push(Field::new(headers[i].trim(), DataType::Utf8, false));
    }
    if contacts {
        fields.push(Field::new("email_sha256", DataType::FixedSizeBinary(32), true));
        fields.push(Field::new("phone_sha256", DataType::FixedSizeBinary(32), true));
    }
    if clk.is_some() {
        fields.push(Field::new("clk", DataType::Binary, false));
        fields.push(Field::new(
            "clk_blocking_keys",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));

    let dir = options.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = options.output.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| -> Result<HashSummary, CliError> {
        let mut out = Output::create(&tmp, &options.output, &schema)?;
        let bar = if options.progress { ProgressBar::new(size) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{spinner} hashing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .map_err(|e| CliError::Input(e.to_string()))?
                .progress_chars("=> "),
        );
        let mut summary = HashSummary {
            output: options.output.display().to_string(),
            profile: options.profile.name().to_owned(),
            clk_fields: clk
                .as_ref()
                .map(|(e, _)| e.schema().fields.iter().map(|f| format!("{} ({})", f.column, f.role)).collect())
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut builders = Builders::new(id_at.is_some(), contacts, clk.is_some());
        let mut filter = vec![0u64; clk.as_ref().map_or(0, |(e, _)| e.words())];
        let mut record = csv::StringRecord::new();
        loop {
            let more = reader.read_record(&mut record).map_err(|e| {
                CliError::Input(format!(
                    "{}: {e} (every row needs as many fields as the header)",
                    options.input.display()
                ))
            })?;
            if !more {
                break;
            }
            summary.rows += 1;
            let line = summary.rows + 1;
            if let (Some(i), Some(b)) = (id_at, builders.id.as_mut()) {
                let id = record.get(i).unwrap_or_default().trim();
                if id.is_empty() {
                    return Err(CliError::Input(format!(
                        "{} line {line}: the id column '{}' is empty; every row needs an id",
                        options.input.display(),
                        options.id_column.as_deref().unwrap_or_default()
                    )));
                }
                b.append_value(id);
            }
            let email = match email_at.and_then(|i| record.get(i)).filter(|v| !v.trim().is_empty()) {
                None => {
                    summary.emails_missing += 1;
                    None
                }
                Some(raw) => match normalize::email_with(raw, options.profile) {
                    Ok(e) => {
                        summary.emails_hashed += 1;
                        Some(sha256(e.as_bytes()))
                    }
                    Err(_) => {
                        summary.emails_invalid += 1;
                        summary.first_invalid_email_line.get_or_insert(line);
                        None
                    }
                },
            };
            append_digest(&mut builders.email, email)?;
            let phone = match phone_at.and_then(|i| record.get(i)).filter(|v| !v.trim().is_empty()) {
                None => {
                    summary.phones_missing += 1;
                    None
                }
                Some(raw) => match normalize::phone_with(raw, options.region, options.profile) {
                    Ok(p) => {
                        summary.phones_hashed += 1;
                        Some(sha256(p.as_bytes()))
                    }
                    Err(_) => {
                        summary.phones_invalid += 1;
                        summary.first_invalid_phone_line.get_or_insert(line);
                        None
                    }
                },
            };
            append_digest(&mut builders.phone, phone)?;
            if let (Some((encoder, at)), Some((filters, keys))) = (&clk, builders.clk.as_mut()) {
                let values: Vec<Option<&str>> =
                    at.iter().map(|i| record.get(*i).filter(|v| !v.trim().is_empty())).collect();
                encoder.encode_into(&values, &mut filter);
                filters.append_value(clk::to_bytes(&filter));
                for key in encoder.keyed_blocking_keys(&values) {
                    keys.values().append_value(clk::key_to_hex(key));
                }
                keys.append(true);
            }
            builders.rows += 1;
            if builders.rows == BATCH_ROWS {
                out.write(&builders.finish(&schema)?).map_err(|e| CliError::io(&tmp, std::io::Error::other(e)))?;
                bar.set_position(reader.position().byte());
            }
        }
        if builders.rows > 0 {
            out.write(&builders.finish(&schema)?).map_err(|e| CliError::io(&tmp, std::io::Error::other(e)))?;
        }
        if summary.rows == 0 {
            return Err(CliError::Input(format!("{}: the file has a header but no rows", options.input.display())));
        }
        let file = out.finish().map_err(|e| CliError::io(&tmp, std::io::Error::other(e)))?;
        file.sync_all().map_err(|e| CliError::io(&tmp, e))?;
        std::fs::rename(&tmp, &options.output).map_err(|e| CliError::io(&options.output, e))?;
        bar.finish_and_clear();
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use sealroom_matching::hash::sha256_hex;

    fn options(dir: &Path, csv: &str, output: &str) -> HashOptions {
        let input = dir.join("in.csv");
        std::fs::write(&input, csv).unwrap();
        HashOptions {
            input,
            output: dir.join(output),
            email_column: "email".into(),
            phone_column: "phone".into(),
            id_column: Some("customer_id".into()),
            region: normalize::region("US").unwrap(),
            profile: Profile::Sealroom,
            clk_secret: None,
            clk_columns: Vec::new(),
            progress: false,
        }
    }

    fn read_ipc(path: &Path) -> RecordBatch {
        let reader = arrow::ipc::reader::FileReader::try_new(File::open(path).unwrap(), None).unwrap();
        let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn normalizes_hashes_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "customer_id,Email,phone\nc1, Jane.Doe@Example.COM ,(415) 867-5309\nc2,,+44 20 7946 0018\nc3,not-an-email,12\n";
        let o = options(dir.path(), csv, "out.arrow");
        let summary = hash_csv(&o).unwrap();
        assert_eq!(summary.rows, 3);
        assert_eq!((summary.emails_hashed, summary.emails_missing, summary.emails_invalid), (1, 1, 1));
        assert_eq!(summary.first_invalid_email_line, Some(4));
        assert_eq!((summary.phones_hashed, summary.phones_invalid), (2, 1));
        let batch = read_ipc(&o.output);
        let email = batch.column_by_name("email_sha256").unwrap().as_fixed_size_binary();
        assert_eq!(hex::encode(email.value(0)), sha256_hex(b"jane.doe@example.com"));
        assert!(email.is_null(1) && email.is_null(2));
        let phone = batch.column_by_name("phone_sha256").unwrap().as_fixed_size_binary();
        assert_eq!(hex::encode(phone.value(0)), sha256_hex(b"+14158675309"));
        assert_eq!(hex::encode(phone.value(1)), sha256_hex(b"+442079460018"));
        assert_eq!(batch.column_by_name("customer_id").unwrap().as_string::<i32>().value(2), "c3");
    }

    #[test]
    fn writes_parquet_too() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path(), "customer_id,email\nc1,a@b.c\n", "out.parquet");
        hash_csv(&o).unwrap();
        let file = File::open(&o.output).unwrap();
        // A real Parquet file (not Arrow IPC under a .parquet name).
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1);
    }

    #[test]
    fn bad_input_is_explained_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path(), "customer_id,name\nc1,x\n", "out.arrow");
        let err = hash_csv(&o).unwrap_err().to_string();
        assert!(err.contains("no 'email' or 'phone' column (columns: customer_id, name)"), "{err}");
        let o = options(dir.path(), "customer_id,email\nc1,a@b.c\n,x@y.z\n", "out.arrow");
        let err = hash_csv(&o).unwrap_err().to_string();
        assert!(err.contains("line 3: the id column 'customer_id' is empty"), "{err}");
        assert!(!o.output.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        let o = options(dir.path(), "customer_id,email\nc1,a@b.c\n", "out.csv");
        assert!(hash_csv(&o).unwrap_err().to_string().contains("end it in .parquet or .arrow"));
    }

    #[test]
    fn profiles_follow_the_platforms_rules() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "customer_id,email,phone\nc1,Jane.Doe+ads@GMail.com,(415) 867-5309\n";
        let digest_under = |profile: Profile| {
            let mut o = options(dir.path(), csv, "out.arrow");
            o.profile = profile;
            let summary = hash_csv(&o).unwrap();
            assert_eq!(summary.profile, profile.name());
            let batch = read_ipc(&o.output);
            let email = hex::encode(batch.column_by_name("email_sha256").unwrap().as_fixed_size_binary().value(0));
            let phone = hex::encode(batch.column_by_name("phone_sha256").unwrap().as_fixed_size_binary().value(0));
            (email, phone)
        };
        // Google: dots go from gmail addresses, '+' suffixes stay; phones in E.164.
        assert_eq!(digest_under(Profile::Google), (sha256_hex(b"janedoe+ads@gmail.com"), sha256_hex(b"+14158675309")));
        // UID2: dots and the '+' suffix go.
        assert_eq!(digest_under(Profile::Uid2).0, sha256_hex(b"janedoe@gmail.com"));
        // Meta: phones are digits with the country code, no '+'.
        assert_eq!(digest_under(Profile::Meta).1, sha256_hex(b"14158675309"));
    }

    #[test]
    fn clk_encodes_names_with_the_secret_and_keyed_blocking_keys() {
        let dir = tempfile::tempdir().unwrap();
        let csv =
            "customer_id,first_name,surname,dob,email\nc1,Jane,Smith,1985-03-12,j@x.com\nc2,Jane,Smyth,3/12/1985,\n";
        let mut o = options(dir.path(), csv, "out.arrow");
        o.clk_secret = Some(b"a room secret of 32 bytes.......".to_vec());
        let summary = hash_csv(&o).unwrap();
        assert_eq!(summary.clk_fields, ["first_name (given_name)", "surname (surname)", "dob (date_of_birth)"]);
        let batch = read_ipc(&o.output);
        let clks = batch.column_by_name("clk").unwrap().as_binary::<i32>();
        assert_eq!(clks.value(0).len(), 128, "1024-bit filters");
        let mut filters = clk::Filters::new(16);
        filters.push_bytes(clks.value(0)).unwrap();
        filters.push_bytes(clks.value(1)).unwrap();
        assert!(filters.dice(0, &filters, 1) > 0.8, "a one-letter typo keeps the filters close");
        let keys = batch.column_by_name("clk_blocking_keys").unwrap().as_list::<i32>();
        let first = keys.value(0);
        let first = first.as_string::<i32>();
        assert!(first.len() >= 3 && first.iter().all(|k| k.is_some_and(|k| k.len() == 16)));
        // Emails keep their own hashed column and stay out of the filter.
        assert!(batch.column_by_name("email_sha256").is_some());
        // A column that is not a CLK field is refused with its name.
        o.clk_columns = vec!["customer_id".into()];
        assert!(hash_csv(&o).unwrap_err().to_string().contains("column 'customer_id' is not a field a CLK can encode"));
        o.clk_columns = vec!["nope".into()];
        assert!(hash_csv(&o).unwrap_err().to_string().contains("no 'nope' column for --clk-columns"));
        // Without name columns there is nothing to encode.
        let mut o = options(dir.path(), "customer_id,email\nc1,a@b.c\n", "out2.arrow");
        o.clk_secret = Some(vec![7; 32]);
        assert!(hash_csv(&o).unwrap_err().to_string().contains("--clk found no name, birth-date or address column"));
    }
}
