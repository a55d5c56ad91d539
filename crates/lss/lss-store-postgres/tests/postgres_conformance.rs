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
