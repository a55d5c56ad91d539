//! The federation of tlog.md §7 as real processes on loopback (tlog.md
//! §10 "Federation"): a partition that heals with every member converged
//! and no evidence; an origin that shows two members different trees,
//! caught by both with identical evidence that an independent checker
//! (`signed_note` and `ct-merkle`, code nobody here wrote) accepts; and a
//! lying member whose every lie gets it banned with nothing of it stored.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ct_merkle::{ConsistencyProof, RootHash};
use lk_testkit::net::FaultProxy;
use sha2_011::Sha256;
use support::*;
use tlog_core::merkle::{self, MemoryTree};
use tlog_core::note::{KeyType, Note, SignerKey};
use tlog_core::sync::{Frame, HelloLog, Ident, Message};
use tlog_core::{log_id, Checkpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn size_of(note: &[u8]) -> u64 {
    String::from_utf8_lossy(note)
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("a checkpoint")
}

/// The evidence a node serves at `lk/v1/evidence`, decoded.
fn served_evidence(node: &Tlogd) -> Vec<Vec<u8>> {
    let (status, body, _) = get(&format!("{}/lk/v1/evidence", node.url));
    assert_eq!(status, 200);
    String::from_utf8(body)
        .expect("utf8")
        .lines()
        .map(|l| tlog_core::note::b64decode(l).expect("base64"))
        .collect()
}

fn sync_addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// tlog.md §7.7 with a partition {A} | {B, C}: A keeps appending; once B's
/// link heals, B catches up and C catches up *through B* (its own link to
/// A is still cut); then everyone holds A's note verbatim, the tiles
/// verify with `tlog_tiles`, and nobody holds evidence.
#[test]
fn a_partitioned_federation_heals_and_converges_without_evidence() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let a_sync = free_port();
    let a = start_with(
        &dir.path().join("a"),
        &["--sync-listen", &sync_addr(a_sync), "--node-name", "a"],
    );
    let vkey = vkey(&a);
    let a_addr: SocketAddr = sync_addr(a_sync).parse().expect("addr");
    let b_to_a = rt.block_on(FaultProxy::start(a_addr));
    let c_to_a = rt.block_on(FaultProxy::start(a_addr));
    let (b_sync, c_sync) = (free_port(), free_port());
    let mirror = |name: &str, sync: u16, to_a: &FaultProxy, other: u16| {
        start_with(
            &dir.path().join(name),
            &[
                "--sync-listen",
                &sync_addr(sync),
                "--node-name",
                name,
                "--mirror",
                &format!("{vkey}@{}", to_a.addr),
                "--peer",
                &sync_addr(other),
            ],
        )
    };
    let b = mirror("b", b_sync, &b_to_a, c_sync);
    let c = mirror("c", c_sync, &c_to_a, b_sync);

    append(&a, (0..200).map(|i| format!("entry {i}")));
    let first = published(&a, 200);
    assert_eq!(published(&b, 200), first);
    assert_eq!(published(&c, 200), first);

    // Partition: A alone.
    b_to_a.set_down(true);
    c_to_a.set_down(true);
    append(&a, (200..500).map(|i| format!("entry {i}")));
    let latest = published(&a, 500);
    assert_eq!(size_of(&published(&b, 200)), 200, "B is cut off from A");
    assert_eq!(size_of(&published(&c, 200)), 200, "C is cut off from A");

    // B's link heals: B catches up from A, and C from B.
    b_to_a.set_down(false);
    assert_eq!(published(&b, 500), latest, "A's note, verbatim");
    assert_eq!(published(&c, 500), latest, "relayed by B");
    c_to_a.set_down(false);
    append(&a, (500..520).map(|i| format!("entry {i}")));
    let last = published(&a, 520);
    for node in [&b, &c] {
        assert_eq!(published(node, 520), last);
        their_libraries_verify(node, &vkey, &last);
    }
    for node in [&a, &b, &c] {
        assert!(served_evidence(node).is_empty());
        assert!(!node.log.lock().expect("lock").contains("banned peer"));
    }
}

