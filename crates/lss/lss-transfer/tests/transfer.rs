//! Export, import, copy and reference import end to end, on real stores:
//! redb, PostgreSQL and etcd.

use std::sync::Arc;

use lk_testkit::etcd::EtcdCluster;
use lk_testkit::postgres::Schema;
use lss_core::secp256k1::{Secp256k1, SecretKey};
use lss_core::{KeyValue, PutOutcome};
use lss_store::conformance::{client, kv, put};
use lss_store::{Bulk, Entry, LoadError, RedbConfig, RedbStore, Store};
use lss_store_etcd::{EtcdConfig, EtcdStore};
use lss_store_postgres::{PostgresConfig, PostgresStore};
use lss_transfer::{FormatError, TransferError};

fn redb(dir: &tempfile::TempDir) -> Arc<RedbStore> {
    Arc::new(RedbStore::open(dir.path(), RedbConfig::default()).expect("open"))
}

/// Several namespaces, versions above 0, empty and binary values, a big one.
async fn fill<S: Store>(store: &S) {
    for n in 1..=4u8 {
        let c = client(n);
        let mut kvs: Vec<KeyValue> = (0..70)
            .map(|i| kv(&format!("channel/{i:03}"), 0, &[n, i as u8]))
            .collect();
        kvs.push(kv("", 0, b""));
        kvs.push(kv("zz/é", 0, &vec![0xff; 300_000]));
        kvs.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        for chunk in kvs.chunks(50) {
            let outcome = store.put(put(c, chunk.to_vec())).await.expect("put");
            assert_eq!(outcome, PutOutcome::Committed);
        }
        let outcome = store.put(put(c, vec![kv("signer", 0, b"v0")])).await;
        assert_eq!(outcome.expect("put"), PutOutcome::Committed);
        let outcome = store.put(put(c, vec![kv("signer", 1, b"v1")])).await;
        assert_eq!(outcome.expect("put"), PutOutcome::Committed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verify_import_round_trip() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let source = redb(&a);
    fill(&source).await;
    let file = a.path().join("backup.lkx");
    let mut reports = 0;
    let exported = lss_transfer::export(&source, &file, |_| reports += 1)
        .await
        .expect("export");
    assert!(reports > 0, "progress is reported");
    assert!(!file.with_extension("partial").exists());
    let checked = lss_transfer::verify_file(&file).await.expect("verify");
    assert_eq!(checked, exported);
    assert_eq!(exported.entries, 4 * 73);

    let target = redb(&b);
    let done = lss_transfer::import(&target, &file, |_| {})
        .await
        .expect("import");
    assert_eq!(
        (done.entries, done.written),
        (exported.entries, exported.entries)
    );
    assert_eq!(
        lss_transfer::compare(&source, &target).await.expect("same"),
        exported.entries
    );
    // Importing again writes nothing and changes nothing.
    let again = lss_transfer::import(&target, &file, |_| {})
        .await
        .expect("again");
    assert_eq!(again.written, 0);
    // The imported store goes on with the +1 rule.
    let next = target
        .put(put(client(1), vec![kv("signer", 2, b"v2")]))
        .await
        .expect("put");
    assert_eq!(next, PutOutcome::Committed);
    // Now the stores differ, and compare says where.
    let err = lss_transfer::compare(&source, &target)
        .await
        .expect_err("differ");
    assert!(
        matches!(err, TransferError::Differs(ref m) if m.contains("signer")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_clashing_file_imports_nothing_or_stops_clearly() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let source = redb(&a);
    fill(&source).await;
    let file = a.path().join("backup.lkx");
    lss_transfer::export(&source, &file, |_| {})
        .await
        .expect("export");
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let damaged = a.path().join("damaged.lkx");
    std::fs::write(&damaged, &bytes).expect("write");
    let target = redb(&b);
    let err = lss_transfer::import(&target, &damaged, |_| {})
        .await
        .expect_err("damaged");
    assert!(matches!(err, TransferError::File { .. }), "{err}");
    assert!(
        target.scan(None, 10).await.expect("scan").is_empty(),
        "nothing loaded"
    );
    let truncated = a.path().join("truncated.lkx");
    std::fs::write(&truncated, &bytes[..middle]).expect("write");
    let err = lss_transfer::verify_file(&truncated)
        .await
        .expect_err("truncated");
    assert!(
        matches!(
            err,
            TransferError::File {
                error: FormatError::Truncated(_),
                ..
            }
        ),
        "{err}"
    );
    let err = lss_transfer::verify_file(&a.path().join("missing.lkx"))
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("missing.lkx"), "{err}");

    // A target that already holds something else under a key: a clear stop.
    target
        .put(put(client(2), vec![kv("signer", 0, b"different")]))
        .await
        .expect("put");
    let err = lss_transfer::import(&target, &file, |_| {})
        .await
        .expect_err("clash");
    assert!(
        matches!(err, TransferError::Load(LoadError::Mismatch { ref key, .. }) if key == "signer"),
        "{err}"
    );
}

/// redb → PostgreSQL → etcd → redb, each hop verified, every version and
/// value kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_between_every_backend() {
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let source = redb(&a);
    fill(&source).await;
    let schema = Schema::fresh().await;
    let postgres = PostgresStore::open(PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    })
    .await
    .expect("postgres");
    let etcd_cluster = EtcdCluster::start(1).await;
    let etcd = EtcdStore::open(EtcdConfig::new(etcd_cluster.endpoints()))
        .await
        .expect("etcd");
    let back = redb(&b);

    let first = lss_transfer::copy(&source, &postgres, |_| {})
        .await
        .expect("to postgres");
    assert_eq!(first.written, 4 * 73);
    lss_transfer::copy(&postgres, &etcd, |_| {})
        .await
        .expect("to etcd");
    lss_transfer::copy(&etcd, &back, |_| {})
        .await
        .expect("back to redb");
    assert_eq!(
        lss_transfer::compare(&source, &back).await.expect("same"),
        4 * 73
    );
    // Each target serves the copied data through the protocol path too.
    for n in 1..=4u8 {
        let want = source.get(client(n), String::new()).await.expect("get");
        assert_eq!(
            postgres.get(client(n), String::new()).await.expect("get"),
            want
        );
        assert_eq!(etcd.get(client(n), String::new()).await.expect("get"), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_redb_file_is_imported() {
    let dir = tempfile::tempdir().expect("dir");
    let secp = Secp256k1::signing_only();
    let one = SecretKey::from_slice(&[1; 32])
        .expect("key")
        .public_key(&secp);
    let two = SecretKey::from_slice(&[2; 32])
        .expect("key")
        .public_key(&secp);
    let compressed = hex::encode(one.serialize());
    let uncompressed = hex::encode(two.serialize_uncompressed());
    let big: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let rows = vec![
        (format!("{compressed}/"), 0, vec![]),
        (format!("{compressed}/channel/1"), 12, big.clone()),
        (
            format!("{compressed}/a/b/c"),
            0,
            b"slashes in keys".to_vec(),
        ),
        (
            format!("{uncompressed}/node"),
            3,
            b"uncompressed id".to_vec(),
        ),
    ];
    let path = dir.path().join("redb");
    lk_testkit::reference::write_redb(&path, &rows);
    let target_dir = tempfile::tempdir().expect("dir");
    let target = redb(&target_dir);
    let done = lss_transfer::import_reference(&target, &path, |_| {})
        .await
        .expect("import");
    assert_eq!(done.written, 4);
    let c1 = lss_core::ClientId::from(one);
    let c2 = lss_core::ClientId::from(two);
    assert_eq!(
        target.get(c1, String::new()).await.expect("get"),
        vec![
            kv("", 0, b""),
            kv("a/b/c", 0, b"slashes in keys"),
            KeyValue::new("channel/1", 12, big),
        ]
    );
    assert_eq!(
        target.get(c2, String::new()).await.expect("get"),
        vec![kv("node", 3, b"uncompressed id")]
    );
    let next = target
        .put(put(c2, vec![kv("node", 4, b"next")]))
        .await
        .expect("put");
    assert_eq!(next, PutOutcome::Committed);

    // Entries that are not in the reference format are named, nothing guessed.
    for (i, (bad_key, bad_value, what)) in [
        ("no-slash".to_string(), vec![0xa0], "no '/'"),
        (format!("{}/k", "zz".repeat(33)), vec![0xa0], "not hex"),
        (format!("{compressed}/k"), b"not cbor".to_vec(), "value"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad-{i}"));
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        txn.open_table(lss_transfer::reference::TABLE)
            .expect("table")
            .insert(bad_key.as_str(), bad_value.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
        drop(db);
        let err = lss_transfer::import_reference(&target, &path, |_| {})
            .await
            .expect_err("bad entry");
        assert!(err.to_string().contains(what), "{err}");
    }
    let err = lss_transfer::import_reference(&target, &dir.path().join("nope"), |_| {})
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("no such file"), "{err}");
    let entries: Vec<Entry> = target.scan(None, 100).await.expect("scan");
    assert_eq!(entries.len(), 4, "bad files loaded nothing");
}
