//! The TLS listener against a real client (ureq on rustls, written by
//! others): served with a trusted certificate, refused without one, with
//! mutual TLS enforced; silent and garbage-speaking clients do not stop it;
//! settings that cannot work fail with a message naming the file.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_tls::{ClientTls, TlsError, TlsFiles};
use lk_testkit::pki::{Ca, Pem};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

async fn start(tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                format!("hello {}", peer.ip())
            },
        ),
    );
    tokio::spawn(http_tls::serve(listener, app, Some(tls)));
    addr
}

/// GET https://localhost:PORT/hello trusting `ca`, presenting `client`,
/// through the crate's client side (`ClientTls` on a ureq agent).
async fn get(addr: SocketAddr, ca: &str, client: Option<&Pem>) -> Result<String, String> {
    let tls = ClientTls::from_pem(
        Some(ca.as_bytes()),
        client.map(|pem| (pem.cert.as_bytes(), pem.key.as_bytes())),
    )
    .expect("client TLS settings");
    let agent = tls.agent(ureq::Agent::config_builder());
    let url = format!("https://localhost:{}/hello", addr.port());
    tokio::task::spawn_blocking(move || {
        agent
            .get(&url)
            .call()
            .map_err(|e| e.to_string())?
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    })
    .await
    .expect("join")
}

fn server_files(files: &Files, ca: &Ca) -> (PathBuf, PathBuf) {
    let pem = ca.server(&["localhost"]);
    (
        files.write("cert.pem", &pem.cert),
        files.write("key.pem", &pem.key),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_to_a_client_that_trusts_the_certificate_only() {
    let files = Files::new();
    let ca = Ca::new("test CA");
    let (cert, key) = server_files(&files, &ca);
    let tls = TlsFiles::from_settings(Some(&cert), Some(&key), None)
        .expect("settings")
        .expect("tls")
        .load()
        .expect("load");
    let addr = start(tls).await;
    assert_eq!(
        get(addr, &ca.cert_pem(), None).await.expect("served"),
        "hello 127.0.0.1"
    );
    let stranger = Ca::new("another CA");
    let err = get(addr, &stranger.cert_pem(), None)
        .await
        .expect_err("untrusted");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    let files = Files::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let (cert, key) = server_files(&files, &ca);
    let client_ca = files.write("clients.pem", &clients.cert_pem());
    let tls = TlsFiles::from_settings(Some(&cert), Some(&key), Some(&client_ca))
        .expect("settings")
        .expect("tls")
        .load()
        .expect("load");
    let addr = start(tls).await;
    get(addr, &ca.cert_pem(), None)
        .await
        .expect_err("no client certificate");
    let forged = Ca::new("client CA").client("alice");
    get(addr, &ca.cert_pem(), Some(&forged))
        .await
        .expect_err("a certificate of another CA with the same name");
    let alice = clients.client("alice");
    assert_eq!(
        get(addr, &ca.cert_pem(), Some(&alice))
            .await
            .expect("admitted"),
        "hello 127.0.0.1"
    );
}

/// A client that connects and says nothing, and one that sends garbage in
/// place of a ClientHello, leave the listener serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_garbage_clients_do_not_stop_the_listener() {
    let files = Files::new();
    let ca = Ca::new("test CA");
    let (cert, key) = server_files(&files, &ca);
    let tls = TlsFiles {
        cert,
        key,
        client_ca: None,
    }
    .load()
    .expect("load");
    let addr = start(tls).await;
    let silent: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut garbage = std::net::TcpStream::connect(addr).expect("connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff])
        .expect("write");
    garbage.write_all(&vec![0xAB; 70_000]).expect("write");
    let mut sink = Vec::new();
    let _ = garbage.read_to_end(&mut sink); // closed by the server
    assert_eq!(
        get(addr, &ca.cert_pem(), None).await.expect("served"),
        "hello 127.0.0.1"
    );
    drop(silent);
}

#[test]
fn plain_http_is_for_loopback_unless_asked_for() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("address");
    for loopback in ["127.0.0.1:9940", "[::1]:9940"] {
        http_tls::check_plaintext(addr(loopback), false, false).expect("loopback");
    }
    let public = addr("0.0.0.0:9940");
    let err = http_tls::check_plaintext(public, false, false).expect_err("public, plain");
    assert!(err.to_string().contains("--danger-plaintext"), "{err}");
    http_tls::check_plaintext(public, true, false).expect("with TLS");
    http_tls::check_plaintext(public, false, true).expect("asked for");
}

#[test]
fn settings_that_cannot_work_are_refused_with_the_reason() {
    let p = |s: &str| PathBuf::from(s);
    let none: Option<&Path> = None;
    assert!(TlsFiles::from_settings(none, none, none)
        .expect("plain")
        .is_none());
    for (cert, key, ca, want) in [
        (Some(p("c")), None, None, "--tls-cert needs --tls-key"),
        (None, Some(p("k")), None, "--tls-key needs --tls-cert"),
        (None, None, Some(p("a")), "--tls-client-ca needs"),
    ] {
        let err = TlsFiles::from_settings(cert.as_deref(), key.as_deref(), ca.as_deref())
            .expect_err("inconsistent");
        assert!(err.to_string().contains(want), "{err}");
    }

    let files = Files::new();
    let ca = Ca::new("test CA");
    let (cert, key) = server_files(&files, &ca);
    let load = |cert: &Path, key: &Path| {
        TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: None,
        }
        .load()
    };
    let missing = files.dir.path().join("missing.pem");
    let err = load(&missing, &key).expect_err("missing");
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let garbage = files.write("garbage.pem", "not PEM at all\n");
    let err = load(&garbage, &key).expect_err("no certificate");
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    let err = load(&cert, &garbage).expect_err("no key");
    assert!(err.to_string().contains("no private key"), "{err}");
    // Swapped files: a certificate where the key goes.
    let err = load(&cert, &cert).expect_err("cert as key");
    assert!(err.to_string().contains("no private key"), "{err}");
    // A key that is not the certificate's.
    let other = ca.server(&["localhost"]);
    let other_key = files.write("other-key.pem", &other.key);
    let err = load(&cert, &other_key).expect_err("mismatched key");
    assert!(matches!(err, TlsError::Config(_)), "{err}");
    // A truncated certificate.
    let pem = std::fs::read_to_string(&cert).expect("read");
    let cut = files.write("cut.pem", &pem[..pem.len() / 2]);
    load(&cut, &key).expect_err("truncated");
}

#[test]
fn client_settings_that_cannot_work_are_refused_with_the_reason() {
    let ca = Ca::new("test CA");
    let alice = ca.client("alice");
    for (ca_pem, client, want) in [
        (
            Some("junk".as_bytes()),
            None,
            "CA certificate: no CERTIFICATE",
        ),
        (
            None,
            Some((alice.key.as_bytes(), alice.key.as_bytes())),
            "client certificate",
        ),
        (
            None,
            Some((alice.cert.as_bytes(), "junk".as_bytes())),
            "client key",
        ),
    ] {
        let err = ClientTls::from_pem(ca_pem, client).expect_err("refused");
        assert!(err.to_string().contains(want), "{err}");
    }
    let tls = ClientTls::from_pem(
        Some(ca.cert_pem().as_bytes()),
        Some((alice.cert.as_bytes(), alice.key.as_bytes())),
    )
    .expect("usable");
    assert_eq!(
        format!("{tls:?}"),
        "ClientTls(custom)",
        "no key material shown"
    );
}
