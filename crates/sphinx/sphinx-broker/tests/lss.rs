//! The seed's LSS flow end to end, with real processes: fake lightningd →
//! broker → MQTT → signer → broker → `lssd`. Every change is stored and
//! acknowledged (server MAC checked by the signer) before the reply.

mod driver;

use std::path::Path;
use std::time::Duration;

use driver::checks::{ecdh, exercise, key, knows_channel, lss_broker, new_channel, peer};
use driver::{hsmd_init, lssd_binary, Broker, Proc, SignerHome};
use lk_testkit::process::LssdProcess;
use secp256k1::Secp256k1;
use sphinx_signer::Network;
use vls_protocol::model::PubKey;
use vls_protocol::msgs::{self, Message};

fn lssd(dir: &Path, port: u16) -> LssdProcess {
    let data = dir.join("lssd");
    let listen = format!("127.0.0.1:{port}");
    LssdProcess::spawn(
        &lssd_binary(),
        &[
            "--data-dir",
            data.to_str().expect("utf8"),
            "--listen",
            &listen,
        ],
    )
    .expect("start lssd")
}

fn init_reply(broker: &mut Broker, home: &SignerHome) -> msgs::HsmdInitReplyV4 {
    let Some(Message::HsmdInitReplyV4(init)) = broker.master.recv() else {
        panic!("no init reply: broker log:\n{}", broker.proc.log_text());
    };
    assert_eq!(init.node_id.0, home.node_id().serialize());
    init
}

fn log_has(proc: &Proc, text: &str) -> bool {
    proc.log_text().contains(text)
}

#[test]
fn init_on_an_empty_lss_restart_and_restore_from_lss_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path(), driver::free_port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &lss.url, &home, &[]);
    let mut signer = home.start_lss(&broker.url(), &[]);
    let init = init_reply(&mut broker, &home);
    exercise(&mut broker.master, &home, &init);
    new_channel(&mut broker.master, 2);

    // Restart with its state.
    signer.kill();
    let mut signer = home.start_lss(&broker.url(), &[]);
    knows_channel(&mut broker.master, 2);
    ecdh(&mut broker.master, &home, 11);

    // Delete the local store: everything comes back from LSS alone, under
    // the same node id.
    signer.kill();
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let signer = home.start_lss(&broker.url(), &[]);
    knows_channel(&mut broker.master, 2);
    knows_channel(&mut broker.master, 1);
    ecdh(&mut broker.master, &home, 12);
    assert!(
        log_has(&signer, "local store brought forward from LSS"),
        "{}",
        signer.log_text()
    );
}

#[test]
fn a_local_store_ahead_of_lss_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    // State made without LSS (a --no-lss broker): the local store has
    // changes LSS never saw.
    {
        std::fs::create_dir_all(dir.path().join("plain")).expect("mkdir");
        let mut plain = Broker::start(
            &dir.path().join("plain"),
            &["--owner", &home.node_id().to_string()],
        );
        plain.master.send(&hsmd_init(Network::Regtest));
        let _signer = home.start(&plain.url(), &[]);
        let _ = init_reply(&mut plain, &home);
        new_channel(&mut plain.master, 1);
    }
    let lss = lssd(dir.path(), driver::free_port());
    let broker = lss_broker(
        dir.path(),
        &lss.url,
        &home,
        &["--request-timeout-secs", "5"],
    );
    let signer = home.start_lss(&broker.url(), &[]);
    signer.wait_log("ahead of LSS");
    assert!(
        !log_has(&broker.proc, "signer ready"),
        "{}",
        broker.proc.log_text()
    );
}

#[test]
fn lssd_down_during_requests_holds_the_reply_until_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = driver::free_port();
    let lss = lssd(dir.path(), port);
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &lss.url, &home, &[]);
    let _signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    lss.kill();
    // A change while LSS is down: the reply waits.
    broker.master.send(&msgs::NewChannel {
        peer_id: PubKey(peer()),
        dbid: 3,
    });
    broker.proc.wait_log("LSS call failed; retrying");
    let _lss = lssd(dir.path(), port);
    let reply = broker.master.recv().expect("a reply once LSS is back");
    assert!(matches!(reply, Message::NewChannelReply(_)), "{reply:?}");
    assert!(
        log_has(&broker.proc, "LSS call failed; retrying"),
        "{}",
        broker.proc.log_text()
    );
    // And it is in LSS: a signer without local state knows it.
    drop(_signer);
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let _signer = home.start_lss(&broker.url(), &[]);
    knows_channel(&mut broker.master, 3);
}

