//! Client-side encryption of archives: AES-256-GCM in the STREAM construction (`aead::stream`,
//! big-endian 32-bit counter with a last-segment flag), so a flipped byte, a truncated archive
//! or a reordered segment fails to decrypt. Each archive has its own random data key, wrapped
//! with AES-256-GCM under a key derived from the passphrase (Argon2id, or PBKDF2-SHA256).
//!
//! Owns: passphrases (from the manifest, a file or a command), derivation, wrapping, and the
//! encrypting writer / decrypting reader. Never: logs, formats or returns a key or passphrase —
//! `Passphrase` has no `Debug` that shows it, and every error here is a fixed sentence.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::manifest::model::{EncryptionConfig, KdfAlgorithm, KeySource};

/// Plaintext bytes per encrypted segment.
pub const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
/// PBKDF2 iterations when the manifest names PBKDF2 without a count (OWASP 2023).
pub const PBKDF2_DEFAULT_ITERATIONS: u32 = 600_000;

/// A passphrase, kept out of every `Debug` and `Display`, and wiped from memory when dropped.
#[derive(Clone)]
pub struct Passphrase(Arc<Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(***)")
    }
}

impl Passphrase {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Arc::new(Zeroizing::new(bytes.into())))
    }

    /// Reads the passphrase the manifest points at: the value, a file, or a command's output
    /// (a trailing newline is not part of it).
    pub async fn load(config: &EncryptionConfig, base_dir: &Path) -> Result<Self, KeyError> {
        let raw = match config.source.as_ref().ok_or(KeyError::Missing)? {
            KeySource::Key(key) => key.expose().as_bytes().to_vec(),
            KeySource::File(file) => {
                let path = crate::types::fs::tidy(&base_dir.join(file));
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| KeyError::FileUnreadable {
                        path: path.display().to_string(),
                        reason: crate::types::fs::io_reason(&e),
                    })?
            }
            KeySource::Command(command) => {
                let argv = command.argv();
                let (program, args) = argv.split_first().ok_or(KeyError::CommandEmpty)?;
                let out = tokio::process::Command::new(program)
                    .args(args)
                    .current_dir(base_dir)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|e| KeyError::CommandUnavailable {
                        program: program.clone(),
                        reason: crate::types::fs::io_reason(&e),
                    })?;
                if !out.status.success() {
                    // Its output may be (part of) the key, so it is not shown.
                    return Err(KeyError::CommandFailed {
                        program: program.clone(),
                        status: out.status.to_string(),
                    });
                }
                out.stdout
            }
        };
        let mut raw = Zeroizing::new(raw);
        while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            raw.pop();
        }
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(Arc::new(raw)))
    }
}

/// Why the encryption passphrase could not be had. Never carries the key, or a command's
/// output (which may be part of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the encryption key file {path}: {reason}")]
    FileUnreadable { path: String, reason: String },
    #[error("the encryption keyCommand is empty")]
    CommandEmpty,
    #[error("cannot run the encryption keyCommand `{program}`: {reason}")]
    CommandUnavailable { program: String, reason: String },
    #[error("the encryption keyCommand `{program}` failed ({status})")]
    CommandFailed { program: String, status: String },
    #[error("encryption needs one of key, keyFile or keyCommand")]
    Missing,
    #[error("the encryption key is empty")]
    Empty,
}

impl KeyError {
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::FileUnreadable { .. } => "backup::key_file_unreadable",
            KeyError::CommandEmpty | KeyError::CommandUnavailable { .. } => {
                "backup::key_command_unavailable"
            }
            KeyError::CommandFailed { .. } => "backup::key_command_failed",
            KeyError::Missing => "backup::key_missing",
            KeyError::Empty => "backup::key_empty",
        }
    }

    pub fn help(&self) -> String {
        match self {
            KeyError::FileUnreadable { .. } => "create the file with the passphrase in it (readable by this user only), or point `backup.encryption.keyFile` at one; a relative path starts at the manifest's folder".into(),
            KeyError::CommandEmpty | KeyError::CommandUnavailable { .. } => "`backup.encryption.keyCommand` must name a program that exists, e.g. [\"vault\", \"kv\", \"get\", \"-field=key\", \"secret/backup\"]".into(),
            KeyError::CommandFailed { .. } => "run the keyCommand by hand from the manifest's folder: it must exit 0 and print the passphrase".into(),
            KeyError::Missing => "set one of `key`, `keyFile` or `keyCommand` under `backup.encryption`".into(),
            KeyError::Empty => "the passphrase must not be empty: check the variable, file or command that provides it".into(),
        }
    }
}

