//! Embedded storage in a data directory.
//!
//! ```text
//! <data dir>/rooms/<room id>/
//!     contract.pb                    the first version's canonical contract bytes (their SHA-256 is the room id)
//!     audit.jsonl                    the audit log
//!     staging/                       uploads in flight; emptied on every start
//!     tables/<table>/current.json    manifest of the committed version (sealed)
//!     tables/<table>/<version>.arrow the committed version (Arrow IPC file, sealed)
//!     runs/<computation>/<run>.json  computed (unreleased) results and run records (sealed)
//!     state/<computation>.json       state a computation keeps between runs (sealed)
//!     state/_privacy_budget.json     the differential-privacy ledger (sealed)
//!     activations/<id>.json          released activations kept until their sink takes them (sealed)
//!     deals/<deal id>.json           deals made for audiences released to publishers (sealed)
//!     governance/versions/<n>.json   contract versions after the first, chained by digest (sealed)
//!     governance/proposals/<id>.json proposed versions and their signed decisions (sealed)
//! ```
//!
//! Every file but the contract and the audit log is sealed ([`crate::seal`]): AES-256-GCM under a
//! key derived from the TEE, bound to its path, so a changed, truncated or swapped file is refused
//! on read with an error that names it.
//!
//! A version becomes visible only when `current.json` is atomically replaced (write to a temporary
//! file, fsync, rename, fsync the directory). A crash at any point leaves either the old manifest or
//! the new one; files no manifest names are removed on the next start. Nothing here ever leaves the
//! engine: datasets are read only by computations.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::ipc::reader::FileReader;
use arrow::record_batch::RecordBatch;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::seal::{MasterKey, Sealer};

/// The manifest of a committed dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetManifest {
    pub table: String,
    pub version: String,
    /// File name of the version, relative to the table's directory.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub uploader: String,
    pub committed_at: String,
    /// SHA-256 of the stored Arrow IPC file.
    pub data_sha256: String,
    /// What the uploader should know about its own data (plaintext emails or phones that do not
    /// normalize and so will never match); shown only to the uploader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A committed dataset version. When a newer version replaces it, the file is deleted as soon as the
/// last computation reading it lets go.
#[derive(Debug)]
pub(crate) struct DatasetFile {
    pub manifest: DatasetManifest,
    pub path: PathBuf,
    sealer: Sealer,
    superseded: AtomicBool,
}

impl DatasetFile {
    pub(crate) fn supersede(&self) {
        self.superseded.store(true, Ordering::SeqCst);
    }

    /// Reads the whole version, checking that it is the file sealed under its name.
    pub(crate) fn read(&self) -> Result<Vec<RecordBatch>> {
        let bytes = self.sealer.read(&self.path)?;
        let reader =
            FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| Error::storage(&self.path, e))?;
        reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| Error::storage(&self.path, e))
    }
}

impl Drop for DatasetFile {
    fn drop(&mut self) {
        if self.superseded.load(Ordering::SeqCst)
            && let Err(e) = fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a superseded dataset version");
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| Error::storage(path, "no parent directory"))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::storage(path, e));
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::storage(dir, e))
}

/// The file name of a dataset version, in its table's directory.
pub(crate) fn dataset_file_name(version: &str) -> String {
    format!("{version}.arrow")
}

/// A new random id with a time prefix, so ids sort by creation time.
pub(crate) fn new_id(prefix: &str) -> String {
    let millis = chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ");
    let suffix: u32 = rand::rng().random();
    format!("{prefix}{millis}-{suffix:08x}")
}

/// The storage of one room.
#[derive(Debug, Clone)]
pub(crate) struct RoomStorage {
    root: PathBuf,
    sealer: Sealer,
}

