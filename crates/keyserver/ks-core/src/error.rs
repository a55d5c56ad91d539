//! The JSON-RPC errors of keyserver.md §2.1. Every refusal the rules make
//! is one of these; [`RpcError::code`] and [`RpcError::reason`] are the one
//! exhaustive mapping to the wire, so server and client cannot drift.

/// A refusal, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The body is not JSON.
    #[error("parse error")]
    Parse,
    /// Not a JSON-RPC 2.0 request (or a batch, not in v1).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Unknown or disabled method.
    #[error("method not found")]
    MethodNotFound,
    /// Schema, type, charset, base64, size or v1-profile violation.
    #[error("invalid params: {field}: {problem}")]
    InvalidParams {
        /// The member at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A bug; never bad input.
    #[error("internal error")]
    Internal,
    /// A paid call without a token.
    #[error("payment required")]
    PaymentRequired,
    /// A token that does not verify or is not for this deployment.
    #[error("token {index} invalid: {problem}")]
    TokenInvalid {
        /// Which of the call's tokens (`data.index`).
        index: u64,
        /// What is wrong.
        problem: String,
    },
    /// A token already redeemed.
    #[error("token {index} already spent")]
    TokenSpent {
        /// Which of the call's tokens (`data.index`): the wallet drops that
        /// one and keeps the rest.
        index: u64,
    },
    /// Create for an identity that is live or quarantined.
    #[error("identity taken")]
    IdentityTaken,
    /// Update, AddKeyInit or Flush for an identity or key not known.
    #[error("identity unknown")]
    IdentityUnknown,
    /// Domain not served, reserved localpart, refused address.
    #[error("refused by policy: {0}")]
    Policy(String),
    /// A signature that does not verify.
    #[error("bad signature: {field}")]
    BadSignature {
        /// Which signature.
        field: String,
    },
    /// MSGCOUNT is not the next one.
    #[error("bad MSGCOUNT; expected {expected}")]
    BadMsgcount {
        /// The MSGCOUNT the server expects.
        expected: u64,
    },
    /// LASTENTRY unknown or older than the freshness window.
    #[error("LASTENTRY is unknown or too old")]
    StaleLastentry {
        /// The chain size now.
        size: u64,
    },
    /// NOTBEFORE/NOTAFTER out of the allowed window, or quarantine.
    #[error("time window: {0}")]
    TimeWindow(String),
    /// Both or neither of USER/ESCROW signature, or an escrow change
    /// without ESCROWSIGNATURE.
    #[error("update rule: {0}")]
    UpdateRule(String),
    /// No KeyInit is eligible.
    #[error("no KeyInit available")]
    NoKeyinit,
    /// More KeyInits than MAXKEYINITS or MAXKEYINITSPERCALL.
    #[error("KeyInit limit reached")]
    KeyinitLimit,
    /// A Flush nonce already used.
    #[error("replayed request")]
    Replay,
    /// A position or KnownSize beyond the published size.
    #[error("position out of range")]
    OutOfRange {
        /// The published size.
        size: u64,
    },
    /// No UID under that UIDIndex.
    #[error("not found")]
    NotFound,
    /// Over a rate limit.
    #[error("rate limited")]
    RateLimited {
        /// When to try again.
        retry_after_s: u64,
    },
    /// Storage failing; retry.
    #[error("temporarily unavailable")]
    Unavailable,
    /// A write sent to a mirror.
    #[error("read-only mirror")]
    ReadOnly {
        /// The primary's JSON-RPC URL.
        primary: String,
    },
}

impl RpcError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            RpcError::Parse => -32700,
            RpcError::InvalidRequest(_) => -32600,
            RpcError::MethodNotFound => -32601,
            RpcError::InvalidParams { .. } => -32602,
            RpcError::Internal => -32603,
            RpcError::PaymentRequired => -32001,
            RpcError::TokenInvalid { .. } => -32002,
            RpcError::TokenSpent { .. } => -32003,
            RpcError::IdentityTaken => -32010,
            RpcError::IdentityUnknown => -32011,
            RpcError::Policy(_) => -32012,
            RpcError::BadSignature { .. } => -32013,
            RpcError::BadMsgcount { .. } => -32014,
            RpcError::StaleLastentry { .. } => -32015,
            RpcError::TimeWindow(_) => -32016,
            RpcError::UpdateRule(_) => -32017,
            RpcError::NoKeyinit => -32020,
            RpcError::KeyinitLimit => -32021,
            RpcError::Replay => -32022,
            RpcError::OutOfRange { .. } => -32030,
            RpcError::NotFound => -32031,
            RpcError::RateLimited { .. } => -32040,
            RpcError::Unavailable => -32050,
            RpcError::ReadOnly { .. } => -32060,
        }
    }

    /// The `data.reason` string clients match on.
    pub fn reason(&self) -> &'static str {
        match self {
            RpcError::Parse => "parse_error",
            RpcError::InvalidRequest(_) => "invalid_request",
            RpcError::MethodNotFound => "method_not_found",
            RpcError::InvalidParams { .. } => "invalid_params",
            RpcError::Internal => "internal",
            RpcError::PaymentRequired => "payment_required",
            RpcError::TokenInvalid { .. } => "token_invalid",
            RpcError::TokenSpent { .. } => "token_spent",
            RpcError::IdentityTaken => "identity_taken",
            RpcError::IdentityUnknown => "identity_unknown",
            RpcError::Policy(_) => "policy",
            RpcError::BadSignature { .. } => "bad_signature",
            RpcError::BadMsgcount { .. } => "bad_msgcount",
            RpcError::StaleLastentry { .. } => "stale_lastentry",
            RpcError::TimeWindow(_) => "time_window",
            RpcError::UpdateRule(_) => "update_rule",
            RpcError::NoKeyinit => "no_keyinit",
            RpcError::KeyinitLimit => "keyinit_limit",
            RpcError::Replay => "replay",
            RpcError::OutOfRange { .. } => "out_of_range",
            RpcError::NotFound => "not_found",
            RpcError::RateLimited { .. } => "rate_limited",
            RpcError::Unavailable => "unavailable",
            RpcError::ReadOnly { .. } => "read_only",
        }
    }

    /// Extra `data` members beside `reason`, as (name, value) pairs.
    pub fn data(&self) -> Vec<(&'static str, DataValue)> {
        match self {
            RpcError::InvalidParams { field, .. } | RpcError::BadSignature { field } => {
                vec![("field", DataValue::Str(field.clone()))]
            }
            RpcError::BadMsgcount { expected } => vec![("expected", DataValue::Int(*expected))],
            RpcError::StaleLastentry { size } | RpcError::OutOfRange { size } => {
                vec![("size", DataValue::Int(*size))]
            }
            RpcError::RateLimited { retry_after_s } => {
                vec![("retry_after_s", DataValue::Int(*retry_after_s))]
            }
            RpcError::ReadOnly { primary } => vec![("primary", DataValue::Str(primary.clone()))],
            RpcError::TokenInvalid { index, .. } | RpcError::TokenSpent { index } => {
                vec![("index", DataValue::Int(*index))]
            }
            _ => Vec::new(),
        }
    }

    /// An invalid-params error for `field`.
    pub fn params(field: impl Into<String>, problem: impl Into<String>) -> Self {
        RpcError::InvalidParams {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A value in an error's `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(u64),
}

impl From<crate::lcj::LcjError> for RpcError {
    fn from(e: crate::lcj::LcjError) -> Self {
        RpcError::InvalidParams {
            field: e.field,
            problem: e.problem,
        }
    }
}
