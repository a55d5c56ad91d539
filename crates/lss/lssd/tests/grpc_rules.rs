//! Every rule of lss-protocol.md §3 and §4, over gRPC against a running server.

use lk_testkit::{kv, Lssd, Signer};
use lss_core::{shared_hmac, KeyValue, Limits, PUT_SERVER_NONCE};
use tonic::Code;

async fn status_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("expected an error status");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn ping_and_info() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let reply = grpc
        .ping(lss_proto::PingRequest {
            message: "hello ✓".into(),
        })
        .await
        .expect("ping");
    assert_eq!(reply.into_inner().message, "hello ✓");
    let info = grpc
        .info(lss_proto::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.version, "0.1");
    assert_eq!(
        hex::encode(info.server_id),
        "02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27"
    );
}

/// The spec's vectors, end to end: client 0x11, server 0x22.
#[tokio::test]
async fn put_and_get_carry_the_spec_macs() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(0x11, &server.key);
    let kvs = [kv("a", 0, b"x"), kv("b", 1, b"")];
    // "b" at version 1 is a conflict on an empty store: write b@0 first with its own put.
    let first = grpc
        .put(signer.put(&[kv("b", 0, b"")]))
        .await
        .expect("put")
        .into_inner();
    assert!(first.success);
    let reply = grpc.put(signer.put(&kvs)).await.expect("put").into_inner();
    assert!(reply.success);
    assert!(reply.conflicts.is_empty());
    assert_eq!(
        hex::encode(&reply.hmac),
        "3a772eb00e86713a6d4cd6e722032cd2c8d213c9154a892f763bc095f619581a"
    );
    let got = grpc
        .get(signer.get("", &[0; 32]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        got.kvs.into_iter().map(KeyValue::from).collect::<Vec<_>>(),
        kvs
    );
    assert_eq!(
        hex::encode(&got.hmac),
        "91f9adc0f7470df10353a68f72dee9712bb05c88e0d23181971c8c138212194d"
    );
    // GetStream computes the same MACs page by page (the framed one commits
    // to the entry count before the entries).
    let mut ext = lss_proto::lightkeeper::lightkeeper_storage_client::LightkeeperStorageClient::new(
        server.channel().await,
    );
    for (framed, expected) in [
        (
            true,
            "abf046f70e582b99f4f2096d5855f249b8615d3995043a3122f3f0dcd36e29a8",
        ),
        (
            false,
            "91f9adc0f7470df10353a68f72dee9712bb05c88e0d23181971c8c138212194d",
        ),
    ] {
        let mut get = signer.get("", &[0; 32]);
        get.framed_mac = framed;
        let mut stream = ext.get_stream(get).await.expect("get_stream").into_inner();
        let mut last = None;
        while let Some(chunk) = stream.message().await.expect("chunk") {
            last = Some(chunk);
        }
        assert_eq!(hex::encode(last.expect("a chunk").hmac), expected);
    }
}

#[tokio::test]
async fn empty_put_succeeds_with_the_empty_mac() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(0x11, &server.key);
    let reply = grpc.put(signer.put(&[])).await.expect("put").into_inner();
    assert!(reply.success);
    assert_eq!(
        hex::encode(&reply.hmac),
        "2f781b8b59d17d8f314c60d753985eda2b5e8bae8df6bdf11e048192f0e0dbf8"
    );
    assert_eq!(signer.dump(&mut grpc).await, vec![]);
}

