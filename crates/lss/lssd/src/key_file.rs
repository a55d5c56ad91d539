//! The server's identity key on disk.
//!
//! Format: 64 lowercase hex characters, no newline: the same as the reference
//! `lssd`'s `~/.lss/server_key`, so an operator can point `--server-key-file`
//! at that file and every existing client keeps its token and MACs. A new key
//! is created with mode 0600, never overwritten, and made durable before use:
//! losing it would orphan every client's data.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use lss_core::secp256k1::{rand::rngs::OsRng, SecretKey};
use lss_core::{KeyFileError, ServerKey};

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, creating or syncing the file failed.
    #[error("server key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Creating it crash-safely failed, or it exists but is empty.
    #[error("server key file: {0}")]
    File(#[from] durable_file::FileError),
    /// The file's text is not a key.
    #[error("server key file {path} is not a server key: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyFileError,
    },
}

/// Whether a key was found or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Read from an existing file.
    Loaded,
    /// Generated and written now.
    Created,
}

/// Loads an existing key file. Warns if others may read it.
pub fn load(path: &Path) -> Result<ServerKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "server key file is readable by others; run chmod 600 on it");
    }
    let bytes = durable_file::read(path)?.ok_or_else(|| KeyError::Io {
        path: path.to_owned(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    ServerKey::from_hex(&text).map_err(|source| KeyError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Loads `path`, or creates a fresh key there (mode 0600) if it does not exist.
pub fn load_or_create(path: &Path) -> Result<(ServerKey, KeyOrigin), KeyError> {
    if path.exists() {
        return load(path).map(|key| (key, KeyOrigin::Loaded));
    }
    let key = ServerKey::new(SecretKey::new(&mut OsRng));
    write_new(path, &key)?;
    Ok((key, KeyOrigin::Created))
}

/// Writes `key` to a new file (mode 0600, written whole or not at all,
/// synced with its directory entry); fails if the file exists, so a key is
/// never replaced.
pub fn write_new(path: &Path, key: &ServerKey) -> Result<(), KeyError> {
    durable_file::create_new(path, key.to_hex().as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_key_file_is_named_not_misread() {
        // What an interrupted in-place write used to leave behind.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server_key");
        fs::write(&path, "").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = load_or_create(&path).expect_err("empty key");
        assert!(err.to_string().contains("is empty"), "{err}");
        assert_eq!(fs::read(&path).expect("read"), b"", "never replaced");
    }

    #[test]
    fn created_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server_key");
        let (first, origin) = load_or_create(&path).expect("create");
        assert_eq!(origin, KeyOrigin::Created);
        assert_eq!(
            fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 64);
        assert!(text
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let (again, origin) = load_or_create(&path).expect("load");
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(again.server_id(), first.server_id());
    }

    /// The reference's file (`~/.lss/server_key`, mode 0644, maybe a newline) is adopted as is.
    #[test]
    fn adopts_a_reference_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server_key");
        fs::write(&path, format!("{}\n", "22".repeat(32))).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let key = load(&path).expect("load");
        assert_eq!(
            hex::encode(key.server_id()),
            "02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27"
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        assert!(matches!(load(&missing), Err(KeyError::Io { .. })));
        for (name, text) in [
            ("short", "abcd"),
            ("nothex", &"xy".repeat(32)),
            ("zero", &"00".repeat(32)),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, text).expect("write");
            let err = load(&path).expect_err("invalid key accepted");
            assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
            assert!(
                err.to_string().contains(name),
                "error names the file: {err}"
            );
        }
        let binary = dir.path().join("binary");
        fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        assert!(load(&binary).is_err());
    }
}
