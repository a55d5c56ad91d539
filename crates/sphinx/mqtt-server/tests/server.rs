//! The embedded server against a real MQTT client (rumqttc) and raw hostile
//! bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_server::{Config, Inbound, Policy, Refusal, Server};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client `x` logs in with password `pw-x`, publishes only under `x/up`,
/// subscribes only under `x/`.
struct Owned;

impl Policy for Owned {
    fn login(
        &self,
        client_id: &str,
        _user: Option<&str>,
        pass: Option<&str>,
    ) -> Result<(), Refusal> {
        if pass == Some(format!("pw-{client_id}").as_str()) {
            Ok(())
        } else {
            Err(Refusal {
                bad_credentials: true,
                reason: "wrong password".into(),
            })
        }
    }
    fn may_publish(&self, client_id: &str, topic: &str) -> bool {
        topic.starts_with(&format!("{client_id}/up"))
    }
    fn may_subscribe(&self, client_id: &str, filter: &str) -> bool {
        filter.starts_with(&format!("{client_id}/"))
    }
}

async fn server() -> Server {
    let mut config = Config::new("127.0.0.1:0".parse().expect("addr"));
    config.max_packet = 64 * 1024;
    config.connect_timeout = Duration::from_millis(500);
    Server::start(config, Arc::new(Owned)).await.expect("start")
}

fn client(server: &Server, id: &str, password: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", server.local_addr.port());
    options.set_credentials("user", password);
    options.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(options, 16)
}

async fn next_event(events: &mut tokio::sync::mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event in time")
        .expect("server running")
}

/// Polls until `want` matches an incoming packet; panics on a connection
/// error first.
async fn until<T>(events: &mut EventLoop, mut want: impl FnMut(&Packet) -> Option<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = want(&packet) {
                        return found;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("connection error: {e}"),
            }
        }
    })
    .await
    .expect("in time")
}

/// Polls until the connection fails; returns the error text.
async fn until_closed(events: &mut EventLoop) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = events.poll().await {
                return e.to_string();
            }
        }
    })
    .await
    .expect("closed in time")
}

