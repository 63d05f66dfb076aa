//! Sealed storage: everything the engine keeps about a room's data is encrypted at rest.
//!
//! **Keys.** The master sealing key comes from the TEE: on AMD SEV-SNP it is the firmware's derived
//! key (`MSG_KEY_REQ` through `sev`, mixing in the launch measurement and the guest policy, so
//! another image or policy derives another key); on SGX under Gramine it is the MRENCLAVE sealing
//! key. Intel TDX has no sealing key: a TD must be given one (`sealing_key_file`, on storage only
//! the TD can read, e.g. released by a key broker after attestation). The **INSECURE** simulated TEE
//! keeps a random key in a file with mode 0600 (`<data dir>/sealing.key` by default) — anyone who
//! can read that file can read the data. Each room's key is HKDF-SHA256(master, room id), so rooms
//! never share a key.
//!
//! **Format.** A sealed file is `SRSEAL01`, an 8-byte random nonce prefix, then chunks of at most
//! 1 MiB of plaintext, each AES-256-GCM encrypted (ring) with the nonce `prefix ‖ chunk index` and
//! the additional data `file label ‖ chunk index ‖ last flag`, where the label is the file's path
//! inside the room directory. This is the STREAM construction: a changed byte fails the chunk's
//! tag, reordered chunks fail their index, a truncated file lacks its last chunk, and a file moved
//! or copied to another name (another run, another room) fails its label. The last chunk is always
//! shorter than a full one (empty when the plaintext is a multiple of the chunk size).
//!
//! **Not defended.** A whole room directory rolled back to an earlier copy (every file sealed by
//! the same key) unseals; the signed, hash-chained audit log is where such a rollback shows.
//!
//! The contract (`contract.pb`, its hash is the room id) and the audit log (signed, and served to
//! participants anyway) are not secret and are kept in the clear.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// The first bytes of every sealed file.
const MAGIC: &[u8; 8] = b"SRSEAL01";
/// Plaintext bytes per chunk.
const CHUNK: usize = 1 << 20;
const TAG: usize = 16;
const PREFIX: usize = 8;
const HEADER: usize = MAGIC.len() + PREFIX;

