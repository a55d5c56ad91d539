//! What the tlogd process tests share: starting a daemon, the CLI, HTTP,
//! and the check of served data by libraries nobody here wrote.
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tlog_tiles::tile::{Tile, TileHashReader, TileReader};
use tlog_tiles::tlog;

#[allow(unused_imports)] // each test binary uses its own part
pub use lk_testkit::tlogd::{free_port, start, start_with, Tlogd};

pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlog-cli"))
        .args(args)
        .output()
        .expect("run tlog-cli")
}

/// `tlog-cli sync` of the log at `url` into the view file `state`; its output.
pub fn sync_view(url: &str, vkey: &str, state: &Path) -> String {
    ok(cli(&[
        "sync",
        "--url",
        url,
        "--vkey",
        vkey,
        "--state",
        state.to_str().expect("utf8"),
    ]))
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

pub fn get(url: &str) -> (u16, Vec<u8>, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().expect("request");
    let cors = response
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_vec().expect("body");
    (status, body, cors)
}

pub fn post_full(url: &str, body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.post(url).send(body).expect("request");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("body"))
}

pub fn post(url: &str, token: Option<&str>, body: &[u8]) -> u16 {
    post_as(url, token, body).0
}

/// A POST with an optional bearer token: status and body.
pub fn post_as(url: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(url);
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut response = request.send(body).expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// Appends each entry through `POST add`; every one must be accepted.
pub fn append(node: &Tlogd, entries: impl IntoIterator<Item = String>) {
    let token = token(node);
    for entry in entries {
        assert_eq!(
            post(&format!("{}/add", node.url), Some(&token), entry.as_bytes()),
            200
        );
    }
}

/// Waits until the published checkpoint covers `size`.
pub fn published(node: &Tlogd, size: u64) -> Vec<u8> {
    published_at(&node.url, size)
}

/// Waits until the checkpoint of the log at `url` covers `size`.
pub fn published_at(url: &str, size: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body, _) = get(&format!("{url}/checkpoint"));
        if status == 200 {
            let text = String::from_utf8_lossy(&body).to_string();
            let n: u64 = text
                .lines()
                .nth(1)
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if n >= size {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size {size} at {url}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn vkey(node: &Tlogd) -> String {
    std::fs::read_to_string(node.dir.join("vkey"))
        .expect("vkey")
        .trim()
        .to_string()
}

pub fn token(node: &Tlogd) -> String {
    std::fs::read_to_string(node.dir.join("append-token"))
        .expect("token")
        .trim()
        .to_string()
}

/// `tlog_tiles` reads our hash tiles over HTTP through a path adapter.
pub struct HttpTiles(pub String);

impl TileReader for HttpTiles {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog::Error> {
        tiles
            .iter()
            .map(|t| {
                let path = tlog_core::TileId {
                    level: Some(t.level()),
                    index: t.level_index(),
                    width: t.width() as u16,
                }
                .path();
                let (status, body, _) = get(&format!("{}/{path}", self.0));
                (status == 200)
                    .then_some(body)
                    .ok_or(tlog::Error::InvalidTile)
            })
            .collect()
    }
    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// Code no one here wrote checks what tlogd serves: `signed_note` verifies
/// the published note with the vkey tlogd printed, and `tlog_tiles`
/// computes the checkpoint's root from the served tiles.
pub fn their_libraries_verify(node: &Tlogd, vkey: &str, note: &[u8]) {
    their_libraries_verify_at(&node.url, vkey, note)
}

/// [`their_libraries_verify`] for the log at `url`.
pub fn their_libraries_verify_at(url: &str, vkey: &str, note: &[u8]) {
    let verifier = signed_note::StandardVerifier::new(vkey).expect("their vkey parser");
    let parsed = signed_note::Note::from_bytes(note).expect("their note parser");
    parsed
        .verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .expect("their verification");
    let checkpoint =
        tlog_tiles::Checkpoint::from_bytes(parsed.text()).expect("their checkpoint parser");
    let tiles = HttpTiles(url.to_string());
    let reader = TileHashReader::new(checkpoint.size(), *checkpoint.hash(), &tiles);
    assert_eq!(
        tlog::tree_hash(checkpoint.size(), &reader).expect("their tree_hash"),
        *checkpoint.hash()
    );
}
