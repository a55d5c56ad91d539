//! Lightkeeper's `GetStream` extension (lss-protocol.md §5): a namespace
//! larger than any single gRPC message a stock client accepts is still read
//! whole, from one snapshot, with the same MAC as `Get`; and `lss-client`
//! falls back to `Get` on servers without the extension.

use lk_testkit::{kv, Lssd, Signer};
use lss_client::{ConnectOptions, GetError, PrivClient, RpcError};
use lss_core::secp256k1::SecretKey;
use lss_core::{shared_hmac, KeyValue, Limits};
use lss_proto::lightkeeper::lightkeeper_storage_client::LightkeeperStorageClient;
use lss_proto::lightning_storage_client::LightningStorageClient;
use lss_store::{RedbConfig, RedbStore};

const MIB: usize = 1024 * 1024;

/// Three 3 MiB entries: 9 MiB, more than tonic's default 4 MiB decode limit.
fn large_state() -> Vec<KeyValue> {
    (0..3u8)
        .map(|i| kv(&format!("state/{i}"), 0, &vec![i; 3 * MIB]))
        .collect()
}

async fn fill(server: &Lssd, signer: &Signer, kvs: &[KeyValue]) {
    let mut grpc = server.grpc().await;
    for kv in kvs {
        let reply = grpc.put(signer.put(std::slice::from_ref(kv))).await;
        assert!(reply.expect("put").into_inner().success);
    }
}

#[tokio::test]
async fn get_stream_reads_what_get_cannot_with_the_get_mac() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let signer = Signer::new(1, &server.key);
    let state = large_state();
    fill(&server, &signer, &state).await;

    // A stock client (4 MiB decode limit, as the reference's) cannot read it with Get.
    let mut stock = LightningStorageClient::new(server.channel().await);
    let err = stock
        .get(signer.get("", &[1; 32]))
        .await
        .expect_err("9 MiB in one message");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");

    // GetStream with the same stock limit: several chunks, MAC on the last only.
    let mut ext = LightkeeperStorageClient::new(server.channel().await);
    let nonce = [7u8; 32];
    let mut stream = ext
        .get_stream(signer.get("", &nonce))
        .await
        .expect("get_stream")
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        chunks.push(chunk);
    }
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(rest.iter().all(|c| c.hmac.is_empty() && !c.kvs.is_empty()));
    let kvs: Vec<KeyValue> = chunks
        .iter()
        .flat_map(|c| c.kvs.iter().cloned().map(KeyValue::from))
        .collect();
    assert_eq!(kvs, state);
    assert!(shared_hmac(&signer.shared, &nonce, &kvs).verify(&last.hmac));

    // Prefix semantics are Get's.
    let mut stream = ext
        .get_stream(signer.get("state/1", &nonce))
        .await
        .expect("get_stream")
        .into_inner();
    let chunk = stream.message().await.expect("chunk").expect("one chunk");
    assert_eq!(chunk.kvs.len(), 1);
    assert!(stream.message().await.expect("end").is_none());

    // Auth is Get's: a wrong token is refused the same way.
    let mut bad = signer.get("", &nonce);
    if let Some(auth) = bad.auth.as_mut() {
        auth.token[0] ^= 1;
    }
    let err = ext.get_stream(bad).await.expect_err("bad token");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut no_auth = signer.get("", &nonce);
    no_auth.auth = None;
    let err = ext.get_stream(no_auth).await.expect_err("no auth");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn priv_client_restores_a_large_state_and_bounds_what_it_accepts() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let secret = SecretKey::from_slice(&[0x44; 32]).expect("key");
    let mut client = PrivClient::connect(&ConnectOptions::new(&server.url), &secret, None, [1; 32])
        .await
        .expect("connect");
    // 6 MiB in entries of 512 KiB: every chunk fits a 1 MiB message.
    let state: Vec<KeyValue> = (0..12u8)
        .map(|i| kv(&format!("state/{i:02}"), 0, &vec![i; MIB / 2]))
        .collect();
    for kv in &state {
        client.put(vec![kv.clone()]).await.expect("put");
    }
    assert_eq!(client.get("", &[2; 32]).await.expect("get"), state);

    // A client that accepts at most 1 MiB reads each chunk but refuses the
    // 6 MiB total, so a hostile server cannot make it buffer without bound.
    let small = ConnectOptions {
        max_reply_bytes: MIB,
        ..ConnectOptions::new(&server.url)
    };
    let mut small = PrivClient::connect(&small, &secret, None, [1; 32])
        .await
        .expect("connect");
    let err = small.get("", &[2; 32]).await.expect_err("too large");
    assert!(
        matches!(err, GetError::Rpc(RpcError::ReplyTooLarge(n)) if n == MIB),
        "{err:?}"
    );
}