/// The TEE's sealing key, from which every room's key is derived.
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key in `path` (32 raw bytes, mode 0600), made with fresh randomness if the file does not
    /// exist. A key file others can read is refused: it would let them read every room.
    pub fn from_key_file(path: &Path) -> Result<Self> {
        match fs::read(path) {
            Ok(bytes) => {
                check_private(path)?;
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    Error::storage(path, format!("a sealing key file holds 32 bytes; this one has {}", bytes.len()))
                })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new().fill(&mut key).map_err(|_| Error::storage(path, "no randomness for a key"))?;
                write_private(path, &key)?;
                tracing::warn!(path = %path.display(), "made a new sealing key file (INSECURE: simulated TEE)");
                Ok(Self(key))
            }
            Err(e) => Err(Error::storage(path, e)),
        }
    }

    /// The room's sealer for files under `root`: its key is HKDF-SHA256(master, room id).
    pub(crate) fn sealer(&self, room_id: &str, root: &Path) -> Result<Sealer> {
        let failed = |what: &str| Error::storage(root, format!("cannot derive the room's sealing key: {what}"));
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sealroom sealed storage v1").extract(&self.0);
        let info = [room_id.as_bytes()];
        let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| failed("HKDF expand"))?;
        let unbound = UnboundKey::from(okm);
        Ok(Sealer { key: LessSafeKey::new(unbound), root: root.to_owned() })
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).map_err(|e| Error::storage(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::storage(
            path,
            format!(
                "the sealing key file is readable by others (mode {:o}); anyone who reads it can read every room: \
                 `chmod 600 {}`",
                mode & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    sealroom_attest::create_private(path, bytes).map_err(|e| Error::storage(path, e))
}

/// Seals and opens one room's files.
#[derive(Debug, Clone)]
pub(crate) struct Sealer {
    key: LessSafeKey,
    root: PathBuf,
}

fn nonce(prefix: &[u8; PREFIX], index: u32) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(label: &str, index: u32, last: bool) -> Vec<u8> {
    let mut a = Vec::with_capacity(label.len() + 5);
    a.extend_from_slice(label.as_bytes());
    a.extend_from_slice(&index.to_be_bytes());
    a.push(u8::from(last));
    a
}

impl Sealer {
    /// The label a file is sealed under: its path inside the room directory.
    fn label(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().replace('\\', "/")
    }

    fn tampered(path: &Path, what: &str) -> Error {
        Error::storage(
            path,
            format!(
                "sealed file failed its integrity check ({what}): it was modified, truncated or moved outside the \
                 enclave, or sealed under another key (another TEE, launch measurement or sealing key file). It is \
                 not used; restore it from a backup of this data directory or remove the room's data"
            ),
        )
    }

    /// A writer that seals everything written to `inner` as the file at `path`.
    pub(crate) fn writer<W: Write>(&self, path: &Path, mut inner: W) -> Result<SealedWriter<W>> {
        let mut prefix = [0u8; PREFIX];
        SystemRandom::new().fill(&mut prefix).map_err(|_| Error::storage(path, "no randomness for a nonce"))?;
        inner.write_all(MAGIC).and_then(|()| inner.write_all(&prefix)).map_err(|e| Error::storage(path, e))?;
        Ok(SealedWriter {
            key: self.key.clone(),
            label: self.label(path),
            prefix,
            index: 0,
            buffer: Vec::with_capacity(CHUNK + TAG),
            inner,
        })
    }

    /// `plaintext` sealed as the file at `path`.
    pub(crate) fn seal(&self, path: &Path, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut writer = self.writer(path, Vec::with_capacity(plaintext.len() + HEADER + TAG))?;
        writer.write_all(plaintext).map_err(|e| Error::storage(path, e))?;
        writer.finish().map_err(|e| Error::storage(path, e))
    }

    /// The plaintext of `sealed`, the content of the file at `path`.
    #[cfg(test)]
    pub(crate) fn open(&self, path: &Path, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_owned(path, sealed.to_vec())
    }

    /// The plaintext of `sealed`, the content of the file at `path`, decrypted in place: each chunk
    /// moves down over the header and the tags before it, so a large file is not held twice.
    fn open_owned(&self, path: &Path, mut sealed: Vec<u8>) -> Result<Vec<u8>> {
        if !sealed.starts_with(MAGIC) {
            return Err(Self::tampered(path, "no sealed-file header"));
        }
        let Some(prefix) = sealed.get(MAGIC.len()..HEADER).and_then(|p| <[u8; PREFIX]>::try_from(p).ok()) else {
            return Err(Self::tampered(path, "the header is cut short"));
        };
        let label = self.label(path);
        let (mut src, mut dst) = (HEADER, 0);
        let mut index: u32 = 0;
        loop {
            let left = sealed.len() - src;
            let last = left < CHUNK + TAG;
            let len = left.min(CHUNK + TAG);
            if last && len < TAG {
                return Err(Self::tampered(path, "the file is cut short"));
            }
            let opened = self
                .key
                .open_within(
                    nonce(&prefix, index),
                    Aad::from(aad(&label, index, last)),
                    &mut sealed[dst..src + len],
                    (src - dst)..,
                )
                .map_err(|_| Self::tampered(path, &format!("chunk {index} does not authenticate")))?
                .len();
            dst += opened;
            src += len;
            if last {
                sealed.truncate(dst);
                return Ok(sealed);
            }
            index = index.checked_add(1).ok_or_else(|| Self::tampered(path, "too many chunks"))?;
        }
    }

    /// Reads and opens the file at `path`; `None` when it does not exist.
    pub(crate) fn read_if_exists(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(sealed) => self.open_owned(path, sealed).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::storage(path, e)),
        }
    }

    /// Reads and opens the file at `path`.
    pub(crate) fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let sealed = fs::read(path).map_err(|e| Error::storage(path, e))?;
        self.open_owned(path, sealed)
    }

    /// Reads the sealed JSON file at `path`.
    pub(crate) fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T> {
        serde_json::from_slice(&self.read(path)?).map_err(|e| Error::storage(path, e))
    }

    /// Reads the sealed JSON file at `path`; `None` when it does not exist.
    pub(crate) fn read_json_if_exists<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        self.read_if_exists(path)?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| Error::storage(path, e)))
            .transpose()
    }

    /// Every sealed JSON file (`*.json`) in `dir`, in file-name order; none when `dir` does not exist.
    pub(crate) fn read_json_dir<T: serde::de::DeserializeOwned>(&self, dir: &Path) -> Result<Vec<T>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::storage(dir, e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::storage(dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(|p| self.read_json(p)).collect()
    }

    /// Seals `bytes` to `path` atomically (see [`crate::storage::write_atomically`]).
    pub(crate) fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        crate::storage::write_atomically(path, &self.seal(path, bytes)?)
    }

    /// Seals `value` as JSON to `path` atomically, creating its directory first.
    pub(crate) fn write_json_atomically(&self, path: &Path, value: &impl serde::Serialize) -> Result<()> {
        let dir = path.parent().ok_or_else(|| Error::storage(path, "no parent directory"))?;
        fs::create_dir_all(dir).map_err(|e| Error::storage(dir, e))?;
        let bytes = serde_json::to_vec(value).map_err(|e| Error::storage(path, e))?;
        self.write_atomically(path, &bytes)
    }
}

/// Seals what is written to it, chunk by chunk; [`SealedWriter::finish`] writes the last chunk.
pub(crate) struct SealedWriter<W: Write> {
    key: LessSafeKey,
    label: String,
    prefix: [u8; PREFIX],
    index: u32,
    buffer: Vec<u8>,
    inner: W,
}