/// How the key-encryption key was derived; stored in the archive header (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm")]
pub enum Kdf {
    #[serde(rename = "argon2id")]
    Argon2id {
        salt: String,
        #[serde(rename = "memoryKiB")]
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    },
    #[serde(rename = "PBKDF2-SHA256")]
    Pbkdf2 { salt: String, iterations: u32 },
}

impl Kdf {
    /// Fresh parameters (a random salt) for the manifest's choice.
    pub fn fresh(config: &EncryptionConfig) -> Self {
        let salt = B64.encode(rand::random::<[u8; 16]>());
        match config.key_derivation.algorithm {
            KdfAlgorithm::Argon2id => {
                let p = argon2::Params::default();
                Kdf::Argon2id {
                    salt,
                    memory_kib: p.m_cost(),
                    iterations: p.t_cost(),
                    parallelism: p.p_cost(),
                }
            }
            KdfAlgorithm::Pbkdf2 => Kdf::Pbkdf2 {
                salt,
                iterations: config
                    .key_derivation
                    .iterations
                    .unwrap_or(PBKDF2_DEFAULT_ITERATIONS),
            },
        }
    }

    /// The key-encryption key. CPU-heavy on purpose; call from a blocking context.
    pub fn derive(&self, passphrase: &Passphrase) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let mut out = Zeroizing::new([0u8; 32]);
        match self {
            Kdf::Argon2id {
                salt,
                memory_kib,
                iterations,
                parallelism,
            } => {
                let salt = B64
                    .decode(salt)
                    .map_err(|_| CryptoError::Header("bad KDF salt in the header"))?;
                // Bounds keep a forged header from asking for gigabytes or hours.
                if *memory_kib > 4 * 1024 * 1024 || *iterations > 100 || *parallelism > 64 {
                    return Err(CryptoError::Header(
                        "the header's Argon2id parameters are out of range",
                    ));
                }
                let params = argon2::Params::new(*memory_kib, *iterations, *parallelism, Some(32))
                    .map_err(|_| {
                        CryptoError::Header("invalid Argon2id parameters in the header")
                    })?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(&passphrase.0, &salt, &mut *out)
                    .map_err(|_| CryptoError::Derivation)?;
            }
            Kdf::Pbkdf2 { salt, iterations } => {
                let salt = B64
                    .decode(salt)
                    .map_err(|_| CryptoError::Header("bad KDF salt in the header"))?;
                if *iterations == 0 || *iterations > 50_000_000 {
                    return Err(CryptoError::Header(
                        "the header's PBKDF2 iteration count is out of range",
                    ));
                }
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(&passphrase.0, &salt, *iterations, &mut *out);
            }
        }
        Ok(out)
    }
}

/// Why an archive's key could not be derived or unwrapped. Fixed sentences: never a key, and
/// nothing that tells a wrong key from an altered header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("{0}")]
    Header(&'static str),
    #[error("Argon2id key derivation failed")]
    Derivation,
    #[error("unsupported cipher `{0}`")]
    UnsupportedCipher(String),
    #[error("cannot decrypt the backup: wrong encryption key (or the archive header was altered)")]
    WrongKey,
}

/// What the archive header says about its encryption. The data key appears only wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionHeader {
    /// `AES-256-GCM/STREAM-BE32`.
    pub cipher: String,
    pub segment_size: usize,
    pub kdf: Kdf,
    pub wrapped_key: String,
    pub wrap_nonce: String,
    pub stream_nonce: String,
}

pub const CIPHER: &str = "AES-256-GCM/STREAM-BE32";

/// A data key and its header entry.
pub struct DataKey {
    key: [u8; 32],
    nonce: [u8; 7],
}

