//! A node's signing key in a file (tlog.md §3.4 private-key line, 0600):
//! loaded if present, created on first start. One place for the rule that
//! a key's name (the origin, or a cosigner's name) and type never change:
//! a file holding another name's key is refused, not silently used.

use std::path::Path;

use rand::RngCore;
use tlog_core::note::{KeyType, SignerKey};

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        reason: String,
    },
    /// Not a key line, or another name's or type's key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The problem.
        reason: String,
    },
}

/// Loads the key in `path`, or creates one named `name` of type `ty`.
pub fn load_or_create(path: &Path, name: &str, ty: KeyType) -> Result<SignerKey, KeyFileError> {
    let shown = path.display().to_string();
    let io = |e: durable_file::FileError| KeyFileError::Io {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let invalid = |reason: String| KeyFileError::Invalid {
        path: shown.clone(),
        reason,
    };
    if let Some(bytes) = durable_file::read(path).map_err(io)? {
        let key = SignerKey::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| invalid(e.to_string()))?;
        if key.name() != name || key.key_type() != ty {
            return Err(invalid(format!(
                "is the key of {}, not of {name}; a key's name never changes",
                key.name()
            )));
        }
        return Ok(key);
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key =
        SignerKey::from_seed(name, ty, &seed).map_err(|e| invalid(format!("{name:?}: {e}")))?;
    durable_file::create_new(
        path,
        format!("{}\n", key.to_private_line()).as_bytes(),
        0o600,
    )
    .map_err(io)?;
    tracing::info!(path = %shown, name, "created a new signing key");
    Ok(key)
}

/// A mirror's validating cosigner key (tlog.md §5.3), `<name>/validator`,
/// in `dir/validator-key` (0600), with its verifier key written beside it
/// in `dir/validator-vkey` for operators to hand out. Returns both.
pub fn validating_key(dir: &Path, name: &str) -> Result<(SignerKey, String), KeyFileError> {
    let key = load_or_create(
        &dir.join("validator-key"),
        &format!("{name}/validator"),
        KeyType::Cosignature,
    )?;
    let vkey = key.verifier().to_string();
    let path = dir.join("validator-vkey");
    durable_file::replace(&path, format!("{vkey}\n").as_bytes(), 0o644).map_err(|e| {
        KeyFileError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    Ok((key, vkey))
}
