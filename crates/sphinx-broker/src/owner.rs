//! Who may be a signer: the owner's node key, pinned on disk.
//!
//! The reference pins the first key that logs in, in memory only, so after
//! every restart any self-signed login wins the race (`S2`). Here the key is
//! configured, or pinned on first use and written to `owner` in the data
//! directory before that login is accepted; it survives restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use secp256k1::PublicKey;

/// Why a login is refused.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// A key other than the owner's.
    #[error("node key {got} is not the owner {owner}")]
    NotOwner {
        /// The owner (hex).
        owner: String,
        /// The key that tried (hex).
        got: String,
    },
    /// The pin file is unreadable or could not be written.
    #[error("owner file {path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The pinned owner key.
pub struct Owner {
    path: PathBuf,
    key: Mutex<Option<PublicKey>>,
}

impl Owner {
    /// Loads the pin from `data_dir/owner`; `configured` wins and is written
    /// there if the file is absent. A configured key that differs from the
    /// pinned one is an error: re-pinning is a deliberate act (delete the file).
    pub fn load(data_dir: &Path, configured: Option<PublicKey>) -> Result<Owner, OwnerError> {
        let path = data_dir.join("owner");
        let file_err = |why: String| OwnerError::File {
            path: path.clone(),
            why,
        };
        let pinned = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                hex::decode(text.trim())
                    .ok()
                    .and_then(|b| PublicKey::from_slice(&b).ok())
                    .ok_or_else(|| file_err("not a public key in hex".into()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(file_err(e.to_string())),
        };
        let owner = Owner {
            path: path.clone(),
            key: Mutex::new(pinned),
        };
        match (pinned, configured) {
            (Some(p), Some(c)) if p != c => {
                return Err(file_err(format!(
                    "pins {p} but {c} is configured; delete the file to re-pin"
                )))
            }
            (None, Some(c)) => owner.pin(c)?,
            _ => {}
        }
        Ok(owner)
    }

    /// The owner, if pinned.
    pub fn key(&self) -> Option<PublicKey> {
        self.key.lock().ok().and_then(|k| *k)
    }

    /// Accepts `key` if it is the owner, or pins it if there is none yet.
    pub fn admit(&self, key: PublicKey) -> Result<(), OwnerError> {
        let mut pinned = self.key.lock().map_err(|_| OwnerError::File {
            path: self.path.clone(),
            why: "lock poisoned".into(),
        })?;
        match *pinned {
            Some(owner) if owner == key => Ok(()),
            Some(owner) => Err(OwnerError::NotOwner {
                owner: owner.to_string(),
                got: key.to_string(),
            }),
            None => {
                self.write(key)?;
                tracing::warn!(owner = %key, path = %self.path.display(), "first signer login: owner key pinned");
                *pinned = Some(key);
                Ok(())
            }
        }
    }

    fn pin(&self, key: PublicKey) -> Result<(), OwnerError> {
        self.write(key)?;
        if let Ok(mut pinned) = self.key.lock() {
            *pinned = Some(key);
        }
        Ok(())
    }

    fn write(&self, key: PublicKey) -> Result<(), OwnerError> {
        let tmp = self.path.with_extension("tmp");
        let result = std::fs::write(&tmp, format!("{key}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        result.map_err(|e| OwnerError::File {
            path: self.path.clone(),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::{Secp256k1, SecretKey};

    fn key(byte: u8) -> PublicKey {
        SecretKey::from_slice(&[byte; 32])
            .expect("key")
            .public_key(&Secp256k1::new())
    }

    #[test]
    fn the_first_login_is_pinned_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = Owner::load(dir.path(), None).expect("load");
        assert_eq!(owner.key(), None);
        owner.admit(key(1)).expect("first login pins");
        assert!(owner.admit(key(2)).is_err());
        let again = Owner::load(dir.path(), None).expect("reload");
        assert_eq!(again.key(), Some(key(1)));
        assert!(again.admit(key(2)).is_err(), "pin survives a restart");
        again.admit(key(1)).expect("owner");
    }

    #[test]
    fn a_configured_owner_must_agree_with_the_pin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = Owner::load(dir.path(), Some(key(3))).expect("load");
        assert!(owner.admit(key(1)).is_err());
        assert!(Owner::load(dir.path(), Some(key(4))).is_err());
        std::fs::write(dir.path().join("owner"), "nonsense").expect("write");
        assert!(Owner::load(dir.path(), None).is_err());
    }
}
