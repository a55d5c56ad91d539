//! Issue 12's attacks on lssd's resources, run as an attacker would: raw
//! sockets and a plain HTTP/2 client (the `h2` crate) that opens connections
//! it never uses, trickles request bodies and never reads replies. Each test
//! fails against a server without the limit it names.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lk_testkit::process::LssdProcess;
use lk_testkit::{kv, Lssd, Options, Signer};
use lss_proto::lightning_storage_client::LightningStorageClient;
use lssd::conn::ConnLimits;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bounds every wait on the server; none is expected to come near it.
const GUARD: Duration = Duration::from_secs(60);

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind the source address");
    socket.connect(server).await.expect("connect")
}

/// Whether the server speaks HTTP/2 on `tcp` (sends its SETTINGS) or closes
/// it without a byte.
async fn served(tcp: &mut TcpStream) -> bool {
    // The client preface and an empty SETTINGS frame.
    let _ = tcp
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await;
    let mut head = [0u8; 9];
    match tokio::time::timeout(GUARD, tcp.read_exact(&mut head)).await {
        Ok(Ok(_)) => {
            assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
            true
        }
        Ok(Err(_)) => false, // Closed: EOF or reset.
        Err(_) => panic!("the server neither spoke nor closed the connection"),
    }
}

/// Limits small enough to reach from a test.
fn tight() -> ConnLimits {
    ConnLimits {
        max_connections: 6,
        max_connections_per_address: 3,
        ..ConnLimits::default()
    }
}

#[tokio::test]
async fn connections_over_the_total_or_per_address_limit_are_closed_at_accept() {
    let server = Lssd::start_with(Options {
        connections: tight(),
        ..Options::default()
    })
    .await;
    let mut first = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from("127.0.0.1", server.addr).await;
        assert!(served(&mut tcp).await);
        first.push(tcp);
    }
    let mut extra = connect_from("127.0.0.1", server.addr).await;
    assert!(
        !served(&mut extra).await,
        "a fourth connection from one address is closed"
    );
    // Another address still gets in, up to the total.
    let mut second = Vec::new();
    for _ in 0..3 {
        let mut tcp = connect_from("127.0.0.2", server.addr).await;
        assert!(served(&mut tcp).await, "another address has its own share");
        second.push(tcp);
    }
    let mut third = connect_from("127.0.0.3", server.addr).await;
    assert!(
        !served(&mut third).await,
        "over max_connections, every address is closed"
    );
    // A closed connection gives its place back (once the server has seen
    // the close, so the client tries until it is admitted).
    drop(first.pop());
    let admitted = tokio::time::timeout(GUARD, async {
        loop {
            let mut tcp = connect_from("127.0.0.1", server.addr).await;
            if served(&mut tcp).await {
                return tcp;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the freed place is given to a new connection");
    drop(admitted);
    // Well-behaved clients on other connections were never disturbed.
    for tcp in &mut second {
        tcp.write_all(b"\0\0\0\x04\x01\0\0\0\0")
            .await
            .expect("still open");
    }
    server.stop().await;
}

/// An HTTP/2 client on its own connection, driven in the background;
/// returns the client and the connection task (it ends when the server
/// closes the connection).
async fn h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    (client, tokio::spawn(connection))
}

fn grpc_request(addr: SocketAddr, method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/lss.LightningStorage/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// gRPC's length-prefixed message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

fn grpc_status(response: &http::Response<h2::RecvStream>) -> Option<(String, String)> {
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let message = header("grpc-message").unwrap_or_default();
    let message = percent_encoding::percent_decode_str(&message)
        .decode_utf8_lossy()
        .into_owned();
    Some((header("grpc-status")?, message))
}

/// Slowloris: requests whose bodies arrive a byte at a time. Each is
/// answered `DEADLINE_EXCEEDED` at `request_timeout`, and its connection,
/// idle from then on, is closed at `idle_timeout`; without the timeouts the
/// bodies would hold their connections (and buffers) as long as they trickle.
#[tokio::test]
async fn trickled_request_bodies_time_out_and_their_connections_close() {
    let server = Lssd::start_with(Options {
        connections: ConnLimits {
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            ..ConnLimits::default()
        },
        ..Options::default()
    })
    .await;
    let mut attackers = Vec::new();
    for _ in 0..20 {
        let (client, connection) = h2_client(server.addr).await;
        let mut client = client.ready().await.expect("ready");
        let (response, mut body) = client
            .send_request(grpc_request(server.addr, "Put"), false)
            .expect("request");
        // A body announced as 16 MiB, sent a byte at a time.
        body.send_data(Bytes::from_static(&[0, 1, 0, 0, 0]), false)
            .expect("prefix");
        let trickle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if body.send_data(Bytes::from_static(&[0x0a]), false).is_err() {
                    return;
                }
            }
        });
        attackers.push((response, connection, trickle, client));
    }
    for (response, connection, trickle, client) in attackers {
        let response = tokio::time::timeout(GUARD, response)
            .await
            .expect("answered before the guard")
            .expect("a response");
        let (status, message) = grpc_status(&response).expect("a trailers-only status");
        assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
        assert!(message.contains("request_timeout"), "{message}");
        trickle.abort();
        drop(client);
        tokio::time::timeout(GUARD, connection)
            .await
            .expect("the idle connection is closed by the server")
            .expect("connection task")
            .ok();
    }
    // Served normally all along.
    let mut grpc = server.grpc().await;
    let signer = Signer::new(1, &server.key);
    grpc.put(signer.put(&[kv("k", 0, b"v")]))
        .await
        .expect("put");
    server.stop().await;
}

