//! The control API: HTTP, on loopback unless configured otherwise, every
//! call authenticated with a bearer token (`api-token` in the data
//! directory, mode 0600, made on first start). The reference serves this
//! unauthenticated on all interfaces with permissive CORS (`S4`).
//!
//! - `POST /api/control/{cid}`: body = hex of a signed control message
//!   (`sphinx_wire::control::sign`); answers `{"response": …, "hex": …}`
//!   once the signer has answered, after any change it made is in LSS.
//! - `GET /api/signers`: the signers, their sync state, which is current.
//! - `GET /api/errors`: server-sent events, one per error a signer reports.
//! - `GET /api/status`: what the dashboard shows: signers, requests and
//!   their recent latency, each LSS provider's reachability, and each
//!   signer's policy and allowlist as its last control response reported
//!   them (the broker cannot ask: only the node key signs control messages).
//! - `GET /dashboard`: the dashboard, a page of HTML and plain JavaScript
//!   embedded in the binary; it asks for the token once, keeps it in the
//!   browser session (`sessionStorage`), and reads the two calls above.
//!
//! The broker cannot make a control message: only the node key signs them,
//! and the signer checks the signature and the nonce window.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sphinx_wire::control::{self, ControlResponse, Policy};
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::scheduler::{RequestError, Scheduler};

struct Api {
    scheduler: Scheduler,
    token: String,
    /// Each signer's policy and allowlist, from its last control response
    /// that carried them.
    reported: Mutex<BTreeMap<String, Reported>>,
}

/// A signer's policy and allowlist as it last reported them.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Reported {
    policy: Option<Policy>,
    allowlist: Option<Vec<String>>,
    /// When (Unix seconds).
    at: u64,
}

/// How old a provider's reachability may be before the status call probes it.
const REACHABILITY_MAX_AGE: Duration = Duration::from_secs(5);

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Reads the API token from `path`, or makes one (mode 0600).
pub fn token(path: &Path) -> Result<String, durable_file::FileError> {
    if let Some(bytes) = durable_file::read(path)? {
        return Ok(String::from_utf8_lossy(&bytes).trim().to_string());
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    durable_file::create_new(path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scheduler: Scheduler,
    token: String,
    max_packet: usize,
) -> std::io::Result<()> {
    let api = Arc::new(Api {
        scheduler,
        token,
        reported: Mutex::default(),
    });
    let app = Router::new()
        .route("/api/control/{cid}", post(control_message))
        .route("/api/signers", get(signers))
        .route("/api/errors", get(errors))
        .route("/api/status", get(status))
        .route("/dashboard", get(dashboard))
        .with_state(api)
        // A control message as hex: twice the largest packet it may become.
        .layer(axum::extract::DefaultBodyLimit::max(2 * max_packet + 2));
    axum::serve(listener, app).await
}

fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(api.token.as_bytes()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    )
        .into_response()
}

async fn control_message(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath(cid): UrlPath<String>,
    body: String,
) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let Ok(message) = hex::decode(body.trim()) else {
        return (
            StatusCode::BAD_REQUEST,
            "the body must be the hex of a signed control message\n",
        )
            .into_response();
    };
    match api.scheduler.control(cid.clone(), message).await {
        Ok(bytes) => {
            let response: serde_json::Value = match control::decode::<ControlResponse>(&bytes) {
                Ok(decoded) => {
                    api.remember(&cid, &decoded);
                    serde_json::to_value(decoded).unwrap_or_default()
                }
                Err(e) => serde_json::Value::String(format!("undecodable: {e}")),
            };
            Json(serde_json::json!({ "response": response, "hex": hex::encode(&bytes) }))
                .into_response()
        }
        Err(e) => {
            let status = match e {
                RequestError::Invalid(_) => StatusCode::CONFLICT,
                RequestError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
                RequestError::Signer { .. } | RequestError::Lss(_) => StatusCode::BAD_GATEWAY,
                RequestError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, format!("{e}\n")).into_response()
        }
    }
}

impl Api {
    fn remember(&self, cid: &str, response: &ControlResponse) {
        let (policy, allowlist) = match response {
            ControlResponse::PolicyCurrent(p) | ControlResponse::PolicyUpdated(p) => {
                (Some(*p), None)
            }
            ControlResponse::AllowlistCurrent(l) | ControlResponse::AllowlistUpdated(l) => {
                (None, Some(l.clone()))
            }
            ControlResponse::AllCurrent {
                policy, allowlist, ..
            } => (Some(*policy), Some(allowlist.clone())),
            _ => return,
        };
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let entry = reported.entry(cid.to_string()).or_default();
        if policy.is_some() {
            entry.policy = policy;
        }
        if allowlist.is_some() {
            entry.allowlist = allowlist;
        }
        entry.at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
    }
}

async fn dashboard() -> Response {
    (
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(DASHBOARD),
    )
        .into_response()
}

async fn status(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let signers = match api.scheduler.signers().await {
        Ok(list) => list,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    let lss = match api.scheduler.relay() {
        Some(relay) => Some(relay.reachability(REACHABILITY_MAX_AGE).await),
        None => None,
    };
    let reported = api
        .reported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(serde_json::json!({
        "signers": signers,
        "requests": api.scheduler.stats(),
        "lss": lss,
        "reported": reported,
    }))
    .into_response()
}

async fn signers(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    match api.scheduler.signers().await {
        Ok(list) => Json(serde_json::json!({ "signers": list })).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn errors(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let stream = BroadcastStream::new(api.scheduler.errors()).filter_map(|item| {
        let error = item.ok()?;
        let data = serde_json::to_string(&error).ok()?;
        Some(Ok::<Event, Infallible>(
            Event::default().event("error").data(data),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
