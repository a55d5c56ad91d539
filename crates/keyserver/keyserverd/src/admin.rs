//! The admin listener (keyserver.md §2.3): `POST /admin/tokens/issue` for
//! a payment front end and `GET /admin/stats` (counts only), on their own
//! address (`--admin-listen`, default `127.0.0.1:55561`), each request
//! with `Authorization: Bearer <admin_token>`, the 0600 file in the data
//! directory, compared in constant time.
//!
//! Issuing is the same code as the offline `keyserverd tokens sign`: each
//! call signs at most 4,096 blinded requests, once each, on the blocking
//! pool (an RSA signature is milliseconds), and counts what it issued.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ks_core::token::IssuerSecret;
use subtle::ConstantTimeEq;

use crate::server::Keyserver;
use crate::tokens::MAX_REQUESTS;

/// The admin token file's name in the data directory.
pub const TOKEN_FILE: &str = "admin_token";
/// The largest admin request (4,096 requests of 259 bytes in base64).
const MAX_BODY: usize = 2 << 20;

/// The admin bearer token (redacted in `Debug`).
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

impl AdminToken {
    /// The token in `dir`, created (0600, 32 random bytes in hex) on first
    /// use.
    pub fn load_or_create(dir: &Path) -> Result<AdminToken, String> {
        let path = dir.join(TOKEN_FILE);
        match durable_file::read(&path).map_err(|e| format!("{}: {e}", path.display()))? {
            Some(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("{}: not text", path.display()))?;
                let token = text.trim().to_string();
                if token.len() < 32 {
                    return Err(format!("{}: shorter than 32 characters", path.display()));
                }
                Ok(AdminToken(token))
            }
            None => {
                let mut b = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
                let token = hex::encode(b);
                durable_file::create_new(&path, format!("{token}\n").as_bytes(), 0o600)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(AdminToken(token))
            }
        }
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        given.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// What the admin routes share.
struct Admin {
    token: AdminToken,
    issuer: Option<Arc<IssuerSecret>>,
    keyserver: Arc<Keyserver>,
    issued: AtomicU64,
}

/// The admin router.
pub fn router(
    token: AdminToken,
    issuer: Option<Arc<IssuerSecret>>,
    keyserver: Arc<Keyserver>,
) -> Router {
    Router::new()
        .route("/admin/tokens/issue", post(issue))
        .route("/admin/stats", get(stats))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(Admin {
            token,
            issuer,
            keyserver,
            issued: AtomicU64::new(0),
        }))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

async fn issue(State(admin): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    if !admin.token.admits(&headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
    }
    let Some(issuer) = admin.issuer.clone() else {
        return error(StatusCode::CONFLICT, "tokens are disabled on this server");
    };
    let requests: Vec<String> = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => match v.get("TokenRequests").and_then(|r| r.as_array()) {
            Some(items) if items.len() <= MAX_REQUESTS => {
                match items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect()
                {
                    Some(r) => r,
                    None => return error(StatusCode::BAD_REQUEST, "a request is not a string"),
                }
            }
            Some(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "at most 4096 requests per call",
                )
            }
            None => return error(StatusCode::BAD_REQUEST, "no TokenRequests array"),
        },
        Err(_) => return error(StatusCode::BAD_REQUEST, "the body is not JSON"),
    };
    let count = requests.len() as u64;
    let signed =
        tokio::task::spawn_blocking(move || crate::tokens::sign_requests(&issuer, &requests)).await;
    match signed {
        Ok(Ok(responses)) => {
            let total = admin.issued.fetch_add(count, Ordering::Relaxed) + count;
            metrics::counter!("keyserverd_tokens_issued_total").increment(count);
            tracing::info!(count, total, "issued tokens");
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "TokenResponses": responses }).to_string(),
            )
                .into_response()
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "issuing failed"),
    }
}

async fn stats(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !admin.token.admits(&headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
    }
    let size = admin
        .keyserver
        .node()
        .published_head()
        .map_or(0, |(s, _)| s);
    let spent = {
        let ks = admin.keyserver.clone();
        tokio::task::spawn_blocking(move || ks.spent_tokens())
            .await
            .ok()
            .and_then(Result::ok)
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({
            "published_entries": size,
            "spent_tokens": spent,
            "tokens_issued_since_start": admin.issued.load(Ordering::Relaxed),
        })
        .to_string(),
    )
        .into_response()
}