/// A stalled reader: Gets of a large namespace whose replies are never
/// read. Only `max_reply_bytes_per_client` of them are queued (the rest get
/// RESOURCE_EXHAUSTED before anything is queued), the one queued is cut off
/// at `reply_timeout`, and the server's memory grows by one reply, not
/// four. Run against the real binary, memory read from `/proc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_hold_one_reply_budget_and_are_cut_off() {
    let data = tempfile::tempdir().expect("tempdir");
    let key_file = data.path().join("key");
    std::fs::write(&key_file, hex_key(0x22)).expect("key file");
    const MIB: usize = 1 << 20;
    const VALUES: usize = 40;
    let budget = (VALUES as u64 + 8) * MIB as u64;
    let server = LssdProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_lssd")),
        &[
            "--data-dir",
            data.path().join("lssd").to_str().expect("utf8"),
            "--server-key-file",
            key_file.to_str().expect("utf8"),
            "--max-reply-bytes-per-client",
            &budget.to_string(),
            "--reply-timeout-secs",
            "3",
        ],
    )
    .expect("start lssd");
    let signer = Signer::new(7, &lk_testkit::server_key(0x22));
    let mut grpc = LightningStorageClient::connect(server.url.clone())
        .await
        .expect("connect")
        .max_decoding_message_size(usize::MAX);
    for i in 0..VALUES {
        let value = vec![i as u8; MIB];
        grpc.put(signer.put(&[kv(&format!("big/{i:03}"), 0, &value)]))
            .await
            .expect("fill");
    }

    let get = frame(&signer.get("", &[3; 32]).encode_to_vec());
    let mut stalled = Vec::new();
    let mut refused = Vec::new();
    let mut first_rss = None;
    for _ in 0..4 {
        let (client, connection) = h2_client(server.addr).await;
        let mut client = client.ready().await.expect("ready");
        let (response, mut body) = client
            .send_request(grpc_request(server.addr, "Get"), false)
            .expect("request");
        body.send_data(get.clone(), true).expect("send");
        let response = tokio::time::timeout(GUARD, response)
            .await
            .expect("answered")
            .expect("a response");
        match grpc_status(&response) {
            // Never read: the body stays in the server's hands.
            None => stalled.push((response, connection, client)),
            Some((status, message)) => refused.push((status, message)),
        }
        // The first read's one-time costs (the store's page cache, the
        // allocator's arenas) are in the baseline; each further queued
        // reply would add its own size.
        if first_rss.is_none() {
            first_rss = proc_sample::rss(server.pid());
        }
    }
    let last_rss = proc_sample::rss(server.pid()).expect("rss");
    assert_eq!(stalled.len(), 1, "one reply fits the budget: {refused:?}");
    for (status, message) in &refused {
        assert_eq!(status, "8", "RESOURCE_EXHAUSTED: {message}");
        assert!(message.contains("max_reply_bytes_per_client"), "{message}");
    }
    // Unbounded, each stalled reader adds its 40 MiB reply (measured:
    // 227, 267, 307, 347 MiB); bounded, the refused ones add nothing.
    let grown = last_rss.saturating_sub(first_rss.expect("measured"));
    assert!(
        grown < (VALUES * MIB / 2) as u64,
        "three more stalled readers grew the server by {} MiB",
        grown / MIB as u64
    );
    // The stalled reader is cut off at reply_timeout: its connection ends.
    let (_response, connection, _client) = stalled.pop().expect("one");
    tokio::time::timeout(GUARD, connection)
        .await
        .expect("the server closes the stalled connection")
        .expect("connection task")
        .ok();
    // The budget is back: the owner reads its whole namespace.
    let kvs = signer.dump(&mut grpc).await;
    assert_eq!(kvs.len(), VALUES);
    assert!(
        server.log().contains("not read within reply_timeout"),
        "the cut-off is logged"
    );
}

