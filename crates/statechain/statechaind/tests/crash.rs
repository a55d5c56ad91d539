//! statechain.md §9.7: the process aborts just before and just after the
//! commit of `sign/second` and `transfer/sender` (feature
//! `danger-test-hooks`); after a restart the client's retry gets a reply
//! consistent with the log, and the log holds exactly one entry per
//! applied request: no partial signature or `x1` exists without its entry.

mod support;

use std::path::Path;

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