#[tokio::test]
async fn login_is_decided_by_the_policy() {
    let mut server = server().await;
    let (_client, mut events) = client(&server, "a", "wrong");
    let err = until_closed(&mut events).await;
    assert!(err.contains("BadUserNamePassword"), "{err}");
    let (_client, mut events) = client(&server, "a", "pw-a");
    let code = until(&mut events, |p| match p {
        Packet::ConnAck(ack) => Some(ack.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    // Only the good login reached the application.
    assert_eq!(
        next_event(&mut server.events).await,
        Inbound::Connected {
            client_id: "a".into(),
            username: Some("user".into())
        }
    );
}

#[tokio::test]
async fn topics_are_confined_to_their_owner() {
    let mut server = server().await;
    let (a, mut a_events) = client(&server, "a", "pw-a");
    let (b, mut b_events) = client(&server, "b", "pw-b");
    a.subscribe("a/down", QoS::AtLeastOnce)
        .await
        .expect("queue");
    a.subscribe("b/down", QoS::AtLeastOnce)
        .await
        .expect("queue");
    a.subscribe("+/down", QoS::AtLeastOnce)
        .await
        .expect("queue");
    let mut codes = Vec::new();
    while codes.len() < 3 {
        codes.extend(
            until(&mut a_events, |p| match p {
                Packet::SubAck(ack) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(
        codes,
        [
            rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce),
            rumqttc::SubscribeReasonCode::Failure,
            rumqttc::SubscribeReasonCode::Failure,
        ]
    );
    b.subscribe("b/down", QoS::AtMostOnce).await.expect("queue");
    until(&mut b_events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    // The local side's publish reaches only the subscriber of that topic.
    assert_eq!(
        server
            .handle
            .publish("a/down", Bytes::from_static(b"for a")),
        1
    );
    assert_eq!(
        server
            .handle
            .publish("b/down", Bytes::from_static(b"for b")),
        1
    );
    assert_eq!(
        server
            .handle
            .publish("c/down", Bytes::from_static(b"nobody")),
        0
    );
    let got = until(&mut a_events, |p| match p {
        Packet::Publish(p) => Some((p.topic.clone(), p.payload.clone())),
        _ => None,
    })
    .await;
    assert_eq!(got, ("a/down".to_string(), Bytes::from_static(b"for a")));

    // An allowed publish reaches the application (QoS 1 is acknowledged).
    a.publish("a/up", QoS::AtLeastOnce, false, "hi")
        .await
        .expect("queue");
    until(&mut a_events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    loop {
        if let Inbound::Published {
            client_id,
            topic,
            payload,
        } = next_event(&mut server.events).await
        {
            assert_eq!(
                (client_id.as_str(), topic.as_str(), &payload[..]),
                ("a", "a/up", &b"hi"[..])
            );
            break;
        }
    }
    // Publishing on another client's topic ends the connection.
    b.publish("a/up", QoS::AtMostOnce, false, "forged")
        .await
        .expect("queue");
    until_closed(&mut b_events).await;
    loop {
        match next_event(&mut server.events).await {
            Inbound::Published { client_id, .. } => assert_ne!(client_id, "b", "forgery delivered"),
            Inbound::Disconnected { client_id } if client_id == "b" => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_new_connection_takes_over_the_client_id() {
    let server = server().await;
    let (_first, mut first_events) = client(&server, "a", "pw-a");
    until(&mut first_events, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await;
    let (_second, mut second_events) = client(&server, "a", "pw-a");
    until(&mut second_events, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await;
    until_closed(&mut first_events).await;
    assert_eq!(server.handle.clients(), vec!["a".to_string()]);
}

async fn raw(server: &Server, bytes: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(server.local_addr).await;
    let mut stream = stream.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test]
async fn hostile_bytes_close_the_connection_and_nothing_else() {
    let mut server = server().await;
    // Not a CONNECT; garbage; a remaining length beyond the limit; a length
    // that never arrives; nothing at all; an overlong varint.
    let oversize = [0x10, 0xff, 0xff, 0xff, 0x07];
    let cases: Vec<Vec<u8>> = vec![
        vec![0xc0, 0x00],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        oversize.to_vec(),
        vec![0x10, 0x20, 0x00],
        vec![],
        vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
    ];
    for case in &cases {
        let answer = raw(&server, case).await;
        assert!(answer.is_empty(), "{case:?} got {answer:?}");
    }
    // MQTT 5 is refused with "unacceptable protocol version".
    let v5 = [
        0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'a', 0, 0,
    ];
    assert_eq!(raw(&server, &v5).await, [0x20, 2, 0, 1]);
    // Random noise, many times.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = tokio::task::JoinSet::new();
    let addr = server.local_addr;
    for _ in 0..200 {
        let len = (seed % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        noise.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream.write_all(&bytes).await;
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        });
    }
    while noise.join_next().await.is_some() {}
    // A logged-in client sending a huge publish is cut off.
    let (big, mut big_events) = client(&server, "a", "pw-a");
    until(&mut big_events, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await;
    big.publish("a/up", QoS::AtMostOnce, false, vec![0u8; 100 * 1024])
        .await
        .expect("queue");
    until_closed(&mut big_events).await;
    // The server still serves.
    let (_ok, mut ok_events) = client(&server, "b", "pw-b");
    until(&mut ok_events, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await;
    let mut saw = false;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), server.events.recv()).await
    {
        if let Inbound::Published { .. } = event {
            panic!("a hostile payload reached the application: {event:?}");
        }
        saw |= matches!(event, Inbound::Connected { ref client_id, .. } if client_id == "b");
    }
    assert!(saw, "the good client connected");
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_its_keep_alive() {
    let mut server = server().await;
    let mut stream = TcpStream::connect(server.local_addr)
        .await
        .expect("connect");
    // CONNECT, client "a", keep-alive 1 s, password "pw-a", then silence.
    let mut connect = bytes::BytesMut::new();
    let mut packet = rumqttc::Connect::new("a");
    packet.keep_alive = 1;
    packet.login = Some(rumqttc::Login::new("user", "pw-a"));
    packet.write(&mut connect).expect("encode");
    stream.write_all(&connect).await.expect("send");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed by the server")
        .expect("read");
    assert_eq!(&answer[..2], &[0x20, 0x02], "CONNACK first");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    loop {
        if let Inbound::Disconnected { client_id } = next_event(&mut server.events).await {
            assert_eq!(client_id, "a");
            break;
        }
    }
}

/// CONNECT for client `id` with keep-alive `keep_alive` seconds, and a
/// SUBSCRIBE to `id/down`, as raw bytes.
fn connect_and_subscribe(id: &str, keep_alive: u16) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let mut packet = rumqttc::Connect::new(id);
    packet.keep_alive = keep_alive;
    packet.login = Some(rumqttc::Login::new("user", format!("pw-{id}")));
    packet.write(&mut out).expect("encode");
    let subscribe = rumqttc::Subscribe::new(format!("{id}/down"), QoS::AtMostOnce);
    let mut subscribe = subscribe;
    subscribe.pkid = 1;
    subscribe.write(&mut out).expect("encode");
    out.to_vec()
}

#[tokio::test]
async fn a_client_that_only_receives_still_expires_after_its_keep_alive() {
    let mut server = server().await;
    let mut stream = TcpStream::connect(server.local_addr)
        .await
        .expect("connect");
    stream
        .write_all(&connect_and_subscribe("a", 1))
        .await
        .expect("send");
    loop {
        if let Inbound::Connected { .. } = next_event(&mut server.events).await {
            break;
        }
    }
    // The server keeps publishing to it (more often than its keep-alive);
    // the client never sends a thing. That is not a live client.
    let handle = server.handle.clone();
    let publisher = tokio::spawn(async move {
        loop {
            handle.publish("a/down", Bytes::from_static(b"tick"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut sink = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    publisher.abort();
    assert!(closed.is_ok(), "closed although the server kept sending");
    loop {
        if let Inbound::Disconnected { client_id } = next_event(&mut server.events).await {
            assert_eq!(client_id, "a");
            break;
        }
    }
}

#[tokio::test]
async fn connections_that_never_log_in_are_bounded() {
    let mut config = Config::new("127.0.0.1:0".parse().expect("addr"));
    config.max_unauthenticated = 4;
    config.connect_timeout = Duration::from_secs(30);
    let server = Server::start(config, Arc::new(Owned)).await.expect("start");
    // Four silent connections hold every login slot...
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            TcpStream::connect(server.local_addr)
                .await
                .expect("connect"),
        );
    }
    // ...so a fifth is closed at once instead of holding a task too.
    let mut fifth = TcpStream::connect(server.local_addr)
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut byte))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // When they go, logins work again.
    drop(silent);
    let (_client, mut events) = client(&server, "b", "pw-b");
    let ack = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.code),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("in time");
    assert_eq!(ack, Ok(ConnectReturnCode::Success));
}

#[tokio::test]
async fn no_disconnect_is_lost_when_the_application_is_slow() {
    let mut server = server().await;
    // 1,100 logins and disconnects while the application reads nothing:
    // more events than the queue holds. Every disconnect must arrive.
    let total = 1_100;
    let addr = server.local_addr;
    let clients = tokio::spawn(async move {
        for i in 0..total {
            let id = format!("c{i}");
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut connect = bytes::BytesMut::new();
            let mut packet = rumqttc::Connect::new(id.as_str());
            packet.login = Some(rumqttc::Login::new("user", format!("pw-{id}")));
            packet.write(&mut connect).expect("encode");
            stream.write_all(&connect).await.expect("send");
            let mut ack = [0u8; 4];
            stream.read_exact(&mut ack).await.expect("connack");
            drop(stream);
        }
    });
    // Read only once every client is gone: the queue was full meanwhile.
    clients.await.expect("clients");
    let mut disconnected = 0;
    while disconnected < total {
        if let Inbound::Disconnected { .. } = next_event(&mut server.events).await {
            disconnected += 1;
        }
    }
    assert_eq!(disconnected, total);
}
