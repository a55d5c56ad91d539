//! A service's log in the service's own redb file (tlog.md §6.5): the
//! keyserver and the statechain entity keep their tables beside the log's
//! so one transaction commits a service row and its entry. This opens the
//! file, the shared log store and the signing node in one place.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tlog_core::note::SignerKey;
use tlog_store::{LogOptions, LogState, LogStore, RedbLogStore};

use crate::LogNode;

/// The open file, its log store, the node that signs and serves the log,
/// and the log's state at open.
pub struct SharedRedbLog {
    /// The redb file (the service opens its own tables in it).
    pub db: Arc<redb::Database>,
    /// The log's store over the same file.
    pub store: Arc<RedbLogStore>,
    /// The sequencer node (checkpointer, tiles).
    pub node: Arc<LogNode<RedbLogStore>>,
    /// Size and status at open.
    pub state: LogState,
}

/// Opens (or creates) `path` and starts the log of `key` in it,
/// checkpointing every `interval` and publishing under `publish`.
pub async fn open(
    path: &Path,
    key: SignerKey,
    interval: Duration,
    publish: crate::submit::Publish,
) -> Result<SharedRedbLog, String> {
    let db =
        Arc::new(redb::Database::create(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let store = Arc::new(RedbLogStore::open_shared(db.clone(), path).map_err(|e| e.to_string())?);
    let node = LogNode::start(store.clone(), key, LogOptions::default(), interval, publish)
        .await
        .map_err(|e| e.to_string())?;
    let state = store
        .state(node.log_id())
        .await
        .map_err(|e| e.to_string())?;
    Ok(SharedRedbLog {
        db,
        store,
        node,
        state,
    })
}
