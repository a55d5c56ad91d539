//! Helpers for the keyserver's end-to-end tests.
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;

use ks_client::Pin;

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
