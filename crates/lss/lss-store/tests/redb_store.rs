//! Behaviour specific to the embedded store: files, locking, formats, batching.

use std::sync::Arc;

use lss_core::PutOutcome;
use lss_store::conformance::{client, kv, put};
use lss_store::redb::{OpenError, FILE_NAME};
use lss_store::{RedbConfig, RedbStore, Store};

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = RedbStore::open(dir.path(), RedbConfig::default()).expect("open");
        let outcome = store
            .put(put(client(1), vec![kv("a", 0, b"x")]))
            .await
            .expect("put");
        assert_eq!(outcome, PutOutcome::Committed);
    }
    let store = RedbStore::open(dir.path(), RedbConfig::default()).expect("reopen");
    assert_eq!(
        store.get(client(1), String::new()).await.expect("get"),
        vec![kv("a", 0, b"x")]
    );
}

#[tokio::test]
async fn second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = RedbStore::open(dir.path(), RedbConfig::default()).expect("open");
    match RedbStore::open(dir.path(), RedbConfig::default()) {
        Err(e @ OpenError::AlreadyOpen(_)) => {
            assert!(e.to_string().contains("already open"), "{e}")
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[tokio::test]
async fn unknown_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            txn.open_table(def)
                .expect("table")
                .insert("format", 99)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    match RedbStore::open(dir.path(), RedbConfig::default()) {
        Err(OpenError::UnknownFormat { found: 99, .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened a file of an unknown format"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_redb_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(FILE_NAME), vec![0xAB; 10_000]).expect("write");
    assert!(RedbStore::open(dir.path(), RedbConfig::default()).is_err());
}

/// Concurrent puts share commits: with 1 put per batch allowed every put is
/// its own commit; the default batches them. Both give the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_are_grouped_without_changing_results() {
    for max_batch_puts in [1, 1_024] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = RedbConfig {
            max_batch_puts,
            ..RedbConfig::default()
        };
        let store = Arc::new(RedbStore::open(dir.path(), config).expect("open"));
        let tasks: Vec<_> = (1..=64u8)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.put(put(client(n), vec![kv("k", 0, &[n])])).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(
                task.await.expect("task").expect("put"),
                PutOutcome::Committed
            );
        }
        for n in 1..=64u8 {
            assert_eq!(
                store.get(client(n), String::new()).await.expect("get"),
                vec![kv("k", 0, &[n])]
            );
        }
    }
}
