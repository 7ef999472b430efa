//! The archive file: a versioned plain header, then a tar stream (compressed, then encrypted when
//! configured). Members: `s3db.json` (the backed-up resources' definitions), one JSON-lines
//! member per resource (`resources/NAME.jsonl`), and `manifest.json` last, with each member's
//! SHA-256. The same format holds a backup's index (one `index.jsonl` member).
//!
//! Owns: byte layout, compression, member hashing. Memory stays bounded whatever the database
//! size: a member is spooled to a temporary file (tar needs its size up front), then copied into
//! the stream. Never: talks to a store or a destination.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::crypto::{
    CryptoError, DataKey, DecryptReader, EncryptWriter, EncryptionHeader, Kdf, Passphrase,
};
use crate::manifest::hex;
use crate::manifest::model::{Compression, EncryptionConfig};

/// A key-encryption key, wiped from memory when dropped.
type Kek = Zeroizing<[u8; 32]>;

const MAGIC: &[u8; 8] = b"S3DBBAK\n";
pub const FORMAT_VERSION: u32 = 1;
const MAX_HEADER: usize = 64 * 1024;

/// The plain header at the start of every archive. It holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHeader {
    pub format_version: u32,
    pub backup_id: String,
    /// `archive` or `index`.
    pub role: String,
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionHeader>,
}

/// Keys for one backup run or one restore: the passphrase and the key-encryption keys derived
/// from it (derivation is deliberately slow, so each salt is derived once).
pub struct Keyring {
    passphrase: Option<Passphrase>,
    config: Option<EncryptionConfig>,
    writing: Mutex<Option<(Kdf, Kek)>>,
    derived: Mutex<Vec<(Kdf, Kek)>>,
}

impl Keyring {
    pub fn new(passphrase: Option<Passphrase>, config: Option<EncryptionConfig>) -> Self {
        Self {
            passphrase,
            config,
            writing: Mutex::new(None),
            derived: Mutex::new(Vec::new()),
        }
    }

    pub fn encrypts(&self) -> bool {
        self.passphrase.is_some() && self.config.is_some()
    }

    fn for_writing(&self) -> Result<Option<(Kdf, Kek)>, ArchiveError> {
        let (Some(pass), Some(config)) = (&self.passphrase, &self.config) else {
            return Ok(None);
        };
        let mut slot = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let kdf = Kdf::fresh(config);
            let kek = kdf.derive(pass)?;
            *slot = Some((kdf, kek));
        }
        Ok(slot.clone())
    }

    fn for_reading(&self, kdf: &Kdf) -> Result<Kek, ArchiveError> {
        let Some(pass) = &self.passphrase else {
            return Err(ArchiveError::NoKey);
        };
        let mut derived = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, kek)) = derived.iter().find(|(k, _)| k == kdf) {
            return Ok(kek.clone());
        }
        let kek = kdf.derive(pass)?;
        derived.push((kdf.clone(), kek.clone()));
        Ok(kek)
    }
}

/// Hashes and counts everything written through it.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Sink {
    Plain(Hashing<BufWriter<File>>),
    Sealed(Box<EncryptWriter<Hashing<BufWriter<File>>>>),
}

impl Sink {
    fn finish(self) -> io::Result<Hashing<BufWriter<File>>> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Sealed(w) => w.finish(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(data),
            Sink::Sealed(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(w) => w.flush(),
        }
    }
}

enum Compressor {
    None(Sink),
    Gzip(flate2::write::GzEncoder<Sink>),
    Deflate(flate2::write::DeflateEncoder<Sink>),
    Brotli(Box<brotli::CompressorWriter<Sink>>),
}

impl Compressor {
    fn new(kind: Compression, sink: Sink) -> Self {
        let level = flate2::Compression::default();
        match kind {
            Compression::None => Compressor::None(sink),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(sink, level)),
            Compression::Deflate => {
                Compressor::Deflate(flate2::write::DeflateEncoder::new(sink, level))
            }
            // Quality 5 compresses JSON about as well as gzip -9 at gzip's speed; 11 (the
            // library default) is ~20× slower.
            Compression::Brotli => Compressor::Brotli(Box::new(brotli::CompressorWriter::new(
                sink,
                64 * 1024,
                5,
                22,
            ))),
        }
    }

    fn finish(self) -> io::Result<Sink> {
        match self {
            Compressor::None(s) => Ok(s),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Deflate(w) => w.finish(),
            Compressor::Brotli(mut w) => {
                w.flush()?;
                Ok(w.into_inner())
            }
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(data),
            Compressor::Gzip(w) => w.write(data),
            Compressor::Deflate(w) => w.write(data),
            Compressor::Brotli(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Deflate(w) => w.flush(),
            Compressor::Brotli(w) => w.flush(),
        }
    }
}

