//! The conformance suite on the embedded redb store.

use lss_store::{RedbConfig, RedbStore};

lss_store::conformance_tests!(|quota: u64| async move {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RedbConfig {
        max_namespace_bytes: quota,
        ..RedbConfig::default()
    };
    // The store goes first (its writer finishes), then the directory.
    let store = std::sync::Arc::new(RedbStore::open(dir.path(), config).expect("open"));
    (store, dir)
});
