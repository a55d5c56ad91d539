//! Token buckets: [`Bucket`] for one connection, [`Keyed`] for one bucket
//! per key (client address, account) in a map whose size is bounded, so a
//! flood of new keys cannot grow memory without limit. Time is passed in
//! (`Instant`), so the rules are tested with a virtual clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client's source address as per-address limits count it: IPv4 as is
/// (IPv4-mapped IPv6 too), IPv6 by its /64, the block one host usually
/// holds, so one host cannot escape a per-address limit by rotating through
/// its own addresses.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// A rate: `per_sec` tokens per second, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second (may be fractional: 10/h is 10.0 / 3600.0).
    pub per_sec: f64,
    /// The bucket's size.
    pub burst: f64,
}

impl Rate {
    /// `n` per second with bursts of `burst`.
    pub fn per_second(n: f64, burst: f64) -> Rate {
        Rate { per_sec: n, burst }
    }

    /// `n` per minute with bursts of `n`.
    pub fn per_minute(n: f64) -> Rate {
        Rate {
            per_sec: n / 60.0,
            burst: n,
        }
    }

    /// `n` per hour with bursts of `n`.
    pub fn per_hour(n: f64) -> Rate {
        Rate {
            per_sec: n / 3600.0,
            burst: n,
        }
    }
}

/// One token bucket, full when made.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` at `now`.
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes `cost` tokens, or says how long until they are there.
    pub fn take(&mut self, cost: f64, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            let per_sec = rate.per_sec.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(
                ((cost - self.tokens) / per_sec).min(1e9),
            ))
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.at = now;
    }

    /// Whether it would be full at `now` (it can be forgotten).
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_sec >= rate.burst
    }
}

/// One bucket per key, at most `max_keys` remembered: beyond that, full
/// buckets are forgotten (a forgotten key starts full again, which is what
/// a full bucket is), and if none is full the newcomer is refused.
pub struct Keyed<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    /// Buckets of `rate`, at most `max_keys` of them.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Keyed {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let rate = self.rate;
            buckets.retain(|_, b| !b.is_full(rate, now));
            if buckets.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let rate = self.rate;
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(rate, now))
            .take(1.0, rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_count_ipv6_by_its_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| source_key(s.parse().expect("ip"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let limit = Keyed::new(Rate::per_second(2.0, 4.0), 10);
        for _ in 0..4 {
            limit.take(&"a", t0).expect("burst");
        }
        let wait = limit.take(&"a", t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        // Another key is independent.
        limit.take(&"b", t0).expect("other key");
        limit
            .take(&"a", t0 + Duration::from_millis(500))
            .expect("refilled one");
        assert!(limit.take(&"a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn hourly_rates_and_a_bounded_map() {
        let t0 = Instant::now();
        let limit = Keyed::new(Rate::per_hour(10.0), 2);
        for _ in 0..10 {
            limit.take(&1, t0).expect("ten an hour");
        }
        let wait = limit.take(&1, t0).expect_err("eleventh");
        assert_eq!(wait.as_secs(), 360);
        limit.take(&2, t0).expect("second key");
        // Two keys in use, none full: a third is refused rather than
        // growing the map or evicting a limited key.
        assert!(limit.take(&3, t0).is_err());
        // Once key 2 is full again it is forgotten to make room.
        let later = t0 + Duration::from_secs(400);
        limit.take(&3, later).expect("room made");
        // Key 1 was kept (not reset to a full bucket): one token refilled.
        limit.take(&1, later).expect("one refilled token");
        assert!(limit.take(&1, later).is_err(), "key 1 is still limited");
    }
}