/// A member's size, line count and SHA-256, as `manifest.json` records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub sha256: String,
    pub bytes: u64,
    pub lines: u64,
}

struct Spool {
    name: String,
    _file: RemoveOnDrop,
    out: Hashing<BufWriter<File>>,
    lines: u64,
}

/// A spool file is removed however its member ends (added, failed, or abandoned).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes one archive file.
pub struct ArchiveWriter {
    tar: tar::Builder<Compressor>,
    temp_dir: PathBuf,
    spool: Option<Spool>,
    members: IndexMap<String, MemberInfo>,
    mtime: u64,
}

/// The finished file's size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: String,
    pub size: u64,
    pub members: IndexMap<String, MemberInfo>,
}

impl ArchiveWriter {
    pub fn create(
        path: &Path,
        temp_dir: &Path,
        backup_id: &str,
        role: &str,
        compression: Compression,
        keys: &Keyring,
    ) -> Result<Self, ArchiveError> {
        let file = File::create(path).map_err(|e| ArchiveError::io("create", path, &e))?;
        let mut out = Hashing::new(BufWriter::with_capacity(256 * 1024, file));
        let context = format!("{backup_id}/{role}");
        let (key, encryption) = match keys.for_writing()? {
            Some((kdf, kek)) => {
                let (key, header) = DataKey::generate(&kek, kdf, &context);
                (Some(key), Some(header))
            }
            None => (None, None),
        };
        let header = ArchiveHeader {
            format_version: FORMAT_VERSION,
            backup_id: backup_id.into(),
            role: role.into(),
            compression,
            encryption,
        };
        let header_bytes =
            serde_json::to_vec(&header).map_err(|e| ArchiveError::Damaged(e.to_string()))?;
        let io = |e: io::Error| ArchiveError::io("write", path, &e);
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&(header_bytes.len() as u32).to_be_bytes())
            .map_err(io)?;
        out.write_all(&header_bytes).map_err(io)?;
        let sink = match key {
            Some(key) => Sink::Sealed(Box::new(EncryptWriter::new(out, &key, header_bytes))),
            None => Sink::Plain(out),
        };
        let mut tar = tar::Builder::new(Compressor::new(compression, sink));
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            tar,
            temp_dir: temp_dir.to_path_buf(),
            spool: None,
            members: IndexMap::new(),
            mtime: chrono::Utc::now().timestamp().max(0) as u64,
        })
    }

    /// Starts a JSON-lines member; lines go to a spool file until `end_member`.
    pub fn begin_member(&mut self, name: &str) -> Result<(), ArchiveError> {
        if self.spool.is_some() {
            self.end_member()?;
        }
        let path = self.temp_dir.join(format!(
            ".member-{}-{}",
            std::process::id(),
            super::random_suffix()
        ));
        // Read back by `end_member`, so opened for both.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| ArchiveError::io("create a spool file in", &self.temp_dir, &e))?;
        self.spool = Some(Spool {
            name: name.into(),
            _file: RemoveOnDrop(path),
            out: Hashing::new(BufWriter::with_capacity(256 * 1024, file)),
            lines: 0,
        });
        Ok(())
    }

    pub fn write_line(&mut self, line: &[u8]) -> Result<(), ArchiveError> {
        let spool = self.spool.as_mut().ok_or(ArchiveError::NoMember)?;
        spool
            .out
            .write_all(line)
            .and_then(|_| spool.out.write_all(b"\n"))
            .map_err(|e| ArchiveError::Member {
                name: spool.name.clone(),
                reason: e.to_string(),
            })?;
        spool.lines += 1;
        Ok(())
    }

    pub fn end_member(&mut self) -> Result<(), ArchiveError> {
        let Some(spool) = self.spool.take() else {
            return Ok(());
        };
        let (buf, sha256, bytes) = spool.out.finish();
        let result = (|| -> io::Result<()> {
            let mut file = buf.into_inner().map_err(|e| e.into_error())?;
            file.flush()?;
            file.rewind()?;
            let mut header = self.header(bytes);
            self.tar.append_data(&mut header, &spool.name, file)?;
            Ok(())
        })();
        result.map_err(|e| ArchiveError::Member {
            name: spool.name.clone(),
            reason: e.to_string(),
        })?;
        self.members.insert(
            spool.name,
            MemberInfo {
                sha256,
                bytes,
                lines: spool.lines,
            },
        );
        Ok(())
    }

    fn header(&self, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header
    }

    /// Adds a small member held in memory.
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.end_member()?;
        let mut header = self.header(data.len() as u64);
        self.tar
            .append_data(&mut header, name, data)
            .map_err(|e| ArchiveError::Member {
                name: name.into(),
                reason: e.to_string(),
            })?;
        self.members.insert(
            name.into(),
            MemberInfo {
                sha256: hex(&Sha256::digest(data)),
                bytes: data.len() as u64,
                lines: 0,
            },
        );
        Ok(())
    }

    pub fn members(&self) -> &IndexMap<String, MemberInfo> {
        &self.members
    }

    /// Ends the tar stream, the compression and the encryption, and syncs the file.
    pub fn finish(mut self) -> Result<Written, ArchiveError> {
        self.end_member()?;
        let io = |e: io::Error| ArchiveError::Finish(e.to_string());
        let compressor = self.tar.into_inner().map_err(io)?;
        let sink = compressor.finish().map_err(io)?;
        let hashing = sink.finish().map_err(io)?;
        let (buf, sha256, size) = hashing.finish();
        let file = buf.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(Written {
            sha256,
            size,
            members: self.members,
        })
    }
}

