//! The SE's HTTP API from the client side (§3.3): JSON in, JSON out, every
//! error as [`ClientError::Se`] with the server's status and code so callers
//! can tell a conflict (409, never retried blindly) from a transient failure.

use std::time::Duration;

use serde_json::{json, Value};

use crate::ClientError;

/// A client for one SE.
pub struct SeClient {
    base: String,
    agent: ureq::Agent,
}

/// A successful reply.
#[derive(Debug, Clone)]
pub struct Response {
    /// The body.
    pub body: Value,
    /// `LK-Replay: 1`.
    pub replay: bool,
}

pub use http_tls::ClientTls;

impl SeClient {
    /// A client for `base` (e.g. `http://127.0.0.1:9940`), HTTPS checked
    /// against the Mozilla roots.
    pub fn new(base: &str) -> SeClient {
        Self::with_tls(base, &ClientTls::default())
    }

    /// A client for `base` with `tls` for HTTPS.
    pub fn with_tls(base: &str, tls: &ClientTls) -> SeClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        SeClient {
            base: base.trim_end_matches('/').to_string(),
            agent: tls.agent(config),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn finish(
        &self,
        what: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response, ClientError> {
        let mut resp = resp.map_err(|e| ClientError::Transport(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let replay = resp.headers().get("LK-Replay").is_some_and(|v| v == "1");
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Transport(format!("{what}: {e}")))?;
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Transport(format!("{what}: not JSON ({e}): {text:.200}")))?;
        if !(200..300).contains(&status) {
            let err = &body["error"];
            return Err(ClientError::Se {
                status,
                code: err["code"].as_str().unwrap_or("unknown").to_string(),
                message: err["message"].as_str().unwrap_or("").to_string(),
                body: body.clone(),
            });
        }
        Ok(Response { body, replay })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.agent.get(&url).call();
        self.finish(&format!("GET {url}"), r)
    }

    /// `GET path` of a text resource (the log's `lk/v1` proofs): its body
    /// when the status is 200.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let what = format!("GET {url}");
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| ClientError::Transport(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Transport(format!("{what}: {e}")))?;
        if status != 200 {
            return Err(ClientError::Transport(format!(
                "{what}: {status}: {text:.200}"
            )));
        }
        Ok(text)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let r = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(bytes.as_slice());
        self.finish(&format!("POST {url}"), r)
    }

    /// `POST /v1/tokens`.
    pub fn new_token(&self) -> Result<Value, ClientError> {
        Ok(self.post("/v1/tokens", &json!({}))?.body)
    }
}
