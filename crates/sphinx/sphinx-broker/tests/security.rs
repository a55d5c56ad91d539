//! Hostile signers, hostile MQTT clients, hostile hsmd input: refused, ignored
//! or isolated, never a crash and never a wrong reply to CLN.

mod driver;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driver::{hsmd_init, Broker, SignerHome};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
use secp256k1::{PublicKey, Secp256k1, SecretKey};
use sphinx_signer::Network;
use sphinx_wire::hsmd::Frame;
use sphinx_wire::serial;
use vls_protocol::model::{DisclosedSecret, PubKey};
use vls_protocol::msgs::{self, Message, SerBolt};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// An MQTT client logging in as `cid` with a token made for `cid` at
/// `timestamp_ms`.
fn mqtt(port: u16, cid: &str, secret: &SecretKey, timestamp_ms: u64) -> (AsyncClient, EventLoop) {
    let token = sphinx_wire::login::password(secret, cid, timestamp_ms);
    mqtt_with(port, cid, secret, token)
}

/// An MQTT client logging in as `cid` with exactly `token`.
fn mqtt_with(port: u16, cid: &str, secret: &SecretKey, token: String) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(cid, "127.0.0.1", port);
    let user = secret.public_key(&Secp256k1::new()).to_string();
    options.set_credentials(user, token);
    options.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(options, 512)
}

async fn connack(events: &mut EventLoop) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack)))
                    if ack.code == ConnectReturnCode::Success =>
                {
                    return Ok(())
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("an answer in time")
}

async fn next_suback(events: &mut EventLoop) -> Vec<SubscribeReasonCode> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => return ack.return_codes,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    panic!("received {} it may not read", p.topic)
                }
                Ok(_) => {}
                Err(e) => panic!("connection error: {e}"),
            }
        }
    })
    .await
    .expect("in time")
}