impl DataKey {
    /// A random data key, wrapped under `kek` (derived with `kdf`). `context` (the backup id
    /// and the file's role) is bound to the wrapping, so a header moved to another archive fails.
    pub fn generate(kek: &[u8; 32], kdf: Kdf, context: &str) -> (Self, EncryptionHeader) {
        let key: [u8; 32] = rand::random();
        let nonce: [u8; 7] = rand::random();
        let wrap_nonce: [u8; 12] = rand::random();
        let wrapper = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek));
        let wrapped = wrapper
            .encrypt(
                Nonce::from_slice(&wrap_nonce),
                Payload {
                    msg: &key,
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let header = EncryptionHeader {
            cipher: CIPHER.into(),
            segment_size: SEGMENT,
            kdf,
            wrapped_key: B64.encode(wrapped),
            wrap_nonce: B64.encode(wrap_nonce),
            stream_nonce: B64.encode(nonce),
        };
        (Self { key, nonce }, header)
    }

    /// Unwraps the data key; a wrong passphrase fails here, before anything is decrypted.
    pub fn unwrap(
        kek: &[u8; 32],
        header: &EncryptionHeader,
        context: &str,
    ) -> Result<Self, CryptoError> {
        const WRONG: CryptoError = CryptoError::WrongKey;
        if header.cipher != CIPHER || header.segment_size == 0 || header.segment_size > 16 << 20 {
            return Err(CryptoError::UnsupportedCipher(header.cipher.clone()));
        }
        let wrapped = B64.decode(&header.wrapped_key).map_err(|_| WRONG)?;
        let wrap_nonce = B64.decode(&header.wrap_nonce).map_err(|_| WRONG)?;
        let nonce = B64.decode(&header.stream_nonce).map_err(|_| WRONG)?;
        if wrap_nonce.len() != 12 || nonce.len() != 7 {
            return Err(WRONG);
        }
        let wrapper = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek));
        let key = wrapper
            .decrypt(
                Nonce::from_slice(&wrap_nonce),
                Payload {
                    msg: &wrapped,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| WRONG)?;
        let key = Zeroizing::new(key);
        let mut n = [0u8; 7];
        n.copy_from_slice(&nonce);
        Ok(Self {
            key: key.as_slice().try_into().map_err(|_| WRONG)?,
            nonce: n,
        })
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        // A plain assignment could be optimised away as a dead store; zeroize's is not.
        self.key.zeroize();
    }
}

/// Encrypts everything written to it in segments of `SEGMENT` bytes; `finish` writes the last
/// segment (possibly empty), which is what marks the end of the stream.
pub struct EncryptWriter<W: Write> {
    inner: W,
    encryptor: Option<EncryptorBE32<Aes256Gcm>>,
    buf: Vec<u8>,
    aad: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// `aad` (the archive header) is authenticated with every segment.
    pub fn new(inner: W, key: &DataKey, aad: Vec<u8>) -> Self {
        let encryptor = EncryptorBE32::from_aead(key.cipher(), (&key.nonce).into());
        Self {
            inner,
            encryptor: Some(encryptor),
            buf: Vec::with_capacity(SEGMENT),
            aad,
        }
    }

    fn seal_full(&mut self) -> io::Result<()> {
        let enc = self.encryptor.as_mut().ok_or_else(finished)?;
        let sealed = enc
            .encrypt_next(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| io::Error::other("encryption failed (segment limit)"))?;
        self.buf.clear();
        self.inner.write_all(&sealed)
    }