/// Two processes signing with one key: the origin equivocating.
fn equivocating_origin(dir: &std::path::Path, b_size: u32, c_size: u32) -> (Tlogd, Tlogd, String) {
    let one_sync = free_port();
    let one = start_with(&dir.join("one"), &["--sync-listen", &sync_addr(one_sync)]);
    let two_dir = dir.join("two");
    std::fs::create_dir_all(&two_dir).expect("mkdir");
    std::fs::copy(dir.join("one/log-key"), two_dir.join("log-key")).expect("copy key");
    let two_sync = free_port();
    let two = start_with(&two_dir, &["--sync-listen", &sync_addr(two_sync)]);
    let vkey = vkey(&one);
    assert_eq!(vkey, support::vkey(&two));
    append(&one, (0..b_size).map(|i| format!("one {i}")));
    append(&two, (0..c_size).map(|i| format!("two {i}")));
    published(&one, b_size.into());
    published(&two, c_size.into());
    let (b_sync, c_sync) = (free_port(), free_port());
    let b = start_with(
        &dir.join("b"),
        &[
            "--sync-listen",
            &sync_addr(b_sync),
            "--node-name",
            "b",
            "--mirror",
            &format!("{vkey}@{}", sync_addr(one_sync)),
            "--peer",
            &sync_addr(c_sync),
        ],
    );
    let c = start_with(
        &dir.join("c"),
        &[
            "--sync-listen",
            &sync_addr(c_sync),
            "--node-name",
            "c",
            "--mirror",
            &format!("{vkey}@{}", sync_addr(two_sync)),
            "--peer",
            &sync_addr(b_sync),
        ],
    );
    let caught = "the log's key signed two inconsistent trees";
    b.wait_log(caught);
    c.wait_log(caught);
    drop((one, two));
    (b, c, vkey)
}

/// tlog.md §7.8 checked by code nobody here wrote: the LKEV layout read by
/// hand, both notes verified by `signed_note` from the vkey, checkpoints
/// parsed by `tlog_tiles`, and the proof checked by `ct-merkle`.
fn independent_check(evidence: &[u8], vkey: &str) -> (u64, u64) {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let part = &evidence[at..at + n];
        at += n;
        part
    };
    assert_eq!(take(4), b"LKEV");
    assert_eq!(take(1), [1], "version");
    assert_eq!(take(1), [0], "subject: the log key");
    assert_eq!(take(1), [0], "no witness name");
    let mut note = || {
        let len = u32::from_be_bytes(take(4).try_into().expect("u32")) as usize;
        let bytes = take(len).to_vec();
        let verifier = signed_note::StandardVerifier::new(vkey).expect("their vkey parser");
        let note = signed_note::Note::from_bytes(&bytes).expect("their note parser");
        note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
            .expect("signed by the log key");
        let checkpoint =
            tlog_tiles::Checkpoint::from_bytes(note.text()).expect("their checkpoint parser");
        (
            checkpoint.origin().to_string(),
            checkpoint.size(),
            checkpoint.hash().0,
        )
    };
    let (origin_a, size_a, root_a) = note();
    let (origin_b, size_b, root_b) = note();
    let root_b_at_a: [u8; 32] = take(32).try_into().expect("hash");
    let n = take(1)[0] as usize;
    let proof = take(32 * n).to_vec();
    assert_eq!(at, evidence.len(), "no trailing bytes");
    assert_eq!(origin_a, origin_b);
    assert!(size_a <= size_b && size_a >= 1);
    assert_ne!(root_b_at_a, root_a, "tree b differs from tree a at size a");
    if size_a == size_b {
        assert_eq!(root_b_at_a, root_b);
        assert!(proof.is_empty());
    } else {
        let old = RootHash::<Sha256>::new(root_b_at_a.into(), size_a);
        let new = RootHash::<Sha256>::new(root_b.into(), size_b);
        new.verify_consistency(
            &old,
            &ConsistencyProof::<Sha256>::try_from_bytes(proof).expect("proof bytes"),
        )
        .expect("ct-merkle: tree b really has that root at size a");
    }
    (size_a, size_b)
}

fn both_hold_the_same_valid_evidence(b: &Tlogd, c: &Tlogd, vkey: &str, sizes: (u64, u64)) {
    let at_b = served_evidence(b);
    let at_c = served_evidence(c);
    assert_eq!(at_b.len(), 1, "stored once");
    assert_eq!(at_b, at_c, "canonical: byte for byte the same");
    assert_eq!(independent_check(&at_b[0], vkey), sizes);
    let file = b.dir.join("evidence.lkev");
    std::fs::write(&file, &at_b[0]).expect("write");
    let verdict = ok(cli(&[
        "verify-evidence",
        "--vkey",
        vkey,
        file.to_str().expect("utf8"),
    ]));
    assert!(
        verdict.contains(&format!(
            "inconsistent trees of sizes {} and {}",
            sizes.0, sizes.1
        )),
        "{verdict}"
    );
}