async fn closed(events: &mut EventLoop) -> bool {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if events.poll().await.is_err() {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn cid(byte: u8) -> String {
    hex::encode([byte; 16])
}

#[test]
fn a_broker_without_an_owner_does_not_start() {
    // No trust on first use: whoever connected first used to become the
    // node's signer.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), &[]);
    broker.proc.fails_with("--owner");
    assert!(!broker.data_dir.join("owner").exists(), "nothing pinned");
}

#[test]
fn stale_foreign_replayed_rebound_and_malformed_logins_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, home, _signer, _init) = driver::checks::started(dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let owner = home.node_secret();
    let stranger = SecretKey::from_slice(&[42; 32]).expect("key");
    let port = broker.mqtt_port;
    rt.block_on(async {
        // A token an hour old, and one from the future.
        let (_c, mut e) = mqtt(port, &cid(1), &owner, now() - 3_600_000);
        let err = connack(&mut e).await.expect_err("stale token");
        assert!(err.contains("BadUserNamePassword"), "{err}");
        let (_c, mut e) = mqtt(port, &cid(1), &owner, now() + 3_600_000);
        assert!(connack(&mut e).await.is_err(), "future token");
        // A client id that is not a signer id.
        let (_c, mut e) = mqtt(port, "not-a-cid", &owner, now());
        assert!(connack(&mut e).await.is_err(), "bad client id");
        // Username of one key, token of another.
        let mut options = MqttOptions::new(cid(1), "127.0.0.1", port);
        options.set_credentials(
            home.node_id().to_string(),
            sphinx_wire::login::password(&stranger, &cid(1), now()),
        );
        let (_c, mut e) = AsyncClient::new(options, 8);
        assert!(connack(&mut e).await.is_err(), "mismatched key");
        // Garbage password.
        let mut options = MqttOptions::new(cid(1), "127.0.0.1", port);
        options.set_credentials(home.node_id().to_string(), "AAAA");
        let (_c, mut e) = AsyncClient::new(options, 8);
        assert!(connack(&mut e).await.is_err(), "garbage token");
        // A stranger with a perfectly fresh token is not authorised.
        let (_c, mut e) = mqtt(port, &cid(2), &stranger, now());
        let err = connack(&mut e).await.expect_err("not the owner");
        assert!(err.contains("NotAuthorized"), "{err}");

        // A token the owner's signer used (captured on the wire): replayed
        // under another client id, and under its own, within the window.
        let captured = sphinx_wire::login::password(&owner, &cid(3), now());
        let (_c, mut e) = mqtt_with(port, &cid(3), &owner, captured.clone());
        connack(&mut e).await.expect("the signer's own login");
        let (_c, mut e) = mqtt_with(port, &cid(4), &owner, captured.clone());
        let err = connack(&mut e)
            .await
            .expect_err("replayed under another cid");
        assert!(err.contains("BadUserNamePassword"), "{err}");
        let (_c, mut e) = mqtt_with(port, &cid(3), &owner, captured);
        assert!(connack(&mut e).await.is_err(), "replayed under its own cid");
        // What hsmd's SignMessage over a 4-byte timestamp would give the
        // node host (sphinx-key's token form): refused without compat.
        let compat = sphinx_wire::login::compat_password(&owner, (now() / 1000) as u32);
        let (_c, mut e) = mqtt_with(port, &cid(5), &owner, compat);
        assert!(connack(&mut e).await.is_err(), "sphinx-key token form");
    });
    // The control API shows only the real signer, as the current one.
    let (status, body) = broker.http("GET", "/api/signers", Some(&broker.api_token()), "");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    let list = list["signers"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["cid"], home.cid().as_str());
    assert_eq!(list[0]["current"], true);
    let pinned =
        std::fs::read_to_string(broker.data_dir.join("owner")).expect("owner pinned on disk");
    assert_eq!(pinned.trim(), home.node_id().to_string());
}

/// Hole 1 of the remote-signer audit: the node host asks hsmd's
/// SignMessage for the node key's signature over a control message body and
/// posts the result to the control API as the operator's command.
#[test]
fn signmessage_cannot_be_turned_into_a_control_message() {
    use sphinx_wire::control::{self, ControlMessage};
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, home, _signer, _init) = driver::checks::started(dir.path());
    let attacker = format!(
        "payee:{}",
        SecretKey::from_slice(&[66; 32])
            .expect("key")
            .public_key(&Secp256k1::new())
    );
    let update = ControlMessage::UpdateAllowlist(vec![attacker]);
    // What SignMessage used to hand out, shaped as a control message (the
    // signature bytes reordered as sphinx-key's envelope has them).
    let forged = control::sign_compat(&update, 1, &home.node_secret());
    let (status, body) = broker.http(
        "POST",
        &format!("/api/control/{}", home.cid()),
        Some(&broker.api_token()),
        &hex::encode(&forged),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("not signed by the node key"), "{body}");
    assert!(!body.contains("AllowlistUpdated"), "{body}");
    // And SignMessage no longer signs such a body: the request is refused
    // (on fd 3 that ends the broker, as any refused master request does).
    let mut message = control::encode(&update);
    message.extend_from_slice(&2u64.to_be_bytes());
    broker.master.send(&msgs::SignMessage {
        message: message.into(),
    });
    assert!(
        broker.master.recv().is_none(),
        "no signature for a control message body"
    );
    broker
        .proc
        .fails_with("shape of a signer login token or control message");
}

