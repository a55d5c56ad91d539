//! Moving LSS data between places, never losing or silently changing it.
//!
//! - [`export`] writes a store to a file in the portable [`format`]; the file
//!   appears under its name only once complete and synced.
//! - [`verify_file`] checks a file end to end (structure, order, count,
//!   SHA-256) without touching any store.
//! - [`import`] verifies the whole file first, then loads it; loading never
//!   overwrites (see [`lss_store::Bulk::load`]), so an interrupted import can
//!   be run again.
//! - [`copy`] moves one store into another and then [`compare`]s the two
//!   entry by entry.
//! - [`import_reference`] reads the reference `lssd`'s redb file.
//!
//! Files are read and written on threads of their own; the async side only
//! scans and loads.

pub mod format;
pub mod reference;

use std::path::{Path, PathBuf};

use lss_core::ClientId;
use lss_store::{Bulk, Entry, LoadError, StoreError};

pub use format::FormatError;

/// Entries per scan page.
const SCAN_PAGE: usize = 1_000;
/// Most entries per load: with one usage record per client, a load of 64
/// entries stays within etcd's default 128 operations per transaction.
const LOAD_ENTRIES: usize = 64;
/// Payload bytes per load (a single larger entry goes alone).
const LOAD_BYTES: usize = 1024 * 1024;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the source store, or writing the target, failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target holds a different entry under a key being loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The export file is damaged or not an export file.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
    /// The reference database cannot be read.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// After a copy, the two stores differ.
    #[error("verification failed: {0}")]
    Differs(String),
    /// A worker thread died.
    #[error("internal: {0}")]
    Internal(String),
}

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Entries read from the source.
    pub entries: u64,
    /// Key and value bytes read from the source.
    pub bytes: u64,
    /// Entries written to the target (identical ones already there are skipped).
    pub written: u64,
}

impl Progress {
    fn add(&mut self, entry: &Entry) {
        self.entries += 1;
        self.bytes += entry.kv.stored_len();
    }
}

/// What an export or a file check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// Records in the file.
    pub entries: u64,
    /// Key and value bytes.
    pub bytes: u64,
    /// The file's SHA-256 checksum (as in its trailer).
    pub sha256: [u8; 32],
}

fn file_error(path: &Path) -> impl Fn(FormatError) -> TransferError + '_ {
    move |error| TransferError::File {
        path: path.to_owned(),
        error,
    }
}

/// Writes every entry of `store` to `path` (via `path.partial`, synced and
/// renamed when complete). Export a stopped server, or accept that a live one
/// is read page by page.
pub async fn export<S: Bulk>(
    store: &S,
    path: &Path,
    mut progress: impl FnMut(&Progress),
) -> Result<FileSummary, TransferError> {
    let partial = path.with_extension("partial");
    let (pages, received) = std::sync::mpsc::sync_channel::<Vec<Entry>>(4);
    let writer_path = partial.clone();
    let writer = std::thread::spawn(move || -> Result<(u64, [u8; 32]), FormatError> {
        let file = std::fs::File::create(&writer_path)?;
        let mut out = format::Writer::new(std::io::BufWriter::with_capacity(1 << 20, file))?;
        for page in received {
            for entry in &page {
                out.write(entry)?;
            }
        }
        let (buffered, count, digest) = out.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((count, digest))
    });
    let mut seen = Progress::default();
    let mut after: Option<(ClientId, String)> = None;
    let scanned = loop {
        let page = match store.scan(after.clone(), SCAN_PAGE).await {
            Ok(page) => page,
            Err(e) => break Err(TransferError::from(e)),
        };
        let Some(last) = page.last() else {
            break Ok(());
        };
        after = Some((last.client, last.kv.key.clone()));
        page.iter().for_each(|e| seen.add(e));
        if pages.send(page).is_err() {
            break Ok(()); // The writer failed; its error is reported below.
        }
        progress(&seen);
    };
    drop(pages);
    let written = writer
        .join()
        .map_err(|_| TransferError::Internal("the export writer panicked".into()))?;
    if let Err(e) = scanned {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let (count, sha256) = written.map_err(file_error(&partial))?;
    std::fs::rename(&partial, path).map_err(|e| file_error(path)(e.into()))?;
    sync_parent(path).map_err(|e| file_error(path)(e.into()))?;
    Ok(FileSummary {
        entries: count,
        bytes: seen.bytes,
        sha256,
    })
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Reads `path` end to end and checks everything the format can check.
pub async fn verify_file(path: &Path) -> Result<FileSummary, TransferError> {
    verify_file_reporting(path, |_| {}).await
}

/// [`verify_file`], reporting what was read every thousand entries.
pub async fn verify_file_reporting(
    path: &Path,
    mut progress: impl FnMut(&Progress) + Send + 'static,
) -> Result<FileSummary, TransferError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&owned)?;
        let mut reader = format::Reader::new(std::io::BufReader::with_capacity(1 << 20, file))?;
        let mut bytes = 0;
        let mut seen = Progress::default();
        while let Some(entry) = reader.next_entry()? {
            bytes += entry.kv.stored_len();
            seen.add(&entry);
            if seen.entries % SCAN_PAGE as u64 == 0 {
                progress(&seen);
            }
        }
        progress(&seen);
        Ok::<_, FormatError>(FileSummary {
            entries: reader.count(),
            bytes,
            sha256: reader.checksum().unwrap_or_default(),
        })
    })
    .await
    .map_err(|e| TransferError::Internal(e.to_string()))?
    .map_err(file_error(path))
}

