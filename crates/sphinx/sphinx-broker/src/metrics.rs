//! What the broker tells Prometheus (`--metrics-listen`, through the shared
//! `metrics-endpoint` crate) and its dashboard: signers by state, requests
//! by type and outcome with their latency, LSS relay retries, MAC failures
//! signers report, and MQTT logins refused by the signer policy.
//!
//! Everything is recorded by the drivers (the scheduler, the relay, the
//! MQTT policy), never by the sans-IO core. [`Stats`] keeps the few figures
//! the dashboard shows in memory, so the dashboard works with metrics off.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Signers connected, by state (`ready`, `lss-state`, ...).
pub const SIGNERS: &str = "sphinx_broker_signers";
/// Requests answered, by type (`init`, `control`, or CLN's message type
/// number) and outcome (`ok`, `signer`, `lss`, `deadline`, `invalid`,
/// `stopped`).
pub const REQUESTS: &str = "sphinx_broker_requests_total";
/// Time from a request's arrival to its reply, by type.
pub const REQUEST_SECONDS: &str = "sphinx_broker_request_duration_seconds";
/// Failed LSS calls retried, by call (`info`, `get`, `put`).
pub const LSS_RETRIES: &str = "sphinx_broker_lss_retries_total";
/// Errors signers reported, by kind (`mac`: an LSS MAC did not verify; `other`).
pub const SIGNER_ERRORS: &str = "sphinx_broker_signer_errors_total";
/// MQTT logins the signer policy refused, by reason (`credentials`, `policy`).
pub const LOGINS_REFUSED: &str = "sphinx_broker_mqtt_logins_refused_total";

/// The states a signer can be in, as [`SIGNERS`] labels them.
pub const STATES: &[&str] = &[
    "lss-credentials",
    "lss-state",
    "lss-storing",
    "waiting-for-hsmd-init",
    "initialising",
    "ready",
];

/// Describes every metric.
pub fn describe() {
    describe_gauge!(SIGNERS, "Signers connected, by state");
    describe_counter!(REQUESTS, "Requests answered, by type and outcome");
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Time from a request's arrival to its reply"
    );
    describe_counter!(LSS_RETRIES, "Failed LSS calls that were retried");
    describe_counter!(SIGNER_ERRORS, "Errors signers reported, by kind");
    describe_counter!(LOGINS_REFUSED, "MQTT logins refused by the signer policy");
}

/// The signers' states now (every state, zero included).
pub fn signers<'a>(states: impl Iterator<Item = &'a str>) {
    let mut counts = [0u32; STATES.len()];
    for state in states {
        if let Some(i) = STATES.iter().position(|s| *s == state) {
            counts[i] += 1;
        }
    }
    for (state, n) in STATES.iter().zip(counts) {
        gauge!(SIGNERS, "state" => *state).set(f64::from(n));
    }
}

/// One LSS call retried.
pub fn lss_retry(call: &'static str) {
    counter!(LSS_RETRIES, "call" => call).increment(1);
}

/// A signer reported `text`.
pub fn signer_error(text: &str) {
    let kind = if text.contains(sphinx_wire::lss::MAC_MISMATCH) {
        "mac"
    } else {
        "other"
    };
    counter!(SIGNER_ERRORS, "kind" => kind).increment(1);
}

/// A login refused; `credentials` when they were wrong, else by policy.
pub fn login_refused(bad_credentials: bool) {
    let reason = if bad_credentials {
        "credentials"
    } else {
        "policy"
    };
    counter!(LOGINS_REFUSED, "reason" => reason).increment(1);
}

/// The outcomes, as labelled.
pub const OUTCOMES: &[&str] = &["ok", "signer", "lss", "deadline", "invalid", "stopped"];

/// How many recent latencies the dashboard's percentiles are taken over.
const RECENT: usize = 512;

/// The dashboard's figures: requests by outcome since start and the
/// latencies of the last [`RECENT`] requests. Cheap to share.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<StatsInner>>);

#[derive(Default)]
struct StatsInner {
    by_outcome: [u64; OUTCOMES.len()],
    recent: VecDeque<Duration>,
}

/// A copy of [`Stats`] for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsView {
    /// Requests answered since start, by outcome.
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    /// Requests answered since start.
    pub total: u64,
    /// Median latency of the recent requests, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub p99_ms: Option<f64>,
    /// How many recent requests those are taken over.
    pub recent: usize,
}

impl Stats {
    /// A request of `kind` answered with `outcome` after `took`.
    pub fn answered(&self, kind: String, outcome: &'static str, took: Duration) {
        counter!(REQUESTS, "type" => kind.clone(), "outcome" => outcome).increment(1);
        histogram!(REQUEST_SECONDS, "type" => kind).record(took.as_secs_f64());
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            inner.by_outcome[i] += 1;
        }
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(took);
    }

    /// The figures now.
    pub fn view(&self) -> StatsView {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<Duration> = inner.recent.iter().copied().collect();
        sorted.sort_unstable();
        let quantile = |q: f64| {
            let last = sorted.len().checked_sub(1)?;
            let i = ((last as f64) * q).round() as usize;
            Some(sorted[i.min(last)].as_secs_f64() * 1e3)
        };
        StatsView {
            requests: OUTCOMES.iter().copied().zip(inner.by_outcome).collect(),
            total: inner.by_outcome.iter().sum(),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            recent: sorted.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_outcomes_and_take_percentiles_of_recent_requests() {
        let stats = Stats::default();
        assert_eq!(stats.view().p50_ms, None);
        for ms in 1..=100 {
            stats.answered("5".into(), "ok", Duration::from_millis(ms));
        }
        stats.answered("control".into(), "deadline", Duration::from_millis(1000));
        let view = stats.view();
        assert_eq!(view.total, 101);
        assert_eq!(view.requests["ok"], 100);
        assert_eq!(view.requests["deadline"], 1);
        assert_eq!(view.p50_ms, Some(51.0));
        assert_eq!(view.p99_ms, Some(100.0));
        for _ in 0..RECENT {
            stats.answered("5".into(), "ok", Duration::from_millis(2));
        }
        assert_eq!(stats.view().p99_ms, Some(2.0), "only recent requests count");
    }
}
