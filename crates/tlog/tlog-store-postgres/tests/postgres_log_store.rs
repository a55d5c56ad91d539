//! The log-store conformance suite on a real PostgreSQL (see
//! `lk_testkit::postgres`), each case in a schema of its own, and what only
//! a shared database has: two nodes appending to one log through their own
//! pools get one contiguous sequence; a COMMIT whose answer was lost is
//! reported once, never appended twice; an outage is `Unavailable` and
//! service resumes without a restart; LSS and the log store share a schema.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lk_testkit::net::FaultProxy;
use lk_testkit::postgres::{self, Schema};
use tlog_core::merkle::MemoryTree;
use tlog_store::{LogOptions, LogStore, StoreError};
use tlog_store_postgres::{PostgresConfig, PostgresLogStore};

/// Opens the store of the test directory's schema: the first open makes a
/// fresh schema (dropped with the returned guard) and notes its name in the
/// directory, later opens reuse it.
async fn open(dir: &Path) -> (PostgresLogStore, Option<Schema>) {
    let marker = dir.join("schema");
    let (name, guard) = match std::fs::read_to_string(&marker) {
        Ok(name) => (name, None),
        Err(_) => {
            let schema = Schema::fresh().await;
            std::fs::write(&marker, &schema.name).expect("marker");
            (schema.name.clone(), Some(schema))
        }
    };
    let config = PostgresConfig {
        schema: name,
        ..PostgresConfig::new(postgres::url().await)
    };
    (PostgresLogStore::open(config).await.expect("open"), guard)
}

tlog_store::tlog_conformance_tests!(open);

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_append_one_contiguous_log() {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        pool_size: 4,
        ..PostgresConfig::new(schema.url.clone())
    };
    let a = Arc::new(PostgresLogStore::open(config.clone()).await.expect("a"));
    let b = Arc::new(PostgresLogStore::open(config).await.expect("b"));
    let log = a
        .create_log("log.example/shared", LogOptions::default())
        .await
        .expect("create");
    assert_eq!(
        b.create_log("log.example/shared", LogOptions::default())
            .await,
        Ok(log)
    );
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for n in 0..10u64 {
                let batch = vec![entry(t * 100 + 2 * n), entry(t * 100 + 2 * n + 1)];
                let appended = store.append(log, batch.clone()).await.expect("append");
                assert_eq!(appended[1].index, appended[0].index + 1, "contiguous");
                got.push((appended[0].index, batch));
            }
            got
        }));
    }
    let mut by_index = std::collections::BTreeMap::new();
    for task in tasks {
        for (first, batch) in task.await.expect("task") {
            for (i, e) in batch.into_iter().enumerate() {
                assert!(
                    by_index.insert(first + i as u64, e).is_none(),
                    "index given twice"
                );
            }
        }
    }
    assert_eq!(by_index.len(), 160);
    assert_eq!(*by_index.keys().last().expect("some"), 159, "no gaps");
    let mut tree = MemoryTree::new();
    for e in by_index.values() {
        tree.push(e);
    }
    for store in [&a, &b] {
        let state = store.state(log).await.expect("state");
        assert_eq!((state.size, state.root), (160, tree.root()));
        assert_eq!(
            store.entries(log, 0, 160).await.expect("entries"),
            by_index.values().cloned().collect::<Vec<_>>()
        );
    }
}

