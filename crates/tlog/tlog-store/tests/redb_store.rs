//! The conformance suite on the embedded redb backend, and what only it has:
//! reopening checks every log's root (C5), a second opener is refused, and
//! a service appends in its own transaction on a shared file.

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

/// tlog.md §6.5: a service keeps its rows and the log in one redb file and
/// commits both in one transaction; an aborted transaction leaves neither,
/// an import at the wrong size is refused, and the store carries on.
#[tokio::test]
async fn a_service_appends_in_its_own_transaction() {
    use std::sync::Arc;
    use tlog_store::redb::{append_in, import_in};
    use tlog_store::StoreError;
    const ROWS: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("service_rows");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("service.redb");
    let db = Arc::new(redb::Database::create(&path).expect("db"));
    let store = RedbLogStore::open_shared(db.clone(), &path).expect("open");
    let log = store
        .create_log("log.example/service", LogOptions::default())
        .await
        .expect("create");
    let row = |name: &str| -> Option<u64> {
        let txn = db.begin_read().expect("read");
        let rows = txn.open_table(ROWS).ok()?;
        rows.get(name).expect("get").map(|g| g.value())
    };
    // Committed together.
    let txn = db.begin_write().expect("write");
    txn.open_table(ROWS)
        .expect("table")
        .insert("alice", 1)
        .expect("insert");
    let appended = append_in(&txn, &log, &[b"alice=1".to_vec()]).expect("append_in");
    txn.commit().expect("commit");
    assert_eq!(appended[0].index, 0);
    assert_eq!(row("alice"), Some(1));
    assert_eq!(store.state(log).await.expect("state").size, 1);
    // Aborted together.
    let txn = db.begin_write().expect("write");
    txn.open_table(ROWS)
        .expect("table")
        .insert("bob", 2)
        .expect("insert");
    append_in(&txn, &log, &[b"bob=2".to_vec()]).expect("append_in");
    txn.abort().expect("abort");
    assert_eq!(row("bob"), None);
    assert_eq!(store.state(log).await.expect("state").size, 1);
    // Imports only at the stored size.
    let txn = db.begin_write().expect("write");
    assert_eq!(
        import_in(&txn, &log, 5, &[b"x".to_vec()]),
        Err(StoreError::Conflict { have: 1 })
    );
    import_in(&txn, &log, 1, &[b"carol=3".to_vec()]).expect("import_in");
    txn.commit().expect("commit");
    // The store's own appends continue after them, and the tree is whole.
    let next = store
        .append(log, vec![b"dave=4".to_vec()])
        .await
        .expect("append");
    assert_eq!(next[0].index, 2);
    let mut tree = tlog_core::merkle::MemoryTree::new();
    for e in [&b"alice=1"[..], b"carol=3", b"dave=4"] {
        tree.push(e);
    }
    assert_eq!(store.state(log).await.expect("state").root, tree.root());
}

/// tlog.md §6.5: a storage failure (a full disk) is `Unavailable`, leaves
/// what was committed unchanged, and once the disk is fine again the store
/// serves reads and appends without a restart (redb latches an I/O error
/// until the file is opened again; the store reopens it).
#[tokio::test]
async fn a_failing_disk_is_unavailable_and_the_store_recovers_without_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tlog_store::StoreError;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("faulty.redb");
    let fail = Arc::new(AtomicBool::new(false));
    let open = lk_testkit::redb_faults::opener(path.clone(), fail.clone());
    let store = RedbLogStore::open_with(&path, Box::new(open)).expect("open");
    let log = store
        .create_log("log.example/faulty", LogOptions::default())
        .await
        .expect("create");
    let first: Vec<Vec<u8>> = (0..10u32).map(|i| format!("e{i}").into_bytes()).collect();
    store.append(log, first.clone()).await.expect("append");
    fail.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(matches!(
            store.append(log, vec![b"lost".to_vec()]).await,
            Err(StoreError::Unavailable(_))
        ));
    }
    fail.store(false, Ordering::SeqCst);
    // The first attempts may find the store still reopening; it recovers.
    let mut appended = None;
    for _ in 0..10 {
        match store.append(log, vec![b"after".to_vec()]).await {
            Ok(a) => {
                appended = Some(a);
                break;
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let appended = appended.expect("appends resume without a restart");
    assert_eq!(
        appended[0].index, 10,
        "nothing of the failed appends landed"
    );
    let mut tree = tlog_core::merkle::MemoryTree::new();
    let mut all = first.clone();
    all.push(b"after".to_vec());
    for e in &all {
        tree.push(e);
    }
    let state = store.state(log).await.expect("reads resume");
    assert_eq!((state.size, state.root), (11, tree.root()));
    assert_eq!(store.entries(log, 0, 11).await.expect("entries"), all);
}