impl<W: Write> SealedWriter<W> {
    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let aad = aad(&self.label, self.index, last);
        self.key
            .seal_in_place_append_tag(nonce(&self.prefix, self.index), Aad::from(aad), &mut self.buffer)
            .map_err(|_| io::Error::other("AES-GCM sealing failed"))?;
        self.inner.write_all(&self.buffer)?;
        self.buffer.clear();
        self.index = self.index.checked_add(1).ok_or_else(|| io::Error::other("a sealed file of 4 PiB"))?;
        Ok(())
    }

    /// Seals the last chunk and returns the inner writer (flushed).
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.buffer.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        self.seal_chunk(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // A full chunk is sealed only once more follows, so the last chunk is always short.
        if self.buffer.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        let n = buf.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sealer(room: &str) -> Sealer {
        MasterKey::from_bytes([7; 32]).sealer(room, Path::new("/data/rooms/r")).unwrap()
    }

    fn path(name: &str) -> PathBuf {
        Path::new("/data/rooms/r").join(name)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let s = sealer("room");
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = s.seal(&path("runs/a.json"), &plain).unwrap();
            assert_eq!(sealed.len(), HEADER + len + TAG * (len / CHUNK + 1), "len {len}");
            assert_eq!(s.open(&path("runs/a.json"), &sealed).unwrap(), plain, "len {len}");
        }
    }

    #[test]
    fn a_file_is_bound_to_its_name_its_room_and_the_key() {
        let s = sealer("room");
        let sealed = s.seal(&path("runs/a.json"), b"secret").unwrap();
        let err = s.open(&path("runs/b.json"), &sealed).unwrap_err().to_string();
        assert!(err.contains("runs/b.json") && err.contains("failed its integrity check"), "{err}");
        assert!(sealer("other room").open(&path("runs/a.json"), &sealed).is_err());
        let other_key = MasterKey::from_bytes([8; 32]).sealer("room", Path::new("/data/rooms/r")).unwrap();
        assert!(other_key.open(&path("runs/a.json"), &sealed).is_err());
        // Plaintext (an unsealed file) is refused, not parsed.
        let err = s.open(&path("runs/a.json"), b"{\"rows\": 1}").unwrap_err().to_string();
        assert!(err.contains("no sealed-file header"), "{err}");
    }

    #[test]
    fn truncation_at_a_chunk_boundary_and_reordering_are_detected() {
        let s = sealer("room");
        let plain = vec![3u8; 2 * CHUNK + 10];
        let p = path("tables/t/v.arrow");
        let sealed = s.seal(&p, &plain).unwrap();
        let full = CHUNK + TAG;
        // Cut after the first or second full chunk: no last chunk.
        for cut in [HEADER + full, HEADER + 2 * full] {
            assert!(s.open(&p, &sealed[..cut]).is_err(), "cut at {cut}");
        }
        // Swap the first two chunks.
        let mut swapped = sealed[..HEADER].to_vec();
        swapped.extend_from_slice(&sealed[HEADER + full..HEADER + 2 * full]);
        swapped.extend_from_slice(&sealed[HEADER..HEADER + full]);
        swapped.extend_from_slice(&sealed[HEADER + 2 * full..]);
        assert!(s.open(&p, &swapped).is_err());
    }

    #[test]
    fn key_files_are_made_private_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sealing.key");
        let a = MasterKey::from_key_file(&p).unwrap();
        let b = MasterKey::from_key_file(&p).unwrap();
        assert_eq!(a.0, b.0, "the second start reads the same key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            let err = MasterKey::from_key_file(&p).unwrap_err().to_string();
            assert!(err.contains("readable by others (mode 644)") && err.contains("chmod 600"), "{err}");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::write(&p, b"short").unwrap();
        assert!(MasterKey::from_key_file(&p).unwrap_err().to_string().contains("holds 32 bytes; this one has 5"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any single changed byte of a sealed file is detected.
        #[test]
        fn any_flipped_byte_is_detected(len in 0usize..3000, at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let s = sealer("room");
            let p = path("state/m.json");
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut sealed = s.seal(&p, &plain).unwrap();
            let i = at.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert!(s.open(&p, &sealed).is_err());
        }

        /// Written in any pieces, a file opens to what was written.
        #[test]
        fn pieces_round_trip(pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..500), 0..20)) {
            let s = sealer("room");
            let p = path("runs/x.artifacts");
            let mut w = s.writer(&p, Vec::new()).unwrap();
            for piece in &pieces {
                w.write_all(piece).unwrap();
            }
            let sealed = w.finish().unwrap();
            prop_assert_eq!(s.open(&p, &sealed).unwrap(), pieces.concat());
        }
    }
}
