//! The HTTP API's wire forms (§3.1–§3.3, §3.6): strict JSON (unknown fields
//! refused), lowercase hex of exact lengths, points on the curve, scalars in
//! `[1, n−1]`, and one error shape with the status and code of §3.6.
//! Parsing and auth-signature checks happen here, before a request reaches
//! the single writer, so malformed or unauthorised input never costs it
//! anything and never changes state.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secp256k1::{PublicKey, XOnlyPublicKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use statechain_core::auth::{self, Op};
use statechain_core::hash::sha256;
use statechain_core::scalar::{point, ser33, xonly, Scalar};
use statechain_core::se::{self, Authorised, SeError};
use statechain_core::{LeafHash, SeId, StatechainId};

use crate::store::CoinReq;

/// An error reply: `{"error":{"code","message","retryable"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// §3.6 code.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// Extra fields of the error object (`stale_state` carries `head` and
    /// `head_seq`, §3.5).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// Any error.
    pub fn new(
        status: u16,
        code: &'static str,
        message: impl Into<String>,
        retryable: bool,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retryable,
            extra: None,
        }
    }
    /// 400.
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message, false)
    }
    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(404, code, message, false)
    }
    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(409, code, message, false)
    }
    /// 503 `unavailable` (storage).
    pub fn unavailable() -> ApiError {
        ApiError::new(503, "unavailable", "storage temporarily unavailable", true)
    }
    /// From the state machine's refusal.
    pub fn from_se(e: SeError) -> ApiError {
        let retryable = matches!(e, SeError::Internal(_));
        let mut err = ApiError::new(e.status(), e.code(), e.to_string(), retryable);
        if let SeError::StaleState { head, head_seq } = e {
            err.extra = Some(json!({"head": hex::encode(head), "head_seq": head_seq}));
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut error =
            json!({"code": self.code, "message": self.message, "retryable": self.retryable});
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, error.as_object_mut())
        {
            obj.extend(extra);
        }
        let body = json!({"error": error});
        (status, axum::Json(body)).into_response()
    }
}

/// Parses a JSON body strictly into `T`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("unknown field") {
            ApiError::bad("unknown_field", msg)
        } else {
            ApiError::bad("malformed", msg)
        }
    })
}

/// Lowercase hex of exactly `N` bytes.
pub fn hex_n<const N: usize>(field: &str, s: &str) -> Result<[u8; N], ApiError> {
    let v = hex_any(field, s)?;
    v.try_into()
        .map_err(|_| ApiError::bad("malformed", format!("{field}: expected {N} bytes")))
}

/// Lowercase hex of any length.
pub fn hex_any(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::bad(
            "malformed",
            format!("{field}: hex must be lowercase"),
        ));
    }
    hex::decode(s).map_err(|_| ApiError::bad("malformed", format!("{field}: not hex")))
}

/// A compressed point.
pub fn p33(field: &str, s: &str) -> Result<PublicKey, ApiError> {
    point(&hex_n::<33>(field, s)?)
        .ok_or_else(|| ApiError::bad("invalid_point", format!("{field}: not a point")))
}

/// An x-only key.
pub fn x32(field: &str, s: &str) -> Result<XOnlyPublicKey, ApiError> {
    xonly(&hex_n::<32>(field, s)?)
        .ok_or_else(|| ApiError::bad("invalid_point", format!("{field}: not an x-only key")))
}

/// A scalar in `[1, n−1]`.
pub fn s32(field: &str, s: &str) -> Result<Scalar, ApiError> {
    Scalar::from_bytes(&hex_n::<32>(field, s)?).map_err(|_| {
        ApiError::bad(
            "invalid_scalar",
            format!("{field}: not a scalar in [1, n-1]"),
        )
    })
}

/// `{"key": X32, "sig": H64}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthJson {
    key: String,
    sig: String,
}

impl AuthJson {
    /// Verifies the signature on `digest` under the named key.
    pub fn check(&self, digest: [u8; 32]) -> Result<Authorised, ApiError> {
        let key = x32("auth.key", &self.key)?;
        let sig = hex_n::<64>("auth.sig", &self.sig)?;
        Authorised::check(key, sig, digest).map_err(ApiError::from_se)
    }
}

/// `POST /v1/deposit/init`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositInit {
    token_id: String,
    auth: AuthJson,
}

impl DepositInit {
    /// The token and the checked authorisation.
    pub fn check(&self, se_id: &SeId) -> Result<([u8; 16], Authorised), ApiError> {
        let token_id = hex_n::<16>("token_id", &self.token_id)?;
        let key = x32("auth.key", &self.auth.key)?;
        let auth = self
            .auth
            .check(se::deposit_digest(se_id, &key, &token_id))?;
        Ok((token_id, auth))
    }
}

/// Every coin request's body: the union of §3.3's fields; each route says
/// which it requires, and any other field is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinJson {
    statechain_id: String,
    head: String,
    auth: AuthJson,
    #[serde(default)]
    commitment: Option<String>,
    #[serde(default)]
    server_nonce: Option<String>,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    receiver_auth_key: Option<String>,
    #[serde(default)]
    enc: Option<String>,
    #[serde(default)]
    new_server_pubkey: Option<String>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    t2: Option<String>,
}

/// A parsed, authorised coin request.
#[derive(Debug)]
pub struct CoinRequest {
    /// The coin.
    pub id: StatechainId,
    /// The client's head.
    pub head: LeafHash,
    /// The checked authorisation.
    pub auth: Authorised,
    /// The request.
    pub req: CoinReq,
}

fn need<'a, T>(field: &str, v: &'a Option<T>) -> Result<&'a T, ApiError> {
    v.as_ref()
        .ok_or_else(|| ApiError::bad("malformed", format!("missing field {field}")))
}