impl RoomStorage {
    /// Opens the room's directory, creating it for a new room, checking the stored contract of an
    /// existing one, and cleaning what a crash left behind.
    pub(crate) fn open(data_dir: &Path, room_id: &str, contract_bytes: &[u8], master: &MasterKey) -> Result<Self> {
        let root = data_dir.join("rooms").join(room_id);
        for dir in [root.clone(), root.join("staging"), root.join("tables"), root.join("runs")] {
            fs::create_dir_all(&dir).map_err(|e| Error::storage(&dir, e))?;
        }
        let contract_path = root.join("contract.pb");
        match fs::read(&contract_path) {
            Ok(existing) if existing == contract_bytes => {}
            Ok(_) => {
                return Err(Error::storage(
                    &contract_path,
                    "the stored contract differs from the room's contract although the room id is the same; the data \
                     directory was tampered with",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomically(&contract_path, contract_bytes)?,
            Err(e) => return Err(Error::storage(&contract_path, e)),
        }
        let sealer = master.sealer(room_id, &root)?;
        let storage = Self { root, sealer };
        storage.clear_staging()?;
        Ok(storage)
    }

    /// Seals and opens this room's files.
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub(crate) fn audit_path(&self) -> PathBuf {
        self.root.join("audit.jsonl")
    }

    fn clear_staging(&self) -> Result<()> {
        let staging = self.root.join("staging");
        for entry in fs::read_dir(&staging).map_err(|e| Error::storage(&staging, e))? {
            let path = entry.map_err(|e| Error::storage(&staging, e))?.path();
            tracing::info!(path = %path.display(), "removing an upload that never committed");
            fs::remove_file(&path).map_err(|e| Error::storage(&path, e))?;
        }
        Ok(())
    }

    /// A fresh path for an upload in flight.
    pub(crate) fn staging_path(&self, table: &str) -> PathBuf {
        self.root.join("staging").join(format!("{}.arrow", new_id(&format!("{table}-"))))
    }

    fn table_dir(&self, table: &str) -> PathBuf {
        self.root.join("tables").join(table)
    }

    /// Where version `version` of `table` is stored once committed (what its data is sealed as).
    pub(crate) fn dataset_path(&self, table: &str, version: &str) -> PathBuf {
        self.table_dir(table).join(dataset_file_name(version))
    }

    /// Loads the committed version of a table, removing files no manifest names.
    pub(crate) fn load_dataset(&self, table: &str) -> Result<Option<DatasetFile>> {
        let dir = self.table_dir(table);
        if !dir.exists() {
            return Ok(None);
        }
        let manifest_path = dir.join("current.json");
        let manifest: Option<DatasetManifest> = self.sealer.read_json_if_exists(&manifest_path)?;
        for entry in fs::read_dir(&dir).map_err(|e| Error::storage(&dir, e))? {
            let path = entry.map_err(|e| Error::storage(&dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let keep = name == "current.json" || manifest.as_ref().is_some_and(|m| m.file == name);
            if !keep {
                tracing::info!(path = %path.display(), "removing a dataset file no manifest names");
                fs::remove_file(&path).map_err(|e| Error::storage(&path, e))?;
            }
        }
        Ok(manifest.map(|m| {
            let path = dir.join(&m.file);
            DatasetFile { manifest: m, path, sealer: self.sealer.clone(), superseded: AtomicBool::new(false) }
        }))
    }

    /// Moves a fully written and synced staging file into place and publishes its manifest.
    pub(crate) fn commit(&self, staged: &Path, manifest: DatasetManifest) -> Result<DatasetFile> {
        let dir = self.table_dir(&manifest.table);
        fs::create_dir_all(&dir).map_err(|e| Error::storage(&dir, e))?;
        // The name the data was sealed under while it streamed in.
        let path = self.dataset_path(&manifest.table, &manifest.version);
        fs::rename(staged, &path).map_err(|e| Error::storage(&path, e))?;
        sync_dir(&dir)?;
        if let Err(e) = self.sealer.write_json_atomically(&dir.join("current.json"), &manifest) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(DatasetFile { manifest, path, sealer: self.sealer.clone(), superseded: AtomicBool::new(false) })
    }

    pub(crate) fn runs_dir(&self, computation: &str) -> PathBuf {
        self.root.join("runs").join(computation)
    }

    /// Deals made for released audiences ([`crate::deal`]).
    pub(crate) fn deals_dir(&self) -> PathBuf {
        self.root.join("deals")
    }

    pub(crate) fn deal_path(&self, id: &str) -> PathBuf {
        self.deals_dir().join(format!("{id}.json"))
    }

    /// Activations kept until their sink takes them ([`crate::outbox`]).
    pub(crate) fn activations_dir(&self) -> PathBuf {
        self.root.join("activations")
    }

    pub(crate) fn activation_path(&self, id: &str) -> PathBuf {
        self.activations_dir().join(format!("{id}.json"))
    }

    /// Contract versions after the first ([`crate::governance`]).
    pub(crate) fn versions_dir(&self) -> PathBuf {
        self.root.join("governance").join("versions")
    }

    pub(crate) fn version_path(&self, version: u64) -> PathBuf {
        self.versions_dir().join(format!("{version:08}.json"))
    }

    /// Proposed contract versions ([`crate::governance`]).
    pub(crate) fn proposals_dir(&self) -> PathBuf {
        self.root.join("governance").join("proposals")
    }

    /// State a computation keeps between runs (measurement's reach sketches), never released.
    pub(crate) fn state_path(&self, computation: &str) -> PathBuf {
        self.root.join("state").join(format!("{computation}.json"))
    }
}
