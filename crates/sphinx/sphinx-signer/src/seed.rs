//! The signer's secrets on disk: the 32-byte seed (mode 0600, made by
//! `sphinx-signer init`) and the 16-byte signer id that names its MQTT
//! topics.
//!
//! A seed readable by anyone but its owner is refused rather than used: a
//! signer exists to keep the keys off a shared host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A seed or id file problem.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file exists but is empty (a crash while an older version wrote it).
    #[error(transparent)]
    File(durable_file::FileError),
    /// `init` would overwrite an existing seed.
    #[error("{0} already exists; refusing to overwrite a seed")]
    Exists(PathBuf),
    /// The seed file is readable or writable by others.
    #[error("{path} has mode {mode:o}: a seed must be private to its owner (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The contents are not what they should be.
    #[error("{path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SeedError + '_ {
    move |source| SeedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<durable_file::FileError> for SeedError {
    fn from(e: durable_file::FileError) -> Self {
        match e {
            durable_file::FileError::Exists(path) => SeedError::Exists(path),
            other => SeedError::File(other),
        }
    }
}

/// Writes a new random seed to `path` (hex, mode 0600), whole or not at all.
/// Never overwrites.
pub fn create(path: &Path) -> Result<(), SeedError> {
    let seed: [u8; 32] = rand::random();
    durable_file::create_new(path, format!("{}\n", hex::encode(seed)).as_bytes(), 0o600)?;
    Ok(())
}

/// Reads the seed at `path`, refusing a file others may read.
pub fn load(path: &Path) -> Result<[u8; 32], SeedError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(SeedError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    let bytes = durable_file::read(path)?.ok_or_else(|| {
        io(path)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no seed: run `sphinx-signer init` first",
        ))
    })?;
    parse_hex(path, String::from_utf8_lossy(&bytes).trim())
}

/// Reads the signer id in `path`, creating a random one the first time.
pub fn signer_id(path: &Path) -> Result<[u8; 16], SeedError> {
    match durable_file::read(path)? {
        Some(bytes) => parse_hex(path, String::from_utf8_lossy(&bytes).trim()),
        None => {
            let id: [u8; 16] = rand::random();
            durable_file::create_new(path, format!("{}\n", hex::encode(id)).as_bytes(), 0o600)?;
            Ok(id)
        }
    }
}

fn parse_hex<const N: usize>(path: &Path, text: &str) -> Result<[u8; N], SeedError> {
    let bytes = hex::decode(text).map_err(|_| SeedError::Malformed {
        path: path.to_path_buf(),
        why: "not hex",
    })?;
    bytes.try_into().map_err(|_| SeedError::Malformed {
        path: path.to_path_buf(),
        why: "wrong length",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_private_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed");
        create(&path).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let seed = load(&path).expect("load");
        assert!(matches!(create(&path), Err(SeedError::Exists(_))));
        assert_eq!(load(&path).expect("load again"), seed, "seed unchanged");
    }

    #[test]
    fn loose_modes_and_bad_contents_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed");
        create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load(&path).expect_err("group-readable seed");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        for bad in ["zz", "00", &"ab".repeat(33)] {
            fs::write(&path, bad).expect("write");
            assert!(
                matches!(load(&path), Err(SeedError::Malformed { .. })),
                "{bad:?}"
            );
        }
        // What a crash during an older version's `init` left: named.
        fs::write(&path, "").expect("write");
        let err = load(&path).expect_err("empty seed");
        assert!(err.to_string().contains("is empty"), "{err}");
        assert!(signer_id(&path).is_err(), "an empty id file too");
    }

    #[test]
    fn signer_id_is_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signer-id");
        let id = signer_id(&path).expect("create");
        assert_eq!(signer_id(&path).expect("read"), id);
    }
}
