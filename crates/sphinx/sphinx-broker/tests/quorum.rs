//! Issue 17 in the remote-signer stack, with real processes: fake
//! lightningd → broker → MQTT → signer, and three `lssd` providers (two on
//! redb, one on PostgreSQL) with a write quorum of 2. The signer verifies
//! every provider's MACs and signed log itself (`quorum-v1`); the broker,
//! which a compromised host controls, only relays.

mod driver;

use std::path::Path;
use std::process::Command;

use driver::checks::{ecdh, exercise, knows_channel, lss_broker, new_channel};
use driver::{hsmd_init, Broker, SignerHome};
use lk_testkit::process::{workspace_binary, RestartableLssd};
use sphinx_signer::Network;
use vls_protocol::msgs::Message;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

const MIN_QUORUM: [&str; 2] = ["--lss-min-write-quorum", "2"];

#[test]
fn three_providers_survive_one_down_and_a_rollback_is_caught_with_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let schema = rt.block_on(lk_testkit::postgres::Schema::fresh());
    let mut a = RestartableLssd::start(&[]);
    let b = RestartableLssd::start(&[]);
    let mut c = RestartableLssd::start(&[
        "--database",
        "postgres",
        "--postgres-url",
        &schema.url,
        "--postgres-schema",
        &schema.name,
    ]);
    let urls = format!("{},{},{}", a.url(), b.url(), c.url());
    let home = SignerHome::create(&dir.path().join("signer"));
    // A short deadline, so a provider that is down gives up the puts it
    // misses (and is really behind when it comes back).
    let mut broker = lss_broker(dir.path(), &urls, &home, &["--request-timeout-secs", "3"]);
    let mut signer = home.start_lss(&broker.url(), &MIN_QUORUM);
    let Some(Message::HsmdInitReplyV4(init)) = broker.master.recv() else {
        panic!(
            "no init reply: broker log:\n{}\nsigner log:\n{}",
            broker.proc.log_text(),
            signer.log_text()
        );
    };
    exercise(&mut broker.master, &home, &init);
    new_channel(&mut broker.master, 2);
    assert!(
        broker.proc.log_text().contains("quorum of LSS providers"),
        "{}",
        broker.proc.log_text()
    );

    // The operator backs provider A up now...
    a.down();
    let backup = dir.path().join("a-backup");
    copy_dir(a.data_dir(), &backup);
    a.up();
    new_channel(&mut broker.master, 3);

    // (e) Provider C is down: W = 2 still holds, and a signer that lost its
    // local store restores from A and B alone.
    c.down();
    new_channel(&mut broker.master, 4);
    broker.proc.wait_log("did not store a put");
    signer.kill();
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let mut signer = home.start_lss(&broker.url(), &MIN_QUORUM);
    knows_channel(&mut broker.master, 4);
    knows_channel(&mut broker.master, 2);
    ecdh(&mut broker.master, &home, 11);

    // (a) …and restores A's old backup. The signer, restoring again with C
    // still down, sees A sign a smaller log while acknowledging the larger
    // one it had signed: a provable rollback, left out with evidence. B
    // alone is below the read quorum, so the signer refuses to start
    // rather than trust one provider.
    a.down();
    copy_dir(&backup, a.data_dir());
    a.up();
    signer.kill();
    std::fs::remove_dir_all(home.dir.join("vls")).expect("delete the local store");
    let mut signer = home.start_lss(&broker.url(), &MIN_QUORUM);
    signer.wait_log("contradicted its own signed log");
    signer.wait_log("1 verified LSS provider(s) of the 2 needed");

    let evidence_dir = home.dir.join("lss").join("lss-evidence");
    let evidence: Vec<_> = std::fs::read_dir(&evidence_dir)
        .expect("evidence saved")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    let out = Command::new(workspace_binary("lss-cli"))
        .args(["verify-evidence", evidence[0].to_str().expect("utf8")])
        .output()
        .expect("run lss-cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("rollback"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // C comes back (behind: it missed channel 4). B and C verify; B's state
    // is the newest and every acknowledged change is there. C is repaired
    // from the signer's MACs (A, the liar, is not), so B and C make the
    // quorum for new changes while A refuses them.
    c.up();
    signer.kill();
    let signer = home.start_lss(&broker.url(), &MIN_QUORUM);
    knows_channel(&mut broker.master, 4);
    knows_channel(&mut broker.master, 3);
    broker.proc.wait_log("brought up to date");
    new_channel(&mut broker.master, 5);
    knows_channel(&mut broker.master, 5);
    assert!(
        signer.log_text().contains("asking the broker to repair it"),
        "{}",
        signer.log_text()
    );
}

