//! Hostile bytes over HTTP/2: malformed gRPC framing and protobuf. After each,
//! the server answers correctly and stored data is unchanged.

use bytes::Bytes;
use http_body_util::BodyExt;
use lk_testkit::{kv, Lssd, Signer};
use lss_core::Limits;
use prost::Message;
use tonic::transport::Channel;
use tower::ServiceExt;

/// Sends `body` as-is to `path`; returns (grpc-status, grpc-message).
async fn raw(channel: &Channel, path: &str, body: Vec<u8>) -> (String, String) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://lssd{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(body),
        )))
        .expect("request");
    let response = channel
        .clone()
        .oneshot(request)
        .await
        .expect("HTTP/2 exchange");
    let (parts, body) = response.into_parts();
    let trailers = body
        .collect()
        .await
        .expect("body")
        .trailers()
        .cloned()
        .unwrap_or_default();
    let field = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.get(name))
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    (
        field("grpc-status").expect("a grpc-status"),
        field("grpc-message").unwrap_or_default(),
    )
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[tokio::test]
async fn malformed_requests_are_refused_and_change_nothing() {
    let limits = Limits {
        max_request_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = Lssd::start(0x22, limits).await;
    let mut grpc = server.grpc().await;
    let channel = server.channel().await;
    let signer = Signer::new(1, &server.key);
    assert!(
        grpc.put(signer.put(&[kv("k", 0, b"v")]))
            .await
            .expect("put")
            .into_inner()
            .success
    );

    let valid = signer.put(&[kv("k", 1, b"w")]).encode_to_vec();
    // A KeyValue whose key (field 1, a string) is not UTF-8, inside PutRequest.kvs (field 2).
    let bad_utf8_kv = [0x0a, 0x02, 0xff, 0xfe, 0x10, 0x01];
    let mut bad_utf8 = signer.put(&[]).encode_to_vec();
    bad_utf8.extend_from_slice(&[0x12, bad_utf8_kv.len() as u8]);
    bad_utf8.extend_from_slice(&bad_utf8_kv);
    // An int64 version varint of 11 bytes (over-long).
    let overlong_varint = [
        0x12, 0x0d, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];

    let mut compressed = frame(&valid);
    compressed[0] = 1;
    let mut truncated = frame(&valid);
    truncated.truncate(truncated.len() - 3);
    let mut huge_prefix = vec![0, 0xff, 0xff, 0xff, 0xff];
    huge_prefix.extend_from_slice(&valid);

    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("garbage", frame(&[0xff; 40]), &["13"]),
        ("wire type mismatch", frame(&[0x0a, 0x05, 0x01]), &["13"]),
        ("key not UTF-8", frame(&bad_utf8), &["13"]),
        ("over-long varint", frame(&overlong_varint), &["13"]),
        (
            "compressed flag without compression",
            compressed,
            &["12", "13"],
        ),
        ("truncated frame", truncated, &["13", "3", "14"]),
        ("length prefix of 4 GiB", huge_prefix, &["8"]),
        ("empty body", vec![], &["13", "12"]),
    ];
    for path in [
        lss_proto::paths::PUT,
        lss_proto::paths::GET,
        lss_proto::paths::GET_STREAM,
    ] {
        for (name, body, codes) in &cases {
            let (code, message) = raw(&channel, path, body.clone()).await;
            assert!(
                codes.contains(&code.as_str()),
                "{name} on {path}: status {code} {message}"
            );
            assert_ne!(code, "0", "{name} accepted");
            // Still serving, nothing changed.
            let ping = grpc
                .ping(lss_proto::PingRequest {
                    message: name.to_string(),
                })
                .await
                .expect("ping");
            assert_eq!(ping.into_inner().message, *name);
            assert_eq!(
                signer.dump(&mut grpc).await,
                vec![kv("k", 0, b"v")],
                "{name} changed data"
            );
        }
    }
    // The 4 GiB claim names the limit.
    let (_, message) = raw(
        &channel,
        lss_proto::paths::PUT,
        [vec![0, 0xff, 0xff, 0xff, 0xff], valid.clone()].concat(),
    )
    .await;
    assert!(
        message.starts_with("max_request_bytes exceeded"),
        "{message}"
    );
    // An unknown method is UNIMPLEMENTED, and a valid raw request still works.
    assert_eq!(
        raw(&channel, "/lss.LightningStorage/Delete", frame(&[]))
            .await
            .0,
        "12"
    );
    assert_eq!(
        raw(&channel, lss_proto::paths::PUT, frame(&valid)).await.0,
        "0"
    );
    assert_eq!(signer.dump(&mut grpc).await, vec![kv("k", 1, b"w")]);
}

