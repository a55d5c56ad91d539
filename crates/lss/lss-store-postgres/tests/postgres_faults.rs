//! The PostgreSQL backend under faults, against a real PostgreSQL reached
//! through a TCP proxy that can cut connections: an outage is `UNAVAILABLE`
//! while it lasts and full service follows without a restart; broken
//! connections and a COMMIT whose answer was lost are resolved inside the
//! store; migrations are versioned, idempotent and refuse a newer schema.

use std::sync::Arc;
use std::time::Duration;

use lk_testkit::net::FaultProxy;
use lk_testkit::postgres::{self, Schema};
use lk_testkit::{kv, Lssd, Options, Signer};
use lss_core::PutOutcome;
use lss_store::conformance::{client, put};
use lss_store::Store;
use lss_store_postgres::{OpenError, PostgresConfig, PostgresStore, MIGRATIONS};

async fn proxied(schema: &Schema) -> (FaultProxy, PostgresStore) {
    let proxy = FaultProxy::start(postgres::server_addr(&schema.url)).await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        connect_timeout: Duration::from_secs(1),
        pool_size: 4,
        // Its own session name, so that killing its sessions touches no other
        // test's (tests share the server and run in parallel).
        ..PostgresConfig::new(format!(
            "{} application_name={}",
            postgres::via(&schema.url, proxy.addr),
            session_name(schema)
        ))
    };
    let store = PostgresStore::open(config).await.expect("open");
    (proxy, store)
}

fn session_name(schema: &Schema) -> String {
    format!("lssd/test/{}", schema.name)
}

