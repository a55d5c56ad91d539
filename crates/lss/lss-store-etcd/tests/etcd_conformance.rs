//! The conformance suite on the etcd backend, each case against its own
//! single-member etcd on private ports (see `lk_testkit::etcd`).

use lk_testkit::etcd::EtcdCluster;
use lss_store_etcd::{EtcdConfig, EtcdStore};

lss_store::conformance_tests!(|quota: u64| async move {
    let etcd = EtcdCluster::start(1).await;
    let config = EtcdConfig {
        max_namespace_bytes: quota,
        ..EtcdConfig::new(etcd.endpoints())
    };
    (EtcdStore::open(config).await.expect("open"), etcd)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_rules_through_grpc() {
    let etcd = EtcdCluster::start(1).await;
    let store = std::sync::Arc::new(
        EtcdStore::open(EtcdConfig::new(etcd.endpoints()))
            .await
            .expect("open"),
    );
    lk_testkit::grpc_conformance(store).await;
}
