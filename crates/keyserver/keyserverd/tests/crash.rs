//! keyserver.md §4.7 and §10 "under SIGKILL during create load": eight
//! clients register users while `keyserverd` is killed five times. After
//! each restart every acknowledged reply is in the chain at its position
//! with its entry, the UID it carries is the newest of its identity for a
//! client that verifies the whole chain, and a retried CreateUID gets the
//! original reply.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use ks_client::Client;
use ks_core::author::{self, UidKeys};
use ks_core::entry::Entry;
use ks_core::lcj::Lcj;
use ks_core::uid::{UidMessage, UidMessageReply};
use serde_json::json;
use support::{now, Keyserverd};

/// `load` and a base-8 number in the digits 2–9 (mapped names have no 0, 1
/// or j).
fn name(i: u64) -> String {
    let mut d = Vec::new();
    let mut n = i;
    loop {
        d.push(char::from(b'2' + (n % 8) as u8));
        n /= 8;
        if n == 0 {
            break;
        }
    }
    d.reverse();
    format!("load{}@localhost", d.into_iter().collect::<String>())
}

fn create(i: u64, head: &Entry) -> UidMessage {
    let mut seed = [0x77u8; 32];
    seed[..8].copy_from_slice(&i.to_be_bytes());
    let key = SigningKey::from_bytes(&seed);
    let keys = UidKeys {
        sig_key: &key,
        escrow: None,
        static_key: [9; 32],
    };
    author::sign_create(
        author::content(&name(i), &keys, 0, Some(head), "strict", now()),
        &keys,
    )
}

fn send(url: &str, m: &UidMessage) -> Option<UidMessageReply> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "KeyRepository.CreateUID",
        "params": {"UIDMessage": serde_json::from_slice::<serde_json::Value>(&m.to_lcj()).expect("json")}});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    let reply = serde_json::to_vec(&v["result"]["UIDMessageReply"]).ok()?;
    let value = ks_core::lcj::parse_relaxed(&reply).ok()?;
    UidMessageReply::from_value(value).ok()
}

#[test]
fn five_kills_under_create_load_lose_no_acknowledged_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server =
        Keyserverd::start(dir.path(), 0, &["--no-rate-limits", "--tokens", "disabled"]);
    let port = server.port();
    let mut client = Client::new(&server.url, server.pin.clone());
    client.sync().expect("sync");
    let head = *client.entry(0).expect("genesis");
    let acked: Arc<Mutex<Vec<(u64, UidMessage, UidMessageReply)>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    for round in 0..5 {
        let stop = Arc::new(AtomicBool::new(false));
        let url = server.url.clone();
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (url, stop, next, acked) =
                    (url.clone(), stop.clone(), next.clone(), acked.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let m = create(i, &head);
                        match send(&url, &m) {
                            Some(reply) => acked.lock().expect("lock").push((i, m, reply)),
                            None => return,
                        }
                    }
                })
            })
            .collect();
        // Kill once this round's load has been acknowledged for a while.
        let target = (round + 1) * 60;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().expect("lock").len() < target {
            assert!(
                Instant::now() < deadline,
                "the load never got going:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("worker");
        }
        server = Keyserverd::start(
            dir.path(),
            port,
            &["--no-rate-limits", "--tokens", "disabled"],
        );
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 300, "{} acknowledged", acked.len());
    // Wait for the restarted server to publish everything it holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let max_pos = acked
        .iter()
        .map(|(_, _, r)| r.entry.hashchain_pos)
        .max()
        .expect("some");
    loop {
        client
            .sync()
            .expect("sync after the kills: no rollback, no fork");
        if client.size() > max_pos {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged positions never published"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, _, reply) in &acked {
        let pos = reply.entry.hashchain_pos;
        let entry = client.entry(pos).expect("in the chain");
        assert_eq!(
            ks_core::b64::encode(&entry.0),
            reply.entry.hashchain_entry,
            "acknowledged reply {i} is at its position"
        );
    }
    for (i, m, _) in acked.iter().step_by(25) {
        let found = client
            .lookup(&name(*i))
            .expect("verifies")
            .expect("registered");
        assert_eq!(&found.message, m);
    }
    // A retry of an acknowledged CreateUID gets the original reply.
    let (_, m, reply) = &acked[acked.len() / 2];
    let again = send(&server.url, m).expect("retry answered");
    assert_eq!(&again, reply);
}
