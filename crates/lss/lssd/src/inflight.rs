//! Per-client admission: at most `max_inflight_per_client` requests of one
//! client are served at once; more are refused with `RESOURCE_EXHAUSTED`.
//!
//! Why refuse instead of queue: a well-behaved signer waits for each put, so
//! only a misbehaving or hostile client ever reaches the limit, and queueing
//! its excess would still hold server memory and connection streams for it.
//! Together with the store's FIFO commit queue this bounds how far one client
//! can delay everyone else: its share of any commit batch is at most the limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lss_core::{ClientId, Limit, LimitExceeded};

/// Counts requests in flight per client.
#[derive(Clone)]
pub struct Inflight {
    limit: usize,
    counts: Arc<Mutex<HashMap<ClientId, usize>>>,
}

/// Held while a request is served; releases its slot when dropped.
pub struct Slot {
    client: ClientId,
    counts: Arc<Mutex<HashMap<ClientId, usize>>>,
}

impl Inflight {
    /// Admits at most `limit` requests per client at once.
    pub fn new(limit: usize) -> Self {
        Inflight {
            limit: limit.max(1),
            counts: Arc::default(),
        }
    }

    /// A slot for one request of `client`, or the limit it would exceed.
    pub fn enter(&self, client: ClientId) -> Result<Slot, LimitExceeded> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(client).or_insert(0);
        if *count >= self.limit {
            return Err(LimitExceeded {
                limit: Limit::InflightPerClient,
                max: self.limit as u64,
                got: *count as u64 + 1,
            });
        }
        *count += 1;
        Ok(Slot {
            client,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lss_core::secp256k1::{Secp256k1, SecretKey};

    fn client(n: u8) -> ClientId {
        let secret = SecretKey::from_slice(&[n; 32]).expect("key");
        ClientId::from(secret.public_key(&Secp256k1::signing_only()))
    }

    #[test]
    fn limits_each_client_separately_and_frees_slots() {
        let inflight = Inflight::new(2);
        let a1 = inflight.enter(client(1)).expect("first");
        let _a2 = inflight.enter(client(1)).expect("second");
        let err = inflight.enter(client(1)).err().expect("third refused");
        assert_eq!(err.limit, Limit::InflightPerClient);
        assert_eq!((err.max, err.got), (2, 3));
        let _b = inflight
            .enter(client(2))
            .expect("another client is unaffected");
        drop(a1);
        let _a3 = inflight.enter(client(1)).expect("a freed slot is reusable");
        drop(_a3);
        drop(_a2);
        drop(_b);
        assert!(
            inflight.counts.lock().expect("lock").is_empty(),
            "no leftover entries"
        );
    }
}