    pub fn finish(mut self) -> io::Result<W> {
        // The last segment must be shorter than a full one (that is how the reader tells it):
        // a full buffer goes out as a normal segment, followed by an empty last one.
        if self.buf.len() == SEGMENT {
            self.seal_full()?;
        }
        let enc = self.encryptor.take().ok_or_else(finished)?;
        let sealed = enc
            .encrypt_last(Payload {
                msg: &self.buf,
                aad: &self.aad,
            })
            .map_err(|_| io::Error::other("encryption failed"))?;
        self.inner.write_all(&sealed)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn finished() -> io::Error {
    io::Error::other("the encrypted stream is already finished")
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            // A full buffer is sealed only once more data arrives or at `finish`.
            if self.buf.len() == SEGMENT {
                self.seal_full()?;
            }
            let n = (SEGMENT - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a stream written by `EncryptWriter`. Any tampering, reordering or truncation is an
/// `InvalidData` error; a stream that ends without its last segment is one too.
pub struct DecryptReader<R: Read> {
    inner: R,
    decryptor: Option<DecryptorBE32<Aes256Gcm>>,
    segment: usize,
    aad: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

pub const TAMPERED: &str =
    "the archive is damaged or was altered (authentication of an encrypted segment failed)";

impl<R: Read> DecryptReader<R> {
    pub fn new(inner: R, key: &DataKey, segment: usize, aad: Vec<u8>) -> Self {
        Self {
            inner,
            decryptor: Some(DecryptorBE32::from_aead(key.cipher(), (&key.nonce).into())),
            segment,
            aad,
            plain: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut sealed = vec![0u8; self.segment + TAG];
        let mut got = 0;
        while got < sealed.len() {
            match self.inner.read(&mut sealed[got..])? {
                0 => break,
                n => got += n,
            }
        }
        sealed.truncate(got);
        let bad = || io::Error::new(io::ErrorKind::InvalidData, TAMPERED);
        if got == self.segment + TAG {
            let dec = self.decryptor.as_mut().ok_or_else(bad)?;
            self.plain = dec
                .decrypt_next(Payload {
                    msg: &sealed,
                    aad: &self.aad,
                })
                .map_err(|_| bad())?;
        } else {
            if got < TAG {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the archive is truncated (its last encrypted segment is missing)",
                ));
            }
            let dec = self.decryptor.take().ok_or_else(bad)?;
            self.plain = dec
                .decrypt_last(Payload {
                    msg: &sealed,
                    aad: &self.aad,
                })
                .map_err(|_| bad())?;
            self.done = true;
        }
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = (self.plain.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) -> (Vec<u8>, Vec<u8>, [u8; 32], EncryptionHeader) {
        let kek = [7u8; 32];
        let kdf = Kdf::Pbkdf2 {
            salt: B64.encode([1u8; 16]),
            iterations: 1,
        };
        let (key, header) = DataKey::generate(&kek, kdf, "b1/archive");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut w = EncryptWriter::new(Vec::new(), &key, b"hdr".to_vec());
        w.write_all(&data).unwrap();
        let sealed = w.finish().unwrap();
        (data, sealed, kek, header)
    }

    fn open(sealed: &[u8], kek: &[u8; 32], header: &EncryptionHeader) -> io::Result<Vec<u8>> {
        let key = DataKey::unwrap(kek, header, "b1/archive").map_err(io::Error::other)?;
        let mut r = DecryptReader::new(sealed, &key, SEGMENT, b"hdr".to_vec());
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn stream_round_trips_at_segment_boundaries() {
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT] {
            let (data, sealed, kek, header) = roundtrip(len);
            assert_eq!(open(&sealed, &kek, &header).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn truncation_at_a_segment_boundary_fails() {
        let (_, sealed, kek, header) = roundtrip(3 * SEGMENT);
        let cut = &sealed[..2 * (SEGMENT + TAG)];
        assert!(open(cut, &kek, &header).is_err());
    }

    #[test]
    fn swapped_segments_fail() {
        let (_, mut sealed, kek, header) = roundtrip(3 * SEGMENT);
        let s = SEGMENT + TAG;
        let (a, b) = sealed.split_at_mut(s);
        a.swap_with_slice(&mut b[..s]);
        assert!(open(&sealed, &kek, &header).is_err());
    }

    #[test]
    fn wrong_kek_or_context_fails_to_unwrap() {
        let (_, _, _, header) = roundtrip(10);
        assert!(DataKey::unwrap(&[8u8; 32], &header, "b1/archive").is_err());
        assert!(DataKey::unwrap(&[7u8; 32], &header, "b2/archive").is_err());
    }

    #[test]
    fn passphrase_debug_hides_the_value() {
        assert_eq!(
            format!("{:?}", Passphrase::new("hunter2")),
            "Passphrase(***)"
        );
    }
}
