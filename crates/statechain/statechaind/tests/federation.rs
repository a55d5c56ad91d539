//! statechain.md §6 with real processes: a member follows the SE's log over
//! LKTL/1, applies the members' rules before storing, serves the coin's
//! state (equal to the SE's, with proofs under the SE's checkpoint) and
//! refuses writes; its sync port greets humans like the SE's.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{scalar, se_id, start, start_with, Http, Owner};

/// Polls `f` until it returns `Some` (the member catches up on its own
/// schedule: checkpoint, Inv, fetch), failing after 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_member_mirrors_validates_and_serves_the_se_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se = start(&dir.path().join("se"), &[]);
    let http = Http::new(&se.url);
    let info = http.get("/v1/info").body;
    let vkey = info["log"]["vkey"].as_str().expect("vkey").to_string();
    let member = start_with(
        &dir.path().join("member"),
        &[
            "--role",
            "member",
            "--follow",
            &vkey,
            "--peer",
            &se.sync_addr,
        ],
    );
    let mhttp = Http::new(&member.url);
    assert_eq!(mhttp.get("/v1/info").body["se_id"], info["se_id"]);

    let mut owner = Owner::deposit(&http, se_id(&http), 81);
    for i in 0..5u8 {
        owner.sign(&http, [i + 1; 32], &scalar(0x40 + i));
    }
    let se_view = owner.state(&http);
    assert_eq!(se_view["count"], 5);
    let path = format!("/v1/statechain/{}", hex::encode(owner.id));
    let member_view = eventually("the member to hold the coin's six entries", || {
        let r = mhttp.get(&path);
        (r.status == 200
            && r.body["count"] == 5
            && r.body["entries"]
                .as_array()
                .is_some_and(|e| e.iter().all(|x| !x["proof"].is_null())))
        .then_some(r.body)
    });
    for field in [
        "count",
        "head",
        "head_seq",
        "server_pubkey",
        "auth_key",
        "status",
    ] {
        assert_eq!(member_view[field], se_view[field], "{field}");
    }
    let leaves = |v: &serde_json::Value| {
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["leaf"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(leaves(&member_view), leaves(&se_view));
    // The member's checkpoint is the SE's signed note.
    assert!(member_view["checkpoint"]
        .as_str()
        .expect("note")
        .contains("localhost/statechain/se1"));
    // Members are read-only.
    let r = mhttp.post("/v1/sign/first", &owner.sign_first_body([9; 32]));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (405, Some("read_only"))
    );
    let r = mhttp.post("/v1/tokens", &json!({}));
    assert_eq!(r.status, 405);

    // A restarted member rebuilds its replica from its own store.
    drop(member);
    let member = start_with(
        &dir.path().join("member"),
        &["--role", "member", "--follow", &vkey],
    );
    let r = Http::new(&member.url).get(&path);
    assert_eq!(r.body["count"], 5, "{:?}", r.body);

    // `nc` on the member's sync port: the banner names the SE's log.
    let mut s = std::net::TcpStream::connect(&member.sync_addr).expect("sync port");
    s.write_all(b"\n").expect("enter");
    let mut text = String::new();
    let mut r = BufReader::new(s);
    while r.read_line(&mut text).unwrap_or(0) > 0 {}
    assert!(text.contains("localhost/statechain/se1"), "{text}");
}

