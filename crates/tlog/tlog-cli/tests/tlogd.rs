//! A newcomer's path, with real processes: start `tlogd`, append with
//! `tlog-cli`, verify with `tlog-cli` and with code nobody here wrote
//! (`signed_note` verifies the checkpoint from the printed vkey,
//! `tlog_tiles` computes the root from the served tiles); the HTTP rules of
//! tlog.md §4; and a log that forks its history under the same key, caught
//! by `tlog-cli sync` with evidence that `verify-evidence` accepts.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

#[test]
fn start_append_verify_with_our_cli_and_with_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(&dir.path().join("tlogd"));
    let vkey = vkey(&node);
    let token_file = node.dir.join("append-token");
    // Append with the CLI, and many more over HTTP.
    for i in 0..3 {
        let index = ok(cli(&[
            "append",
            "--url",
            &node.url,
            "--token-file",
            token_file.to_str().expect("utf8"),
            "--data",
            &format!("hello {i}"),
        ]));
        assert_eq!(index.trim(), i.to_string());
    }
    append(&node, (3..600u32).map(|i| format!("entry {i}")));
    let note = published(&node, 600);

    // Our CLI: the checkpoint, then a full verified sync from tiles.
    let line = ok(cli(&["checkpoint", "--url", &node.url, "--vkey", &vkey]));
    assert!(line.starts_with("localhost/tlogd/log 600 "), "{line}");
    let state = dir.path().join("view");
    let entries = dir.path().join("entries");
    let out = ok(cli(&[
        "sync",
        "--url",
        &node.url,
        "--vkey",
        &vkey,
        "--state",
        state.to_str().expect("utf8"),
        "--entries",
        entries.to_str().expect("utf8"),
    ]));
    assert!(
        out.contains("verified at size 600 (600 new entries"),
        "{out}"
    );
    let hex_lines = std::fs::read_to_string(&entries).expect("entries");
    assert_eq!(
        hex_lines.lines().next(),
        Some(hex::encode("hello 0").as_str())
    );
    // Incremental: only the new ones.
    append(&node, (600..650u32).map(|i| format!("entry {i}")));
    published(&node, 650);
    let out = sync_view(&node.url, &vkey, &state);
    assert!(out.contains("(50 new entries"), "{out}");

    their_libraries_verify(&node, &vkey, &note);
}

#[test]
fn http_rules_of_the_tile_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(&dir.path().join("tlogd"));
    append(&node, (0..300u32).map(|i| format!("e{i}")));
    published(&node, 300);
    let url = |p: &str| format!("{}/{p}", node.url);
    let (status, body, cors) = get(&url("tile/0/000"));
    assert_eq!(
        (status, body.len(), cors.as_deref()),
        (200, 8192, Some("*"))
    );
    assert_eq!(get(&url("tile/0/001.p/44")).0, 200);
    assert_eq!(get(&url("tile/entries/001.p/44")).0, 200);
    for missing in [
        "tile/0/001",
        "tile/0/001.p/45",
        "tile/0/0",
        "tile/00/000",
        "tile/0/000.p/256",
        "tile/1/000",
        "nope",
    ] {
        assert_eq!(get(&url(missing)).0, 404, "{missing}");
    }
    assert_eq!(get(&url("lk/v1/inclusion?index=5&size=300")).0, 200);
    assert_eq!(get(&url("lk/v1/inclusion?index=300")).0, 404);
    assert_eq!(get(&url("lk/v1/consistency?old=301&size=300")).0, 400);
    assert_eq!(get(&url("lk/v1/consistency?old=01")).0, 400);
    assert_eq!(get(&url("lk/v1/consistency?old=10&size=9000")).0, 404);
    // Appends need the operator's token; entries are bounded.
    assert_eq!(post(&url("add"), None, b"x"), 401);
    assert_eq!(post(&url("add"), Some("wrong"), b"x"), 401);
    assert_eq!(
        post(&url("add"), Some(&token(&node)), &vec![0; 65_536]),
        413
    );
    assert_eq!(get(&url("add")).0, 405);
}

