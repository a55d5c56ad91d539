//! Secrets at rest (§2.6): ChaCha20-Poly1305 under a 32-byte key-encryption
//! key kept in `kek-<epoch>` (0600) beside the database, a fresh 12-byte
//! nonce per seal, and the row's storage key as associated data, so a
//! sealed value moved to another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::path::Path;
use zeroize::Zeroizing;

/// A sealed value could not be opened or a KEK could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Wrong KEK epoch, wrong row, or tampering.
    #[error("sealed value does not open (wrong key, wrong row or altered)")]
    Open,
    /// The KEK file.
    #[error("key-encryption key {path}: {reason}")]
    Kek {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The key-encryption key of one epoch.
pub struct Kek {
    epoch: u32,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek(epoch {}, <redacted>)", self.epoch)
    }
}

impl Kek {
    /// Loads `kek-<epoch>` from `dir`, creating it (0600) if absent.
    pub fn load_or_create(dir: &Path, epoch: u32) -> Result<Kek, SealError> {
        let path = dir.join(format!("kek-{epoch}"));
        let err = |reason: String| SealError::Kek {
            path: path.display().to_string(),
            reason,
        };
        if let Some(bytes) = durable_file::read(&path).map_err(|e| err(e.to_string()))? {
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| err(format!("{} bytes, expected 32", bytes.len())))?;
            return Ok(Kek {
                epoch,
                key: Zeroizing::new(key),
            });
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        durable_file::create_new(&path, key.as_ref(), 0o600).map_err(|e| err(e.to_string()))?;
        Ok(Kek { epoch, key })
    }

    /// The epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Overwrites `kek-<epoch>` in `dir` with zeros, syncs it and unlinks
    /// it: sealed values of that epoch (including copies left in old
    /// database pages) can no longer be opened by anyone.
    pub fn shred(dir: &Path, epoch: u32) -> Result<(), SealError> {
        let path = dir.join(format!("kek-{epoch}"));
        let err = |reason: String| SealError::Kek {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(&[0u8; 32]).map_err(|e| err(e.to_string()))?;
                f.sync_all().map_err(|e| err(e.to_string()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(e.to_string())),
        }
        std::fs::remove_file(&path).map_err(|e| err(e.to_string()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// A KEK from bytes (tests).
    pub fn from_bytes(epoch: u32, key: [u8; 32]) -> Kek {
        Kek {
            epoch,
            key: Zeroizing::new(key),
        }
    }

    /// `epoch (u32) ‖ nonce (12) ‖ ciphertext ‖ tag`.
    pub fn seal(&self, storage_key: &[u8], secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.key.as_ref()));
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: storage_key,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a short buffer cannot fail");
        let mut out = Vec::with_capacity(16 + ct.len());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`Kek::seal`] made for the same row.
    pub fn open(&self, storage_key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 4 + 12 + 16 || sealed[..4] != self.epoch.to_be_bytes() {
            return Err(SealError::Open);
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(self.key.as_ref()));
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[4..16]),
                Payload {
                    msg: &sealed[16..],
                    aad: storage_key,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_are_bound_to_the_row_and_the_key() {
        let kek = Kek::from_bytes(0, [7; 32]);
        let sealed = kek.seal(b"z-row-1", b"secret share");
        assert_eq!(
            kek.open(b"z-row-1", &sealed).expect("opens").as_slice(),
            b"secret share"
        );
        assert!(kek.open(b"z-row-2", &sealed).is_err(), "other row");
        assert!(
            Kek::from_bytes(0, [8; 32])
                .open(b"z-row-1", &sealed)
                .is_err(),
            "other key"
        );
        assert!(
            Kek::from_bytes(1, [7; 32])
                .open(b"z-row-1", &sealed)
                .is_err(),
            "other epoch"
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(kek.open(b"z-row-1", &tampered).is_err(), "altered");
        assert!(kek.open(b"z-row-1", &sealed[..10]).is_err(), "truncated");
    }
}
