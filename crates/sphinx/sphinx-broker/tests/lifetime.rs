//! The broker lives and dies with lightningd (hole 9 of the remote-signer
//! audit): fd 3 closed ends it in every state, and a port it cannot take is
//! an error that names the setting to change.

mod driver;

use std::net::Shutdown;
use std::time::Duration;

use driver::{hsmd_init, Broker, SignerHome};
use sphinx_signer::Network;
use vls_protocol::msgs;

/// lightningd's own bound on how long its hsmd may linger is not ours to
/// guess; the broker notices the close at once, and this bound only keeps a
/// failing test from hanging.
const EXIT: Duration = Duration::from_secs(5);

#[test]
fn fd3_closed_while_hsmd_init_waits_for_a_signer_ends_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = Broker::start(dir.path(), &["--owner", &home.node_id().to_string()]);
    broker.master.send(&hsmd_init(Network::Regtest));
    broker.proc.wait_log("held until a signer answers it");
    broker
        .master
        .stream
        .shutdown(Shutdown::Both)
        .expect("close fd 3");
    let status = broker.proc.wait_exit(EXIT).expect("the broker exits");
    assert!(status.success(), "{status:?}");
    // Its ports are free again for the next lightningd start.
    std::net::TcpListener::bind(("127.0.0.1", broker.mqtt_port)).expect("MQTT port free");
    std::net::TcpListener::bind(("127.0.0.1", broker.http_port)).expect("API port free");
}

#[test]
fn fd3_closed_while_a_request_waits_for_a_gone_signer_ends_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, _home, mut signer, _init) = driver::checks::started(dir.path());
    signer.kill();
    broker.master.send(&msgs::SignMessage {
        message: b"anyone there?".to_vec().into(),
    });
    broker
        .master
        .stream
        .shutdown(Shutdown::Both)
        .expect("close fd 3");
    let status = broker.proc.wait_exit(EXIT).expect("the broker exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn ports_in_use_are_errors_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    // Something (a system Mosquitto, say) holds the MQTT port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut broker = Broker::start_on(dir.path(), port, &["--no-lss", "true", "--owner", &owner]);
    broker.proc.fails_with("set mqtt_listen");
    // And the control API's.
    let dir = tempfile::tempdir().expect("tempdir");
    let http = format!("127.0.0.1:{port}");
    let mut broker = Broker::start(dir.path(), &["--owner", &owner, "--http-listen", &http]);
    broker.proc.fails_with("set http_listen");
}

#[test]
fn a_signer_on_another_chain_ends_the_wait_with_both_chains_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = Broker::start(dir.path(), &["--owner", &home.node_id().to_string()]);
    broker.master.send(&hsmd_init(Network::Regtest));
    let _signer = home.start(&broker.url(), &["--network", "testnet"]);
    assert!(broker.master.recv().is_none(), "no init reply");
    // lightningd's regtest genesis and the signer's chain, in one error.
    broker
        .proc
        .fails_with("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206");
    let log = broker.proc.log_text();
    assert!(
        log.contains("another chain than this signer's testnet"),
        "{log}"
    );
}

/// Point 10: a crash while an older version created `api-token`, `owner` or
/// the seed left an empty file that blocked the next start with a baffling
/// error. Files are now written whole or not at all (`durable-file`), and an
/// empty one is named with what to do.
#[test]
fn an_empty_identity_file_is_named_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    for file in ["api-token", "owner"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("broker");
        std::fs::create_dir_all(&data).expect("mkdir");
        std::fs::write(data.join(file), "").expect("empty file");
        let mut broker = Broker::start(dir.path(), &["--owner", &owner]);
        broker.proc.fails_with("is empty");
        assert!(broker.proc.log_text().contains(file), "{file}");
    }
    // The signer's seed.
    std::fs::write(home.dir.join("seed"), "").expect("empty seed");
    let mut signer = home.start("mqtt://127.0.0.1:9", &[]);
    signer.fails_with("is empty");
}
