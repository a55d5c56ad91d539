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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_rules_through_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        std::sync::Arc::new(RedbStore::open(dir.path(), RedbConfig::default()).expect("open"));
    lk_testkit::grpc_conformance(store).await;
}
