//! The crates.io `lightning-storage-server` 0.5.1 `Client` and `PrivClient`
//! against our `lssd`, asserting what that client really returns.

use lightning_storage_server::client::{Auth, Client, ClientError, PrivAuth, PrivClient};
use lightning_storage_server::Value;
use lss_core::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lss_core::Limits;

async fn start() -> lk_testkit::Lssd {
    lk_testkit::Lssd::start(0x22, Limits::default()).await
}

fn client_key(byte: u8) -> SecretKey {
    SecretKey::from_slice(&[byte; 32]).expect("key")
}

fn value(version: i64, bytes: &[u8]) -> Value {
    Value {
        version,
        value: bytes.to_vec(),
    }
}

fn plain(kvs: Vec<(String, Value)>) -> Vec<(String, i64, Vec<u8>)> {
    kvs.into_iter()
        .map(|(k, v)| (k, v.version, v.value))
        .collect()
}

const HMAC_SECRET: [u8; 32] = [0x33; 32];

async fn priv_client(server: &lk_testkit::Lssd, byte: u8) -> PrivClient {
    let auth = PrivAuth::new_for_client(&client_key(byte), &server.server_id);
    PrivClient::new(&server.url, auth).await.expect("connect")
}

#[tokio::test]
async fn info_and_ping() {
    let server = start().await;
    let (server_id, version) = Client::get_info(&server.url).await.expect("info");
    assert_eq!(server_id, server.server_id);
    assert_eq!(version, "0.1");
    assert_eq!(
        Client::ping(&server.url, "hello").await.expect("ping"),
        "hello"
    );
}

#[tokio::test]
async fn priv_client_put_get_and_conflicts() {
    let server = start().await;
    let mut client = priv_client(&server, 0x11).await;
    // Their PrivClient sorts, encrypts, MACs and checks our server MAC.
    client
        .put(
            &HMAC_SECRET,
            vec![
                ("xy2".into(), value(0, b"\x22")),
                ("xx1".into(), value(0, b"\x11")),
            ],
        )
        .await
        .expect("put");
    client
        .put(&HMAC_SECRET, vec![("xx1".into(), value(1, b"\x12"))])
        .await
        .expect("update");
    let got = client.get(&HMAC_SECRET, "x".into()).await.expect("get");
    assert_eq!(
        plain(got),
        vec![("xx1".into(), 1, vec![0x12]), ("xy2".into(), 0, vec![0x22])]
    );
    let got = client.get(&HMAC_SECRET, "xy".into()).await.expect("get");
    assert_eq!(plain(got), vec![("xy2".into(), 0, vec![0x22])]);

    // Conflict on an existing key: their client decrypts our conflict value.
    match client
        .put(&HMAC_SECRET, vec![("xx1".into(), value(1, b"\x99"))])
        .await
    {
        Err(ClientError::PutConflict(conflicts)) => {
            assert_eq!(plain(conflicts), vec![("xx1".into(), 1, vec![0x12])])
        }
        other => panic!("expected PutConflict, got {other:?}"),
    }
    // Conflict on a missing key: we send version -1 and an empty value, as the
    // reference server does; their PrivClient then fails to "decrypt" the empty
    // value and reports InvalidHmac(key, -1) (a known client bug, notes §4.11).
    match client
        .put(&HMAC_SECRET, vec![("missing".into(), value(3, b"\x01"))])
        .await
    {
        Err(ClientError::InvalidHmac(key, -1)) => assert_eq!(key, "missing"),
        other => panic!("expected InvalidHmac(missing, -1), got {other:?}"),
    }
    // Nothing of the refused puts was written.
    let got = client.get(&HMAC_SECRET, String::new()).await.expect("get");
    assert_eq!(
        plain(got),
        vec![("xx1".into(), 1, vec![0x12]), ("xy2".into(), 0, vec![0x22])]
    );
}

