//! Test support shared by Lightkeeper's test suites.
//!
//! [`Lssd`] runs `lssd` in-process on a random loopback port over a real redb
//! store in a temporary directory, with a fixed server key so the spec's test
//! vectors apply. It stops when dropped.

use std::sync::Arc;

use lss_core::secp256k1::{PublicKey, SecretKey};
use lss_core::{Limits, ServerKey};
use lss_store::{RedbConfig, RedbStore};

/// A running in-process `lssd`.
pub struct Lssd {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's public key.
    pub server_id: PublicKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

impl Lssd {
    /// Starts a server whose secret key is `[key_byte; 32]` (0x22 is the spec's).
    pub async fn start(key_byte: u8, limits: Limits) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let config = RedbConfig {
            max_namespace_bytes: limits.max_namespace_bytes,
            ..RedbConfig::default()
        };
        let store = Arc::new(RedbStore::open(data.path(), config).expect("open store"));
        let key = ServerKey::new(SecretKey::from_slice(&[key_byte; 32]).expect("valid key byte"));
        let server_id = key.public_key();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(lssd::serve(listener, store, key, limits, None, async {
            let _ = stopped.await;
        }));
        Lssd {
            url,
            server_id,
            stop: Some(stop),
            _data: data,
        }
    }
}

impl Drop for Lssd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