#[test]
fn mutations_lost_with_the_mqtt_connection_are_redone_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lss = lssd(dir.path(), driver::free_port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &lss.url, &home, &[]);
    let target = format!("127.0.0.1:{}", broker.mqtt_port)
        .parse()
        .expect("addr");
    let proxy = rt.block_on(lk_testkit::net::FaultProxy::start(target));
    let signer = home.start_lss(&format!("mqtt://{}", proxy.addr), &[]);
    let _ = init_reply(&mut broker, &home);
    // The signer's changes for a new channel die with its connection.
    proxy.drop_next(format!("{}/lss-res", home.cid()).as_bytes());
    new_channel(&mut broker.master, 4);
    assert_eq!(proxy.pattern_cuts(), 1);
    // Its reply after a stored acknowledgement dies too: answered from the
    // cache after the resync.
    proxy.drop_next(format!("{}/vls-res", home.cid()).as_bytes());
    new_channel(&mut broker.master, 5);
    assert_eq!(proxy.pattern_cuts(), 2);
    assert!(
        log_has(&signer, "duplicate request answered from the cache"),
        "{}",
        signer.log_text()
    );
    drop(signer);
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let _signer = home.start_lss(&broker.url(), &[]);
    knows_channel(&mut broker.master, 4);
    knows_channel(&mut broker.master, 5);
}

#[test]
fn two_signers_for_one_node_resolve_conflicts_through_lss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path(), driver::free_port());
    let first = SignerHome::create(&dir.path().join("first"));
    // The second signer: same seed, its own id and store.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).expect("mkdir");
    std::fs::copy(first.dir.join("seed"), second_dir.join("seed")).expect("copy seed");
    let second = SignerHome {
        dir: second_dir,
        seed: first.seed,
    };
    let mut broker = lss_broker(dir.path(), &lss.url, &first, &[]);
    let mut a = first.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &first);
    new_channel(&mut broker.master, 6);
    // The second signer connects and becomes the current one; it writes.
    let b = second.start_lss(&broker.url(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while broker.proc.log_text().matches("signer ready").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            broker.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    new_channel(&mut broker.master, 7);
    // Back to the first: its local state is stale; LSS refuses its write,
    // it resyncs, and the request succeeds on fresh state.
    drop(b);
    new_channel(&mut broker.master, 8);
    assert!(
        log_has(&broker.proc, "LSS conflict"),
        "{}",
        broker.proc.log_text()
    );
    assert!(log_has(&a, "LSS refused our changes"), "{}", a.log_text());
    for dbid in [6, 7, 8] {
        knows_channel(&mut broker.master, dbid);
    }
    a.kill();
}

#[test]
fn a_tampered_server_mac_is_caught_and_the_reply_withheld() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lss = lssd(dir.path(), driver::free_port());
    let proxy = rt.block_on(lk_testkit::net::FaultProxy::start(lss.addr));
    let home = SignerHome::create(&dir.path().join("signer"));
    let url = format!("http://{}", proxy.addr);
    let mut broker = lss_broker(dir.path(), &url, &home, &["--request-timeout-secs", "5"]);
    let signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    // A successful PutReply: gRPC prefix (36 bytes), success = true, then
    // the 32-byte MAC; its first byte is flipped on the way to the broker.
    proxy.tamper_next(&[0, 0, 0, 0, 0x24, 0x08, 0x01, 0x12, 0x20]);
    let mut client = broker.master.client_with(peer(), 0, driver::MASTER);
    client.send(&msgs::NewChannel {
        peer_id: PubKey(peer()),
        dbid: 9,
    });
    assert!(
        client.recv().is_none(),
        "the reply is withheld and the connection closed"
    );
    assert!(
        log_has(&signer, "LSS MAC mismatch"),
        "{}",
        signer.log_text()
    );
    assert!(
        log_has(&broker.proc, "LSS MAC mismatch"),
        "{}",
        broker.proc.log_text()
    );
}

#[test]
fn a_broker_restart_resumes_with_the_signer_still_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path(), driver::free_port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &lss.url, &home, &[]);
    let port = broker.mqtt_port;
    let mut signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    new_channel(&mut broker.master, 10);
    // CLN restarts, and with it the broker (same data dir, same port); the
    // signer process stays up and reconnects.
    broker.proc.kill();
    drop(broker);
    let owner = home.node_id().to_string();
    let mut broker = Broker::start_on(
        dir.path(),
        port,
        &["--lss-url", &lss.url, "--owner", &owner],
    );
    broker.master.send(&hsmd_init(Network::Regtest));
    let _ = init_reply(&mut broker, &home);
    knows_channel(&mut broker.master, 10);
    new_channel(&mut broker.master, 11);
    assert!(
        signer.child.try_wait().expect("status").is_none(),
        "the signer never restarted"
    );
    signer.kill();
    // Both changes are in LSS.
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let _signer = home.start_lss(&broker.url(), &[]);
    knows_channel(&mut broker.master, 10);
    knows_channel(&mut broker.master, 11);
}