/// Reads the header of an archive file.
pub fn read_header(file: &mut impl Read) -> Result<(ArchiveHeader, Vec<u8>), ArchiveError> {
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| ArchiveError::Damaged("not an s3db-run backup archive (too short)".into()))?;
    if &magic != MAGIC {
        return Err(ArchiveError::Damaged(
            "not an s3db-run backup archive (bad magic bytes)".into(),
        ));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len)
        .map_err(|_| ArchiveError::Damaged("the archive header is truncated".into()))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(ArchiveError::Damaged(
            "the archive header is too large (damaged archive)".into(),
        ));
    }
    let mut raw = vec![0u8; len];
    file.read_exact(&mut raw)
        .map_err(|_| ArchiveError::Damaged("the archive header is truncated".into()))?;
    let header: ArchiveHeader = serde_json::from_slice(&raw)
        .map_err(|e| ArchiveError::Damaged(format!("the archive header is damaged: {e}")))?;
    if header.format_version > FORMAT_VERSION {
        return Err(ArchiveError::TooNew(header.format_version));
    }
    Ok((header, raw))
}

/// An open archive: its header and its tar stream.
pub struct ArchiveReader {
    pub header: ArchiveHeader,
    pub tar: tar::Archive<Box<dyn Read + Send>>,
}

impl ArchiveReader {
    /// Opens an archive; `expect_id` guards against an archive renamed to another backup's key.
    pub fn open(path: &Path, expect_id: &str, keys: &Keyring) -> Result<Self, ArchiveError> {
        let file = File::open(path).map_err(|e| ArchiveError::io("open", path, &e))?;
        let mut file = BufReader::with_capacity(256 * 1024, file);
        let (header, raw) = read_header(&mut file)?;
        if header.backup_id != expect_id {
            return Err(ArchiveError::WrongBackup {
                found: header.backup_id,
                expected: expect_id.into(),
            });
        }
        let plain: Box<dyn Read + Send> = match &header.encryption {
            Some(enc) => {
                let kek = keys.for_reading(&enc.kdf)?;
                let context = format!("{}/{}", header.backup_id, header.role);
                let key = DataKey::unwrap(&kek, enc, &context)?;
                Box::new(DecryptReader::new(file, &key, enc.segment_size, raw))
            }
            None => Box::new(file),
        };
        let decompressed: Box<dyn Read + Send> = match header.compression {
            Compression::None => plain,
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(plain)),
            Compression::Deflate => Box::new(flate2::read::DeflateDecoder::new(plain)),
            Compression::Brotli => Box::new(brotli::Decompressor::new(plain, 64 * 1024)),
        };
        Ok(Self {
            header,
            tar: tar::Archive::new(decompressed),
        })
    }

    /// Calls `each(name, lines)` for every member in order, with the member's content as a
    /// buffered reader; returns every member's hash and line count, computed while reading.
    pub fn for_each_member(
        mut self,
        mut each: impl FnMut(&str, &mut dyn BufRead) -> Result<(), MemberError>,
    ) -> Result<IndexMap<String, MemberInfo>, ArchiveError> {
        let mut seen = IndexMap::new();
        let entries = self.tar.entries().map_err(describe_io)?;
        for entry in entries {
            let entry = entry.map_err(describe_io)?;
            let name = entry
                .path()
                .map_err(describe_io)?
                .to_string_lossy()
                .into_owned();
            let mut reader = BufReader::with_capacity(
                64 * 1024,
                HashingReader {
                    inner: entry,
                    hasher: Sha256::new(),
                    bytes: 0,
                    lines: 0,
                },
            );
            each(&name, &mut reader).map_err(|e| ArchiveError::Consumer(e.to_string()))?;
            // Whatever the callback left unread still counts toward the hash.
            io::copy(&mut reader, &mut io::sink()).map_err(describe_io)?;
            let h = reader.into_inner();
            seen.insert(
                name,
                MemberInfo {
                    sha256: hex(&h.hasher.finalize()),
                    bytes: h.bytes,
                    lines: h.lines,
                },
            );
        }
        Ok(seen)
    }
}

