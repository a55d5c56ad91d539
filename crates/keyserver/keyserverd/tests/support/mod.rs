//! A real `keyserverd` process for the keyserver's end-to-end tests.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ks_client::Pin;

/// A running keyserverd; killed (SIGKILL) when dropped.
pub struct Keyserverd {
    child: Child,
    /// `http://ADDR/`.
    pub url: String,
    /// The pin it printed.
    pub pin: Pin,
    /// The escrow line it printed on first start.
    pub escrow: Option<String>,
    log: Arc<Mutex<String>>,
}

impl Keyserverd {
    /// Starts keyserverd on `dir` (port `port`, 0 for any) and waits for its
    /// pin and listening lines.
    pub fn start(dir: &Path, port: u16) -> Keyserverd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyserverd"))
            .args(["--data-dir", dir.to_str().expect("utf8")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--checkpoint-interval-ms", "100"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyserverd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pin = None;
            let mut escrow = None;
            let mut next_is_escrow = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log").push_str(&format!("{line}\n"));
                if next_is_escrow {
                    escrow = Some(line.trim().to_string());
                    next_is_escrow = false;
                }
                if line.starts_with("escrow key of ") {
                    next_is_escrow = true;
                }
                if let Some(p) = line.strip_prefix("pin: ") {
                    pin = Some(p.to_string());
                }
                if let Some(url) = line.strip_prefix("keyserverd listening on ") {
                    let _ = tx.send((url.to_string(), pin.clone(), escrow.clone()));
                }
            }
        });
        let (url, pin, escrow) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(found) => found,
            Err(_) => {
                let _ = child.kill();
                panic!("keyserverd did not start:\n{}", log.lock().expect("log"));
            }
        };
        let pin = Pin::parse(&pin.expect("a pin line")).expect("a valid pin");
        Keyserverd {
            child,
            url,
            pin,
            escrow,
            log,
        }
    }

    /// Everything it logged.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Keyserverd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