async fn proxied(schema: &Schema) -> (FaultProxy, PostgresLogStore) {
    let proxy = FaultProxy::start(postgres::server_addr(&schema.url)).await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        connect_timeout: Duration::from_secs(1),
        pool_size: 2,
        ..PostgresConfig::new(postgres::via(&schema.url, proxy.addr))
    };
    let store = PostgresLogStore::open(config).await.expect("open");
    (proxy, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_commit_answer_is_lost_is_appended_once() {
    let schema = Schema::fresh().await;
    let (proxy, store) = proxied(&schema).await;
    for dedup in [false, true] {
        let origin = format!("log.example/doubt-{dedup}");
        let log = store
            .create_log(
                &origin,
                LogOptions {
                    dedup,
                    index_leaves: false,
                },
            )
            .await
            .expect("create");
        store.append(log, vec![entry(0)]).await.expect("first");
        // The server commits; the store never hears back and retries.
        proxy.cut_after_next(b"COMMIT");
        let appended = store
            .append(log, vec![entry(1), entry(2)])
            .await
            .expect("append in doubt");
        assert!(proxy.pattern_cuts() >= 1, "the COMMIT was cut");
        assert_eq!(
            appended
                .iter()
                .map(|a| (a.index, a.duplicate))
                .collect::<Vec<_>>(),
            vec![(1, false), (2, false)],
            "reported as appended, once (dedup {dedup})"
        );
        let state = store.state(log).await.expect("state");
        assert_eq!(state.size, 3, "not appended twice (dedup {dedup})");
        let mut tree = MemoryTree::new();
        for i in 0..3 {
            tree.push(&entry(i));
        }
        assert_eq!(state.root, tree.root());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_service_resumes_without_restart() {
    let schema = Schema::fresh().await;
    let (proxy, store) = proxied(&schema).await;
    let log = store
        .create_log("log.example/outage", LogOptions::default())
        .await
        .expect("create");
    store.append(log, vec![entry(0)]).await.expect("before");
    proxy.set_down(true);
    proxy.cut_all();
    let err = store
        .append(log, vec![entry(1)])
        .await
        .expect_err("append while down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = store.state(log).await.expect_err("read while down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    proxy.set_down(false);
    assert_eq!(
        store.state(log).await.expect("state").size,
        1,
        "nothing written"
    );
    store.append(log, vec![entry(1)]).await.expect("after");
    assert_eq!(store.state(log).await.expect("state").size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lss_and_the_log_store_share_a_schema() {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    };
    let _lss = lss_store_postgres::PostgresStore::open(config.clone())
        .await
        .expect("lss first");
    let logs = PostgresLogStore::open(config.clone())
        .await
        .expect("log store second");
    logs.create_log("log.example/shared-schema", LogOptions::default())
        .await
        .expect("create");
    // Both reopen: each finds its own migrations recorded.
    drop(logs);
    PostgresLogStore::open(config.clone())
        .await
        .expect("log store reopens");
    lss_store_postgres::PostgresStore::open(config)
        .await
        .expect("lss reopens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_row_is_refused_at_open() {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    };
    let store = PostgresLogStore::open(config.clone()).await.expect("open");
    let log = store
        .create_log("log.example/c5", LogOptions::default())
        .await
        .expect("create");
    store
        .append(log, (0..5).map(entry).collect())
        .await
        .expect("append");
    drop(store);
    // Someone edits the root behind the store's back.
    schema
        .client()
        .await
        .execute(
            &format!("UPDATE \"{}\".tlog_logs SET root = $1", schema.name),
            &[&vec![7u8; 32]],
        )
        .await
        .expect("tamper");
    let err = PostgresLogStore::open(config).await.err().expect("refused");
    assert!(err.to_string().contains("C5"), "{err}");
}

/// tlog.md §6.5: a service commits its own row and the log entries in one
/// PostgreSQL transaction; a rolled-back transaction leaves neither; an
/// import at the wrong size is refused; the store's appends carry on.
#[tokio::test]
async fn a_service_appends_in_its_own_transaction() {
    let schema = Schema::fresh().await;
    let store = PostgresLogStore::open(PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    })
    .await
    .expect("open");
    let log = store
        .create_log("log.example/service", LogOptions::default())
        .await
        .expect("create");
    let mut client = schema.client().await;
    let table = format!("\"{}\".service_rows", schema.name);
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (name text PRIMARY KEY, value bigint)"
        ))
        .await
        .expect("service table");
    let insert = format!("INSERT INTO {table} VALUES ($1, $2)");
    // Committed together.
    let tx = client.transaction().await.expect("begin");
    tx.execute(&insert, &[&"alice", &1i64]).await.expect("row");
    let appended = store
        .append_in(&tx, log, &[b"alice=1".to_vec()])
        .await
        .expect("append_in");
    tx.commit().await.expect("commit");
    assert_eq!(appended[0].index, 0);
    assert_eq!(store.state(log).await.expect("state").size, 1);
    // Rolled back together.
    let tx = client.transaction().await.expect("begin");
    tx.execute(&insert, &[&"bob", &2i64]).await.expect("row");
    store
        .append_in(&tx, log, &[b"bob=2".to_vec()])
        .await
        .expect("append_in");
    tx.rollback().await.expect("rollback");
    let rows = client
        .query(&format!("SELECT name FROM {table} ORDER BY name"), &[])
        .await
        .expect("rows");
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["alice"]);
    assert_eq!(store.state(log).await.expect("state").size, 1);
    // Imports only at the stored size.
    let tx = client.transaction().await.expect("begin");
    assert_eq!(
        store.import_in(&tx, log, 5, &[b"x".to_vec()]).await,
        Err(StoreError::Conflict { have: 1 })
    );
    store
        .import_in(&tx, log, 1, &[b"carol=3".to_vec()])
        .await
        .expect("import_in");
    tx.commit().await.expect("commit");
    let next = store
        .append(log, vec![b"dave=4".to_vec()])
        .await
        .expect("append");
    assert_eq!(next[0].index, 2);
    let mut tree = MemoryTree::new();
    for e in [&b"alice=1"[..], b"carol=3", b"dave=4"] {
        tree.push(e);
    }
    assert_eq!(store.state(log).await.expect("state").root, tree.root());
}
