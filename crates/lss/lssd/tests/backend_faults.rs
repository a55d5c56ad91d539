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

    async fn usage(&self, client: ClientId) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.usage(client).await
    }

    async fn totals(&self) -> Result<lss_store::Totals, StoreError> {
        self.check()?;
        self.inner.totals().await
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

/// What standard gRPC tooling runs, in Python (`grpcio-health-checking`,
/// `grpcio-reflection`, code nobody here wrote): `services` lists what
/// reflection advertises, `check` prints the health of the whole server.
const PROBE: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1])
if sys.argv[2] == "services":
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    for answer in stub.ServerReflectionInfo(iter([ask]), timeout=5):
        for service in answer.list_services_response.service:
            print(service.name)
else:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=sys.argv[3]), timeout=5)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
"#;

fn probe(python: &std::path::Path, addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new(python)
        .args(["-c", PROBE, &addr.to_string()])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Waits (up to 20 s) until the health of `service` reads `want`.
fn health_becomes(python: &std::path::Path, addr: std::net::SocketAddr, service: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = probe(python, addr, &["check", service]);
        if status.trim() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health of {service:?} stayed {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Issue 13: gRPC health and reflection on lssd's port, answered to
/// standard Python clients; health is NOT_SERVING while the store cannot
/// be read and SERVING again once it can, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_store_and_reflection_lists_the_services() {
    let python = tokio::task::spawn_blocking(|| {
        lk_testkit::python::venv(&["grpcio", "grpcio-health-checking", "grpcio-reflection"])
    })
    .await
    .expect("venv");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Flaky {
        inner: Arc::new(RedbStore::open(dir.path(), RedbConfig::default()).expect("open")),
        down: Arc::new(AtomicBool::new(false)),
    };
    let server = Lssd::serve(store.clone(), Options::default()).await;
    let addr = server.addr;
    let down = store.down.clone();
    tokio::task::spawn_blocking(move || {
        let services = probe(&python, addr, &["services"]);
        for name in [
            "lss.LightningStorage",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(services.lines().any(|l| l == name), "{name} in {services}");
        }
        health_becomes(&python, addr, "", "SERVING");
        health_becomes(&python, addr, "lss.LightningStorage", "SERVING");
        down.store(true, Ordering::SeqCst);
        health_becomes(&python, addr, "", "NOT_SERVING");
        health_becomes(&python, addr, "lss.LightningStorage", "NOT_SERVING");
        down.store(false, Ordering::SeqCst);
        health_becomes(&python, addr, "", "SERVING");
    })
    .await
    .expect("probes");
}