#[tokio::test]
async fn conflicts_list_offenders_in_request_order_with_no_mac() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    assert!(
        grpc.put(signer.put(&[kv("k", 0, b"v0")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    let cases: Vec<(Vec<KeyValue>, Vec<KeyValue>)> = vec![
        (vec![kv("k", 0, b"again")], vec![kv("k", 0, b"v0")]),
        (vec![kv("k", 2, b"gap")], vec![kv("k", 0, b"v0")]),
        (vec![kv("k", -1, b"neg")], vec![kv("k", 0, b"v0")]),
        (vec![kv("m", 1, b"")], vec![kv("m", -1, b"")]),
        (vec![kv("m", -5, b"")], vec![kv("m", -1, b"")]),
        // An "overflowing" version: u64::MAX on the wire decodes as -1; i64::MAX has no predecessor here.
        (vec![kv("m", u64::MAX as i64, b"")], vec![kv("m", -1, b"")]),
        (vec![kv("m", i64::MAX, b"")], vec![kv("m", -1, b"")]),
        (
            vec![
                kv("a", 0, b"fine"),
                kv("k", 1, b"fine"),
                kv("m", 3, b"bad"),
                kv("n", 0, b"fine"),
                kv("z", 9, b"bad"),
            ],
            vec![kv("m", -1, b""), kv("z", -1, b"")],
        ),
    ];
    for (request, expected) in cases {
        let reply = grpc
            .put(signer.put(&request))
            .await
            .expect("put")
            .into_inner();
        assert!(!reply.success, "{request:?}");
        assert!(reply.hmac.is_empty(), "no MAC on conflict");
        assert_eq!(
            reply
                .conflicts
                .into_iter()
                .map(KeyValue::from)
                .collect::<Vec<_>>(),
            expected
        );
        assert_eq!(
            signer.dump(&mut grpc).await,
            vec![kv("k", 0, b"v0")],
            "nothing written"
        );
    }
}

#[tokio::test]
async fn versions_go_up_by_exactly_one() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    for version in 0..20 {
        let value = version.to_string();
        let reply = grpc
            .put(signer.put(&[kv("k", version, value.as_bytes())]))
            .await
            .expect("put")
            .into_inner();
        assert!(reply.success);
        let expected = shared_hmac(
            &signer.shared,
            PUT_SERVER_NONCE,
            &[kv("k", version, value.as_bytes())],
        );
        assert!(expected.verify(&reply.hmac));
    }
    assert_eq!(signer.dump(&mut grpc).await, vec![kv("k", 19, b"19")]);
}

#[tokio::test]
async fn prefix_is_literal_and_results_in_byte_order() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let mut keys = vec!["p/%", "p/_", "p/a", "p/Z", "p/é", "pa", "", "q"];
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let kvs: Vec<_> = keys.iter().map(|k| kv(k, 0, k.as_bytes())).collect();
    assert!(
        grpc.put(signer.put(&kvs))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    let get = |prefix: &str, nonce: Vec<u8>| signer.get(prefix, &nonce);
    for (prefix, expected) in [
        ("p/%", vec!["p/%"]),
        ("p/_", vec!["p/_"]),
        ("p/", vec!["p/%", "p/Z", "p/_", "p/a", "p/é"]),
        ("", keys.clone()),
        ("x", vec![]),
    ] {
        // Any nonce length is accepted and bound into the MAC, including empty.
        for nonce in [vec![], vec![1], vec![7; 32], vec![3; 100]] {
            let reply = grpc
                .get(get(prefix, nonce.clone()))
                .await
                .expect("get")
                .into_inner();
            let got: Vec<KeyValue> = reply.kvs.into_iter().map(Into::into).collect();
            assert_eq!(
                got.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
                expected,
                "prefix {prefix:?}"
            );
            assert!(shared_hmac(&signer.shared, &nonce, &got).verify(&reply.hmac));
        }
    }
}

#[tokio::test]
async fn namespaces_are_per_client_and_normalised() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let (alice, bob) = (Signer::new(1, &server.key), Signer::new(2, &server.key));
    assert!(
        grpc.put(alice.put(&[kv("k", 0, b"alice")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    assert_eq!(bob.dump(&mut grpc).await, vec![]);
    // The uncompressed encoding of alice's key reaches alice's namespace.
    let mut request = alice.get("", &[]);
    request.auth.as_mut().expect("auth").client_id = alice.public.serialize_uncompressed().to_vec();
    let reply = grpc.get(request).await.expect("get").into_inner();
    assert_eq!(
        reply
            .kvs
            .into_iter()
            .map(KeyValue::from)
            .collect::<Vec<_>>(),
        vec![kv("k", 0, b"alice")]
    );
    let mut put = alice.put(&[kv("k", 1, b"via uncompressed")]);
    put.auth.as_mut().expect("auth").client_id = alice.public.serialize_uncompressed().to_vec();
    assert!(grpc.put(put).await.expect("put").into_inner().success);
    assert_eq!(
        alice.dump(&mut grpc).await,
        vec![kv("k", 1, b"via uncompressed")]
    );
}

#[tokio::test]
async fn auth_and_mac_failures_have_the_reference_codes() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let good = signer.put(&[kv("k", 0, b"v")]);

    let mut no_auth = good.clone();
    no_auth.auth = None;
    assert_eq!(
        status_of(grpc.put(no_auth).await).await,
        (Code::InvalidArgument, "missing auth".into())
    );
    let mut get = signer.get("", &[]);
    get.auth = None;
    assert_eq!(
        status_of(grpc.get(get).await).await,
        (Code::InvalidArgument, "missing auth".into())
    );

    // 02‖ff..ff: x above the field prime; 04‖04..: not on the curve; 65 bytes of garbage.
    let mut x_too_big = vec![0xff; 33];
    x_too_big[0] = 0x02;
    for bad_id in [
        vec![],
        x_too_big,
        vec![4; 65],
        vec![0xff; 65],
        vec![1; 1000],
    ] {
        let mut put = good.clone();
        put.auth.as_mut().expect("auth").client_id = bad_id.clone();
        assert_eq!(
            status_of(grpc.put(put).await).await.0,
            Code::Unauthenticated,
            "{bad_id:?}"
        );
        let mut get = signer.get("", &[]);
        get.auth.as_mut().expect("auth").client_id = bad_id;
        assert_eq!(
            status_of(grpc.get(get).await).await.0,
            Code::Unauthenticated
        );
    }

    let other = Signer::new(2, &server.key);
    for bad_token in [
        vec![],
        vec![0; 32],
        other.shared.token().0.to_vec(),
        vec![0; 1000],
    ] {
        let mut put = good.clone();
        put.auth.as_mut().expect("auth").token = bad_token.clone();
        assert_eq!(
            status_of(grpc.put(put).await).await,
            (Code::InvalidArgument, "invalid auth token".into())
        );
        let mut get = signer.get("", &[]);
        get.auth.as_mut().expect("auth").token = bad_token;
        assert_eq!(
            status_of(grpc.get(get).await).await,
            (Code::InvalidArgument, "invalid auth token".into())
        );
    }

    let mut wrong_mac = good.clone();
    wrong_mac.hmac[0] ^= 1;
    let mut empty_mac = good.clone();
    empty_mac.hmac.clear();
    let mut other_key_mac = good.clone();
    other_key_mac.hmac = other.put(&[kv("k", 0, b"v")]).hmac;
    let mut tampered_value = good.clone();
    tampered_value.kvs[0].value = b"w".to_vec();
    for bad in [wrong_mac, empty_mac, other_key_mac, tampered_value] {
        assert_eq!(
            status_of(grpc.put(bad).await).await,
            (Code::InvalidArgument, "invalid client HMAC".into())
        );
    }
    assert_eq!(
        signer.dump(&mut grpc).await,
        vec![],
        "nothing written by refused puts"
    );
    assert!(grpc.put(good).await.expect("put").into_inner().success);
}

/// The order check comes before auth, as in the reference.
#[tokio::test]
async fn unsorted_and_duplicate_keys_are_refused_before_auth() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let mut unsorted = signer.put(&[kv("b", 0, b""), kv("a", 0, b"")]);
    assert_eq!(
        status_of(grpc.put(unsorted.clone()).await).await,
        (Code::InvalidArgument, "keys are not sorted".into())
    );
    unsorted.auth.as_mut().expect("auth").token = vec![0; 32];
    assert_eq!(
        status_of(grpc.put(unsorted).await).await,
        (Code::InvalidArgument, "keys are not sorted".into())
    );
    let duplicate = signer.put(&[kv("a", 0, b"1"), kv("a", 0, b"2")]);
    assert_eq!(
        status_of(grpc.put(duplicate).await).await.0,
        Code::InvalidArgument
    );
    // Byte order, not locale order: "Z" < "a" < "é".
    assert!(
        grpc.put(signer.put(&[kv("Z", 0, b""), kv("a", 0, b""), kv("é", 0, b"")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    assert_eq!(
        status_of(
            grpc.put(signer.put(&[kv("é", 0, b""), kv("z", 0, b"")]))
                .await
        )
        .await
        .0,
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn every_limit_is_enforced_and_named() {
    let limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 64,
        max_keys_per_put: 3,
        max_request_bytes: 4 * 1024,
        max_namespace_bytes: 200,
        ..Limits::default()
    };
    // The quota arithmetic below is the client's bytes alone; what the
    // verifiable log adds is counted in lss-cli's tests/verifiable.rs.
    let server = Lssd::start_with(lk_testkit::Options {
        limits,
        verifiable_log: false,
        ..Default::default()
    })
    .await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let cases = [
        (
            signer.put(&[kv("123456789", 0, b"")]),
            Code::InvalidArgument,
            "max_key_bytes exceeded: 9 > 8",
        ),
        (
            signer.put(&[kv("k", 0, &[0; 65])]),
            Code::InvalidArgument,
            "max_value_bytes exceeded: 65 > 64",
        ),
        (
            signer.put(&[
                kv("a", 0, b""),
                kv("b", 0, b""),
                kv("c", 0, b""),
                kv("d", 0, b""),
            ]),
            Code::InvalidArgument,
            "max_keys_per_put exceeded: 4 > 3",
        ),
    ];
    for (request, code, message) in cases {
        assert_eq!(
            status_of(grpc.put(request).await).await,
            (code, message.into())
        );
    }
    // A request over max_request_bytes is refused while decoding.
    let mut huge = signer.put(&[kv("k", 0, b"")]);
    huge.hmac = vec![0; 8 * 1024];
    let (code, message) = status_of(grpc.put(huge).await).await;
    assert_eq!(code, Code::ResourceExhausted);
    assert!(
        message.starts_with("max_request_bytes exceeded"),
        "{message}"
    );
    // The namespace quota counts keys and values.
    let fill: Vec<_> = (0..3).map(|i| kv(&format!("k{i}"), 0, &[1; 60])).collect(); // 3 × 62 = 186
    assert!(
        grpc.put(signer.put(&fill))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    let (code, message) = status_of(grpc.put(signer.put(&[kv("more", 0, &[1; 20])])).await).await;
    assert_eq!(
        (code, message.as_str()),
        (
            Code::ResourceExhausted,
            "max_namespace_bytes exceeded: 210 > 200"
        )
    );
    assert_eq!(signer.dump(&mut grpc).await, fill, "refusals wrote nothing");
    assert!(grpc
        .ping(lss_proto::PingRequest {
            message: "alive".into()
        })
        .await
        .is_ok());
}

/// Requests of at least 4 MiB are accepted by default (reference clients send up to that).
#[tokio::test]
async fn four_mib_requests_are_accepted_by_default() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    let big = vec![kv("big", 0, &vec![0xab; 4 * 1024 * 1024 - 64])];
    assert!(
        grpc.put(signer.put(&big))
            .await
            .expect("put")
            .into_inner()
            .success
    );
    assert_eq!(signer.dump(&mut grpc).await, big);
}

/// A graceful stop lets in-flight puts finish: every acknowledged put is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_every_acknowledged_put() {
    let server = Lssd::start(0x22, Limits::default()).await;
    let store = server.store.clone();
    let key = server.key.clone();
    let channel = server.channel().await;
    let tasks: Vec<_> = (1..=40u8)
        .map(|n| {
            let channel = channel.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let signer = Signer::new(n, &key);
                let mut grpc =
                    lss_proto::lightning_storage_client::LightningStorageClient::new(channel);
                let mut acked = 0;
                for version in 0..50 {
                    match grpc.put(signer.put(&[kv("k", version, &[n; 100])])).await {
                        Ok(reply) if reply.get_ref().success => acked = version + 1,
                        _ => break,
                    }
                }
                (n, acked)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    server.stop().await;
    use lss_store::Store;
    for task in tasks {
        let (n, acked) = task.await.expect("task");
        let stored = store
            .get(lss_store::conformance::client(n), String::new())
            .await
            .expect("get");
        let stored: Vec<_> = stored
            .into_iter()
            .filter(|kv| !lss_verify::ledger::is_reserved(&kv.key))
            .collect();
        // Every acknowledged put is stored. The one put in flight when the
        // server stopped may have committed with its reply lost (lssd's
        // SHUTDOWN_GRACE contract: committed or not at all, as with any
        // network failure), so the stored version is the last acknowledged
        // one or the next; never older, never further.
        if acked > 0 {
            let last_acked = vec![kv("k", acked - 1, &[n; 100])];
            let in_flight = vec![kv("k", acked, &[n; 100])];
            assert!(
                stored == last_acked || stored == in_flight,
                "client {n}: acknowledged up to version {}, stored {stored:?}",
                acked - 1
            );
        } else {
            assert!(stored.len() <= 1);
        }
    }
}

/// The `framed-mac-v1` extension (docs/protocol.md): advertised in Info, used
/// when a request asks for it, the vectors of the docs end to end; a request
/// that does not ask gets the reference's MACs as before.
#[tokio::test]
async fn framed_macs_when_asked_and_the_reference_macs_otherwise() {
    use lss_core::{framed_hmac, PUT_CLIENT_NONCE};
    let server = Lssd::start(0x22, Limits::default()).await;
    let mut grpc = server.grpc().await;
    let info = grpc
        .info(lss_proto::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.extensions, ["framed-mac-v1"]);
    let signer = Signer::new(0x11, &server.key);
    let shared = signer.shared.clone();
    let framed_put = |kvs: &[KeyValue], mac: Vec<u8>| {
        let mut request = signer.put(kvs);
        request.hmac = mac;
        request.framed_mac = true;
        request
    };
    let b0 = [kv("b", 0, b"")];
    let reply = grpc
        .put(framed_put(
            &b0,
            framed_hmac(&shared, PUT_CLIENT_NONCE, &b0).0.to_vec(),
        ))
        .await
        .expect("put")
        .into_inner();
    assert!(reply.success);
    // The docs' vectors: kvs a@0 "x", b@1 "".
    let kvs = [kv("a", 0, b"x"), kv("b", 1, b"")];
    // An unframed client MAC on a framed put is refused, and the reverse.
    let (code, _) = status_of(
        grpc.put(framed_put(
            &kvs,
            shared_hmac(&shared, PUT_CLIENT_NONCE, &kvs).0.to_vec(),
        ))
        .await,
    )
    .await;
    assert_eq!(code, Code::InvalidArgument);
    let mut unframed = signer.put(&kvs);
    unframed.hmac = framed_hmac(&shared, PUT_CLIENT_NONCE, &kvs).0.to_vec();
    let (code, _) = status_of(grpc.put(unframed).await).await;
    assert_eq!(code, Code::InvalidArgument);
    let reply = grpc
        .put(framed_put(
            &kvs,
            framed_hmac(&shared, PUT_CLIENT_NONCE, &kvs).0.to_vec(),
        ))
        .await
        .expect("put")
        .into_inner();
    assert!(reply.success);
    assert_eq!(
        hex::encode(&reply.hmac),
        "4baec3524ae558f43065c2f594df4bd030061ec4fe3465f3531bf952ad861462"
    );
    let mut get = signer.get("", &[0; 32]);
    get.framed_mac = true;
    let got = grpc.get(get).await.expect("get").into_inner();
    assert_eq!(
        hex::encode(&got.hmac),
        "abf046f70e582b99f4f2096d5855f249b8615d3995043a3122f3f0dcd36e29a8"
    );
    // Without the flag: the reference's MAC over the same state.
    let got = grpc
        .get(signer.get("", &[0; 32]))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        hex::encode(&got.hmac),
        "91f9adc0f7470df10353a68f72dee9712bb05c88e0d23181971c8c138212194d"
    );
    // GetStream computes the same MACs page by page (the framed one commits
    // to the entry count before the entries).
    let mut ext = lss_proto::lightkeeper::lightkeeper_storage_client::LightkeeperStorageClient::new(
        server.channel().await,
    );
    for (framed, expected) in [
        (
            true,
            "abf046f70e582b99f4f2096d5855f249b8615d3995043a3122f3f0dcd36e29a8",
        ),
        (
            false,
            "91f9adc0f7470df10353a68f72dee9712bb05c88e0d23181971c8c138212194d",
        ),
    ] {
        let mut get = signer.get("", &[0; 32]);
        get.framed_mac = framed;
        let mut stream = ext.get_stream(get).await.expect("get_stream").into_inner();
        let mut last = None;
        while let Some(chunk) = stream.message().await.expect("chunk") {
            last = Some(chunk);
        }
        assert_eq!(hex::encode(last.expect("a chunk").hmac), expected);
    }
}

/// Verifiable log, client signatures: a verifying `PrivClient` signs its
/// puts and its log entries carry the signature anyone can check; a put
/// whose `verify.client_sig` is not the client's own signature of exactly
/// these writes (garbage, another key's, another put's, a bad length) is
/// refused before anything is stored.
#[tokio::test]
async fn client_signatures_are_kept_in_the_log_and_forged_ones_refused() {
    use lss_verify::bundle::Bundle;
    use lss_verify::entry::{sign_put, verify_put};
    use lss_verify::StateLeaf;
    let server = Lssd::start(0x22, Limits::default()).await;
    let options = lss_client::ConnectOptions::new(server.url.clone());
    let signer = Signer::new(0x11, &server.key);
    let mut client = lss_client::PrivClient::connect(&options, &signer.secret, None, [5; 32])
        .await
        .expect("connect")
        .verifying(None);
    client
        .put(vec![kv("a", 0, b"x")])
        .await
        .expect("a signed, verified put");
    let mut grpc = server.grpc().await;
    let mut get = signer.get("", &[1; 32]);
    get.verify = Some(lss_proto::Verify::default());
    let reply = grpc.get(get).await.expect("get").into_inner();
    let attestation = reply.attestation.expect("attested");
    let bundle = Bundle::decode(&attestation.bundle).expect("bundle");
    let last = bundle.entries.last().expect("an entry");
    let sig = last
        .client_sig
        .expect("the entry carries the client's signature");
    assert!(verify_put(&signer.public.serialize(), &last.writes, &sig));

    let leaves = |kvs: &[KeyValue]| -> Vec<StateLeaf> {
        kvs.iter()
            .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
            .collect()
    };
    let next = [kv("a", 1, b"y")];
    let other = Signer::new(0x12, &server.key);
    for (what, client_sig) in [
        ("garbage", vec![7u8; 64]),
        (
            "another key's",
            sign_put(&other.secret, &leaves(&next)).to_vec(),
        ),
        (
            "another put's",
            sign_put(&signer.secret, &leaves(&[kv("a", 1, b"z")])).to_vec(),
        ),
        ("too short", vec![1u8; 63]),
    ] {
        let mut put = signer.put(&next);
        put.verify = Some(lss_proto::Verify {
            client_sig,
            ..Default::default()
        });
        let (code, message) = status_of(grpc.put(put).await).await;
        assert_eq!(code, Code::InvalidArgument, "{what}: {message}");
        assert!(message.contains("client_sig"), "{what}: {message}");
    }
    let stored: Vec<(String, i64)> = signer
        .dump(&mut grpc)
        .await
        .into_iter()
        .map(|kv| (kv.key, kv.version))
        .collect();
    assert_eq!(stored, [("a".to_string(), 0)], "nothing stored");
    // Its own signature of exactly these writes is accepted.
    let mut put = signer.put(&next);
    put.verify = Some(lss_proto::Verify {
        client_sig: sign_put(&signer.secret, &leaves(&next)).to_vec(),
        ..Default::default()
    });
    assert!(grpc.put(put).await.expect("put").into_inner().success);
}
