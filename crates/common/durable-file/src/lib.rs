//! Crash-safe small files: the keys, tokens and pins every daemon creates
//! once and must find whole on the next start.
//!
//! Writing such a file in place (`create`, `write`, `fsync`) leaves an empty
//! or half-written file if the process or machine dies in between, and the
//! next start then refuses to run (or worse, reads a truncated key). Here a
//! file is written to a temporary name in the same directory, synced, then
//! moved into place in one step, and the directory is synced so the new name
//! itself survives a power loss:
//! - [`create_new`] links the temporary file to the final name, which fails
//!   if that name exists: a key is never replaced, even by a racing process;
//! - [`replace`] renames over the final name (for pins an operator changes).
//!
//! A reader therefore sees no file or a whole one. [`read`] still names an
//! empty file clearly: one may be left by an older version or another tool.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file already exists ([`create_new`] never replaces).
    #[error("{0} already exists; refusing to replace it")]
    Exists(PathBuf),
    /// The file exists but is empty: a crash while an older version created
    /// it, or a truncation.
    #[error("{0} is empty (left by an interrupted write?); it holds nothing usable: restore it from a backup, or delete it to start with a new one")]
    Empty(PathBuf),
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to a temporary file beside `path` with `mode`, synced
/// when `sync`.
fn write_temp(path: &Path, contents: &[u8], mode: u32, sync: bool) -> Result<PathBuf, FileError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            if sync {
                file.sync_all()?;
            }
            Ok(())
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io(path)(e))
        }
    }
}

fn sync_dir(path: &Path) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

/// Creates `path` with `contents` and permission bits `mode`, durably and
/// atomically; fails with [`FileError::Exists`] if it exists.
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let tmp = write_temp(path, contents, mode, true)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(FileError::Exists(path.to_path_buf()))
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Replaces (or creates) `path` with `contents` and `mode`, durably and
/// atomically: readers see the old file or the new one.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    replace_atomic(path, contents, mode, true)
}

/// As [`replace`] without waiting for the disk: atomic (readers, and a
/// crash, see the old file or the new one) but after a power loss possibly
/// the old one. For state where an older copy is safe, only less fresh.
pub fn replace_unsynced(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    replace_atomic(path, contents, mode, false)
}

fn replace_atomic(path: &Path, contents: &[u8], mode: u32, sync: bool) -> Result<(), FileError> {
    let tmp = write_temp(path, contents, mode, sync)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    if sync {
        sync_dir(path)
    } else {
        Ok(())
    }
}

/// Reads `path`: `None` if it does not exist, an error if it is empty.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            Err(FileError::Empty(path.to_path_buf()))
        }
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn created_once_whole_with_its_mode_and_no_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        create_new(&path, b"secret\n", 0o600).expect("create");
        assert_eq!(read(&path).expect("read"), Some(b"secret\n".to_vec()));
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            create_new(&path, b"other", 0o600),
            Err(FileError::Exists(_))
        ));
        assert_eq!(read(&path).expect("read"), Some(b"secret\n".to_vec()));
        assert_eq!(names(dir.path()), ["key"], "no temporary file left");
    }

    #[test]
    fn replace_swaps_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        replace(&path, b"one", 0o644).expect("first");
        replace(&path, b"two", 0o644).expect("second");
        assert_eq!(read(&path).expect("read"), Some(b"two".to_vec()));
        assert_eq!(names(dir.path()), ["pin"]);
        replace_unsynced(&path, b"three", 0o600).expect("unsynced");
        assert_eq!(read(&path).expect("read"), Some(b"three".to_vec()));
        assert_eq!(names(dir.path()), ["pin"]);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn missing_and_empty_files_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        assert!(read(&path).expect("missing is fine").is_none());
        // What an interrupted in-place write leaves.
        fs::write(&path, b"").expect("write");
        let err = read(&path).expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
        fs::write(&path, b"\n").expect("write");
        assert!(matches!(read(&path), Err(FileError::Empty(_))));
        // A stale temporary file from a crash does not block creation.
        fs::remove_file(&path).expect("rm");
        fs::write(dir.path().join(".token.tmp-1-0"), b"half").expect("write");
        create_new(&path, b"t", 0o600).expect("create");
    }
}
