//! Who may be a signer: the owner's node key, configured or pinned on disk.
//!
//! The reference pins the first key that logs in, in memory only, so after
//! every restart any self-signed login wins the race (`S2`). Here there is
//! no trust on first use at all: the operator configures the owner
//! (`--owner`, the node id `sphinx-signer init` prints), and the broker pins
//! it in `owner` in the data directory, so a later start without the
//! setting, or with another key, cannot silently change who signs. A broker
//! with neither does not start. (A pin from an older version, made by a
//! first login, is honoured.)

use std::path::{Path, PathBuf};

use secp256k1::PublicKey;

/// Why the owner cannot be established, or a login is refused.
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
    /// Neither configured nor pinned.
    #[error("no owner: set --owner (BROKER_OWNER, or owner in broker.toml) to the node id that `sphinx-signer init` printed; the broker does not let the first signer to connect become the owner")]
    Unset,
    /// The pin file is unreadable, malformed or could not be written.
    #[error("owner file {path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// The owner key.
#[derive(Debug)]
pub struct Owner {
    key: PublicKey,
}

impl Owner {
    /// Loads the pin from `data_dir/owner`; a `configured` key is pinned
    /// there if the file is absent. A configured key that differs from the
    /// pinned one is an error: re-pinning is a deliberate act (delete the
    /// file).
    pub fn load(data_dir: &Path, configured: Option<PublicKey>) -> Result<Owner, OwnerError> {
        let path = data_dir.join("owner");
        let file_err = |why: String| OwnerError::File {
            path: path.clone(),
            why,
        };
        let pinned = match durable_file::read(&path).map_err(|e| file_err(e.to_string()))? {
            Some(bytes) => Some(
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| hex::decode(text.trim()).ok())
                    .and_then(|b| PublicKey::from_slice(&b).ok())
                    .ok_or_else(|| file_err("not a public key in hex".into()))?,
            ),
            None => None,
        };
        match (pinned, configured) {
            (Some(p), Some(c)) if p != c => Err(file_err(format!(
                "pins {p} but {c} is configured; delete the file to re-pin"
            ))),
            (Some(key), _) => Ok(Owner { key }),
            (None, Some(key)) => {
                durable_file::replace(&path, format!("{key}\n").as_bytes(), 0o644)
                    .map_err(|e| file_err(e.to_string()))?;
                tracing::info!(owner = %key, path = %path.display(), "owner key pinned");
                Ok(Owner { key })
            }
            (None, None) => Err(OwnerError::Unset),
        }
    }

    /// The owner.
    pub fn key(&self) -> PublicKey {
        self.key
    }

    /// Accepts `key` if it is the owner.
    pub fn admit(&self, key: PublicKey) -> Result<(), OwnerError> {
        if key == self.key {
            Ok(())
        } else {
            Err(OwnerError::NotOwner {
                owner: self.key.to_string(),
                got: key.to_string(),
            })
        }
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
    fn no_owner_no_start_and_nobody_is_pinned_by_logging_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Owner::load(dir.path(), None).expect_err("no owner");
        assert!(err.to_string().contains("--owner"), "{err}");
        assert!(!dir.path().join("owner").exists());
    }

    #[test]
    fn a_configured_owner_is_pinned_and_must_agree_with_the_pin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = Owner::load(dir.path(), Some(key(3))).expect("load");
        assert!(owner.admit(key(1)).is_err());
        owner.admit(key(3)).expect("owner");
        // Pinned: a start without the setting keeps it, another key is refused.
        assert_eq!(Owner::load(dir.path(), None).expect("pinned").key(), key(3));
        assert!(Owner::load(dir.path(), Some(key(4))).is_err());
        std::fs::write(dir.path().join("owner"), "nonsense").expect("write");
        assert!(Owner::load(dir.path(), None).is_err());
        // What an interrupted write of an older version leaves: named.
        std::fs::write(dir.path().join("owner"), "").expect("write");
        let err = Owner::load(dir.path(), Some(key(3))).expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