/// Verifies `path`, then loads it into `store`.
pub async fn import<S: Bulk>(
    store: &S,
    path: &Path,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, TransferError> {
    verify_file(path).await?;
    let owned = path.to_owned();
    let (done, read) = load_from(
        store,
        move |sink| {
            let file = std::fs::File::open(&owned)?;
            let mut reader = format::Reader::new(std::io::BufReader::with_capacity(1 << 20, file))?;
            while let Some(entry) = reader.next_entry()? {
                if !sink(entry) {
                    break;
                }
            }
            Ok::<_, FormatError>(())
        },
        &mut progress,
    )
    .await?;
    // The file was verified already; a failure now means it changed under us.
    read.map_err(file_error(path))?;
    Ok(done)
}

/// Loads every entry of `from` into `to`, then compares the two.
pub async fn copy<A: Bulk, B: Bulk>(
    from: &A,
    to: &B,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, TransferError> {
    let mut done = Progress::default();
    let mut after: Option<(ClientId, String)> = None;
    loop {
        let page = from.scan(after.clone(), SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.client, last.kv.key.clone()));
        let mut batcher = Batcher::default();
        let mut batches = Vec::new();
        for entry in page {
            done.add(&entry);
            batches.extend(batcher.push(entry));
        }
        batches.extend(batcher.finish());
        for batch in batches {
            done.written += to.load(batch).await?;
        }
        progress(&done);
    }
    compare(from, to).await?;
    Ok(done)
}

/// Checks that `b` holds every entry of `a`, with the same version and value,
/// and nothing else. Returns the number of entries compared.
pub async fn compare<A: Bulk, B: Bulk>(a: &A, b: &B) -> Result<u64, TransferError> {
    let mut after: Option<(ClientId, String)> = None;
    let mut compared = 0;
    loop {
        let left = a.scan(after.clone(), SCAN_PAGE).await?;
        let right = b.scan(after.clone(), SCAN_PAGE).await?;
        for (i, (x, y)) in left.iter().zip(&right).enumerate() {
            if x != y {
                return Err(TransferError::Differs(format!(
                    "entry {}: {}/{:?} v{} on one side, {}/{:?} v{} on the other",
                    compared + i as u64,
                    x.client.short(),
                    x.kv.key,
                    x.kv.version,
                    y.client.short(),
                    y.kv.key,
                    y.kv.version
                )));
            }
        }
        if left.len() != right.len() {
            return Err(TransferError::Differs(format!(
                "after {} entries one side has {} more and the other {} more",
                compared + left.len().min(right.len()) as u64,
                left.len(),
                right.len()
            )));
        }
        compared += left.len() as u64;
        match left.last() {
            Some(last) => after = Some((last.client, last.kv.key.clone())),
            None => return Ok(compared),
        }
    }
}

/// Reads the reference `lssd`'s redb file and loads its entries into `store`.
pub async fn import_reference<S: Bulk>(
    store: &S,
    path: &Path,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, TransferError> {
    let owned = path.to_owned();
    let (done, read) = load_from(
        store,
        move |sink| reference::read(&owned, sink),
        &mut progress,
    )
    .await?;
    read?;
    Ok(done)
}

/// Runs `source` on a thread of its own and loads what it yields into
/// `store` in batches. The source hands entries to its sink, which returns
/// false once loading has stopped (after a load error). Returns what was
/// loaded and the source's own result; a load error wins over it.
async fn load_from<S: Bulk, E: Send + 'static>(
    store: &S,
    source: impl FnOnce(&mut dyn FnMut(Entry) -> bool) -> Result<(), E> + Send + 'static,
    progress: &mut impl FnMut(&Progress),
) -> Result<(Progress, Result<(), E>), TransferError> {
    let (batches, mut received) = tokio::sync::mpsc::channel::<Vec<Entry>>(4);
    let reader = std::thread::spawn(move || {
        let mut batcher = Batcher::default();
        let mut open = true;
        let result = source(&mut |entry| {
            if let Some(batch) = batcher.push(entry) {
                open = batches.blocking_send(batch).is_ok();
            }
            open
        });
        if let Some(batch) = batcher.finish() {
            let _ = batches.blocking_send(batch);
        }
        result
    });
    let mut done = Progress::default();
    let mut loaded = Ok(());
    while let Some(batch) = received.recv().await {
        batch.iter().for_each(|e| done.add(e));
        match store.load(batch).await {
            Ok(written) => done.written += written,
            Err(e) => {
                loaded = Err(TransferError::from(e));
                break;
            }
        }
        progress(&done);
    }
    drop(received);
    let read = reader
        .join()
        .map_err(|_| TransferError::Internal("a transfer reader panicked".into()))?;
    loaded?;
    Ok((done, read))
}

/// Groups entries into loads that every backend accepts.
#[derive(Default)]
struct Batcher {
    batch: Vec<Entry>,
    bytes: usize,
}

impl Batcher {
    fn push(&mut self, entry: Entry) -> Option<Vec<Entry>> {
        let len = entry.kv.key.len() + entry.kv.value.len();
        let full = !self.batch.is_empty()
            && (self.batch.len() >= LOAD_ENTRIES || self.bytes + len > LOAD_BYTES);
        let out = full.then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.batch)
        });
        self.bytes += len;
        self.batch.push(entry);
        out
    }

    fn finish(&mut self) -> Option<Vec<Entry>> {
        (!self.batch.is_empty()).then(|| std::mem::take(&mut self.batch))
    }
}
