//! statechain.md §9.7: the process aborts just before and just after the
//! commit of `sign/second` and `transfer/sender` (feature
//! `danger-test-hooks`); after a restart the client's retry gets a reply
//! consistent with the log, and the log holds exactly one entry per
//! applied request: no partial signature or `x1` exists without its entry.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use statechain_core::auth::Op;
use statechain_core::bip340;
use statechain_core::cosign;
use statechain_core::scalar::{point, ser33, Scalar};
use support::{h, scalar, se_id, start, Http, Owner};

/// Starts the SE with a crash hook, sends `body` to `path`, and expects the
/// process to die without answering.
fn crash_on(dir: &Path, hook: &str, path: &str, body: &serde_json::Value) {
    let se = start(dir, &[("STATECHAIND_DANGER_ABORT", hook)]);
    let http = Http::new(&se.url);
    assert!(
        http.try_post(path, body).is_err(),
        "{hook}: the server must die before replying"
    );
    assert_ne!(se.wait(), Some(0), "aborted");
}

fn entries(owner: &Owner, http: &Http) -> usize {
    owner.state(http)["entries"]
        .as_array()
        .expect("entries")
        .len()
}

#[test]
fn crashes_around_the_commit_of_a_partial_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("se");
    let (mut owner, r_s) = {
        let se = start(&data, &[]);
        let http = Http::new(&se.url);
        let owner = Owner::deposit(&http, se_id(&http), 21);
        let r = http.post("/v1/sign/first", &owner.sign_first_body([1; 32]));
        (
            owner,
            point(&h::<33>(&r.body["server_nonce"])).expect("point"),
        )
    };
    let c = scalar(0x61);
    let body = owner.sign_second_body(&r_s, [1; 32], &c);

    // Before the commit: nothing happened; the retry signs once.
    crash_on(&data, "before-commit:g", "/v1/sign/second", &body);
    let se = start(&data, &[]);
    let http = Http::new(&se.url);
    assert_eq!(
        entries(&owner, &http),
        1,
        "no g entry after a crash before the commit"
    );
    let r = http.post("/v1/sign/second", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!r.replay);
    assert_eq!(r.body["count"], 1);
    let s_s = Scalar::from_bytes(&h(&r.body["partial_sig"])).expect("scalar");
    assert!(cosign::partial_is_valid(
        &owner.server_key.expect("S"),
        &r_s,
        &c,
        &s_s
    ));
    owner.head = h(&r.body["entry"]["leaf_hash"]);
    let r = http.post("/v1/sign/first", &owner.sign_first_body([2; 32]));
    let r_s2 = point(&h::<33>(&r.body["server_nonce"])).expect("point");
    drop(se);

    // After the commit: the entry exists; the retry is answered from the
    // record with the same partial signature the SE computed.
    let c2 = scalar(0x62);
    let body = owner.sign_second_body(&r_s2, [2; 32], &c2);
    crash_on(&data, "after-commit:g", "/v1/sign/second", &body);
    let se = start(&data, &[]);
    let http = Http::new(&se.url);
    assert_eq!(
        entries(&owner, &http),
        3,
        "the g entry committed before the crash"
    );
    let r = http.post("/v1/sign/second", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.replay, "answered from the q row");
    assert_eq!(r.body["count"], 2);
    let s_s2 = Scalar::from_bytes(&h(&r.body["partial_sig"])).expect("scalar");
    assert!(cosign::partial_is_valid(
        &owner.server_key.expect("S"),
        &r_s2,
        &c2,
        &s_s2
    ));
    assert_eq!(entries(&owner, &http), 3, "the retry added nothing");
    let state = owner.state(&http);
    assert_eq!(state["count"], 2);
}

#[test]
fn crashes_around_the_commit_of_a_transfer_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("se");
    let owner = {
        let se = start(&data, &[]);
        let http = Http::new(&se.url);
        Owner::deposit(&http, se_id(&http), 31)
    };
    let next = bip340::xonly_of(&scalar(0x71));
    let d = owner.digest(Op::TransferSender, &[&next.serialize()]);
    let body = json!({"statechain_id": hex::encode(owner.id), "head": hex::encode(owner.head),
                      "receiver_auth_key": hex::encode(next.serialize()), "auth": owner.auth(&d)});
    crash_on(&data, "before-commit:x", "/v1/transfer/sender", &body);
    crash_on(&data, "after-commit:x", "/v1/transfer/sender", &body);
    let se = start(&data, &[]);
    let http = Http::new(&se.url);
    assert_eq!(entries(&owner, &http), 2, "exactly one x entry");
    let r = http.post("/v1/transfer/sender", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.replay);
    // The x1 handed out is the one whose public key the log holds.
    let x1 = Scalar::from_bytes(&h(&r.body["x1"])).expect("x1");
    let state = owner.state(&http);
    assert_eq!(
        state["pending_transfer"]["x1_pub"],
        hex::encode(ser33(&x1.public()))
    );
    assert_eq!(
        state["pending_transfer"]["receiver_auth_key"],
        hex::encode(next.serialize())
    );
    assert_eq!(entries(&owner, &http), 2);
}

