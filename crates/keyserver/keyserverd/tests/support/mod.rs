//! Helpers for the keyserver's end-to-end tests.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;

use ks_client::Pin;
use ks_core::lcj::Lcj as _;

/// A real keyserverd (lk-testkit's) with its pin parsed.
pub struct Keyserverd {
    /// The process.
    pub process: lk_testkit::keyserverd::Keyserverd,
    /// `http://ADDR/`.
    pub url: String,
    /// The pin.
    pub pin: Pin,
    /// The escrow line printed on first start.
    pub escrow: Option<String>,
}

impl Keyserverd {
    /// Starts this package's keyserverd on `dir` (port 0 for any) with
    /// `extra` arguments.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> Keyserverd {
        let process = lk_testkit::keyserverd::Keyserverd::start(
            Path::new(env!("CARGO_BIN_EXE_keyserverd")),
            dir,
            port,
            extra,
        );
        Keyserverd {
            url: process.url.clone(),
            pin: Pin::parse(&process.pin).expect("a valid pin"),
            escrow: process.escrow.clone(),
            process,
        }
    }

    /// Everything it logged.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The port it listens on (to restart it on the same one).
    pub fn port(&self) -> u16 {
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// SIGKILL, as a crash.
    pub fn kill(self) {
        self.process.kill()
    }
}

/// Posts a raw JSON-RPC body; (HTTP status, parsed body or Null).
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("Content-Type", content_type)
        .send(body)
        .expect("post");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The operator's offline `keyserverd tokens ARGS` on the server's data
/// directory; panics with its stderr if it fails.
pub fn operator(server_dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyserverd"))
        .arg("--data-dir")
        .arg(server_dir)
        .arg("tokens")
        .args(args)
        .output()
        .expect("run keyserverd tokens");
    assert!(
        out.status.success(),
        "keyserverd tokens {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// §5's issuance as the seed plays it: `client` blinds `count` requests,
/// the operator signs them with `keyserverd tokens sign`, the client
/// unblinds and verifies them into its wallet.
pub fn buy_tokens(server_dir: &Path, client: &mut ks_client::Client, count: usize) {
    let files = tempfile::tempdir().expect("tempdir");
    let (req, resp) = (
        files.path().join("req.json"),
        files.path().join("resp.json"),
    );
    let r = client.request_tokens(count).expect("request tokens");
    let body = serde_json::json!({"Batch": r.batch, "TokenRequests": r.requests});
    std::fs::write(&req, body.to_string()).expect("write request");
    operator(
        server_dir,
        &[
            "sign",
            "--in",
            req.to_str().expect("utf-8"),
            "--out",
            resp.to_str().expect("utf-8"),
        ],
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&resp).expect("response")).expect("json");
    assert_eq!(client.finalize_tokens(&answer).expect("finalize"), count);
}

/// `count` finished tokens from `keyserverd tokens mint --danger-linkable`
/// (b64), for test users that need one each.
pub fn mint_tokens(server_dir: &Path, count: usize) -> Vec<String> {
    let files = tempfile::tempdir().expect("tempdir");
    let out = files.path().join("tokens.json");
    operator(
        server_dir,
        &[
            "mint",
            "--count",
            &count.to_string(),
            "--danger-linkable",
            "--out",
            out.to_str().expect("utf-8"),
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("tokens")).expect("json");
    v["Tokens"]
        .as_array()
        .expect("Tokens")
        .iter()
        .map(|t| t.as_str().expect("b64").to_string())
        .collect()
}

/// One JSON-RPC call; the whole response (HTTP 200 asserted).
pub fn call(url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params});
    let (status, v) = post_raw(url, "application/json", body.to_string().as_bytes());
    assert_eq!(status, 200, "{v}");
    v
}

/// The error code of a response that must be an error.
pub fn code(v: &serde_json::Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error: {v}"))
}

/// A UIDMessage as a JSON params member.
pub fn msg_json(m: &ks_core::uid::UidMessage) -> serde_json::Value {
    serde_json::from_slice(&m.to_lcj()).expect("json")
}

/// The wall clock in unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The X25519 public key of the secret [b; 32].
pub fn x25519(b: u8) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([b; 32])).to_bytes()
}
