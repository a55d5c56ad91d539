//! The `lssd` binary as an operator runs it: first start creates a private
//! data directory and server key, SIGTERM stops it cleanly, a restart keeps
//! the key and the data, TLS material is read from files, and bad
//! configuration fails at start-up with a message naming the problem.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use lk_testkit::pki::Ca;
use lk_testkit::process::{run, LssdProcess};
use lss_client::{ConnectOptions, PrivClient, TlsOptions};
use lss_core::secp256k1::SecretKey;
use lss_core::KeyValue;

fn lssd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lssd"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

async fn client(options: &ConnectOptions) -> PrivClient {
    let secret = SecretKey::from_slice(&[0x31; 32]).expect("key");
    PrivClient::connect(options, &secret, None, [5; 32])
        .await
        .expect("connect")
}

// Multi-threaded: the client's connection must be served while the test
// thread blocks waiting for the process, or the server's graceful close of it
// cannot complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_sigterm_and_restart_keep_key_and_data() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("nested/lssd");
    let data_arg = data.to_str().expect("utf-8 path");

    let server = LssdProcess::spawn(lssd(), &["--data-dir", data_arg]).expect("start");
    assert_eq!(mode(&data), 0o700, "data directory must be private");
    let key_file = data.join("server_key");
    assert_eq!(mode(&key_file), 0o600, "server key must be private");
    assert!(data.join("lightkeeper.redb").exists());
    assert!(
        server.log().contains("created a new server key"),
        "{}",
        server.log()
    );

    let mut first = client(&ConnectOptions::new(&server.url)).await;
    let kvs = vec![
        KeyValue::new("channel/1", 0, b"state one"),
        KeyValue::new("channel/2", 0, b"state two"),
    ];
    first.put(kvs.clone()).await.expect("put");
    let server_id = first.server_id();

    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM must exit 0: {status:?}\n{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    for secret in ["state one", &hex::encode(b"state one")] {
        assert!(!log.contains(secret), "values must never be logged");
    }

    let key_before = std::fs::read(&key_file).expect("key file");
    let server = LssdProcess::spawn(lssd(), &["--data-dir", data_arg]).expect("restart");
    assert!(!server.log().contains("created a new server key"));
    assert_eq!(std::fs::read(&key_file).expect("key file"), key_before);
    let options = ConnectOptions::new(&server.url);
    let secret = SecretKey::from_slice(&[0x31; 32]).expect("key");
    let mut again = PrivClient::connect(&options, &secret, Some(server_id), [5; 32])
        .await
        .expect("the pinned server key is unchanged after a restart");
    assert_eq!(again.get("", &[2; 32]).await.expect("get"), kvs);
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_pem_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server_pem = server_ca.server(&["localhost"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8").to_owned()
    };
    let cert = write("server.pem", &server_pem.cert);
    let key = write("server.key", &server_pem.key);
    let ca = write("clients-ca.pem", &client_ca.cert_pem());
    let data = dir.path().join("data");
    let server = LssdProcess::spawn(
        lssd(),
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    )
    .expect("start with mTLS");
    assert!(server.log().contains("mutual_tls=true"), "{}", server.log());

    let identity = client_ca.client("signer");
    let options = ConnectOptions {
        tls: Some(TlsOptions {
            ca_pem: Some(server_ca.cert_pem().into_bytes()),
            identity_pem: Some((identity.cert.into_bytes(), identity.key.into_bytes())),
            domain: None,
        }),
        ..ConnectOptions::new(format!("https://localhost:{}", server.addr.port()))
    };
    let mut signer = client(&options).await;
    let kvs = vec![KeyValue::new("k", 0, b"over mTLS")];
    signer.put(kvs.clone()).await.expect("put over mTLS");
    assert_eq!(signer.get("k", &[3; 32]).await.expect("get"), kvs);

    let without_cert = ConnectOptions {
        tls: Some(TlsOptions {
            ca_pem: Some(server_ca.cert_pem().into_bytes()),
            ..TlsOptions::default()
        }),
        ..options.clone()
    };
    let secret = SecretKey::from_slice(&[0x31; 32]).expect("key");
    assert!(PrivClient::connect(&without_cert, &secret, None, [5; 32])
        .await
        .is_err());
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn bad_configuration_fails_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("utf-8");

    let (status, err) = run(
        lssd(),
        &[
            "--data-dir",
            data,
            "--tls-cert",
            missing,
            "--tls-key",
            missing,
        ],
    );
    assert!(!status.success());
    assert!(
        err.contains("cannot read TLS file") && err.contains("missing.pem"),
        "{err}"
    );

    let (status, err) = run(lssd(), &["--data-dir", data, "--tls-cert", missing]);
    assert!(!status.success());
    assert!(err.contains("tls_key"), "{err}");

    let bad_key = dir.path().join("bad_key");
    std::fs::write(&bad_key, "not hex at all").expect("write");
    let (status, err) = run(
        lssd(),
        &[
            "--data-dir",
            data,
            "--server-key-file",
            bad_key.to_str().expect("utf-8"),
        ],
    );
    assert!(!status.success());
    assert!(err.contains("bad_key"), "{err}");

    let config = dir.path().join("lssd.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_key_byte = 5\n").expect("write");
    let (status, err) = run(lssd(), &["--config", config.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(err.contains("max_key_byte"), "{err}");

    let (status, err) = run(lssd(), &["--data-dir", data, "--max-key-bytes", "0"]);
    assert!(!status.success());
    assert!(err.contains("max-key-bytes"), "{err}");

    // A second lssd on the same data directory is refused, not corrupting it.
    let first = LssdProcess::spawn(lssd(), &["--data-dir", data]).expect("start");
    let (status, err) = run(lssd(), &["--data-dir", data, "--listen", "127.0.0.1:0"]);
    assert!(!status.success());
    assert!(err.contains("already"), "{err}");
    drop(first);
}

/// `--database postgres`: the binary on a real PostgreSQL, data surviving a
/// restart; the server key stays in the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_from_the_command_line() {
    let schema = lk_testkit::postgres::Schema::fresh().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let args = [
        "--data-dir",
        data,
        "--database",
        "postgres",
        "--postgres-url",
        &schema.url,
        "--postgres-schema",
        &schema.name,
        "--postgres-pool-size",
        "4",
    ];
    let server = LssdProcess::spawn(lssd(), &args).expect("start on PostgreSQL");
    assert!(
        server.log().contains("storage: PostgreSQL"),
        "{}",
        server.log()
    );
    assert!(!Path::new(data).join("lightkeeper.redb").exists());
    let mut signer = client(&ConnectOptions::new(&server.url)).await;
    let kvs = vec![KeyValue::new("pg", 0, b"in postgres")];
    signer.put(kvs.clone()).await.expect("put");
    let (status, _) = server.terminate();
    assert!(status.success());

    let server = LssdProcess::spawn(lssd(), &args).expect("restart");
    let mut signer = client(&ConnectOptions::new(&server.url)).await;
    assert_eq!(signer.get("", &[1; 32]).await.expect("get"), kvs);
    let rows: i64 = schema
        .client()
        .await
        .query_one(&format!("SELECT count(*) FROM \"{}\".kv", schema.name), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1 + lss_verify::ledger::log_key_count(1) as i64);
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn postgres_options_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let (status, err) = run(lssd(), &["--data-dir", data, "--database", "postgres"]);
    assert!(!status.success());
    assert!(err.contains("needs postgres_url"), "{err}");
    let (status, err) = run(
        lssd(),
        &["--data-dir", data, "--postgres-url", "postgres://x@y/z"],
    );
    assert!(!status.success());
    assert!(err.contains("database is redb"), "{err}");
    let (status, err) = run(lssd(), &["--data-dir", data, "--database", "mysql"]);
    assert!(!status.success());
    assert!(err.contains("mysql"), "{err}");
    let (status, err) = run(
        lssd(),
        &[
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--database",
            "postgres",
            "--postgres-url",
            "postgres://postgres@127.0.0.1:5432/test",
            "--postgres-schema",
            "Robert'); DROP TABLE students;--",
        ],
    );
    assert!(!status.success());
    assert!(err.contains("invalid schema name"), "{err}");
}

/// `--database etcd`: the binary on a real etcd; etcd's limits reach clients
/// as the protocol's limit errors, and data survives a restart of lssd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_from_the_command_line() {
    let etcd = lk_testkit::etcd::EtcdCluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let endpoints = etcd.endpoints().join(",");
    let args = [
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--database",
        "etcd",
        "--etcd-endpoints",
        &endpoints,
        "--etcd-prefix",
        "lk-test/",
    ];
    let server = LssdProcess::spawn(lssd(), &args).expect("start on etcd");
    assert!(server.log().contains("storage: etcd"), "{}", server.log());
    let mut signer = client(&ConnectOptions::new(&server.url)).await;
    let kvs = vec![KeyValue::new("etcd", 0, b"in etcd")];
    signer.put(kvs.clone()).await.expect("put");

    let too_many: Vec<KeyValue> = (0..128)
        .map(|i| KeyValue::new(format!("k{i:03}"), 0, b"v"))
        .collect();
    match signer.put(too_many).await {
        Err(lss_client::PutError::Rpc(lss_client::RpcError::Status(s))) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(s.message().contains("max_keys_per_put"), "{}", s.message());
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    match signer
        .put(vec![KeyValue::new("big", 0, vec![0; 2 * 1024 * 1024])])
        .await
    {
        Err(lss_client::PutError::Rpc(lss_client::RpcError::Status(s))) => {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted);
            assert!(s.message().contains("max_request_bytes"), "{}", s.message());
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    let (status, _) = server.terminate();
    assert!(status.success());

    let server = LssdProcess::spawn(lssd(), &args).expect("restart");
    let mut signer = client(&ConnectOptions::new(&server.url)).await;
    assert_eq!(signer.get("", &[1; 32]).await.expect("get"), kvs);
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// The data commands as an operator runs them: export a stopped server,
/// verify, import elsewhere, copy to PostgreSQL, and serve each copy to the
/// same client with the same server key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verify_import_and_copy_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let (a, b) = (path("a"), path("b"));
    let server = LssdProcess::spawn(lssd(), &["--data-dir", &a]).expect("start");
    let mut signer = client(&ConnectOptions::new(&server.url)).await;
    let kvs: Vec<KeyValue> = (0..200)
        .map(|i| KeyValue::new(format!("channel/{i:03}"), 0, format!("state {i}")))
        .collect();
    for chunk in kvs.chunks(50) {
        signer.put(chunk.to_vec()).await.expect("put");
    }
    let server_id = signer.server_id();

    // redb is locked while the server runs: a clear refusal, not corruption.
    let backup = path("backup.lkx");
    let (status, err) = run(lssd(), &["--data-dir", &a, "export", "--output", &backup]);
    assert!(!status.success());
    assert!(err.contains("already open"), "{err}");
    let (status, _) = server.terminate();
    assert!(status.success());

    let entries = 200 + lss_verify::ledger::log_key_count(4);
    let (status, err) = run(lssd(), &["export", "--output", &backup, "--data-dir", &a]);
    assert!(status.success(), "{err}");
    assert!(
        // 200 keys and the verifiable log of 4 puts.
        err.contains("export complete") && err.contains(&format!("entries={entries}")),
        "{err}"
    );
    let (status, err) = run(lssd(), &["--data-dir", &a, "export", "--output", &backup]);
    assert!(!status.success() && err.contains("exists"), "{err}");
    let (status, err) = run(lssd(), &["verify", "--input", &backup]);
    assert!(status.success() && err.contains("undamaged"), "{err}");

    let (status, err) = run(lssd(), &["--data-dir", &b, "import", "--input", &backup]);
    assert!(status.success(), "{err}");
    assert!(err.contains(&format!("written={entries}")), "{err}");
    let (status, err) = run(lssd(), &["--data-dir", &b, "import", "--input", &backup]);
    assert!(
        status.success() && err.contains(&format!("already_present={entries}")),
        "{err}"
    );

    // The copy answers with the original's key (clients are bound to it).
    std::fs::copy(
        dir.path().join("a/server_key"),
        dir.path().join("b/server_key"),
    )
    .expect("key");
    let server = LssdProcess::spawn(lssd(), &["--data-dir", &b]).expect("serve the import");
    let secret = SecretKey::from_slice(&[0x31; 32]).expect("key");
    let mut reader = PrivClient::connect(
        &ConnectOptions::new(&server.url),
        &secret,
        Some(server_id),
        [5; 32],
    )
    .await
    .expect("same server key");
    assert_eq!(reader.get("", &[1; 32]).await.expect("get"), kvs);
    drop(server);

    // A damaged backup is refused before anything is loaded.
    let mut bytes = std::fs::read(&backup).expect("read");
    let n = bytes.len() / 2;
    bytes[n] ^= 1;
    let damaged = path("damaged.lkx");
    std::fs::write(&damaged, bytes).expect("write");
    let (status, err) = run(
        lssd(),
        &["--data-dir", &path("c"), "import", "--input", &damaged],
    );
    // Caught by the record checks when the flipped byte is in a key (order)
    // or a client id (not a public key), by the checksum otherwise; either
    // way before anything is written.
    assert!(
        !status.success()
            && (err.contains("checksum")
                || err.contains("out of order")
                || err.contains("client id is not a public key")),
        "{err}"
    );
    assert!(!err.contains("import complete"), "{err}");

    // Copy to PostgreSQL, verified by the command itself, then served from there.
    let schema = lk_testkit::postgres::Schema::fresh().await;
    let target = path("target.toml");
    std::fs::write(
        &target,
        format!(
            "database = \"postgres\"\npostgres_url = \"{}\"\npostgres_schema = \"{}\"\n",
            schema.url, schema.name
        ),
    )
    .expect("write");
    let (status, err) = run(lssd(), &["--data-dir", &a, "copy", "--to-config", &target]);
    assert!(status.success(), "{err}");
    assert!(err.contains("copy complete and verified"), "{err}");
    let server = LssdProcess::spawn(
        lssd(),
        &[
            "--data-dir",
            &a,
            "--database",
            "postgres",
            "--postgres-url",
            &schema.url,
            "--postgres-schema",
            &schema.name,
        ],
    )
    .expect("serve from PostgreSQL");
    let mut reader = PrivClient::connect(
        &ConnectOptions::new(&server.url),
        &secret,
        Some(server_id),
        [5; 32],
    )
    .await
    .expect("connect");
    assert_eq!(reader.get("", &[2; 32]).await.expect("get"), kvs);
}

/// Moving from the reference lssd: its database and key file become ours,
/// and its clients' data (protected by their PrivClient) reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reference_database_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let server_key = lk_testkit::server_key(0x22);
    std::fs::write(path("server_key"), server_key.to_hex()).expect("key file");
    let secret = SecretKey::from_slice(&[0x31; 32]).expect("key");
    let value_secret = [5; 32];
    let public = secret.public_key(&lss_core::secp256k1::Secp256k1::signing_only());
    let plain: Vec<KeyValue> = (0..5)
        .map(|i| KeyValue::new(format!("k{i}"), i, format!("value {i}")))
        .collect();
    let rows: Vec<(String, i64, Vec<u8>)> = plain
        .iter()
        .map(|kv| {
            let stored = lss_core::value::protect(&value_secret, &kv.key, kv.version, &kv.value);
            (
                format!("{}/{}", hex::encode(public.serialize()), kv.key),
                kv.version,
                stored,
            )
        })
        .collect();
    lk_testkit::reference::write_redb(Path::new(&path("redb")), &rows);

    let data = path("data");
    let (status, err) = run(
        lssd(),
        &[
            "--data-dir",
            &data,
            "import-reference",
            "--reference-db",
            &path("redb"),
            "--reference-key",
            &path("server_key"),
        ],
    );
    assert!(status.success(), "{err}");
    assert!(
        err.contains("adopted the reference server key") && err.contains("written=5"),
        "{err}"
    );
    assert_eq!(mode(&dir.path().join("data/server_key")), 0o600);

    let server = LssdProcess::spawn(lssd(), &["--data-dir", &data]).expect("serve");
    let mut reader = PrivClient::connect(
        &ConnectOptions::new(&server.url),
        &secret,
        Some(server_key.public_key()),
        value_secret,
    )
    .await
    .expect("the reference's clients find the same server key");
    assert_eq!(reader.get("", &[1; 32]).await.expect("get"), plain);
    reader
        .put(vec![KeyValue::new("k4", 5, b"after the move")])
        .await
        .expect("versions continue");
    drop(server);

    // A data dir that already has another key is not silently re-keyed.
    let other = lk_testkit::server_key(0x23);
    std::fs::write(path("other_key"), other.to_hex()).expect("key file");
    let (status, err) = run(
        lssd(),
        &[
            "--data-dir",
            &data,
            "import-reference",
            "--reference-db",
            &path("redb"),
            "--reference-key",
            &path("other_key"),
        ],
    );
    assert!(
        !status.success() && err.contains("different server key"),
        "{err}"
    );
}

/// `--log-format json` (issue 13): every line lssd logs is one JSON object
/// with the level and the message, for log shippers; text stays the default.
#[test]
fn json_logs_are_one_object_per_line() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("lssd");
    let dir = dir.to_str().expect("utf8");
    let out = data.path().join("empty.lkx");
    let out = out.to_str().expect("utf8");
    let (status, err) = run(
        lssd(),
        &[
            "--data-dir",
            dir,
            "--log-format",
            "json",
            "export",
            "--output",
            out,
        ],
    );
    assert!(status.success(), "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"] == "export complete"
            && l["fields"]["entries"] == 0),
        "{err}"
    );
    let (status, err) = run(lssd(), &["--data-dir", dir, "verify", "--input", out]);
    assert!(status.success(), "{err}");
    assert!(
        err.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "text by default: {err}"
    );
}

