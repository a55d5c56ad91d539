//! TLS and mutual TLS: `lssd` serves only over the configured TLS, trusts only
//! client certificates from its client CA under mTLS, and `lss-client` checks
//! the server's certificate.

use lk_testkit::pki::{Ca, Pem};
use lk_testkit::{Lssd, Options};
use lss_client::{ConnectError, ConnectOptions, PrivClient, RpcError, TlsOptions};
use lss_core::secp256k1::SecretKey;
use lss_core::KeyValue;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

fn server_tls(ca: &Ca, client_ca: Option<&Ca>) -> ServerTlsConfig {
    let Pem { cert, key } = ca.server(&["localhost"]);
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    match client_ca {
        Some(client_ca) => tls.client_ca_root(Certificate::from_pem(client_ca.cert_pem())),
        None => tls,
    }
}

fn options(url: &str, tls: TlsOptions) -> ConnectOptions {
    ConnectOptions {
        tls: Some(tls),
        ..ConnectOptions::new(url)
    }
}

fn trusting(ca: &Ca) -> TlsOptions {
    TlsOptions {
        ca_pem: Some(ca.cert_pem().into_bytes()),
        ..TlsOptions::default()
    }
}

fn with_identity(tls: TlsOptions, pem: Pem) -> TlsOptions {
    TlsOptions {
        identity_pem: Some((pem.cert.into_bytes(), pem.key.into_bytes())),
        ..tls
    }
}

async fn connect(options: &ConnectOptions) -> Result<PrivClient, ConnectError> {
    let secret = SecretKey::from_slice(&[0x11; 32]).expect("key");
    PrivClient::connect(options, &secret, None, [7; 32]).await
}

/// A put of version `version` and a get through the connection, proving the
/// session really works.
async fn round_trip(client: &mut PrivClient, version: i64) {
    let kvs = vec![KeyValue::new("tls", version, b"secret state")];
    client.put(kvs.clone()).await.expect("put over TLS");
    assert_eq!(client.get("", &[1; 32]).await.expect("get over TLS"), kvs);
}

fn is_transport(err: &ConnectError) -> bool {
    matches!(err, ConnectError::Rpc(RpcError::Transport(_)))
        || matches!(err, ConnectError::Rpc(RpcError::Status(s)) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown)
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_nobody_else() {
    let ca = Ca::new("lightkeeper test CA");
    let server = Lssd::start_with(Options {
        tls: Some(server_tls(&ca, None)),
        ..Options::default()
    })
    .await;

    let mut client = connect(&options(&server.url, trusting(&ca)))
        .await
        .expect("a client trusting the CA connects");
    assert_eq!(client.server_id(), server.server_id);
    round_trip(&mut client, 0).await;

    // A client that trusts another CA (here: the public web roots) refuses the server.
    let err = connect(&options(&server.url, TlsOptions::default()))
        .await
        .err()
        .expect("untrusted certificate must be refused");
    assert!(is_transport(&err), "{err:?}");
    let err = connect(&options(&server.url, trusting(&Ca::new("another CA"))))
        .await
        .err()
        .expect("certificate from another CA must be refused");
    assert!(is_transport(&err), "{err:?}");

    // The name is checked too: the certificate is for localhost only.
    let wrong_name = TlsOptions {
        domain: Some("lss.example.com".into()),
        ..trusting(&ca)
    };
    let err = connect(&options(&server.url, wrong_name))
        .await
        .err()
        .expect("wrong server name must be refused");
    assert!(is_transport(&err), "{err:?}");

    // Plaintext HTTP/2 to the TLS port gets nowhere.
    let plain = server.url.replace("https://", "http://");
    let err = connect(&ConnectOptions::new(plain))
        .await
        .err()
        .expect("plaintext to a TLS port must fail");
    assert!(is_transport(&err), "{err:?}");

    // And the server still serves its real clients afterwards.
    round_trip(&mut client, 1).await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = Lssd::start_with(Options {
        tls: Some(server_tls(&server_ca, Some(&client_ca))),
        ..Options::default()
    })
    .await;

    let good = with_identity(trusting(&server_ca), client_ca.client("signer-1"));
    let mut client = connect(&options(&server.url, good))
        .await
        .expect("a client with a certificate from the client CA connects");
    round_trip(&mut client, 0).await;

    // No certificate: refused during or right after the handshake.
    let err = connect(&options(&server.url, trusting(&server_ca)))
        .await
        .err()
        .expect("a client without a certificate must be refused");
    assert!(is_transport(&err), "{err:?}");

    // A certificate from a CA the server does not trust for clients.
    let stranger = with_identity(trusting(&server_ca), Ca::new("rogue CA").client("signer-1"));
    let err = connect(&options(&server.url, stranger))
        .await
        .err()
        .expect("a client certificate from another CA must be refused");
    assert!(is_transport(&err), "{err:?}");

    // A server certificate is not a client certificate, even from the right CA.
    let wrong_usage = with_identity(trusting(&server_ca), client_ca.server(&["localhost"]));
    let err = connect(&options(&server.url, wrong_usage))
        .await
        .err()
        .expect("a certificate without clientAuth usage must be refused");
    assert!(is_transport(&err), "{err:?}");

    round_trip(&mut client, 1).await;
}