/// Hole 8: a subdaemon compromised through its peer asks for more than its
/// `ClientHsmFd` capabilities allow. CLN's hsmd refuses; so must the broker.
#[test]
fn a_subdaemon_gets_only_what_its_capabilities_allow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, home, _signer, _init) = driver::checks::started(dir.path());
    let peer = SecretKey::from_slice(&[9; 32])
        .expect("key")
        .public_key(&Secp256k1::new())
        .serialize();
    let point = || PubKey(peer);
    let sign_message = msgs::SignMessage {
        message: b"pay the attacker".to_vec().into(),
    };
    // Capabilities 0: not even ECDH.
    let mut nothing = broker.master.client_with(peer, 0, 0);
    nothing.send(&msgs::Ecdh { point: point() });
    assert!(nothing.recv().is_none(), "ECDH without its bit: closed");
    // connectd (ECDH only) asking for a node-key signature or a channel.
    let caps = sphinx_wire::capabilities::ECDH;
    let mut connectd = broker.master.client_with(peer, 0, caps);
    assert!(matches!(
        connectd.call(&msgs::Ecdh { point: point() }),
        Message::EcdhReply(_)
    ));
    connectd.send(&sign_message);
    assert!(connectd.recv().is_none(), "SignMessage refused");
    let mut connectd = broker.master.client_with(peer, 0, caps);
    connectd.send(&msgs::NewChannel {
        peer_id: point(),
        dbid: 3,
    });
    assert!(connectd.recv().is_none(), "NewChannel refused");
    // channeld with every subdaemon capability, still not lightningd's.
    let mut channeld = broker.master.client(peer, 7);
    channeld.send(&sign_message);
    assert!(channeld.recv().is_none(), "SignMessage needs MASTER");
    // Each refusal is logged (the line may land just after the close).
    broker.proc.wait_log("may not send SignMessage");
    broker.proc.wait_log("may not send NewChannel");
    // lightningd's own connection is unaffected.
    driver::checks::ecdh(&mut broker.master, &home, 80);
    assert!(matches!(
        broker.master.call(&sign_message),
        Message::SignMessageReply(_)
    ));
}

#[test]
fn another_client_can_neither_read_nor_forge_a_signers_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, home, _signer, _init) = driver::checks::started(dir.path());
    let real = home.cid();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A second client with a valid login (the owner's key, its own cid).
    let (rogue, mut events) = rt.block_on(async {
        let (c, mut e) = mqtt(broker.mqtt_port, &cid(7), &home.node_secret(), now());
        connack(&mut e).await.expect("login");
        (c, e)
    });
    rt.block_on(async {
        for filter in [
            format!("{real}/vls"),
            "+/vls".to_string(),
            "#".to_string(),
            format!("{real}/#"),
        ] {
            rogue
                .subscribe(filter.clone(), QoS::AtMostOnce)
                .await
                .expect("queue");
            assert_eq!(
                next_suback(&mut events).await,
                [SubscribeReasonCode::Failure],
                "{filter}"
            );
        }
        // Forged replies on its own topic, for every likely sequence
        // number, and garbage on every signer topic it may use.
        for seq in 0..64u16 {
            let forged = serial::Response {
                seq,
                frame: Frame::from_message(
                    &msgs::EcdhReply {
                        secret: vls_protocol::model::Secret([0xee; 32]),
                    }
                    .as_vec(),
                )
                .expect("frame"),
            };
            rogue
                .publish(
                    format!("{}/vls-res", cid(7)),
                    QoS::AtMostOnce,
                    false,
                    forged.encode().expect("encode"),
                )
                .await
                .expect("queue");
        }
        for suffix in [
            "vls-res",
            "init-3-res",
            "error",
            "lss-res",
            "control-res",
            "init-1-res",
        ] {
            for garbage in [vec![], vec![0x5a, 0xa5], vec![0xff; 300]] {
                rogue
                    .publish(
                        format!("{}/{suffix}", cid(7)),
                        QoS::AtMostOnce,
                        false,
                        garbage,
                    )
                    .await
                    .expect("queue");
            }
        }
        tokio::time::timeout(Duration::from_millis(500), async {
            while events.poll().await.is_ok() {}
        })
        .await
        .ok();
    });
    // CLN still gets the real signer's answers, not the forgeries.
    for i in 0..5u8 {
        driver::checks::ecdh(&mut broker.master, &home, 50 + i);
    }
    // Publishing on the real signer's topic gets the rogue disconnected.
    rt.block_on(async {
        rogue
            .publish(
                format!("{real}/vls-res"),
                QoS::AtMostOnce,
                false,
                vec![0x5a, 0xa5, 0, 1],
            )
            .await
            .expect("queue");
        assert!(
            closed(&mut events).await,
            "disconnected for publishing on another signer's topic"
        );
    });
    assert!(
        broker.proc.child.try_wait().expect("status").is_none(),
        "broker still running"
    );
}

