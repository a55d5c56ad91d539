//! Issue 17, several providers: three real `lssd` processes (two on redb,
//! one on PostgreSQL) behind `lss_client::quorum::QuorumClient` with W = 2.
//! (e) A provider that is down: puts and reads go on; back up, it is brought
//! up to date. (d) A provider that lost its data: its next answer is a
//! signed rollback, reported with evidence and left out, and reads still
//! return every acknowledged write.

use lk_testkit::process::RestartableLssd as Server;
use lss_client::quorum::{Provider, QuorumClient};
use lss_client::{ConnectOptions, PrivClient};
use lss_core::secp256k1::SecretKey;
use lss_core::KeyValue;

async fn provider(url: &str, secret: &SecretKey) -> Provider {
    let options = ConnectOptions {
        timeout: std::time::Duration::from_secs(5),
        ..ConnectOptions::new(url)
    };
    let client = PrivClient::connect(&options, secret, None, [7; 32])
        .await
        .expect("connect")
        .verifying(None);
    Provider {
        name: url.to_owned(),
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_providers_survive_one_down_and_catch_one_that_lost_its_data() {
    let schema = lk_testkit::postgres::Schema::fresh().await;
    let mut servers = vec![
        Server::start(&[]),
        Server::start(&[]),
        Server::start(&[
            "--database",
            "postgres",
            "--postgres-url",
            &schema.url,
            "--postgres-schema",
            &schema.name,
        ]),
    ];
    let secret = SecretKey::from_slice(&[0x51; 32]).expect("key");
    let mut providers = Vec::new();
    for s in &servers {
        providers.push(provider(&s.url(), &secret).await);
    }
    let mut quorum = QuorumClient::new(providers, 2).expect("quorum");
    assert!(QuorumClient::new(Vec::new(), 1).is_err());

    let put = |key: &str, version: i64, value: &str| {
        vec![KeyValue::new(key, version, value.as_bytes().to_vec())]
    };
    let report = quorum.put(put("channel/1", 0, "a")).await.expect("put");
    assert_eq!(report.ok.len(), 2, "done at W receipts: {report:?}");

    // (e) One provider down: W = 2 still holds, reads too.
    let addr = servers[1].down();
    let report = quorum
        .put(put("channel/1", 1, "b"))
        .await
        .expect("put with one down");
    assert_eq!(report.ok.len(), 2, "{report:?}");
    assert!(report.failures.len() <= 1, "{report:?}");
    quorum
        .put(put("channel/2", 0, "c"))
        .await
        .expect("put with one down");
    let (kvs, _) = quorum
        .get("channel/", &[1; 32])
        .await
        .expect("get with one down");
    assert_eq!(
        kvs,
        [put("channel/1", 1, "b"), put("channel/2", 0, "c")].concat()
    );
    // A second one down: below the quorum, refused (not silently accepted).
    servers[2].down();
    let err = quorum
        .put(put("channel/1", 2, "d"))
        .await
        .expect_err("below quorum");
    assert!(err.to_string().contains("1 of 2"), "{err}");
    servers[2].up();

    // Back up on its address: the next read brings it up to date.
    servers[1].up();
    let (kvs, report) = quorum.get("channel/", &[2; 32]).await.expect("get");
    assert!(
        report.repaired.iter().any(|p| p.contains(&addr)),
        "the provider that was down is repaired: {report:?}"
    );
    // "d" was written to one provider only (not acknowledged): whichever
    // answer wins, it is at least every acknowledged write.
    assert!(kvs.iter().any(|kv| kv.key == "channel/2"), "{kvs:?}");
    let (again, report) = quorum.get("channel/", &[3; 32]).await.expect("get");
    assert_eq!(again, kvs);
    assert_eq!(report.ok.len(), 3, "all three agree now: {report:?}");
    assert!(report.repaired.is_empty());

    // (d) A provider loses its data (same key, empty store).
    let addr0 = servers[0].down();
    let db = servers[0].data_dir().join("lightkeeper.redb");
    std::fs::remove_file(db).expect("wipe");
    servers[0].up();
    let (kvs_after, report) = quorum.get("channel/", &[4; 32]).await.expect("get");
    assert_eq!(kvs_after, kvs, "every acknowledged write survives");
    let liar = report
        .failures
        .iter()
        .find(|f| f.provider.contains(&addr0))
        .expect("the wiped provider is reported");
    let evidence = liar.evidence.as_ref().expect("with evidence");
    let (_, violation) =
        lss_verify::Evidence::verify(evidence.to_json().as_bytes()).expect("evidence verifies");
    assert!(violation.to_string().contains("rollback"), "{violation}");
}

/// The same through `lss-cli --providers`, as README shows it.
#[test]
fn the_cli_with_three_providers() {
    let mut servers = vec![Server::start(&[]), Server::start(&[]), Server::start(&[])];
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = |servers: &[Server]| {
        servers
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    };
    let cli = |providers: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lss-cli"))
            .arg("--providers")
            .arg(providers)
            .args(args)
            .env("LSS_CLI_DIR", dir.path())
            .output()
            .expect("lss-cli");
        (
            out.status.code().expect("code"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let all = urls(&servers);
    let (code, out, err) = cli(&all, &["init"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("server id").count(), 3, "{out}");
    let (code, out, err) = cli(&all, &["put", "k", "0", "aa"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("on 2 of 3 providers"),
        "done at W receipts: {out}"
    );
    let addr = servers[2].down();
    let (code, out, err) = cli(&all, &["put", "k", "1", "bb"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("on 2 of 3 providers"), "{out}");
    servers[2].up();
    let (code, out, err) = cli(&all, &["get", "k"]);
    assert_eq!((code, out.as_str()), (0, "k 1 bb\n"), "{err}");
    assert!(err.contains("repaired") && err.contains(&addr), "{err}");
    // Below the quorum: an error, not a quiet success.
    servers[0].down();
    servers[1].down();
    let (code, _, err) = cli(&all, &["put", "k", "2", "cc"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("write quorum is 2"), "{err}");
}