#[test]
fn a_forked_history_under_the_same_key_is_caught_with_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let honest_dir = dir.path().join("honest");
    let honest = start(&honest_dir);
    let vkey = vkey(&honest);
    append(&honest, (0..10u32).map(|i| format!("honest {i}")));
    published(&honest, 10);
    let state = dir.path().join("view");
    sync_view(&honest.url, &vkey, &state);
    drop(honest);
    // The operator (same key) serves another history of the same size.
    let forked_dir = dir.path().join("forked");
    std::fs::create_dir_all(&forked_dir).expect("mkdir");
    std::fs::copy(honest_dir.join("log-key"), forked_dir.join("log-key")).expect("copy key");
    let forked = start(&forked_dir);
    append(&forked, (0..10u32).map(|i| format!("forged {i}")));
    published(&forked, 10);
    let out = cli(&[
        "sync",
        "--url",
        &forked.url,
        "--vkey",
        &vkey,
        "--state",
        state.to_str().expect("utf8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evidence = state.with_extension("evidence");
    let verdict = ok(cli(&[
        "verify-evidence",
        "--vkey",
        &vkey,
        evidence.to_str().expect("utf8"),
    ]));
    assert!(
        verdict.contains("inconsistent trees of sizes 10 and 10"),
        "{verdict}"
    );
    // And the view refuses the log from now on, even honest answers.
    let again = cli(&[
        "sync",
        "--url",
        &forked.url,
        "--vkey",
        &vkey,
        "--state",
        state.to_str().expect("utf8"),
    ]);
    assert_eq!(again.status.code(), Some(3));
    // A forged evidence file is not accepted.
    let mut bytes = std::fs::read(&evidence).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&evidence, &bytes).expect("write");
    let out = cli(&[
        "verify-evidence",
        "--vkey",
        &vkey,
        evidence.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// tlog.md §5.1 with real processes: a tlogd witnessing another's log
/// cosigns consistent checkpoints only, once per size, and keeps evidence
/// when the log signs two trees of one size.
#[test]
fn a_witness_cosigns_only_consistent_checkpoints() {
    use tlog_core::note::b64decode;
    use tlog_core::{log_id, Evidence, Policy};
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log");
    let log = start(&log_dir);
    let log_vkey = vkey(&log);
    let witness = start_with(&dir.path().join("witness"), &["--witness-for", &log_vkey]);
    let witness_vkey = std::fs::read_to_string(witness.dir.join("witness-vkey"))
        .expect("witness vkey")
        .trim()
        .to_string();
    let add = format!("{}/witness/add-checkpoint", witness.url);
    append(&log, (0..10).map(|i| format!("honest {i}")));
    let note10 = published(&log, 10);
    let body = |old: u64, proof: &[u8], note: &[u8]| {
        [format!("old {old}\n").as_bytes(), proof, b"\n", note].concat()
    };

    let (status, line) = post_full(&add, &body(0, b"", &note10));
    assert_eq!(status, 200, "{line}");
    assert!(
        line.starts_with("\u{2014} localhost/tlogd/witness "),
        "{line}"
    );
    let cosigned = [note10.clone(), line.into_bytes()].concat();
    let policy = Policy::parse(&format!(
        "log {log_vkey}\nwitness w {witness_vkey}\nquorum w\n"
    ))
    .expect("policy");
    policy
        .verify(&cosigned, now())
        .expect("a cosigned checkpoint meets the quorum");

    // The same submission again: 409 with the size it holds.
    assert_eq!(
        post_full(&add, &body(0, b"", &note10)),
        (409, "10\n".to_string())
    );
    // Grown, with a consistency proof from the cosigned size.
    append(&log, (0..5).map(|i| format!("more {i}")));
    let note15 = published(&log, 15);
    let (_, proof, _) = get(&format!("{}/lk/v1/consistency?old=10&size=15", log.url));
    let proof_lines: Vec<u8> = String::from_utf8(proof)
        .expect("utf8")
        .lines()
        .skip(2)
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    // A wrong proof first: 422, nothing cosigned; then the right one.
    let mut bad = proof_lines.clone();
    bad[0] = if bad[0] == b'A' { b'B' } else { b'A' };
    assert_eq!(post_full(&add, &body(10, &bad, &note15)).0, 422);
    assert_eq!(post_full(&add, &body(10, &proof_lines, &note15)).0, 200);
    drop(log);
    // Garbage: 400; the origin under another key: 403; an unknown origin: 404.
    assert_eq!(post_full(&add, b"nonsense").0, 400);
    let impostor = start(&dir.path().join("impostor"));
    append(&impostor, (0..1).map(|i| format!("x {i}")));
    assert_eq!(
        post_full(&add, &body(15, b"", &published(&impostor, 1))).0,
        403
    );
    let other = start_with(
        &dir.path().join("other"),
        &["--origin", "localhost/other/log"],
    );
    append(&other, (0..1).map(|i| format!("x {i}")));
    assert_eq!(post_full(&add, &body(0, b"", &published(&other, 1))).0, 404);

    // The log's key signs another tree of size 15: refused, and kept.
    let forked_dir = dir.path().join("forked");
    std::fs::create_dir_all(&forked_dir).expect("mkdir");
    std::fs::copy(log_dir.join("log-key"), forked_dir.join("log-key")).expect("copy key");
    let forked = start(&forked_dir);
    append(&forked, (0..15).map(|i| format!("forged {i}")));
    let fork15 = published(&forked, 15);
    assert_eq!(post_full(&add, &body(15, b"", &fork15)).0, 422);
    let id = hex::encode(log_id("localhost/tlogd/log"));
    let (status, list, _) = get(&format!("{}/witness/{id}/evidence", witness.url));
    assert_eq!(status, 200);
    let list = String::from_utf8(list).expect("utf8");
    let blob = b64decode(list.lines().next().expect("evidence kept")).expect("base64");
    let key = tlog_core::note::VerifierKey::parse(&log_vkey).expect("vkey");
    Evidence::verify(&blob, &[key]).expect("anyone can check it");
    // The witness still holds the honest tree.
    let (status, monitored, _) = get(&format!("{}/witness/{id}/checkpoint", witness.url));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&monitored).contains("\n15\n"));
    assert_eq!(
        get(&format!(
            "{}/witness/{}/checkpoint",
            witness.url,
            "ab".repeat(32)
        ))
        .0,
        404
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// tlog.md §7.2–§7.5 on the sync port: `nc` gets the banner and, after a
/// line that is not LKTL/1, the ERR line with the log's checkpoint; a peer
/// gets Hello, Pong, and Data whose entries verify against the checkpoint.
#[test]
fn the_sync_port_greets_nc_and_serves_verified_data() {
    use std::io::{Read, Write};
    use tlog_core::merkle::{leaf_hash, verify_consistency, CompactRange};
    use tlog_core::sync::{Frame, Ident, Message};
    use tlog_core::{log_id, Checkpoint, Policy};

    let dir = tempfile::tempdir().expect("tempdir");
    let sync_port = free_port();
    let node = start_with(
        &dir.path().join("tlogd"),
        &["--sync-listen", &format!("127.0.0.1:{sync_port}")],
    );
    append(&node, (0..300u32).map(|i| format!("e{i}")));
    let note = published(&node, 300);
    let key = tlog_core::note::VerifierKey::parse(&vkey(&node)).expect("vkey");
    let checkpoint: Checkpoint = Policy::single(key)
        .verify(&note, now())
        .expect("verifies")
        .checkpoint;

    // nc: the banner at once; a stray line gets the ERR line.
    let mut nc = std::net::TcpStream::connect(("127.0.0.1", sync_port)).expect("connect");
    nc.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    nc.write_all(b"hello?\n").expect("write");
    let mut text = String::new();
    nc.read_to_string(&mut text).expect("read until close");
    let mut lines = text.lines();
    assert!(
        lines.next().expect("banner").starts_with("LKTL/1 tlogd/"),
        "{text}"
    );
    let err = lines.next().expect("ERR line");
    assert!(err.starts_with("ERR not an LKTL/1 peer; this port speaks the Lightkeeper tlog sync protocol; logs: localhost/tlogd/log size=300 root="), "{err}");

    // A peer.
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", sync_port)).expect("connect");
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let ours = Ident {
        software: "test/1".into(),
        node: "tester".into(),
        logs: 0,
    };
    peer.write_all(&ours.to_line()).expect("ident");
    let mut buf = Vec::new();
    let read_frame = |peer: &mut std::net::TcpStream, buf: &mut Vec<u8>| -> Frame {
        loop {
            if let Some((frame, used)) = Frame::decode(buf, 1 << 24).expect("a frame") {
                buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 65536];
            let n = peer.read(&mut chunk).expect("read");
            assert!(n > 0, "closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    // Their identification line first.
    loop {
        if let Some((ident, used)) = Ident::parse(&buf).expect("an LKTL/1 line") {
            assert_eq!(ident.software.split('/').next(), Some("tlogd"));
            buf.drain(..used);
            break;
        }
        let mut chunk = [0u8; 512];
        let n = peer.read(&mut chunk).expect("read");
        buf.extend_from_slice(&chunk[..n]);
    }
    let Message::Hello { logs, .. } = read_frame(&mut peer, &mut buf).message else {
        panic!("Hello first");
    };
    assert_eq!(
        (logs[0].origin.as_str(), logs[0].size),
        ("localhost/tlogd/log", 300)
    );
    let id = log_id("localhost/tlogd/log");
    let send = |peer: &mut std::net::TcpStream, id_: u32, message: Message| {
        peer.write_all(&Frame { id: id_, message }.encode())
            .expect("send");
    };
    // Hello is each side's first frame (a peer that skips it is closed).
    send(
        &mut peer,
        0,
        Message::Hello {
            version: 1,
            nonce: 7,
            max_frame: 1 << 22,
            max_inflight: 1,
            node_name: "tester".into(),
            logs: Vec::new(),
        },
    );
    send(&mut peer, 0, Message::Ping(77));
    assert_eq!(read_frame(&mut peer, &mut buf).message, Message::Pong(77));
    send(
        &mut peer,
        5,
        Message::GetData {
            log_id: id,
            start: 0,
            count: 256,
            tree_size: 300,
        },
    );
    let frame = read_frame(&mut peer, &mut buf);
    assert_eq!(frame.id, 5);
    let Message::Data {
        entries,
        tree_size,
        proof,
        ..
    } = frame.message
    else {
        panic!("not Data");
    };
    assert_eq!((entries.len(), tree_size), (256, 300));
    let mut range = CompactRange::new();
    for e in &entries {
        range.push(leaf_hash(e));
    }
    verify_consistency(256, 300, &range.root(), &checkpoint.root, &proof)
        .expect("the chunk is in the checkpoint's tree");
    // An unknown log, a range beyond the tree.
    send(
        &mut peer,
        6,
        Message::GetData {
            log_id: [9; 32],
            start: 0,
            count: 1,
            tree_size: 1,
        },
    );
    assert!(matches!(
        read_frame(&mut peer, &mut buf).message,
        Message::NotFound { what: 1, .. }
    ));
    send(
        &mut peer,
        7,
        Message::GetData {
            log_id: id,
            start: 0,
            count: 1,
            tree_size: 301,
        },
    );
    assert!(matches!(
        read_frame(&mut peer, &mut buf).message,
        Message::NotFound { what: 3, .. }
    ));
    // A malformed frame: Reject, then the connection closes.
    peer.write_all(b"XXXXXXXXXXXXXXXXXX").expect("garbage");
    assert!(matches!(
        read_frame(&mut peer, &mut buf).message,
        Message::Reject { code: 1, .. }
    ));
    let mut rest = Vec::new();
    let _ = peer.read_to_end(&mut rest);
}

/// A mirror follows a log over LKTL/1, stores only verified entries, serves
/// the origin's own signed checkpoint, and clients verify it with the
/// origin's key as if it were the origin.
#[test]
fn a_mirror_follows_over_lktl_and_serves_a_verified_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sync_port = free_port();
    let origin = start_with(
        &dir.path().join("origin"),
        &["--sync-listen", &format!("127.0.0.1:{sync_port}")],
    );
    let vkey = vkey(&origin);
    append(&origin, (0..1000u32).map(|i| format!("m{i}")));
    let note = published(&origin, 1000);
    let mirror = start_with(
        &dir.path().join("mirror"),
        &["--mirror", &format!("{vkey}@127.0.0.1:{sync_port}")],
    );
    let mirrored = published(&mirror, 1000);
    assert_eq!(mirrored, note, "the origin's own note, verbatim");
    let state = dir.path().join("view");
    let out = sync_view(&mirror.url, &vkey, &state);
    assert!(
        out.contains("verified at size 1000 (1000 new entries"),
        "{out}"
    );
    // It keeps following; the same view verifies the origin and the mirror.
    append(&origin, (1000..1300u32).map(|i| format!("m{i}")));
    published(&origin, 1300);
    published(&mirror, 1300);
    let out = sync_view(&mirror.url, &vkey, &state);
    assert!(out.contains("(300 new entries"), "{out}");
    sync_view(&origin.url, &vkey, &state);
    // The mirror takes no appends.
    assert_eq!(
        post(&format!("{}/add", mirror.url), Some("anything"), b"x"),
        404
    );
}

/// tlog.md §5.2 and the publish policy: a log configured with a witness
/// publishes each checkpoint only with that witness's cosignature, and
/// `tlog-cli` accepts it under a policy that requires the witness; with the
/// witness gone, nothing newer is published.
#[test]
fn a_witnessed_log_publishes_only_cosigned_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The witness needs the log's vkey, and the log the witness's: make
    // the log's key first with a throwaway start.
    let log_dir = dir.path().join("log");
    drop(start(&log_dir));
    let log_vkey = std::fs::read_to_string(log_dir.join("vkey"))
        .expect("vkey")
        .trim()
        .to_string();
    let witness = start_with(&dir.path().join("witness"), &["--witness-for", &log_vkey]);
    let witness_vkey = std::fs::read_to_string(witness.dir.join("witness-vkey"))
        .expect("witness vkey")
        .trim()
        .to_string();
    let log = start_with(
        &log_dir,
        &[
            "--submit-to",
            &format!("{witness_vkey}@{}/witness", witness.url),
        ],
    );
    append(&log, (0..20u32).map(|i| format!("w{i}")));
    let note = published(&log, 20);
    assert!(
        String::from_utf8_lossy(&note).contains("\u{2014} localhost/tlogd/witness "),
        "published with the witness's cosignature"
    );
    let policy = dir.path().join("policy");
    std::fs::write(
        &policy,
        format!("log {log_vkey}\nwitness w {witness_vkey}\nquorum w\n"),
    )
    .expect("policy");
    let line = ok(cli(&[
        "checkpoint",
        "--url",
        &log.url,
        "--policy",
        policy.to_str().expect("utf8"),
    ]));
    assert!(line.starts_with("localhost/tlogd/log 20 "), "{line}");
    receipts_verify_offline(&log, &policy, &log_vkey);
    // It keeps going, from the size the witness holds.
    append(&log, (20..30u32).map(|i| format!("w{i}")));
    published(&log, 30);
    // Without the witness, appends are durable but nothing newer is published.
    drop(witness);
    post(
        &format!("{}/add", log.url),
        Some(&token(&log)),
        b"unwitnessed",
    );
    log.wait_log("not published: too few witnesses cosigned");
    let (_, current, _) = get(&format!("{}/checkpoint", log.url));
    assert!(
        String::from_utf8_lossy(&current).contains("\n30\n"),
        "still the last cosigned size"
    );
}

/// tlog.md §4.3–§4.5: gzip for bundles when asked, retained checkpoints by
/// size, the evidence list, and the per-address rate limit on `lk/v1`.
#[test]
fn gzip_retained_checkpoints_evidence_and_rate_limits() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir.path().join("tlogd"), &["--lk-rate", "10"]);
    append(&node, (0..10u32).map(|i| format!("g{i}")));
    let first = published(&node, 10);
    post(
        &format!("{}/add", node.url),
        Some(&token(&node)),
        b"one more",
    );
    published(&node, 11);
    // A bundle, plain and gzipped: the same bytes.
    let url = format!("{}/tile/entries/000.p/10", node.url);
    let (status, plain, _) = get(&url);
    assert_eq!(status, 200);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("get");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let gz = response.body_mut().read_to_vec().expect("body");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .expect("gunzip");
    assert_eq!(unzipped, plain);
    // The checkpoint of size 10 is retained; 12 is not published.
    let (status, at10, _) = get(&format!("{}/lk/v1/checkpoint/10", node.url));
    assert_eq!((status, at10), (200, first));
    assert_eq!(get(&format!("{}/lk/v1/checkpoint/12", node.url)).0, 404);
    assert_eq!(get(&format!("{}/lk/v1/checkpoint/010", node.url)).0, 404);
    let (status, evidence, _) = get(&format!("{}/lk/v1/evidence", node.url));
    assert_eq!((status, evidence.len()), (200, 0));
    // 10/s with bursts of 20: a quick run of 60 meets 429 with Retry-After.
    let mut limited = None;
    for _ in 0..60 {
        let response = agent
            .get(&format!("{}/lk/v1/consistency?old=5&size=10", node.url))
            .call()
            .expect("get");
        if response.status() == 429 {
            limited = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            break;
        }
    }
    assert!(
        limited.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
        "rate limited with Retry-After"
    );
    // Tiles are not limited.
    assert_eq!(get(&format!("{}/tile/0/000.p/11", node.url)).0, 200);
}

#[test]
fn tlogd_on_postgresql_serves_verified_tiles_and_keeps_the_log_across_a_restart() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let schema = runtime.block_on(lk_testkit::postgres::Schema::fresh());
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--postgres",
        schema.url.as_str(),
        "--postgres-schema",
        schema.name.as_str(),
    ];
    let node = start_with(&dir.path().join("tlogd"), &args);
    let vkey = vkey(&node);
    append(&node, (0..300u32).map(|i| format!("pg entry {i}")));
    published(&node, 300);
    // Killed, restarted on the same database: nothing lost, and it goes on.
    drop(node);
    let node = start_with(&dir.path().join("tlogd"), &args);
    append(&node, (300..310u32).map(|i| format!("pg entry {i}")));
    let note = published(&node, 310);
    let state = dir.path().join("view");
    let out = sync_view(&node.url, &vkey, &state);
    assert!(out.contains("verified at size 310"), "{out}");
    their_libraries_verify(&node, &vkey, &note);
    // The entries are in PostgreSQL, and no embedded store was made.
    assert!(!node.dir.join("tlog.redb").exists());
    let rows: i64 = runtime.block_on(async {
        schema
            .client()
            .await
            .query_one(
                &format!("SELECT count(*) FROM \"{}\".tlog_entries", schema.name),
                &[],
            )
            .await
            .expect("count")
            .get(0)
    });
    assert_eq!(rows, 310);
    drop(node);
    drop(schema);
}

/// A log whose key made `witness`'s vkey known, and the witness: the log's
/// key is made first with a throwaway start. Returns (log dir, log vkey,
/// witness, witness vkey).
fn log_and_witness(dir: &Path) -> (std::path::PathBuf, String, Tlogd, String) {
    let log_dir = dir.join("log");
    drop(start(&log_dir));
    let log_vkey = std::fs::read_to_string(log_dir.join("vkey"))
        .expect("vkey")
        .trim()
        .to_string();
    let witness = start_with(&dir.join("witness"), &["--witness-for", &log_vkey]);
    let witness_vkey = std::fs::read_to_string(witness.dir.join("witness-vkey"))
        .expect("witness vkey")
        .trim()
        .to_string();
    (log_dir, log_vkey, witness, witness_vkey)
}

/// The witness's cosignature time on a published note.
fn cosigned_at(note: &[u8], witness_vkey: &str) -> u64 {
    let key = tlog_core::VerifierKey::parse(witness_vkey).expect("vkey");
    let note = tlog_core::Note::parse(note).expect("note");
    note.signatures()
        .iter()
        .find(|l| key.verify_line(note.text(), l))
        .expect("cosigned by the witness")
        .cosignature_time()
        .expect("a cosignature carries its time")
}

/// tlog.md §5.2: an idle log resubmits its latest checkpoint every
/// `republish_interval`, so its cosignature gets newer while the tree
/// does not grow.
#[test]
fn an_idle_witnessed_log_refreshes_its_cosignatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_dir, _, witness, witness_vkey) = log_and_witness(dir.path());
    let log = start_with(
        &log_dir,
        &[
            "--submit-to",
            &format!("{witness_vkey}@{}/witness", witness.url),
            "--republish-interval-secs",
            "1",
        ],
    );
    post(&format!("{}/add", log.url), Some(&token(&log)), b"only");
    let first = published(&log, 1);
    let t1 = cosigned_at(&first, &witness_vkey);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, now, _) = get(&format!("{}/checkpoint", log.url));
        assert!(String::from_utf8_lossy(&now).contains("\n1\n"), "same tree");
        if cosigned_at(&now, &witness_vkey) > t1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tlog.md §5.2, §10 "Crash": restored from an old backup, the log learns
