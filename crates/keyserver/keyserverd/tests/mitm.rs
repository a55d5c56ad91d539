//! keyserver.md §10's rewriting proxy: a man in the middle between the
//! clients and a real `keyserverd` (lk-testkit's byte-level proxy) alters
//! what they download: Bob's FetchHashChain chunk with one entry's byte
//! flipped, and, for a first `tlog-cli sync` (code that reads the chain as
//! a plain tlog log from the tiles), the entry bundle with a byte of its
//! first leaf flipped. Each is refused and nothing of it is kept, and an
//! honest download afterwards succeeds.

mod support;

use std::path::Path;

use ks_client::Client;
use lk_testkit::net::FaultProxy;
use support::Keyserverd;

const ARGS: &[&str] = &["--no-rate-limits", "--tokens", "disabled"];

fn register(url: &str, pin: &ks_client::Pin, names: std::ops::Range<u32>) -> u64 {
    let mut c = Client::new(url, pin.clone());
    c.sync().expect("sync");
    let mut last = 0;
    for i in names {
        last = c
            .register(&format!("user{i}@localhost"), "strict")
            .expect("register")
            .reply
            .entry
            .hashchain_pos;
    }
    last
}

/// Syncs until `client` holds `pos` (the primary publishes every 100 ms).
fn sync_past(client: &mut Client, pos: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.size() <= pos {
        client.sync().expect("honest sync");
        assert!(
            std::time::Instant::now() < deadline,
            "{pos} never published"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn tlog_sync(url: &str, vkey: &str, state: &Path) -> lk_testkit::keyserverd::CliOut {
    let out = std::process::Command::new(lk_testkit::process::workspace_binary("tlog-cli"))
        .args(["sync", "--url", url, "--vkey", vkey, "--state"])
        .arg(state)
        .output()
        .expect("tlog-cli");
    lk_testkit::keyserverd::CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn altered_chunks_and_tiles_in_transit_are_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_dir = dir.path().join("server");
    let server = Keyserverd::start(&server_dir, 0, ARGS);
    let pin = server.pin.clone();
    let target: std::net::SocketAddr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("address");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = rt.block_on(FaultProxy::start(target));
    let via = format!("http://{}/", proxy.addr);
    let vkey = std::fs::read_to_string(server_dir.join("vkey")).expect("vkey");
    let vkey = vkey.trim();
    let tiles = format!("{via}kt/v1/");

    // Honest first: Bob and tlog-cli hold the first entries.
    let first = register(&server.url, &pin, 0..3);
    let mut bob = Client::new(&via, pin.clone());
    sync_past(&mut bob, first);

    // More entries; the proxy flips a byte of the first entry of Bob's
    // next FetchHashChain chunk.
    let last = register(&server.url, &pin, 3..8);
    let mut probe = Client::new(&server.url, pin.clone());
    sync_past(&mut probe, last);
    let held = bob.size();
    proxy.tamper_next(b"\"HCEntries\":[\"");
    // The flipped character may leave base64, break the link or miss the
    // root: each is the server's data failing verification.
    match bob.sync() {
        Err(e @ ks_client::ClientError::BadData(_)) => {
            assert!(e.to_string().contains("does not verify"), "{e}")
        }
        Err(e) => panic!("not refused as bad data: {e}"),
        Ok(s) => panic!("an altered chunk was accepted: {s:?}"),
    }
    assert_eq!(bob.size(), held, "nothing of the altered chunk is kept");
    sync_past(&mut bob, last);

    // The entry bundle prefixes each 158-byte leaf with its length (00 9e):
    // flip the first byte of the first leaf (its tag), which a client
    // syncing from nothing must verify.
    let view = dir.path().join("view");
    proxy.tamper_next(&[0x00, 0x9e]);
    let altered = tlog_sync(&tiles, vkey, &view);
    assert_ne!(altered.code, 0, "{}{}", altered.stdout, altered.stderr);
    assert!(
        altered.stderr.contains("do not match the checkpoint"),
        "{}",
        altered.stderr
    );
    assert!(!view.exists(), "nothing of the altered download is kept");
    let again = tlog_sync(&tiles, vkey, &view);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains(&format!("({} new entries", last + 1)),
        "{}",
        again.stdout
    );
    drop(server);
}