#[test]
fn lss_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = lk_testkit::pki::Ca::new("lss test CA");
    let server = ca.server(&["localhost"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf8").to_string()
    };
    let (cert, tls_key, ca_pem) = (
        write("lss.pem", &server.cert),
        write("lss.key", &server.key),
        write("lss-ca.pem", &ca.cert_pem()),
    );
    let data = dir.path().join("lssd");
    let lss = LssdProcess::spawn(
        &lssd_binary(),
        &[
            "--data-dir",
            data.to_str().expect("utf8"),
            "--tls-cert",
            &cert,
            "--tls-key",
            &tls_key,
        ],
    )
    .expect("lssd with TLS");
    let url = format!("https://localhost:{}", lss.addr.port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &url, &home, &["--lss-ca", &ca_pem]);
    let _signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    new_channel(&mut broker.master, 12);
    knows_channel(&mut broker.master, 12);
}

/// Adds `pieces` MiB of keys VLS does not use to the signer's namespace,
/// written as the signer would (its client id, token and MAC); with 0, reads
/// the namespace and returns its largest value's size.
fn pad_state(lss_url: &str, home: &SignerHome, pieces: u8) -> usize {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let options = lss_client::ConnectOptions::new(lss_url.to_string());
        let mut grpc = lss_client::connect_channel(&options)
            .await
            .expect("connect");
        let server = lss_client::info(&mut grpc).await.expect("info").server_id;
        let server =
            vls_protocol_signer::lightning_signer::bitcoin::secp256k1::PublicKey::from_slice(
                &server.serialize(),
            )
            .expect("key");
        let creds = sphinx_signer::core::lss_credentials(Network::Regtest, &home.seed, &server);
        if pieces == 0 {
            let id = lss_core::ClientId::parse(&creds.client_id).expect("id");
            let client = lss_client::Client::connect(&options, id, lss_core::Token(creds.token));
            let (kvs, _) = client
                .await
                .expect("client")
                .get("", &[0; 32])
                .await
                .expect("get");
            return kvs.iter().map(|kv| kv.value.len()).max().unwrap_or(0);
        }
        let muts: Vec<(String, (u64, Vec<u8>))> = (0..pieces)
            .map(|i| (format!("zz-padding/{i}"), (0, vec![i; 1 << 20])))
            .collect();
        let kvs = muts
            .iter()
            .map(|(k, (v, value))| lss_core::KeyValue::new(k.clone(), *v as i64, value.clone()))
            .collect();
        let id = lss_core::ClientId::parse(&creds.client_id).expect("id");
        let mut client = lss_client::Client::connect(&options, id, lss_core::Token(creds.token))
            .await
            .expect("client");
        let mac = creds.client_mac(&muts).expect("mac");
        client.put(kvs, &mac).await.expect("stored");
        0
    })
}

/// The largest value the signer has in LSS.
fn largest_value(lss_url: &str, home: &SignerHome) -> usize {
    pad_state(lss_url, home, 0)
}

/// Hole 5: the whole state travels in one MQTT packet when a signer
/// connects; at 5 MiB it used to exceed the fixed 1 MiB cap, and the signer
/// reconnected forever.
#[test]
fn a_signer_with_a_5_mib_state_restores_from_lss_alone_and_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path(), driver::free_port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &lss.url, &home, &[]);
    let mut signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    new_channel(&mut broker.master, 1);
    pad_state(&lss.url, &home, 5);
    // The signer's machine is lost: only the seed is left.
    signer.kill();
    std::fs::remove_dir_all(home.dir.join("vls")).expect("remove the store");
    let signer = home.start_lss(&broker.url(), &[]);
    knows_channel(&mut broker.master, 1);
    ecdh(&mut broker.master, &home, 21);
    new_channel(&mut broker.master, 2);
    assert!(
        log_has(&signer, "local store brought forward from LSS"),
        "{}",
        signer.log_text()
    );
}

/// The same state against a signer that announces 1 MiB packets: a clear
/// error for the operator, naming the settings, instead of a reconnect loop.
#[test]
fn a_state_over_the_signers_packet_limit_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path(), driver::free_port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &lss.url, &home, &[]);
    let mut signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    pad_state(&lss.url, &home, 2);
    signer.kill();
    let _signer = home.start_lss(&broker.url(), &["--mqtt-max-packet-mib", "1"]);
    broker.proc.wait_log("mqtt_max_packet_mib");
    let (status, body) = broker.http("GET", "/api/signers", Some(&broker.api_token()), "");
    assert_eq!(status, 200);
    assert!(!body.contains("\"ready\""), "{body}");
}