/// Kills the child when dropped.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An SE whose log key signs whatever it is given (a `tlogd` log under the
/// SE's origin, fed by hand): a member stores the valid opening entry and
/// refuses a signature entry whose authorisation is forged, staying at the
/// last valid size.
#[test]
fn a_member_refuses_entries_that_break_the_rules() {
    use statechain_core::bip340;
    use statechain_core::leaf::{Body, Leaf, Open, Signature};
    let dir = tempfile::tempdir().expect("tempdir");
    let logdir = dir.path().join("evil");
    let (http_port, sync_port) = (free_port(), free_port());
    let _evil = Guard(
        std::process::Command::new(lk_testkit::process::workspace_binary("tlogd"))
            .args([
                "--data-dir",
                logdir.to_str().expect("utf8"),
                "--origin",
                "localhost/statechain/se1",
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{http_port}"),
                "--sync-listen",
                &format!("127.0.0.1:{sync_port}"),
            ])
            .args(["--checkpoint-interval-ms", "100"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tlogd"),
    );
    let evil = Http::new(&format!("http://127.0.0.1:{http_port}"));
    eventually("tlogd to serve", || {
        (evil.try_get("/checkpoint").is_some_and(|r| r.status == 200)).then_some(())
    });
    let vkey = std::fs::read_to_string(logdir.join("vkey"))
        .expect("vkey")
        .trim()
        .to_string();
    let token = std::fs::read_to_string(logdir.join("append-token"))
        .expect("token")
        .trim()
        .to_string();
    let se_id = statechain_core::hash::sha256(vkey.as_bytes());
    let add = |leaf: &Leaf| {
        let r = evil.post_bearer("/add", &token, &leaf.encode());
        assert!(r.status < 300, "{:?}", r.body);
    };

    let a = scalar(0x51);
    let mut open = Leaf {
        statechain_id: [5; 16],
        seq: 0,
        prev: [0; 32],
        body: Body::Open(Open {
            server_key: scalar(3).public(),
            auth_key: bip340::xonly_of(&a),
            token_hash: [1; 32],
            h_init: 2000,
            interval: 10,
            policy: 1,
            auth_sig: [0; 64],
        }),
    };
    let d = open.auth_digest(&se_id);
    if let Body::Open(o) = &mut open.body {
        o.auth_sig = bip340::sign(&a, &d, &[0; 32]);
    }
    add(&open);
    let member = start_with(
        &dir.path().join("member"),
        &[
            "--role",
            "member",
            "--follow",
            &vkey,
            "--peer",
            &format!("127.0.0.1:{sync_port}"),
        ],
    );
    let mhttp = Http::new(&member.url);
    let path = format!("/v1/statechain/{}", hex::encode([5u8; 16]));
    eventually("the member to store the opening entry", || {
        let r = mhttp.get(&path);
        (r.status == 200).then_some(())
    });

    // A signature entry authorised by someone else's key.
    let mut forged = Leaf {
        statechain_id: [5; 16],
        seq: 1,
        prev: open.hash(),
        body: Body::Signature(Signature {
            n: 1,
            server_nonce: scalar(4).public(),
            commitment: [2; 32],
            challenge: scalar(5),
            auth_sig: [0; 64],
        }),
    };
    let d = forged.auth_digest(&se_id);
    if let Body::Signature(g) = &mut forged.body {
        g.auth_sig = bip340::sign(&scalar(0x52), &d, &[0; 32]);
    }
    // A valid opening of another coin, then the forgery: the member keeps
    // every entry before the forgery (within one chunk or not).
    let mut other = open.clone();
    other.statechain_id = [6; 16];
    let d = other.auth_digest(&se_id);
    if let Body::Open(o) = &mut other.body {
        o.auth_sig = bip340::sign(&a, &d, &[0; 32]);
    }
    add(&other);
    add(&forged);
    let alerts = eventually("the member to raise an alert", || {
        let r = mhttp.get("/v1/alerts");
        let alerts = r.body["alerts"].as_array()?.clone();
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let r = mhttp.get(&path);
    assert_eq!(r.body["count"], 0, "{:?}", r.body);
    assert_eq!(
        r.body["entries"].as_array().map(Vec::len),
        Some(1),
        "the mirror stays at the last valid size"
    );
    let r = mhttp.get(&format!("/v1/statechain/{}", hex::encode([6u8; 16])));
    assert_eq!(r.status, 200, "the valid entry before the forgery is kept");
    assert_eq!(mhttp.get("/v1/info").body["log"]["status"], "invalid");
    assert!(member.log().contains("the log is Invalid"));

    // The alert proves it offline under the SE's key alone: the opening it
    // was judged against and the forged entry, each in the signed tree.
    let key = tlog_core::note::VerifierKey::parse(&vkey).expect("vkey");
    let bytes = serde_json::to_vec(&alerts[0]).expect("json");
    let alert = statechain_core::alert::Alert::from_json(&bytes).expect("alert");
    let proven = alert.verify(&key).expect("the alert proves the violation");
    assert_eq!(proven.index, 2);
    assert!(proven.rule.contains("auth signature"), "{}", proven.rule);
    assert_eq!(
        alert.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    let file = dir.path().join("alert.json");
    std::fs::write(&file, &bytes).expect("write");
    let out = std::process::Command::new(lk_testkit::process::workspace_binary("statechain-cli"))
        .args([
            "verify-evidence",
            "--vkey",
            &vkey,
            file.to_str().expect("utf8"),
        ])
        .output()
        .expect("statechain-cli");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("entry 2"),
        "{out:?}"
    );

    // Tampered alerts prove nothing: a changed leaf, a valid entry cited
    // as the culprit, another key.
    let mut bad = alert.clone();
    bad.entries[1].leaf[20] ^= 1;
    assert!(matches!(
        bad.verify(&key),
        Err(statechain_core::alert::AlertError::NotIncluded(2))
    ));
    let mut bad = alert.clone();
    bad.entries.pop();
    assert!(matches!(
        bad.verify(&key),
        Err(statechain_core::alert::AlertError::NotAViolation(_))
    ));
    let stranger = tlog_core::note::SignerKey::from_seed(
        "localhost/statechain/se1",
        tlog_core::note::KeyType::Ed25519,
        &[9; 32],
    )
    .expect("key");
    assert!(matches!(
        alert.verify(&stranger.verifier()),
        Err(statechain_core::alert::AlertError::Checkpoint(_))
    ));
    std::fs::write(&file, serde_json::to_vec(&bad.to_json()).expect("json")).expect("write");
    let out = std::process::Command::new(lk_testkit::process::workspace_binary("statechain-cli"))
        .args([
            "verify-evidence",
            "--vkey",
            &vkey,
            file.to_str().expect("utf8"),
        ])
        .output()
        .expect("statechain-cli");
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // A restarted member keeps the status and the alert, and fetches
    // nothing more of that log.
    drop(member);
    add(&other);
    let member = start_with(
        &dir.path().join("member"),
        &[
            "--role",
            "member",
            "--follow",
            &vkey,
            "--peer",
            &format!("127.0.0.1:{sync_port}"),
        ],
    );
    let mhttp = Http::new(&member.url);
    assert_eq!(mhttp.get("/v1/info").body["log"]["status"], "invalid");
    assert_eq!(
        mhttp.get("/v1/alerts").body["alerts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

/// The published checkpoint's size and note, from the SE's tiles (`None`
/// while none is: after a restart, until the quorum cosigns again).
fn published(http: &Http) -> Option<(u64, String)> {
    let r = http.get("/statechain/se1/checkpoint");
    if r.status == 404 {
        return None;
    }
    assert_eq!(r.status, 200, "{:?}", r.body);
    let note = r.body.as_str().expect("a note").to_string();
    let size = note
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("size");
    Some((size, note))
}

/// statechain.md §5.5, §6.1: the SE publishes a checkpoint only once a
/// quorum of members validated every entry below it and cosigned it with
/// their validating keys; with one of two members down nothing new is
/// published (appends stay durable), and its return publishes the lot.
#[test]
fn checkpoints_are_published_once_a_quorum_of_members_validated_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se_dir = dir.path().join("se");
    let vkey = {
        let se = start(&se_dir, &[]);
        Http::new(&se.url).get("/v1/info").body["log"]["vkey"]
            .as_str()
            .expect("vkey")
            .to_string()
    };
    let member = |name: &str, peer: &str| {
        start_with(
            &dir.path().join(name),
            &[
                "--role",
                "member",
                "--follow",
                &vkey,
                "--member-name",
                name,
                "--peer",
                peer,
            ],
        )
    };
    let a = member("a", "127.0.0.1:9");
    let b = member("b", "127.0.0.1:9");
    let validating = |name: &str| {
        std::fs::read_to_string(dir.path().join(name).join("validator-vkey"))
            .expect("validator-vkey")
            .trim()
            .to_string()
    };
    let (va, vb) = (validating("a"), validating("b"));
    assert_eq!(
        Http::new(&a.url).get("/v1/info").body["validating_vkey"],
        va.as_str()
    );
    let se = start_with(
        &se_dir,
        &[
            "--member",
            &format!("{va}@{}", a.sync_addr),
            "--member",
            &format!("{vb}@{}", b.sync_addr),
        ],
    );
    let http = Http::new(&se.url);
    let info = http.get("/v1/info").body;
    assert_eq!(info["cosign_quorum"], 2, "a majority of two");
    let policy =
        tlog_core::policy::Policy::parse(info["policy_file"].as_str().expect("policy file"))
            .expect("the served policy parses");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };

    let mut owner = Owner::deposit(&http, se_id(&http), 91);
    owner.sign(&http, [1; 32], &scalar(0x61));
    let (size, note) = eventually("a checkpoint cosigned by both members", || {
        let (size, note) = published(&http)?;
        (size >= 2).then_some((size, note))
    });
    assert!(
        note.contains("— a/validator ") && note.contains("— b/validator "),
        "{note}"
    );
    policy
        .verify(note.as_bytes(), now())
        .expect("the published note meets the pinned policy");
    // The log key alone does not meet it.
    let bare: String = note
        .lines()
        .filter(|l| !l.contains("/validator "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(policy.verify(bare.as_bytes(), now()).is_err());

    // Member b goes down: the SE keeps appending (durably) and member a
    // keeps validating, but nothing newer is published.
    drop(b);
    owner.sign(&http, [2; 32], &scalar(0x62));
    let path = format!("/v1/statechain/{}", hex::encode(owner.id));
    let ahttp = Http::new(&a.url);
    eventually("member a to validate the new entries", || {
        (ahttp.get(&path).body["count"] == 2).then_some(())
    });
    let (still, _) = published(&http).expect("still published");
    assert_eq!(still, size, "published without b's cosignature");
    assert_eq!(
        owner.state(&http)["count"],
        2,
        "the SE answered the signature"
    );

    // b returns (on a new port the SE does not know; it dials the SE):
    // it catches up, validates, cosigns, and the checkpoint is published.
    let _b = member("b", &se.sync_addr);
    let (_, note) = eventually("the checkpoint to be published again", || {
        let (grown, note) = published(&http)?;
        (grown > size).then_some((grown, note))
    });
    policy
        .verify(note.as_bytes(), now())
        .expect("cosigned by both again");
}

/// statechain.md §9.8: three members, two of which reach the SE only over
/// links that can be cut and talk to each other. Partition {SE, m1} |
/// {m2, m3}: the SE keeps publishing with m1's cosignature (quorum 1), m2
/// and m3 keep what they had; after the heal both catch up and cosign,
/// every view equals the SE's, and nobody raised an alert or lost its
/// log's Active status.
#[test]
fn a_partitioned_federation_heals_and_converges() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let se_dir = dir.path().join("se");
    let vkey = {
        let se = start(&se_dir, &[]);
        Http::new(&se.url).get("/v1/info").body["log"]["vkey"]
            .as_str()
            .expect("vkey")
            .to_string()
    };
    let member = |name: &str, peers: &[&str]| {
        let mut args = vec!["--role", "member", "--follow", &vkey, "--member-name", name];
        for p in peers {
            args.extend(["--peer", p]);
        }
        start_with(&dir.path().join(name), &args)
    };
    let m1 = member("m1", &[]);
    let m3 = member("m3", &[]);
    let m2 = member("m2", &[&m3.sync_addr]);
    let validating = |name: &str| {
        std::fs::read_to_string(dir.path().join(name).join("validator-vkey"))
            .expect("validator-vkey")
            .trim()
            .to_string()
    };
    let to_m2 = rt.block_on(lk_testkit::net::FaultProxy::start(
        m2.sync_addr.parse().expect("addr"),
    ));
    let to_m3 = rt.block_on(lk_testkit::net::FaultProxy::start(
        m3.sync_addr.parse().expect("addr"),
    ));
    let se = start_with(
        &se_dir,
        &[
            "--member",
            &format!("{}@{}", validating("m1"), m1.sync_addr),
            "--member",
            &format!("{}@{}", validating("m2"), to_m2.addr),
            "--member",
            &format!("{}@{}", validating("m3"), to_m3.addr),
            "--cosign-quorum",
            "1",
        ],
    );
    let http = Http::new(&se.url);
    let mut owner = Owner::deposit(&http, se_id(&http), 71);
    owner.sign(&http, [1; 32], &scalar(0x71));
    let path = format!("/v1/statechain/{}", hex::encode(owner.id));
    let views = [&m1, &m2, &m3].map(|m| Http::new(&m.url));
    let holds = |h: &Http, count: u64| {
        let r = h.get(&path);
        r.status == 200 && r.body["count"] == count
    };
    for v in &views {
        eventually("every member to hold the coin", || {
            holds(v, 1).then_some(())
        });
    }

    // The partition: the SE and m1 on one side, m2 and m3 on the other.
    to_m2.set_down(true);
    to_m3.set_down(true);
    for i in 2..5u8 {
        owner.sign(&http, [i; 32], &scalar(0x70 + i));
    }
    eventually("m1 to validate the new signatures", || {
        holds(&views[0], 4).then_some(())
    });
    eventually("the SE to publish with m1's cosignature", || {
        let (size, note) = published(&http)?;
        (size >= 5 && note.contains("m1/validator ")).then_some(())
    });
    for v in &views[1..] {
        assert!(holds(v, 1), "a member across the partition moved");
    }

    // Heal: m2 and m3 catch up from the SE and cosign.
    to_m2.set_down(false);
    to_m3.set_down(false);
    for v in &views[1..] {
        eventually("the far side to converge", || holds(v, 4).then_some(()));
    }
    eventually("every member's cosignature on the published note", || {
        let (_, note) = published(&http)?;
        ["m1", "m2", "m3"]
            .iter()
            .all(|m| note.contains(&format!("{m}/validator ")))
            .then_some(())
    });
    let at_se = http.get(&path).body;
    for v in &views {
        let there = v.get(&path).body;
        assert_eq!(there["head"], at_se["head"]);
        assert_eq!(v.get("/v1/alerts").body["alerts"], json!([]));
        assert_eq!(v.get("/v1/info").body["log"]["status"], "active");
    }
}

/// statechain.md §5.5: an idle statechain log announces its checkpoint
/// again every `republish_interval`; the members cosign it anew, so the
/// published note's cosignatures stay younger than wallets' `max_age`
/// while nothing is appended. (Before, the refresh went only to HTTP
/// witnesses, and the members' cosignatures aged until the next append.)
#[test]
fn an_idle_log_keeps_its_members_cosignatures_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se_dir = dir.path().join("se");
    let vkey = {
        let se = start(&se_dir, &[]);
        Http::new(&se.url).get("/v1/info").body["log"]["vkey"]
            .as_str()
            .expect("vkey")
            .to_string()
    };
    let a = start_with(
        &dir.path().join("a"),
        &[
            "--role",
            "member",
            "--follow",
            &vkey,
            "--member-name",
            "a",
            "--peer",
            "127.0.0.1:9",
        ],
    );
    let va = std::fs::read_to_string(dir.path().join("a").join("validator-vkey"))
        .expect("validator-vkey")
        .trim()
        .to_string();
    let se = start_with(
        &se_dir,
        &[
            "--member",
            &format!("{va}@{}", a.sync_addr),
            "--republish-interval-secs",
            "1",
        ],
    );
    let http = Http::new(&se.url);
    let mut owner = Owner::deposit(&http, se_id(&http), 93);
    owner.sign(&http, [1; 32], &scalar(0x63));
    let cosigned_at = |note: &str| -> u64 {
        tlog_core::note::Note::parse(note.as_bytes())
            .expect("a note")
            .signatures()
            .iter()
            .find(|l| l.name == "a/validator")
            .and_then(|l| l.cosignature_time())
            .unwrap_or_else(|| panic!("no cosignature of a: {note}"))
    };
    let (size, first) = eventually("a checkpoint cosigned by the member", || {
        let (size, note) = published(&http)?;
        (size >= 2 && note.contains("— a/validator ")).then_some((size, note))
    });
    let first_at = cosigned_at(&first);
    // Nothing is appended from here on; the cosignature gets newer anyway.
    let (again, refreshed) = eventually("a fresher cosignature on the idle log", || {
        let (size, note) = published(&http)?;
        (cosigned_at(&note) >= first_at + 2).then_some((size, note))
    });
    assert_eq!(again, size, "the same checkpoint, not a new one");
    assert_eq!(
        first.lines().next(),
        refreshed.lines().next(),
        "same origin"
    );
}
