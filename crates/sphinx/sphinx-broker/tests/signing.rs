//! End to end: fake lightningd → broker (a real process on fd 3) → MQTT →
//! signer (a real process on VLS) → back, with every reply checked
//! cryptographically against the signer's seed.

mod driver;

use std::time::Duration;

use driver::checks::{exercise, key, started};
use driver::Hsmd;
use secp256k1::ecdh::SharedSecret;
use secp256k1::Secp256k1;
use sphinx_signer::Network;
use vls_protocol::model::PubKey;
use vls_protocol::msgs::{self, Message};

#[test]
fn cln_init_and_signing_over_the_embedded_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, home, _signer, init) = started(dir.path());
    exercise(&mut broker.master, &home, &init);

    // Eight client connections at once, each checked.
    let peers: Vec<Hsmd> = (0..8u8)
        .map(|i| {
            broker
                .master
                .client(key(20 + i).public_key(&Secp256k1::new()).serialize(), 0)
        })
        .collect();
    let threads: Vec<_> = peers
        .into_iter()
        .enumerate()
        .map(|(i, mut hsmd)| {
            let seed = home.seed;
            std::thread::spawn(move || {
                let node = sphinx_signer::run::node_key(Network::Regtest, &seed).0;
                for round in 0..10u8 {
                    let other = key(100 + i as u8 + round);
                    let point = PubKey(other.public_key(&Secp256k1::new()).serialize());
                    let Message::EcdhReply(r) = hsmd.call(&msgs::Ecdh { point }) else {
                        panic!("not ECDH");
                    };
                    assert_eq!(r.secret.0, SharedSecret::new(&node, &other).secret_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }

    // lightningd closing fd 3 stops the broker cleanly.
    let broker_proc = &mut broker.proc;
    drop(std::mem::replace(
        &mut broker.master,
        Hsmd::new(std::os::unix::net::UnixStream::pair().expect("pair").0),
    ));
    let status = broker_proc
        .wait_exit(Duration::from_secs(10))
        .expect("broker exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_signer_restarts_and_reconnects_without_losing_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, home, mut signer, _init) = started(dir.path());
    let peer = key(9).public_key(&Secp256k1::new()).serialize();
    assert!(matches!(
        broker.master.call(&msgs::NewChannel {
            peer_id: PubKey(peer),
            dbid: 1
        }),
        Message::NewChannelReply(_)
    ));
    signer.kill();
    // A request while no signer is up waits for one.
    let other = key(3);
    broker.master.send(&msgs::Ecdh {
        point: PubKey(other.public_key(&Secp256k1::new()).serialize()),
    });
    broker.proc.wait_log("queued until a signer is ready");
    let _signer = home.start(&broker.url(), &[]);
    let Some(Message::EcdhReply(r)) = broker.master.recv() else {
        panic!("no ECDH reply after the signer came back");
    };
    assert_eq!(
        r.secret.0,
        SharedSecret::new(&home.node_id(), &other).secret_bytes()
    );
    // The channel created before the restart is still known to the signer.
    let mut channel = broker.master.client(peer, 1);
    assert!(matches!(
        channel.call(&msgs::GetPerCommitmentPoint {
            commitment_number: 0
        }),
        Message::GetPerCommitmentPointReply(_)
    ));
}

#[test]
fn signing_over_tls_to_the_embedded_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = lk_testkit::pki::Ca::new("mqtt test CA");
    let server = ca.server(&["127.0.0.1", "localhost"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf8").to_string()
    };
    let (cert, tls_key, ca_pem) = (
        write("cert.pem", &server.cert),
        write("key.pem", &server.key),
        write("ca.pem", &ca.cert_pem()),
    );
    let other_ca = write(
        "other-ca.pem",
        &lk_testkit::pki::Ca::new("another CA").cert_pem(),
    );
    let home = driver::SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    let mut broker = driver::Broker::start(
        dir.path(),
        &[
            "--owner",
            &owner,
            "--mqtt-tls-cert",
            &cert,
            "--mqtt-tls-key",
            &tls_key,
        ],
    );
    broker.master.send(&driver::hsmd_init(Network::Regtest));
    let url = format!("mqtts://127.0.0.1:{}", broker.mqtt_port);
    // A signer that does not trust the broker's CA, and one speaking
    // plaintext to the TLS port, never get to answer.
    let untrusting = home.start(&url, &["--mqtt-ca", &other_ca]);
    let plaintext = home.start(&broker.url(), &[]);
    // Both have been turned away (each retries, each attempt is logged).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while broker
        .proc
        .log_text()
        .matches("MQTT connection closed")
        .count()
        < 4
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            broker.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((untrusting, plaintext));
    assert!(
        !broker.proc.log_text().contains("signer ready"),
        "{}",
        broker.proc.log_text()
    );
    let _signer = home.start(&url, &["--mqtt-ca", &ca_pem]);
    let Some(Message::HsmdInitReplyV4(init)) = broker.master.recv() else {
        panic!("no init reply over TLS");
    };
    assert_eq!(init.node_id.0, home.node_id().serialize());
    exercise(&mut broker.master, &home, &init);
}

#[test]
fn a_reply_lost_with_the_connection_is_answered_from_the_signers_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = driver::SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    let mut broker = driver::Broker::start(dir.path(), &["--owner", &owner]);
    let target = format!("127.0.0.1:{}", broker.mqtt_port)
        .parse()
        .expect("addr");
    let proxy = rt.block_on(lk_testkit::net::FaultProxy::start(target));
    broker.master.send(&driver::hsmd_init(Network::Regtest));
    let mut signer = home.start(&format!("mqtt://{}", proxy.addr), &[]);
    assert!(matches!(
        broker.master.recv(),
        Some(Message::HsmdInitReplyV4(_))
    ));

    // The signer signs, but its reply dies with its MQTT connection.
    proxy.drop_next(format!("{}/vls-res", home.cid()).as_bytes());
    let other = key(3);
    let point = PubKey(other.public_key(&Secp256k1::new()).serialize());
    let Message::EcdhReply(r) = broker.master.call(&msgs::Ecdh { point }) else {
        panic!("no ECDH reply after the reconnect");
    };
    assert_eq!(
        r.secret.0,
        SharedSecret::new(&home.node_id(), &other).secret_bytes()
    );
    assert_eq!(
        proxy.pattern_cuts(),
        1,
        "the reply was dropped and the connection cut"
    );
    // Same process (reconnected, not restarted), and the resent request was
    // answered from its cache rather than signed again.
    assert!(
        signer.child.try_wait().expect("status").is_none(),
        "signer still running"
    );
    let log = signer.log_text();
    assert!(
        log.contains("duplicate request answered from the cache"),
        "{log}"
    );
    assert!(log.matches("connected to the broker").count() >= 2, "{log}");
    signer.kill();
}

#[test]
fn a_repeated_preapproval_is_answered_by_the_broker_within_a_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = driver::SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    let mut broker = driver::Broker::start(
        dir.path(),
        &["--owner", &owner, "--request-timeout-secs", "2"],
    );
    broker.master.send(&driver::hsmd_init(Network::Regtest));
    let mut signer = home.start(&broker.url(), &[]);
    assert!(matches!(
        broker.master.recv(),
        Some(Message::HsmdInitReplyV4(_))
    ));
    let mut client = broker.master.client_with(
        key(9).public_key(&Secp256k1::new()).serialize(),
        0,
        driver::MASTER,
    );
    let keysend = |amount_msat: u64| msgs::PreapproveKeysend {
        destination: PubKey(key(8).public_key(&Secp256k1::new()).serialize()),
        // One payment per amount.
        payment_hash: vls_protocol::model::Sha256(
            <sha2::Sha256 as sha2::Digest>::digest(amount_msat.to_be_bytes()).into(),
        ),
        amount_msat,
    };
    // Without a policy the signer approves no payment (and nothing is
    // cached); the operator sets one through the control API.
    let Message::PreapproveKeysendReply(refused) = client.call(&keysend(10_000)) else {
        panic!("not a preapproval reply");
    };
    assert!(!refused.result, "no policy, no payments");
    let Message::PreapproveKeysendReply(refused) = client.call(&keysend(11_000)) else {
        panic!("not a preapproval reply");
    };
    assert!(!refused.result);
    let policy = sphinx_wire::control::ControlMessage::UpdatePolicy(sphinx_wire::control::Policy {
        msat_per_interval: 1_000_000,
        interval: sphinx_wire::control::Interval::Daily,
        htlc_limit_msat: 1_000_000,
    });
    let body = hex::encode(sphinx_wire::control::sign(&policy, 1, &home.node_secret()));
    let (status, answer) = broker.http(
        "POST",
        &format!("/api/control/{}", home.cid()),
        Some(&broker.api_token()),
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("PolicyUpdated"), "{answer}");
    let Message::PreapproveKeysendReply(first) = client.call(&keysend(12_000)) else {
        panic!("not a preapproval reply");
    };
    assert!(first.result, "within the policy's limit");
    // Beyond the limit: refused.
    let Message::PreapproveKeysendReply(big) = client.call(&keysend(5_000_000)) else {
        panic!("not a preapproval reply");
    };
    assert!(!big.result, "beyond the policy's limit");
    // Without a signer, the byte-identical repeat is still answered...
    signer.kill();
    let Message::PreapproveKeysendReply(again) = client.call(&keysend(12_000)) else {
        panic!("not a preapproval reply");
    };
    assert!(again.result);
    // ...and anything else waits for a signer, here until the deadline.
    client.send(&keysend(20_000));
    assert!(
        client.recv().is_none(),
        "no signer: the connection is closed at the deadline"
    );
}
