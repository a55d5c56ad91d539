//! The one place where errors become gRPC statuses (lss-protocol.md §4).
//!
//! Matches are exhaustive on purpose: a new error variant does not compile
//! until someone decides what clients see for it.

use http::{HeaderValue, Response};
use lss_core::{AuthError, Limit, LimitExceeded, PutRejected};
use lss_store::StoreError;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tonic::{Code, Status};

/// `INVALID_ARGUMENT "missing auth"`, as the reference.
pub fn missing_auth() -> Status {
    Status::invalid_argument("missing auth")
}

/// `INVALID_ARGUMENT "invalid client HMAC"`, as the reference.
pub fn bad_client_mac() -> Status {
    Status::invalid_argument("invalid client HMAC")
}

/// An unparseable client id is `UNAUTHENTICATED`; a wrong token keeps the
/// reference's `INVALID_ARGUMENT`.
pub fn auth(e: AuthError) -> Status {
    match e {
        AuthError::InvalidClientId => Status::unauthenticated(e.to_string()),
        AuthError::InvalidToken => Status::invalid_argument(e.to_string()),
    }
}

/// A client the access policy refuses is `PERMISSION_DENIED`; a
/// registration that could not be written is `UNAVAILABLE` (retryable).
pub fn access(e: crate::access::AccessError) -> Status {
    use crate::access::AccessError;
    match e {
        AccessError::NotAllowed | AccessError::BadToken | AccessError::TokenUsed => {
            Status::permission_denied(e.to_string())
        }
        AccessError::Io(_) => {
            tracing::error!(error = %e, "registration not recorded");
            Status::unavailable("cannot record the registration now")
        }
    }
}

/// A new client's put while free disk space is below the reserve.
pub fn disk_reserve(below: crate::disk::Below) -> Status {
    crate::metrics::limit_reached("min_free_disk_bytes");
    Status::resource_exhausted(format!(
        "min_free_disk_bytes: {} bytes free, below the reserve of {}: new clients are refused until space is freed",
        below.free, below.reserve
    ))
}

/// A put of a key under the verifiable log's reserved prefix.
pub fn reserved_key() -> Status {
    Status::invalid_argument(format!(
        "keys starting with {:?} are reserved for the server's verifiable log",
        lss_verify::ledger::RESERVED_PREFIX
    ))
}

/// A put refused before reaching the store.
pub fn rejected(e: PutRejected) -> Status {
    match e {
        PutRejected::UnsortedKeys | PutRejected::DuplicateKey => {
            Status::invalid_argument(e.to_string())
        }
        PutRejected::Limit(limit) => limit_exceeded(&limit),
    }
}

/// Limits on the shape of one request are `INVALID_ARGUMENT` (the request can
/// never succeed as sent); limits on accumulated resources are
/// `RESOURCE_EXHAUSTED`. The message names the configuration option.
pub fn limit_exceeded(e: &LimitExceeded) -> Status {
    crate::metrics::limit_reached(e.limit.name());
    match e.limit {
        Limit::KeyBytes | Limit::ValueBytes | Limit::KeysPerPut => {
            Status::invalid_argument(e.to_string())
        }
        Limit::RequestBytes
        | Limit::NamespaceBytes
        | Limit::InflightPerClient
        | Limit::ReplyBytesPerClient
        | Limit::ReplyBytes => Status::resource_exhausted(e.to_string()),
    }
}

/// Store failures. The server keeps running; clients may retry `UNAVAILABLE`.
pub fn store(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) => {
            crate::metrics::store_error("unavailable");
            tracing::warn!(error = %e, "store unavailable");
            Status::unavailable("storage temporarily unavailable")
        }
        StoreError::Corrupt(_) => {
            crate::metrics::store_error("corrupt");
            tracing::error!(error = %e, "stored data is corrupt");
            Status::data_loss("stored data is corrupt")
        }
        StoreError::Limit(limit) => limit_exceeded(&limit),
    }
}

/// tonic refuses an oversized request while decoding, before any handler
/// runs, with `OUT_OF_RANGE` and a message that does not name our setting.
/// This layer rewrites exactly that response to `RESOURCE_EXHAUSTED`
/// "max_request_bytes exceeded: ..." so operators and clients can tell which
/// limit to raise.
pub type RequestLimitLayer =
    tower::util::MapResponseLayer<fn(Response<tonic::body::Body>) -> Response<tonic::body::Body>>;

/// Builds the [`RequestLimitLayer`]. The limit itself is the service's decode
/// limit, whose value tonic reports in the message kept here.
pub fn request_limit_layer() -> RequestLimitLayer {
    tower::util::MapResponseLayer::new(rewrite_decode_limit as fn(_) -> _)
}

const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: ";
/// gRPC percent-encodes `%` and bytes outside printable ASCII.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

fn rewrite_decode_limit(mut response: Response<tonic::body::Body>) -> Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == (Code::OutOfRange as i32).to_string().as_bytes());
    if !is_out_of_range {
        return response;
    }
    let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return response;
    };
    let message = percent_decode_str(message).decode_utf8_lossy();
    let Some(detail) = message.strip_prefix(TONIC_TOO_LARGE) else {
        return response;
    };
    crate::metrics::limit_reached(Limit::RequestBytes.name());
    let rewritten = format!("{} exceeded: {detail}", Limit::RequestBytes);
    let encoded = utf8_percent_encode(&rewritten, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert(
            "grpc-status",
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
        headers.insert("grpc-message", value);
    }
    response
}
