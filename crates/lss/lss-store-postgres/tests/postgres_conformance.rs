//! The conformance suite on the PostgreSQL backend, against a real PostgreSQL
//! (see `lk_testkit::postgres`), each case in a schema of its own.

use lk_testkit::postgres::Schema;
use lss_store_postgres::{PostgresConfig, PostgresStore};

lss_store::conformance_tests!(|quota: u64| async move {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        max_namespace_bytes: quota,
        ..PostgresConfig::new(schema.url.clone())
    };
    (PostgresStore::open(config).await.expect("open"), schema)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_rules_through_grpc() {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    };
    let store = std::sync::Arc::new(PostgresStore::open(config).await.expect("open"));
    lk_testkit::grpc_conformance(store).await;
}

/// Paged reads hold a pooled connection each, a quarter of the pool at
/// most: readers that never finish cannot starve writers, and the readers
/// beyond that quarter are served whole, from their own snapshot too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_paged_readers_leave_connections_for_writers() {
    use lss_store::conformance::{client, put};
    use lss_store::Store;
    let schema = Schema::fresh().await;
    let pool_size = 4;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        pool_size,
        ..PostgresConfig::new(schema.url.clone())
    };
    let store = PostgresStore::open(config).await.expect("open");
    let kvs: Vec<lss_core::KeyValue> = (0..20)
        .map(|i| lss_core::KeyValue::new(format!("k{i:02}"), 0, vec![i; 100]))
        .collect();
    store.put(put(client(1), kvs.clone())).await.expect("put");
    // More open readers than the pool has connections, none finishing.
    let mut readers = Vec::new();
    for _ in 0..pool_size + 2 {
        let mut pages = store.pages(client(1), "k".into()).await.expect("pages");
        assert_eq!(pages.count().await.expect("count"), 20);
        let first = pages.next_page(250).await.expect("page");
        assert_eq!(first, kvs[..2], "a page of about 250 bytes");
        readers.push(pages);
    }
    // Writers still get connections (the pool waits at most its timeout).
    let later = vec![lss_core::KeyValue::new("k19", 1, b"later".to_vec())];
    store
        .put(put(client(1), later))
        .await
        .expect("a put beside the readers");
    // Every reader, paged or read whole, finishes its own snapshot.
    for mut pages in readers {
        let mut seen = kvs[..2].to_vec();
        loop {
            let page = pages.next_page(250).await.expect("page");
            if page.is_empty() {
                break;
            }
            seen.extend(page);
        }
        assert_eq!(seen, kvs);
    }
}
