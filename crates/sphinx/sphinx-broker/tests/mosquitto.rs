//! The same end-to-end path over Mosquitto as the external MQTT server: the
//! machine's own (127.0.0.1:1883), and a private one configured as
//! docs/sphinx.md says (accounts, ACL file), where a second account can
//! neither read nor forge a signer's traffic.

mod driver;

use std::path::Path;
use std::time::Duration;

use driver::checks::{exercise, key};
use driver::mosquitto::{self, Private};
use driver::{hsmd_init, Broker, SignerHome};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sphinx_signer::Network;
use vls_protocol::msgs::{self, Message};

fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf8").to_string()
}

/// Broker on `port` with the broker account, signer with its account;
/// CLN's init answered; returns both.
fn start(
    dir: &Path,
    port: u16,
    home: &SignerHome,
    signer_pass: &str,
) -> (Broker, driver::Proc, msgs::HsmdInitReplyV4) {
    let cid = home.cid();
    let url = format!("mqtt://127.0.0.1:{port}");
    let broker_pass = secret_file(dir, "broker.pass", "broker-secret\n");
    let owner = home.node_id().to_string();
    let data_dir = dir.join("broker");
    let mut broker = Broker::start_with(
        dir,
        &[
            "--no-lss",
            "true",
            "--data-dir",
            data_dir.to_str().expect("utf8"),
            "--mqtt-external",
            &url,
            "--mqtt-username",
            "lightkeeper-broker",
            "--mqtt-password-file",
            &broker_pass,
            "--owner",
            &owner,
        ],
        port,
        data_dir.clone(),
    );
    broker.master.send(&hsmd_init(Network::Regtest));
    let signer_pass = secret_file(dir, "signer.pass", signer_pass);
    let signer = home.start(
        &url,
        &[
            "--mqtt-username",
            &cid,
            "--mqtt-password-file",
            &signer_pass,
        ],
    );
    let Some(Message::HsmdInitReplyV4(init)) = broker.master.recv() else {
        panic!("no V4 init reply over Mosquitto");
    };
    assert_eq!(init.node_id.0, home.node_id().serialize());
    (broker, signer, init)
}

#[test]
fn signing_over_the_local_mosquitto() {
    let port = mosquitto::system();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = SignerHome::create(&dir.path().join("signer"));
    let (mut broker, _signer, init) = start(dir.path(), port, &home, "unused-on-an-open-server");
    exercise(&mut broker.master, &home, &init);
}

#[test]
fn mosquitto_accounts_and_acls_confine_each_signer() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The signer's account must exist before it connects: its id comes from
    // `init`.
    let home = SignerHome::create(&dir.path().join("signer"));
    let cid = home.cid();
    let rogue = hex::encode([7u8; 16]);
    let server = Private::start(
        dir.path(),
        &[
            ("lightkeeper-broker", "broker-secret"),
            (&cid, "signer-secret"),
            (&rogue, "rogue-secret"),
        ],
    );
    let (mut broker, _signer, init) = start(dir.path(), server.port, &home, "signer-secret");
    exercise(&mut broker.master, &home, &init);

    // A wrong password does not get in.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut options = MqttOptions::new(cid.clone(), "127.0.0.1", server.port);
        options.set_credentials(cid.clone(), "guess");
        let (_c, mut events) = AsyncClient::new(options, 8);
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return ack.code != rumqttc::ConnectReturnCode::Success
                    }
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
        })
        .await
        .expect("answer");
        assert!(refused, "wrong password accepted");
    });

    // Another account: subscribes to the signer's requests, forges its
    // replies, and says hello with a key that is not the owner's.
    let (client, mut events) = {
        let mut options = MqttOptions::new(rogue.clone(), "127.0.0.1", server.port);
        options.set_credentials(rogue.clone(), "rogue-secret");
        AsyncClient::new(options, 512)
    };
    let stranger = key(42);
    rt.block_on(async {
        client
            .subscribe(format!("{cid}/vls"), QoS::AtMostOnce)
            .await
            .expect("queue");
        client
            .subscribe("+/vls", QoS::AtMostOnce)
            .await
            .expect("queue");
        let token = sphinx_wire::login::password(&stranger, &rogue, driver_now());
        client
            .publish(format!("{rogue}/hello"), QoS::AtMostOnce, false, token)
            .await
            .expect("queue");
        tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => panic!("rogue read {}", p.topic),
                    Ok(_) => {}
                    Err(e) => panic!("rogue connection failed: {e}"),
                }
            }
        })
        .await
        .ok();
    });
    // Requests flow meanwhile while the rogue keeps forging replies for
    // every likely sequence number; it reads none of the requests and its
    // forgeries do not reach CLN.
    let forged_cid = cid.clone();
    let poll = std::thread::spawn(move || {
        rt.block_on(async {
            let forge = async {
                loop {
                    for seq in 0..64u16 {
                        let forged = sphinx_wire::serial::Response {
                            seq,
                            frame: sphinx_wire::hsmd::Frame {
                                ty: 100,
                                body: vec![0xee; 32],
                            },
                        };
                        let bytes = forged.encode().expect("encode");
                        let _ = client.try_publish(
                            format!("{forged_cid}/vls-res"),
                            QoS::AtMostOnce,
                            false,
                            bytes,
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let watch = async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => panic!("rogue read {}", p.topic),
                        Ok(_) => {}
                        Err(e) => panic!("rogue connection failed: {e}"),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                tokio::join!(forge, watch);
            })
            .await;
        })
    });
    for i in 0..5u8 {
        driver::checks::ecdh(&mut broker.master, &home, 70 + i);
    }
    poll.join().expect("rogue saw nothing");
    // A stranger's hello is refused, and said so.
    broker.proc.wait_log("hello refused");
    // Mosquitto denied the forgeries.
    server
        .proc
        .wait_log(&format!("Denied PUBLISH from {rogue}"));
}

fn driver_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}
