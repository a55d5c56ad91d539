//! The conformance suite on the embedded redb backend, and what only it has:
//! reopening checks every log's root (C5), a second opener is refused.

use std::path::Path;

use tlog_store::{LogOptions, LogStore, RedbLogStore};

async fn open(dir: &Path) -> (RedbLogStore, ()) {
    (
        RedbLogStore::open(&dir.join("lightkeeper.redb")).expect("open"),
        (),
    )
}

tlog_store::tlog_conformance_tests!(open);

#[tokio::test]
async fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ()) = open(dir.path()).await;
    store
        .create_log("log.example/x", LogOptions::default())
        .await
        .expect("create");
    let err = RedbLogStore::open(&dir.path().join("lightkeeper.redb"))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("another process"), "{err}");
}