/// Turns a read error into the sentence a user needs (the decryptor's errors are already one).
fn describe_io(e: io::Error) -> ArchiveError {
    ArchiveError::Damaged(match e.kind() {
        io::ErrorKind::InvalidData => format!("{e}"),
        io::ErrorKind::UnexpectedEof => "the archive is truncated".into(),
        _ => format!("the archive cannot be read: {e}"),
    })
}

/// What a member's reader found wrong with it (any error: I/O, a damaged line, a stopped
/// consumer).
pub type MemberError = Box<dyn std::error::Error + Send + Sync>;

/// Why an archive could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Io(#[from] crate::types::fs::IoFailure),
    #[error("{0}")]
    Damaged(String),
    #[error("the archive has format version {0} and this s3db-run reads up to {FORMAT_VERSION}; upgrade s3db-run")]
    TooNew(u32),
    #[error("the archive belongs to backup `{found}`, not `{expected}`")]
    WrongBackup { found: String, expected: String },
    #[error("the backup is encrypted and no encryption key is configured (backup.encryption)")]
    NoKey,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("no member is open")]
    NoMember,
    #[error("cannot add `{name}` to the archive: {reason}")]
    Member { name: String, reason: String },
    #[error("cannot finish the archive: {0}")]
    Finish(String),
    /// What the caller reading the members said was wrong with one.
    #[error("{0}")]
    Consumer(String),
}

impl ArchiveError {
    fn io(action: &'static str, path: &Path, e: &io::Error) -> Self {
        ArchiveError::Io(crate::types::fs::IoFailure::new(action, path, e))
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    lines: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        self.bytes += n as u64;
        self.lines += out[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::model::{KdfAlgorithm, KeyDerivation};

    fn write(dir: &Path, compression: Compression, keys: &Keyring) -> Written {
        let mut w =
            ArchiveWriter::create(&dir.join("a.bak"), dir, "b1", "archive", compression, keys)
                .unwrap();
        w.add_bytes("s3db.json", b"{}").unwrap();
        w.begin_member("resources/users.jsonl").unwrap();
        for i in 0..5000 {
            w.write_line(format!(r#"{{"id":"u{i}","data":{{"n":{i}}}}}"#).as_bytes())
                .unwrap();
        }
        w.end_member().unwrap();
        w.finish().unwrap()
    }

    fn read_all(dir: &Path, keys: &Keyring) -> Result<IndexMap<String, MemberInfo>, ArchiveError> {
        ArchiveReader::open(&dir.join("a.bak"), "b1", keys)?.for_each_member(|_, _| Ok(()))
    }

    fn keys(pass: &str) -> Keyring {
        Keyring::new(
            Some(Passphrase::new(pass)),
            Some(EncryptionConfig {
                algorithm: crate::manifest::model::EncryptionAlgorithm::Aes256Gcm,
                key: None,
                key_file: None,
                key_command: None,
                key_derivation: KeyDerivation {
                    algorithm: KdfAlgorithm::Pbkdf2,
                    iterations: Some(1000),
                    salt: None,
                },
                source: None,
            }),
        )
    }

    #[test]
    fn every_compression_round_trips_with_the_same_member_hashes() {
        let dir = tempfile::tempdir().unwrap();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Deflate,
            Compression::Brotli,
        ] {
            for k in [Keyring::new(None, None), keys("pw")] {
                let written = write(dir.path(), c, &k);
                let read = read_all(dir.path(), &k).unwrap();
                assert_eq!(read, written.members, "{c:?}");
                assert_eq!(read["resources/users.jsonl"].lines, 5000);
            }
        }
    }

    #[test]
    fn wrong_passphrase_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Compression::Gzip, &keys("right"));
        let err = read_all(dir.path(), &keys("wrong")).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Crypto(CryptoError::WrongKey)),
            "{err}"
        );
        let err = err.to_string();
        assert!(err.contains("wrong encryption key"), "{err}");
        assert!(!err.contains("wrong\""), "{err}");
    }
}