/// `lssd check-config` (issue 13): the effective settings from flags,
/// environment and file, secrets redacted, without starting; a broken
/// configuration names its problem and exits 1.
#[test]
fn check_config_prints_the_effective_settings_without_secrets() {
    let data = tempfile::tempdir().expect("tempdir");
    let file = data.path().join("lssd.toml");
    std::fs::write(
        &file,
        "database = \"etcd\"\netcd_endpoints = [\"http://10.0.0.1:2379\"]\n\
         etcd_user = \"lssd\"\netcd_password = \"hunter2-etcd\"\nmax_connections = 77\n",
    )
    .expect("config");
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(lssd())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run lssd");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = file.to_str().expect("utf8");
    let (status, out, err) = check(
        &["--config", config, "check-config"],
        &[("LSSD_IDLE_TIMEOUT_SECS", "42")],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("max_connections: 77"), "file: {out}");
    assert!(out.contains("idle_timeout: 42s"), "environment: {out}");
    assert!(out.contains("\"lssd\""), "{out}");
    assert!(!out.contains("hunter2"), "a secret printed: {out}");

    let (status, out, _) = check(
        &[
            "--database",
            "postgres",
            "--postgres-url",
            "postgres://lssd:hunter2-pg@db:5432/lss",
            "check-config",
        ],
        &[],
    );
    assert!(status.success());
    assert!(
        out.contains("postgres://lssd:<redacted>@db:5432/lss"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "a secret printed: {out}");

    let missing = data.path().join("missing.pem");
    let missing = missing.to_str().expect("utf8");
    let (status, _, err) = check(
        &["--tls-cert", missing, "--tls-key", missing, "check-config"],
        &[],
    );
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("missing.pem"), "names the file: {err}");
}