/// And one request whose changes alone are over 2 MiB (an allowlist of
/// 30,000 payees, set by a control message): stored in LSS, acknowledged,
/// answered, and restored by a signer that lost its store.
#[test]
fn a_single_change_of_2_mib_is_stored_and_restored() {
    use sphinx_wire::control::{self, ControlMessage, ControlResponse};
    let dir = tempfile::tempdir().expect("tempdir");
    let lss = lssd(dir.path(), driver::free_port());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(
        dir.path(),
        &lss.url,
        &home,
        &["--request-timeout-secs", "120"],
    );
    let mut signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    // Distinct keys, cheaply: G, 2G, 3G, ...
    let secp = Secp256k1::new();
    let g = key(1).public_key(&secp);
    let mut point = g;
    let payees: Vec<String> = (0..30_000)
        .map(|_| {
            point = point.combine(&g).expect("not infinity");
            format!("payee:{point}")
        })
        .collect();
    let update = ControlMessage::UpdateAllowlist(payees.clone());
    let body = hex::encode(control::sign(&update, 1, &home.node_secret()));
    let path = format!("/api/control/{}", home.cid());
    let (status, text) = broker.http("POST", &path, Some(&broker.api_token()), &body);
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    let response: ControlResponse =
        control::decode(&hex::decode(answer["hex"].as_str().expect("hex")).expect("hex"))
            .expect("a response");
    assert!(
        matches!(response, ControlResponse::AllowlistUpdated(ref list) if list.len() == payees.len()),
        "{text:.200}"
    );
    let largest = largest_value(&lss.url, &home);
    assert!(largest > 2 << 20, "one change of {largest} bytes");
    // Restored from LSS alone.
    signer.kill();
    std::fs::remove_dir_all(home.dir.join("vls")).expect("remove the store");
    let _signer = home.start_lss(&broker.url(), &[]);
    ecdh(&mut broker.master, &home, 22);
    let query = hex::encode(control::sign(
        &ControlMessage::QueryAllowlist,
        2,
        &home.node_secret(),
    ));
    let (status, text) = broker.http("POST", &path, Some(&broker.api_token()), &query);
    assert_eq!(status, 200, "{text:.300}");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    let response: ControlResponse =
        control::decode(&hex::decode(answer["hex"].as_str().expect("hex")).expect("hex"))
            .expect("a response");
    let ControlResponse::AllowlistCurrent(list) = response else {
        panic!("not the allowlist: {text:.300}");
    };
    assert_eq!(list.len(), payees.len());
}

/// An LSS provider that admits registered clients only (`lssd --access
/// allowlist`): the signer is refused until the broker presents the
/// operator's registration token, then served, and remembered.
#[test]
fn a_registration_token_admits_the_signer_on_an_allowlist_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("lssd");
    let data_arg = data.to_str().expect("utf8");
    let lss = LssdProcess::spawn(
        &lssd_binary(),
        &["--data-dir", data_arg, "--access", "allowlist"],
    )
    .expect("start lssd");
    let issued = std::process::Command::new(lssd_binary())
        .args([
            "issue-token",
            "--data-dir",
            data_arg,
            "--access",
            "allowlist",
        ])
        .output()
        .expect("run lssd issue-token");
    assert!(issued.status.success(), "{issued:?}");
    let token = String::from_utf8(issued.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    let home = SignerHome::create(&dir.path().join("signer"));

    // Without the token: refused by the provider, so not admitted.
    let without = dir.path().join("without");
    std::fs::create_dir_all(&without).expect("dir");
    let mut broker = lss_broker(&without, &lss.url, &home, &[]);
    let mut signer = home.start_lss(&broker.url(), &[]);
    broker.proc.wait_log("signer not admitted");
    assert!(
        log_has(&broker.proc, "registration token"),
        "the refusal says what is missing:\n{}",
        broker.proc.log_text()
    );
    signer.kill();
    broker.proc.kill();
    drop(broker);

    // With it: served, and the server remembers the signer.
    let mut broker = lss_broker(
        dir.path(),
        &lss.url,
        &home,
        &["--lss-registration-token", &token],
    );
    let _signer = home.start_lss(&broker.url(), &[]);
    let _ = init_reply(&mut broker, &home);
    new_channel(&mut broker.master, 1);
    let registered =
        std::fs::read_to_string(data.join("registered_clients")).expect("registered_clients");
    assert_eq!(
        registered.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "the signer's client id, registered once: {registered}"
    );
}
