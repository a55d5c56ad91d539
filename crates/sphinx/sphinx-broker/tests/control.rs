//! The control plane end to end: an operator's signed control messages
//! through the broker's authenticated HTTP API to the signer, their changes
//! stored in LSS before the answer; the signer list; the error stream.

mod driver;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use driver::checks::key;
use driver::{hsmd_init, lssd_binary, Broker, SignerHome};
use lk_testkit::process::LssdProcess;
use secp256k1::Secp256k1;
use sphinx_signer::Network;
use sphinx_wire::control::{self, ControlMessage};
use vls_protocol::model::DisclosedSecret;
use vls_protocol::msgs::{self, Message};

fn payee(byte: u8) -> String {
    format!("payee:{}", key(byte).public_key(&Secp256k1::new()))
}

fn send(
    broker: &Broker,
    cid: &str,
    token: &str,
    message: &ControlMessage,
    nonce: u64,
    signer: &secp256k1::SecretKey,
) -> (u16, serde_json::Value) {
    let body = hex::encode(control::sign(message, nonce, signer));
    let (status, text) = broker.http("POST", &format!("/api/control/{cid}"), Some(token), &body);
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

#[test]
fn signed_control_messages_through_the_api_are_stored_in_lss_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("lssd");
    let lss = LssdProcess::spawn(
        &lssd_binary(),
        &["--data-dir", data.to_str().expect("utf8")],
    )
    .expect("lssd");
    let home = SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    let mut broker = Broker::start_lss(
        dir.path(),
        &lss.url,
        &["--owner", &owner, "--request-timeout-secs", "5"],
    );
    broker.master.send(&hsmd_init(Network::Regtest));
    let mut signer = home.start_lss(&broker.url(), &[]);
    assert!(matches!(
        broker.master.recv(),
        Some(Message::HsmdInitReplyV4(_))
    ));
    let cid = home.cid();
    let token = broker.api_token();
    let node = home.node_secret();

    // Authentication.
    assert_eq!(broker.http("GET", "/api/signers", None, "").0, 401);
    assert_eq!(broker.http("GET", "/api/signers", Some("wrong"), "").0, 401);
    let (status, body) = broker.http("GET", "/api/signers", Some(&token), "");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list["signers"][0]["cid"], cid.as_str());
    assert_eq!(list["signers"][0]["state"], "ready");
    assert_eq!(list["signers"][0]["current"], true);
    let update = ControlMessage::UpdateAllowlist(vec![payee(1)]);
    assert_eq!(
        broker
            .http(
                "POST",
                &format!("/api/control/{cid}"),
                None,
                &hex::encode(control::sign(&update, 1, &node))
            )
            .0,
        401
    );

    // An update: answered after it is stored.
    let (status, answer) = send(&broker, &cid, &token, &update, 1, &node);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["AllowlistUpdated"][0], payee(1).as_str());
    // Replayed, forged, garbage, unknown signer.
    let (_, replay) = send(&broker, &cid, &token, &update, 1, &node);
    assert!(
        replay["response"]["Error"]
            .as_str()
            .is_some_and(|e| e.contains("nonce")),
        "{replay}"
    );
    let (_, forged) = send(&broker, &cid, &token, &update, 2, &key(99));
    assert!(
        forged["response"]["Error"]
            .as_str()
            .is_some_and(|e| e.contains("not signed")),
        "{forged}"
    );
    assert_eq!(
        broker
            .http("POST", &format!("/api/control/{cid}"), Some(&token), "zz")
            .0,
        400
    );
    let other = hex::encode([7u8; 16]);
    assert_eq!(send(&broker, &other, &token, &update, 2, &node).0, 409);

    // The error stream reports a signer's refusal.
    let mut events =
        std::net::TcpStream::connect(("127.0.0.1", broker.http_port)).expect("connect");
    write!(
        events,
        "GET /api/errors HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("send");
    // Subscribed once the stream's headers arrive (one reader throughout).
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut lines = BufReader::new(events).lines();
    let status = lines.next().expect("a status line").expect("read");
    assert!(status.contains("200"), "{status}");
    let mut channel = broker
        .master
        .client(key(9).public_key(&Secp256k1::new()).serialize(), 5);
    channel.send(&msgs::CheckFutureSecret {
        commitment_number: 1,
        secret: DisclosedSecret([7; 32]),
    });
    assert!(channel.recv().is_none());
    let data = loop {
        let line = lines.next().expect("an event").expect("read");
        if let Some(data) = line.strip_prefix("data: ") {
            break data.to_string();
        }
    };
    let error: serde_json::Value = serde_json::from_str(&data).expect("json");
    assert_eq!(error["cid"], cid.as_str());
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("CheckFutureSecret")),
        "{error}"
    );

    // The change and the nonce are in LSS: a signer rebuilt from LSS alone
    // still has the allowlist and still refuses the replay.
    signer.kill();
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let _signer = home.start_lss(&broker.url(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let current = loop {
        let (status, answer) = send(
            &broker,
            &cid,
            &token,
            &ControlMessage::QueryAllowlist,
            2,
            &node,
        );
        if status == 200 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "signer not back: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        current["response"]["AllowlistCurrent"][0],
        payee(1).as_str(),
        "{current}"
    );
    let (_, replay) = send(&broker, &cid, &token, &update, 1, &node);
    assert!(replay["response"]["Error"].is_string(), "{replay}");
}