/// from its witness (a 409 naming a size it lacks, and the witness's
/// monitoring checkpoint signed by the log's own key) that it lost signed
/// history, and freezes instead of signing a fork.
#[test]
fn a_log_behind_what_its_witness_cosigned_freezes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_dir, _, witness, witness_vkey) = log_and_witness(dir.path());
    let submit = format!("{witness_vkey}@{}/witness", witness.url);
    let log = start_with(&log_dir, &["--submit-to", &submit]);
    append(&log, (0..20u32).map(|i| format!("{i}")));
    published(&log, 20);
    drop(log);
    let backup = dir.path().join("backup");
    std::fs::create_dir_all(&backup).expect("mkdir");
    for entry in std::fs::read_dir(&log_dir).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), backup.join(entry.file_name())).expect("copy");
    }
    let log = start_with(&log_dir, &["--submit-to", &submit]);
    append(&log, (20..50u32).map(|i| format!("{i}")));
    published(&log, 50);
    drop(log);
    std::fs::remove_dir_all(&log_dir).expect("rm");
    std::fs::rename(&backup, &log_dir).expect("restore");
    let log = start_with(&log_dir, &["--submit-to", &submit]);
    log.wait_log("a witness holds signed history this store lacks");
    assert_eq!(
        post(&format!("{}/add", log.url), Some(&token(&log)), b"fork"),
        503,
        "frozen: no appends"
    );
    let (_, note, _) = get(&format!("{}/checkpoint", log.url));
    assert!(
        String::from_utf8_lossy(&note).contains("\n20\n"),
        "nothing new signed"
    );
}

