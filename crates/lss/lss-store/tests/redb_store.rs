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

/// A full or failing disk (issue 12): puts are `Unavailable` while it
/// fails, what was acknowledged stays readable and unchanged, and once the
/// disk works again puts and reads resume without a restart (redb latches
/// an I/O error until its file is opened again; the store reopens it).
#[tokio::test]
async fn a_failing_disk_is_unavailable_and_the_store_recovers_without_restart() {
    use lss_store::StoreError;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let fail = Arc::new(AtomicBool::new(false));
    let open = lk_testkit::redb_faults::opener(path.clone(), fail.clone());
    let store = RedbStore::open_with(&path, RedbConfig::default(), Box::new(open)).expect("open");
    let first = store
        .put(put(client(1), vec![kv("a", 0, b"kept")]))
        .await
        .expect("put");
    assert_eq!(first, PutOutcome::Committed);
    fail.store(true, Ordering::SeqCst);
    for v in 0..3 {
        assert!(matches!(
            store
                .put(put(client(1), vec![kv(&format!("lost{v}"), 0, b"x")]))
                .await,
            Err(StoreError::Unavailable(_))
        ));
    }
    fail.store(false, Ordering::SeqCst);
    // The first attempts may find the store still reopening; it recovers.
    let mut done = None;
    for _ in 0..10 {
        match store.put(put(client(1), vec![kv("b", 0, b"after")])).await {
            Ok(outcome) => {
                done = Some(outcome);
                break;
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        done,
        Some(PutOutcome::Committed),
        "puts resume without a restart"
    );
    assert_eq!(
        store
            .get(client(1), String::new())
            .await
            .expect("reads resume"),
        vec![kv("a", 0, b"kept"), kv("b", 0, b"after")],
        "acknowledged data intact, nothing of the failed puts"
    );
}
