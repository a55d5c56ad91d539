//! A failing backend gives clients `UNAVAILABLE`, writes nothing, and does not
//! take the server down: Ping and Info keep answering, and full service
//! resumes as soon as the backend does, without a restart.
//!
//! The store here is the real redb store behind a switch that makes every
//! call fail the way an unreachable database or an I/O error does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lk_testkit::{kv, Lssd, Options, Signer};
use lss_core::{ClientId, KeyValue, PutOutcome, ValidPut};
use lss_store::{RedbConfig, RedbStore, Store, StoreError};

#[derive(Clone)]
struct Flaky {
    inner: Arc<RedbStore>,
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "injected: connection refused".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Store for Flaky {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        self.check()?;
        self.inner.put(put).await
    }

    async fn get(&self, client: ClientId, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(client, prefix).await
    }
}

#[tokio::test]
async fn backend_outage_is_unavailable_and_service_resumes_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Flaky {
        inner: Arc::new(RedbStore::open(dir.path(), RedbConfig::default()).expect("open")),
        down: Arc::new(AtomicBool::new(false)),
    };
    let server = Lssd::serve(store.clone(), Options::default()).await;
    let signer = Signer::new(1, &server.key);
    let mut grpc = server.grpc().await;
    let before = vec![kv("a", 0, b"one")];
    assert!(
        grpc.put(signer.put(&before))
            .await
            .expect("put")
            .into_inner()
            .success
    );

    store.down.store(true, Ordering::SeqCst);
    let err = grpc
        .put(signer.put(&[kv("a", 1, b"two")]))
        .await
        .expect_err("put during an outage");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "storage temporarily unavailable");
    let err = grpc
        .get(signer.get("", &[1; 32]))
        .await
        .expect_err("get during an outage");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // Requests that need no storage are still answered.
    let pong = grpc
        .ping(lss_proto::PingRequest {
            message: "still there?".into(),
        })
        .await
        .expect("ping during an outage");
    assert_eq!(pong.into_inner().message, "still there?");
    grpc.info(lss_proto::InfoRequest {})
        .await
        .expect("info during an outage");
    // Requests rejected before storage keep their own status.
    let mut bad = signer.put(&[kv("a", 1, b"two")]);
    bad.hmac[0] ^= 1;
    let err = grpc.put(bad).await.expect_err("bad MAC");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    store.down.store(false, Ordering::SeqCst);
    // Nothing from the outage was written; the retried put now succeeds.
    assert_eq!(signer.dump(&mut grpc).await, before);
    let after = vec![kv("a", 1, b"two")];
    assert!(
        grpc.put(signer.put(&after))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    assert_eq!(signer.dump(&mut grpc).await, after);
}