/// One owner's signing loop state across SE restarts.
struct Signer {
    owner: Owner,
    /// Every `(R_s, c)` whose partial signature this client received.
    received: Vec<(String, String)>,
    /// A session attempted whose reply never came.
    unfinished: Option<([u8; 32], Scalar)>,
    next: u32,
}

impl Signer {
    fn refresh_head(&mut self, http: &Http) -> Result<(), String> {
        let r = http
            .try_get(&format!("/v1/statechain/{}", hex::encode(self.owner.id)))
            .ok_or("the server is gone")?;
        if r.status != 200 {
            return Err(format!("{:?}", r.body));
        }
        self.owner.head = h(&r.body["head"]);
        Ok(())
    }

    /// One session; `Err` when the server is gone.
    fn session(&mut self, http: &Http, com: [u8; 32], c: Scalar) -> Result<(), String> {
        self.unfinished = Some((com, c.clone()));
        let r = http.try_post("/v1/sign/first", &self.owner.sign_first_body(com))?;
        if r.status == 409 && r.body["error"]["code"] == "commitment_reused" {
            // It completed before the crash; its reply was lost.
            self.unfinished = None;
            return self.refresh_head(http);
        }
        if r.status != 200 {
            return Err(format!("sign/first {:?}", r.body));
        }
        let r_s = point(&h::<33>(&r.body["server_nonce"])).ok_or("point")?;
        let r = http.try_post(
            "/v1/sign/second",
            &self.owner.sign_second_body(&r_s, com, &c),
        )?;
        if r.status != 200 {
            return Err(format!("sign/second {:?}", r.body));
        }
        self.received
            .push((hex::encode(ser33(&r_s)), hex::encode(c.to_bytes())));
        self.owner.head = h(&r.body["entry"]["leaf_hash"]);
        self.unfinished = None;
        Ok(())
    }

    fn run(&mut self, http: &Http, done: &std::sync::atomic::AtomicU32) {
        if self.refresh_head(http).is_err() {
            return;
        }
        if let Some((com, c)) = self.unfinished.clone() {
            if self.session(http, com, c).is_err() {
                return;
            }
        }
        loop {
            self.next += 1;
            let mut com = [0u8; 32];
            com[..4].copy_from_slice(&self.next.to_be_bytes());
            com[4..20].copy_from_slice(&self.owner.id);
            let c = scalar(((self.next % 200) + 1) as u8);
            if self.session(http, com, c).is_err() {
                return;
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// §9.7: 20 SIGKILLs under load from four coins; afterwards every partial
/// signature a client received has its `g` entry, and each coin's count
/// equals its `g` entries.
#[test]
fn sigkill_under_load_never_loses_a_released_signature() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("se");
    let mut signers: Vec<Signer> = {
        let se = start(&data, &[]);
        let http = Http::new(&se.url);
        let id = se_id(&http);
        (0..4u8)
            .map(|i| Signer {
                owner: Owner::deposit(&http, id, 60 + i),
                received: Vec::new(),
                unfinished: None,
                next: 0,
            })
            .collect()
    };
    for round in 0..20 {
        let se = start(&data, &[]);
        let http = Http::new(&se.url);
        let done = AtomicU32::new(0);
        std::thread::scope(|s| {
            let handles: Vec<_> = signers
                .iter_mut()
                .map(|signer| {
                    let (http, done) = (&http, &done);
                    s.spawn(move || signer.run(http, done))
                })
                .collect();
            // Kill once the load is flowing (a few signatures in), with
            // requests in flight.
            let deadline = Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::SeqCst) < 3 + (round % 5) {
                assert!(Instant::now() < deadline, "no progress in round {round}");
                std::thread::yield_now();
            }
            se.kill();
            for h in handles {
                h.join().expect("client thread");
            }
        });
    }
    let se = start(&data, &[]);
    let http = Http::new(&se.url);
    let mut total = 0;
    for signer in &signers {
        let state = signer.owner.state(&http);
        let mut logged = std::collections::BTreeSet::new();
        for e in state["entries"].as_array().expect("entries") {
            let leaf = statechain_core::leaf::Leaf::decode(
                &hex::decode(e["leaf"].as_str().expect("leaf")).expect("hex"),
            )
            .expect("leaf");
            if let statechain_core::leaf::Body::Signature(g) = leaf.body {
                logged.insert((
                    hex::encode(ser33(&g.server_nonce)),
                    hex::encode(g.challenge.to_bytes()),
                ));
            }
        }
        assert_eq!(
            state["count"],
            logged.len() as u64,
            "count equals g entries"
        );
        for pair in &signer.received {
            assert!(
                logged.contains(pair),
                "a released partial signature has no g entry: {pair:?}"
            );
        }
        total += signer.received.len();
    }
    assert!(total >= 60, "the load made progress ({total} signatures)");
}