async fn committed<S: Store>(store: &S, version: i64, value: &[u8]) {
    let outcome = store
        .put(put(client(1), vec![kv("k", version, value)]))
        .await
        .expect("put");
    assert_eq!(outcome, PutOutcome::Committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_service_resumes_without_restart() {
    let schema = Schema::fresh().await;
    let (proxy, store) = proxied(&schema).await;
    let server = Lssd::serve(Arc::new(store), Options::default()).await;
    let signer = Signer::new(1, &server.key);
    let mut grpc = server.grpc().await;
    assert!(
        grpc.put(signer.put(&[kv("k", 0, b"before")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );

    proxy.set_down(true);
    let err = grpc
        .put(signer.put(&[kv("k", 1, b"during")]))
        .await
        .expect_err("put while the database is down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let err = grpc
        .get(signer.get("", &[0; 32]))
        .await
        .expect_err("get while the database is down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    grpc.ping(lss_proto::PingRequest::default())
        .await
        .expect("ping needs no database");

    proxy.set_down(false);
    assert_eq!(signer.dump(&mut grpc).await, vec![kv("k", 0, b"before")]);
    assert!(
        grpc.put(signer.put(&[kv("k", 1, b"after")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    assert_eq!(signer.dump(&mut grpc).await, vec![kv("k", 1, b"after")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connections_are_retried_inside_the_store() {
    let schema = Schema::fresh().await;
    let (proxy, store) = proxied(&schema).await;
    committed(&store, 0, b"a").await;
    for version in 1..=3 {
        // Every pooled connection dies; the next put and get still succeed.
        proxy.cut_all();
        committed(&store, version, b"b").await;
        proxy.cut_all();
        let got = store.get(client(1), String::new()).await.expect("get");
        assert_eq!(got, vec![kv("k", version, b"b")]);
    }
    // Connections killed by the server itself are handled the same way.
    let admin = schema.client().await;
    let killed = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&session_name(&schema)],
        )
        .await
        .expect("terminate");
    assert!(
        killed >= 1,
        "the store's sessions were found and terminated"
    );
    committed(&store, 4, b"c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_reported_committed() {
    let schema = Schema::fresh().await;
    let (proxy, store) = proxied(&schema).await;
    committed(&store, 0, b"v0").await;
    // The server receives COMMIT and commits; the store never hears back.
    proxy.cut_after_next(b"COMMIT");
    committed(&store, 1, b"v1").await;
    assert_eq!(proxy.pattern_cuts(), 1, "the COMMIT was cut");
    let got = store.get(client(1), String::new()).await.expect("get");
    assert_eq!(got, vec![kv("k", 1, b"v1")]);
    // An ordinary duplicate (nothing in doubt) is still a conflict.
    let outcome = store
        .put(put(client(1), vec![kv("k", 1, b"v1")]))
        .await
        .expect("put");
    assert_eq!(outcome, PutOutcome::Conflict(vec![kv("k", 1, b"v1")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_fails_open_with_a_clear_error() {
    let schema = Schema::fresh().await;
    let proxy = FaultProxy::start(postgres::server_addr(&schema.url)).await;
    proxy.set_down(true);
    let config = PostgresConfig {
        schema: schema.name.clone(),
        connect_timeout: Duration::from_millis(500),
        ..PostgresConfig::new(postgres::via(&schema.url, proxy.addr))
    };
    let err = PostgresStore::open(config)
        .await
        .err()
        .expect("open must fail");
    assert!(matches!(err, OpenError::Connect(_)), "{err:?}");
    assert!(
        err.to_string().contains("cannot connect to PostgreSQL"),
        "{err}"
    );
    let bad = PostgresConfig::new("postgres://u@h:notaport/db");
    let err = PostgresStore::open(bad).await.err().expect("bad URL");
    assert!(matches!(err, OpenError::Url(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_versioned_idempotent_and_refuse_a_newer_schema() {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    };
    // Two servers starting at once on an empty database: both open.
    let (a, b) = tokio::join!(
        PostgresStore::open(config.clone()),
        PostgresStore::open(config.clone())
    );
    let store = a.expect("first open");
    drop(b.expect("concurrent open"));
    committed(&store, 0, b"kept").await;
    drop(store);
    let store = PostgresStore::open(config.clone()).await.expect("reopen");
    let got = store.get(client(1), String::new()).await.expect("get");
    assert_eq!(got, vec![kv("k", 0, b"kept")]);

    let admin = schema.client().await;
    let versions: Vec<i32> = admin
        .query(
            &format!(
                "SELECT version FROM \"{}\".migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .expect("migrations")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, known);

    admin
        .execute(
            &format!(
                "INSERT INTO \"{}\".migrations (version) VALUES (999)",
                schema.name
            ),
            &[],
        )
        .await
        .expect("simulate a newer lssd");
    let err = PostgresStore::open(config).await.err().expect("too new");
    assert!(
        matches!(err, OpenError::TooNew { found: 999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade lssd"), "{err}");
}

/// Byte order, not the database's collation, and `%`/`_` are literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_sort_by_bytes_and_prefixes_are_literal() {
    let schema = Schema::fresh().await;
    let config = PostgresConfig {
        schema: schema.name.clone(),
        ..PostgresConfig::new(schema.url.clone())
    };
    let store = PostgresStore::open(config).await.expect("open");
    let keys = ["B", "_x", "a", "a%", "aX", "ab", "z", "~", "é", "€"];
    let mut sorted = keys.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let kvs = sorted.iter().map(|k| kv(k, 0, k.as_bytes())).collect();
    assert_eq!(
        store.put(put(client(1), kvs)).await.expect("put"),
        PutOutcome::Committed
    );
    let all: Vec<String> = store
        .get(client(1), String::new())
        .await
        .expect("get")
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(all, sorted);
    let literal = |prefix: &str| {
        let store = &store;
        let prefix = prefix.to_owned();
        async move {
            store
                .get(client(1), prefix)
                .await
                .expect("get")
                .into_iter()
                .map(|kv| kv.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(literal("a%").await, vec!["a%"]);
    assert_eq!(literal("_").await, vec!["_x"]);
    assert_eq!(literal("a").await, vec!["a", "a%", "aX", "ab"]);
    assert_eq!(literal("%").await, Vec::<String>::new());
}

/// TLS to the database, against the local server's own certificate (Debian
/// configures PostgreSQL with ssl = on and the snakeoil certificate for
/// `localhost`): verified with that CA the store connects, and every session
/// is encrypted; with a CA that did not sign it, or the public web roots, the
/// store refuses to connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_is_verified() {
    const CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let schema = Schema::fresh().await;
    let admin = schema.client().await;
    let ssl: String = admin
        .query_one("SHOW ssl", &[])
        .await
        .expect("show ssl")
        .get(0);
    assert_eq!(
        ssl, "on",
        "this test needs PostgreSQL with ssl = on (Debian's default, certificate {CERT})"
    );
    assert!(
        std::path::Path::new(CERT).exists(),
        "{CERT} is missing: install Debian's ssl-cert package or point the test at the server's CA"
    );
    let name = format!("lk-tls-test-{}", std::process::id());
    let url = format!(
        "postgres://postgres@localhost:5432/test?sslmode=require&hostaddr=127.0.0.1&application_name={name}"
    );
    let config = |tls| PostgresConfig {
        schema: schema.name.clone(),
        connect_timeout: Duration::from_secs(2),
        tls,
        ..PostgresConfig::new(url.clone())
    };
    let store = PostgresStore::open(config(lss_store_postgres::PostgresTls::Ca(CERT.into())))
        .await
        .expect("TLS with the server's CA");
    committed(&store, 0, b"over TLS").await;
    let unencrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = $1 AND NOT ssl",
            &[&name],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert_eq!(unencrypted, 0, "every lssd session is encrypted");
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = $1 AND ssl",
            &[&name],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted >= 1, "the store's sessions are there, encrypted");

    let other_ca = std::env::temp_dir().join(format!("lk-other-ca-{}.pem", std::process::id()));
    std::fs::write(
        &other_ca,
        lk_testkit::pki::Ca::new("not the server's CA").cert_pem(),
    )
    .expect("write CA");
    let err = PostgresStore::open(config(lss_store_postgres::PostgresTls::Ca(
        other_ca.clone(),
    )))
    .await
    .err()
    .expect("a CA that did not sign the server's certificate");
    assert!(matches!(err, OpenError::Connect(_)), "{err}");
    let _ = std::fs::remove_file(other_ca);
    let err = PostgresStore::open(config(lss_store_postgres::PostgresTls::FromUrl))
        .await
        .err()
        .expect("the snakeoil certificate is not in the web PKI");
    assert!(matches!(err, OpenError::Connect(_)), "{err}");
}
