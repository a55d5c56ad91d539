//! Added latency of the remote-signer path: fake lightningd → broker (fd 3)
//! → embedded MQTT → signer (VLS) → back, on loopback.
//!
//! `cargo bench -p sphinx-broker --bench latency` (results in
//! docs/benchmarks.md). Without LSS: sequential Ecdh, SignInvoice and
//! NewChannel, then Ecdh from 8 client connections at once. With LSS (a
//! real `lssd` on its embedded store): NewChannel, whose changes are stored
//! and acknowledged before the reply, and Ecdh, which changes nothing; then
//! NewChannel with the signer verifying that provider's signed log, and
//! with three providers and a write quorum of 2.

#[path = "../tests/driver/mod.rs"]
mod driver;

use std::time::{Duration, Instant};

use driver::checks::{invoice, key, started};
use driver::Hsmd;
use secp256k1::Secp256k1;
use vls_protocol::model::PubKey;
use vls_protocol::msgs::{self, Message};
use vls_protocol_signer::lightning_signer::bitcoin::hashes::{sha256, Hash};

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<32} n={:<5} p50={:>7.3} ms  p90={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms  {:>8.0} req/s",
        samples.len(),
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

fn ecdh(hsmd: &mut Hsmd, i: u32) -> Duration {
    let byte = (i % 200) as u8 + 1;
    let point = PubKey(key(byte).public_key(&Secp256k1::new()).serialize());
    let start = Instant::now();
    let reply = hsmd.call(&msgs::Ecdh { point });
    let took = start.elapsed();
    assert!(matches!(reply, Message::EcdhReply(_)));
    took
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, _home, _signer, _init) = started(dir.path());
    // Warm up.
    for i in 0..50 {
        ecdh(&mut broker.master, i);
    }
    let start = Instant::now();
    let samples: Vec<_> = (0..1000).map(|i| ecdh(&mut broker.master, i)).collect();
    report("Ecdh, sequential", samples, start.elapsed());

    let start = Instant::now();
    let samples: Vec<_> = (0..300u32)
        .map(|i| {
            let hash = sha256::Hash::hash(&i.to_be_bytes()).to_byte_array();
            let (_, request) = invoice(&format!("bench {i}"), hash, 1000 + u64::from(i));
            let t = Instant::now();
            let reply = broker.master.call(&request);
            let took = t.elapsed();
            assert!(matches!(reply, Message::SignInvoiceReply(_)));
            took
        })
        .collect();
    report("SignInvoice, sequential", samples, start.elapsed());

    let clients: Vec<Hsmd> = (0..8u8)
        .map(|i| {
            broker
                .master
                .client(key(30 + i).public_key(&Secp256k1::new()).serialize(), 0)
        })
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut hsmd| {
            std::thread::spawn(move || (0..250).map(|i| ecdh(&mut hsmd, i)).collect::<Vec<_>>())
        })
        .collect();
    let samples: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    report("Ecdh, 8 client fds in parallel", samples, start.elapsed());
    let start = Instant::now();
    let samples: Vec<_> = (0..300)
        .map(|i| new_channel(&mut broker.master, 1000 + i))
        .collect();
    report("NewChannel, sequential, no LSS", samples, start.elapsed());
    drop(broker);

    // The same path with every change stored in LSS first: one provider
    // as the reference relays; the same provider verified by the signer
    // (`quorum-v1`, W = 1); three providers with W = 2.
    let one = lk_testkit::process::RestartableLssd::start(&[]);
    with_lss("LSS", &one.url(), &[], true);
    with_lss(
        "1 provider verified",
        &one.url(),
        &["--lss-write-quorum", "1"],
        false,
    );
    let two = lk_testkit::process::RestartableLssd::start(&[]);
    let three = lk_testkit::process::RestartableLssd::start(&[]);
    let urls = format!("{},{},{}", one.url(), two.url(), three.url());
    with_lss("3 providers W=2", &urls, &[], false);
}

/// NewChannel (and, with `ecdh`, Ecdh) through a broker storing in `urls`.
fn with_lss(label: &str, urls: &str, broker_args: &[&str], ecdh_too: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = driver::SignerHome::create(&dir.path().join("signer"));
    let owner = home.node_id().to_string();
    let mut args = vec!["--owner", owner.as_str()];
    args.extend_from_slice(broker_args);
    let mut broker = driver::Broker::start_lss(dir.path(), urls, &args);
    broker
        .master
        .send(&driver::hsmd_init(sphinx_signer::Network::Regtest));
    let _signer = home.start_lss(&broker.url(), &[]);
    assert!(matches!(
        broker.master.recv(),
        Some(Message::HsmdInitReplyV4(_))
    ));
    for i in 0..20 {
        new_channel(&mut broker.master, 5000 + i);
    }
    let start = Instant::now();
    let samples: Vec<_> = (0..300)
        .map(|i| new_channel(&mut broker.master, 1000 + i))
        .collect();
    report(
        &format!("NewChannel, sequential, {label}"),
        samples,
        start.elapsed(),
    );
    if ecdh_too {
        let start = Instant::now();
        let samples: Vec<_> = (0..1000).map(|i| ecdh(&mut broker.master, i)).collect();
        report(
            &format!("Ecdh (no changes), sequential, {label}"),
            samples,
            start.elapsed(),
        );
    }
}

fn new_channel(hsmd: &mut Hsmd, dbid: u64) -> Duration {
    let peer = PubKey(key(9).public_key(&Secp256k1::new()).serialize());
    let start = Instant::now();
    let reply = hsmd.call(&msgs::NewChannel {
        peer_id: peer,
        dbid,
    });
    let took = start.elapsed();
    assert!(matches!(reply, Message::NewChannelReply(_)), "{reply:?}");
    took
}
