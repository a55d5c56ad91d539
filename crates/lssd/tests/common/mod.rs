//! Test support: an in-process `lssd` on a random loopback port over a real
//! redb store in a temporary directory, and a signer-side helper that builds
//! correctly authenticated and MAC'd requests.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use lss_core::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lss_core::{
    shared_hmac, ClientId, KeyValue, Limits, ServerKey, SharedSecret, PUT_CLIENT_NONCE,
};
use lss_proto::lightning_storage_client::LightningStorageClient;
use lss_store::{RedbConfig, RedbStore};
use tonic::transport::Channel;

/// The spec's test keys: server 0x22×32, so lss-protocol.md §6 vectors apply.
pub fn spec_server_key() -> ServerKey {
    ServerKey::new(SecretKey::from_slice(&[0x22; 32]).expect("valid"))
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub key: ServerKey,
    pub store: Arc<RedbStore>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(limits: Limits) -> Self {
        Self::start_with(limits, None).await
    }

    pub async fn start_with(
        limits: Limits,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = RedbConfig {
            max_namespace_bytes: limits.max_namespace_bytes,
            ..RedbConfig::default()
        };
        let store = Arc::new(RedbStore::open(dir.path(), config).expect("open store"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let key = spec_server_key();
        let task = tokio::spawn(lssd::serve(
            listener,
            store.clone(),
            key.clone(),
            limits,
            tls,
            async {
                let _ = stop.await;
            },
        ));
        TestServer {
            addr,
            key,
            store,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn grpc(&self) -> LightningStorageClient<Channel> {
        LightningStorageClient::new(self.channel().await)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Graceful shutdown: resolves once in-flight requests are done.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server");
        }
    }
}

/// A signer: holds the client secret and makes valid requests.
pub struct Signer {
    pub secret: SecretKey,
    pub public: PublicKey,
    pub shared: SharedSecret,
}

impl Signer {
    pub fn new(byte: u8, server: &ServerKey) -> Self {
        let secret = SecretKey::from_slice(&[byte; 32]).expect("valid");
        let public = secret.public_key(&Secp256k1::signing_only());
        let shared = server.shared_secret(&ClientId::from(public));
        Signer {
            secret,
            public,
            shared,
        }
    }

    pub fn auth(&self) -> Option<lss_proto::Auth> {
        Some(lss_proto::Auth {
            client_id: self.public.serialize().to_vec(),
            token: self.shared.token().0.to_vec(),
        })
    }

    pub fn put(&self, kvs: &[KeyValue]) -> lss_proto::PutRequest {
        lss_proto::PutRequest {
            auth: self.auth(),
            kvs: kvs.iter().cloned().map(Into::into).collect(),
            hmac: shared_hmac(&self.shared, PUT_CLIENT_NONCE, kvs)
                .as_bytes()
                .to_vec(),
        }
    }

    pub fn get(&self, prefix: &str, nonce: &[u8]) -> lss_proto::GetRequest {
        lss_proto::GetRequest {
            auth: self.auth(),
            key_prefix: prefix.into(),
            nonce: nonce.to_vec(),
        }
    }

    /// Everything in the namespace, MAC checked.
    pub async fn dump(&self, grpc: &mut LightningStorageClient<Channel>) -> Vec<KeyValue> {
        let nonce = [9u8; 32];
        let reply = grpc
            .get(self.get("", &nonce))
            .await
            .expect("get")
            .into_inner();
        let kvs: Vec<KeyValue> = reply.kvs.into_iter().map(Into::into).collect();
        assert!(
            shared_hmac(&self.shared, &nonce, &kvs).verify(&reply.hmac),
            "get MAC"
        );
        kvs
    }
}

pub fn kv(key: &str, version: i64, value: &[u8]) -> KeyValue {
    KeyValue::new(key, version, value)
}
