//! What the stores record through the `metrics` facade (a no-op unless the
//! daemon serves metrics): commit batch sizes and commit (fsync) time of
//! the embedded store's group commit, and retries of the remote backends.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram};

/// Puts per committed write transaction, by engine.
pub const COMMIT_BATCH: &str = "lss_store_commit_batch_size";
/// Time of one durable commit (the fsync included), by engine.
pub const COMMIT_SECONDS: &str = "lss_store_commit_duration_seconds";
/// Attempts of a remote operation that failed and were retried, by engine
/// and operation.
pub const RETRIES: &str = "lss_store_retries_total";

/// Describes the store's metrics.
pub fn describe() {
    describe_histogram!(COMMIT_BATCH, "Puts per committed write transaction");
    describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time of one durable commit, fsync included"
    );
    describe_counter!(
        RETRIES,
        "Failed attempts of a store operation that were retried"
    );
}

/// One commit of `puts` puts that took `took`.
pub fn committed(engine: &'static str, puts: usize, took: Duration) {
    histogram!(COMMIT_BATCH, "engine" => engine).record(puts as f64);
    histogram!(COMMIT_SECONDS, "engine" => engine).record(took.as_secs_f64());
}

/// One retried attempt.
pub fn retried(engine: &'static str, what: &'static str) {
    counter!(RETRIES, "engine" => engine, "operation" => what).increment(1);
}
