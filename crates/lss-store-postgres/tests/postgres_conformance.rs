//! The conformance suite on the PostgreSQL backend, against a real PostgreSQL
//! (see `lk_testkit::postgres`), each case in a schema of its own.

use lk_testkit::postgres::Schema;
use lss_store::Store;
use lss_store_postgres::{PostgresConfig, PostgresStore};

/// A store that drops its schema when the test is done.
struct TempPostgres {
    store: PostgresStore,
    _schema: Schema,
}

impl Store for TempPostgres {
    fn put(
        &self,
        put: lss_core::ValidPut,
    ) -> impl std::future::Future<Output = Result<lss_core::PutOutcome, lss_store::StoreError>> + Send
    {
        self.store.put(put)
    }

    fn get(
        &self,
        client: lss_core::ClientId,
        prefix: String,
    ) -> impl std::future::Future<Output = Result<Vec<lss_core::KeyValue>, lss_store::StoreError>> + Send
    {
        self.store.get(client, prefix)
    }
}

lss_store::conformance_tests!(|quota: u64| async move {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        max_namespace_bytes: quota,
        ..PostgresConfig::new(schema.url.clone())
    };
    TempPostgres {
        store: PostgresStore::open(config).await.expect("open"),
        _schema: schema,
    }
});
