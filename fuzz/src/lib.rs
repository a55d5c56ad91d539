//! Support for the fuzz targets: the real `LssService` over an in-memory
//! store (fuzzing needs thousands of runs a second; the store's semantics are
//! the conformance suite's business, not the fuzzer's), and a valid client so
//! inputs can reach past authentication.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use lss_core::secp256k1::{Secp256k1, SecretKey};
use lss_core::{
    accepts, shared_hmac, ClientId, KeyValue, Limits, PutOutcome, ServerKey, SharedSecret,
    ValidPut, PUT_CLIENT_NONCE,
};
use lss_store::{Store, StoreError, Totals};
use lssd::service::LssService;

/// A map from (namespace, key) to (version, value), applying the version rule.
#[derive(Default)]
pub struct MemStore(Mutex<BTreeMap<(ClientId, String), (i64, Vec<u8>)>>);

impl Store for MemStore {
    async fn put(&self, put: ValidPut) -> Result<PutOutcome, StoreError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let client = *put.client();
        let conflicts: Vec<KeyValue> = put
            .kvs()
            .iter()
            .filter_map(|kv| {
                let current = map.get(&(client, kv.key.clone()));
                (!accepts(kv.version, current.map(|(v, _)| *v))).then(|| {
                    KeyValue::conflict(kv.key.clone(), current.map(|(v, d)| (*v, d.clone())))
                })
            })
            .collect();
        if !conflicts.is_empty() {
            return Ok(PutOutcome::Conflict(conflicts));
        }
        for kv in put.kvs() {
            map.insert((client, kv.key.clone()), (kv.version, kv.value.clone()));
        }
        Ok(PutOutcome::Committed)
    }

    async fn get(&self, client: ClientId, prefix: String) -> Result<Vec<KeyValue>, StoreError> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .range((client, prefix.clone())..)
            .take_while(|((c, k), _)| *c == client && k.starts_with(&prefix))
            .map(|((_, k), (v, d))| KeyValue::new(k.clone(), *v, d.clone()))
            .collect())
    }

    async fn usage(&self, client: ClientId) -> Result<u64, StoreError> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map
            .iter()
            .filter(|((c, _), _)| *c == client)
            .map(|((_, k), (_, d))| (k.len() + d.len()) as u64)
            .sum())
    }

    async fn totals(&self) -> Result<Totals, StoreError> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let namespaces: std::collections::BTreeSet<&ClientId> =
            map.keys().map(|(c, _)| c).collect();
        Ok(Totals {
            namespaces: namespaces.len() as u64,
            bytes: map
                .iter()
                .map(|((_, k), (_, d))| (k.len() + d.len()) as u64)
                .sum(),
        })
    }
}

/// The service every target shares (small limits, so limits are reachable).
pub fn harness() -> &'static LssService<MemStore> {
    static SERVICE: OnceLock<LssService<MemStore>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let limits = Limits {
            max_key_bytes: 64,
            max_value_bytes: 256,
            max_keys_per_put: 8,
            max_namespace_bytes: 4_096,
            ..Limits::default()
        };
        LssService::new(MemStore::default(), server_key(), limits)
    })
}

/// The spec's server key (0x22…).
pub fn server_key() -> ServerKey {
    ServerKey::new(SecretKey::from_slice(&[0x22; 32]).expect("valid"))
}

/// A valid client of [`harness`]: its auth and shared secret.
pub fn valid_client() -> (lss_proto::Auth, SharedSecret) {
    let secret = SecretKey::from_slice(&[0x11; 32]).expect("valid");
    let public = secret.public_key(&Secp256k1::signing_only());
    let shared = server_key().shared_secret(&ClientId::from(public));
    let auth = lss_proto::Auth {
        client_id: public.serialize().to_vec(),
        token: shared.token().0.to_vec(),
    };
    (auth, shared)
}

/// The correct client MAC of a request's kvs.
pub fn client_mac(shared: &SharedSecret, kvs: &[lss_proto::KeyValue]) -> Vec<u8> {
    let kvs: Vec<KeyValue> = kvs.iter().cloned().map(Into::into).collect();
    shared_hmac(shared, PUT_CLIENT_NONCE, &kvs)
        .as_bytes()
        .to_vec()
}

/// Runs a handler future to completion on a small runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
        })
        .block_on(future)
}
