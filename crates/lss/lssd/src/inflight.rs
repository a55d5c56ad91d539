//! Per-client admission: at most `max_inflight_per_client` requests of one
//! client are served at once, and at most `max_reply_bytes_per_client` bytes
//! of its replies (`max_reply_bytes` for everyone) are queued; more are
//! refused with `RESOURCE_EXHAUSTED`. Both are held until the client has read
//! the reply (see `conn::Hold`), so a reader that stalls keeps counting.
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

/// Bytes of replies queued, per client and in total.
#[derive(Clone)]
pub struct ReplyBudget {
    per_client: u64,
    total: u64,
    used: Arc<Mutex<Used>>,
}

#[derive(Default)]
struct Used {
    total: u64,
    per_client: HashMap<ClientId, u64>,
}

/// Reply bytes reserved for one reply; given back when dropped.
pub struct Reserved {
    client: ClientId,
    bytes: u64,
    per_client: u64,
    total: u64,
    used: Arc<Mutex<Used>>,
}

impl ReplyBudget {
    /// At most `per_client` bytes queued for one client, `total` for all.
    pub fn new(per_client: u64, total: u64) -> Self {
        ReplyBudget {
            per_client,
            total,
            used: Arc::default(),
        }
    }

    /// Reserves `bytes` for a reply to `client`, or names the limit.
    pub fn reserve(&self, client: ClientId, bytes: u64) -> Result<Reserved, LimitExceeded> {
        let mut reserved = Reserved {
            client,
            bytes: 0,
            per_client: self.per_client,
            total: self.total,
            used: self.used.clone(),
        };
        reserved.resize(bytes)?;
        Ok(reserved)
    }
}

impl Reserved {
    /// Changes the reservation to `bytes`: gives back what is no longer
    /// needed, or takes more if both limits allow (else keeps what it had).
    pub fn resize(&mut self, bytes: u64) -> Result<(), LimitExceeded> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mine = used.per_client.get(&self.client).copied().unwrap_or(0) - self.bytes;
        let others = used.total - self.bytes;
        if mine.saturating_add(bytes) > self.per_client {
            return Err(LimitExceeded {
                limit: Limit::ReplyBytesPerClient,
                max: self.per_client,
                got: mine.saturating_add(bytes),
            });
        }
        if others.saturating_add(bytes) > self.total {
            return Err(LimitExceeded {
                limit: Limit::ReplyBytes,
                max: self.total,
                got: others.saturating_add(bytes),
            });
        }
        used.total = others + bytes;
        if mine + bytes == 0 {
            used.per_client.remove(&self.client);
        } else {
            used.per_client.insert(self.client, mine + bytes);
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        // Shrinking never fails.
        let _ = self.resize(0);
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
    use lss_store::conformance::client;

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

    #[test]
    fn reply_bytes_are_bounded_per_client_and_in_total_until_given_back() {
        let budget = ReplyBudget::new(100, 150);
        let a = budget.reserve(client(1), 60).expect("within both");
        let err = budget
            .reserve(client(1), 41)
            .err()
            .expect("over the client's");
        assert_eq!(
            (err.limit, err.max, err.got),
            (Limit::ReplyBytesPerClient, 100, 101)
        );
        let _b = budget.reserve(client(2), 90).expect("another client");
        let err = budget.reserve(client(3), 1).err().expect("over the total");
        assert_eq!((err.limit, err.max, err.got), (Limit::ReplyBytes, 150, 151));
        drop(a);
        let mut c = budget.reserve(client(1), 60).expect("given back");
        let err = budget.reserve(client(4), 101).err().expect("never fits");
        assert_eq!(err.limit, Limit::ReplyBytesPerClient);
        // An upper bound reserved first, then the actual size.
        c.resize(10).expect("shrinks");
        let d = budget.reserve(client(3), 50).expect("room given back");
        assert_eq!(
            c.resize(70).err().map(|e| e.limit),
            Some(Limit::ReplyBytes),
            "growing needs room"
        );
        drop(d);
        c.resize(50).expect("grows within both");
        drop((c, _b));
        assert!(budget.used.lock().expect("lock").per_client.is_empty());
        assert_eq!(budget.used.lock().expect("lock").total, 0);
    }
}