/// tlog.md §4.5: a receipt (C2SP tlog-proof) fetched with `tlog-cli
/// receipt` verifies offline under the witness policy for its entry and
/// not for another; code nobody here wrote agrees (`signed_note` on the
/// note, `ct-merkle` on the inclusion proof).
fn receipts_verify_offline(log: &Tlogd, policy: &Path, log_vkey: &str) {
    let file = log.dir.join("receipt-5.tlog-proof");
    let out = ok(cli(&[
        "receipt",
        "--url",
        &log.url,
        "--policy",
        policy.to_str().expect("utf8"),
        "--index",
        "5",
        "--out",
        file.to_str().expect("utf8"),
    ]));
    assert!(out.contains("receipt for index 5"), "{out}");
    let verdict = ok(cli(&[
        "verify-receipt",
        "--policy",
        policy.to_str().expect("utf8"),
        "--data",
        "w5",
        file.to_str().expect("utf8"),
    ]));
    assert!(
        verdict.contains("valid receipt: the entry is at index 5"),
        "{verdict}"
    );
    let wrong = cli(&[
        "verify-receipt",
        "--policy",
        policy.to_str().expect("utf8"),
        "--data",
        "w6",
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(wrong.status.code(), Some(1), "another entry is refused");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("the receipt does not verify"));
    // Their libraries: the note, then PATH for the entry.
    let bytes = std::fs::read(&file).expect("receipt");
    let text = String::from_utf8(bytes).expect("utf8");
    let (head, note) = text.split_once("\n\n").expect("tlog-proof layout");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("c2sp.org/tlog-proof@v1"));
    assert_eq!(lines.next(), Some("index 5"));
    let path: Vec<u8> = lines
        .flat_map(|l| tlog_core::note::b64decode(l).expect("base64"))
        .collect();
    let verifier = signed_note::StandardVerifier::new(log_vkey).expect("their vkey parser");
    let parsed = signed_note::Note::from_bytes(note.as_bytes()).expect("their note parser");
    parsed
        .verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .expect("their verification");
    let checkpoint = tlog_tiles::Checkpoint::from_bytes(parsed.text()).expect("checkpoint");
    let root =
        ct_merkle::RootHash::<sha2_011::Sha256>::new(checkpoint.hash().0.into(), checkpoint.size());
    root.verify_inclusion(
        &b"w5".to_vec(),
        5,
        &ct_merkle::InclusionProof::<sha2_011::Sha256>::from_bytes(path),
    )
    .expect("ct-merkle: the entry is in the tree");
}