fn hex_key(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn lssd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lssd"))
}

/// Anyone is a client only with `access = open`. Under `allowlist` a
/// stranger's keypair is refused (nothing stored for it), a token from
/// `lssd issue-token` admits exactly one client (remembered across a
/// restart; a second client cannot reuse it, nor can a forged one), and a
/// client the operator lists is admitted once the list is re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_allowlist_strangers_are_refused_and_tokens_admit_one_client_each() {
    use lss_client::{ConnectOptions, PrivClient};
    use lss_core::secp256k1::SecretKey;
    use lss_core::KeyValue;
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf8");
    let args = ["--data-dir", dir, "--access", "allowlist"];
    let server = LssdProcess::spawn(lssd_bin(), &args).expect("start lssd");
    let connect = |byte: u8, token: Option<String>, url: String| async move {
        let secret = SecretKey::from_slice(&[byte; 32]).expect("key");
        let options = ConnectOptions {
            registration_token: token,
            ..ConnectOptions::new(url)
        };
        PrivClient::connect(&options, &secret, None, [byte; 32])
            .await
            .expect("connect (Info needs no admission)")
    };
    let put = |key: &str| vec![KeyValue::new(key, 0, b"v".to_vec())];
    let denied = |e: &dyn std::fmt::Debug| {
        let e = format!("{e:?}");
        assert!(e.contains("PermissionDenied"), "{e}");
        e
    };

    let mut stranger = connect(1, None, server.url.clone()).await;
    let e = denied(&stranger.put(put("a")).await.expect_err("a stranger's put"));
    assert!(e.contains("registration token"), "says what to do: {e}");
    denied(
        &stranger
            .get("", &[1; 32])
            .await
            .expect_err("a stranger's get"),
    );
    let forged = format!("lkreg1.{}.{}", "00".repeat(16), "00".repeat(16));
    let mut forger = connect(2, Some(forged), server.url.clone()).await;
    denied(&forger.put(put("a")).await.expect_err("a forged token"));

    let issued = std::process::Command::new(lssd_bin())
        .args(["issue-token", "--data-dir", dir, "--access", "allowlist"])
        .output()
        .expect("run lssd issue-token");
    assert!(issued.status.success());
    let token = String::from_utf8(issued.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    let mut alice = connect(3, Some(token.clone()), server.url.clone()).await;
    alice.put(put("a")).await.expect("registered by the token");
    let mut mallory = connect(4, Some(token.clone()), server.url.clone()).await;
    let e = denied(&mallory.put(put("m")).await.expect_err("a used token"));
    assert!(e.contains("already used"), "{e}");
    drop(server);

    // After a restart alice needs no token; the token stays used.
    let server = LssdProcess::spawn(lssd_bin(), &args).expect("restart lssd");
    let mut alice = connect(3, None, server.url.clone()).await;
    assert_eq!(alice.get("", &[2; 32]).await.expect("get"), put("a"));
    let mut mallory = connect(4, Some(token), server.url.clone()).await;
    denied(&mallory.put(put("m")).await.expect_err("still used"));

    // The operator lists bob; the running server picks the list up.
    let bob_id = SecretKey::from_slice(&[5; 32])
        .expect("key")
        .public_key(&lss_core::secp256k1::Secp256k1::signing_only());
    std::fs::write(
        data.path().join("allowed_clients"),
        format!("# bob\n{}\n", hex::encode(bob_id.serialize())),
    )
    .expect("write the list");
    let mut bob = connect(5, None, server.url.clone()).await;
    let admitted = tokio::time::timeout(GUARD, async {
        loop {
            match bob.put(put("b")).await {
                Ok(()) => return,
                Err(e) => {
                    denied(&e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
    .await;
    assert!(admitted.is_ok(), "the list is re-read while serving");
}

/// Large request bodies are read only as far as their `auth`: 40 puts of
/// 14 MiB each with a wrong token, sent at once, are refused after their
/// first bytes, and the server never buffers them (before, it read every
/// body whole first: the issue measured 1.1 GiB for 200 such puts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_with_a_wrong_token_are_refused_before_they_are_buffered() {
    const MIB: usize = 1 << 20;
    let data = tempfile::tempdir().expect("tempdir");
    let server = LssdProcess::spawn(
        lssd_bin(),
        &["--data-dir", data.path().to_str().expect("utf8")],
    )
    .expect("start lssd");
    // A token for another server's key: wrong here.
    let signer = Signer::new(9, &lk_testkit::server_key(0x22));
    let kvs: Vec<_> = (0..4)
        .map(|i| kv(&format!("k{i}"), 0, &vec![0x55; 3 * MIB + MIB / 2]))
        .collect();
    let body = frame(&signer.put(&kvs).encode_to_vec());
    assert!(body.len() > 14 * MIB);
    let before = proc_sample::rss(server.pid()).expect("rss");
    let mut pending = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..4 {
        let (mut client, connection) = h2_client(server.addr).await;
        connections.push(connection);
        for _ in 0..10 {
            client = client.ready().await.expect("ready");
            let (response, mut stream) = client
                .send_request(grpc_request(server.addr, "Put"), false)
                .expect("request");
            // The same bytes for every stream: no copy on the attacker's side.
            let _ = stream.send_data(body.clone(), true);
            pending.push((response, stream));
        }
    }
    for (response, _stream) in pending {
        let response = tokio::time::timeout(GUARD, response)
            .await
            .expect("answered")
            .expect("a response");
        let (status, message) = grpc_status(&response).expect("refused at once");
        assert_eq!(
            (status.as_str(), message.as_str()),
            ("3", "invalid auth token")
        );
    }
    let peak = proc_sample::peak_rss(server.pid()).expect("peak rss");
    let grown = peak.saturating_sub(before);
    assert!(
        grown < (64 * MIB) as u64,
        "560 MiB of refused bodies grew the server by {} MiB at its peak",
        grown / MIB as u64
    );
}

/// 64 stalled `GetStream` readers (four clients, sixteen streams each, as
/// many as `max_inflight_per_client` allows) of 16 MiB namespaces: each
/// stream is read from its snapshot a page at a time as the client takes
/// chunks, so the server holds a few chunks per stream, not the result
/// (before, each stream's result was read whole first: 1,130 MiB here). The
/// well-behaved clients' Pings still answer meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_readers_hold_a_few_chunks_each() {
    const MIB: usize = 1 << 20;
    const CLIENTS: u8 = 4;
    const STREAMS: usize = 16;
    let data = tempfile::tempdir().expect("tempdir");
    let key_file = data.path().join("key");
    std::fs::write(&key_file, hex_key(0x22)).expect("key file");
    let server = LssdProcess::spawn(
        lssd_bin(),
        &[
            "--data-dir",
            data.path().join("lssd").to_str().expect("utf8"),
            "--server-key-file",
            key_file.to_str().expect("utf8"),
        ],
    )
    .expect("start lssd");
    let mut grpc = LightningStorageClient::connect(server.url.clone())
        .await
        .expect("connect");
    let signers: Vec<Signer> = (1..=CLIENTS)
        .map(|n| Signer::new(n, &lk_testkit::server_key(0x22)))
        .collect();
    for signer in &signers {
        for i in 0..16 {
            grpc.put(signer.put(&[kv(&format!("state/{i:02}"), 0, &vec![i as u8; MIB])]))
                .await
                .expect("fill");
        }
    }
    let before = proc_sample::rss(server.pid()).expect("rss");
    let mut stalled = Vec::new();
    let mut connections = Vec::new();
    for signer in &signers {
        let body = frame(&signer.get("", &[4; 32]).encode_to_vec());
        let (mut client, connection) = h2_client(server.addr).await;
        for _ in 0..STREAMS {
            client = client.ready().await.expect("ready");
            let mut request = grpc_request(server.addr, "GetStream");
            *request.uri_mut() = format!(
                "http://{}/lightkeeper.LightkeeperStorage/GetStream",
                server.addr
            )
            .parse()
            .expect("uri");
            let (response, mut send) = client.send_request(request, false).expect("request");
            send.send_data(body.clone(), true).expect("send");
            let response = tokio::time::timeout(GUARD, response)
                .await
                .expect("answered")
                .expect("a response");
            assert!(grpc_status(&response).is_none(), "accepted and streaming");
            stalled.push(response);
        }
        connections.push((client, connection));
    }
    // Every stream has had time to fill what it may: the server answers a
    // Ping only after running its tasks, the readers' included.
    for _ in 0..20 {
        grpc.ping(lss_proto::PingRequest {
            message: "still here".into(),
        })
        .await
        .expect("ping while 64 readers stall");
    }
    let during = proc_sample::rss(server.pid()).expect("rss");
    // Measured: 295 MiB streaming (about 4.5 MiB per stream: 1 MiB chunks,
    // a few in flight, plus the store's page cache), 1,130 MiB when each
    // stream's result was read whole first.
    let grown = during.saturating_sub(before);
    assert!(
        grown < (64 * 6 + 64) * MIB as u64,
        "64 stalled streams of 16 MiB grew the server by {} MiB",
        grown / MIB as u64
    );
    drop((stalled, connections));
}