#[test]
fn a_provider_that_was_down_is_repaired_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = RestartableLssd::start(&[]);
    let b = RestartableLssd::start(&[]);
    let mut c = RestartableLssd::start(&[]);
    let urls = format!("{},{},{}", a.url(), b.url(), c.url());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &urls, &home, &["--request-timeout-secs", "3"]);
    let signer = home.start_lss(&broker.url(), &MIN_QUORUM);
    let Some(Message::HsmdInitReplyV4(_)) = broker.master.recv() else {
        panic!("no init reply: {}", signer.log_text());
    };
    new_channel(&mut broker.master, 1);
    // C misses a change, then comes back behind: its puts conflict. The
    // broker says so with the next receipts; the signer resyncs and has C
    // repaired.
    c.down();
    new_channel(&mut broker.master, 2);
    broker.proc.wait_log("did not store a put");
    c.up();
    // C's refusal may come after the quorum answered a change, so it is
    // reported with the next one's receipts.
    let mut dbid = 3;
    while !signer
        .log_text()
        .contains("resyncing once this reply is out")
    {
        assert!(dbid < 8, "no resync: {}", signer.log_text());
        new_channel(&mut broker.master, dbid);
        dbid += 1;
    }
    broker.proc.wait_log("brought up to date");
    // With A down, B and C make the quorum: C really is up to date.
    a.down();
    new_channel(&mut broker.master, 10);
    knows_channel(&mut broker.master, 2);
}

#[test]
fn the_host_cannot_lower_the_signers_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = RestartableLssd::start(&[]);
    let b = RestartableLssd::start(&[]);
    let home = SignerHome::create(&dir.path().join("signer"));
    // A broker told to wait for one provider only, and one relaying to a
    // single provider the reference's way: the signer refuses both.
    let urls = format!("{},{}", a.url(), b.url());
    let low = lss_broker(dir.path(), &urls, &home, &["--lss-write-quorum", "1"]);
    let signer = home.start_lss(&low.url(), &MIN_QUORUM);
    signer.wait_log("the broker asks for a write quorum of 1 of 2; this signer requires 2");
    drop(signer);
    drop(low);
    let single_dir = dir.path().join("single");
    std::fs::create_dir_all(&single_dir).expect("mkdir");
    let single = lss_broker(&single_dir, &a.url(), &home, &[]);
    let signer = home.start_lss(&single.url(), &MIN_QUORUM);
    signer.wait_log("relays to one LSS provider; this signer requires a write quorum of 2");
}

#[test]
fn a_provider_down_when_the_broker_restarts_is_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = RestartableLssd::start(&[]);
    let b = RestartableLssd::start(&[]);
    let mut c = RestartableLssd::start(&[]);
    let urls = format!("{},{},{}", a.url(), b.url(), c.url());
    let home = SignerHome::create(&dir.path().join("signer"));
    let mut broker = lss_broker(dir.path(), &urls, &home, &["--request-timeout-secs", "5"]);
    let port = broker.mqtt_port;
    let signer = home.start_lss(&broker.url(), &MIN_QUORUM);
    let Some(Message::HsmdInitReplyV4(_)) = broker.master.recv() else {
        panic!("no init reply: {}", signer.log_text());
    };
    new_channel(&mut broker.master, 1);
    // CLN restarts, and with it the broker, while C is down: the broker
    // knows C's key from before, so the signer still gets all three.
    broker.proc.kill();
    drop(broker);
    c.down();
    let owner = home.node_id().to_string();
    let mut broker = Broker::start_on(
        dir.path(),
        port,
        &[
            "--lss-url",
            &urls,
            "--owner",
            &owner,
            "--request-timeout-secs",
            "5",
        ],
    );
    broker.master.send(&hsmd_init(Network::Regtest));
    let Some(Message::HsmdInitReplyV4(_)) = broker.master.recv() else {
        panic!(
            "no init reply after the restart: {}\n{}",
            broker.proc.log_text(),
            signer.log_text()
        );
    };
    knows_channel(&mut broker.master, 1);
    new_channel(&mut broker.master, 2);
}