/// One HTTP/2 frame: (type, flags, stream id, payload).
type H2Frame = (u8, u8, u32, Vec<u8>);

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

async fn read_h2_frame(tcp: &mut tokio::net::TcpStream) -> Option<H2Frame> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_exact(&mut head),
    )
    .await
    .ok()?
    .ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

/// Issue 12: one connection may hold only `max_streams_per_connection`
/// requests open. An attacker speaking raw HTTP/2 sees the limit in the
/// server's SETTINGS and, opening one stream more than allowed (requests
/// whose bodies never come, as a stalled client leaves them), gets that
/// stream refused while the others stay open.
#[tokio::test]
async fn one_connection_may_hold_only_the_configured_number_of_streams() {
    use tokio::io::AsyncWriteExt;
    let limits = Limits {
        max_streams_per_connection: 5,
        ..Limits::default()
    };
    let server = Lssd::start(0x23, limits).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&h2_frame(0x4, 0, 0, &[]))
        .await
        .expect("settings");
    // The server's SETTINGS name the limit; acknowledge them.
    let advertised = loop {
        let (kind, flags, _, payload) = read_h2_frame(&mut tcp).await.expect("a frame");
        if kind == 0x4 && flags & 1 == 0 {
            let limit = payload
                .chunks_exact(6)
                .find(|p| p[..2] == [0, 3])
                .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
            break limit;
        }
    };
    assert_eq!(advertised, Some(5), "SETTINGS_MAX_CONCURRENT_STREAMS");
    tcp.write_all(&h2_frame(0x4, 1, 0, &[])).await.expect("ack");
    // HPACK, no Huffman: :method POST, :scheme http, :path, :authority,
    // content-type: application/grpc, te: trailers.
    let mut block = vec![0x83, 0x86];
    // Literal without indexing, indexed name: 4-bit prefix (31 = 15 + 16).
    for (name, value) in [
        (&[0x04][..], &b"/lss.LightningStorage/Ping"[..]),
        (&[0x01], b"lssd"),
        (&[0x0f, 0x10], b"application/grpc"),
    ] {
        block.extend_from_slice(name);
        block.push(value.len() as u8);
        block.extend_from_slice(value);
    }
    block.extend_from_slice(&[0x00, 2, b't', b'e', 8]);
    block.extend_from_slice(b"trailers");
    for i in 0..6u32 {
        // END_HEADERS, no END_STREAM: each request waits for its body.
        tcp.write_all(&h2_frame(0x1, 0x4, 1 + 2 * i, &block))
            .await
            .expect("headers");
    }
    let refused = loop {
        let (kind, _, stream, payload) = read_h2_frame(&mut tcp)
            .await
            .expect("the server answers the extra stream");
        if kind == 0x3 {
            break (stream, payload);
        }
        if kind == 0x7 {
            panic!("the whole connection was closed: {payload:?}");
        }
    };
    assert_eq!(refused.0, 11, "the sixth stream, and only it, is reset");
    assert_eq!(refused.1, 7u32.to_be_bytes().to_vec(), "REFUSED_STREAM");
}
