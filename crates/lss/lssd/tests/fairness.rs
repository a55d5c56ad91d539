//! One client flooding the server cannot crowd out the others: beyond
//! `max_inflight_per_client` its requests are refused with
//! `RESOURCE_EXHAUSTED` naming the limit, while another client is served.
//! The store here is the real redb store made slow (every call waits), so
//! the flood's requests are certainly in flight together.

use std::sync::Arc;
use std::time::Duration;

use lk_testkit::{kv, Lssd, Options, Signer};
use lss_core::{ClientId, KeyValue, Limits, PutOutcome, ValidPut};
use lss_proto::lightning_storage_client::LightningStorageClient;
use lss_store::{RedbConfig, RedbStore, Store, StoreError};

#[derive(Clone)]
struct Slow(Arc<RedbStore>);

impl Store for Slow {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.put(put).await
    }

    async fn get(&self, client: ClientId, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.get(client, prefix).await
    }

    async fn usage(&self, client: ClientId) -> Result<u64, StoreError> {
        self.0.usage(client).await
    }

    async fn totals(&self) -> Result<lss_store::Totals, StoreError> {
        self.0.totals().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_refused_beyond_its_limit_and_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Slow(Arc::new(
        RedbStore::open(dir.path(), RedbConfig::default()).expect("open"),
    ));
    let options = Options {
        limits: Limits {
            max_inflight_per_client: 2,
            ..Limits::default()
        },
        ..Options::default()
    };
    let server = Lssd::serve(store, options).await;
    let channel = server.channel().await;
    let flooder = Signer::new(1, &server.key);
    let flood: Vec<_> = (0..20)
        .map(|i| {
            let mut grpc = LightningStorageClient::new(channel.clone());
            let request = flooder.put(&[kv(&format!("k{i:02}"), 0, b"flood")]);
            tokio::spawn(async move { grpc.put(request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Meanwhile another client is served normally.
    let polite = Signer::new(2, &server.key);
    let mut grpc = server.grpc().await;
    let reply = grpc
        .put(polite.put(&[kv("mine", 0, b"ok")]))
        .await
        .expect("the other client is served")
        .into_inner();
    assert!(reply.success);

    let (mut served, mut refused) = (0, 0);
    for request in flood {
        match request.await.expect("task") {
            Ok(reply) => {
                assert!(reply.into_inner().success);
                served += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(
                    status
                        .message()
                        .starts_with("max_inflight_per_client exceeded"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert!((2..20).contains(&served), "served {served}");
    assert_eq!(served + refused, 20);
    // Nothing refused was written; everything served was.
    assert_eq!(flooder.dump(&mut grpc).await.len(), served);
    // Slots are released: the flooder is served again once it slows down.
    let reply = grpc
        .put(flooder.put(&[kv("later", 0, b"fine")]))
        .await
        .expect("served after the flood")
        .into_inner();
    assert!(reply.success);
}
