//! The rate limits of keyserver.md §4.6, checked before any signature
//! work: token buckets per client address (an IPv6 client counts by its
//! /64) for each class of method, and per SigKeyHash over all callers for
//! the calls that drain or wipe someone's KeyInits. Every map is bounded
//! (`rate-limit`'s `Keyed`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ks_core::error::RpcError;
use rate_limit::{Keyed, Rate};

/// Client addresses (or /64s) remembered per class.
const MAX_CLIENTS: usize = 100_000;
/// SigKeyHashes remembered per class.
const MAX_KEYS: usize = 100_000;

/// How the limits are set.
#[derive(Clone, Copy, Debug)]
pub struct LimitsConfig {
    /// Off for private deployments and benchmarks.
    pub enabled: bool,
    /// CreateUID per client address and hour while tokens are disabled
    /// (admission then rests on this limit).
    pub registrations_per_hour: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            registrations_per_hour: 10,
        }
    }
}

/// The limits of one server.
pub struct Limits {
    enabled: bool,
    chain: Keyed<IpAddr>,
    uid: Keyed<IpAddr>,
    head: Keyed<IpAddr>,
    fetch_keyinit: Keyed<IpAddr>,
    writes: Keyed<IpAddr>,
    lookups: Keyed<IpAddr>,
    registrations: Keyed<IpAddr>,
    per_key_fetch: Keyed<String>,
    per_key_flush: Keyed<String>,
}

fn limited(wait: Duration) -> RpcError {
    RpcError::RateLimited {
        retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

impl Limits {
    /// The §4.6 limits.
    pub fn new(config: LimitsConfig) -> Limits {
        let per_ip = |rate| Keyed::new(rate, MAX_CLIENTS);
        Limits {
            enabled: config.enabled,
            chain: per_ip(Rate::per_second(20.0, 100.0)),
            uid: per_ip(Rate::per_second(50.0, 100.0)),
            head: per_ip(Rate::per_second(10.0, 20.0)),
            fetch_keyinit: per_ip(Rate::per_second(1.0, 10.0)),
            writes: per_ip(Rate::per_second(10.0, 20.0)),
            lookups: per_ip(Rate::per_minute(10.0)),
            registrations: per_ip(Rate::per_hour(f64::from(
                config.registrations_per_hour.max(1),
            ))),
            per_key_fetch: Keyed::new(Rate::per_minute(30.0), MAX_KEYS),
            per_key_flush: Keyed::new(Rate::per_minute(6.0), MAX_KEYS),
        }
    }

    /// The per-address limit of `method`; `free_create` when tokens are
    /// disabled (CreateUID then also counts against the hourly limit).
    pub fn check(
        &self,
        method: &str,
        client: Option<IpAddr>,
        free_create: bool,
        now: Instant,
    ) -> Result<(), RpcError> {
        let Some(ip) = client.filter(|_| self.enabled) else {
            return Ok(());
        };
        let ip = rate_limit::source_key(ip);
        let bucket = match method {
            "KeyRepository.FetchHashChain" | "KeyHashchain.FetchHashChain" => &self.chain,
            "KeyRepository.FetchUID" => &self.uid,
            "KeyRepository.Capabilities"
            | "KeyRepository.FetchLastHashChain"
            | "KeyHashchain.FetchLastHashChain" => &self.head,
            "KeyInitRepository.FetchKeyInit" => &self.fetch_keyinit,
            "KeyRepository.CreateUID"
            | "KeyRepository.UpdateUID"
            | "KeyInitRepository.AddKeyInit"
            | "KeyInitRepository.FlushKeyInit" => &self.writes,
            "KeyRepository.LookupUID" | "KeyHashchain.LookupUID" => &self.lookups,
            _ => return Ok(()),
        };
        bucket.take(&ip, now).map_err(limited)?;
        if free_create && method == "KeyRepository.CreateUID" {
            self.registrations.take(&ip, now).map_err(limited)?;
        }
        Ok(())
    }

    /// FetchKeyInit of one SigKeyHash, over all callers (30/min).
    pub fn check_fetch_of(&self, sig_key_hash: &str, now: Instant) -> Result<(), RpcError> {
        if !self.enabled {
            return Ok(());
        }
        self.per_key_fetch
            .take(&sig_key_hash.to_string(), now)
            .map_err(limited)
    }

    /// FlushKeyInit of one SigKeyHash, over all callers (6/min).
    pub fn check_flush_of(&self, sig_key_hash: &str, now: Instant) -> Result<(), RpcError> {
        if !self.enabled {
            return Ok(());
        }
        self.per_key_flush
            .take(&sig_key_hash.to_string(), now)
            .map_err(limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        let limits = Limits::new(LimitsConfig::default());
        let t0 = Instant::now();
        for _ in 0..10 {
            limits
                .check("KeyInitRepository.FetchKeyInit", Some(a), false, t0)
                .expect("burst of 10");
        }
        let e = limits
            .check("KeyInitRepository.FetchKeyInit", Some(b), false, t0)
            .expect_err("same /64");
        assert_eq!(e, RpcError::RateLimited { retry_after_s: 1 });
        limits
            .check("KeyInitRepository.FetchKeyInit", Some(c), false, t0)
            .expect("another /64");
    }

    #[test]
    fn free_registrations_are_ten_an_hour_and_drain_limits_apply_per_key() {
        let limits = Limits::new(LimitsConfig::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..10 {
            // Spread over time so the per-second write bucket is not the limit.
            limits
                .check(
                    "KeyRepository.CreateUID",
                    Some(ip),
                    true,
                    t0 + Duration::from_secs(i),
                )
                .expect("ten");
        }
        let e = limits
            .check(
                "KeyRepository.CreateUID",
                Some(ip),
                true,
                t0 + Duration::from_secs(10),
            )
            .expect_err("eleventh");
        assert!(matches!(e, RpcError::RateLimited { retry_after_s } if retry_after_s > 300));
        // With tokens required, only the per-second write limit applies.
        limits
            .check(
                "KeyRepository.CreateUID",
                Some(ip),
                false,
                t0 + Duration::from_secs(20),
            )
            .expect("paid");
        for _ in 0..30 {
            limits.check_fetch_of("K", t0).expect("30 a minute");
        }
        assert!(limits.check_fetch_of("K", t0).is_err());
        limits.check_fetch_of("L", t0).expect("another key");
        let off = Limits::new(LimitsConfig {
            enabled: false,
            registrations_per_hour: 1,
        });
        for _ in 0..100 {
            off.check("KeyRepository.CreateUID", Some(ip), true, t0)
                .expect("off");
            off.check_fetch_of("K", t0).expect("off");
        }
    }

    #[test]
    fn lookups_are_ten_a_minute_per_address_under_both_names() {
        let limits = Limits::new(LimitsConfig::default());
        let ip: IpAddr = "192.0.2.9".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..10 {
            let name = if i % 2 == 0 {
                "KeyRepository.LookupUID"
            } else {
                "KeyHashchain.LookupUID"
            };
            limits.check(name, Some(ip), false, t0).expect("ten");
        }
        let e = limits
            .check("KeyRepository.LookupUID", Some(ip), false, t0)
            .expect_err("the eleventh in a minute");
        assert!(matches!(e, RpcError::RateLimited { retry_after_s } if retry_after_s >= 5));
        limits
            .check(
                "KeyRepository.LookupUID",
                Some(ip),
                false,
                t0 + Duration::from_secs(7),
            )
            .expect("one more after six seconds");
    }
}
