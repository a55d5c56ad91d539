//! The conformance suite on the etcd backend, each case against its own
//! single-member etcd on private ports (see `lk_testkit::etcd`).

use lk_testkit::etcd::EtcdCluster;
use lss_store::Store;
use lss_store_etcd::{EtcdConfig, EtcdStore};

/// A store that stops its etcd when the test is done.
struct TempEtcd {
    store: EtcdStore,
    _etcd: EtcdCluster,
}

impl Store for TempEtcd {
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
    let etcd = EtcdCluster::start(1).await;
    let config = EtcdConfig {
        max_namespace_bytes: quota,
        ..EtcdConfig::new(etcd.endpoints())
    };
    TempEtcd {
        store: EtcdStore::open(config).await.expect("open"),
        _etcd: etcd,
    }
});