/// The origin shows B and C two trees of one size: both detect it after
/// exchanging Inv, store identical evidence, and serve it.
#[test]
fn an_origin_showing_two_trees_of_one_size_is_caught_by_both_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, c, vkey) = equivocating_origin(dir.path(), 10, 10);
    both_hold_the_same_valid_evidence(&b, &c, &vkey, (10, 10));
}

/// The same with sizes N and N + K whose prefixes differ: the member with
/// the larger tree proves what its tree was at N.
#[test]
fn an_origin_showing_a_forked_prefix_is_caught_by_both_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, c, vkey) = equivocating_origin(dir.path(), 10, 25);
    both_hold_the_same_valid_evidence(&b, &c, &vkey, (10, 25));
}

/// What a lying peer does once B dials it and it has said Hello.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Data with one entry changed (the proof is honest).
    WrongEntry,
    /// Honest entries, the proof one hash short.
    TruncatedProof,
    /// Data starting elsewhere than asked.
    OutOfRange,
    /// A frame header announcing more than B takes.
    Oversized,
    /// An Inv whose note another key signed under the origin's name.
    ForgedInv,
}

struct Truth {
    origin: String,
    note: Vec<u8>,
    tree: MemoryTree,
    entries: Vec<Vec<u8>>,
}

async fn read_line_and_hello(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    loop {
        if let Some((_, used)) = Ident::parse(buf).expect("an LKTL/1 line") {
            buf.drain(..used);
            break;
        }
        fill(stream, buf).await.expect("their line");
    }
    let hello = next_frame(stream, buf).await.expect("their Hello");
    assert!(matches!(hello.message, Message::Hello { .. }));
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = vec![0u8; 65536];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn next_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Frame> {
    loop {
        if let Some((frame, used)) = Frame::decode(buf, 1 << 24).expect("a frame") {
            buf.drain(..used);
            return Some(frame);
        }
        fill(stream, buf).await?;
    }
}

async fn say(stream: &mut TcpStream, id: u32, message: Message) {
    let _ = stream.write_all(&Frame { id, message }.encode()).await;
}

fn hello(truth: &Truth, name: &str) -> Message {
    Message::Hello {
        version: 1,
        nonce: 42,
        max_frame: 1 << 22,
        max_inflight: 8,
        node_name: name.into(),
        logs: vec![HelloLog {
            prefix: false,
            origin: truth.origin.clone(),
            roles: 2,
            size: truth.tree.size(),
        }],
    }
}

/// A note of the true size and root, signed by another key of the same name.
fn forged_note(truth: &Truth) -> Vec<u8> {
    let forger = SignerKey::from_seed(&truth.origin, KeyType::Ed25519, &[7; 32]).expect("key");
    let text = Checkpoint::new(&truth.origin, truth.tree.size(), truth.tree.root()).to_text();
    let mut note = Note::new(&text).expect("note");
    note.add(forger.sign(note.text(), 0));
    note.to_bytes()
}

/// Serves one connection from B, lying as told; returns when B closes it.
async fn liar(listener: TcpListener, truth: Arc<Truth>, lie: Lie) {
    let (mut stream, _) = listener.accept().await.expect("B dials");
    let ident = Ident {
        software: "liar/1".into(),
        node: format!("{lie:?}"),
        logs: 1,
    };
    stream.write_all(&ident.to_line()).await.expect("line");
    let mut buf = Vec::new();
    read_line_and_hello(&mut stream, &mut buf).await;
    say(&mut stream, 0, hello(&truth, "liar")).await;
    let id = log_id(&truth.origin);
    match lie {
        Lie::Oversized => {
            let mut header = b"LKTL".to_vec();
            header.extend_from_slice(&[0x02, 0]);
            header.extend_from_slice(&0u32.to_be_bytes());
            header.extend_from_slice(&(5u32 << 20).to_be_bytes());
            let _ = stream.write_all(&header).await;
        }
        Lie::ForgedInv => {
            let note = forged_note(&truth);
            say(&mut stream, 0, inv(id, note)).await;
        }
        _ => say(&mut stream, 0, inv(id, truth.note.clone())).await,
    }
    while let Some(frame) = next_frame(&mut stream, &mut buf).await {
        let Message::GetData {
            start,
            count,
            tree_size,
            ..
        } = frame.message
        else {
            continue;
        };
        let start = match lie {
            Lie::OutOfRange => start + 1,
            _ => start,
        };
        let end = (start + u64::from(count)).min(tree_size);
        let mut entries = truth.entries[start as usize..end as usize].to_vec();
        let mut proof = merkle::consistency_proof(&truth.tree, end, tree_size)
            .expect("infallible")
            .expect("proof");
        match lie {
            Lie::WrongEntry => entries[0] = b"not what was logged".to_vec(),
            Lie::TruncatedProof => {
                proof.pop();
            }
            _ => {}
        }
        let data = Message::Data {
            log_id: id,
            start,
            entries,
            tree_size,
            proof,
        };
        say(&mut stream, frame.id, data).await;
    }
}

fn inv(log_id: [u8; 32], note: Vec<u8>) -> Message {
    Message::Inv {
        log_id,
        note,
        old_size: 0,
        proof: Vec::new(),
    }
}

/// A TCP connection to `port` on loopback from the address `ip` (any
/// 127.0.0.0/8 address is loopback: a peer of its own for bans and caps).
async fn connect_from(ip: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind");
    socket
        .connect(sync_addr(port).parse().expect("addr"))
        .await
        .expect("connect")
}

/// A connection to B's sync port from `ip`, through the line and Hellos.
async fn dial_from(ip: &str, port: u16, truth: &Truth) -> (TcpStream, Vec<u8>) {
    let mut stream = connect_from(ip, port).await;
    let ident = Ident {
        software: "liar/1".into(),
        node: "inbound".into(),
        logs: 1,
    };
    stream.write_all(&ident.to_line()).await.expect("line");
    let mut buf = Vec::new();
    read_line_and_hello(&mut stream, &mut buf).await;
    say(&mut stream, 0, hello(truth, "inbound liar")).await;
    (stream, buf)
}

/// tlog.md §7.6, §7.9: B follows A's log but can reach only liars. Each lie
/// (wrong entries, a truncated proof, Data out of range, an oversized
/// frame, an Inv signed by another key, dialed or inbound) gets that liar
/// disconnected and banned, and nothing it sent is stored or published;
/// a flood gets Reject 4. Restarted with an honest peer, B then converges
/// on A's tree, which it could not if any lie had reached its store.
#[test]
fn a_lying_member_is_banned_and_nothing_it_sent_is_stored() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let a_sync = free_port();
    let a = start_with(
        &dir.path().join("a"),
        &["--sync-listen", &sync_addr(a_sync)],
    );
    let vkey = vkey(&a);
    // More than one chunk (1,024), so the first chunk's proof is not empty.
    let entries: Vec<Vec<u8>> = (0..1300).map(|i| format!("e{i}").into_bytes()).collect();
    append(
        &a,
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(e).to_string()),
    );
    let note = published(&a, 1300);
    let mut tree = MemoryTree::new();
    for e in &entries {
        tree.push(e);
    }
    let truth = Arc::new(Truth {
        origin: "localhost/tlogd/log".into(),
        note,
        tree,
        entries,
    });

    let lies = [
        Lie::WrongEntry,
        Lie::TruncatedProof,
        Lie::OutOfRange,
        Lie::Oversized,
        Lie::ForgedInv,
    ];
    let mut peers = Vec::new();
    let mut liars = Vec::new();
    for lie in lies {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.2:0"))
            .expect("127.0.0.2 is loopback");
        peers.push(listener.local_addr().expect("addr").to_string());
        liars.push(rt.spawn(liar(listener, truth.clone(), lie)));
    }
    let b_dir = dir.path().join("b");
    let b_sync = free_port();
    let mut args = vec![
        "--sync-listen".to_string(),
        sync_addr(b_sync),
        "--mirror".into(),
        vkey.clone(),
    ];
    for p in &peers {
        args.extend(["--peer".to_string(), p.clone()]);
    }
    let b = start_with(&b_dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    // Every dialed liar is cut off (its serve loop ends when B closes).
    rt.block_on(async {
        for liar in liars {
            let closed = tokio::time::timeout(Duration::from_secs(30), liar).await;
            assert!(
                matches!(closed, Ok(Ok(()))),
                "B closes every liar: {}",
                b.log.lock().expect("lock")
            );
        }
    });
    for reason in [
        "entries at 0 that are not in the announced tree",
        "Data for something not asked",
        "over the limit",
        "a note that does not verify",
    ] {
        b.wait_log(reason);
    }
    let bans = b.log.lock().expect("lock").matches("banned peer").count();
    assert_eq!(bans, lies.len(), "one ban per liar");

    // Inbound: a forged Inv from 127.0.0.3 is banned; the next connection
    // from there is dropped before any banner.
    rt.block_on(async {
        let (mut stream, mut buf) = dial_from("127.0.0.3", b_sync, &truth).await;
        say(
            &mut stream,
            0,
            inv(log_id(&truth.origin), forged_note(&truth)),
        )
        .await;
        while next_frame(&mut stream, &mut buf).await.is_some() {}
        let mut again = connect_from("127.0.0.3", b_sync).await;
        let mut first = [0u8; 16];
        let got = again.read(&mut first).await.unwrap_or(0);
        assert_eq!(got, 0, "a banned address gets nothing, not even the banner");
    });
    // A flood of requests from 127.0.0.4 is answered with Reject 4.
    rt.block_on(async {
        let (mut stream, mut buf) = dial_from("127.0.0.4", b_sync, &truth).await;
        for id in 1..=100u32 {
            let get = Message::GetHeaders {
                log_id: log_id(&truth.origin),
                locator: vec![(0, merkle::EMPTY_ROOT)],
            };
            say(&mut stream, id, get).await;
        }
        let mut limited = false;
        for _ in 0..100 {
            match next_frame(&mut stream, &mut buf).await {
                Some(Frame {
                    message: Message::Reject { code: 4, .. },
                    ..
                }) => {
                    limited = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        assert!(limited, "Reject 4 for a flood");
    });

    // Nothing of it was stored or published.
    let (status, _, _) = get(&format!("{}/checkpoint", b.url));
    assert_eq!(status, 404, "nothing published");
    let (status, _, _) = get(&format!("{}/tile/entries/000.p/1", b.url));
    assert_eq!(status, 404, "nothing stored");
    drop(b);
    let b = start_with(
        &b_dir,
        &[
            "--sync-listen",
            &sync_addr(b_sync),
            "--mirror",
            &format!("{vkey}@{}", sync_addr(a_sync)),
        ],
    );
    let copied = published(&b, 1300);
    assert_eq!(copied, truth.note);
    their_libraries_verify(&b, &vkey, &copied);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// tlog.md §6.3, §10 "Crash": the origin restored from an old backup learns
/// from a mirror that its key signed a larger tree than it holds; it
/// freezes instead of signing a fork, and refuses appends.
#[test]
fn an_origin_restored_from_an_old_backup_freezes_instead_of_forking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a_dir = dir.path().join("a");
    let backup = dir.path().join("backup");
    let (a_sync, b_sync) = (free_port(), free_port());
    let a_args = [
        "--sync-listen".to_string(),
        sync_addr(a_sync),
        "--peer".into(),
        sync_addr(b_sync),
    ];
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = start_with(&a_dir, &a_args);
    let vkey = vkey(&a);
    append(&a, (0..20).map(|i| format!("entry {i}")));
    published(&a, 20);
    drop(a);
    copy_dir(&a_dir, &backup);
    let a = start_with(&a_dir, &a_args);
    append(&a, (20..50).map(|i| format!("entry {i}")));
    let signed = published(&a, 50);
    let b = start_with(
        &dir.path().join("b"),
        &[
            "--sync-listen",
            &sync_addr(b_sync),
            "--mirror",
            &format!("{vkey}@{}", sync_addr(a_sync)),
        ],
    );
    assert_eq!(published(&b, 50), signed);
    drop(a);
    // The operator restores the old backup (size 20) and starts again.
    std::fs::remove_dir_all(&a_dir).expect("rm");
    copy_dir(&backup, &a_dir);
    let a = start_with(&a_dir, &a_args);
    a.wait_log("beyond the stored tree: the store lost signed history; log frozen");
    let status = post(&format!("{}/add", a.url), Some(&token(&a)), b"fork me");
    assert_eq!(status, 503, "a frozen log takes no appends");
    assert_eq!(size_of(&published(&a, 20)), 20, "nothing new signed");
    assert_eq!(
        published(&b, 50),
        signed,
        "the mirror keeps the signed history"
    );
    assert!(served_evidence(&b).is_empty());
    drop(a);
    // The operator unfreezes it anyway, away from the mirror: it signs a
    // fork of what the mirror holds. When the mirror reaches it again, the
    // origin's first Inv is checked against the mirror's tree: evidence,
    // kept by both.
    let a = start_with(
        &a_dir,
        &["--sync-listen", &sync_addr(a_sync), "--danger-unfreeze"],
    );
    assert!(a
        .log
        .lock()
        .expect("lock")
        .contains("--danger-unfreeze: the log was frozen"));
    append(&a, ["a fork".to_string()]);
    published(&a, 21);
    b.wait_log("the log's key signed two inconsistent trees");
    a.wait_log("the log's key signed two inconsistent trees");
    let evidence = served_evidence(&b);
    assert_eq!(evidence.len(), 1);
    assert_eq!(served_evidence(&a), evidence);
    // Equivocated: the origin signs and takes nothing more, and no flag
    // undoes that.
    assert_eq!(
        post(&format!("{}/add", a.url), Some(&token(&a)), b"more"),
        503
    );
    drop(a);
    let refused = std::process::Command::new(lk_testkit::process::workspace_binary("tlogd"))
        .args(["--data-dir", a_dir.to_str().expect("utf8")])
        .args(["--listen", "127.0.0.1:0", "--sync-listen", "127.0.0.1:0"])
        .arg("--danger-unfreeze")
        .output()
        .expect("run tlogd");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("which no flag undoes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(independent_check(&evidence[0], &vkey), (21, 50));
}

/// tlog.md §5.3, §7: three members each run their own log and follow the
/// other two on one sync port. C knows B only, so A's log reaches it
/// through B. Every member serves every log at `/logs/<origin>/` with the
/// origin's own notes, and `tlog_tiles` verifies each copy. Each member
/// cosigns (mirror cosigner) what it holds whole, and a client policy
/// requiring both other members' cosignatures accepts A's log from A and
/// from either copy.
#[test]
fn three_members_follow_each_others_logs_on_one_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["a", "b", "c"];
    let origin = |m: &str| format!("{m}.example/log");
    let cosigner = |m: &str| format!("{m}.example/mirror");
    // Keys first (a throwaway start each), then the members.
    let (vkeys, cosigners): (Vec<String>, Vec<String>) = names
        .iter()
        .map(|m| {
            let node = start_with(
                &dir.path().join(m),
                &[
                    "--origin",
                    &origin(m),
                    "--cosign",
                    "--cosigner-name",
                    &cosigner(m),
                ],
            );
            let cvkey = std::fs::read_to_string(node.dir.join("cosigner-vkey"))
                .expect("cosigner vkey")
                .trim()
                .to_string();
            (vkey(&node), cvkey)
        })
        .unzip();
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let follow = |i: usize, via: Option<usize>| match via {
        Some(p) => format!("{}@{}", vkeys[i], sync_addr(ports[p])),
        None => vkeys[i].clone(),
    };
    let args: [Vec<String>; 3] = [
        vec![follow(1, Some(1)), follow(2, Some(2))],
        vec![follow(0, Some(0)), follow(2, Some(2))],
        // C reaches A's log only through B.
        vec![follow(0, None), follow(1, Some(1))],
    ];
    let members: Vec<Tlogd> = names
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut a = vec![
                "--origin".to_string(),
                origin(m),
                "--node-name".into(),
                m.to_string(),
                "--sync-listen".into(),
                sync_addr(ports[i]),
            ];
            for f in &args[i] {
                a.extend(["--follow".to_string(), f.clone()]);
            }
            a.extend([
                "--cosign".to_string(),
                "--cosigner-name".into(),
                cosigner(m),
            ]);
            for (j, c) in cosigners.iter().enumerate() {
                if j != i {
                    a.extend(["--trust-cosigner".to_string(), c.clone()]);
                }
            }
            if i == 0 {
                // A publishes only what both other members hold whole.
                a.extend(["--cosigner-quorum".to_string(), "2".into()]);
            }
            start_with(
                &dir.path().join(m),
                &a.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .collect();
    for (i, member) in members.iter().enumerate() {
        append(member, (0..100).map(|k| format!("{} {k}", names[i])));
    }
    for (i, m) in names.iter().enumerate() {
        published(&members[i], 100);
        for member in &members {
            let url = format!("{}/logs/{}", member.url, origin(m));
            published_at(&url, 100);
            // Cosignatures accumulate; every copy ends byte-identical to
            // the origin's note (signature lines in canonical order).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let note = loop {
                let (_, here, _) = get(&format!("{url}/checkpoint"));
                let (_, there, _) = get(&format!("{}/checkpoint", members[i].url));
                if here == there && String::from_utf8_lossy(&here).matches('\u{2014}').count() == 3
                {
                    break here;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{m}'s note never converged at {url}"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            their_libraries_verify_at(&url, &vkeys[i], &note);
        }
    }
    // Each member cosigned the others' logs once it held them whole; the
    // cosignatures reach the origin and every copy, so a client requiring
    // both other members' cosignatures accepts A's log from any member.
    let policy = dir.path().join("a.policy");
    std::fs::write(
        &policy,
        format!(
            "log {}\nwitness b {}\nwitness c {}\ngroup mirrors all b c\nquorum mirrors\n",
            vkeys[0], cosigners[1], cosigners[2]
        ),
    )
    .expect("policy");
    for url in [
        members[0].url.clone(),
        format!("{}/logs/{}", members[1].url, origin("a")),
        format!("{}/logs/{}", members[2].url, origin("a")),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = cli(&[
                "checkpoint",
                "--url",
                &url,
                "--policy",
                policy.to_str().expect("utf8"),
            ]);
            if out.status.success() {
                let line = String::from_utf8_lossy(&out.stdout).to_string();
                assert!(line.starts_with("a.example/log 100 "), "{line}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{url}: never cosigned by both: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for member in &members {
        assert!(!member.log.lock().expect("lock").contains("banned peer"));
    }

    // A publishes only what both other members hold whole: with C down,
    // B mirrors A's next entries (A signed them and told its peers) but A
    // keeps serving the checkpoint both cosigned.
    let mut members = members;
    drop(members.pop());
    append(&members[0], (100..110).map(|k| format!("a {k}")));
    published_at(&format!("{}/logs/{}", members[1].url, origin("a")), 110);
    let (_, note, _) = get(&format!("{}/checkpoint", members[0].url));
    assert_eq!(size_of(&note), 100, "published without C's cosignature");
}

/// tlog.md §7.9: at most 4 inbound connections per address. A fifth from
/// the same address is dropped before the banner; another address is
/// still served.
#[test]
fn inbound_connections_are_capped_per_address() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _node = start_with(&dir.path().join("a"), &["--sync-listen", &sync_addr(port)]);
    rt.block_on(async {
        let connect = |ip: &'static str| async move {
            let mut stream = connect_from(ip, port).await;
            let mut banner = [0u8; 7];
            let got = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut banner))
                .await
                .expect("an answer or a close");
            (stream, got.is_ok() && &banner == b"LKTL/1 ")
        };
        let mut held = Vec::new();
        for _ in 0..4 {
            let (stream, greeted) = connect("127.0.0.5").await;
            assert!(greeted, "the first four are served");
            held.push(stream);
        }
        let (_, greeted) = connect("127.0.0.5").await;
        assert!(!greeted, "a fifth from the same address is dropped");
        let (_, greeted) = connect("127.0.0.6").await;
        assert!(greeted, "another address is still served");
        drop(held);
    });
}

/// What a node's sync port tells a human (`nc`): its logs with sizes.
fn err_line(sync: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(sync).expect("sync port");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(b"\n").expect("enter");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// `--follow-prefix`: one key signing logs under a prefix (each under its
/// own origin name, as lssd's per-client logs are), two origins serving
/// them, and a mirror that follows the prefix from both: it takes each log
/// as its origin announces it, and not a log outside the prefix.
#[test]
fn a_prefix_follower_mirrors_every_log_its_key_signs_under_the_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = [0x51; 32];
    let origins = ["p.example/logs/1", "p.example/logs/2", "q.example/log"];
    let ports: Vec<u16> = origins.iter().map(|_| free_port()).collect();
    let nodes: Vec<Tlogd> = origins
        .iter()
        .enumerate()
        .map(|(i, origin)| {
            let d = dir.path().join(format!("o{i}"));
            std::fs::create_dir_all(&d).expect("dir");
            let key = SignerKey::from_seed(origin, KeyType::Ed25519, &seed).expect("key");
            std::fs::write(d.join("log-key"), format!("{}\n", key.to_private_line()))
                .expect("key file");
            let node = start_with(
                &d,
                &["--origin", origin, "--sync-listen", &sync_addr(ports[i])],
            );
            append(&node, (0..(5 + i)).map(|k| format!("{origin} {k}")));
            published(&node, 5 + i as u64);
            node
        })
        .collect();
    let prefix_key = SignerKey::from_seed("p.example/logs/", KeyType::Ed25519, &seed)
        .expect("key")
        .verifier()
        .to_string();
    let mirror_sync = sync_addr(free_port());
    let mut args = vec![
        "--origin".to_string(),
        "m.example/log".into(),
        "--sync-listen".into(),
        mirror_sync.clone(),
    ];
    for port in &ports {
        args.extend([
            "--follow-prefix".to_string(),
            format!("{prefix_key}@{}", sync_addr(*port)),
        ]);
    }
    let mirror = start_with(
        &dir.path().join("m"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = err_line(&mirror_sync);
        if line.contains("p.example/logs/1 size=5") && line.contains("p.example/logs/2 size=6") {
            assert!(!line.contains("q.example/log"), "{line}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never mirrored: {line}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in nodes.iter().chain([&mirror]) {
        assert!(!node.log.lock().expect("lock").contains("banned peer"));
    }
}

/// tlog.md §5.3: a witness that is a federation peer cosigns the
/// checkpoints that reach it by `Inv` as it does over HTTP (consistent with
/// its record, which it updates durably first) and sends the cosigned note
/// back; the log, requiring that cosignature, publishes with it. No HTTP
/// submission is configured.
#[test]
fn a_witness_cosigns_checkpoints_that_arrive_by_inv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin = "a.example/log";
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).expect("dir");
    let key = SignerKey::from_seed(origin, KeyType::Ed25519, &[0x61; 32]).expect("key");
    std::fs::write(
        a_dir.join("log-key"),
        format!("{}\n", key.to_private_line()),
    )
    .expect("key");
    let a_vkey = key.verifier().to_string();
    let (a_sync, w_sync) = (sync_addr(free_port()), sync_addr(free_port()));
    let w = start_with(
        &dir.path().join("w"),
        &[
            "--origin",
            "w.example/log",
            "--sync-listen",
            &w_sync,
            "--witness-for",
            &a_vkey,
        ],
    );
    let w_vkey = std::fs::read_to_string(w.dir.join("witness-vkey"))
        .expect("witness vkey")
        .trim()
        .to_string();
    let a = start_with(
        &a_dir,
        &[
            "--origin",
            origin,
            "--sync-listen",
            &a_sync,
            "--peer",
            &w_sync,
            "--trust-cosigner",
            &w_vkey,
            "--cosigner-quorum",
            "1",
        ],
    );
    append(&a, (0..20).map(|k| format!("a {k}")));
    let note = published(&a, 20);
    assert_eq!(size_of(&note), 20);
    let text = String::from_utf8_lossy(&note).to_string();
    assert!(text.contains("\u{2014} localhost/tlogd/witness "), "{text}");
    // The witness's own record is that checkpoint.
    let (status, record, _) = get(&format!(
        "{}/witness/{}/checkpoint",
        w.url,
        hex::encode(tlog_core::log_id(origin))
    ));
    assert_eq!(status, 200);
    assert_eq!(size_of(&record), 20);
    // A client requiring the witness accepts A's checkpoint.
    let policy = dir.path().join("policy");
    std::fs::write(
        &policy,
        format!("log {a_vkey}\nwitness w {w_vkey}\nquorum w\n"),
    )
    .expect("policy");
    let out = cli(&[
        "checkpoint",
        "--url",
        &a.url,
        "--policy",
        policy.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    // More entries: the next checkpoint is proven from the size the witness
    // holds, cosigned again.
    append(&a, (20..30).map(|k| format!("a {k}")));
    published(&a, 30);
    for node in [&a, &w] {
        assert!(!node.log.lock().expect("lock").contains("banned peer"));
    }
}