/// Data commands show progress on a terminal and only their summary
/// otherwise (issue 13). The terminal is a pseudo-terminal from `script`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_commands_show_progress_on_a_terminal_only() {
    use lss_store::{RedbConfig, RedbStore, Store};
    let data = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(data.path(), RedbConfig::default()).expect("store");
    let client = lss_core::ClientId::from(
        SecretKey::from_slice(&[9; 32])
            .expect("key")
            .public_key(&lss_core::secp256k1::Secp256k1::signing_only()),
    );
    for batch in 0..30 {
        let kvs: Vec<KeyValue> = (0..100)
            .map(|i| KeyValue::new(format!("k/{batch:02}/{i:03}"), 0, vec![7; 2_000]))
            .collect();
        let put = lss_core::ValidPut::new(
            client,
            lss_core::SortedKvs::new(kvs, &lss_core::Limits::default()).expect("sorted"),
        );
        store.put(put).await.expect("put");
    }
    let file = data.path().join("six-mib.lkx");
    lss_transfer::export(&store, &file, |_| {})
        .await
        .expect("export");
    let file = file.to_str().expect("utf8");

    let piped = std::process::Command::new(lssd())
        .args(["verify", "--input", file])
        .output()
        .expect("run lssd");
    assert!(piped.status.success());
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(err.contains("undamaged"), "{err}");
    assert!(
        !err.contains("verifying:"),
        "no progress without a terminal: {err}"
    );

    let command = format!("{} verify --input {file}", lssd().display());
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    assert!(tty.status.success());
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(
        shown.contains("verifying"),
        "a progress bar on a terminal: {shown:?}"
    );
    assert!(shown.contains("undamaged"), "{shown:?}");
}
