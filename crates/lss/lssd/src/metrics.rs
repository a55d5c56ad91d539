//! What lssd tells Prometheus (`--metrics-listen`, served by the shared
//! `metrics-endpoint` crate). Every name is declared and described here, so
//! the list below is the reference; the store's own metrics (commit batch
//! sizes, commit time, retries) are recorded in `lss-store` and listed in
//! docs/operations.md with these.
//!
//! Counts are recorded where the event is decided (the status mapping, the
//! admission of connections, the reply watcher), not per handler, so a
//! request refused by a layer before any handler runs is counted too.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Requests answered, by gRPC method and status code.
pub const REQUESTS: &str = "lssd_requests_total";
/// Time from a request's arrival until its reply (headers and trailers)
/// was handed to the connection, by method.
pub const REQUEST_SECONDS: &str = "lssd_request_duration_seconds";
/// Requests being served or whose reply is not read yet.
pub const IN_FLIGHT: &str = "lssd_requests_in_flight";
/// Requests refused because a limit was reached, by setting name.
pub const LIMIT_REJECTIONS: &str = "lssd_limit_rejections_total";
/// Connections closed on accept, by reason (`max_connections`,
/// `max_connections_per_address`).
pub const CONNECTIONS_REFUSED: &str = "lssd_connections_refused_total";
/// Open client connections.
pub const CONNECTIONS: &str = "lssd_connections";
/// Store failures seen by requests, by kind (`unavailable`, `corrupt`, ...).
pub const STORE_ERRORS: &str = "lssd_store_errors_total";
/// Namespaces (clients with data), sampled.
pub const NAMESPACES: &str = "lssd_namespaces";
/// Bytes of keys and values stored in all namespaces, sampled.
pub const STORED_BYTES: &str = "lssd_stored_bytes";

/// Checkpoints signed with one signature (the verifiable log's batches).
pub const SIGNATURE_BATCH: &str = "lssd_checkpoint_signature_batch_size";

/// How often namespaces and stored bytes are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Describes every metric (the `# HELP` lines).
pub fn describe() {
    describe_counter!(
        REQUESTS,
        "Requests answered, by gRPC method and status code"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Time from a request's arrival until its reply was handed to the connection"
    );
    describe_gauge!(
        IN_FLIGHT,
        "Requests being served or with a reply not yet read"
    );
    describe_counter!(
        LIMIT_REJECTIONS,
        "Requests refused because a limit was reached, by setting"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed on accept because a connection limit was reached"
    );
    describe_gauge!(CONNECTIONS, "Open client connections");
    describe_counter!(STORE_ERRORS, "Store failures seen by requests, by kind");
    describe_gauge!(NAMESPACES, "Namespaces holding data (sampled)");
    describe_gauge!(
        STORED_BYTES,
        metrics::Unit::Bytes,
        "Bytes of keys and values stored (sampled)"
    );
    describe_histogram!(
        SIGNATURE_BATCH,
        "Checkpoints (receipts and read answers) signed with one BIP340 signature"
    );
    lss_store::metrics::describe();
}

/// The method part of a gRPC path (`/lss.LightningStorage/Put` → `Put`),
/// or `other` for paths that are not one of ours (bounded label values).
pub fn method_of(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Ping",
        "Info",
        "Put",
        "Get",
        "GetStream",
        "Check",
        "Watch",
        "ServerReflectionInfo",
    ];
    let method = path.rsplit('/').next().unwrap_or_default();
    KNOWN
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}

/// A request answered with `code` after `took`.
pub fn answered(method: &'static str, code: tonic::Code, took: Duration) {
    counter!(REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
    histogram!(REQUEST_SECONDS, "method" => method).record(took.as_secs_f64());
}

/// One more (or one fewer) request open.
pub fn in_flight(delta: f64) {
    gauge!(IN_FLIGHT).increment(delta);
}

/// A request refused at `setting`.
pub fn limit_reached(setting: &'static str) {
    counter!(LIMIT_REJECTIONS, "limit" => setting).increment(1);
}

/// A connection refused at `setting`.
pub fn connection_refused(setting: &'static str) {
    counter!(CONNECTIONS_REFUSED, "limit" => setting).increment(1);
}

/// Connections open now.
pub fn connections(open: usize) {
    gauge!(CONNECTIONS).set(open as f64);
}

/// A store failure of `kind`.
pub fn store_error(kind: &'static str) {
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// One signature made for `checkpoints` checkpoints.
pub fn signature_batch(checkpoints: usize) {
    histogram!(SIGNATURE_BATCH).record(checkpoints as f64);
}

/// Samples namespaces and stored bytes every [`SAMPLE_EVERY`], forever.
pub async fn keep_sampling<S: lss_store::Store>(store: std::sync::Arc<S>) {
    loop {
        match store.totals().await {
            Ok(totals) => {
                gauge!(NAMESPACES).set(totals.namespaces as f64);
                gauge!(STORED_BYTES).set(totals.bytes as f64);
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample the store's totals"),
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// gRPC's names of the codes, as grpcurl and Prometheus users know them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_bounded_labels() {
        assert_eq!(method_of("/lss.LightningStorage/Put"), "Put");
        assert_eq!(method_of("/lightkeeper.Storage/GetStream"), "GetStream");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_of("/x/../../etc/passwd"), "other");
        assert_eq!(method_of(""), "other");
    }
}
