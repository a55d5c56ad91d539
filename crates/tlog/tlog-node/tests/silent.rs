//! tlog.md §7.9: a request unanswered within the timeout fails, and three
//! in a row close the connection. A peer that announces a valid, larger
//! checkpoint and then never answers the mirror's requests is dropped
//! after its third silence, and nothing is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tlog_core::merkle::MemoryTree;
use tlog_core::note::{KeyType, Note, SignerKey};
use tlog_core::sync::{Frame, HelloLog, Ident, Message};
use tlog_core::Checkpoint;
use tlog_node::peer::{Config, Follow, Limits, Peer};
use tlog_node::LogNode;
use tlog_store::{LogStore, RedbLogStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ORIGIN: &str = "silent.example/log";

async fn next_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Frame> {
    loop {
        if let Ok(Some((frame, used))) = Frame::decode(buf, 8 << 20) {
            buf.drain(..used);
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_unanswered_requests_close_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SignerKey::from_seed(ORIGIN, KeyType::Ed25519, &[5; 32]).expect("key");
    let store = Arc::new(RedbLogStore::open(&dir.path().join("m.redb")).expect("store"));
    let mirror = LogNode::mirror(store.clone(), ORIGIN)
        .await
        .expect("mirror");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = Peer::new(
        Config {
            name: "mirror".into(),
            peers: Vec::new(),
            limits: Limits {
                request_timeout: Duration::from_millis(300),
                ..Limits::default()
            },
        },
        vec![(
            mirror.clone(),
            Follow {
                key: key.verifier(),
                witnesses: Vec::new(),
                cosigner: None,
                validator: None,
                validating: None,
            },
        )],
    );
    tokio::spawn(peer.clone().run(listener));

    // A checkpoint of 10 entries the origin's key really signed.
    let mut tree = MemoryTree::new();
    for i in 0..10u8 {
        tree.push(&[i]);
    }
    let mut note = Note::new(&Checkpoint::new(ORIGIN, 10, tree.root()).to_text()).expect("note");
    note.add(key.sign(note.text(), 0));
    let inv = Frame {
        id: 0,
        message: Message::Inv {
            log_id: tlog_core::log_id(ORIGIN),
            note: note.to_bytes(),
            old_size: 0,
            proof: Vec::new(),
        },
    };

    let mut s = TcpStream::connect(addr).await.expect("connect");
    let ident = Ident {
        software: "silent/0".into(),
        node: "silent".into(),
        logs: 1,
    };
    s.write_all(&ident.to_line()).await.expect("ident");
    let hello = Frame {
        id: 0,
        message: Message::Hello {
            version: 1,
            nonce: 7,
            max_frame: 1 << 20,
            max_inflight: 8,
            node_name: "silent".into(),
            logs: vec![HelloLog {
                prefix: false,
                origin: ORIGIN.into(),
                roles: 1,
                size: 10,
            }],
        },
    };
    s.write_all(&hello.encode()).await.expect("hello");
    let mut buf = Vec::new();
    // Its identification line, then frames.
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            buf.drain(..=i);
            break;
        }
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before its identification line");
        buf.extend_from_slice(&chunk[..n]);
    }
    // Announce, then leave every request unanswered.
    let started = Instant::now();
    let mut asked = 0;
    s.write_all(&inv.encode()).await.expect("inv");
    while let Some(frame) =
        tokio::time::timeout(Duration::from_secs(20), next_frame(&mut s, &mut buf))
            .await
            .expect("the mirror neither asks nor closes")
    {
        if matches!(
            frame.message,
            Message::GetData { .. } | Message::GetHeaders { .. }
        ) {
            asked += 1;
            assert!(
                asked <= 3,
                "a fourth request: three silences did not close it"
            );
            // Let it time out, then announce again: the next request.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = s.write_all(&inv.encode()).await;
        }
    }
    assert_eq!(asked, 3, "closed after the third unanswered request");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let state = store.state(mirror.log_id()).await.expect("state");
    assert_eq!(state.size, 0, "nothing stored");
    assert!(!peer.is_banned("127.0.0.1"), "silence is not misbehaviour");
}