impl CoinJson {
    /// Parses the fields `op` uses (refusing the others) and checks the
    /// auth signature over §3.2's digest.
    pub fn check(&self, se_id: &SeId, op: Op) -> Result<CoinRequest, ApiError> {
        let id = hex_n::<16>("statechain_id", &self.statechain_id)?;
        let head = hex_n::<32>("head", &self.head)?;
        let allowed: &[&str] = match op {
            Op::SignFirst => &["commitment"],
            Op::SignSecond => &["server_nonce", "commitment", "challenge"],
            Op::SignCancel => &["server_nonce"],
            Op::TransferSender => &["receiver_auth_key"],
            Op::TransferMessage => &["receiver_auth_key", "enc"],
            Op::TransferReceiver => &["receiver_auth_key", "new_server_pubkey", "count", "t2"],
            Op::WithdrawComplete => &["count"],
            Op::DepositInit | Op::TransferInbox => &[],
        };
        let present = [
            ("commitment", self.commitment.is_some()),
            ("server_nonce", self.server_nonce.is_some()),
            ("challenge", self.challenge.is_some()),
            ("receiver_auth_key", self.receiver_auth_key.is_some()),
            ("enc", self.enc.is_some()),
            ("new_server_pubkey", self.new_server_pubkey.is_some()),
            ("count", self.count.is_some()),
            ("t2", self.t2.is_some()),
        ];
        if let Some((f, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
            return Err(ApiError::bad(
                "unknown_field",
                format!("unknown field `{f}` for {}", op.name()),
            ));
        }
        let digest = |fields: &[&[u8]]| auth::digest(se_id, op, &id, &head, fields);
        let (req, digest) = match op {
            Op::SignFirst => {
                let com = hex_n::<32>("commitment", need("commitment", &self.commitment)?)?;
                (CoinReq::SignFirst { com }, digest(&[&com]))
            }
            Op::SignSecond => {
                let nonce = p33("server_nonce", need("server_nonce", &self.server_nonce)?)?;
                let com = hex_n::<32>("commitment", need("commitment", &self.commitment)?)?;
                let challenge = s32("challenge", need("challenge", &self.challenge)?)?;
                let d = digest(&[&ser33(&nonce), &com, &challenge.to_bytes()]);
                (
                    CoinReq::SignSecond {
                        nonce,
                        com,
                        challenge,
                    },
                    d,
                )
            }
            Op::SignCancel => {
                let nonce = p33("server_nonce", need("server_nonce", &self.server_nonce)?)?;
                (CoinReq::SignCancel { nonce }, digest(&[&ser33(&nonce)]))
            }
            Op::TransferSender => {
                let next = x32(
                    "receiver_auth_key",
                    need("receiver_auth_key", &self.receiver_auth_key)?,
                )?;
                (CoinReq::Sender { next }, digest(&[&next.serialize()]))
            }
            Op::TransferMessage => {
                let next = x32(
                    "receiver_auth_key",
                    need("receiver_auth_key", &self.receiver_auth_key)?,
                )?;
                let enc = hex_any("enc", need("enc", &self.enc)?)?;
                if enc.len()
                    > statechain_core::message::ENC_LEN
                        + statechain_core::message::MAX_PLAINTEXT
                        + 16
                {
                    return Err(ApiError::new(
                        413,
                        "too_large",
                        "transfer message over 1 MiB",
                        false,
                    ));
                }
                let d = digest(&[&next.serialize(), &sha256(&enc)]);
                (CoinReq::Message { next, enc }, d)
            }
            Op::TransferReceiver => {
                let next = x32(
                    "receiver_auth_key",
                    need("receiver_auth_key", &self.receiver_auth_key)?,
                )?;
                let new_server_key = p33(
                    "new_server_pubkey",
                    need("new_server_pubkey", &self.new_server_pubkey)?,
                )?;
                let count = *need("count", &self.count)?;
                let t2 = s32("t2", need("t2", &self.t2)?)?;
                let d = digest(&[
                    &next.serialize(),
                    &ser33(&new_server_key),
                    &count.to_be_bytes(),
                ]);
                (
                    CoinReq::Receiver {
                        next,
                        new_server_key,
                        count,
                        t2,
                    },
                    d,
                )
            }
            Op::WithdrawComplete => {
                let count = *need("count", &self.count)?;
                (CoinReq::Withdraw { count }, digest(&[&count.to_be_bytes()]))
            }
            Op::DepositInit | Op::TransferInbox => {
                return Err(ApiError::bad("malformed", "not a coin operation"));
            }
        };
        let auth = self.auth.check(digest)?;
        Ok(CoinRequest {
            id,
            head,
            auth,
            req,
        })
    }
}

/// `POST /v1/transfer/inbox`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbox {
    receiver_auth_key: String,
    time: u64,
    auth: AuthJson,
}

impl Inbox {
    /// The receiver's key, after checking the signature and the clock.
    pub fn check(&self, se_id: &SeId, now: u64) -> Result<XOnlyPublicKey, ApiError> {
        let key = x32("receiver_auth_key", &self.receiver_auth_key)?;
        if x32("auth.key", &self.auth.key)? != key {
            return Err(ApiError::new(
                401,
                "bad_auth",
                "inbox requests are signed by the receiver's key",
                false,
            ));
        }
        if !se::inbox_time_ok(self.time, now) {
            return Err(ApiError::new(
                401,
                "bad_auth",
                "time is more than 300 s from the server's clock",
                false,
            ));
        }
        self.auth.check(se::inbox_digest(se_id, self.time))?;
        Ok(key)
    }
}

/// `POST /v1/tokens` takes an empty object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}
