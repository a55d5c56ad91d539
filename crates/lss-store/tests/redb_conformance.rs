//! The conformance suite on the embedded redb store.

use lss_store::{RedbConfig, RedbStore, Store};

/// A redb store that owns its temporary directory.
struct TempRedb {
    store: RedbStore,
    _dir: tempfile::TempDir,
}

impl Store for TempRedb {
    fn put(
        &self,
        put: lss_core::ValidPut,
    ) -> impl std::future::Future<Output = Result<lss_core::PutOutcome, lss_store::StoreError>> + Send
    {
        self.store.put(put)
    }

    fn get(
        &self,
        client: lss_core::ClientId,
        prefix: String,
    ) -> impl std::future::Future<Output = Result<Vec<lss_core::KeyValue>, lss_store::StoreError>> + Send
    {
        self.store.get(client, prefix)
    }
}

lss_store::conformance_tests!(|quota: u64| async move {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RedbConfig {
        max_namespace_bytes: quota,
        ..RedbConfig::default()
    };
    TempRedb {
        store: RedbStore::open(dir.path(), config).expect("open"),
        _dir: dir,
    }
});