#[tokio::test]
async fn unprivileged_client_sees_raw_conflicts_and_macs() {
    let server = start().await;
    let secret = client_key(0x11);
    let priv_auth = PrivAuth::new_for_client(&secret, &server.server_id);
    let shared = lss_core::SharedSecret::from_bytes(
        priv_auth
            .shared_secret
            .clone()
            .try_into()
            .expect("32 bytes"),
    );
    let client_id = PublicKey::from_secret_key(&Secp256k1::new(), &secret);
    let mut client = Client::new(
        &server.url,
        Auth {
            client_id,
            token: priv_auth.auth_token(),
        },
    )
    .await
    .expect("connect");

    let kvs = vec![("a".to_string(), value(0, b"x"))];
    let core_kvs = [lss_core::KeyValue::new("a", 0, *b"x")];
    let client_mac = lss_core::shared_hmac(&shared, lss_core::PUT_CLIENT_NONCE, &core_kvs);
    let server_mac = client
        .put(kvs.clone(), client_mac.as_bytes())
        .await
        .expect("put");
    assert!(
        lss_core::shared_hmac(&shared, lss_core::PUT_SERVER_NONCE, &core_kvs).verify(&server_mac)
    );

    match client.put(kvs, client_mac.as_bytes()).await {
        Err(ClientError::PutConflict(c)) => {
            assert_eq!(plain(c), vec![("a".into(), 0, b"x".to_vec())])
        }
        other => panic!("expected PutConflict, got {other:?}"),
    }
    let missing = vec![("m".to_string(), value(1, b""))];
    let mac = lss_core::shared_hmac(
        &shared,
        lss_core::PUT_CLIENT_NONCE,
        &[lss_core::KeyValue::new("m", 1, *b"")],
    );
    match client.put(missing, mac.as_bytes()).await {
        Err(ClientError::PutConflict(c)) => assert_eq!(plain(c), vec![("m".into(), -1, vec![])]),
        other => panic!("expected PutConflict, got {other:?}"),
    }
    // Empty put: success with the empty-list server MAC.
    let empty_mac = lss_core::shared_hmac(&shared, lss_core::PUT_CLIENT_NONCE, &[]);
    let server_mac = client
        .put(vec![], empty_mac.as_bytes())
        .await
        .expect("empty put");
    assert!(lss_core::shared_hmac(&shared, lss_core::PUT_SERVER_NONCE, &[]).verify(&server_mac));
    // A wrong client MAC is refused with the reference's status.
    match client
        .put(vec![("b".into(), value(0, b""))], &[0; 32])
        .await
    {
        Err(ClientError::Tonic(status)) => {
            // Their tonic (0.12) is not ours; compare the numeric gRPC code.
            assert_eq!(status.code() as i32, tonic::Code::InvalidArgument as i32);
            assert_eq!(status.message(), "invalid client HMAC");
        }
        other => panic!("expected a status, got {other:?}"),
    }
    let nonce = [5u8; 32];
    let (got, mac) = client.get(String::new(), &nonce).await.expect("get");
    assert_eq!(plain(got), vec![("a".into(), 0, b"x".to_vec())]);
    assert!(lss_core::shared_hmac(&shared, &nonce, &core_kvs).verify(&mac));
}

#[tokio::test]
async fn empty_put_through_priv_client() {
    let server = start().await;
    let mut client = priv_client(&server, 0x11).await;
    client
        .put(&HMAC_SECRET, vec![])
        .await
        .expect("empty put verifies");
    assert!(client
        .get(&HMAC_SECRET, String::new())
        .await
        .expect("get")
        .is_empty());
}

/// A value close to the 4 MiB that stock tonic clients can send and decode.
#[tokio::test]
async fn value_close_to_four_mib() {
    let server = start().await;
    let mut client = priv_client(&server, 0x11).await;
    let big: Vec<u8> = (0..4 * 1024 * 1024 - 4096)
        .map(|i| (i % 251) as u8)
        .collect();
    client
        .put(&HMAC_SECRET, vec![("big".into(), value(0, &big))])
        .await
        .expect("put");
    let got = client.get(&HMAC_SECRET, "big".into()).await.expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.value, big);
}

/// Our PrivClient and theirs read each other's protected values.
#[tokio::test]
async fn our_priv_client_and_theirs_share_data() {
    let server = start().await;
    let secret = client_key(0x44);
    let value_secret = lss_core::value::secret_for_key(&secret);
    let mut theirs = priv_client(&server, 0x44).await;
    theirs
        .put(
            &value_secret,
            vec![("theirs".into(), value(0, b"from vls"))],
        )
        .await
        .expect("their put");
    let options = lss_client::ConnectOptions::new(server.url.clone());
    let mut ours =
        lss_client::PrivClient::connect(&options, &secret, Some(server.server_id), value_secret)
            .await
            .expect("connect");
    ours.put(vec![lss_core::KeyValue::new(
        "ours",
        0,
        *b"from lightkeeper",
    )])
    .await
    .expect("our put");
    let got = ours.get("", &[1; 32]).await.expect("our get");
    assert_eq!(
        got,
        vec![
            lss_core::KeyValue::new("ours", 0, *b"from lightkeeper"),
            lss_core::KeyValue::new("theirs", 0, *b"from vls")
        ]
    );
    let got = theirs
        .get(&value_secret, String::new())
        .await
        .expect("their get");
    assert_eq!(
        plain(got),
        vec![
            ("ours".into(), 0, b"from lightkeeper".to_vec()),
            ("theirs".into(), 0, b"from vls".to_vec())
        ]
    );
}

/// lss-protocol.md §5: a state over 4 MiB is beyond what their client can read
/// with one `Get` (tonic's default decode limit), and it says so as an error
/// rather than returning partial data; our client reads what they wrote
/// through `GetStream`.
#[tokio::test]
async fn a_state_over_4_mib_is_readable_by_our_client_only() {
    let server = start().await;
    let secret = client_key(0x55);
    let value_secret = lss_core::value::secret_for_key(&secret);
    let mut theirs = priv_client(&server, 0x55).await;
    let chunk = vec![0xab; 1_500_000];
    for n in 0..3 {
        theirs
            .put(
                &value_secret,
                vec![(format!("state/{n}"), value(0, &chunk))],
            )
            .await
            .expect("their put");
    }
    let err = theirs
        .get(&value_secret, String::new())
        .await
        .expect_err("4.5 MiB in one Get reply");
    assert!(
        // Their tonic is 0.12, so compare the numeric code (OUT_OF_RANGE).
        matches!(&err, ClientError::Tonic(s) if s.code() as i32 == tonic::Code::OutOfRange as i32),
        "{err:?}"
    );

    let options = lss_client::ConnectOptions::new(server.url.clone());
    let mut ours =
        lss_client::PrivClient::connect(&options, &secret, Some(server.server_id), value_secret)
            .await
            .expect("connect");
    let got = ours.get("", &[1; 32]).await.expect("our get");
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|kv| kv.version == 0 && kv.value == chunk));
}