/// Against a server that serves only `lss.LightningStorage` (as the
/// reference does), `lss-client` reads with `Get`.
#[tokio::test]
async fn client_falls_back_to_get_without_the_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(dir.path(), RedbConfig::default()).expect("open");
    let key = lk_testkit::server_key(0x22);
    let service = lssd::service::LssService::new(store, key.clone(), Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut raw = LightkeeperStorageClient::connect(url.clone())
        .await
        .expect("connect");
    let signer = Signer::new(1, &key);
    let err = raw
        .get_stream(signer.get("", &[0; 32]))
        .await
        .expect_err("no extension here");
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let secret = SecretKey::from_slice(&[0x44; 32]).expect("key");
    let mut client = PrivClient::connect(&ConnectOptions::new(&url), &secret, None, [1; 32])
        .await
        .expect("connect");
    let kvs = vec![kv("a", 0, b"x"), kv("b", 0, b"y")];
    client.put(kvs.clone()).await.expect("put");
    assert_eq!(client.get("", &[3; 32]).await.expect("first get"), kvs);
    assert_eq!(
        client.get("b", &[4; 32]).await.expect("second get"),
        kvs[1..]
    );
}

/// Verifiable log: a `GetStream` with `verify` carries the signed
/// checkpoint on its last chunk, over exactly the entries streamed, so a
/// state larger than any one message is read verified; a verifying
/// `PrivClient` reads it that way, and a chunk dropped or altered on the way
/// fails the check.
#[tokio::test]
async fn a_verified_stream_is_signed_over_exactly_what_it_sent() {
    use lss_verify::{check, Expect, StateLeaf};
    let server = Lssd::start(0x22, Limits::default()).await;
    let signer = Signer::new(1, &server.key);
    let state = large_state();
    fill(&server, &signer, &state).await;

    let mut ext =
        LightkeeperStorageClient::new(server.channel().await).max_decoding_message_size(8 * MIB);
    let nonce = [7u8; 32];
    let mut request = signer.get("", &nonce);
    request.verify = Some(lss_proto::Verify::default());
    let mut stream = ext
        .get_stream(request)
        .await
        .expect("get_stream")
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        chunks.push(chunk);
    }
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let (last, rest) = chunks.split_last().expect("chunks");
    assert!(rest.iter().all(|c| c.attestation.is_none()));
    let attestation = last
        .attestation
        .clone()
        .expect("the last chunk is attested");
    let kvs: Vec<KeyValue> = chunks
        .iter()
        .flat_map(|c| c.kvs.iter().cloned().map(KeyValue::from))
        .collect();
    assert_eq!(kvs, state);
    let leaves = |kvs: &[KeyValue]| -> Vec<StateLeaf> {
        kvs.iter()
            .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
            .collect()
    };
    let client = signer.public.serialize();
    let server_id = server.key.server_id();
    let verify = |answer: &[StateLeaf]| {
        check(
            &server_id,
            &client,
            None,
            &attestation.checkpoint,
            &attestation.bundle,
            Expect::Read {
                prefix: "",
                nonce: &nonce,
                answer,
            },
        )
    };
    verify(&leaves(&kvs)).expect("the streamed answer verifies");
    // A chunk dropped, or a value altered, on the way: refused.
    let dropped: Vec<KeyValue> = kvs.iter().skip(1).cloned().collect();
    assert!(verify(&leaves(&dropped)).is_err());
    let mut altered = kvs.clone();
    altered[2].value[0] ^= 1;
    assert!(verify(&leaves(&altered)).is_err());

    // A verifying PrivClient reads the 9 MiB state through the stream.
    let secret = SecretKey::from_slice(&[2; 32]).expect("key");
    let options = ConnectOptions::new(server.url.clone());
    let mut client = PrivClient::connect(&options, &secret, None, [5; 32])
        .await
        .expect("connect")
        .verifying(None);
    let big: Vec<KeyValue> = (0..3u8)
        .map(|i| kv(&format!("big/{i}"), 0, &vec![i; 3 * MIB]))
        .collect();
    for kv in &big {
        client.put(vec![kv.clone()]).await.expect("put");
    }
    let read = client
        .get("big/", &[3; 32])
        .await
        .expect("a verified 9 MiB read");
    assert_eq!(read.len(), 3);
    assert_eq!(read[2].value, vec![2; 3 * MIB]);
}