#[test]
fn malformed_hsmd_input_closes_only_its_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, home, _signer, _init) = driver::checks::started(dir.path());
    let peer = SecretKey::from_slice(&[9; 32])
        .expect("key")
        .public_key(&Secp256k1::new())
        .serialize();
    let cases: Vec<Vec<u8>> = vec![
        0u32.to_be_bytes().to_vec(),                             // length 0
        1u32.to_be_bytes().to_vec(),                             // length 1
        (1u32 << 20).to_be_bytes().to_vec(),                     // 1 MiB, over the limit
        [&6u32.to_be_bytes()[..], &[0, 1, 2]].concat(),          // truncated, then closed
        [&4u32.to_be_bytes()[..], &[0x10, 0x92, 1, 2]].concat(), // unknown type 4242
        [&4u32.to_be_bytes()[..], &[0, 1, 2, 3]].concat(),       // Ecdh with a short body
        [&2u32.to_be_bytes()[..], &[0, 11]].concat(),            // HsmdInit on a client fd
        [&2u32.to_be_bytes()[..], &[0, 9]].concat(),             // ClientHsmFd on a client fd
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut client = broker.master.client(peer, 0);
        std::io::Write::write_all(&mut client.stream, case).expect("write");
        if i == 3 {
            client
                .stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
        }
        assert!(
            client.recv().is_none(),
            "case {i}: the connection is closed"
        );
        // The node's own connection is unaffected.
        driver::checks::ecdh(&mut broker.master, &home, 60 + i as u8);
    }
    // A request the signer refuses (a channel that was never set up) ends
    // that connection instead of hanging it.
    let mut channel = broker.master.client(peer, 5);
    channel.send(&msgs::CheckFutureSecret {
        commitment_number: 1,
        secret: DisclosedSecret([7; 32]),
    });
    assert!(channel.recv().is_none());
    // Logged loudly (the line may land just after the close).
    broker.proc.wait_log("refused the request");
    // Garbage on fd 3 itself ends the broker, with an error.
    std::io::Write::write_all(&mut broker.master.stream, &(1u32 << 24).to_be_bytes())
        .expect("write");
    broker.proc.fails_with("bad hsmd frame");
}

#[test]
fn a_request_without_a_signer_fails_at_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    let mut broker = Broker::start(
        dir.path(),
        &["--owner", &owner, "--request-timeout-secs", "2"],
    );
    broker.master.send(&hsmd_init(Network::Regtest));
    let mut signer = home.start(&broker.url(), &[]);
    assert!(matches!(
        broker.master.recv(),
        Some(Message::HsmdInitReplyV4(_))
    ));
    let peer = SecretKey::from_slice(&[9; 32])
        .expect("key")
        .public_key(&Secp256k1::new())
        .serialize();
    let mut client = broker.master.client(peer, 0);
    signer.kill();
    let point = PubKey(
        PublicKey::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[3; 32]).expect("key"),
        )
        .serialize(),
    );
    let started = std::time::Instant::now();
    client.send(&msgs::Ecdh {
        point: point.clone(),
    });
    assert!(client.recv().is_none(), "the client connection is closed");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // On lightningd's own connection the broker exits, saying why.
    broker.master.send(&msgs::Ecdh { point });
    broker.proc.fails_with("no reply from a signer within");
}
