//! JSON-RPC 2.0 on `POST /` (keyserver.md §2.1): the envelope, HTTP status
//! rules and the one mapping of errors to the wire. Bodies are parsed with
//! LCJ's relaxed parser, so duplicate members, floats, nulls and escapes
//! are refused everywhere (-32700), and what a handler sees has exactly one
//! canonical form.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use ks_core::error::{DataValue, RpcError};
use ks_core::lcj::{self, Value};

use crate::server::MAX_REQUEST_BYTES;

/// What answers the methods: the keyserver, or a mirror of one.
pub trait Methods: Send + Sync + 'static {
    /// Runs `method` for `client` (its address, for rate limits).
    fn call(
        &self,
        method: &str,
        params: Value,
        client: Option<std::net::IpAddr>,
    ) -> impl std::future::Future<Output = Result<Value, RpcError>> + Send;

    /// The primary's answer to this body, byte for byte, when `method` is
    /// relayed there rather than answered here (a mirror's Capabilities
    /// and `--proxy-writes`), or why it could not be; `None`: answered by
    /// [`Methods::call`].
    fn relay(
        &self,
        _method: &str,
        _body: Bytes,
    ) -> impl std::future::Future<Output = Option<Result<Vec<u8>, RpcError>>> + Send {
        std::future::ready(None)
    }
}

impl Methods for crate::server::Keyserver {
    fn call(
        &self,
        method: &str,
        params: Value,
        client: Option<std::net::IpAddr>,
    ) -> impl std::future::Future<Output = Result<Value, RpcError>> + Send {
        crate::server::Keyserver::call(self, method, params, client)
    }
}

/// The JSON-RPC router (only `POST /`; other methods get 405).
pub fn router<M: Methods>(methods: Arc<M>) -> Router {
    Router::new()
        .route("/", post(handle::<M>))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(methods)
}

async fn handle<M: Methods>(
    State(methods): State<Arc<M>>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json\n",
        )
            .into_response();
    }
    if let Ok((Some(id), method, _)) = envelope(&body) {
        match methods.relay(&method, body.clone()).await {
            None => {}
            Some(Ok(bytes)) => {
                return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
            }
            Some(Err(e)) => {
                let bytes = response(Some(id), Err(e));
                return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
            }
        }
    }
    match respond(&*methods, &body, Some(client.ip())).await {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
    }
}

/// Answers one JSON-RPC body: the response bytes, or `None` for a
/// notification (HTTP 204). The fuzz target drives this directly.
pub async fn respond<M: Methods>(
    ks: &M,
    body: &[u8],
    client: Option<std::net::IpAddr>,
) -> Option<Vec<u8>> {
    let (id, outcome) = match envelope(body) {
        Err((id, e)) => (id, Err(e)),
        Ok((None, _, _)) => return None,
        Ok((Some(id), method, params)) => {
            let out = ks.call(&method, params, client).await;
            (Some(id), out)
        }
    };
    Some(response(id, outcome))
}

/// A response's bytes.
fn response(id: Option<serde_json::Value>, outcome: Result<Value, RpcError>) -> Vec<u8> {
    let id = id.unwrap_or(serde_json::Value::Null);
    let body = match outcome {
        Ok(result) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": to_json(&result)}),
        Err(e) => serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error_json(&e)}),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

type Envelope = (Option<serde_json::Value>, String, Value);

/// Parses the envelope: (id, or None for a notification; method; params).
fn envelope(body: &[u8]) -> Result<Envelope, (Option<serde_json::Value>, RpcError)> {
    let v = lcj::parse_relaxed(body).map_err(|_| (None, RpcError::Parse))?;
    let invalid =
        |id: Option<serde_json::Value>, why: &str| (id, RpcError::InvalidRequest(why.into()));
    let Value::Object(mut m) = v else {
        return Err(invalid(
            None,
            match v {
                Value::Array(_) => "batches are not supported in v1",
                _ => "not an object",
            },
        ));
    };
    let id = match m.remove("id") {
        None => None,
        Some(Value::String(s)) => Some(serde_json::Value::String(s)),
        Some(Value::Integer(n)) => Some(serde_json::Value::from(n)),
        Some(_) => return Err(invalid(None, "id must be a string or an integer")),
    };
    if m.remove("jsonrpc") != Some(Value::String("2.0".into())) {
        return Err(invalid(id, "jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = m.remove("method") else {
        return Err(invalid(id, "method must be a string"));
    };
    let params = match m.remove("params") {
        None => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => return Err((id, RpcError::params("params", "must be a by-name object"))),
    };
    if let Some(k) = m.keys().next() {
        return Err(invalid(id, &format!("unknown member {k}")));
    }
    Ok((id, method, params))
}

/// The `error` object of a response: code, message, data.reason and the
/// error's own data members.
pub fn error_json(e: &RpcError) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    data.insert("reason".into(), e.reason().into());
    for (k, v) in e.data() {
        data.insert(
            k.into(),
            match v {
                DataValue::Str(s) => s.into(),
                DataValue::Int(n) => n.into(),
            },
        );
    }
    // The message says what is wrong about the request; never secrets.
    let message = match e {
        RpcError::Internal => "internal error".to_string(),
        e => e.to_string(),
    };
    serde_json::json!({"code": e.code(), "message": message, "data": data})
}

/// An LCJ value as JSON.
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Object(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Integer(n) => serde_json::Value::from(*n),
        Value::Bool(b) => serde_json::Value::Bool(*b),
    }
}
